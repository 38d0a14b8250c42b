package fsm_test

import (
	"math/rand/v2"
	"runtime"
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
				before := liveHeap()
				h := newHarness(b)
				for _, e := range entries {
					h.applyRaw(e, 64)
				}
				after := liveHeap()
				runtime.KeepAlive(h)
				runtime.KeepAlive(entries)
				b.ReportMetric(float64(after-before)/float64(n), "heap-bytes/token")
			}
		})
	}
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
