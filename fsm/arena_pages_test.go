//go:build linux

package fsm

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"testing"
)

// modelRec is what the model knows of a record written through alloc.
type modelRec struct {
	n    int
	seed byte
}

func modelFill(b []byte, n int, seed byte) {
	binary.LittleEndian.PutUint32(b, uint32(n))
	for i := 4; i < n; i++ {
		b[i] = seed + byte(i*7) | 1 // never zero
	}
}

func modelCheck(t *testing.T, a *arena, h handle, x modelRec, what string) {
	t.Helper()
	r := a.get(h)
	if len(r) != x.n {
		t.Fatalf("%s: record %#x reads %d bytes, want %d", what, uint64(h), len(r), x.n)
	}
	for i := 4; i < x.n; i++ {
		if want := x.seed + byte(i*7) | 1; r[i] != want {
			t.Fatalf("%s: record %#x of %d bytes: byte %d is %#x, want %#x (page %d of its chunk)",
				what, uint64(h), x.n, i, r[i], want, (int(uint32(h))+i)/pageSize)
		}
	}
}

// modelPages recomputes every small chunk's page counts from the records
// the model holds (live, or freed but kept for a snapshot) and compares
// them with the arena's, and the returned bytes with the pages marked.
func modelPages(t *testing.T, a *arena, held ...map[handle]modelRec) {
	t.Helper()
	want := map[uint64][]int{}
	for _, m := range held {
		for h, x := range m {
			if x.n > maxSmall {
				continue
			}
			ci := uint64(h >> 32)
			c := a.chunks()[ci]
			if want[ci] == nil {
				want[ci] = make([]int, len(c.pages))
			}
			size := int(classSize[classOf(x.n)])
			off := int(uint32(h))
			for p := off / pageSize; p <= (off+size-1)/pageSize; p++ {
				want[ci][p]++
			}
		}
	}
	var marked int64
	for ci, c := range a.chunks() {
		for p, got := range c.pages {
			w := 0
			if want[uint64(ci)] != nil {
				w = want[uint64(ci)][p]
			}
			if got&pageReturned != 0 {
				marked++
				if w != 0 {
					t.Fatalf("chunk %d page %d marked returned while %d held records have bytes in it", ci, p, w)
				}
				continue
			}
			if int(got) != w {
				t.Fatalf("chunk %d page %d counts %d records, the model %d", ci, p, got, w)
			}
		}
	}
	if got := a.bytesReturned(); got != marked*int64(pageSize) {
		t.Fatalf("returned %d bytes, %d pages marked", got, marked)
	}
}

// A random walk of allocs and frees of every size (page-straddling ones,
// classes larger than a page, exactly maxSmall, own mappings) with
// snapshots opened and closed in any order: every held record reads back
// whole after each step, and the page counts match a model's.
func TestArenaPagesRandomWalk(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		a := newArena()
		live := map[handle]modelRec{}
		pend := map[handle]uint64{} // freed under a snapshot: the generation then
		pendRec := map[handle]modelRec{}
		var keys []handle
		var open []uint64
		gen := uint64(0)
		size := func() int {
			switch rng.IntN(10) {
			case 0:
				return int(classSize[7+rng.IntN(73)]) // exact class sizes, 56 bytes up (page-aligned ends)
			case 1:
				return pageSize - 64 + rng.IntN(128) // around a page
			case 2:
				return 2*pageSize + rng.IntN(3*pageSize) // classes over a page
			case 3:
				if rng.IntN(4) == 0 {
					return maxSmall
				}
				return maxSmall + 1 + rng.IntN(3*pageSize) // a mapping of its own
			case 4:
				return 16<<10 + rng.IntN(48<<10)
			}
			return recHeader + rng.IntN(300)
		}
		release := func() {
			oldest := ^uint64(0)
			if len(open) > 0 {
				oldest = open[0]
				for _, g := range open {
					oldest = min(oldest, g)
				}
			}
			for h, g := range pend {
				if g < oldest {
					delete(pend, h)
					delete(pendRec, h)
				}
			}
		}
		for step := 0; step < 6000; step++ {
			switch op := rng.IntN(100); {
			case op < 50 || len(keys) == 0:
				n := size()
				h, b := a.alloc(n)
				if _, dup := live[h]; dup {
					t.Fatalf("seed %d step %d: alloc returned live handle %#x", seed, step, uint64(h))
				}
				if _, dup := pendRec[h]; dup {
					t.Fatalf("seed %d step %d: alloc returned %#x, freed but kept for a snapshot", seed, step, uint64(h))
				}
				x := modelRec{n: n, seed: byte(rng.Uint32())}
				modelFill(b, n, x.seed)
				live[h] = x
				keys = append(keys, h)
			case op < 92:
				i := rng.IntN(len(keys))
				h := keys[i]
				keys[i] = keys[len(keys)-1]
				keys = keys[:len(keys)-1]
				x := live[h]
				delete(live, h)
				if len(open) > 0 {
					pend[h], pendRec[h] = gen, x
				}
				a.free(h)
			case op < 96:
				g := a.openSnapshot()
				gen++
				if g != gen {
					t.Fatalf("generation %d, model %d", g, gen)
				}
				open = append(open, g)
			default:
				if len(open) == 0 {
					continue
				}
				i := rng.IntN(len(open))
				g := open[i]
				open = append(open[:i], open[i+1:]...)
				a.closeSnapshot(g)
				release()
			}
			if step%50 == 0 || step > 5900 {
				for h, x := range live {
					modelCheck(t, a, h, x, "live")
				}
				for h, x := range pendRec {
					modelCheck(t, a, h, x, "kept for a snapshot")
				}
				modelPages(t, a, live, pendRec)
			}
		}
		for len(open) > 0 {
			a.closeSnapshot(open[0])
			open = open[1:]
		}
		release()
		for h := range live {
			a.free(h)
		}
		modelPages(t, a)
		var pages int64
		for _, c := range a.chunks() {
			pages += int64(len(c.pages))
		}
		t.Logf("seed %d: %d of %d chunk pages returned at the end, records %d bytes", seed, a.bytesReturned()/int64(pageSize), pages, a.live.Load())
	}
}

// Boundaries placed on purpose: a record ending exactly at a page's end,
// one starting exactly at a page's start, one straddling two pages, the
// last record of a chunk ending at the chunk's end, and a maxSmall record
// filling the first chunk alone; each neighbour reads back whole when the
// other goes, and reuse over a returned page reads back too.
func TestArenaPagesBoundaries(t *testing.T) {
	a := newArena()
	recs := map[handle]modelRec{}
	put := func(n int) handle {
		h, b := a.alloc(n)
		x := modelRec{n: n, seed: byte(len(recs) * 13)}
		modelFill(b, n, x.seed)
		recs[h] = x
		return h
	}
	free := func(h handle) { delete(recs, h); a.free(h) }
	checkAll := func(what string) {
		t.Helper()
		for h, x := range recs {
			modelCheck(t, a, h, x, what)
		}
		modelPages(t, a, recs)
	}
	// The first chunk (64 KiB) filled by one maxSmall record.
	big := put(maxSmall)
	if uint32(big) != 0 || a.chunks()[big>>32].large {
		t.Fatalf("maxSmall record at %#x", uint64(big))
	}
	// The next chunk: 64-byte records, 64 to a page exactly.
	var sixty []handle
	for range 3 * pageSize / 64 {
		sixty = append(sixty, put(64))
	}
	checkAll("filled")
	// Free page 1's records (ends and starts exactly at a boundary).
	for _, h := range sixty[pageSize/64 : 2*pageSize/64] {
		free(h)
	}
	checkAll("page 1 freed")
	if a.bytesReturned() != int64(pageSize) {
		t.Fatalf("returned %d, want one page", a.bytesReturned())
	}
	free(big)
	checkAll("maxSmall freed")
	if a.bytesReturned() != int64(pageSize)+maxSmall {
		t.Fatalf("returned %d, want one page and the first chunk", a.bytesReturned())
	}
	// 56-byte records straddle pages: free all but one straddler.
	var s56 []handle
	for range 2 * pageSize / 56 {
		s56 = append(s56, put(56))
	}
	var keep handle
	for _, h := range s56 {
		off := int(uint32(h))
		if keep == 0 && off/pageSize != (off+55)/pageSize {
			keep = h
			continue
		}
		free(h)
	}
	checkAll("straddler kept")
	// Reuse everything freed (from the free lists, over returned pages).
	for range 2 * pageSize / 56 {
		put(56)
	}
	for range pageSize / 64 {
		put(64)
	}
	put(maxSmall)
	checkAll("reused")
	// Fill to the end of the current chunk with one class, so a record
	// ends exactly at the chunk's end, then free around it.
	for a.off+128 <= uint32(len(a.chunks()[a.cur].b)) {
		put(64)
	}
	rest := int(uint32(len(a.chunks()[a.cur].b)) - a.off) // 64 to 120, a class of its own size
	last := put(rest)
	if int(uint32(last))+rest != len(a.chunks()[a.cur].b) || int(classSize[classOf(rest)]) != rest {
		t.Fatalf("last record does not end at its chunk's end")
	}
	free(last)
	put(128) // a new chunk
	checkAll("chunk end")
}

// A snapshot's reader reads its records in another goroutine while the
// writer frees and reuses everything else, other snapshots open and
// close, and pages go back to the kernel: run with -race.
func TestArenaSnapshotReaderWhilePagesReturn(t *testing.T) {
	a := newArena()
	rng := rand.New(rand.NewPCG(7, 7))
	mine := map[handle]modelRec{}
	for i := range 3000 {
		n := recHeader + rng.IntN(400)
		if i%50 == 0 {
			n = 3 * pageSize
		}
		h, b := a.alloc(n)
		x := modelRec{n: n, seed: byte(i)}
		modelFill(b, n, x.seed)
		mine[h] = x
	}
	// Other records interleaved, freed before the snapshot opens.
	var other []handle
	for range 3000 {
		h, b := a.alloc(recHeader + 8)
		modelFill(b, recHeader+8, 1)
		other = append(other, h)
	}
	// An older snapshot keeps them; they go once it closes, while the
	// reader's snapshot (taken after they were freed) is open.
	g0 := a.openSnapshot()
	for _, h := range other {
		a.free(h)
	}
	g := a.openSnapshot()
	// The reader: the snapshot's records, over and over.
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 1)
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			for h, x := range mine {
				r := a.get(h)
				if len(r) != x.n {
					select {
					case errs <- "short record":
					default:
					}
					return
				}
				for i := 4; i < x.n; i++ {
					if r[i] != x.seed+byte(i*7)|1 {
						select {
						case errs <- "record changed under the snapshot":
						default:
						}
						return
					}
				}
			}
		}
	})
	// The writer frees every record the snapshot names (kept for it) and,
	// with a second snapshot opened and closed, churns others.
	a.closeSnapshot(g0)
	if a.bytesReturned() == 0 {
		t.Fatal("no page returned when the older snapshot closed")
	}
	for h := range mine {
		a.free(h)
	}
	for round := range 30 {
		g2 := a.openSnapshot()
		var hs []handle
		for range 500 {
			n := recHeader + rng.IntN(4*pageSize)
			h, b := a.alloc(n)
			modelFill(b, n, byte(round))
			hs = append(hs, h)
		}
		for _, h := range hs {
			a.free(h)
		}
		a.closeSnapshot(g2)
	}
	close(done)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	a.closeSnapshot(g)
	if a.bytesReturned() == 0 {
		t.Fatal("nothing returned once the snapshot was released")
	}
}
