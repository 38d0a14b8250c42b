package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// A snapshot asked for while an entry lets readers in between its
// commands (a Touch of many tokens, carrying a request id, which is
// remembered before its outcome is set) is refused. Every snapshot that
// is taken, restored and followed by the entry at its own index, as Raft
// replays the log after a snapshot, ends where the node that applied it
// did, and answers a retry of the request with the whole outcome.
func TestNoSnapshotInsideAnEntry(t *testing.T) {
	fsm.SetMaxWriterHold(t, 0)
	h := newHarness(t)
	const n = 20000
	var cmds []fsm.Command
	for i := range n {
		cmds = append(cmds, newIssue(fmt.Sprint("tok-", i), "access", time.Hour, 0))
	}
	h.batch(t0, cmds...)
	touch := &fsm.Touch{}
	for i := range n {
		touch.Uses = append(touch.Uses, fsm.Use{Hash: secretHash(fmt.Sprint("tok-", i)), At: ns(t0.Add(time.Minute))})
	}
	entry := encode(t, &fsm.Batch{Now: ns(t0.Add(2 * time.Minute)), Entries: [][]byte{encode(t, touch)}, Reqs: []string{"node/touch-1"}})

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		snaps   [][]byte
		refused int
		stop    = make(chan struct{})
		started = make(chan struct{})
	)
	wg.Go(func() {
		for first := true; ; first = false {
			if first {
				close(started)
			}
			select {
			case <-stop:
				return
			default:
			}
			write, release, err := h.s.TakeSnapshot()
			if errors.Is(err, fsm.ErrMidEntry) {
				mu.Lock()
				refused++
				mu.Unlock()
				continue
			}
			if err != nil {
				t.Error(err)
				return
			}
			var buf bytes.Buffer
			if err := write(&buf); err != nil {
				t.Error(err)
			}
			release()
			mu.Lock()
			snaps = append(snaps, buf.Bytes())
			mu.Unlock()
		}
	})
	<-started
	h.index++
	index := h.index
	res := h.s.Apply(index, entry)
	close(stop)
	wg.Wait()
	if res.Batch[0].Err != nil || res.Batch[0].Count != n {
		t.Fatalf("the touch: %+v", res.Batch[0])
	}
	t.Logf("%d snapshots taken, %d refused while the entry applied", len(snaps), refused)

	last := secretHash(fmt.Sprint("tok-", n-1))
	want := h.s.ByHash(last).LastUsedAt
	retry := encode(t, &fsm.Batch{Now: ns(t0.Add(2*time.Minute + time.Second)), Entries: [][]byte{encode(t, touch)}, Reqs: []string{"node/touch-1"}})
	for i, s := range snaps {
		r := restored(t, s)
		if applied := r.AppliedIndex(); applied < index {
			r.Apply(index, entry)
		}
		if got := r.ByHash(last).LastUsedAt; got != want {
			t.Fatalf("snapshot %d, restored and the entry replayed: last use %d, the node that applied it %d", i, got, want)
		}
		if rr := r.Apply(index+1, retry); rr.Batch[0].Count != n {
			t.Fatalf("snapshot %d: a retry of the request answered %+v, want a count of %d", i, rr.Batch[0], n)
		}
	}
}
