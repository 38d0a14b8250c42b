package fsm

import (
	"math"
	"slices"
	"strings"
	"unsafe"
)

// stored is a Record as the state keeps it: the fields every token has,
// inline; its own strings and digest in one allocation; kind, client id,
// title and user agent (what the tokens of one application on one kind of
// device have in common) shared with every record that has the same; and
// the fields few tokens set (scopes, family, data, uses, invalidation,
// rotation...) behind one pointer, nil for most.
//
// A stored record is never modified: a change stores a new one. Readers get
// a Record (record), whose strings share the stored one's bytes.
type stored struct {
	// str holds id, subject, IP and the digest, one after the other; ends
	// are where the first three end. The index by digest keys on the
	// digest's part of str: no string of its own.
	str  string
	ends [3]uint32
	p    *profile

	createdAt, expiresAt, lastUsedAt int64
	createIndex, modifyIndex         uint64

	ext         *storedExt // nil when none of its fields is set
	state       State
	detectReuse bool
}

// storedExt holds what few records have.
type storedExt struct {
	scopes        []string
	family        string
	data          []byte
	rlc           string
	generator     string
	reason        string
	maxUses       int64
	usesLeft      int64
	invalidatedAt int64
	holdUntil     int64
	rotated       *Rotation
}

// profile is a record's kind, client id, title and user agent, shared by
// the records that have the same (interns).
type profile struct{ kind, clientID, title, userAgent string }

// maxInterned bounds the profiles a state shares, and maxInternedLen the
// length of one; records past either get their own.
const (
	maxInterned    = 1 << 16
	maxInternedLen = 1 << 10
)

// interns shares profiles among records, to save memory and nothing
// else: a profile is only ever compared by value, never by pointer, so
// the table may differ between replicas, and it does (a node that applied
// the log holds every profile it saw, in log order, one that restored a
// snapshot only the live records', in id order). It never forgets one (at
// most maxInterned of maxInternedLen bytes); a profile past that is kept
// by its record alone.
type interns map[profile]*profile

func (in interns) of(kind, clientID, title, userAgent string) *profile {
	k := profile{kind, clientID, title, userAgent}
	if p, ok := in[k]; ok {
		return p
	}
	// Copies: the strings may be views of a decoded command.
	p := &profile{strings.Clone(kind), strings.Clone(clientID), strings.Clone(title), strings.Clone(userAgent)}
	if len(in) < maxInterned && len(kind)+len(clientID)+len(title)+len(userAgent) <= maxInternedLen {
		in[*p] = p
	}
	return p
}

// compact returns r as the state keeps it, with its profile from in.
func compact(r *Record, in interns) *stored {
	s := &stored{
		p:         in.of(r.Kind, r.ClientID, r.Title, r.UserAgent),
		createdAt: r.CreatedAt, expiresAt: r.ExpiresAt, lastUsedAt: r.LastUsedAt,
		createIndex: r.CreateIndex, modifyIndex: r.ModifyIndex,
		state: r.State, detectReuse: r.DetectReuse,
	}
	parts := [4]string{r.ID, r.Subject, r.IP, r.Hash}
	n := 0
	for i, p := range parts {
		n += len(p)
		if i < len(s.ends) {
			s.ends[i] = uint32(n)
		}
	}
	if n > 0 {
		b := make([]byte, 0, n)
		for _, p := range parts {
			b = append(b, p...)
		}
		s.str = unsafe.String(unsafe.SliceData(b), len(b))
	}
	if r.Scopes != nil || r.Family != "" || r.Data != nil || r.RLC != "" || r.Generator != "" ||
		r.Reason != "" || r.MaxUses != 0 || r.UsesLeft != 0 || r.InvalidatedAt != 0 || r.HoldUntil != 0 || r.Rotated != nil {
		// Copies, as of the profile's strings: a decoded command's strings
		// are views of one copy of its whole body, Data included, which
		// one kept field would hold for the record's life.
		s.ext = &storedExt{scopes: cloneStrings(r.Scopes), family: strings.Clone(r.Family), data: r.Data, rlc: strings.Clone(r.RLC),
			generator: strings.Clone(r.Generator), reason: strings.Clone(r.Reason), maxUses: r.MaxUses, usesLeft: r.UsesLeft,
			invalidatedAt: r.InvalidatedAt, holdUntil: r.HoldUntil, rotated: r.Rotated}
	}
	return s
}

// cloneStrings copies ss and its strings; nil stays nil.
func cloneStrings(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, x := range ss {
		out[i] = strings.Clone(x)
	}
	return out
}

// record returns s as a Record. Its strings, scopes, data and rotation are
// shared with s and must not be modified.
func (s *stored) record() *Record {
	r := new(Record)
	s.recordTo(r)
	return r
}

// recordTo sets *r to s as a Record, as record does, without allocating:
// for a walk over every record (a snapshot), whose Records would
// otherwise be as many allocations, and the garbage of a million.
func (s *stored) recordTo(r *Record) {
	*r = Record{
		ID: s.id(), Subject: s.subject(), IP: s.ip(), Hash: s.hash(),
		Kind: s.p.kind, ClientID: s.p.clientID, Title: s.p.title, UserAgent: s.p.userAgent,
		CreatedAt: s.createdAt, ExpiresAt: s.expiresAt, LastUsedAt: s.lastUsedAt,
		CreateIndex: s.createIndex, ModifyIndex: s.modifyIndex,
		State: s.state, DetectReuse: s.detectReuse,
	}
	if e := s.ext; e != nil {
		r.Scopes, r.Family, r.Data, r.RLC, r.Generator, r.Reason = e.scopes, e.family, e.data, e.rlc, e.generator, e.reason
		r.MaxUses, r.UsesLeft, r.InvalidatedAt, r.HoldUntil, r.Rotated = e.maxUses, e.usesLeft, e.invalidatedAt, e.holdUntil, e.rotated
	}
}

// expand is s.record(), nil for nil.
func (s *stored) expand() *Record {
	if s == nil {
		return nil
	}
	return s.record()
}

func (s *stored) id() string      { return s.str[:s.ends[0]] }
func (s *stored) subject() string { return s.str[s.ends[0]:s.ends[1]] }

func (s *stored) ip() string   { return s.str[s.ends[1]:s.ends[2]] }
func (s *stored) hash() string { return s.str[s.ends[2]:] }

func (s *stored) family() string {
	if s.ext == nil {
		return ""
	}
	return s.ext.family
}

func (s *stored) holdUntil() int64 {
	if s.ext == nil {
		return 0
	}
	return s.ext.holdUntil
}

func (s *stored) invalidatedAt() int64 {
	if s.ext == nil {
		return 0
	}
	return s.ext.invalidatedAt
}

// gcAt is Record.GCAt.
func (s *stored) gcAt() int64 {
	at := s.expiresAt
	if at == 0 && s.state != Active {
		at = s.invalidatedAt() + int64(NeverExpiringTombstone)
	}
	return max(at, s.holdUntil())
}

func (s *stored) inFamilyLive() bool { return s.state == Active && s.family() != "" }

func (s *stored) holdsSealed() bool {
	return s.ext != nil && s.ext.rotated != nil && len(s.ext.rotated.Sealed) > 0
}

// liveUntil is how long an active record can be used, for its family's
// liveness: its expiry, or for a token that never expires, forever.
func (s *stored) liveUntil() int64 {
	if s.expiresAt == 0 {
		return math.MaxInt64
	}
	return s.expiresAt
}

// status is Record.Status.
func (s *stored) status(now int64) Status { return statusOf(s.state, s.expiresAt, now) }

// is tells whether s holds exactly what r does (scopes by value, as
// compact copies them; data and rotation by identity: they are shared).
func (s *stored) is(r *Record) bool {
	if s.id() != r.ID || s.subject() != r.Subject || s.ip() != r.IP || s.hash() != r.Hash ||
		*s.p != (profile{r.Kind, r.ClientID, r.Title, r.UserAgent}) || s.createdAt != r.CreatedAt || s.expiresAt != r.ExpiresAt ||
		s.lastUsedAt != r.LastUsedAt || s.createIndex != r.CreateIndex || s.modifyIndex != r.ModifyIndex ||
		s.state != r.State || s.detectReuse != r.DetectReuse {
		return false
	}
	e := s.ext
	if e == nil {
		e = &storedExt{}
	}
	return (e.scopes == nil) == (r.Scopes == nil) && slices.Equal(e.scopes, r.Scopes) && e.family == r.Family && sameSlice(e.data, r.Data) && e.rlc == r.RLC &&
		e.generator == r.Generator && e.reason == r.Reason && e.maxUses == r.MaxUses && e.usesLeft == r.UsesLeft &&
		e.invalidatedAt == r.InvalidatedAt && e.holdUntil == r.HoldUntil && e.rotated == r.Rotated
}

// sameSlice tells whether a and b are the same slice: same array, length
// and nilness.
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (a == nil) == (b == nil) && (len(a) == 0 || &a[0] == &b[0])
}

// probe is a stored record with only an id, for searching the indexes.
func probe(id string) *stored {
	n := uint32(len(id))
	return &stored{str: id, ends: [3]uint32{n, n, n}}
}
