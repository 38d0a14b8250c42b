package fsm

import (
	"fmt"
	"hash/maphash"
	"slices"
	"sync"

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
	byID      *btree.BTreeG[idItem]
	byHash    digests             // digest -> record
	hash      groupHash           // of subjects and families
	bySubject *btree.BTreeG[item] // (subject, id); records with a subject
	byFamily  *btree.BTreeG[item] // (family, id); records with a family
	// (family, liveUntil, id): the active records of a family, so that how
	// long a family can be used is one lookup (tombstones are held that long).
	familyLive *btree.BTreeG[liveItem]
	byGC       gcIndex // records that will be collected, by GC time
	// (grace end, id): rotated tombstones that still hold their sealed
	// successor, so it is dropped once the grace period ends.
	sealed   *btree.BTreeG[item]
	counts   map[CountKey]int64
	families families // revoked families, remembered while they can be issued into
	// logVersion is the highest Fence applied: the Version the log needs
	// from there on. 0 for none (the first release's).
	logVersion int
	interns    interns // kind and client id pairs, shared by the records

	reqs     *btree.BTreeG[reqItem] // remembered request ids
	reqQueue []*request             // the same, oldest first
	// puts are the last two records put, so that a remembered outcome
	// shares the stored record it names.
	puts [2]*stored
	// probe is the writer's key for searching byID, so that a search
	// costs no allocation; readers, who share the state, make their own.
	probe stored
}

func newState() *state {
	return &state{
		byID:       newIDIndex(),
		byHash:     newDigests(0, ^uint64(0)),
		hash:       groupHash{seed: maphash.MakeSeed(), mask: ^uint64(0)},
		bySubject:  newIndex(),
		byFamily:   newIndex(),
		familyLive: newLiveIndex(),
		byGC:       newGCIndex(),
		sealed:     newIndex(),
		counts:     map[CountKey]int64{},
		families:   newFamilies(),
		interns:    interns{},
		reqs:       newReqIndex(),
	}
}

// getID returns the record with id, or nil. Records returned by the state
// are its own copies, which the caller may change (their strings, scopes,
// data and rotation are shared and must not be). Only the writer (apply,
// restore) calls it; readers call readID.
func (s *state) getID(id string) *Record { return s.storedID(id).expand() }

func (s *state) storedID(id string) *stored {
	it, _ := s.byID.Get(s.idKey(id))
	return it.r
}

// readID is getID for a reader.
func (s *state) readID(id string) *Record {
	it, _ := s.byID.Get(idKey(id))
	return it.r.expand()
}

// idKey is the writer's key of id in byID, valid until its next call.
func (s *state) idKey(id string) idItem {
	n := uint32(len(id))
	s.probe = stored{str: id, ends: [3]uint32{n, n, n}}
	return idItem{k: prefix8(id), r: &s.probe}
}

// getHash returns the record with the digest h, or nil.
func (s *state) getHash(h string) *Record { return s.byHash.get(h).expand() }

// The items of r in each index, for a record that is in that index.
func (s *state) subjectItem(r *stored) item {
	return item{g: s.hash.of(r.subject()), k: prefix8(r.id()), r: r}
}
func (s *state) familyItem(r *stored) item {
	return item{g: s.hash.of(r.family()), k: prefix8(r.id()), r: r}
}
func (s *state) liveItem(r *stored) liveItem {
	return liveItem{g: s.hash.of(r.family()), at: r.liveUntil(), k: prefix8(r.id()), r: r}
}
func sealedItem(r *stored) item {
	return item{g: timeKey(r.ext.rotated.GraceUntil), k: prefix8(r.id()), r: r}
}

// put stores r in place of the record stored under r.ID now, if any (old,
// nil for a new record, is that one; the state finds it by the id). An
// index whose key did not change is updated in place (ReplaceOrInsert
// swaps the item, whose record is the only part that differs): one tree
// operation instead of a delete and an insert.
func (s *state) put(_, r *Record) { s.putStored(compact(r, s.interns)) }

// putStored is put of a record already compacted.
func (s *state) putStored(n *stored) {
	s.puts[0], s.puts[1] = s.puts[1], n
	prev, had := s.byID.ReplaceOrInsert(idItem{k: prefix8(n.id()), r: n})
	old := prev.r
	if had {
		if old.hash() != n.hash() {
			s.byHash.delete(old.hash())
		}
		if old.subject() != "" && old.subject() != n.subject() {
			s.bySubject.Delete(s.subjectItem(old))
		}
		if old.family() != "" && old.family() != n.family() {
			s.byFamily.Delete(s.familyItem(old))
		}
		if old.inFamilyLive() && !(n.inFamilyLive() && old.family() == n.family() && old.liveUntil() == n.liveUntil()) {
			s.familyLive.Delete(s.liveItem(old))
		}
		if old.holdsSealed() && !(n.holdsSealed() && old.ext.rotated.GraceUntil == n.ext.rotated.GraceUntil) {
			s.sealed.Delete(sealedItem(old))
		}
		s.count(old, -1)
	}
	s.byHash.put(n)
	s.gcMoved(old, n)
	if n.subject() != "" {
		s.bySubject.ReplaceOrInsert(s.subjectItem(n))
	}
	if n.family() != "" {
		s.byFamily.ReplaceOrInsert(s.familyItem(n))
	}
	if n.inFamilyLive() {
		s.familyLive.ReplaceOrInsert(s.liveItem(n))
	}
	if n.holdsSealed() {
		s.sealed.ReplaceOrInsert(sealedItem(n))
	}
	s.count(n, 1)
}

// gcMoved updates the expiry index for n stored in place of old (either
// nil for none), once the index by digest holds n: an entry is added
// when n's bucket or digest key is not old's, and old's bucket loses a
// record. A change that keeps both (a consume, a revoke, most touches)
// costs the index nothing.
func (s *state) gcMoved(old, n *stored) {
	var ob, nb int64 = -1, -1 // no bucket
	var ok, nk uint64
	if old != nil && old.inGC() {
		ob, ok = gcBucketOf(old.gcAt()), s.byHash.key(old.hash())
	}
	if n != nil && n.inGC() {
		nb, nk = gcBucketOf(n.gcAt()), s.byHash.key(n.hash())
	}
	if ob == nb && ok == nk {
		return
	}
	if nb >= 0 {
		s.byGC.add(nb, nk)
	}
	if ob >= 0 {
		s.byGC.remove(&s.byHash, ob, ok)
	}
}

// storedOf returns one of the last two records put if it holds what r
// does; nil otherwise.
func (s *state) storedOf(r *Record) *stored {
	if r == nil {
		return nil
	}
	for _, p := range s.puts {
		if p != nil && p.is(r) {
			return p
		}
	}
	return nil
}

// delete removes the record stored under r.ID.
func (s *state) delete(r *Record) {
	it, ok := s.byID.Delete(s.idKey(r.ID))
	if !ok {
		return
	}
	o := it.r
	s.byHash.delete(o.hash())
	if o.subject() != "" {
		s.bySubject.Delete(s.subjectItem(o))
	}
	if o.family() != "" {
		s.byFamily.Delete(s.familyItem(o))
	}
	if o.inFamilyLive() {
		s.familyLive.Delete(s.liveItem(o))
	}
	s.gcMoved(o, nil)
	if o.holdsSealed() {
		s.sealed.Delete(sealedItem(o))
	}
	s.count(o, -1)
}

// housekeep is what log time alone decides, before each entry applies:
// revoked families are forgotten once no token could still be issued into
// them, and sealed successors are dropped once their grace period ends.
func (s *state) housekeep(now int64, index uint64) {
	s.families.forget(now)
	var due []*stored
	s.sealed.Ascend(func(it item) bool {
		if timeOf(it.g) > now {
			return false
		}
		due = append(due, it.r)
		return true
	})
	for _, st := range due {
		t := st.record()
		ro := *t.Rotated
		ro.Sealed = nil
		t.Rotated, t.ModifyIndex = &ro, index
		s.put(nil, t)
	}
}

func (s *state) count(r *stored, n int64) {
	k := CountKey{r.p.kind, r.state}
	if s.counts[k] += n; s.counts[k] == 0 {
		delete(s.counts, k)
	}
}

// ofSubject and ofFamily return the records of one index value, in id
// order; they are collected before any is changed, since a tree must not
// change under its own iteration.
func (s *state) ofSubject(subject string) []*Record {
	var out []*Record
	s.walkSubject(subject, "", func(r *stored) bool { out = append(out, r.record()); return true })
	return out
}

func (s *state) ofFamily(family string) []*Record {
	var out []*Record
	g := s.hash.of(family)
	s.byFamily.AscendGreaterOrEqual(rangeFrom(g, ""), func(it item) bool {
		if it.g != g {
			return false
		}
		if it.r.family() == family {
			out = append(out, it.r.record())
		}
		return true
	})
	return out
}

// walkSubject calls f with the records of subject in id order, from the
// first id after after ("" for all), until f returns false.
func (s *state) walkSubject(subject, after string, f func(*stored) bool) {
	g := s.hash.of(subject)
	s.bySubject.AscendGreaterOrEqual(rangeFrom(g, after), func(it item) bool {
		if it.g != g {
			return false
		}
		return it.r.subject() != subject || f(it.r)
	})
}

// familyUntil is how long family can still be used: the latest expiry of
// its active records (math.MaxInt64 if one never expires), 0 if it has
// none.
func (s *state) familyUntil(family string) int64 {
	var until int64
	g := s.hash.of(family)
	s.familyLive.DescendLessOrEqual(lastOf(g), func(it liveItem) bool {
		if it.g != g {
			return false
		}
		if it.r.family() != family {
			return true // another family with the same hash
		}
		until = it.at
		return false
	})
	return until
}

// load fills s, which must be empty, with recs in bulk, as a restore
// does; recs are compacted with s's profiles, in the order of the
// snapshot. The records are sorted by id once (a snapshot streams them in
// id order, so that is a check), each index gets its items sorted and is
// filled in order. The digest map is built beside the trees, which are
// built one after the other, so that no more than one index's sorted
// items are held at a time besides the state. A record whose id or
// digest another already has is refused, naming it.
func (s *state) load(recs []*stored) error {
	ids := make([]idItem, len(recs))
	for i, r := range recs {
		ids[i] = idItem{k: prefix8(r.id()), r: r}
	}
	if !slices.IsSortedFunc(ids, cmpID) {
		slices.SortStableFunc(ids, cmpID)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i].k == ids[i-1].k && ids[i].r.id() == ids[i-1].r.id() {
			return fmt.Errorf("duplicate record %s", ids[i].r.id())
		}
	}
	var (
		wg      sync.WaitGroup
		hashErr error
		mask    = s.byHash.mask
	)
	wg.Go(func() {
		byHash := newDigests(len(recs), mask)
		for _, r := range recs {
			if byHash.get(r.hash()) != nil {
				hashErr = fmt.Errorf("duplicate record %s", r.id())
				return
			}
			byHash.put(r)
			s.count(r, 1)
		}
		s.byHash = byHash
	})
	fill(s.byID, ids)
	ordered := make([]*stored, len(ids))
	for i, it := range ids {
		ordered[i] = it.r
	}
	ids = nil
	s.bySubject = loadIndex(ordered, newIndex, cmpItem, func(r *stored) (item, bool) {
		return s.subjectItem(r), r.subject() != ""
	})
	s.byGC = newGCIndex()
	s.byGC.load(ordered, func(h string) uint64 { return prefix8(h) & mask })
	s.byFamily = loadIndex(ordered, newIndex, cmpItem, func(r *stored) (item, bool) {
		return s.familyItem(r), r.family() != ""
	})
	s.familyLive = loadIndex(ordered, newLiveIndex, cmpLive, func(r *stored) (liveItem, bool) {
		return s.liveItem(r), r.inFamilyLive()
	})
	s.sealed = loadIndex(ordered, newIndex, cmpItem, func(r *stored) (item, bool) {
		if !r.holdsSealed() {
			return item{}, false
		}
		return sealedItem(r), true
	})
	wg.Wait()
	return hashErr
}

// loadIndex returns a new index (made by newTree, its items in the order
// of cmp) of the items of the records that have one, filled in order.
func loadIndex[T any](recs []*stored, newTree func() *btree.BTreeG[T], cmp func(a, b T) int, of func(*stored) (T, bool)) *btree.BTreeG[T] {
	n := 0
	for _, r := range recs {
		if _, ok := of(r); ok {
			n++
		}
	}
	items := make([]T, 0, n)
	for _, r := range recs {
		if x, ok := of(r); ok {
			items = append(items, x)
		}
	}
	slices.SortFunc(items, cmp)
	t := newTree()
	fill(t, items)
	return t
}

// fill inserts items, sorted and distinct, into the empty tree t: every
// other item first, then the rest. A B-tree filled in order splits each
// full node in half and never comes back to the left half, which stays
// half full; the items left out the first time fill those halves without
// another split. For a million items of the primary index: 34 MB of
// nodes, against 69 MB in order and 48 MB in random order.
func fill[T any](t *btree.BTreeG[T], items []T) {
	for i := 0; i < len(items); i += 2 {
		t.ReplaceOrInsert(items[i])
	}
	for i := 1; i < len(items); i += 2 {
		t.ReplaceOrInsert(items[i])
	}
}
