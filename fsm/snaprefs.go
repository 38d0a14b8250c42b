package fsm

// refTable maps the records a snapshot's remembered requests hold to
// their places among the stream's record frames, so that a request frame
// names its record by place (version 2 of the stream). The walk of the
// records asks it about every record, a million times at 1M tokens: it
// is an array indexed by the handle, not a map, one slot for every
// recHeader bytes of a chunk that holds such a record. No two records
// share a slot, as each is at least recHeader bytes long; a chunk no
// request holds a record of has no slots.
type refTable struct {
	chunks [][]uint32 // by chunk; refHeld until the walk places the record, then its place
}

// refHeld marks a slot whose record a request holds and the walk has not
// reached yet: its place, like that of a record no request holds, reads
// as 0.
const refHeld = ^uint32(0)

// holdRefs returns the table of the records v's requests hold, over the
// chunks of a.
func holdRefs(v *reqView, a *arena) *refTable {
	chunks := a.chunks()
	t := &refTable{chunks: make([][]uint32, len(chunks))}
	for seq := v.head; seq < v.tail; seq++ {
		e := v.q.at(seq)
		for _, h := range [2]handle{e.rec, e.acc} {
			if h == noHandle {
				continue
			}
			ci, off := uint64(h>>32), uint64(uint32(h))
			if ci >= uint64(len(chunks)) || off >= uint64(len(chunks[ci].b)) {
				corrupt("request %d holds handle %#x, outside the arena", seq, uint64(h))
			}
			if t.chunks[ci] == nil {
				t.chunks[ci] = make([]uint32, len(chunks[ci].b)/recHeader+1)
			}
			t.chunks[ci][off/recHeader] = refHeld
		}
	}
	return t
}

// slot returns the slot of the record at h, nil if no request holds a
// record of its chunk.
func (t *refTable) slot(h handle) *uint32 {
	ci, i := uint64(h>>32), uint64(uint32(h))/recHeader
	if ci >= uint64(len(t.chunks)) || i >= uint64(len(t.chunks[ci])) {
		return nil
	}
	return &t.chunks[ci][i]
}

// place records that the record at h is the n-th record frame (from 1),
// if a request holds it.
func (t *refTable) place(h handle, n uint32) {
	if p := t.slot(h); p != nil && *p != 0 {
		*p = n
	}
}

// ref returns the place of the record at h among the record frames, 0
// if it has none: the table is nil (version 1 of the stream), no request
// held it when the snapshot was taken, or the walk did not reach it.
func (t *refTable) ref(h handle) uint32 {
	if t == nil {
		return 0
	}
	if p := t.slot(h); p != nil && *p != refHeld {
		return *p
	}
	return 0
}
