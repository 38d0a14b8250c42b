package fsm

import (
	"fmt"
	"slices"
	"unsafe"
)

// The window of remembered requests holds every write of the last
// RequestWindow, hundreds of thousands at a busy node's rate, so it is
// kept out of the collector's sight: fixed-size entries in a slice with
// no pointers, the ids' bytes in another, an open-addressing table of
// their positions, and the rare outcomes that are more than records
// (errors, counts, sealed secrets, a client batch's) in a short slice of
// their own.
//
// Entries are appended in log order and only ever read once written; the
// front is dropped by reslicing, and a slice is copied into a new array
// when its dropped front grows large. So a snapshot's view, the three
// slices as they were when it was taken, stays as it was while applies
// go on: nothing it can read is written again, and an array it holds is
// kept for it by the collector. Its records are kept for it by the
// arena, as the state's are.

// reqEntry is one remembered request. Its position in the window is its
// sequence number; its id is its bytes in reqLog.ids.
type reqEntry struct {
	at       int64
	rec, acc handle
	// idOff is the offset of the id's bytes, counted from the first byte
	// ever appended, modulo 2^32: the live ids are far fewer bytes.
	idOff uint32
	// idLen is the id's length, and reqHasRest when the outcome is more
	// than its records (in reqLog.rests).
	idLen uint32
}

const (
	reqHasRest = 1 << 31
	maxReqID   = reqHasRest - 1
)

// reqRest is the outcome but its records of the request numbered seq.
type reqRest struct {
	seq uint64
	o   *Outcome
}

// reqLog is the window of remembered requests.
type reqLog struct {
	q     []reqEntry // oldest first
	head  uint64     // the sequence number of q[0]
	ids   []byte
	idsAt uint32    // the offset of ids[0]
	rests []reqRest // by sequence number
	// table is an open-addressing index (linear probing) of q: each slot
	// a tag of the id's hash (never 0) above the low 32 bits of an
	// entry's sequence number; 0 is an empty slot.
	table []uint64
	n     int
	// pending is set from rememberNew to remembered: the last entry has
	// no outcome yet, and no snapshot sees it.
	pending bool
}

const minReqTable = 1 << 10

// reqHash is a fixed hash (FNV-1a) of a request id, mixed so that its
// high bits, which the table uses, depend on every byte.
func reqHash(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	h ^= h >> 29
	return h * 0x9e3779b97f4a7c15
}

// reqTag is the tag of an id of hash h in the table, and its slot
// before any probing is tag>>1 & mask.
func reqTag(h uint64) uint64 { return h>>32 | 1 }

func (l *reqLog) id(e *reqEntry) []byte {
	off := e.idOff - l.idsAt
	return l.ids[off : off+e.idLen&maxReqID]
}

func (l *reqLog) entry(seq uint64) *reqEntry { return &l.q[seq-l.head] }

// find returns the slot of id in the table and the sequence number it
// holds, or the empty slot where id would go and false.
func (l *reqLog) find(id string, h uint64) (int, uint64, bool) {
	if len(l.table) == 0 {
		return -1, 0, false
	}
	mask := uint64(len(l.table) - 1)
	tag := reqTag(h)
	for i := tag >> 1 & mask; ; i = (i + 1) & mask {
		s := l.table[i]
		if s == 0 {
			return int(i), 0, false
		}
		if s>>32 == tag {
			// The low 32 bits are the sequence number's; the window is
			// far shorter than 2^32 entries.
			seq := l.head + uint64(uint32(s)-uint32(l.head))
			if seq-l.head < uint64(len(l.q)) && string(l.id(l.entry(seq))) == id {
				return int(i), seq, true
			}
		}
	}
}

// lookup returns the sequence number of id, if it is remembered.
func (l *reqLog) lookup(id string) (uint64, bool) {
	_, seq, ok := l.find(id, reqHash(id))
	return seq, ok
}

// add appends id at log time at, with no outcome yet, unless it is
// remembered already: its sequence number then, and false.
func (l *reqLog) add(id string, at int64) (uint64, bool) {
	if 2*(l.n+1) > len(l.table) {
		l.resize(max(minReqTable, 2*len(l.table)))
	}
	h := reqHash(id)
	i, seq, ok := l.find(id, h)
	if ok {
		return seq, false
	}
	seq = l.head + uint64(len(l.q))
	l.table[i] = reqTag(h)<<32 | uint64(uint32(seq))
	l.n++
	l.q = append(l.q, reqEntry{at: at, idOff: l.idsAt + uint32(len(l.ids)), idLen: uint32(len(id))})
	l.ids = append(l.ids, id...)
	return seq, true
}

// resize rehashes the table into size slots, a power of two.
func (l *reqLog) resize(size int) {
	old := l.table
	l.table = make([]uint64, size)
	mask := uint64(size - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := s >> 33 & mask
		for l.table[i] != 0 {
			i = (i + 1) & mask
		}
		l.table[i] = s
	}
}

// unindex takes the entry numbered seq out of the table, shifting back
// the entries that probed past it.
func (l *reqLog) unindex(seq uint64) {
	e := l.entry(seq)
	i, _, ok := l.find(string(l.id(e)), reqHash(string(l.id(e))))
	if !ok {
		return
	}
	mask := len(l.table) - 1
	for j := (i + 1) & mask; l.table[j] != 0; j = (j + 1) & mask {
		home := int(l.table[j] >> 33 & uint64(mask))
		// Move j to i if its home is not in (i, j], cyclically.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			l.table[i] = l.table[j]
			i = j
		}
	}
	l.table[i] = 0
	l.n--
}

// rest returns the outcome but its records of the entry numbered seq.
func (l *reqLog) rest(seq uint64) *Outcome {
	if l.entry(seq).idLen&reqHasRest == 0 {
		return nil
	}
	return restOf(l.rests, seq)
}

func restOf(rests []reqRest, seq uint64) *Outcome {
	i, ok := slices.BinarySearchFunc(rests, seq, func(r reqRest, seq uint64) int {
		switch {
		case r.seq < seq:
			return -1
		case r.seq > seq:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return rests[i].o
}

// set sets the outcome of the entry numbered seq, which has none.
func (l *reqLog) set(seq uint64, rec, acc handle, rest *Outcome) {
	e := l.entry(seq)
	e.rec, e.acc = rec, acc
	if rest != nil {
		e.idLen |= reqHasRest
		l.rests = append(l.rests, reqRest{seq: seq, o: rest})
	}
}

// view is what a snapshot reads: the window but the pending entry.
func (l *reqLog) view() reqView {
	q := l.q
	if l.pending {
		q = q[:len(q)-1]
	}
	return reqView{q: q, head: l.head, ids: l.ids, idsAt: l.idsAt, rests: l.rests}
}

// reqView is a snapshot's view of the window.
type reqView struct {
	q     []reqEntry
	head  uint64
	ids   []byte
	idsAt uint32
	rests []reqRest
}

// frameTo sets *f to the i'th request of v in its encodable form, as
// request.frameTo does. Its ID is a view of v's bytes, which are never
// written again.
func (v *reqView) frameTo(st *state, i int, f *requestFrame, rec, acc *Record) {
	e := &v.q[i]
	off := e.idOff - v.idsAt
	id := v.ids[off : off+e.idLen&maxReqID]
	r := request{at: e.at, rec: e.rec, acc: e.acc}
	if len(id) > 0 {
		r.id = unsafe.String(&id[0], len(id))
	}
	if e.idLen&reqHasRest != 0 {
		r.rest = restOf(v.rests, v.head+uint64(i))
	}
	r.frameTo(st, f, rec, acc)
}

// forget drops the entries remembered before log time before, and calls
// drop with the records each held.
func (l *reqLog) forget(before int64, drop func(handle)) {
	i := 0
	var idBytes uint32
	for ; i < len(l.q) && l.q[i].at < before; i++ {
		if l.pending && i == len(l.q)-1 {
			break
		}
		l.unindex(l.head + uint64(i))
		e := &l.q[i]
		for _, h := range [2]handle{e.rec, e.acc} {
			if h != noHandle {
				drop(h)
			}
		}
		idBytes += e.idLen & maxReqID
	}
	if i == 0 {
		return
	}
	l.head += uint64(i)
	l.idsAt += idBytes
	// Copy the live part to a new array when the dropped front is
	// large, so the arrays do not grow forever; never in place, where
	// a snapshot may be reading.
	if l.q = l.q[i:]; cap(l.q) > 2*len(l.q)+1024 {
		l.q = append([]reqEntry(nil), l.q...)
	}
	if l.ids = l.ids[idBytes:]; cap(l.ids) > 2*len(l.ids)+16<<10 {
		l.ids = append([]byte(nil), l.ids...)
	}
	j := 0
	for j < len(l.rests) && l.rests[j].seq < l.head {
		j++
	}
	// The dropped outcomes stay reachable from the array until it is
	// copied: at most as many as are live, and a few.
	if l.rests = l.rests[j:]; j > 0 && cap(l.rests) > 2*len(l.rests)+64 {
		l.rests = append([]reqRest(nil), l.rests...)
	}
	if len(l.table) > minReqTable && 8*l.n < len(l.table) {
		l.resize(len(l.table) / 2)
	}
}

// request returns the remembered outcome of id, or nil.
func (s *state) request(id string) *request {
	if id == "" {
		return nil
	}
	seq, ok := s.reqs.lookup(id)
	if !ok {
		return nil
	}
	e := s.reqs.entry(seq)
	return &request{id: id, at: e.at, rec: e.rec, acc: e.acc, rest: s.reqs.rest(seq)}
}

func (s *state) remember(id string, at int64, res Result) {
	if r, first := s.rememberNew(id, at); first {
		s.remembered(r, res)
	}
}

// reqPos is a remembered request's sequence number.
type reqPos uint64

// Result returns the remembered outcome of the request at p.
func (p reqPos) Result(st *state) Result {
	e := st.reqs.entry(uint64(p))
	r := request{at: e.at, rec: e.rec, acc: e.acc, rest: st.reqs.rest(uint64(p))}
	return r.Result(st)
}

// rememberNew remembers id at log time at, for an outcome that remembered
// sets once the command is applied, unless id is remembered already: that
// request then, and false. One search of the index, where a look for the
// id and then a remember cost two. Until remembered, a snapshot leaves it
// out: a command that pauses (tx.pause) lets one be taken.
func (s *state) rememberNew(id string, at int64) (reqPos, bool) {
	seq, first := s.reqs.add(id, at)
	s.reqs.pending = first
	return reqPos(seq), first
}

// remembered sets the outcome of the request at p, from rememberNew.
func (s *state) remembered(p reqPos, res Result) {
	var r request
	s.setOutcome(&r, res.Outcome())
	s.reqs.set(uint64(p), r.rec, r.acc, r.rest)
	s.reqs.pending = false
}

// loadRequests fills the empty window of remembered requests with reqs,
// as a restore does: in time order (the order of the stream when it is,
// which is a snapshot's since the window is kept in log order). A request
// id given twice is refused.
func (s *state) loadRequests(reqs []*request) error {
	if !slices.IsSortedFunc(reqs, cmpReqAt) {
		slices.SortStableFunc(reqs, cmpReqAt)
	}
	l := &s.reqs
	for _, r := range reqs {
		if len(r.id) > maxReqID {
			return fmt.Errorf("request id of %d bytes", len(r.id))
		}
		seq, first := l.add(r.id, r.at)
		if !first {
			return fmt.Errorf("duplicate request id %s", r.id)
		}
		l.set(seq, r.rec, r.acc, r.rest)
	}
	return nil
}

func cmpReqAt(a, b *request) int {
	switch {
	case a.at < b.at:
		return -1
	case a.at > b.at:
		return 1
	}
	return 0
}

// forgetRequests drops the ids remembered before at.
func (s *state) forgetRequests(before int64) {
	s.reqs.forget(before, func(h handle) { s.drop(h, false) })
}
