package fsm_test

import (
	"fmt"
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
	const live, per = 1 << 20, 64
	rng := rand.New(rand.NewPCG(1, 2))
	h := newHarness(b)
	pre := make([]fsm.Command, live)
	for i := range pre {
		pre[i] = sessionIssue(rng, i)
	}
	for _, e := range benchEntries(b, t0, per, pre, "pre-") {
		h.applyRaw(e, per)
	}
	benchExpire(b, h, t0.Add(2*time.Hour))
}

// BenchmarkExpireSpread is BenchmarkExpire with the preload's entries a
// millisecond apart (16 s in all), so that the tokens' GC times differ,
// as they do when a node issues them: in BenchmarkExpire all million
// share one, and an index in (GC time, id) order lists them in id order,
// which its deletions from the index by id walk in order too.
func BenchmarkExpireSpread(b *testing.B) {
	const live, per = 1 << 20, 64
	rng := rand.New(rand.NewPCG(1, 2))
	h := newHarness(b)
	for i := 0; i < live; i += per {
		pre := make([]fsm.Command, per)
		for j := range pre {
			pre[j] = sessionIssue(rng, i+j)
		}
		for _, e := range benchEntries(b, t0.Add(time.Duration(i/per)*time.Millisecond), per, pre, fmt.Sprintf("pre-%d-", i)) {
			h.applyRaw(e, per)
		}
	}
	benchExpire(b, h, t0.Add(3*time.Hour))
}

// benchExpire measures GC commands of 500 ids at later, when all of h's
// records are due.
func benchExpire(b *testing.B, h *harness, later time.Time) {
	const batch = 500
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
