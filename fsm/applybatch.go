package fsm

import "github.com/hashicorp/raft"

// decodedEntry is a log entry decoded before it is applied: its command,
// or why it does not decode, and for a Batch each of its entries alike.
// Decoding changes nothing; what the results mean (refusals, a halt) is
// decided as the entry is applied, in order.
type decodedEntry struct {
	c     applier
	err   error
	inner []decodedCmd // a Batch's entries, in order
}

type decodedCmd struct {
	c   applier
	err error
}

func decodeLogEntry(data []byte) decodedEntry {
	c, err := decodeEntry(data)
	d := decodedEntry{c: c, err: err}
	if b, ok := c.(*Batch); ok && err == nil {
		d.inner = make([]decodedCmd, len(b.Entries))
		slab := newCmdSlab(b.Entries)
		for i, e := range b.Entries {
			d.inner[i].c, d.inner[i].err = decodeEntryIn(e, slab)
		}
	}
	return d
}

// ApplyBatch implements raft.BatchingFSM: Raft hands over up to
// MaxAppendEntries committed entries at once (many while a restarted node
// replays its log after the snapshot, or a follower catches up). A
// goroutine decodes them ahead of the applying, which takes them in order
// as they are ready: decoding an entry is a fifth of applying it, and on
// a second core it no longer adds to it. Each entry is applied as Apply
// applies it, a configuration as StoreConfiguration notes it.
func (f *raftFSM) ApplyBatch(logs []*raft.Log) []any {
	m := (*Machine)(f)
	out := make([]any, len(logs))
	dec := make([]decodedEntry, len(logs))
	ready := make(chan struct{}, len(logs))
	decode := func() {
		for i, l := range logs {
			if l.Type == raft.LogCommand && m.halt.Load() == nil {
				dec[i] = decodeLogEntry(l.Data)
			}
			ready <- struct{}{}
		}
	}
	if len(logs) > 1 {
		go decode()
	} else {
		decode()
	}
	for i, l := range logs {
		<-ready
		switch l.Type {
		case raft.LogCommand:
			out[i] = &Response{r: m.applyEntry(l.Index, l.Data, &dec[i])}
		case raft.LogConfiguration:
			f.StoreConfiguration(l.Index, raft.Configuration{})
		}
		dec[i] = decodedEntry{}
	}
	return out
}
