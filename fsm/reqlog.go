package fsm

import (
	"fmt"
	"slices"
	"unsafe"
)

// The window of remembered requests holds every write of the last
// RequestWindow, hundreds of thousands at a busy node's rate, so it is
// kept out of the collector's sight: fixed-size entries with no
// pointers, the ids' bytes apart from them, an open-addressing table of
// their positions, and the rare outcomes that are more than records
// (errors, counts, sealed secrets, a client batch's) in a short slice of
// their own.
//
// Entries and ids' bytes are appended in log order to fixed-size chunks,
// never written again once written (an entry's outcome is set before any
// snapshot can see it); a chunk is dropped once the window has passed it,
// and never reused. So a snapshot's view, the lists of chunks as they
// were when it was taken, stays as it was while applies go on, and the
// chunks it holds are kept for it by the collector; its records are kept
// for it by the arena, as the state's are. No array is copied as the
// window moves: what is allocated is what is remembered.

// reqEntry is one remembered request. Its position in the window is its
// sequence number; its id is its bytes in reqLog.ids.
type reqEntry struct {
	at       int64
	rec, acc handle
	// idOff is the offset of the id's bytes in reqLog.ids, modulo 2^32:
	// the live ids are far fewer bytes.
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

const (
	reqChunkBits = 12
	reqChunk     = 1 << reqChunkBits // entries in a chunk: 128 KiB
	idChunkBits  = 16
	idChunk      = 1 << idChunkBits // bytes in a chunk of ids
)

// reqEntries holds entries by sequence number, in chunks: chunk i of
// chunks holds the sequence numbers from (first+i)<<reqChunkBits on.
type reqEntries struct {
	chunks []*[reqChunk]reqEntry
	first  uint64
}

func (q *reqEntries) at(seq uint64) *reqEntry {
	return &q.chunks[seq>>reqChunkBits-q.first][seq&(reqChunk-1)]
}

// reqIDs holds the ids' bytes, in chunks: chunk i holds the offsets from
// (first+i)<<idChunkBits on; tail is the offset the next id goes at.
type reqIDs struct {
	chunks []*[idChunk]byte
	first  uint64
	tail   uint64
}

// abs returns the offset whose low 32 bits are lo: one of the last 2^32
// bytes appended.
func (b *reqIDs) abs(lo uint32) uint64 { return b.tail - uint64(uint32(b.tail)-lo) }

// piece returns the bytes from offset a on, up to n and to the end of a
// chunk.
func (b *reqIDs) piece(a uint64, n int) []byte {
	c := b.chunks[a>>idChunkBits-b.first]
	off := int(a & (idChunk - 1))
	return c[off:min(idChunk, off+n)]
}

func (b *reqIDs) append(id string) uint32 {
	at := b.tail
	for len(id) > 0 {
		if b.tail&(idChunk-1) == 0 || len(b.chunks) == 0 {
			if len(b.chunks) == 0 {
				b.first = b.tail >> idChunkBits
			}
			b.chunks = append(b.chunks, new([idChunk]byte))
		}
		n := copy(b.chunks[len(b.chunks)-1][b.tail&(idChunk-1):], id)
		id, b.tail = id[n:], b.tail+uint64(n)
	}
	return uint32(at)
}

// equal tells whether the id of e is id.
func (b *reqIDs) equal(e *reqEntry, id string) bool {
	n := int(e.idLen & maxReqID)
	if n != len(id) {
		return false
	}
	for a := b.abs(e.idOff); len(id) > 0; {
		p := b.piece(a, len(id))
		if string(p) != id[:len(p)] {
			return false
		}
		id, a = id[len(p):], a+uint64(len(p))
	}
	return true
}

// id returns the id of e: a view of the chunk when it is in one, which
// is never written again.
func (b *reqIDs) id(e *reqEntry) string {
	n := int(e.idLen & maxReqID)
	if n == 0 {
		return ""
	}
	a := b.abs(e.idOff)
	if p := b.piece(a, n); len(p) == n {
		return unsafe.String(&p[0], n)
	}
	buf := make([]byte, 0, n)
	for len(buf) < n {
		p := b.piece(a, n-len(buf))
		buf, a = append(buf, p...), a+uint64(len(p))
	}
	return string(buf)
}

// dropBefore drops the chunks that hold only offsets before a.
func (b *reqIDs) dropBefore(a uint64) {
	i := 0
	for i < len(b.chunks) && (b.first+uint64(i)+1)<<idChunkBits <= a {
		b.chunks[i] = nil
		i++
	}
	b.chunks, b.first = b.chunks[i:], b.first+uint64(i)
}

// reqLog is the window of remembered requests.
type reqLog struct {
	q     reqEntries
	head  uint64 // the oldest sequence number remembered
	tail  uint64 // the next
	ids   reqIDs
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

func (l *reqLog) entry(seq uint64) *reqEntry { return l.q.at(seq) }

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
			if seq-l.head < l.tail-l.head && l.ids.equal(l.entry(seq), id) {
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
	seq = l.tail
	l.table[i] = reqTag(h)<<32 | uint64(uint32(seq))
	l.n++
	if seq&(reqChunk-1) == 0 || len(l.q.chunks) == 0 {
		if len(l.q.chunks) == 0 {
			l.q.first = seq >> reqChunkBits
		}
		l.q.chunks = append(l.q.chunks, new([reqChunk]reqEntry))
	}
	*l.entry(seq) = reqEntry{at: at, idOff: l.ids.append(id), idLen: uint32(len(id))}
	l.tail++
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
	id := l.ids.id(l.entry(seq))
	i, _, ok := l.find(id, reqHash(id))
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

// view is what a snapshot reads: the window but the pending entry, and
// lists of chunks of its own (a few hundred pointers).
func (l *reqLog) view() reqView {
	v := reqView{q: l.q, head: l.head, tail: l.tail, ids: l.ids, rests: l.rests}
	v.q.chunks = slices.Clone(l.q.chunks)
	v.ids.chunks = slices.Clone(l.ids.chunks)
	if l.pending {
		v.tail--
	}
	return v
}

// reqView is a snapshot's view of the window.
type reqView struct {
	q          reqEntries
	head, tail uint64
	ids        reqIDs
	rests      []reqRest
}

// frameTo sets *f to the request numbered seq of v in its encodable
// form, as request.frameTo does.
func (v *reqView) frameTo(st *state, seq uint64, f *requestFrame, rec, acc *Record, refs *refTable) {
	e := v.q.at(seq)
	r := request{id: v.ids.id(e), at: e.at, rec: e.rec, acc: e.acc}
	if e.idLen&reqHasRest != 0 {
		r.rest = restOf(v.rests, seq)
	}
	r.frameTo(st, f, rec, acc, refs)
}

// forget drops the entries remembered before log time before, and calls
// drop with the records each held.
func (l *reqLog) forget(before int64, drop func(handle)) {
	seq := l.head
	for ; seq < l.tail && l.entry(seq).at < before; seq++ {
		if l.pending && seq == l.tail-1 {
			break
		}
		l.unindex(seq)
		e := l.entry(seq)
		for _, h := range [2]handle{e.rec, e.acc} {
			if h != noHandle {
				drop(h)
			}
		}
	}
	if seq == l.head {
		return
	}
	l.head = seq
	// The chunks the window has passed are dropped, the state's list of
	// them resliced: a snapshot has a list of its own.
	i := 0
	for ; i < len(l.q.chunks) && (l.q.first+uint64(i)+1)<<reqChunkBits <= seq; i++ {
		l.q.chunks[i] = nil
	}
	l.q.chunks, l.q.first = l.q.chunks[i:], l.q.first+uint64(i)
	if seq < l.tail {
		l.ids.dropBefore(l.ids.abs(l.entry(seq).idOff))
	} else {
		l.ids.dropBefore(l.ids.tail)
	}
	j := 0
	for j < len(l.rests) && l.rests[j].seq < seq {
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
// id and then a remember cost two. Until remembered, a snapshot view
// leaves it out; none is taken then (Snapshot refuses inside an entry),
// and this keeps a view whole should one ever be.
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
// which is a snapshot's since the window is kept in log order). Refused:
// a request id given twice, a request remembered after lastNow, the log
// time of the snapshot (the window, in time order, would stop forgetting
// at it for good), and more ids or id bytes than the window counts
// (2^31 of each).
func (s *state) loadRequests(reqs []*request, lastNow int64) error {
	if len(reqs) >= 1<<31 {
		return fmt.Errorf("%d remembered requests", len(reqs))
	}
	var idBytes int
	for _, r := range reqs {
		if r.at > lastNow {
			return fmt.Errorf("request %s remembered at %d, after the snapshot's time %d", r.id, r.at, lastNow)
		}
		if idBytes += len(r.id); idBytes >= 1<<31 {
			return fmt.Errorf("remembered request ids of more than %d bytes", idBytes)
		}
	}
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
