package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// batchOnceFenced posts a batch, again while it answers 503
// cluster_upgrading: a new cluster takes batches of family revocations
// once its leader has written the log's version fence.
func (e *env) batchOnceFenced(t *testing.T, ops ...string) reply {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := e.batch(t, ops...)
		if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), wire.CodeUpgrading) || time.Now().After(deadline) {
			return r
		}
	}
}

// A family revocation in a batch answers and does what the single call
// does: by kind, the family stays open for the rotation after it; for
// good, a later issue into the family fails the batch, which undoes the
// revocation.
func TestBatchRevokeFamily(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1"})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: code.Token}), http.StatusOK, nil)
	at := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1", Family: code.Family})

	r := e.batchOnceFenced(t,
		op(t, wire.OpRevokeFamily, wire.RevokeFamilyRequest{Family: code.Family, Kind: "access", Reason: "rotated"}),
		op(t, "rotate", wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}),
	)
	var raw struct {
		Index   uint64            `json:"index"`
		Results []json.RawMessage `json:"results"`
	}
	wantJSON(t, r, http.StatusOK, &raw)
	if got := string(raw.Results[0]); got != `{"revoked":1}` {
		t.Errorf("result 0: %s, want the single call's {\"revoked\":1}", got)
	}
	var rotated wire.RotateResponse
	if err := json.Unmarshal(raw.Results[1], &rotated); err != nil || rotated.Access == nil {
		t.Fatalf("result 1: %s (%v), want a rotation with an access token", raw.Results[1], err)
	}
	if rec := e.byID(t, at.ID); rec.Status != "revoked" || rec.Reason != "rotated" {
		t.Errorf("the old access token %+v, want revoked with the reason", rec)
	}
	if rec := e.record(t, rotated.Access.Token); rec.Status != "active" || rec.Family != code.Family {
		t.Errorf("the new access token %+v, want active in the family", rec)
	}
	// The same body as the single call's.
	single := e.do(t, http.MethodPost, "/v1/families/"+code.Family+"/revoke", `{"kind":"oauth2_code"}`)
	if keys(t, single.Body) != keys(t, raw.Results[0]) {
		t.Errorf("result keys %s, the single call's %s", keys(t, raw.Results[0]), keys(t, single.Body))
	}

	// For good, then an issue into the family: the batch fails at the
	// issue and the family's tokens and openness are as before.
	r = e.batch(t,
		op(t, wire.OpRevokeFamily, wire.RevokeFamilyRequest{Family: code.Family, Reason: "logout"}),
		op(t, "issue", wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family}),
	)
	wantBatchError(t, r, http.StatusGone, wire.CodeFamilyRevoked, 1)
	for _, tok := range []string{rotated.Token, rotated.Access.Token} {
		if rec := e.record(t, tok); rec.Status != "active" {
			t.Errorf("%s after the failed batch: %+v, want active", rec.ID, rec)
		}
	}
	e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family})

	// For good, alone in a batch: as the single call, nothing can be
	// issued into the family after.
	var out wire.BatchResponse
	wantJSON(t, e.batch(t, op(t, wire.OpRevokeFamily, wire.RevokeFamilyRequest{Family: code.Family, Reason: "logout"})), http.StatusOK, &out)
	if len(out.Results) != 1 || out.Results[0].Revoked == nil || out.Results[0].Revoked.Revoked != 3 {
		t.Fatalf("%+v: want 3 revoked (the successor, its access token, the last issue)", out.Results)
	}
	wantError(t, e.lookup(t, rotated.Token), http.StatusGone, wire.CodeTokenRevoked)
	wantError(t, e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, wire.IssueRequest{Kind: "access", Family: code.Family})), http.StatusGone, wire.CodeFamilyRevoked)
}

// A family revocation op is validated as the single call: each error
// names the op.
func TestBatchRevokeFamilyErrors(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	issue := op(t, "issue", wire.IssueRequest{Kind: "access"})
	for name, tc := range map[string]struct {
		body   string
		status int
		code   string
		op     int
	}{
		"no family":      {`{"ops":[` + issue + `,{"op":"revoke_family"}]}`, http.StatusBadRequest, wire.CodeMissingField, 1},
		"empty family":   {`{"ops":[{"op":"revoke_family","family":""}]}`, http.StatusBadRequest, wire.CodeMissingField, 0},
		"long family":    {`{"ops":[{"op":"revoke_family","family":"` + strings.Repeat("f", 257) + `"}]}`, http.StatusBadRequest, wire.CodeInvalidField, 0},
		"control family": {`{"ops":[{"op":"revoke_family","family":"a\u0000b"}]}`, http.StatusBadRequest, wire.CodeInvalidField, 0},
		"unknown kind":   {`{"ops":[{"op":"revoke_family","family":"f","kind":"bogus"}]}`, http.StatusBadRequest, wire.CodeUnknownKind, 0},
		"bad reason":     {`{"ops":[` + issue + `,` + issue + `,{"op":"revoke_family","family":"f","reason":"a\u0000b"}]}`, http.StatusBadRequest, wire.CodeInvalidField, 2},
		"unknown field":  {`{"ops":[{"op":"revoke_family","family":"f","subject":"user:1"}]}`, http.StatusBadRequest, wire.CodeUnknownField, 0},
		"wrong type":     {`{"ops":[{"op":"revoke_family","family":7}]}`, http.StatusBadRequest, wire.CodeInvalidJSON, 0},
	} {
		t.Run(name, func(t *testing.T) {
			wantBatchError(t, e.do(t, http.MethodPost, "/v1/batch", tc.body), tc.status, tc.code, tc.op)
		})
	}
}
