package fsm

import (
	"github.com/google/btree"
)

// state is the token records with their indexes. Records are immutable
// once stored: a change stores a new *Record in place of the old one, so a
// cloned tree (a snapshot) keeps seeing the old version.
//
// byID is the primary index and the only one a snapshot needs: btree's
// Clone is O(1) and copy-on-write, so a snapshot streams a frozen view
// while writes go on. The other indexes are rebuilt on restore.
type state struct {
	byID      *btree.BTreeG[*Record] // id order
	byHash    map[string]*Record     // digest -> record
	bySubject *btree.BTreeG[*Record] // (subject, id); records with a subject
	byFamily  *btree.BTreeG[*Record] // (family, id); records with a family
	// (family, liveUntil, id): the active records of a family, so that how
	// long a family can be used is one lookup (tombstones are held that long).
	familyLive *btree.BTreeG[*Record]
	byGC       *btree.BTreeG[*Record] // (GCAt, id); records that will be collected
	// (grace end, id): rotated tombstones that still hold their sealed
	// successor, so it is dropped once the grace period ends.
	sealed   *btree.BTreeG[*Record]
	counts   map[CountKey]int64
	families families // revoked families, remembered while they can be issued into
	// logVersion is the highest Fence applied: the Version the log needs
	// from there on. 0 for none (the first release's).
	logVersion int

	reqs     *btree.BTreeG[*request] // remembered request ids, by id
	reqQueue []*request              // the same, oldest first
}

const btreeDegree = 32

func newState() *state {
	return &state{
		byID:   btree.NewG(btreeDegree, func(a, b *Record) bool { return a.ID < b.ID }),
		byHash: map[string]*Record{},
		bySubject: btree.NewG(btreeDegree, func(a, b *Record) bool {
			return a.Subject < b.Subject || a.Subject == b.Subject && a.ID < b.ID
		}),
		byFamily: btree.NewG(btreeDegree, func(a, b *Record) bool {
			return a.Family < b.Family || a.Family == b.Family && a.ID < b.ID
		}),
		familyLive: btree.NewG(btreeDegree, func(a, b *Record) bool {
			if a.Family != b.Family {
				return a.Family < b.Family
			}
			la, lb := a.liveUntil(), b.liveUntil()
			return la < lb || la == lb && a.ID < b.ID
		}),
		byGC: btree.NewG(btreeDegree, func(a, b *Record) bool {
			ga, gb := a.GCAt(), b.GCAt()
			return ga < gb || ga == gb && a.ID < b.ID
		}),
		sealed: btree.NewG(btreeDegree, func(a, b *Record) bool {
			ga, gb := a.Rotated.GraceUntil, b.Rotated.GraceUntil
			return ga < gb || ga == gb && a.ID < b.ID
		}),
		counts:   map[CountKey]int64{},
		families: newFamilies(),
		reqs:     btree.NewG(btreeDegree, func(a, b *request) bool { return a.ID < b.ID }),
	}
}

func (s *state) getID(id string) *Record {
	r, _ := s.byID.Get(&Record{ID: id})
	return r
}

// put stores r, replacing old (nil for a new record) which must be the
// record stored under r.ID now. An index whose key did not change is
// updated in place (ReplaceOrInsert swaps the pointer): one tree operation
// instead of a delete and an insert.
func (s *state) put(old, r *Record) {
	if old != nil {
		if old.Hash != r.Hash {
			delete(s.byHash, old.Hash)
		}
		if old.Subject != "" && old.Subject != r.Subject {
			s.bySubject.Delete(old)
		}
		if old.Family != "" && old.Family != r.Family {
			s.byFamily.Delete(old)
		}
		if old.inFamilyLive() && !(r.inFamilyLive() && old.Family == r.Family && old.liveUntil() == r.liveUntil()) {
			s.familyLive.Delete(old)
		}
		if g := old.GCAt(); g > 0 && g != r.GCAt() {
			s.byGC.Delete(old)
		}
		if old.holdsSealed() {
			s.sealed.Delete(old)
		}
		s.count(old, -1)
	}
	s.byID.ReplaceOrInsert(r)
	s.byHash[r.Hash] = r
	if r.Subject != "" {
		s.bySubject.ReplaceOrInsert(r)
	}
	if r.Family != "" {
		s.byFamily.ReplaceOrInsert(r)
	}
	if r.inFamilyLive() {
		s.familyLive.ReplaceOrInsert(r)
	}
	if r.GCAt() > 0 {
		s.byGC.ReplaceOrInsert(r)
	}
	if r.holdsSealed() {
		s.sealed.ReplaceOrInsert(r)
	}
	s.count(r, 1)
}

func (s *state) delete(r *Record) {
	delete(s.byHash, r.Hash)
	s.byID.Delete(r)
	if r.Subject != "" {
		s.bySubject.Delete(r)
	}
	if r.Family != "" {
		s.byFamily.Delete(r)
	}
	if r.inFamilyLive() {
		s.familyLive.Delete(r)
	}
	if r.GCAt() > 0 {
		s.byGC.Delete(r)
	}
	if r.holdsSealed() {
		s.sealed.Delete(r)
	}
	s.count(r, -1)
}

// housekeep is what log time alone decides, before each entry applies:
// revoked families are forgotten once no token could still be issued into
// them, and sealed successors are dropped once their grace period ends.
func (s *state) housekeep(now int64, index uint64) {
	s.families.forget(now)
	var due []*Record
	s.sealed.Ascend(func(r *Record) bool {
		if r.Rotated.GraceUntil > now {
			return false
		}
		due = append(due, r)
		return true
	})
	for _, r := range due {
		ro := *r.Rotated
		ro.Sealed = nil
		t := *r
		t.Rotated, t.ModifyIndex = &ro, index
		s.put(r, &t)
	}
}

func (s *state) count(r *Record, n int64) {
	k := CountKey{r.Kind, r.State}
	if s.counts[k] += n; s.counts[k] == 0 {
		delete(s.counts, k)
	}
}

// ofSubject and ofFamily return the records of one index value; they are
// collected before any is changed, since a tree must not change under its
// own iteration.
func (s *state) ofSubject(subject string) []*Record {
	return collectFrom(s.bySubject, &Record{Subject: subject}, func(r *Record) bool { return r.Subject == subject })
}

func (s *state) ofFamily(family string) []*Record {
	return collectFrom(s.byFamily, &Record{Family: family}, func(r *Record) bool { return r.Family == family })
}

// familyUntil is how long family can still be used: the latest expiry of
// its active records (math.MaxInt64 if one never expires), 0 if it has
// none.
func (s *state) familyUntil(family string) int64 {
	var until int64
	s.familyLive.DescendLessOrEqual(&Record{Family: family, ExpiresAt: 0, ID: "\xff"}, func(r *Record) bool {
		if r.Family == family {
			until = r.liveUntil()
		}
		return false
	})
	return until
}

func collectFrom(t *btree.BTreeG[*Record], from *Record, same func(*Record) bool) []*Record {
	var out []*Record
	t.AscendGreaterOrEqual(from, func(r *Record) bool {
		if !same(r) {
			return false
		}
		out = append(out, r)
		return true
	})
	return out
}
