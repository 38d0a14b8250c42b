package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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

func FuzzAppendRecord(f *testing.F) {
	f.Add("bench", "read", "Mozilla/5.0", int64(3), int64(1764590000123456789))
	f.Add("<&>", "", "\xff\u2028", int64(-1), int64(0))
	f.Fuzz(func(t *testing.T, subject, scope, ua string, uses, at int64) {
		ts := time.Unix(0, at).UTC()
		r := wire.Record{ID: "x", Kind: "access", Status: "active", Subject: subject, Scopes: []string{scope},
			UserAgent: ua, MaxUses: uses, CreatedAt: ts, LastUsedAt: &ts}
		want, err := json.Marshal(r)
		if err != nil {
			t.Skip()
		}
		got, ok := appendRecord(nil, &r)
		if ok && string(got) != string(want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}
