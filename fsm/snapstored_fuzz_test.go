package fsm

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// FuzzStoredRecord checks any bytes as a stored record frame: what
// checkStored and checkProfile pass reads back through every accessor
// without a panic, and what it reads stores again to a record that
// passes and reads the same; every record compact lays out passes.
func FuzzStoredRecord(f *testing.F) {
	st := newState()
	for _, r := range storedSamples() {
		b := append([]byte(nil), st.ar.get(st.compact(r))...)
		if err := checkStored(b); err != nil {
			f.Fatalf("checkStored of %s: %v", r.ID[:min(len(r.ID), 8)], err)
		}
		if len(b) <= 4096 { // the mutator's inputs stay small
			f.Add(b)
		}
	}
	// One state for every input: making one maps its arena.
	s := newState()
	s.profiles.of("access", "app", "title", "ua")
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkStored(b) != nil || checkProfile(b, 1) != nil {
			return
		}
		h := s.storedCopy(b)
		defer s.ar.freeNow(h)
		v := s.ar.get(h)
		_ = v.gcAt() + v.liveUntil() + v.lastUsedAt() + int64(v.createIndex()+v.modifyIndex())
		_, _, _ = v.holdsSealed(), liveIndexed(v), v.family()+v.subject()+v.ip()+s.kindOf(v)
		r := s.record(h)
		again := s.compact(r)
		defer s.ar.freeNow(again)
		w := s.ar.get(again)
		if err := checkStored(w); err != nil {
			t.Fatalf("a record stored again from what %x reads fails: %v", b, err)
		}
		if r2 := s.record(again); !s.is(h, r2) || !bytes.Equal([]byte(w.id()), []byte(r.ID)) {
			t.Fatalf("%x reads back differently once stored again", b)
		}
	})
}

// checkStored refuses a record whose rest's flags and fields disagree,
// whose scopes or length lists do not add up: each the one change from a
// record compact laid out, which it takes.
func TestCheckStoredRefuses(t *testing.T) {
	st := newState()
	r := &Record{ID: "r", Hash: "h", Kind: "oauth2_refresh", Scopes: []string{"admin"}, Family: "f", Data: []byte(`{}`),
		State: Consumed, Rotated: &Rotation{Successor: "s", GraceUntil: 11, Sealed: []byte{1}}}
	good := append([]byte(nil), st.ar.get(st.compact(r))...)
	if err := checkStored(good); err != nil {
		t.Fatal(err)
	}
	fields := fKind + 1 // no profile of its own, a rest
	lens, err := checkLengths(good, int(good[6]), recHeader, fields)
	if err != nil {
		t.Fatal(err)
	}
	restAt := lens[fields-1]
	el, err := checkLengths(good[restAt:], int(good[restAt+41]), extHeader, eSealed+1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		change func(b []byte) []byte
		want   string
	}{
		{"scopes without their flag", func(b []byte) []byte { b[restAt] &^= extScopes; return b }, "lacks"},
		{"data without its flag", func(b []byte) []byte { b[restAt] &^= extData; return b }, "lacks"},
		{"a sealed successor without its flag", func(b []byte) []byte { b[restAt] &^= extSealed; return b }, "lacks"},
		{"sealed, not rotated", func(b []byte) []byte { b[restAt] &^= extRotated; return b }, "flags"},
		{"a scope longer than the scopes", func(b []byte) []byte { b[restAt+el[eScopes]] = 0x7f; return b }, "scopes"},
		{"a byte after the last field", func(b []byte) []byte {
			b = append(b, 0)
			binary.LittleEndian.PutUint32(b, uint32(len(b)))
			return b
		}, "left"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.change(append([]byte(nil), good...))
			if err := checkStored(b); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("checkStored = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
