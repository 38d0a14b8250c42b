package fsm

import (
	"cmp"
	"slices"
	"strings"

	"github.com/google/btree"
)

// gcShift sets the width of the expiry index's buckets: the GC times that
// agree above their low gcShift bits, 2^30 ns (about 1.07 s), share one.
const gcShift = 30

// gcBucketOf is the bucket of a GC time at > 0.
func gcBucketOf(at int64) int64 { return at >> gcShift }

// gcIndex is the index of the records that will be collected, by GC time:
// buckets of gcShift's width, in time order, each a list of the digest
// keys (digests.key) of the records whose GC time falls in it, 8 bytes a
// record and an append to write. An entry names no record version, so
// the index keeps none alive; the records are found by their key in the
// index by digest, and a record belongs to the bucket of its GC time now.
//
// An entry goes stale when its record leaves the bucket (deleted, or its
// GC time or digest changed); a stale entry stays until the writer drops
// it: at once when it leads the bucket (GC deletes in the order the index
// lists, so from the front: the bucket's head moves past it), and with
// all the others when a bucket holds more than twice as many entries
// past its head as records (compact, which also drops duplicates and
// the entries before the head). A bucket goes when its last record does.
// So a walk over a bucket reads at most about twice its records.
//
// Only the writer changes it, under the state's write lock; readers walk
// it under the read lock. It is not part of a snapshot: a restore builds
// it in bulk (load). Replicas may hold different entries (stale ones,
// order within a bucket); nothing applied depends on them: an Expire
// checks each record's GC time itself.
type gcIndex struct {
	tree *btree.BTreeG[gcItem]
	// recent are the buckets of more than one record last written, so
	// that writes of the same TTL, which come in runs, skip the tree.
	recent [4]gcItem
	next   int
}

// gcItem is a bucket in the tree: a bucket of one record holds its key
// inline (24 bytes in the tree, about what the tree of records cost a
// record), a larger one its list of keys.
type gcItem struct {
	at int64  // gcBucketOf of its records' GC times
	k  uint64 // the key of its one record, when bk is nil
	bk *gcBucket
}

type gcBucket struct {
	keys []uint64 // digest keys; keys[:head] are stale
	head int32
	live int32 // records whose GC time is in the bucket
}

func lessGCItem(a, b gcItem) bool { return a.at < b.at }

func newGCIndex() gcIndex { return gcIndex{tree: btree.NewG(btreeDegree, lessGCItem)} }

// inGC reports whether r is in the index: whether it will be collected.
func (r rec) inGC() bool { return r.gcAt() > 0 }

// get returns bucket b's item.
func (g *gcIndex) get(b int64) (gcItem, bool) {
	for _, it := range g.recent {
		if it.bk != nil && it.at == b {
			return it, true
		}
	}
	it, ok := g.tree.Get(gcItem{at: b})
	if it.bk != nil {
		g.remember(it)
	}
	return it, ok
}

func (g *gcIndex) remember(it gcItem) {
	g.recent[g.next] = it
	g.next = (g.next + 1) % len(g.recent)
}

func (g *gcIndex) forget(bk *gcBucket) {
	for i, r := range g.recent {
		if r.bk == bk {
			g.recent[i] = gcItem{}
		}
	}
}

// add records that the record with digest key k is now in bucket b.
func (g *gcIndex) add(b int64, k uint64) {
	it, ok := g.get(b)
	switch {
	case !ok:
		g.tree.ReplaceOrInsert(gcItem{at: b, k: k})
	case it.bk == nil:
		it.k, it.bk = 0, &gcBucket{keys: []uint64{it.k, k}, live: 2}
		g.tree.ReplaceOrInsert(it)
		g.remember(it)
	default:
		it.bk.keys = append(it.bk.keys, k)
		it.bk.live++
	}
}

// remove records that the record with digest key k left bucket b; d is
// the index by digest as it is after the change.
func (g *gcIndex) remove(d *digests, b int64, k uint64) {
	it, ok := g.get(b)
	if !ok {
		return // not in the index: cannot happen
	}
	bk := it.bk
	if bk == nil {
		g.tree.Delete(it)
		return
	}
	if bk.live--; bk.live <= 0 {
		g.tree.Delete(it)
		g.forget(bk)
		return
	}
	// GC deletes in the order the walk lists, so the entry of the record
	// it deletes leads, unless another record under the same key is
	// still in the bucket. A comparison, no lookup, while no two digests
	// share a key.
	if int(bk.head) < len(bk.keys) && bk.keys[bk.head] == k && (len(d.more) == 0 || !d.inGCBucket(k, b)) {
		bk.head++
	}
	if len(bk.keys)-int(bk.head) > 2*int(bk.live)+16 {
		bk.compact(d, b)
	}
}

// compact keeps the entries that name a record of the bucket, once each,
// in a slice of their own size.
func (bk *gcBucket) compact(d *digests, b int64) {
	keys := make([]uint64, 0, bk.live)
	for _, k := range bk.keys[bk.head:] {
		if d.inGCBucket(k, b) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	bk.keys, bk.head = slices.Clip(keys), 0
}

// inGCBucket reports whether a record under digest key k has its GC time
// in bucket b.
func (d *digests) inGCBucket(k uint64, b int64) bool {
	h, ok := d.m.get(k)
	if !ok {
		return false
	}
	if r := d.ar.get(h); r.inGC() && gcBucketOf(r.gcAt()) == b {
		return true
	}
	if len(d.more) == 0 {
		return false
	}
	for _, o := range d.more[k] {
		if r := d.ar.get(o); r.inGC() && gcBucketOf(r.gcAt()) == b {
			return true
		}
	}
	return false
}

// due returns the ids of up to limit records whose GC time is at or before
// before: the oldest bucket first, within a bucket in the order of its
// entries (of the records under one key, the digest index's order); the
// ids are copies, which outlive the lock. It
// reads the entries of the buckets it returns records from and of the
// first bucket with none due, each at most twice its records.
func (g *gcIndex) due(d *digests, before int64, limit int) []string {
	if limit <= 0 || before <= 0 {
		return nil
	}
	last := gcBucketOf(before)
	var (
		ids []string
		// The keys of the bucket walked that gave a record: an entry may
		// repeat (a record that left the bucket and came back, or two
		// records under one key), and each record is listed once.
		seen map[uint64]struct{}
	)
	emit := func(h handle, b int64) bool {
		r := d.ar.get(h)
		if !r.inGC() || r.gcAt() > before || gcBucketOf(r.gcAt()) != b {
			return false
		}
		ids = append(ids, strings.Clone(r.id()))
		return true
	}
	walk := func(b int64, k uint64) bool {
		if len(seen) > 0 {
			if _, ok := seen[k]; ok {
				return true
			}
		}
		r, ok := d.m.get(k)
		if !ok {
			return true
		}
		gave := emit(r, b)
		if len(d.more) > 0 {
			for _, o := range d.more[k] {
				if len(ids) == limit {
					break
				}
				gave = emit(o, b) || gave
			}
		}
		if len(ids) == limit {
			return false
		}
		if gave {
			if seen == nil {
				seen = make(map[uint64]struct{}, min(limit, 64))
			}
			seen[k] = struct{}{}
		}
		return true
	}
	g.tree.Ascend(func(it gcItem) bool {
		if it.at > last {
			return false
		}
		if len(seen) > 0 {
			clear(seen) // a key is listed once per bucket
		}
		if it.bk == nil {
			return walk(it.at, it.k)
		}
		for _, k := range it.bk.keys[it.bk.head:] {
			if !walk(it.at, k) {
				return false
			}
		}
		return true
	})
	return ids
}

// load fills the empty index with the records of recs that will be
// collected, in bulk: each bucket's entries in the order of their keys;
// key is the digest index's key of a digest; ar holds the records.
func (g *gcIndex) load(ar *arena, recs []handle, key func(string) uint64) {
	type ent struct {
		b int64
		k uint64
	}
	n := 0
	for _, h := range recs {
		if ar.get(h).inGC() {
			n++
		}
	}
	ents := make([]ent, 0, n)
	for _, h := range recs {
		if r := ar.get(h); r.inGC() {
			ents = append(ents, ent{gcBucketOf(r.gcAt()), key(r.hash())})
		}
	}
	slices.SortFunc(ents, func(a, b ent) int {
		if a.b != b.b {
			return cmp.Compare(a.b, b.b)
		}
		return cmp.Compare(a.k, b.k)
	})
	var items []gcItem
	for i := 0; i < len(ents); {
		j := i + 1
		for j < len(ents) && ents[j].b == ents[i].b {
			j++
		}
		it := gcItem{at: ents[i].b, k: ents[i].k}
		if j-i > 1 {
			it.k, it.bk = 0, &gcBucket{keys: make([]uint64, j-i), live: int32(j - i)}
			for x := i; x < j; x++ {
				it.bk.keys[x-i] = ents[x].k
			}
		}
		items = append(items, it)
		i = j
	}
	fill(g.tree, items)
}
