package fsm

import (
	"cmp"
	"encoding/binary"
	"hash/maphash"
	"math"
	"strings"

	"github.com/google/btree"
)

// The indexes are B-trees whose items carry their sort keys inline, as
// integers: a search compares integers in the node's own array and reads
// no record, except to break a tie, which for the ids the API mints (22
// random characters) is as rare as two ids sharing their first eight. A
// tree of pointers that compared strings read two other cache lines at
// every step of every search.

// btreeDegree is the trees' degree: nodes of up to 63 items.
const btreeDegree = 32

// prefix8 is the first eight bytes of s, big-endian and zero-padded:
// prefixes order as the strings do wherever the strings differ within
// eight bytes; the strings themselves break ties.
func prefix8(s string) uint64 {
	if len(s) >= 8 {
		return uint64(s[0])<<56 | uint64(s[1])<<48 | uint64(s[2])<<40 | uint64(s[3])<<32 |
			uint64(s[4])<<24 | uint64(s[5])<<16 | uint64(s[6])<<8 | uint64(s[7])
	}
	var b [8]byte
	copy(b[:], s)
	return binary.BigEndian.Uint64(b[:])
}

// idItem is an entry of the primary index, in id order.
// The id itself is read from the record, to break a tie: 16 bytes an item,
// none of them a pointer.
type idItem struct {
	k uint64 // prefix8 of the record's id
	h handle
}

// cmpHandles orders two records of the same key by id; minHandle sorts
// before every record and maxHandle after (the bounds of a range).
func (a *arena) cmpHandles(x, y handle) int {
	switch {
	case x == y:
		return 0
	case x == minHandle || y == maxHandle:
		return -1
	case y == minHandle || x == maxHandle:
		return 1
	}
	return strings.Compare(a.get(x).id(), a.get(y).id())
}

// The orders of the indexes' items, the ids read from a's records.
func (a *arena) lessID(x, y idItem) bool {
	return x.k < y.k || x.k == y.k && a.cmpHandles(x.h, y.h) < 0
}

func (a *arena) cmpID(x, y idItem) int {
	if x.k != y.k {
		return cmp.Compare(x.k, y.k)
	}
	return a.cmpHandles(x.h, y.h)
}

func newIDIndex(a *arena) *btree.BTreeG[idItem] { return btree.NewG(btreeDegree, a.lessID) }

// item is an entry of a secondary index: records in the order of a key g,
// then in id order. g is a hash of a string field (subject, family) for an
// index of groups, or a time (timeKey) for an index in time order. A group
// is what the state asks an index for (the records of one subject, say),
// and no order between groups is ever seen, so a hash serves: records of
// two fields with the same hash interleave in id order, and a walk over a
// group skips the records of the other field. 24 bytes an item.
type item struct {
	g uint64
	k uint64 // prefix8 of the record's id
	h handle
}

func (a *arena) lessItem(x, y item) bool { return a.cmpItem(x, y) < 0 }

func (a *arena) cmpItem(x, y item) int {
	switch {
	case x.g != y.g:
		return cmp.Compare(x.g, y.g)
	case x.k != y.k:
		return cmp.Compare(x.k, y.k)
	}
	return a.cmpHandles(x.h, y.h)
}

func newIndex(a *arena) *btree.BTreeG[item] { return btree.NewG(btreeDegree, a.lessItem) }

// timeKey is at as a key g, in the same order; timeOf is its inverse.
func timeKey(at int64) uint64 { return uint64(at) ^ 1<<63 }
func timeOf(g uint64) int64   { return int64(g ^ 1<<63) }

// liveItem is an entry of the index of a family's active records: by a
// hash of the family, then in time order, then in id order.
type liveItem struct {
	g  uint64
	at int64
	k  uint64 // prefix8 of the record's id
	h  handle
}

func (a *arena) lessLive(x, y liveItem) bool { return a.cmpLive(x, y) < 0 }

func (a *arena) cmpLive(x, y liveItem) int {
	switch {
	case x.g != y.g:
		return cmp.Compare(x.g, y.g)
	case x.at != y.at:
		return cmp.Compare(x.at, y.at)
	case x.k != y.k:
		return cmp.Compare(x.k, y.k)
	}
	return a.cmpHandles(x.h, y.h)
}

func newLiveIndex(a *arena) *btree.BTreeG[liveItem] { return btree.NewG(btreeDegree, a.lessLive) }

// groupHash hashes the grouping field of an index. The seed is the
// state's own, drawn when it is made: a hash nobody outside can predict,
// so no client can pick subjects that share one to slow another's walk.
type groupHash struct {
	seed maphash.Seed
	mask uint64 // all bits; tests keep one, so that groups collide
}

func (h groupHash) of(s string) uint64 { return maphash.String(h.seed, s) & h.mask }

// rangeFrom is where the items of group g whose id is after after (""
// for all) start: the first of them is at or after it, and what comes
// before them from there has the key of after and an id at or before it.
func rangeFrom(g uint64, after string) item {
	if after == "" {
		return item{g: g, h: minHandle}
	}
	return item{g: g, k: prefix8(after), h: minHandle}
}

// lastOf is the bound after every live item of group g.
func lastOf(g uint64) liveItem {
	return liveItem{g: g, at: math.MaxInt64, k: math.MaxUint64, h: maxHandle}
}
