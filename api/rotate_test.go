package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// rotate sends POST /v1/tokens/rotate.
func (e *env) rotate(t *testing.T, req wire.RotateRequest) reply {
	t.Helper()
	return e.do(t, http.MethodPost, "/v1/tokens/rotate", mustJSON(t, req))
}

// rotated rotates and expects 201 with a successor refresh token, and an
// access token exactly when one was asked for. The answer must not show
// the rotated token's secret or digest.
func (e *env) rotated(t *testing.T, req wire.RotateRequest) wire.RotateResponse {
	t.Helper()
	r := e.rotate(t, req)
	var out wire.RotateResponse
	wantJSON(t, r, http.StatusCreated, &out)
	if out.Token == "" || out.ID == "" || out.Kind != "oauth2_refresh" || !strings.HasPrefix(out.Token, "tks_rt_") {
		t.Fatalf("%s: want a successor refresh token (tks_rt_…) with an id", r)
	}
	if (req.Access != nil) != (out.Access != nil) {
		t.Fatalf("%s: access token asked: %v, answered: %v", r, req.Access != nil, out.Access != nil)
	}
	if out.Access != nil && (out.Access.Kind != "access" || out.Access.ID == "" || !strings.HasPrefix(out.Access.Token, "tks_at_")) {
		t.Fatalf("%s: want an access token (tks_at_…) with an id", r)
	}
	hidden(t, "rotate answer", r.Body, req.Token, e.n.Hasher)
	return out
}

// revokedByReuse expects a lookup of tok to answer 410 token_revoked with
// a reason that names the reuse.
func (e *env) revokedByReuse(t *testing.T, what, tok string) {
	t.Helper()
	r := e.lookup(t, tok)
	eb := wantError(t, r, http.StatusGone, wire.CodeTokenRevoked)
	if !strings.Contains(eb.Message, "reuse") {
		t.Errorf("%s: %s: the message %q does not name the reuse", what, r, eb.Message)
	}
}

// byID reads a record by its public id and expects 200.
func (e *env) byID(t *testing.T, id string) wire.Record {
	t.Helper()
	var rec wire.Record
	wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens/"+id, ""), http.StatusOK, &rec)
	return rec
}

// introspect asks RFC 7662 introspection about tok and expects 200.
func (e *env) introspect(t *testing.T, tok string) (wire.IntrospectResponse, []byte) {
	t.Helper()
	status, _, body := postForm(t, e.n, e.key, url.Values{"token": {tok}})
	var out wire.IntrospectResponse
	if status != http.StatusOK || json.Unmarshal(body, &out) != nil {
		t.Fatalf("introspect: want 200 and JSON, got %d %s", status, body)
	}
	return out, body
}

// inactive expects introspection to answer exactly {"active":false}.
func (e *env) inactive(t *testing.T, what, tok string) {
	t.Helper()
	if _, body := e.introspect(t, tok); strings.TrimSpace(string(body)) != `{"active":false}` {
		t.Errorf("introspect %s: %s, want exactly {\"active\":false}", what, body)
	}
}

// eventually polls cond every 20ms until it holds, or fails the test
// after within; cond returns what it saw, for the failure message.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last saw %s", what, within, saw)
		}
		<-tick.C
	}
}

// around fails the test unless at is d after a moment in [from, to]
// (with a little slack for the clocks of reader and leader).
func around(t *testing.T, what string, at *time.Time, from, to time.Time, d time.Duration) {
	t.Helper()
	const slack = 2 * time.Second
	if at == nil || at.Before(from.Add(d-slack)) || at.After(to.Add(d+slack)) {
		t.Errorf("%s: expires_at %v, want %s after a moment in [%v, %v]", what, at, d, from, to)
	}
}

// TestAuthorizationCodeFlow walks a grant through the HTTP API: code,
// refresh and access tokens in the code's family, two rotations, then the
// reuse of the first refresh token, which revokes the whole family.
func TestAuthorizationCodeFlow(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	const subject, client = "user:flow", "app1"
	grant := []string{"read", "write", "admin"}

	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: subject, ClientID: client, Scopes: grant, RLC: "gold",
		Data: json.RawMessage(`{"redirect_uri":"https://app1.example/cb"}`)})
	if code.Family != code.ID {
		t.Fatalf("a code issued without a family: family %q, want its own id %q", code.Family, code.ID)
	}
	var used wire.Record
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code", ClientID: client}), http.StatusOK, &used)
	if used.ID != code.ID || used.Family != code.ID || used.Subject != subject || used.ClientID != client ||
		!slices.Equal(used.Scopes, grant) || used.RLC != "gold" || used.UsesLeft != 0 {
		t.Fatalf("consumed code %+v: want the grant of %s in family %s, used up", used, code.ID, code.ID)
	}
	fam := used.Family

	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: subject, ClientID: client, Scopes: grant, RLC: "gold", Family: fam})
	at := e.issue(t, wire.IssueRequest{Kind: "access", Subject: subject, ClientID: client, Scopes: grant, RLC: "gold", Family: fam})
	for _, c := range []struct {
		what string
		out  wire.IssueResponse
		kind string
	}{{"refresh token", rt, "oauth2_refresh"}, {"access token", at, "access"}} {
		rec := e.record(t, c.out.Token)
		if rec.ID != c.out.ID || rec.Kind != c.kind || rec.Status != "active" || rec.Subject != subject || rec.ClientID != client ||
			rec.Family != fam || rec.RLC != "gold" || !slices.Equal(rec.Scopes, grant) {
			t.Errorf("%s %+v: want active %s %s of %s/%s in family %s, rlc gold, scopes %v", c.what, rec, c.kind, c.out.ID, subject, client, fam, grant)
		}
	}

	// The first rotation, with an access token of narrower scope.
	before := time.Now()
	first := e.rotated(t, wire.RotateRequest{Token: rt.Token, ClientID: client, Access: &wire.AccessRequest{Scopes: []string{"read"}}})
	after := time.Now()
	if first.Token == rt.Token || first.ID == rt.ID || first.Family != fam {
		t.Errorf("successor %+v: want a new token and id in family %s", first, fam)
	}
	if first.Access.Token == at.Token || first.Access.ID == at.ID || first.Access.ID == first.ID || first.Access.Family != fam {
		t.Errorf("rotation's access token %+v: want a new token and id in family %s", first.Access, fam)
	}
	if first.Index == 0 || first.Access.Index != first.Index {
		t.Errorf("successor at index %d, access token at %d: want both from the same log entry", first.Index, first.Access.Index)
	}
	around(t, "successor", first.ExpiresAt, before, after, 365*24*time.Hour)
	around(t, "access token", first.Access.ExpiresAt, before, after, time.Hour)

	next := e.record(t, first.Token)
	if next.ID != first.ID || next.Kind != "oauth2_refresh" || next.Status != "active" || next.Subject != subject || next.ClientID != client ||
		next.Family != fam || next.RLC != "gold" || !slices.Equal(next.Scopes, grant) || next.MaxUses != 1 || next.UsesLeft != 1 {
		t.Errorf("successor %+v: want an active single-use refresh token with the grant of %s", next, rt.ID)
	}
	acc := e.record(t, first.Access.Token)
	if acc.ID != first.Access.ID || acc.Kind != "access" || acc.Status != "active" || acc.Subject != subject || acc.ClientID != client ||
		acc.Family != fam || acc.RLC != "gold" || !slices.Equal(acc.Scopes, []string{"read"}) {
		t.Errorf("rotation's access token %+v: want %s/%s in family %s, rlc gold, scopes [read]", acc, subject, client, fam)
	}
	// The rotated token is used up and says so.
	old := e.byID(t, rt.ID)
	if old.Status != "consumed" || old.InvalidatedAt == nil {
		t.Fatalf("rotated token %+v: want consumed with invalidated_at", old)
	}
	rotatedAt := *old.InvalidatedAt
	wantExplained(t, e.lookup(t, rt.Token), wire.CodeTokenConsumed, rotatedAt, "")

	// Introspection of each state of the rotation.
	e.inactive(t, "the rotated refresh token", rt.Token)
	if got, body := e.introspect(t, first.Token); !got.Active || got.TokenType != "oauth2_refresh" || got.ID != first.ID ||
		got.Subject != subject || got.ClientID != client || got.Scope != "read write admin" || got.RLC != "gold" {
		t.Errorf("introspect the successor: %s, want active oauth2_refresh %s with scope \"read write admin\"", body, first.ID)
	}
	if got, body := e.introspect(t, first.Access.Token); !got.Active || got.TokenType != "access" || got.ID != first.Access.ID ||
		got.Scope != "read" || got.Subject != subject || got.ExpiresAt != first.Access.ExpiresAt.Unix() {
		t.Errorf("introspect the rotation's access token: %s, want active access %s with scope \"read\"", body, first.Access.ID)
	}

	// The chain goes on.
	second := e.rotated(t, wire.RotateRequest{Token: first.Token})
	if second.ID == first.ID || second.Token == first.Token || second.Family != fam {
		t.Errorf("second rotation %+v: want a new successor in family %s", second, fam)
	}
	e.inactive(t, "the rotated successor", first.Token)
	if got, _ := e.introspect(t, second.Token); !got.Active || got.ID != second.ID {
		t.Errorf("introspect the second successor: %+v, want active %s", got, second.ID)
	}

	// The first refresh token comes back: reuse, and the grant is revoked.
	r := e.rotate(t, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}})
	wantExplained(t, r, wire.CodeTokenReused, rotatedAt, "")
	if eb, _ := errorShape(r, http.StatusGone, wire.CodeTokenReused); !strings.Contains(eb.Message, "revoked") {
		t.Errorf("%s: the message does not say the grant was revoked", r)
	}
	hidden(t, "reuse answer", r.Body, rt.Token, e.n.Hasher)
	if !strings.Contains(e.n.Logs.String(), "reuse of a consumed token") {
		t.Errorf("the reuse was not logged")
	}

	// Every token of the family is invalid now. The tokens that were alive
	// are revoked for the reuse; the used ones keep their own story.
	e.revokedByReuse(t, "access token issued with the refresh token", at.Token)
	e.revokedByReuse(t, "access token of the first rotation", first.Access.Token)
	e.revokedByReuse(t, "live refresh token", second.Token)
	wantError(t, e.lookup(t, rt.Token), http.StatusGone, wire.CodeTokenConsumed)
	wantError(t, e.lookup(t, first.Token), http.StatusGone, wire.CodeTokenConsumed)
	wantError(t, e.lookup(t, code.Token), http.StatusGone, wire.CodeTokenConsumed)
	if rec := e.byID(t, code.ID); rec.Status != "consumed" {
		t.Errorf("the code's tombstone after the reuse: status %q, want consumed", rec.Status)
	}
	for _, id := range []string{at.ID, first.Access.ID, second.ID} {
		if rec := e.byID(t, id); rec.Status != "revoked" || rec.InvalidatedAt == nil || !strings.Contains(rec.Reason, "reuse") {
			t.Errorf("GET %s after the reuse: %+v, want revoked with the reuse as reason", id, rec)
		}
	}
	if recs, _ := e.listAll(t, subject, "", 10); len(recs) != 0 {
		t.Errorf("listing %s after the reuse: %d tokens (%+v), want none", subject, len(recs), recs)
	}
	for what, tok := range map[string]string{
		"code": code.Token, "first refresh token": rt.Token, "first access token": at.Token,
		"first successor": first.Token, "rotation's access token": first.Access.Token, "second successor": second.Token,
	} {
		e.inactive(t, what, tok)
	}
	// The revoked successor cannot rotate: revoked, not a reuse of its own.
	wantError(t, e.rotate(t, wire.RotateRequest{Token: second.Token}), http.StatusGone, wire.CodeTokenRevoked)
	// The code is still a reuse when it comes back.
	wantError(t, e.consume(t, wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code", ClientID: client}), http.StatusGone, wire.CodeTokenReused)

	logs := []byte(e.n.Logs.String())
	for _, tok := range []string{code.Token, rt.Token, at.Token, first.Token, first.Access.Token, second.Token} {
		hidden(t, "the node's log", logs, tok, e.n.Hasher)
	}
}

// TestRotateValidation: every bad rotation is refused with its own code
// and uses nothing up.
func TestRotateValidation(t *testing.T) {
	t.Parallel()
	// A GC grace of an hour keeps the expired token around to explain itself.
	e := startEnv(t, testcluster.Options{GCGrace: time.Hour})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:v", ClientID: "app1", Scopes: []string{"read"}, Family: "fam-v"})
	sib := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:v", ClientID: "app1", Scopes: []string{"read"}, Family: "fam-v"})
	last := rt.Token[len(rt.Token)-1:]
	malformed := rt.Token[:len(rt.Token)-1] + map[bool]string{true: "A", false: "B"}[last != "A"]

	unchanged := func(t *testing.T, after string) {
		t.Helper()
		// (last_used_at moves with lookups: this kind's policy updates it.)
		if rec := e.record(t, rt.Token); rec.Status != "active" || rec.UsesLeft != 1 || rec.ID != rt.ID {
			t.Errorf("refresh token after %s: %+v, want active with its one use left", after, rec)
		}
		if rec := e.record(t, sib.Token); rec.Status != "active" {
			t.Errorf("its family's access token after %s: %+v, want active", after, rec)
		}
		if recs, _ := e.listAll(t, "user:v", "", 10); len(recs) != 2 {
			t.Errorf("after %s the subject has %d tokens, want the 2 it had", after, len(recs))
		}
	}
	for _, c := range []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"empty body", ``, http.StatusBadRequest, wire.CodeInvalidJSON},
		{"missing token", `{}`, http.StatusBadRequest, wire.CodeMissingField},
		{"missing token, access asked", `{"access":{"scopes":["read"]}}`, http.StatusBadRequest, wire.CodeMissingField},
		{"malformed token", mustJSON(t, wire.RotateRequest{Token: malformed}), http.StatusUnauthorized, wire.CodeTokenMalformed},
		{"random tks_ string", mustJSON(t, wire.RotateRequest{Token: "tks_rt_0123456789"}), http.StatusUnauthorized, wire.CodeTokenMalformed},
		{"unknown brought token", mustJSON(t, wire.RotateRequest{Token: "no-such-refresh-token"}), http.StatusNotFound, wire.CodeTokenNotFound},
		{"access token", mustJSON(t, wire.RotateRequest{Token: sib.Token}), http.StatusForbidden, wire.CodeKindMismatch},
		{"wrong client", mustJSON(t, wire.RotateRequest{Token: rt.Token, ClientID: "app2"}), http.StatusForbidden, wire.CodeClientMismatch},
		{"scopes beyond the grant", mustJSON(t, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{Scopes: []string{"read", "write"}}}),
			http.StatusBadRequest, wire.CodeInvalidScope},
		{"empty scope", mustJSON(t, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{Scopes: []string{""}}}),
			http.StatusBadRequest, wire.CodeInvalidField},
		{"no scope asked: not the grant's", `{"token":"` + rt.Token + `","access":{"scopes":[]}}`, http.StatusBadRequest, wire.CodeInvalidScope},
		{"ttl beyond the refresh max", mustJSON(t, wire.RotateRequest{Token: rt.Token, TTL: "8761h"}), http.StatusBadRequest, wire.CodeTTLTooLong},
		{"access ttl beyond the max", mustJSON(t, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{TTL: "25h"}}),
			http.StatusBadRequest, wire.CodeTTLTooLong},
		{"ttl not a duration", mustJSON(t, wire.RotateRequest{Token: rt.Token, TTL: "soon"}), http.StatusBadRequest, wire.CodeInvalidField},
		{"unknown field", fmt.Sprintf(`{"token":%q,"scope":"read"}`, rt.Token), http.StatusBadRequest, wire.CodeUnknownField},
		{"unknown field in access", fmt.Sprintf(`{"token":%q,"access":{"scope":"read"}}`, rt.Token), http.StatusBadRequest, wire.CodeUnknownField},
		{"bad ip", mustJSON(t, wire.RotateRequest{Token: rt.Token, IP: "not-an-ip"}), http.StatusBadRequest, wire.CodeInvalidField},
		{"control character in client_id", mustJSON(t, wire.RotateRequest{Token: rt.Token, ClientID: "app\x01"}), http.StatusBadRequest, wire.CodeInvalidField},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/v1/tokens/rotate", c.body)
			wantError(t, r, c.status, c.code)
			hidden(t, r.String(), r.Body, rt.Token, e.n.Hasher)
			unchanged(t, c.name)
		})
	}

	wrongMethod := func(t *testing.T, methods ...string) {
		for _, m := range methods {
			r := e.do(t, m, "/v1/tokens/rotate", "")
			wantError(t, r, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed)
			if allow := r.Header.Get("Allow"); allow != http.MethodPost {
				t.Errorf("%s: Allow %q, want POST (the only method /v1/tokens/rotate serves)", r, allow)
			}
			unchanged(t, m+" /v1/tokens/rotate")
		}
	}
	t.Run("wrong method", func(t *testing.T) { wrongMethod(t, http.MethodGet, http.MethodDelete) })
	// PUT and PATCH match no route at all; the Allow of that answer must
	// not offer GET or DELETE, which /v1/tokens/rotate refuses as well.
	t.Run("wrong method without a route", func(t *testing.T) { wrongMethod(t, http.MethodPut, http.MethodPatch) })

	t.Run("revoked", func(t *testing.T) {
		rev := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:r", ClientID: "app1", Family: "fam-r"})
		kin := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:r", ClientID: "app1", Family: "fam-r"})
		var rec wire.Record
		wantJSON(t, e.do(t, http.MethodPost, "/v1/tokens/revoke", mustJSON(t, wire.RevokeRequest{Token: rev.Token, Reason: "device lost"})), http.StatusOK, &rec)
		for range 2 {
			wantExplained(t, e.rotate(t, wire.RotateRequest{Token: rev.Token, Access: &wire.AccessRequest{}}), wire.CodeTokenRevoked, *rec.InvalidatedAt, "device lost")
		}
		// Not a reuse: the rest of the family is untouched.
		if got := e.record(t, kin.Token); got.Status != "active" {
			t.Errorf("the family's access token after rotating a revoked token: %+v, want active", got)
		}
		if got := e.byID(t, rev.ID); got.Reason != "device lost" {
			t.Errorf("revoked token after rotations: reason %q, want %q", got.Reason, "device lost")
		}
	})

	t.Run("expired", func(t *testing.T) {
		exp := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:x", ClientID: "app1", Family: "fam-x", TTL: "1s"})
		kin := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:x", ClientID: "app1", Family: "fam-x"})
		eventually(t, 10*time.Second, "a 1s refresh token expires", func() (bool, string) {
			r := e.lookup(t, exp.Token)
			return codeOf(r) == wire.CodeTokenExpired, r.String()
		})
		wantExplained(t, e.rotate(t, wire.RotateRequest{Token: exp.Token}), wire.CodeTokenExpired, *exp.ExpiresAt, "")
		if got := e.record(t, kin.Token); got.Status != "active" {
			t.Errorf("the family's access token after rotating an expired token: %+v, want active", got)
		}
		if recs, _ := e.listAll(t, "user:x", "oauth2_refresh", 10); len(recs) != 0 {
			t.Errorf("rotating an expired token issued %+v", recs)
		}
	})

	unchanged(t, "all of the above")
	// After all this, the token still rotates.
	e.rotated(t, wire.RotateRequest{Token: rt.Token, ClientID: "app1", Access: &wire.AccessRequest{Scopes: []string{"read"}}})
}

// TestReuseDetectedAfterGC: a consumed code's tombstone outlives its expiry
// while its family can be used, so its reuse is still detected after GC
// ran; a family that is all dead lets its tombstones go.
func TestReuseDetectedAfterGC(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{GCGrace: 50 * time.Millisecond, GCTick: 100 * time.Millisecond})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:gc", ClientID: "app1", Family: "grant-F", TTL: "1s"})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code"}), http.StatusOK, nil)
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:gc", ClientID: "app1", Family: "grant-F", TTL: "1h"})
	lone := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:gc", ClientID: "app1", Family: "grant-G", TTL: "1s"})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: lone.Token}), http.StatusOK, nil)
	// Issued last, it expires last: once it is collected, GC has judged
	// both codes.
	control := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:control", TTL: "1s"})

	eventually(t, 10*time.Second, "the control token is garbage-collected", func() (bool, string) {
		r := e.do(t, http.MethodGet, "/v1/tokens/"+control.ID, "")
		return r.Status == http.StatusNotFound, r.String()
	})
	if !time.Now().After(*code.ExpiresAt) {
		t.Fatalf("the code expires at %v, after the control token was collected", code.ExpiresAt)
	}
	held := e.byID(t, code.ID)
	if held.Status != "consumed" || held.Family != "grant-F" {
		t.Fatalf("the code past its expiry, with its family alive: %+v, want its consumed tombstone kept", held)
	}
	r := e.consume(t, wire.ConsumeRequest{Token: code.Token})
	wantExplained(t, r, wire.CodeTokenReused, *held.InvalidatedAt, "")
	e.revokedByReuse(t, "the refresh token of the reused code", rt.Token)

	// grant-G has nothing alive: its code's tombstone is collected, and
	// the code is then unknown.
	eventually(t, 10*time.Second, "the tombstone of a dead family's code is collected", func() (bool, string) {
		r := e.do(t, http.MethodGet, "/v1/tokens/"+lone.ID, "")
		return r.Status == http.StatusNotFound, r.String()
	})
	wantError(t, e.consume(t, wire.ConsumeRequest{Token: lone.Token}), http.StatusNotFound, wire.CodeTokenNotFound)
}

// dataFiles returns every regular file under dir with its contents.
func dataFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			files[path] = b
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestRotationGrace: within the grace period a retried rotation gets the
// very successor (and access token) it got, concurrently too; after it, or
// once the successor moved on, it is a reuse.
func TestRotationGrace(t *testing.T) {
	t.Parallel()
	// The window is leader time in the log; the read clock cannot fake
	// it, so it is a real window, wide enough for a loaded machine.
	const grace = 4 * time.Second
	e := startEnv(t, testcluster.Options{RotationGrace: grace})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:grace", ClientID: "app1", Scopes: []string{"read", "write"}, RLC: "gold"})
	req := wire.RotateRequest{Token: rt.Token, ClientID: "app1", Access: &wire.AccessRequest{Scopes: []string{"read"}}}

	start := time.Now()
	first := e.rotated(t, req)
	same := func(what string, got wire.RotateResponse) {
		t.Helper()
		if !reflect.DeepEqual(got, first) {
			t.Errorf("%s (%s after the rotation): %+v (access %+v), want the first answer %+v (access %+v)",
				what, time.Since(start), got, got.Access, first, first.Access)
		}
	}
	same("retry within grace", e.rotated(t, req))
	for i, r := range postAtOnce(t, e, "/v1/tokens/rotate", []byte(mustJSON(t, req)), 8) {
		var got wire.RotateResponse
		wantJSON(t, r, http.StatusCreated, &got)
		same(fmt.Sprintf("concurrent retry %d", i), got)
	}
	// Rotations sent at once from the start, with grace on: one rotates,
	// the others are its retries and get the same answer.
	cold := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:grace", ClientID: "app1", Scopes: []string{"read"}})
	var coldFirst *wire.RotateResponse
	for i, r := range postAtOnce(t, e, "/v1/tokens/rotate", []byte(mustJSON(t, wire.RotateRequest{Token: cold.Token, Access: &wire.AccessRequest{}})), 8) {
		var got wire.RotateResponse
		wantJSON(t, r, http.StatusCreated, &got)
		if coldFirst == nil {
			coldFirst = &got
		} else if !reflect.DeepEqual(got, *coldFirst) {
			t.Errorf("concurrent first rotation %d: %+v, want the same as the others %+v", i, got, *coldFirst)
		}
	}

	// A retry without the access token still gets the same successor.
	var bare wire.RotateResponse
	wantJSON(t, e.rotate(t, wire.RotateRequest{Token: rt.Token}), http.StatusCreated, &bare)
	if bare.ID != first.ID || bare.Token != first.Token {
		t.Errorf("retry without access: successor %s, want %s", bare.ID, first.ID)
	}
	if got, _ := e.introspect(t, first.Token); !got.Active || got.ID != first.ID {
		t.Errorf("introspect the successor within grace: %+v, want active", got)
	}
	e.inactive(t, "the rotated token within grace", rt.Token)
	wantError(t, e.lookup(t, rt.Token), http.StatusGone, wire.CodeTokenConsumed)

	// Within the window, but the successor was rotated already: reuse.
	moved := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:grace", ClientID: "app1"})
	m1 := e.rotated(t, wire.RotateRequest{Token: moved.Token})
	m2 := e.rotated(t, wire.RotateRequest{Token: m1.Token})
	wantError(t, e.rotate(t, wire.RotateRequest{Token: moved.Token}), http.StatusGone, wire.CodeTokenReused)
	e.revokedByReuse(t, "successor of the successor", m2.Token)

	// Secrets never reach the disk: not the rotated token, nor what the
	// grace period must give back.
	files := dataFiles(t, e.n.DataDir)
	idSeen := false
	for path, b := range files {
		idSeen = idSeen || bytes.Contains(b, []byte(first.ID))
		for what, secret := range map[string]string{"rotated": rt.Token, "successor": first.Token, "access token": first.Access.Token,
			"moved": moved.Token, "m1": m1.Token, "m2": m2.Token} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds the %s secret in cleartext", path, what)
			}
		}
	}
	if !idSeen {
		t.Errorf("no file under %s (%d files) holds the successor's id: the search for secrets looked in the wrong place", e.n.DataDir, len(files))
	}
	logs := []byte(e.n.Logs.String())
	for _, tok := range []string{rt.Token, first.Token, first.Access.Token} {
		hidden(t, "the node's log", logs, tok, e.n.Hasher)
	}

	// After the window: the same retry is a reuse, and the family goes.
	var r reply
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for {
		r = e.rotate(t, req)
		if r.Status != http.StatusCreated {
			break
		}
		var got wire.RotateResponse
		wantJSON(t, r, http.StatusCreated, &got)
		same("retry until the window ends", got)
		if time.Since(start) > grace+10*time.Second {
			t.Fatalf("a retry %s after the rotation still answers 201, with a grace period of %s", time.Since(start), grace)
		}
		<-pace.C
	}
	if d := time.Since(start); d < grace {
		t.Errorf("%s: a retry %s after the rotation, within the grace period of %s, was refused", r, d, grace)
	}
	wantError(t, r, http.StatusGone, wire.CodeTokenReused)
	e.revokedByReuse(t, "successor after the window", first.Token)
	e.revokedByReuse(t, "access token after the window", first.Access.Token)
	e.inactive(t, "successor after the window", first.Token)
	e.inactive(t, "access token after the window", first.Access.Token)
	wantError(t, e.rotate(t, req), http.StatusGone, wire.CodeTokenReused)
}

// TestConcurrentRotation: without grace, one refresh token rotated from
// many clients at once rotates exactly once; every other presentation is a
// reuse, which revokes the winner's successor.
func TestConcurrentRotation(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	const clients, tokens = 32, 5
	for i := range tokens {
		rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:race", ClientID: "app1", Scopes: []string{"read"}})
		body := []byte(mustJSON(t, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}))
		var wins []wire.RotateResponse
		for _, r := range postAtOnce(t, e, "/v1/tokens/rotate", body, clients) {
			if r.Status == http.StatusCreated {
				var out wire.RotateResponse
				wantJSON(t, r, http.StatusCreated, &out)
				wins = append(wins, out)
				continue
			}
			if _, err := errorShape(r, http.StatusGone, wire.CodeTokenReused); err != nil {
				t.Error(err)
			}
		}
		if len(wins) != 1 {
			t.Errorf("token %d: %d of %d concurrent rotations succeeded, want exactly 1", i, len(wins), clients)
			continue
		}
		w := wins[0]
		if w.Family != rt.Family || w.Access == nil {
			t.Errorf("token %d: the winner %+v: want a successor in family %s with an access token", i, w, rt.Family)
			continue
		}
		wantError(t, e.lookup(t, rt.Token), http.StatusGone, wire.CodeTokenConsumed)
		e.revokedByReuse(t, fmt.Sprintf("token %d: the winner's successor", i), w.Token)
		e.revokedByReuse(t, fmt.Sprintf("token %d: the winner's access token", i), w.Access.Token)
	}
	if recs, _ := e.listAll(t, "user:race", "", 100); len(recs) != 0 {
		t.Errorf("after the races the subject has %d usable tokens, want none", len(recs))
	}
	// Every loser was a detected reuse, counted for alerting.
	want := fmt.Sprintf(`tokenstore_token_reuse_detected_total{kind="oauth2_refresh"} %d`, tokens*(clients-1))
	if m := e.do(t, http.MethodGet, "/metrics", ""); !strings.Contains(string(m.Body), want) {
		t.Errorf("/metrics: want %q", want)
	}
}

// TestRotationAcrossNodes: a rotation on one follower, its retry within
// grace on another (the same successor), and a reuse there once the
// successor moved on; the revocation is then visible on every node.
func TestRotationAcrossNodes(t *testing.T) {
	o := testcluster.Options{RotationGrace: time.Minute}
	c := testcluster.StartCluster(t, o, o, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	var envs, followers []*env
	for _, n := range c.Nodes() {
		e := &env{n: n, hc: newHTTPClient()}
		envs = append(envs, e)
		if !n.IsLeader() {
			followers = append(followers, e)
		}
	}
	if len(followers) != 2 {
		t.Fatalf("want 2 followers, got %d", len(followers))
	}
	a, b := followers[0], followers[1]
	rt := a.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:dc", ClientID: "app1", Scopes: []string{"read"}})
	out := a.rotated(t, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}})
	// The retry on another node opens what the first node sealed.
	if again := b.rotated(t, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}); !reflect.DeepEqual(again, out) {
		t.Errorf("retry within grace on another follower: %+v, want %+v", again, out)
	}
	// The successor moves on; the first token is then a reuse anywhere.
	next := envs[0].rotated(t, wire.RotateRequest{Token: out.Token})
	r := b.rotate(t, wire.RotateRequest{Token: rt.Token})
	wantError(t, r, http.StatusGone, wire.CodeTokenReused)
	index := indexOf(t, r)
	if index < out.Index {
		t.Fatalf("%s: index %d, before the rotation's %d", r, index, out.Index)
	}
	lookup := func(e *env, req wire.LookupRequest) reply {
		return e.do(t, http.MethodPost, "/v1/tokens/lookup", mustJSON(t, req))
	}
	for _, e := range envs {
		for what, tok := range map[string]string{"live successor": next.Token, "access token": out.Access.Token} {
			for _, req := range []wire.LookupRequest{{Token: tok, MinIndex: index}, {Token: tok, Consistency: wire.ConsistencyLeader}} {
				r := lookup(e, req)
				eb := wantError(t, r, http.StatusGone, wire.CodeTokenRevoked)
				if !strings.Contains(eb.Message, "reuse") {
					t.Errorf("node %s, %s, %+v: %s, want revoked for the reuse", e.n.ID(), what, req, r)
				}
			}
		}
		for _, tok := range []string{rt.Token, out.Token} {
			wantError(t, lookup(e, wire.LookupRequest{Token: tok, MinIndex: index}), http.StatusGone, wire.CodeTokenConsumed)
		}
	}
}
