package fsm_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// refresh is the Issue of a refresh token of family fam
// ("" lets it start its own) that detects reuse.
func refresh(id, fam string, ttl time.Duration) *fsm.Issue {
	return with(newIssue(id, "oauth2_refresh", ttl, 1), func(r *fsm.Record) {
		r.Subject, r.ClientID, r.Scopes, r.Family, r.RLC = "user:1", "app1", []string{"read", "write"}, fam, "gold"
		r.Data, r.Title, r.DetectReuse = []byte(`{"k":1}`), "laptop", true
	})
}

// rotation rotates the token with id from into to, with an access token
// named to+"-at" when access is set.
func rotation(from, to string, access bool) *fsm.Rotate {
	c := &fsm.Rotate{Hash: secretHash(from), Kind: "oauth2_refresh", TTL: int64(24 * time.Hour),
		Next: fsm.Record{ID: to, Hash: secretHash(to), IP: "192.0.2.1"}}
	if access {
		c.Access = &fsm.Issue{TTL: int64(time.Hour), Record: fsm.Record{ID: to + "-at", Hash: secretHash(to + "-at"), Kind: "access"}}
	}
	return c
}

func TestRotate(t *testing.T) {
	h := newHarness(t)
	old := h.issue(t0, refresh("rt1", "", 365*24*time.Hour))
	if old.Family != "rt1" {
		t.Fatalf("a refresh token issued without a family: family %q, want its own id", old.Family)
	}
	now := t0.Add(time.Minute)
	res := h.ok(now, rotation("rt1", "rt2", true))
	next, access := res.Record, res.Access
	if next == nil || access == nil || res.Sealed != nil {
		t.Fatalf("rotation result %+v: want the successor and the access token, nothing sealed", res)
	}
	if next.ID != "rt2" || next.Hash != secretHash("rt2") || next.Kind != "oauth2_refresh" || next.Subject != "user:1" ||
		next.ClientID != "app1" || strings.Join(next.Scopes, " ") != "read write" || next.Family != "rt1" || next.RLC != "gold" ||
		string(next.Data) != `{"k":1}` || next.Title != "laptop" || next.IP != "192.0.2.1" || !next.DetectReuse ||
		next.UsesLeft != 1 || next.CreatedAt != ns(now) || next.ExpiresAt != ns(now.Add(24*time.Hour)) || next.State != fsm.Active {
		t.Errorf("successor %+v: want the grant's fields under a new id, hash and expiry", next)
	}
	if access.ID != "rt2-at" || access.Kind != "access" || access.Subject != "user:1" || access.Family != "rt1" ||
		strings.Join(access.Scopes, " ") != "read write" || access.RLC != "gold" || access.Data != nil ||
		access.ExpiresAt != ns(now.Add(time.Hour)) {
		t.Errorf("access token %+v: want the grant's subject, client, scopes, family and rlc", access)
	}
	tomb := h.s.ByID("rt1")
	if tomb.State != fsm.Consumed || tomb.Rotated == nil || tomb.Rotated.Successor != "rt2" || tomb.Rotated.Access != "rt2-at" ||
		tomb.Rotated.GraceUntil != 0 || string(tomb.Data) != `{"k":1}` || tomb.InvalidatedAt != ns(now) {
		t.Errorf("rotated token %+v (rotation %+v): want a consumed tombstone naming its successors", tomb, tomb.Rotated)
	}
	// The next rotation continues the chain.
	h.ok(now.Add(10*time.Minute), rotation("rt2", "rt3", false))
	if r := h.s.ByID("rt3"); r == nil || r.Family != "rt1" {
		t.Fatalf("second rotation: %+v, want rt3 in family rt1", r)
	}

	// Presenting a rotated token again is reuse: the family is revoked.
	res = h.do(now.Add(20*time.Minute), rotation("rt1", "rt9", true))
	wantErr(t, "rotating rt1 again", res, fsm.ErrReused)
	if res.Record == nil || res.Record.ID != "rt1" || res.Count != 2 {
		t.Errorf("reuse result %+v: want rt1's tombstone and 2 tokens revoked (rt2-at, rt3)", res)
	}
	for _, id := range []string{"rt2-at", "rt3"} {
		r := h.s.ByID(id)
		if r.State != fsm.Revoked || !strings.Contains(r.Reason, "reuse") || !strings.Contains(r.Reason, "rt1") {
			t.Errorf("%s after reuse: %+v, want revoked with the reuse named in the reason", id, r)
		}
	}
	if h.s.ByID("rt9") != nil || h.s.ByID("rt9-at") != nil {
		t.Errorf("a detected reuse issued tokens")
	}
	checkConsistent(t, h.s, []string{"rt1", "rt2", "rt2-at", "rt3", "rt9", "rt9-at"}, ns(now.Add(20*time.Minute)))
}

func TestRotateAllOrNothing(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, refresh("rt1", "fam", time.Hour))
	h.issue(t0, newIssue("taken", "access", time.Hour, 0))
	ids := []string{"rt1", "taken", "rt2", "rt2-at"}
	before := records(h.s, ids)

	scoped := rotation("rt1", "rt2", true)
	scoped.Access.Record.Scopes = []string{"read", "admin"}
	taken := rotation("rt1", "rt2", true)
	taken.Access.Record.Hash = secretHash("taken")
	takenID := rotation("rt1", "taken", false)
	twins := rotation("rt1", "rt2", true)
	twins.Access.Record.ID = "rt2"
	wrongKind := rotation("rt1", "rt2", false)
	wrongKind.Kind = "oauth2_code"
	wrongClient := rotation("rt1", "rt2", false)
	wrongClient.ClientID = "app2"
	for _, c := range []struct {
		name string
		cmd  *fsm.Rotate
		want error
	}{
		{"scopes beyond the grant", scoped, fsm.ErrScope},
		{"access hash taken", taken, fsm.ErrExists},
		{"successor id taken", takenID, fsm.ErrExists},
		{"successor and access share an id", twins, fsm.ErrExists},
		{"another kind", wrongKind, fsm.ErrKindMismatch},
		{"another client", wrongClient, fsm.ErrClientMismatch},
		{"unknown token", rotation("nope", "rt2", false), fsm.ErrNotFound},
	} {
		wantErr(t, c.name, h.do(t0.Add(time.Minute), c.cmd), c.want)
	}
	if after := records(h.s, ids); !reflect.DeepEqual(after, before) {
		t.Errorf("failed rotations changed the state: %+v, was %+v", after, before)
	}
	// A narrower scope is fine, and the expired token cannot rotate.
	narrow := rotation("rt1", "rt2", true)
	narrow.Access.Record.Scopes = []string{"read"}
	if res := h.ok(t0.Add(time.Minute), narrow); strings.Join(res.Access.Scopes, " ") != "read" {
		t.Errorf("access scopes %v, want [read]", res.Access.Scopes)
	}
	wantErr(t, "rotating an expired token", h.do(t0.Add(25*time.Hour), rotation("rt2", "rt3", false)), fsm.ErrExpired)
}

// records returns copies of the records with ids (nil where absent).
func records(s *fsm.Machine, ids []string) []*fsm.Record {
	out := make([]*fsm.Record, len(ids))
	for i, id := range ids {
		if r := s.ByID(id); r != nil {
			c := *r
			out[i] = &c
		}
	}
	return out
}

func TestRotateGrace(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, refresh("rt1", "fam", time.Hour))
	first := rotation("rt1", "rt2", true)
	first.Grace, first.Sealed = int64(30*time.Second), []byte("sealed secrets")
	h.ok(t0, first)

	// A retry (a new command, new ids) within the window: the first answer.
	retry := rotation("rt1", "rtX", true)
	retry.Grace, retry.Sealed = int64(30*time.Second), []byte("other")
	res := h.ok(t0.Add(29*time.Second), retry)
	if res.Record.ID != "rt2" || res.Access == nil || res.Access.ID != "rt2-at" || string(res.Sealed) != "sealed secrets" {
		t.Fatalf("retry within grace: %+v, want rt2 and rt2-at with the first sealed secrets", res)
	}
	if h.s.ByID("rtX") != nil {
		t.Fatalf("a retry within grace issued a token")
	}
	// Snapshots carry the rotation.
	if r := restored(t, h.snapshot()).ByID("rt1"); r.Rotated == nil || string(r.Rotated.Sealed) != "sealed secrets" ||
		r.Rotated.GraceUntil != ns(t0.Add(30*time.Second)) {
		t.Errorf("restored rt1: %+v, want its rotation", r.Rotated)
	}
	// At the window's end it is reuse.
	wantErr(t, "retry at the end of the grace period", h.do(t0.Add(30*time.Second), rotation("rt1", "rtY", false)), fsm.ErrReused)
	if h.s.ByID("rt2").State != fsm.Revoked || h.s.ByID("rt2-at").State != fsm.Revoked {
		t.Errorf("reuse after grace: want the successors revoked")
	}

	// Within the window, but the successor was rotated already: reuse.
	h.issue(t0, refresh("b1", "fam-b", time.Hour))
	c := rotation("b1", "b2", false)
	c.Grace = int64(time.Minute)
	h.ok(t0.Add(time.Second), c)
	h.ok(t0.Add(2*time.Second), rotation("b2", "b3", false))
	wantErr(t, "retry after the successor moved on", h.do(t0.Add(3*time.Second), rotation("b1", "b9", false)), fsm.ErrReused)
	if h.s.ByID("b3").State != fsm.Revoked {
		t.Errorf("b3: want revoked by the reuse of b1")
	}
}

func TestConsumeReuseRevokesFamily(t *testing.T) {
	h := newHarness(t)
	code := with(newIssue("code", "oauth2_code", 4*time.Hour, 1), func(r *fsm.Record) { r.Family, r.DetectReuse = "g", true })
	h.issue(t0, code)
	h.ok(t0, &fsm.Consume{Hash: secretHash("code")})
	h.issue(t0, refresh("rt", "g", 365*24*time.Hour))
	h.issue(t0, with(newIssue("at", "access", time.Hour, 0), func(r *fsm.Record) { r.Family = "g" }))
	// Single-use kinds without reuse detection are only used up.
	h.issue(t0, with(newIssue("r1", "oauth1_request", time.Hour, 1), func(r *fsm.Record) { r.Family = "g" }))
	h.ok(t0, &fsm.Consume{Hash: secretHash("r1")})
	wantErr(t, "second consume of a request token", h.do(t0, &fsm.Consume{Hash: secretHash("r1")}), fsm.ErrConsumed)
	if h.s.ByID("rt").State != fsm.Active {
		t.Fatalf("a used-up request token revoked the family")
	}

	res := h.do(t0.Add(time.Minute), &fsm.Consume{Hash: secretHash("code")})
	wantErr(t, "second consume of a code", res, fsm.ErrReused)
	if res.Count != 2 || h.s.ByID("rt").State != fsm.Revoked || h.s.ByID("at").State != fsm.Revoked {
		t.Errorf("reuse of the code: %+v; want rt and at revoked", res)
	}
	// Presenting it once more is still reuse, with nothing left to revoke.
	if res := h.do(t0.Add(2*time.Minute), &fsm.Consume{Hash: secretHash("code")}); res.Err != fsm.ErrReused || res.Count != 0 {
		t.Errorf("third presentation: %+v, want reuse with 0 revoked", res)
	}
}

// A consumed code's tombstone outlives its own expiry while its family can
// be used, so that reuse is detected after garbage collection would have
// removed it; then it goes.
func TestReuseTombstoneHeldWhileFamilyLives(t *testing.T) {
	h := newHarness(t)
	code := with(newIssue("code", "oauth2_code", 4*time.Hour, 1), func(r *fsm.Record) { r.Family, r.DetectReuse = "g", true })
	h.issue(t0, code)
	h.ok(t0, &fsm.Consume{Hash: secretHash("code")})
	h.issue(t0, refresh("rt1", "g", 48*time.Hour))
	h.ok(t0.Add(time.Hour), rotation("rt1", "rt2", true)) // rt2 lives to t0+25h, its access token to t0+2h

	gc := func(at time.Time) int {
		due := h.s.DueForGC(ns(at), 100)
		return h.ok(at, &fsm.Expire{Before: ns(at), IDs: due}).Count
	}
	at := t0.Add(5 * time.Hour) // the code (4h) and access token (2h) are due
	if n := gc(at); n != 1 {
		t.Errorf("GC at +5h collected %d records, want 1 (the access token)", n)
	}
	r := h.s.ByID("code")
	if r == nil || r.HoldUntil != ns(t0.Add(25*time.Hour)) {
		t.Fatalf("code after GC at +5h: %+v, want held until rt2's expiry (+25h)", r)
	}
	// rt1's tombstone is held as long: due at +48h, the family lives to +25h.
	if due := h.s.DueForGC(ns(t0.Add(24*time.Hour)), 100); len(due) != 0 {
		t.Errorf("due before +24h: %v, want nothing", due)
	}
	res := h.do(t0.Add(6*time.Hour), &fsm.Consume{Hash: secretHash("code")})
	wantErr(t, "reuse of the code after its expiry", res, fsm.ErrReused)
	if h.s.ByID("rt2").State != fsm.Revoked {
		t.Fatalf("rt2: want revoked by the reuse")
	}
	// The family is dead now: its held tombstones are released to their
	// own expiry, the code's long past.
	if r := h.s.ByID("code"); r == nil || r.HoldUntil != 0 {
		t.Fatalf("code after its family was revoked: %+v, want its hold released", r)
	}
	if n := gc(t0.Add(6 * time.Hour)); n != 1 || h.s.ByID("code") != nil {
		t.Errorf("GC at +6h collected %d, want 1 (the code)", n)
	}
	if n := gc(t0.Add(25 * time.Hour)); n != 1 {
		t.Errorf("GC at +25h collected %d, want 1 (rt2)", n)
	}
	if n := gc(t0.Add(48 * time.Hour)); n != 1 || h.s.ByID("rt1") != nil {
		t.Errorf("GC at +48h collected %d, want rt1", n)
	}
	checkConsistent(t, h.s, []string{"code", "rt1", "rt2", "rt2-at"}, ns(t0.Add(48*time.Hour)))
}

// A remembered rotation answers a retried request id with the same
// successor and access token, also after a snapshot.
func TestRotateRequestIDRemembersAccess(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, refresh("rt1", "fam", time.Hour))
	entry := encode(t, &fsm.Batch{Now: ns(t0), Entries: [][]byte{encode(t, rotation("rt1", "rt2", true))}, Reqs: []string{"req-1"}})
	first := h.applyRaw(entry, 1)[0]
	s := restored(t, h.snapshot())
	res := s.Apply(h.index+1, entry).Batch[0]
	if res.Err != nil || res.Record.ID != "rt2" || res.Access == nil || res.Access.ID != first.Access.ID {
		t.Errorf("retried request on a restored store: %+v, want rt2 with access %s", res, first.Access.ID)
	}
}

// A used code presented for rotation is reuse like any other presentation
// of it, even though codes do not rotate.
func TestRotateUsedCodeIsReuse(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, with(newIssue("code", "oauth2_code", time.Hour, 1), func(r *fsm.Record) { r.Family, r.DetectReuse = "g", true }))
	h.issue(t0, refresh("rt", "g", time.Hour))
	wantErr(t, "rotating an unused code", h.do(t0, rotation("code", "x", false)), fsm.ErrKindMismatch)
	h.ok(t0, &fsm.Consume{Hash: secretHash("code")})
	res := h.do(t0, rotation("code", "y", false))
	wantErr(t, "rotating a used code", res, fsm.ErrReused)
	if res.Count != 1 || h.s.ByID("rt").State != fsm.Revoked || h.s.ByID("y") != nil {
		t.Errorf("rotating a used code: %+v; want rt revoked and nothing issued", res)
	}
}
