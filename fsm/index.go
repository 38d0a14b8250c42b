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
// The id itself is read from the record, to break a tie: 16 bytes an item.
type idItem struct {
	k uint64 // prefix8(r.id())
	r *stored
}

func lessID(a, b idItem) bool { return a.k < b.k || a.k == b.k && a.r.id() < b.r.id() }

// cmpID is lessID as a comparison: the ids are read only on a tie.
func cmpID(a, b idItem) int {
	if a.k != b.k {
		return cmp.Compare(a.k, b.k)
	}
	return strings.Compare(a.r.id(), b.r.id())
}

func idKey(id string) idItem { return idItem{k: prefix8(id), r: probe(id)} }

func newIDIndex() *btree.BTreeG[idItem] { return btree.NewG(btreeDegree, lessID) }

// item is an entry of a secondary index: records in the order of a key g,
// then in id order. g is a hash of a string field (subject, family) for an
// index of groups, or a time (timeKey) for an index in time order. A group
// is what the state asks an index for (the records of one subject, say),
// and no order between groups is ever seen, so a hash serves: records of
// two fields with the same hash interleave in id order, and a walk over a
// group skips the records of the other field. 24 bytes an item.
type item struct {
	g uint64
	k uint64 // prefix8(r.id())
	r *stored
}

func lessItem(a, b item) bool {
	switch {
	case a.g != b.g:
		return a.g < b.g
	case a.k != b.k:
		return a.k < b.k
	}
	return a.r.id() < b.r.id()
}

// cmpItem is lessItem as a comparison.
func cmpItem(a, b item) int {
	switch {
	case a.g != b.g:
		return cmp.Compare(a.g, b.g)
	case a.k != b.k:
		return cmp.Compare(a.k, b.k)
	}
	return strings.Compare(a.r.id(), b.r.id())
}

func newIndex() *btree.BTreeG[item] { return btree.NewG(btreeDegree, lessItem) }

// timeKey is at as a key g, in the same order; timeOf is its inverse.
func timeKey(at int64) uint64 { return uint64(at) ^ 1<<63 }
func timeOf(g uint64) int64   { return int64(g ^ 1<<63) }

// liveItem is an entry of the index of a family's active records: by a
// hash of the family, then in time order, then in id order.
type liveItem struct {
	g  uint64
	at int64
	k  uint64 // prefix8(r.id())
	r  *stored
}

func lessLive(a, b liveItem) bool {
	switch {
	case a.g != b.g:
		return a.g < b.g
	case a.at != b.at:
		return a.at < b.at
	case a.k != b.k:
		return a.k < b.k
	}
	return a.r.id() < b.r.id()
}

// cmpLive is lessLive as a comparison.
func cmpLive(a, b liveItem) int {
	switch {
	case a.g != b.g:
		return cmp.Compare(a.g, b.g)
	case a.at != b.at:
		return cmp.Compare(a.at, b.at)
	case a.k != b.k:
		return cmp.Compare(a.k, b.k)
	}
	return strings.Compare(a.r.id(), b.r.id())
}

func newLiveIndex() *btree.BTreeG[liveItem] { return btree.NewG(btreeDegree, lessLive) }

// noID sorts before every record of its group, time and id prefix: the
// probe at the start of a range. It is never modified.
var noID = probe("")

// groupHash hashes the grouping field of an index. The seed is the
// state's own, drawn when it is made: a hash nobody outside can predict,
// so no client can pick subjects that share one to slow another's walk.
type groupHash struct {
	seed maphash.Seed
	mask uint64 // all bits; tests keep one, so that groups collide
}

func (h groupHash) of(s string) uint64 { return maphash.String(h.seed, s) & h.mask }

// rangeFrom is the first item of group g whose id is after after (after
// "" for all).
func rangeFrom(g uint64, after string) item {
	if after == "" {
		return item{g: g, r: noID}
	}
	id := after + "\x00" // sorts just past after
	return item{g: g, k: prefix8(id), r: probe(id)}
}

// lastOf is the probe after every live item of group g.
func lastOf(g uint64) liveItem { return liveItem{g: g, at: math.MaxInt64, k: math.MaxUint64, r: maxID} }

// maxID sorts after every id a record can have (ids are checked UTF-8 text
// without control characters, so never 0xff bytes). It is never modified.
var maxID = probe("\xff\xff\xff\xff\xff\xff\xff\xff\xff")
