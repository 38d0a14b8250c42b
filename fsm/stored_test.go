package fsm

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// storedSamples are records of every shape the arena lays out: empty,
// an application server's access token, empty and nil slices, a rest of
// every field, a profile held inline, a record larger than a small
// allocation.
func storedSamples() []*Record {
	return []*Record{
		{},
		{ID: "4jN15fUFUhSf6eiYfEkBEr", Hash: strings.Repeat("h", 32), Kind: "access", Subject: "user:1", ClientID: "web-app",
			CreatedAt: 1, ExpiresAt: 2, LastUsedAt: 3, IP: "10.0.0.1", UserAgent: "Mozilla/5.0", Title: "Chrome on Mac",
			CreateIndex: 4, ModifyIndex: 5},
		{ID: "x", Hash: "short", Kind: "oauth2_code", Scopes: []string{}, Data: []byte{}},
		{ID: "r", Hash: "h", Kind: "oauth2_refresh", Scopes: []string{"read", ""}, Family: "f", Data: []byte(`{}`), RLC: "gold",
			MaxUses: 1, UsesLeft: -1, Generator: "g", State: Consumed, InvalidatedAt: 9, Reason: "rotated",
			DetectReuse: true, HoldUntil: 10, Rotated: &Rotation{Successor: "s", GraceUntil: 11, Sealed: []byte{1}}},
		{ID: "big", Kind: strings.Repeat("k", maxInternedLen+1)},
		{ID: strings.Repeat("i", 70000), Hash: strings.Repeat("\xff", 100), UserAgent: strings.Repeat("u", 1<<17)},
	}
}

// A stored record reads back as the Record it was made from, field for
// field, empty and nil slices kept apart, and holds exactly what it does.
func TestStoredRoundTrip(t *testing.T) {
	st := newState()
	for _, r := range storedSamples() {
		h := st.compact(r)
		if got := st.record(h); !reflect.DeepEqual(got, r) {
			t.Fatalf("compact(%+v).record() = %+v", r, got)
		}
		var view Record
		if st.recordTo(h, &view, false); !reflect.DeepEqual(&view, r) {
			t.Fatalf("compact(%+v) viewed = %+v", r, &view)
		}
		if !st.is(h, r) {
			t.Fatalf("compact(%+v) is not what it was made from", r)
		}
		s := st.ar.get(h)
		if s.id() != r.ID || s.hash() != r.Hash || s.subject() != r.Subject || s.family() != r.Family || s.gcAt() != r.GCAt() ||
			s.status(5) != r.Status(5) || s.holdsSealed() != r.holdsSealed() || liveIndexed(s) != (r.State == Active && r.Family != "" && r.Family != r.ID) {
			t.Fatalf("the accessors of compact(%+v) disagree with the record's", r)
		}
		other := *r
		other.ModifyIndex++
		if st.is(h, &other) {
			t.Fatalf("compact(%+v) holds a record with another ModifyIndex", r)
		}
		if r.Data != nil {
			other = *r
			other.Data = append([]byte(nil), r.Data...)
			other.Data = append(other.Data, 'x')
			if st.is(h, &other) {
				t.Fatalf("compact(%+v) holds a record with other data", r)
			}
		}
	}
}

// Records of one kind, client, title and user agent share their profile;
// past maxInterned profiles, or past maxInternedLen bytes, records hold
// their own, with the same values.
func TestProfilesBounded(t *testing.T) {
	st := newState()
	a, b := st.compact(&Record{Kind: "access", ClientID: "web", UserAgent: "ua"}), st.compact(&Record{Kind: "access", ClientID: "web", UserAgent: "ua"})
	ra, rb := st.ar.get(a), st.ar.get(b)
	if ra.flags()&recInlineProfile != 0 || ra.profileID() != rb.profileID() {
		t.Fatal("two records of one kind, client, title and user agent do not share their profile")
	}
	long := &Record{Kind: "k", UserAgent: strings.Repeat("u", maxInternedLen)}
	if h := st.compact(long); st.ar.get(h).flags()&recInlineProfile == 0 || len(st.profiles.ids) != 1 {
		t.Fatalf("a profile over %d bytes was shared", maxInternedLen)
	}
	if r := st.record(st.compact(long)); !reflect.DeepEqual(r, long) {
		t.Fatalf("a record with a long profile reads back as %+v", r)
	}
	for i := range maxInterned + 10 {
		st.compact(&Record{Kind: "k", ClientID: strconv.Itoa(i)})
	}
	if len(st.profiles.ids) != maxInterned {
		t.Fatalf("%d profiles interned, want at most %d", len(st.profiles.ids), maxInterned)
	}
	past := &Record{Kind: "k", ClientID: "past", Title: "t", UserAgent: "u"}
	if r := st.record(st.compact(past)); !reflect.DeepEqual(r, past) {
		t.Fatalf("a record past the interned profiles reads back as %+v, want %+v", r, past)
	}
}
