package fsm_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// TestReadersSeeAPrefixOfAnEntry lets readers in at every point an entry
// may pause (a hold of zero) and checks what they see while it applies: a
// prefix of its commands, in log order, never part of a client batch. The
// entry: n issues of kind "a", a client batch of 16 issues of kind "b", a
// GC command deleting n expired tokens of kind "old", n issues of kind
// "c". Each reader's view is one call to Counts, under one read lock.
func TestReadersSeeAPrefixOfAnEntry(t *testing.T) {
	fsm.SetMaxWriterHold(t, 0)
	var partial int64
	for range 8 {
		partial += prefixRound(t)
	}
	t.Logf("readers saw the entries part applied %d times", partial)
}

// prefixRound applies the entry of TestReadersSeeAPrefixOfAnEntry under
// readers and returns how many of their views were of a part of it.
func prefixRound(t *testing.T) int64 {
	h := newHarness(t)
	const n, batchOps = 64, 16
	var old []fsm.Command
	var oldIDs []string
	for i := range n {
		oldIDs = append(oldIDs, fmt.Sprint("old", i))
		old = append(old, newIssue(oldIDs[i], "old", time.Minute, 0))
	}
	h.batch(t0, old...)
	later := t0.Add(time.Hour) // every old token expired and due
	var cmds, ops []fsm.Command
	for i := range n {
		cmds = append(cmds, newIssue(fmt.Sprint("a", i), "a", time.Hour, 0))
	}
	for i := range batchOps {
		ops = append(ops, newIssue(fmt.Sprint("b", i), "b", time.Hour, 0))
	}
	cmds = append(cmds, clientBatch(t, ops...), &fsm.Expire{IDs: oldIDs, Before: ns(later)})
	for i := range n {
		cmds = append(cmds, newIssue(fmt.Sprint("c", i), "c", time.Hour, 0))
	}

	check := func(c map[fsm.CountKey]int64) (string, bool) {
		a, b, o, cc := c[fsm.CountKey{Kind: "a", State: fsm.Active}], c[fsm.CountKey{Kind: "b", State: fsm.Active}],
			c[fsm.CountKey{Kind: "old", State: fsm.Active}], c[fsm.CountKey{Kind: "c", State: fsm.Active}]
		view := fmt.Sprintf("a %d, b %d, old %d, c %d", a, b, o, cc)
		switch {
		case b != 0 && b != batchOps:
			return "part of a client batch: " + view, false
		case b > 0 && a < n, o < n && b < batchOps, cc > 0 && o > 0:
			return "not a prefix of the entry: " + view, false
		}
		return "", a > 0 && cc < n
	}
	var stop atomic.Bool
	var wg, reading sync.WaitGroup
	var partial atomic.Int64
	errs := make(chan string, 2)
	for range 2 {
		reading.Add(1)
		wg.Go(func() {
			for first := true; !stop.Load(); first = false {
				msg, mid := check(h.s.Counts())
				if msg != "" {
					errs <- msg
					return
				}
				if mid {
					partial.Add(1)
				}
				if first {
					reading.Done()
				}
			}
		})
	}
	reading.Wait()
	h.batch(later, cmds...)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Fatal(msg)
	}
	if msg, _ := check(h.s.Counts()); msg != "" {
		t.Fatalf("after the entry: %s", msg)
	}
	return partial.Load()
}
