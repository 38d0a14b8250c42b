package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
)

func sampleRecords() []wire.Record {
	t0 := time.Date(2026, 12, 1, 12, 17, 12, 76137584, time.UTC)
	whole := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	later := t0.Add(time.Hour)
	local := t0.In(time.FixedZone("CET", 3600))
	base := wire.Record{ID: "4jN15fUFUhSf6eiYfEkBEr", Kind: "access", Status: "active", Subject: "bench",
		ClientID: "bench-app", Scopes: []string{}, CreatedAt: t0}
	var out []wire.Record
	for _, f := range []func(*wire.Record){
		func(*wire.Record) {},
		func(r *wire.Record) { r.Scopes = nil },
		func(r *wire.Record) { r.Scopes = []string{"read", "write:all"} },
		func(r *wire.Record) { r.ExpiresAt, r.LastUsedAt, r.InvalidatedAt = &later, &whole, &t0 },
		func(r *wire.Record) { r.CreatedAt = whole },
		func(r *wire.Record) { r.CreatedAt = time.Unix(0, 0).UTC() },
		func(r *wire.Record) { r.CreatedAt = local },
		func(r *wire.Record) { r.ExpiresAt = &local },
		func(r *wire.Record) { r.MaxUses, r.UsesLeft = 5, -1 },
		func(r *wire.Record) { r.Generator, r.Reason, r.Family, r.RLC = "app", "user asked", "fam-1", "rlc" },
		func(r *wire.Record) { r.IP, r.UserAgent, r.Title = "2001:db8::1", "Mozilla/5.0 (X11)", "laptop" },
		func(r *wire.Record) { r.Data = json.RawMessage(`{ "a" : [1, 2] }`) },
		func(r *wire.Record) { r.Subject = "<script>&" },
		func(r *wire.Record) { r.Title = "Zoë's \"phone\"\\" },
		func(r *wire.Record) { r.UserAgent = "a\u2028b\x7f" },
		func(r *wire.Record) { r.Reason = "\xff" },
		func(r *wire.Record) { r.Scopes = []string{"ok", "<bad>"} },
	} {
		r := base
		f(&r)
		out = append(out, r)
	}
	return out
}

// TestWriteRecordAsEncodingJSON: a record answer is byte for byte what
// encoding/json writes, whether appendRecord writes it or leaves it.
func TestWriteRecordAsEncodingJSON(t *testing.T) {
	for _, r := range sampleRecords() {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		w := httptest.NewRecorder()
		writeRecord(w, http.StatusOK, &r)
		if got := w.Body.String(); got != string(want) {
			t.Errorf("record %+v:\n got %s\nwant %s", r, got, want)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" || w.Code != http.StatusOK {
			t.Errorf("status %d, Content-Type %q", w.Code, ct)
		}
	}
}

// plainByConstruction reports whether s is of the texts appendRecord
// writes itself: printable ASCII that encoding/json writes as it is.
func plainByConstruction(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c < ' ' || c > '~' || strings.ContainsRune(`"\<>&`, c) })
}

// FuzzAppendRecord: writeRecord writes what encoding/json writes, for
// every string field and time of a record; appendRecord writes it itself
// (ok) when every string is written as it is, every time is in UTC and
// the record has no data.
func FuzzAppendRecord(f *testing.F) {
	f.Add("x", "access", "active", "bench", "bench-app", "read", "fam", "rlc", "::1", "Mozilla/5.0", "laptop", "gen", "why",
		int64(3), int64(-1), int64(1764590000123456789), int64(1764590000), int32(0), uint8(0))
	f.Add("<&>", "", "\u2028", "\xff", "a\"b", "\\", "\x00", "\x7f", "é", "\xff\u2028", "日本", "", "",
		int64(-1), int64(0), int64(0), int64(-62135596800), int32(3600), uint8(0xff))
	f.Add("", "", "", "", "", "", "", "", "", "", "", "", "",
		int64(0), int64(0), int64(-1), int64(-1), int32(-3600), uint8(0x0f))
	f.Add("x", "", "", "", "", "", "", "", "", "", "", "", "",
		int64(0), int64(0), int64(0), int64(253402300800), int32(0), uint8(0x01))
	f.Fuzz(func(t *testing.T, id, kind, status, subject, clientID, scope, family, rlc, ip, ua, title, generator, reason string,
		maxUses, usesLeft, created, other int64, zone int32, shape uint8) {
		loc := time.UTC
		if shape&0x10 != 0 {
			loc = time.FixedZone("Z", int(zone%(18*3600)))
		}
		createdAt := time.Unix(0, created).In(loc)
		otherAt := time.Unix(other, 0).UTC()
		at := func(bit uint8, tm time.Time) *time.Time {
			if shape&bit == 0 {
				return nil
			}
			return &tm
		}
		r := wire.Record{ID: id, Kind: kind, Status: status, Subject: subject, ClientID: clientID, Family: family,
			RLC: rlc, MaxUses: maxUses, UsesLeft: usesLeft, CreatedAt: createdAt,
			ExpiresAt: at(0x01, otherAt), LastUsedAt: at(0x02, createdAt), InvalidatedAt: at(0x04, otherAt),
			IP: ip, UserAgent: ua, Title: title, Generator: generator, Reason: reason}
		switch shape >> 5 & 3 {
		case 0:
			r.Scopes = []string{scope}
		case 1:
			r.Scopes = []string{scope, scope + "x"}
		case 2:
			r.Scopes = []string{}
		}
		if shape&0x80 != 0 {
			r.Data = json.RawMessage(`{"a": [1, 2]}`)
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Skip() // a year outside 0..9999: encoding/json refuses it too
		}
		w := httptest.NewRecorder()
		writeRecord(w, http.StatusOK, &r)
		if got := w.Body.String(); got != string(want)+"\n" {
			t.Fatalf("writeRecord wrote %s\nencoding/json %s", got, want)
		}
		got, ok := appendRecord(nil, &r)
		if ok && string(got) != string(want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
		plain := len(r.Data) == 0
		for _, s := range append([]string{id, kind, status, subject, clientID, family, rlc, ip, ua, title, generator, reason}, r.Scopes...) {
			plain = plain && plainByConstruction(s)
		}
		for _, tm := range []*time.Time{&r.CreatedAt, r.ExpiresAt, r.LastUsedAt, r.InvalidatedAt} {
			plain = plain && (tm == nil || tm.Location() == time.UTC)
		}
		if plain && !ok {
			t.Fatalf("a record of plain strings and UTC times left to encoding/json: %+v", r)
		}
	})
}

// issuedAsEncodingJSON fails t unless writeIssued writes r as
// encoding/json does, and reports whether appendIssued wrote it itself.
func issuedAsEncodingJSON(t *testing.T, r wire.IssueResponse) bool {
	t.Helper()
	want, err := json.Marshal(r)
	if err != nil {
		t.Skip() // a year outside 0..9999: encoding/json refuses it too
	}
	want = append(want, '\n')
	w := httptest.NewRecorder()
	writeIssued(w, http.StatusCreated, &r)
	if got := w.Body.String(); got != string(want) {
		t.Fatalf("answer %+v:\n got %s\nwant %s", r, got, want)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" || w.Code != http.StatusCreated {
		t.Fatalf("status %d, Content-Type %q", w.Code, ct)
	}
	got, ok := appendIssued(nil, &r)
	if ok && string(got) != string(want) {
		t.Fatalf("appendIssued wrote %s\nwant %s", got, want)
	}
	return ok
}

// TestWriteIssuedAsEncodingJSON: an issue's answer is byte for byte what
// encoding/json writes, whether appendIssued writes it or leaves it.
func TestWriteIssuedAsEncodingJSON(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 17, 12, 76137584, time.UTC)
	whole := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	local := t0.In(time.FixedZone("CET", 3600))
	base := wire.IssueResponse{Token: "tks_ac_QRmn83c1NtddDWnslKazTKpZ4kwGG0WT3IXukvfxmaS3PWtKG", ID: "4jN15fUFUhSf6eiYfEkBEr",
		Kind: "access", ExpiresAt: &t0, Index: 77}
	for _, c := range []struct {
		f     func(*wire.IssueResponse)
		plain bool
	}{
		{func(*wire.IssueResponse) {}, true},
		{func(r *wire.IssueResponse) { r.ExpiresAt = nil }, true},
		{func(r *wire.IssueResponse) { r.ExpiresAt = &whole }, true},
		{func(r *wire.IssueResponse) { r.Family = "grant-7"; r.Index = 0 }, true},
		{func(r *wire.IssueResponse) { r.Index = 1<<64 - 1 }, true},
		{func(r *wire.IssueResponse) { r.ExpiresAt = &local }, false},
		{func(r *wire.IssueResponse) { r.Token = "brought<&>" }, false},
		{func(r *wire.IssueResponse) { r.Token = "a\"b\\c" }, false},
		{func(r *wire.IssueResponse) { r.Family = "Zoë" }, false},
		{func(r *wire.IssueResponse) { r.Kind = "\u2028" }, false},
		{func(r *wire.IssueResponse) { r.ID = "\xff" }, false},
	} {
		r := base
		c.f(&r)
		if ok := issuedAsEncodingJSON(t, r); ok != c.plain {
			t.Errorf("answer %+v: written without encoding/json %v, want %v", r, ok, c.plain)
		}
	}
}

// FuzzAppendIssued: writeIssued writes what encoding/json writes, and
// appendIssued writes it itself when every string is written as it is
// and the time is in UTC.
func FuzzAppendIssued(f *testing.F) {
	f.Add("tks_ac_x", "4jN15fUFUhSf6eiYfEkBEr", "access", "grant-7", int64(1764590000123456789), uint64(7), int32(0), uint8(1))
	f.Add("<&>", "\u2028", "\xff", "a\"b", int64(-62135596800000000), uint64(0), int32(3600), uint8(0x11))
	f.Add("", "", "", "", int64(0), uint64(1<<63), int32(0), uint8(0))
	f.Fuzz(func(t *testing.T, tok, id, kind, family string, expires int64, index uint64, zone int32, shape uint8) {
		loc := time.UTC
		if shape&0x10 != 0 {
			loc = time.FixedZone("Z", int(zone%(18*3600)))
		}
		r := wire.IssueResponse{Token: tok, ID: id, Kind: kind, Family: family, Index: index}
		if shape&0x01 != 0 {
			at := time.Unix(0, expires).In(loc)
			r.ExpiresAt = &at
		}
		ok := issuedAsEncodingJSON(t, r)
		plain := r.ExpiresAt == nil || r.ExpiresAt.Location() == time.UTC
		for _, s := range []string{tok, id, kind, family} {
			plain = plain && plainByConstruction(s)
		}
		if plain && !ok {
			t.Fatalf("an answer of plain strings and a UTC time left to encoding/json: %+v", r)
		}
	})
}
