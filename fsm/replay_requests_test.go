package fsm_test

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/tokenstore/tokenstore/fsm"
)

// TestReplayWithRequestIDsIsDeterministic: batches with request ids, some
// sent again as a node retries them, give the same answers and the same
// snapshot bytes on a node that applied the log (A), one whose hashes all
// collide (B), one restored from A every 37 batches (C) and one that keeps
// restoring from its own snapshots (D): remembered requests and the
// records they answer with survive a restore as they were.
func TestReplayWithRequestIDsIsDeterministic(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			g := newGen(seed, t0)
			g.grants, g.batches = true, true
			a, b := newHarness(t), &harness{t: t, s: fsm.NewColliding()}
			var c, d *harness
			type sent struct {
				cmds []fsm.Command
				reqs []string
			}
			var hist []sent
			nreq := 0
			for total, batches := 0, 0; total < 3000; batches++ {
				now := g.advance()
				var cmds []fsm.Command
				var reqs []string
				if len(hist) > 0 && g.r.IntN(4) == 0 {
					h := hist[len(hist)-1-g.r.IntN(min(len(hist), 5))]
					cmds, reqs = h.cmds, h.reqs
				} else {
					cmds = make([]fsm.Command, 1+g.r.IntN(8))
					reqs = make([]string, len(cmds))
					for i := range cmds {
						cmds[i] = g.command(a.s)
						if g.r.IntN(5) != 0 {
							nreq++
							reqs[i] = fmt.Sprintf("node-1/%d", nreq)
						}
					}
					hist = append(hist, sent{cmds, reqs})
				}
				total += len(cmds)
				bb := &fsm.Batch{Now: ns(now), Entries: make([][]byte, len(cmds)), Reqs: reqs}
				for i, cm := range cmds {
					bb.Entries[i] = encode(t, cm)
				}
				entry := encode(t, bb)
				ra := a.applyRaw(entry, len(cmds))
				rb := b.applyRaw(entry, len(cmds))
				for i := range cmds {
					if !reflect.DeepEqual(ra[i], rb[i]) {
						t.Fatalf("batch %d entry %d: A %+v B %+v", batches, i, ra[i], rb[i])
					}
				}
				if c != nil {
					rc := c.applyRaw(entry, len(cmds))
					rd := d.applyRaw(entry, len(cmds))
					for i := range cmds {
						if !reflect.DeepEqual(ra[i], rc[i]) {
							t.Fatalf("batch %d entry %d %T: A %+v (rec %+v) C %+v (rec %+v)", batches, i, cmds[i], ra[i], ra[i].Record, rc[i], rc[i].Record)
						}
						if !reflect.DeepEqual(ra[i], rd[i]) {
							t.Fatalf("batch %d entry %d %T: A %+v D %+v", batches, i, cmds[i], ra[i], rd[i])
						}
					}
				}
				if batches%37 == 5 {
					sa := a.snapshot()
					c = &harness{t: t, s: restored(t, sa), index: a.index}
					if d == nil {
						d = &harness{t: t, s: restored(t, sa), index: a.index}
					} else {
						sd := d.snapshot()
						if !bytes.Equal(sa, sd) {
							t.Fatalf("batch %d: snapshot of D differs from A (%d vs %d bytes)", batches, len(sd), len(sa))
						}
						d = &harness{t: t, s: restored(t, sd), index: a.index}
					}
				}
			}
			sa, sb, sc, sd := a.snapshot(), b.snapshot(), c.snapshot(), d.snapshot()
			if !bytes.Equal(sa, sb) || !bytes.Equal(sa, sc) || !bytes.Equal(sa, sd) {
				t.Fatalf("snapshots differ")
			}
			t.Logf("snapshot %d bytes, %d reqs", len(sa), nreq)
		})
	}
}

// Intern table past its cap: a node that applied and one restored answer alike.
