package fsm

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzStoredRecord checks any bytes as a stored record frame: what
// checkStored and checkProfile pass reads back through every accessor
// without a panic, and what it reads stores again to a record that
// passes and reads the same; every record compact lays out passes.
func FuzzStoredRecord(f *testing.F) {
	st := newState()
	for _, r := range []*Record{
		{},
		{ID: "4jN15fUFUhSf6eiYfEkBEr", Hash: strings.Repeat("h", 32), Kind: "access", Subject: "user:1", ClientID: "web-app",
			CreatedAt: 1, ExpiresAt: 2, IP: "10.0.0.1", UserAgent: "Mozilla/5.0", Title: "Chrome on Mac"},
		{ID: "r", Hash: "h", Kind: "oauth2_refresh", Scopes: []string{"read", ""}, Family: "f", Data: []byte(`{}`), RLC: "gold",
			MaxUses: 1, UsesLeft: -1, State: Consumed, InvalidatedAt: 9, Reason: "rotated", DetectReuse: true, HoldUntil: 10,
			Rotated: &Rotation{Successor: "s", GraceUntil: 11, Sealed: []byte{1}}},
		{ID: "big", Kind: strings.Repeat("k", maxInternedLen+1)}, // its profile held inline
	} {
		b := append([]byte(nil), st.ar.get(st.compact(r))...)
		if err := checkStored(b); err != nil {
			f.Fatalf("checkStored of compact(%+v): %v", r, err)
		}
		f.Add(b)
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
		_, _, _ = v.holdsSealed(), v.inFamilyLive(), v.family()+v.subject()+v.ip()+s.kindOf(v)
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
