package fsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Machine is the replicated token state of one node. Raft drives it through
// RaftFSM; everything else only reads.
type Machine struct {
	mu sync.RWMutex // Apply and Restore write; reads share
	// applying: an entry is being applied (lockApplying); under mu.
	applying bool
	st       *state
	lastNow  int64 // latest leader time applied

	applied atomic.Uint64
	// lastIndex is the last index Apply was given since New or the
	// last Restore: Raft's own order, never a snapshot's claim.
	lastIndex uint64
	halt      atomic.Pointer[Halt] // set once the machine stops applying
	// logVersion mirrors state.logVersion, for the leader's write path.
	logVersion atomic.Int32
	onHalt     func(Halt)
	rejects    map[string]*atomic.Uint64 // by reason; fixed at New
	notifyMu   sync.Mutex
	notify     chan struct{} // closed and replaced on every applied entry

	// What a snapshot trigger weighs: the bytes of log entries applied
	// since New, that count when the last snapshot was taken (or the
	// state restored), and the size of that snapshot's stream.
	logBytes, snapLogBytes, snapBytes atomic.Uint64

	// colliding keeps one bit of the indexes' hashes (tests only).
	colliding bool
}

// newState returns an empty state for m.
func (m *Machine) newState() *state {
	st := newState()
	if m.colliding {
		st.hash.mask, st.byHash.mask = 1, 1
	}
	return st
}

// LogSinceSnapshot returns the bytes of log entries applied since the
// last snapshot was taken or restored, and the size of that snapshot's
// stream (0 before the first): the log a restart would replay, and the
// state it would restore.
func (m *Machine) LogSinceSnapshot() (logBytes, snapshotBytes uint64) {
	return m.logBytes.Load() - m.snapLogBytes.Load(), m.snapBytes.Load()
}

// CountKey groups records for the per-kind gauges.
type CountKey struct {
	Kind  string
	State State
}

// New returns a state machine holding no records.
func New() *Machine {
	m := &Machine{st: newState(), notify: make(chan struct{}), rejects: map[string]*atomic.Uint64{}}
	for _, r := range RejectReasons {
		m.rejects[r] = new(atomic.Uint64)
	}
	return m
}

// RaftFSM returns the raft.FSM view of the machine, keeping Apply, Snapshot
// and Restore out of the machine's own methods.
func (m *Machine) RaftFSM() raft.FSM { return (*raftFSM)(m) }

type raftFSM Machine

// Apply applies one log entry. It returns a *Response.
func (f *raftFSM) Apply(l *raft.Log) any {
	return &Response{r: (*Machine)(f).Apply(l.Index, l.Data)}
}

// Response is what the state machine hands Raft for a command entry: the
// entry's Result, for the one who proposed it to take once. Raft's log
// cache holds a leader's recent entries inside their futures, and with
// them the responses, as long as the entries stay cached: a Result kept
// there would keep the decoded commands and records of a thousand
// batches alive on the leader alone. TakeResult leaves nothing behind.
type Response struct{ r Result }

// TakeResult takes the Result from v, a response of the Raft view of the
// machine, clearing it there; false if v is not one.
func TakeResult(v any) (Result, bool) {
	p, ok := v.(*Response)
	if !ok || p == nil {
		return Result{}, false
	}
	r := p.r
	p.r = Result{}
	return r, true
}

// StoreConfiguration notes a committed membership change, so that the
// applied index covers every entry Raft hands to the state machine and a
// read waiting for a commit index that is a configuration entry finishes.
func (f *raftFSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	if m := (*Machine)(f); m.halt.Load() == nil {
		m.setApplied(index)
	}
}

// Apply applies an encoded command at log index. Exposed for tests that
// drive the state machine without Raft; in a node only Raft calls it.
//
// No content of an entry can take the machine down. An entry that does not
// decode, or a batch that is malformed, is answered ErrBadEntry (on every
// replica alike, since they all run the same decoder on the same bytes)
// and changes nothing; an unknown type flagged IgnoreUnknown is skipped.
// An unknown type without the flag halts the machine at that index (see
// Halted): it may be a newer node's command, and applying anything past
// it could diverge from the nodes that know it.
//
// Only what cannot be answered deterministically panics: an index that
// does not follow the last one applied means the log under the state
// machine was rewritten, and no answer would be the same on every node.
func (m *Machine) Apply(index uint64, data []byte) Result { return m.applyEntry(index, data, nil) }

// applyEntry is Apply with the entry decoded already (decodeLogEntry), or
// nil to decode it here.
func (m *Machine) applyEntry(index uint64, data []byte, d *decodedEntry) (res Result) {
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(errCorrupt)
			if !ok {
				panic(r)
			}
			// The state's own memory does not read back: nothing more
			// is applied here.
			res = m.stop(Halt{Index: index, Reason: c.Error()})
		}
	}()
	if m.halt.Load() != nil {
		return Result{Err: ErrHalted}
	}
	if index <= m.lastIndex {
		panic(fmt.Sprintf("fsm: entry at index %d after index %d was applied: the log was rewritten under the state machine", index, m.lastIndex))
	}
	m.lastIndex = index
	m.logBytes.Add(uint64(len(data)))
	if d == nil {
		e := decodeLogEntry(data)
		d = &e
	}
	c, err := d.c, d.err
	if err != nil {
		return m.refuse(index, data, err)
	}
	if b, ok := c.(*Batch); ok {
		var halted bool
		if res, halted = m.applyBatch(index, b, d.inner); halted {
			return res
		}
	} else {
		if cb, ok := c.(*ClientBatch); ok {
			if t, unknown := cb.unknownOp(); unknown {
				return m.stop(Halt{Index: index, Type: t, Reason: fmt.Sprintf("a client batch holds an op of unknown type %d", t)})
			}
		}
		res = m.applyLocked(c, index)
	}
	m.setApplied(index)
	return res
}

// refuse answers an entry that did not decode.
func (m *Machine) refuse(index uint64, data []byte, err error) Result {
	switch {
	case errors.Is(err, errUnknownSkippable):
		m.rejected(RejectSkipped)
		m.setApplied(index)
		return Result{}
	case errors.Is(err, errUnknownType):
		return m.stop(Halt{Index: index, Type: Type(data[0]), Reason: err.Error()})
	}
	m.rejected(RejectUndecodable)
	m.setApplied(index)
	return Result{Err: ErrBadEntry}
}

// applyBatch looks at every entry of b, decoded in inner, before applying
// any, so that an entry that halts the machine leaves nothing of its index
// applied.
func (m *Machine) applyBatch(index uint64, b *Batch, inner []decodedCmd) (Result, bool) {
	res := Result{Batch: make([]Result, len(b.Entries))}
	if len(b.Reqs) != 0 && len(b.Reqs) != len(b.Entries) {
		m.rejected(RejectBadBatch)
		for i := range res.Batch {
			res.Batch[i].Err = ErrBadEntry
		}
		return res, false
	}
	cmds := make([]applier, len(b.Entries))
	for i, e := range b.Entries {
		c, err := inner[i].c, inner[i].err
		switch {
		case err == nil:
			if _, nested := c.(*Batch); nested {
				m.rejected(RejectNestedBatch)
				c = badEntry{}
			}
			if f, ok := c.(*Fence); ok && f.Version > Version {
				return m.stop(Halt{Index: index, Type: TypeFence, Reason: fmt.Sprintf("batch entry %d: the log needs version %d of the state machine, this node runs %d", i, f.Version, Version)}), true
			}
			if cb, ok := c.(*ClientBatch); ok {
				if t, unknown := cb.unknownOp(); unknown {
					return m.stop(Halt{Index: index, Type: t, Reason: fmt.Sprintf("batch entry %d: a client batch holds an op of unknown type %d", i, t)}), true
				}
			}
		case errors.Is(err, errUnknownSkippable):
			m.rejected(RejectSkipped)
			c = nil
		case errors.Is(err, errUnknownType):
			return m.stop(Halt{Index: index, Type: Type(e[0]), Reason: fmt.Sprintf("batch entry %d: %v", i, err)}), true
		default:
			m.rejected(RejectUndecodable)
			c = badEntry{}
		}
		cmds[i] = c
	}
	m.lockApplying()
	defer m.unlockApplying()
	tx := &applyTx{st: m.st, now: m.lastNow, index: index, lock: &m.mu, held: time.Now()}
	// Time never runs backwards in the state, even if a new leader's clock
	// is behind the old one's.
	tx.now = max(tx.now, b.Now)
	tx.st.forgetRequests(tx.now - int64(RequestWindow))
	tx.st.housekeep(tx.now, index)
	for i, c := range cmds {
		req := ""
		if len(b.Reqs) > 0 {
			req = b.Reqs[i]
		}
		switch {
		case req != "" && c != nil:
			r, first := tx.st.rememberNew(req, tx.now)
			if !first {
				res.Batch[i] = r.Result(tx.st)
				continue
			}
			res.Batch[i] = c.apply(tx)
			tx.st.remembered(r, res.Batch[i])
		case req != "":
			if prev := tx.st.request(req); prev != nil {
				res.Batch[i] = prev.Result(tx.st)
			}
			continue // skipped, or answered as it was
		case c == nil:
			continue // skipped
		default:
			res.Batch[i] = c.apply(tx)
		}
		tx.pause()
	}
	m.lastNow = tx.now
	m.logVersion.Store(int32(tx.st.logVersion))
	return res, false
}

// LogVersion is the Version the log needs from the last applied Fence on:
// at least 1.
func (m *Machine) LogVersion() int { return max(1, int(m.logVersion.Load())) }

// badEntry stands for a batch entry that cannot be applied.
type badEntry struct{}

func (badEntry) Type() Type               { return 0 }
func (badEntry) apply(*applyTx) Result    { return Result{Err: ErrBadEntry} }
func (m *Machine) rejected(reason string) { m.rejects[reason].Add(1) }

// stop halts the machine at h.Index: nothing from there on is applied, reads
// should answer unavailable, and snapshots are refused, so that the log
// from h.Index on is kept for a node that can apply it.
func (m *Machine) stop(h Halt) Result {
	if m.halt.CompareAndSwap(nil, &h) {
		m.rejected(RejectUnknownType)
		if m.onHalt != nil {
			m.onHalt(h)
		}
	}
	return Result{Err: ErrHalted}
}

// Halt says where and why the machine stopped applying.
type Halt struct {
	Index  uint64
	Type   Type
	Reason string
}

// Halted reports whether the machine has stopped applying, and where.
func (m *Machine) Halted() (Halt, bool) {
	if h := m.halt.Load(); h != nil {
		return *h, true
	}
	return Halt{}, false
}

// OnHalt sets a function called once, when the machine halts. Set it before
// the machine applies anything.
func (m *Machine) OnHalt(f func(Halt)) { m.onHalt = f }

// Why an entry, or an entry of a batch, was not applied as proposed: the
// reasons counted by Rejected.
const (
	RejectUndecodable = "undecodable"          // answered ErrBadEntry
	RejectNestedBatch = "nested_batch"         // answered ErrBadEntry
	RejectBadBatch    = "bad_batch"            // request ids do not match the entries: each answered ErrBadEntry
	RejectSkipped     = "skipped_unknown_type" // flagged ignorable: skipped
	RejectUnknownType = "unknown_type"         // the machine halted
)

// RejectReasons lists the reasons of Rejected.
var RejectReasons = []string{RejectUndecodable, RejectNestedBatch, RejectBadBatch, RejectSkipped, RejectUnknownType}

// Rejected returns how many entries this machine did not apply as proposed,
// for reason.
func (m *Machine) Rejected(reason string) uint64 {
	if c, ok := m.rejects[reason]; ok {
		return c.Load()
	}
	return 0
}

// lockApplying takes the writer's lock for an entry and marks it being
// applied until unlockApplying. An entry may let readers in between its
// commands (applyTx.pause); what it has half done then, such as a request
// remembered before its command's outcome is set, is for readers of
// records, never for a snapshot, which Snapshot and Restore refuse while
// the mark is set. Raft calls them between entries, on the goroutine
// that applies, so they never meet it.
func (m *Machine) lockApplying() {
	m.mu.Lock()
	m.applying = true
}

func (m *Machine) unlockApplying() {
	m.applying = false
	m.mu.Unlock()
}

func (m *Machine) applyLocked(c applier, index uint64) Result {
	m.lockApplying()
	defer m.unlockApplying()
	tx := &applyTx{st: m.st, now: m.lastNow, index: index, lock: &m.mu, held: time.Now()}
	tx.st.housekeep(tx.now, index)
	res := c.apply(tx)
	m.lastNow = tx.now
	return res
}

func (m *Machine) setApplied(index uint64) {
	m.applied.Store(index)
	m.notifyMu.Lock()
	close(m.notify)
	m.notify = make(chan struct{})
	m.notifyMu.Unlock()
}

// AppliedIndex is the log index of the last entry applied here.
func (m *Machine) AppliedIndex() uint64 { return m.applied.Load() }

// WaitApplied blocks until the machine has applied index, or ctx ends.
func (m *Machine) WaitApplied(ctx context.Context, index uint64) error {
	for {
		m.notifyMu.Lock()
		ch := m.notify
		m.notifyMu.Unlock()
		if m.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// haltOnCorrupt, deferred by a reader, halts the machine if the state's
// memory did not read back (the reader answers nothing); any other panic
// goes on.
func (m *Machine) haltOnCorrupt() {
	if r := recover(); r != nil {
		c, ok := r.(errCorrupt)
		if !ok {
			panic(r)
		}
		m.stop(Halt{Index: m.applied.Load(), Reason: c.Error()})
	}
}

// Counts returns the number of records by kind and state (expired records
// not yet collected count as active).
func (m *Machine) Counts() map[CountKey]int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[CountKey]int64, len(m.st.counts))
	for k, n := range m.st.counts {
		out[k] = n
	}
	return out
}

// ByHash returns the record with the digest h, or nil. Its scopes, data and
// rotation are shared with the state and must not be modified.
func (m *Machine) ByHash(h string) *Record {
	m.mu.RLock()
	defer m.mu.RUnlock()
	defer m.haltOnCorrupt()
	return m.st.getHash(h)
}

// ByID returns the record with the public id, or nil.
func (m *Machine) ByID(id string) *Record {
	m.mu.RLock()
	defer m.mu.RUnlock()
	defer m.haltOnCorrupt()
	return m.st.readID(id)
}

// ListScan is the most records one page of ListBySubject examines, active
// or not: a subject with many expired, consumed or revoked records (or of
// other kinds) costs a bounded walk under the read lock per page, never
// one over all of them.
const ListScan = 2048

// ListBySubject returns up to limit records of subject that are active at
// now, in id order, starting after the id "after" (a page cursor), and
// the cursor of the next page ("" at the end). Kind filters when set.
// A page examines at most ListScan records (limit is at most ListScan-1):
// when that runs out first, the page holds fewer than limit records, none
// maybe, and the cursor resumes after the last record examined.
func (m *Machine) ListBySubject(subject, kind, after string, limit int, now int64) ([]*Record, string) {
	if limit < 1 {
		return nil, ""
	}
	limit = min(limit, ListScan-1)
	m.mu.RLock()
	defer m.mu.RUnlock()
	defer m.haltOnCorrupt()
	var out []*Record
	next, last, scanned := "", "", 0
	m.st.walkSubject(subject, after, func(h handle, r rec) bool {
		switch {
		case scanned == ListScan:
			next = last // r is the first record not examined
			return false
		}
		scanned++
		if r.status(now) == StatusActive && (kind == "" || m.st.kindOf(r) == kind) {
			if len(out) == limit {
				next = out[len(out)-1].ID
				return false
			}
			out = append(out, m.st.record(h))
		}
		last = r.id()
		return true
	})
	next = strings.Clone(next) // a copy: the cursor outlives the lock
	return out, next
}

// DueForGC returns the ids of up to limit records whose GC time is at or
// before before, each once, oldest first by the expiry index's buckets
// (about a second wide; in no particular order within one). When fewer
// than limit are returned, they are all the records due.
func (m *Machine) DueForGC(before int64, limit int) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	defer m.haltOnCorrupt()
	return m.st.byGC.due(&m.st.byHash, before, limit)
}
