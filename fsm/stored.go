package fsm

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"sync/atomic"
	"unsafe"
)

// rec is a Record as the state keeps it: its bytes in the arena, in a
// compact layout (little-endian):
//
//	0   u32  size: the record's bytes
//	4   u8   state
//	5   u8   flags (recDetectReuse, recExt, recInlineProfile)
//	6   u8   the bytes of the lengths at 52
//	7   u8   its holders besides the state (state.drop): the one byte
//	         that changes once the record is written
//	8   i64  createdAt, expiresAt, lastUsedAt
//	32  u64  createIndex, modifyIndex
//	48  u32  profile: kind, client id, title and user agent, by id (profiles)
//	52  uvarint lengths of id, subject, IP and digest; then, with
//	    recInlineProfile, of kind, client id, title and user agent (a
//	    profile the table does not share); then, with recExt, of the rest
//	then the bytes of each, in that order.
//
// The rest (ext) is what few records have: scopes, family, data, uses,
// invalidation, rotation...
//
//	0   u8   extScopes | extData | extRotated | extSealed: which are not nil
//	1   i64  maxUses, usesLeft, invalidatedAt, holdUntil, rotated.GraceUntil
//	41  u8   the bytes of the lengths at 42
//	42  uvarint lengths of family, rlc, generator, reason, rotated.Successor,
//	    rotated.Access, the scopes, data and rotated.Sealed; then their bytes
//	    (the scopes each a uvarint length and its bytes).
//
// A rec is a view of arena bytes: valid while the record is, which for
// the writer and readers is while they hold the machine's lock, and for
// a snapshot while it is open. What outlives that is a copy (record).
type rec []byte

const (
	recHeader = 52

	recDetectReuse   = 1
	recExt           = 2
	recInlineProfile = 4

	extHeader  = 42
	extScopes  = 1
	extData    = 2
	extRotated = 4
	extSealed  = 8

	// The fields of a record's length list; with recInlineProfile the
	// profile's four come before the rest.
	fID, fSubject, fIP, fHash, fKind = 0, 1, 2, 3, 4
	// The fields of the rest's.
	eFamily, eRLC, eGenerator, eReason, eSuccessor, eAccess, eScopes, eData, eSealed = 0, 1, 2, 3, 4, 5, 6, 7, 8
)

func le64(b []byte, off int) int64 { return int64(binary.LittleEndian.Uint64(b[off:])) }

func (r rec) state() State      { return State(r[4]) }
func (r rec) flags() byte       { return r[5] }
func (r rec) createdAt() int64  { return le64(r, 8) }
func (r rec) expiresAt() int64  { return le64(r, 16) }
func (r rec) lastUsedAt() int64 { return le64(r, 24) }
func (r rec) createIndex() uint64 {
	return uint64(le64(r, 32))
}
func (r rec) modifyIndex() uint64 { return uint64(le64(r, 40)) }
func (r rec) profileID() uint32   { return binary.LittleEndian.Uint32(r[48:]) }
func (r rec) detectReuse() bool   { return r.flags()&recDetectReuse != 0 }

// span returns where in b field i lies, of the list of vlen bytes of
// uvarint lengths at lens (the fields' bytes follow the list), checked
// against b's length.
func span(b []byte, vlen, lens, i int) (int, int) {
	end := lens + vlen
	if end > len(b) {
		corrupt("lengths past the record's %d bytes", len(b))
	}
	p, off := lens, end
	for j := 0; ; j++ {
		n, k := binary.Uvarint(b[p:end])
		if k <= 0 {
			corrupt("field %d: no length", j)
		}
		p += k
		if n > uint64(len(b)-off) {
			corrupt("field %d: %d bytes past the record's %d", j, n, len(b))
		}
		if j == i {
			return off, off + int(n)
		}
		off += int(n)
	}
}

func (r rec) field(i int) []byte {
	lo, hi := span(r, int(r[6]), recHeader, i)
	return r[lo:hi:hi]
}

// str is b as a string sharing its bytes.
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (r rec) id() string      { return str(r.field(fID)) }
func (r rec) subject() string { return str(r.field(fSubject)) }
func (r rec) ip() string      { return str(r.field(fIP)) }
func (r rec) hash() string    { return str(r.field(fHash)) }

// ext returns the rest, nil if the record has none.
func (r rec) ext() ext {
	if r.flags()&recExt == 0 {
		return nil
	}
	i := fKind
	if r.flags()&recInlineProfile != 0 {
		i += 4
	}
	e := ext(r.field(i))
	if len(e) < extHeader {
		corrupt("the rest of a record in %d bytes", len(e))
	}
	return e
}

// ext is the rest of a record; nil for none, whose fields read as zero.
type ext []byte

func (e ext) field(i int) []byte {
	lo, hi := span(e, int(e[41]), extHeader, i)
	return e[lo:hi:hi]
}

func (e ext) int(off int) int64 {
	if e == nil {
		return 0
	}
	return le64(e, off)
}

func (r rec) family() string {
	e := r.ext()
	if e == nil {
		return ""
	}
	return str(e.field(eFamily))
}

func (r rec) holdUntil() int64     { return r.ext().int(25) }
func (r rec) invalidatedAt() int64 { return r.ext().int(17) }
func (r rec) graceUntil() int64    { return r.ext().int(33) }

// gcAt is Record.GCAt.
func (r rec) gcAt() int64 {
	at := r.expiresAt()
	if at == 0 && r.state() != Active {
		at = r.invalidatedAt() + int64(NeverExpiringTombstone)
	}
	return max(at, r.holdUntil())
}

func (r rec) holdsSealed() bool {
	e := r.ext()
	return e != nil && e[0]&extRotated != 0 && len(e.field(eSealed)) > 0
}

// liveUntil is how long an active record can be used, for its family's
// liveness: its expiry, or for a token that never expires, forever.
func (r rec) liveUntil() int64 {
	if r.expiresAt() == 0 {
		return math.MaxInt64
	}
	return r.expiresAt()
}

// status is Record.Status.
func (r rec) status(now int64) Status { return statusOf(r.state(), r.expiresAt(), now) }

// profile is a record's kind, client id, title and user agent, shared by
// the records that have the same.
type profile struct{ kind, clientID, title, userAgent string }

// maxInterned bounds the profiles a state shares, and maxInternedLen the
// length of one; records past either hold their own.
const (
	maxInterned    = 1 << 16
	maxInternedLen = 1 << 10
)

// profiles shares profiles among records, to save memory and nothing
// else: a profile is only ever compared by value, never by its id, so the
// table may differ between replicas, and it does (a node that applied the
// log holds every profile it saw, in log order, one that restored a
// snapshot only the live records', in the order of their first record by
// id). It never forgets one (at
// most maxInterned of maxInternedLen bytes); a record whose profile is
// past that holds it itself.
//
// The writer adds profiles; readers and snapshots read them by id. A page
// is published before any record names one of its profiles, and a slot
// is written once, before its id is.
type profiles struct {
	ids   map[profile]uint32
	pages [maxInterned / profilePage]atomic.Pointer[[profilePage]profile]
}

const profilePage = 256

func newProfiles() *profiles { return &profiles{ids: map[profile]uint32{}} }

// of returns the id of the profile, adding it; false if it is not shared.
func (ps *profiles) of(kind, clientID, title, userAgent string) (uint32, bool) {
	k := profile{kind, clientID, title, userAgent}
	if id, ok := ps.ids[k]; ok {
		return id, true
	}
	n := len(ps.ids)
	if n >= maxInterned || len(kind)+len(clientID)+len(title)+len(userAgent) > maxInternedLen {
		return 0, false
	}
	// Copies: the strings may be views of a decoded command, or of the
	// arena.
	k = profile{strings.Clone(kind), strings.Clone(clientID), strings.Clone(title), strings.Clone(userAgent)}
	pg := ps.pages[n/profilePage].Load()
	if pg == nil {
		pg = new([profilePage]profile)
		ps.pages[n/profilePage].Store(pg)
	}
	pg[n%profilePage] = k
	ps.ids[k] = uint32(n)
	return uint32(n), true
}

// get returns profile id.
func (ps *profiles) get(id uint32) *profile {
	if id >= maxInterned {
		corrupt("profile %d", id)
	}
	pg := ps.pages[id/profilePage].Load()
	if pg == nil {
		corrupt("profile %d of a page not made", id)
	}
	return &pg[id%profilePage]
}

// forget takes back id, the profile of returns last added, which no
// record names: the record it was added for was not stored.
func (ps *profiles) forget(id uint32) {
	if int(id) != len(ps.ids)-1 {
		corrupt("profile %d forgotten, %d held", id, len(ps.ids))
	}
	p := ps.get(id)
	delete(ps.ids, *p)
	*p = profile{}
}

// profileOf returns r's profile: views of the table's strings, which are
// the heap's and stay, or of r's own.
func (s *state) profileOf(r rec) profile {
	if r.flags()&recInlineProfile != 0 {
		return profile{str(r.field(fKind)), str(r.field(fKind + 1)), str(r.field(fKind + 2)), str(r.field(fKind + 3))}
	}
	return *s.profiles.get(r.profileID())
}

// kindOf is r's kind.
func (s *state) kindOf(r rec) string {
	if r.flags()&recInlineProfile != 0 {
		return str(r.field(fKind))
	}
	return s.profiles.get(r.profileID()).kind
}

// countKind is kindOf(r) as the counts map may keep it, which is never a
// view of the arena: an assignment to a map stores its key again, even
// where an equal key is there already, and a view would read whatever
// reuses its record's slot once the record is freed (or fault, if the
// record had a mapping of its own).
func (s *state) countKind(r rec) string {
	if r.flags()&recInlineProfile != 0 {
		return strings.Clone(str(r.field(fKind)))
	}
	return s.profiles.get(r.profileID()).kind
}

// hasExt reports whether r sets any field kept in a record's rest.
func hasExt(r *Record) bool {
	return r.Scopes != nil || r.Family != "" || r.Data != nil || r.RLC != "" || r.Generator != "" ||
		r.Reason != "" || r.MaxUses != 0 || r.UsesLeft != 0 || r.InvalidatedAt != 0 || r.HoldUntil != 0 || r.Rotated != nil
}

// builder lays a record out: a length list and the bytes it measures.
type builder struct {
	lens []byte
	body []byte
}

func (b *builder) add(s string) {
	b.lens = binary.AppendUvarint(b.lens, uint64(len(s)))
	b.body = append(b.body, s...)
}

func (b *builder) addBytes(s []byte) {
	b.lens = binary.AppendUvarint(b.lens, uint64(len(s)))
	b.body = append(b.body, s...)
}

// appendExt appends r's rest to dst.
func appendExt(dst []byte, r *Record, b *builder) []byte {
	var fl byte
	if r.Scopes != nil {
		fl |= extScopes
	}
	if r.Data != nil {
		fl |= extData
	}
	ro := r.Rotated
	if ro == nil {
		ro = &Rotation{}
	} else {
		fl |= extRotated
		if ro.Sealed != nil {
			fl |= extSealed
		}
	}
	dst = append(dst, fl)
	for _, v := range []int64{r.MaxUses, r.UsesLeft, r.InvalidatedAt, r.HoldUntil, ro.GraceUntil} {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(v))
	}
	b.lens, b.body = b.lens[:0], b.body[:0]
	for _, s := range []string{r.Family, r.RLC, r.Generator, r.Reason, ro.Successor, ro.Access} {
		b.add(s)
	}
	var sc []byte
	for _, s := range r.Scopes {
		sc = binary.AppendUvarint(sc, uint64(len(s)))
		sc = append(sc, s...)
	}
	b.addBytes(sc)
	b.addBytes(r.Data)
	b.addBytes(ro.Sealed)
	dst = append(dst, byte(len(b.lens)))
	dst = append(dst, b.lens...)
	return append(dst, b.body...)
}

// compact stores r in the state's arena and returns its handle.
func (s *state) compact(r *Record) handle { h, _ := s.compactNew(r); return h }

// compactNew is compact, and whether it added r's profile to the table
// (its id then, else noProfile).
func (s *state) compactNew(r *Record) (handle, uint32) {
	b := &s.bld // the writer's, reused
	b.lens, b.body = b.lens[:0], b.body[:0]
	var fl byte
	if r.DetectReuse {
		fl |= recDetectReuse
	}
	held := len(s.profiles.ids)
	pid, shared := s.profiles.of(r.Kind, r.ClientID, r.Title, r.UserAgent)
	added := uint32(noProfile)
	if len(s.profiles.ids) > held {
		added = pid
	}
	for _, x := range []string{r.ID, r.Subject, r.IP, r.Hash} {
		b.add(x)
	}
	if !shared {
		fl |= recInlineProfile
		for _, x := range []string{r.Kind, r.ClientID, r.Title, r.UserAgent} {
			b.add(x)
		}
	}
	if hasExt(r) {
		fl |= recExt
		s.ext = appendExt(s.ext[:0], r, &s.extBld)
		b.addBytes(s.ext)
	}
	n := recHeader + len(b.lens) + len(b.body)
	if n > math.MaxUint32 || len(b.lens) > 255 {
		corrupt("a record of %d bytes", n)
	}
	h, out := s.ar.alloc(n)
	binary.LittleEndian.PutUint32(out[0:], uint32(n))
	out[4], out[5], out[6], out[holdersAt] = byte(r.State), fl, byte(len(b.lens)), 0
	for i, v := range []int64{r.CreatedAt, r.ExpiresAt, r.LastUsedAt, int64(r.CreateIndex), int64(r.ModifyIndex)} {
		binary.LittleEndian.PutUint64(out[8+8*i:], uint64(v))
	}
	binary.LittleEndian.PutUint32(out[48:], pid)
	copy(out[recHeader:], b.lens)
	copy(out[recHeader+len(b.lens):], b.body)
	return h, added
}

const noProfile = ^uint32(0)

// record returns the record at h as a Record of its own: every string and
// slice a copy on the heap (in one allocation), so that it outlives the
// lock and the record.
func (s *state) record(h handle) *Record {
	r := new(Record)
	s.recordTo(h, r, true)
	return r
}

// expand is record, nil for noHandle.
func (s *state) expand(h handle) *Record {
	if h == noHandle {
		return nil
	}
	return s.record(h)
}

// recordTo sets *r to the record at h. With copied, as record does; else
// its strings and slices are views of the arena, for a walk over every
// record that encodes each at once (a snapshot), which would otherwise
// allocate as many copies.
func (s *state) recordTo(h handle, r *Record, copied bool) {
	v := s.ar.get(h)
	if copied {
		// One copy of the lengths and the bytes (the header's fields are
		// read from the arena).
		v = append(rec(nil), v...)
	}
	p := s.profileOf(v)
	*r = Record{
		ID: v.id(), Subject: v.subject(), IP: v.ip(), Hash: v.hash(),
		Kind: p.kind, ClientID: p.clientID, Title: p.title, UserAgent: p.userAgent,
		CreatedAt: v.createdAt(), ExpiresAt: v.expiresAt(), LastUsedAt: v.lastUsedAt(),
		CreateIndex: v.createIndex(), ModifyIndex: v.modifyIndex(),
		State: v.state(), DetectReuse: v.detectReuse(),
	}
	e := v.ext()
	if e == nil {
		return
	}
	r.Family, r.RLC, r.Generator, r.Reason = str(e.field(eFamily)), str(e.field(eRLC)), str(e.field(eGenerator)), str(e.field(eReason))
	r.MaxUses, r.UsesLeft, r.InvalidatedAt, r.HoldUntil = e.int(1), e.int(9), e.int(17), e.int(25)
	if e[0]&extScopes != 0 {
		r.Scopes = decodeScopes(e.field(eScopes))
	}
	if e[0]&extData != 0 {
		r.Data = e.field(eData)
	}
	if e[0]&extRotated != 0 {
		r.Rotated = &Rotation{Successor: str(e.field(eSuccessor)), Access: str(e.field(eAccess)), GraceUntil: e.int(33)}
		if e[0]&extSealed != 0 {
			r.Rotated.Sealed = e.field(eSealed)
		}
	}
}

// decodeScopes returns the scopes laid out in b, views of it; never nil.
func decodeScopes(b []byte) []string {
	n := 0
	for p := 0; p < len(b); n++ {
		l, k := binary.Uvarint(b[p:])
		if k <= 0 || l > uint64(len(b)-p-k) {
			corrupt("scopes")
		}
		p += k + int(l)
	}
	out := make([]string, 0, n)
	for p := 0; p < len(b); {
		l, k := binary.Uvarint(b[p:])
		out = append(out, str(b[p+k:p+k+int(l)]))
		p += k + int(l)
	}
	return out
}

// is tells whether the record at h holds exactly what r does (scopes,
// data and rotation by value, nil and empty apart). Only the writer calls
// it: r's rest is laid out in scratch of the writer's, its own.
func (s *state) is(h handle, r *Record) bool {
	v := s.ar.get(h)
	if v.id() != r.ID || v.subject() != r.Subject || v.ip() != r.IP || v.hash() != r.Hash ||
		s.profileOf(v) != (profile{r.Kind, r.ClientID, r.Title, r.UserAgent}) || v.createdAt() != r.CreatedAt || v.expiresAt() != r.ExpiresAt ||
		v.lastUsedAt() != r.LastUsedAt || v.createIndex() != r.CreateIndex || v.modifyIndex() != r.ModifyIndex ||
		v.state() != r.State || v.detectReuse() != r.DetectReuse {
		return false
	}
	e := v.ext()
	if e == nil {
		return !hasExt(r)
	}
	s.isExt = appendExt(s.isExt[:0], r, &s.isBld)
	return bytes.Equal(e, s.isExt)
}
