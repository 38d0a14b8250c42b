package fsm_test

import (
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/tokenstore/tokenstore/fsm"
)

// BenchmarkHeapPerRequest reports the live heap a remembered request id
// costs: -snapshot-records session issues, in entries of 64 as a
// leader's coalescer writes them, with (reqs) and without (none) a
// request id each, all within the RequestWindow.
func BenchmarkHeapPerRequest(b *testing.B) {
	n := *snapshotRecords
	for _, withReqs := range []bool{false, true} {
		name := "none"
		if withReqs {
			name = "reqs"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				rng := rand.New(rand.NewPCG(1, 2))
				cmds := make([]fsm.Command, n)
				for i := range cmds {
					cmds[i] = sessionIssue(rng, i)
				}
				entries := benchEntries(b, t0, 64, cmds, "n1-4f2a9c3e-")
				if !withReqs {
					for i := range entries {
						entries[i] = stripReqs(b, entries[i])
					}
				}
				cmds = nil
				before, scanBefore := liveHeap(), scannableHeap()
				h := newHarness(b)
				for _, e := range entries {
					h.applyRaw(e, 64)
				}
				after, scanAfter := liveHeap(), scannableHeap()
				runtime.KeepAlive(h)
				runtime.KeepAlive(entries)
				b.ReportMetric(float64(after-before)/float64(n), "heap-bytes/token")
				b.ReportMetric(float64(int64(scanAfter-scanBefore))/float64(n), "scan-bytes/token")
			}
		})
	}
}

// scannableHeap is the part of the live heap the collector scans for
// pointers (runtime/metrics /gc/scan/heap:bytes), as of the collection
// liveHeap ran.
func scannableHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func stripReqs(b *testing.B, e []byte) []byte {
	c, err := fsm.Decode(e)
	if err != nil {
		b.Fatal(err)
	}
	bt := c.(*fsm.Batch)
	bt.Reqs = nil
	return encode(b, bt)
}

// BenchmarkHeapDuringSnapshot reports the live heap an open snapshot
// costs while writes go on: a state of -snapshot-records session tokens,
// a snapshot taken (not yet written), then 10% more issues with a
// request id each; the heap with the snapshot open, less the heap once
// it is released, is what copy-on-write kept for it, per write.
func BenchmarkHeapDuringSnapshot(b *testing.B) {
	n := *snapshotRecords
	for b.Loop() {
		rng := rand.New(rand.NewPCG(1, 2))
		pre := n / 64
		cmds := make([]fsm.Command, (pre+n/10/64)*64) // entries of 64 each
		for i := range cmds {
			cmds[i] = sessionIssue(rng, i)
		}
		entries := benchEntries(b, t0, 64, cmds, "n1-4f2a9c3e-")
		cmds = nil
		h := newHarness(b)
		for _, e := range entries[:pre] {
			h.applyRaw(e, 64)
		}
		_, release, err := h.s.TakeSnapshot()
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range entries[pre:] {
			h.applyRaw(e, 64)
		}
		during := settledHeap()
		release()
		after := settledHeap()
		runtime.KeepAlive(entries)
		runtime.KeepAlive(h) // the state, live through both readings
		writes := len(entries[pre:]) * 64
		b.ReportMetric(float64(during-after)/float64(writes), "snapshot-heap-bytes/write")
		b.ReportMetric(float64(during-after)/(1<<20), "snapshot-heap-MiB")
		b.ReportMetric(float64(writes), "writes")
	}
}

// settledHeap is the heap in use after two full collections: what a
// sync.Pool kept through the first is gone after the second.
func settledHeap() uint64 {
	runtime.GC()
	return liveHeap()
}
