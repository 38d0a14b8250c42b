package fsm

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"

	"github.com/google/btree"
)

// sortByGroup orders items as a stable sort by g does, whatever the
// spread of the keys: all alike, a few, a byte alike in all, all apart.
func TestSortByGroupIsAStableSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		g    func() uint64
	}{
		{"one group", func() uint64 { return 42 }},
		{"few groups", func() uint64 { return rng.Uint64N(5) << 40 }},
		{"high byte shared", func() uint64 { return 0xab<<56 | rng.Uint64N(1<<40) }},
		{"random", rng.Uint64},
	} {
		for _, n := range []int{0, 1, 2, 3, 1000, 5000} {
			items := make([]item, n)
			for i := range items {
				items[i] = item{g: tc.g(), k: uint64(i), h: handle(i + 1)}
			}
			want := slices.Clone(items)
			slices.SortStableFunc(want, func(a, b item) int { return cmp.Compare(a.g, b.g) })
			got := sortByGroup(slices.Clone(items), make([]item, n))
			if !slices.Equal(got, want) {
				t.Fatalf("%s, %d items: not in the order of a stable sort by g", tc.name, n)
			}
		}
	}
}

// A state loaded in bulk from the records of another, built by puts,
// holds the same indexes, item for item: with group hashes of all bits
// and with a mask that makes most groups collide (their items interleave
// in id order).
func TestLoadBuildsTheIndexesOfPuts(t *testing.T) {
	for _, mask := range []uint64{^uint64(0), 3} {
		s := newState()
		s.hash.mask = mask
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range 3000 {
			id := fmt.Sprintf("%016x", rng.Uint64())
			if i%7 == 0 {
				id = fmt.Sprintf("shared-prefix-%05d", i) // ties on the eight-byte key
			}
			h := sha256.Sum256([]byte(id))
			r := &Record{ID: id, Hash: string(h[:]), Kind: "access", ExpiresAt: 1000 + int64(rng.IntN(500_000))}
			if i%3 != 0 {
				r.Subject = fmt.Sprint("user:", rng.IntN(200))
			}
			if i%4 == 0 {
				r.Kind, r.Family = "refresh", fmt.Sprint("fam", rng.IntN(50))
			}
			s.put(nil, r)
		}
		var recs []*Record
		s.byID.Ascend(func(it idItem) bool { recs = append(recs, s.record(it.h)); return true })
		// In the snapshot's order and out of it.
		for _, shuffle := range []bool{false, true} {
			l := newState()
			l.hash = s.hash
			order := slices.Clone(recs)
			if shuffle {
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			}
			var hs []handle
			for _, r := range order {
				hs = append(hs, l.compact(r))
			}
			if err := l.load(hs, nil, 0); err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("mask %x, shuffled %v", mask, shuffle)
			sameItems(t, name+": by id", s.byID, l.byID, func(st *state, x idItem) string { return fmt.Sprint(x.k, st.ar.get(x.h).id()) }, s, l)
			for _, ix := range []struct {
				name string
				of   func(*state) *btree.BTreeG[item]
			}{
				{"by subject", func(st *state) *btree.BTreeG[item] { return st.bySubject }},
				{"by family", func(st *state) *btree.BTreeG[item] { return st.byFamily }},
				{"sealed", func(st *state) *btree.BTreeG[item] { return st.sealed }},
			} {
				sameItems(t, name+": "+ix.name, ix.of(s), ix.of(l), func(st *state, x item) string {
					return fmt.Sprint(x.g, x.k, st.ar.get(x.h).id())
				}, s, l)
			}
			sameItems(t, name+": family live", s.familyLive, l.familyLive, func(st *state, x liveItem) string {
				return fmt.Sprint(x.g, x.at, x.k, st.ar.get(x.h).id())
			}, s, l)
			for _, r := range recs {
				if got := l.getHash(r.Hash); got == nil || got.ID != r.ID {
					t.Fatalf("%s: digest of %s finds %v", name, r.ID, got)
				}
			}
			if !maps(s.counts, l.counts) {
				t.Fatalf("%s: counts %v, want %v", name, l.counts, s.counts)
			}
			checkGCIndex(t, l)
		}
	}
}

func maps(a, b map[CountKey]int64) bool {
	for k, v := range a {
		if v != 0 && b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if v != 0 && a[k] != v {
			return false
		}
	}
	return true
}

// sameItems fails unless trees a (of state sa) and b (of sb) hold the same
// items in the same order, as key names them.
func sameItems[T any](t *testing.T, name string, a, b *btree.BTreeG[T], key func(*state, T) string, sa, sb *state) {
	t.Helper()
	var ka, kb []string
	a.Ascend(func(x T) bool { ka = append(ka, key(sa, x)); return true })
	b.Ascend(func(x T) bool { kb = append(kb, key(sb, x)); return true })
	if !slices.Equal(ka, kb) {
		t.Fatalf("%s: %d items loaded, %d put, or in another order", name, len(kb), len(ka))
	}
}

// A duplicate id or digest among the records is refused, whichever job
// meets it.
func TestLoadRefusesDuplicates(t *testing.T) {
	rec := func(id, digest string) *Record {
		return &Record{ID: id, Hash: digest, Kind: "access", ExpiresAt: 1000}
	}
	for name, recs := range map[string][]*Record{
		"id":     {rec("a", "h1"), rec("b", "h2"), rec("a", "h3")},
		"digest": {rec("a", "h1"), rec("b", "h2"), rec("c", "h1")},
	} {
		l := newState()
		var hs []handle
		for _, r := range recs {
			hs = append(hs, l.compact(r))
		}
		if err := l.load(hs, nil, 0); err == nil {
			t.Fatalf("duplicate %s: loaded", name)
		}
	}
}

// The sort of a restore's million items of the subjects' index: by
// radix, and by pdqsort with the index's comparison.
func BenchmarkSortByGroup(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	items := make([]item, 1_000_000)
	for i := range items {
		items[i] = item{g: rng.Uint64(), k: uint64(i), h: handle(i + 1)}
	}
	ar := newArena()
	work, tmp := make([]item, len(items)), make([]item, len(items))
	b.Run("radix", func(b *testing.B) {
		start := processCPU(b)
		for b.Loop() {
			copy(work, items)
			sortByGroup(work, tmp)
		}
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	})
	b.Run("pdqsort", func(b *testing.B) {
		start := processCPU(b)
		for b.Loop() {
			copy(work, items)
			slices.SortFunc(work, ar.cmpItem)
		}
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	})
}

// processCPU is the process's user and system CPU time so far, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
