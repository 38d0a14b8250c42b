package fsm

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// gcT0 is a GC time at the start of a bucket.
const gcT0 = int64(981_173_106) << gcShift

func gcRecord(id string, expiresAt int64) *Record {
	h := sha256.Sum256([]byte(id))
	return &Record{ID: id, Hash: string(h[:]), Kind: "access", ExpiresAt: expiresAt}
}

// checkGCIndex checks the expiry index against the records of s: each
// bucket counts exactly the records whose GC time is in it, names each of
// them after its head, and holds past its head at most twice as many
// entries as records (plus a few): what bounds a walk over it.
func checkGCIndex(t *testing.T, s *state) {
	t.Helper()
	want := map[int64]int{}
	s.byID.Ascend(func(it idItem) bool {
		if r := s.ar.get(it.h); r.inGC() {
			want[gcBucketOf(r.gcAt())]++
		}
		return true
	})
	got := map[int64]int{}
	s.byGC.tree.Ascend(func(it gcItem) bool {
		bk := it.bk
		if bk == nil {
			got[it.at] = 1
			if !s.byHash.inGCBucket(it.k, it.at) {
				t.Fatalf("bucket %d: its one record is not in it", it.at)
			}
			return true
		}
		got[it.at] = int(bk.live)
		if it.k != 0 || bk.live < 1 {
			t.Fatalf("bucket %d: %+v, key %x", it.at, bk, it.k)
		}
		if len(bk.keys)-int(bk.head) > 2*int(bk.live)+16 {
			t.Fatalf("bucket %d: %d entries past its head for %d records", it.at, len(bk.keys)-int(bk.head), bk.live)
		}
		return true
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("records per bucket = %v, want %v", got, want)
	}
	s.byID.Ascend(func(it idItem) bool {
		r := s.ar.get(it.h)
		if !r.inGC() {
			return true
		}
		b := gcBucketOf(r.gcAt())
		gi, _ := s.byGC.tree.Get(gcItem{at: b})
		k := s.byHash.key(r.hash())
		if gi.bk == nil && gi.k != k || gi.bk != nil && !slices.Contains(gi.bk.keys[gi.bk.head:], k) {
			t.Fatalf("record %q (bucket %d) not named by its bucket", r.id(), b)
		}
		return true
	})
}

// A bucket of 20,000 records collected 500 at a time, as the GC loop
// does: every call lists 500, and the bucket never holds past its head
// more than twice its records; without shared keys the head skips all
// that GC deleted.
func TestGCIndexBucketCollectedInParts(t *testing.T) {
	for _, mask := range []uint64{^uint64(0), 0xff} {
		s := newState()
		s.byHash.mask = mask
		const n = 20_000
		for i := range n {
			s.put(nil, gcRecord(fmt.Sprint("r", i), gcT0+int64(i)))
		}
		checkGCIndex(t, s)
		seen := map[string]bool{}
		for left := n; left > 0; left -= 500 {
			due := s.byGC.due(&s.byHash, gcT0+n, 500)
			if len(due) != min(500, left) {
				t.Fatalf("mask %x: due = %d records, want %d", mask, len(due), min(500, left))
			}
			for _, id := range due {
				if seen[id] {
					t.Fatalf("mask %x: %q listed after its deletion", mask, id)
				}
				seen[id] = true
				s.delete(&Record{ID: id})
			}
			checkGCIndex(t, s)
			if it, ok := s.byGC.tree.Get(gcItem{at: gcBucketOf(gcT0)}); ok && mask == ^uint64(0) && int(it.bk.live) != len(it.bk.keys)-int(it.bk.head) {
				t.Fatalf("%d records, %d entries past the head", it.bk.live, len(it.bk.keys)-int(it.bk.head))
			}
		}
		if s.byGC.tree.Len() != 0 {
			t.Fatalf("mask %x: %d buckets left", mask, s.byGC.tree.Len())
		}
	}
}

// Records that leave their bucket and come back, again and again, are
// listed once each, and the entries they leave behind are dropped.
func TestGCIndexMovesBackAndForth(t *testing.T) {
	s := newState()
	const n = 100
	for i := range n {
		s.put(nil, gcRecord(fmt.Sprint("r", i), gcT0+int64(i)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		r := s.getID(fmt.Sprint("r", rng.IntN(n)))
		if gcBucketOf(r.ExpiresAt) == gcBucketOf(gcT0) {
			r.ExpiresAt += 3 << gcShift
		} else {
			r.ExpiresAt -= 3 << gcShift
		}
		s.put(nil, r)
		checkGCIndex(t, s)
	}
	due := s.byGC.due(&s.byHash, gcT0+10<<gcShift, n+1)
	if len(due) != n {
		t.Fatalf("due = %d records, want %d", len(due), n)
	}
	slices.Sort(due)
	if len(slices.Compact(due)) != n {
		t.Fatalf("due lists a record twice")
	}
}

// A walk lists the records of a bucket only up to the cut-off, and a
// restored index lists what the one built by writes does.
func TestGCIndexCutOffAndLoad(t *testing.T) {
	s := newState()
	var recs []*Record
	for i := range 1000 {
		s.put(nil, gcRecord(fmt.Sprint("r", i), gcT0+int64(i)*(1<<gcShift/300)))
	}
	s.byID.Ascend(func(it idItem) bool { recs = append(recs, s.record(it.h)); return true })
	l := newState()
	var hs []handle
	for _, r := range recs {
		hs = append(hs, l.compact(r))
	}
	if err := l.load(hs, nil, 0); err != nil {
		t.Fatal(err)
	}
	checkGCIndex(t, l)
	for _, before := range []int64{gcT0 - 1, gcT0, gcT0 + 1<<gcShift/2, gcT0 + 1<<gcShift + 7, gcT0 + 5<<gcShift} {
		var want []string
		for _, r := range recs {
			if r.GCAt() <= before {
				want = append(want, r.ID)
			}
		}
		for _, st := range []*state{s, l} {
			got := st.byGC.due(&st.byHash, before, len(recs)+1)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("due(%d) = %d records, want %d", before, len(got), len(want))
			}
		}
	}
}
