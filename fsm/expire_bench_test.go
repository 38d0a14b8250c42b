package fsm_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// BenchmarkExpire measures one GC command as the leader proposes it (500
// ids, cluster.Config.GCBatch's default) applying on a state of a million
// session tokens that are all due: the time the state's write lock is
// held for it, which local lookups wait out.
func BenchmarkExpire(b *testing.B) {
	const live, per, batch = 1 << 20, 64, 500
	rng := rand.New(rand.NewPCG(1, 2))
	h := newHarness(b)
	pre := make([]fsm.Command, live)
	for i := range pre {
		pre[i] = sessionIssue(rng, i)
	}
	for _, e := range benchEntries(b, t0, per, pre, "pre-") {
		h.applyRaw(e, per)
	}
	later := t0.Add(2 * time.Hour)
	// The request ids of the preload are forgotten first, outside the
	// measure: an entry at that time would do it.
	h.batch(later, &fsm.Expire{Before: ns(later)})
	n := 0
	for b.Loop() {
		b.StopTimer()
		ids := h.s.DueForGC(ns(later), batch)
		if len(ids) < batch {
			b.Fatalf("%d due, want %d: the state ran out after %d commands", len(ids), batch, n)
		}
		entry := batchEntry(b, later, &fsm.Expire{Before: ns(later), IDs: ids})
		b.StartTimer()
		h.index++
		res := h.s.Apply(h.index, entry)
		if got := res.Batch[0].Count; got != batch {
			b.Fatalf("expire deleted %d, want %d", got, batch)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*batch), "ns/deletion")
}
