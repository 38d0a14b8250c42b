package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version 2 of the snapshot stream carries the records as the state
// keeps them (the layout in stored.go) instead of as msgpack maps of
// their fields: a snapshot writes each record's bytes as they are in the
// arena, and a restore checks them and copies them into its own. A
// profile (kind, client id, title, user agent) comes in a frame of its
// own before the first record that names it; profiles are numbered in
// the order they come, and a record names one by that number (the
// writer renumbers: its table keeps profiles no record names any more,
// which the stream leaves out). A remembered request whose record is
// the state's own names it by its place among the record frames instead
// of carrying a copy. Version 1 streams are still read.
//
// A node writes version 2 once the log's fence says every voter reads
// it (Version 4); until then it writes version 1, which every release
// reads.
const (
	frameProfile = 5 // uvarint length and bytes of kind, client id, title, user agent
	frameStored  = 6 // a record in the arena's layout, its holders byte 0

	// compactSnapshotVersion is the log version from which a snapshot
	// is written in version 2 of the stream.
	compactSnapshotVersion = 4
)

// appendProfile appends p as a profile frame's body.
func appendProfile(dst []byte, p *profile) []byte {
	for _, s := range [...]string{p.kind, p.clientID, p.title, p.userAgent} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// readProfile decodes a profile frame's body: its strings are views of b.
func readProfile(b []byte) (profile, error) {
	var f [4]string
	for i := range f {
		n, k := minUvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return profile{}, fmt.Errorf("profile field %d: bad length", i)
		}
		f[i] = str(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) != 0 {
		return profile{}, fmt.Errorf("profile frame: %d bytes after its fields", len(b))
	}
	return profile{f[0], f[1], f[2], f[3]}, nil
}

var errStored = errors.New("stored record")

// checkStored checks that b is a record in the arena's layout that every
// reader of the state can read, as compact lays one out: its size, state
// and flags, each length list within the record and adding up to it, the
// scopes' own lengths, and in the rest nothing its flags say it lacks
// (whatever reads a field, its flag or its length, reads the same).
// Whatever it passes, the accessors in stored.go read without running
// past the record. Its profile is checkProfile's.
func checkStored(b []byte) error {
	if len(b) < recHeader {
		return fmt.Errorf("%w of %d bytes", errStored, len(b))
	}
	if n := binary.LittleEndian.Uint32(b); int64(n) != int64(len(b)) {
		return fmt.Errorf("%w of %d bytes says %d", errStored, len(b), n)
	}
	if s := State(b[4]); s != Active && s != Consumed && s != Revoked {
		return fmt.Errorf("%w: state %d", errStored, s)
	}
	fl := b[5]
	if fl&^(recDetectReuse|recExt|recInlineProfile) != 0 {
		return fmt.Errorf("%w: flags %#x", errStored, fl)
	}
	if b[holdersAt] != 0 {
		return fmt.Errorf("%w: holders %#x", errStored, b[holdersAt])
	}
	fields := fKind
	if fl&recInlineProfile != 0 {
		fields += 4
	}
	if fl&recExt != 0 {
		fields++
	}
	lens, err := checkLengths(b, int(b[6]), recHeader, fields)
	if err != nil {
		return err
	}
	if fl&recExt == 0 {
		return nil
	}
	e := b[lens[fields-1]:]
	if len(e) < extHeader {
		return fmt.Errorf("%w: the rest in %d bytes", errStored, len(e))
	}
	if e[0]&^(extScopes|extData|extRotated|extSealed) != 0 || e[0]&extSealed != 0 && e[0]&extRotated == 0 {
		return fmt.Errorf("%w: the rest's flags %#x", errStored, e[0])
	}
	el, err := checkLengths(e, int(e[41]), extHeader, eSealed+1)
	if err != nil {
		return err
	}
	field := func(i int) []byte { return e[el[i]:el[i+1]] }
	x := ext(e)
	switch fl := e[0]; {
	case fl == 0 && x.int(1)|x.int(9)|x.int(17)|x.int(25)|x.int(33) == 0 && el[eSealed+1] == el[eFamily]:
		return fmt.Errorf("%w: an empty rest", errStored)
	case fl&extScopes == 0 && len(field(eScopes)) > 0, fl&extData == 0 && len(field(eData)) > 0,
		fl&extRotated == 0 && (len(field(eSuccessor)) > 0 || len(field(eAccess)) > 0 || x.int(33) != 0),
		fl&extSealed == 0 && len(field(eSealed)) > 0:
		return fmt.Errorf("%w: the rest holds what its flags %#x say it lacks", errStored, fl)
	}
	sc := field(eScopes)
	for len(sc) > 0 {
		n, k := minUvarint(sc)
		if k <= 0 || n > uint64(len(sc)-k) {
			return fmt.Errorf("%w: scopes", errStored)
		}
		sc = sc[k+int(n):]
	}
	return nil
}

// checkProfile checks that the record b, checked, holds its own profile
// or names one of the first profiles of the stream, those read so far.
func checkProfile(b []byte, profiles int) error {
	if b[5]&recInlineProfile == 0 {
		if id := binary.LittleEndian.Uint32(b[48:]); int64(id) >= int64(profiles) {
			return fmt.Errorf("%w: profile %d of %d", errStored, id, profiles)
		}
	}
	return nil
}

// checkLengths checks the length list of vlen bytes at lens in b: exactly
// n (at most maxFields) uvarints, whose fields, from the list's end, fill
// the rest of b. It returns where each field starts, and after the last
// field b's length.
func checkLengths(b []byte, vlen, lens, n int) (starts [maxFields + 1]int, err error) {
	end := lens + vlen
	if end > len(b) {
		return starts, fmt.Errorf("%w: lengths past its %d bytes", errStored, len(b))
	}
	p, off := lens, end
	for i := range n {
		l, k := minUvarint(b[p:end])
		if k <= 0 || l > uint64(len(b)-off) {
			return starts, fmt.Errorf("%w: a field's length", errStored)
		}
		starts[i] = off
		p, off = p+k, off+int(l)
	}
	if p != end || off != len(b) {
		return starts, fmt.Errorf("%w: %d length bytes and %d field bytes left", errStored, end-p, len(b)-off)
	}
	starts[n] = off
	return starts, nil
}

// maxFields is the most fields a length list holds: a record's with its
// own profile and a rest.
const maxFields = fKind + 4 + 1

// storedCopy stores a copy of the record b, checked, in s's arena.
func (s *state) storedCopy(b []byte) handle {
	h, out := s.ar.alloc(len(b))
	copy(out, b)
	return h
}

// sharedOrCopy returns the record at h for a remembered request to hold:
// h itself, shared with the state, or a copy the request owns if h has
// as many holders as it counts.
func (s *state) sharedOrCopy(h handle) handle {
	if s.share(h) {
		return h
	}
	return s.own(s.storedCopy(s.ar.get(h))) // own sets the copy's holders
}

// minUvarint is binary.Uvarint of a length in a stored record or a
// profile frame, which compact writes in its shortest form: any other
// form (a last byte of 0 after the first) is refused as k <= 0, so that a
// record checked reads back to the same bytes when laid out again.
func minUvarint(b []byte) (uint64, int) {
	n, k := binary.Uvarint(b)
	if k > 1 && b[k-1] == 0 {
		return 0, 0
	}
	return n, k
}
