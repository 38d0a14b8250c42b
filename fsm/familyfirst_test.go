package fsm

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// wantOfFamily is what ofFamily answers, by a walk over every record:
// the ids of the records whose family is family, in id order.
func wantOfFamily(s *state, family string) []string {
	var ids []string
	s.byID.Ascend(func(it idItem) bool {
		if r := s.ar.get(it.h); family != "" && r.family() == family {
			ids = append(ids, r.id())
		}
		return true
	})
	return ids
}

// wantFamilyUntil is what familyUntil answers, by a walk over every
// record: the latest liveUntil of the family's active records, 0 for none.
func wantFamilyUntil(s *state, family string) int64 {
	var until int64
	s.byID.Ascend(func(it idItem) bool {
		if r := s.ar.get(it.h); family != "" && r.family() == family && r.state() == Active {
			until = max(until, r.liveUntil())
		}
		return true
	})
	return until
}

func checkFamilies(t *testing.T, what string, s *state, names []string) {
	t.Helper()
	for _, f := range names {
		var got []string
		for _, r := range s.ofFamily(f) {
			got = append(got, r.ID)
		}
		if want := wantOfFamily(s, f); !slices.Equal(got, want) {
			t.Fatalf("%s: ofFamily(%q) = %q, want %q", what, f, got, want)
		}
		if got, want := s.familyUntil(f), wantFamilyUntil(s, f); got != want {
			t.Fatalf("%s: familyUntil(%q) = %d, want %d", what, f, got, want)
		}
	}
}

// A family's first record, left out of the family indexes, is still in
// every answer about its family, and a record whose id is a family's name
// but whose family is another is in none of that family's: puts that
// change a record's family, state and expiry, deletes, and a bulk load of
// the result, with family hashes of all bits and with hashes that collide
// (the families' items interleave).
func TestFamilyAnswersHoldTheFirstRecord(t *testing.T) {
	// Ids and family names from one small set, so that many records are
	// their family's first, many have an id that names another family,
	// and ids sort on both sides of the family names.
	var names []string
	for i := range 6 {
		names = append(names, fmt.Sprintf("fam%d", i))
	}
	ids := append(slices.Clone(names), "a0", "a1", "fam0x", "fam3a", "z0", "z1", "")
	families := append(slices.Clone(names), "", "z0", "a1", "other")
	for _, mask := range []uint64{^uint64(0), 1, 0} {
		s := newState()
		s.hash.mask = mask
		rng := rand.New(rand.NewPCG(5, mask))
		steps(t, s, rng, ids, families, 4000, fmt.Sprintf("mask %x", mask))
		var hs []handle
		l := newState()
		l.hash = s.hash
		s.byID.Ascend(func(it idItem) bool { hs = append(hs, l.compact(s.record(it.h))); return true })
		if err := l.load(hs, nil, 0); err != nil {
			t.Fatal(err)
		}
		checkFamilies(t, fmt.Sprintf("mask %x, loaded", mask), l, append(slices.Clone(ids), families...))
		// The loaded indexes go on as the applied ones do.
		steps(t, l, rng, ids, families, 1000, fmt.Sprintf("mask %x, after the load", mask))
	}
}

// steps puts and deletes n random records of ids in s, checking the
// family answers every 50 and at the end.
func steps(t *testing.T, s *state, rng *rand.Rand, ids, families []string, n int, label string) {
	t.Helper()
	for step := range n {
		id := ids[rng.IntN(len(ids))]
		if rng.IntN(8) == 0 {
			s.delete(&Record{ID: id})
		} else {
			h := sha256.Sum256(fmt.Appendf(nil, "%s-%d", id, step))
			r := &Record{ID: id, Hash: string(h[:]), Kind: "oauth2_refresh", State: Active}
			switch rng.IntN(3) {
			case 0:
				r.Family = id // its family's first record
			case 1:
				r.Family = families[rng.IntN(len(families))]
			}
			switch rng.IntN(4) {
			case 0:
				r.State = Consumed
			case 1:
				r.State = Revoked
			}
			if rng.IntN(5) > 0 {
				r.ExpiresAt = 1 + rng.Int64N(1000)
			}
			s.put(nil, r)
		}
		if step%50 == 0 {
			checkFamilies(t, fmt.Sprintf("%s, step %d", label, step), s, append(slices.Clone(ids), families...))
		}
	}
	checkFamilies(t, label, s, append(slices.Clone(ids), families...))
}

// The first record alone: every answer about its family is from it.
func TestFamilyOfItsFirstRecordAlone(t *testing.T) {
	s := newState()
	h := sha256.Sum256([]byte("ac1"))
	s.put(nil, &Record{ID: "ac1", Hash: string(h[:]), Kind: "oauth2_code", Family: "ac1", State: Active, ExpiresAt: 500})
	if s.byFamily.Len() != 0 || s.familyLive.Len() != 0 {
		t.Fatalf("a family's first record is in the family indexes: %d, %d items", s.byFamily.Len(), s.familyLive.Len())
	}
	if rs := s.ofFamily("ac1"); len(rs) != 1 || rs[0].ID != "ac1" {
		t.Fatalf("ofFamily = %+v, want ac1", rs)
	}
	if got := s.familyUntil("ac1"); got != 500 {
		t.Fatalf("familyUntil = %d, want 500", got)
	}
	h = sha256.Sum256([]byte("ac1 again"))
	s.put(nil, &Record{ID: "ac1", Hash: string(h[:]), Kind: "oauth2_code", Family: "ac1", State: Active})
	if got := s.familyUntil("ac1"); got != math.MaxInt64 {
		t.Fatalf("familyUntil of a record that never expires = %d, want MaxInt64", got)
	}
}
