package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// batch posts ops (each a JSON object) as one batch.
func (e *env) batch(t *testing.T, ops ...string) reply {
	t.Helper()
	return e.do(t, http.MethodPost, "/v1/batch", `{"ops":[`+strings.Join(ops, ",")+`]}`)
}

// op is the JSON of one batch op: req's fields and "op".
func op(t *testing.T, name string, req any) string {
	t.Helper()
	b := mustJSON(t, req)
	if b == "{}" {
		return fmt.Sprintf(`{"op":%q}`, name)
	}
	return fmt.Sprintf(`{"op":%q,%s`, name, b[1:])
}

// wantBatchError fails unless r is the error of status and code in the
// one error shape, with "op" the failing op's index (op < 0: no "op").
func wantBatchError(t *testing.T, r reply, status int, code string, op int) wire.ErrorBody {
	t.Helper()
	var outer map[string]map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &outer); err != nil || outer["error"] == nil {
		t.Fatalf("%s: not an error body: %v", r, err)
	}
	inner := outer["error"]
	got, has := inner["op"]
	switch {
	case op < 0 && has:
		t.Errorf("%s: a batch-level error names op %s", r, got)
	case op >= 0 && string(got) != fmt.Sprint(op):
		t.Errorf("%s: op %s, want %d", r, got, op)
	}
	delete(inner, "op")
	stripped := r
	stripped.Body, _ = json.Marshal(outer)
	e := wantError(t, stripped, status, code)
	e.Op = nil
	if has {
		var i int
		json.Unmarshal(got, &i)
		e.Op = &i
	}
	return e
}

func TestBatchAppliesEveryOp(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1", Scopes: []string{"read"}})
	old := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1"})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1", Scopes: []string{"read"}})
	r := e.batch(t,
		op(t, "consume", wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code", ClientID: "app1"}),
		op(t, "issue", wire.IssueRequest{Kind: "access", Subject: "user:1", ClientID: "app1", Family: code.Family, Scopes: []string{"read"}}),
		op(t, "issue", wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1", Family: code.Family, Scopes: []string{"read"}}),
		op(t, "revoke", wire.RevokeRequest{Token: old.Token, Reason: "replaced"}),
		op(t, "rotate", wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}),
	)
	var raw struct {
		Index   uint64            `json:"index"`
		Results []json.RawMessage `json:"results"`
	}
	wantJSON(t, r, http.StatusOK, &raw)
	if raw.Index == 0 || raw.Index != indexOf(t, r) || len(raw.Results) != 5 {
		t.Fatalf("%s: want the index of the header and 5 results", r)
	}
	var consumed, revoked wire.Record
	var access, refresh wire.IssueResponse
	var rotated wire.RotateResponse
	for i, v := range []any{&consumed, &access, &refresh, &revoked, &rotated} {
		if err := json.Unmarshal(raw.Results[i], v); err != nil {
			t.Fatal(err)
		}
	}
	if consumed.ID != code.ID || consumed.Status != "consumed" {
		t.Errorf("result 0: %+v, want the code consumed", consumed)
	}
	if access.Token == "" || access.Family != code.Family || access.Index != raw.Index || refresh.Family != code.Family {
		t.Errorf("results 1, 2: %+v %+v, want tokens in the code's family at the batch's index", access, refresh)
	}
	if revoked.ID != old.ID || revoked.Status != "revoked" || revoked.Reason != "replaced" {
		t.Errorf("result 3: %+v, want old revoked", revoked)
	}
	if rotated.Token == "" || rotated.Access == nil || rotated.Family != rt.Family {
		t.Errorf("result 4: %+v, want the successor and an access token", rotated)
	}
	if rec := e.record(t, access.Token); rec.Kind != "access" || rec.Family != code.Family {
		t.Errorf("the batch's access token: %+v", rec)
	}
	noSecret(t, "consume result", raw.Results[0], code.Token, e.n.Hasher)
	noSecret(t, "revoke result", raw.Results[3], old.Token, e.n.Hasher)
	// Each result is the single call's body: an issue answers like POST
	// /v1/tokens, a consume like /v1/tokens/consume.
	single := e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family}))
	if keys(t, single.Body) != keys(t, raw.Results[1]) {
		t.Errorf("issue result keys %s, the single call's %s", keys(t, raw.Results[1]), keys(t, single.Body))
	}
	// Ops see the ones before: issue then consume the same brought token.
	r = e.batch(t, op(t, "issue", wire.IssueRequest{Kind: "access", Token: "brought-token-0123456789abcdef", MaxUses: 1}),
		op(t, "consume", wire.ConsumeRequest{Token: "brought-token-0123456789abcdef"}))
	wantJSON(t, r, http.StatusOK, &raw)
	if !strings.Contains(string(raw.Results[1]), `"status":"consumed"`) {
		t.Errorf("%s: want the brought token issued and used up", r)
	}
}

func keys(t *testing.T, b []byte) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return fmt.Sprint(len(ks), strings.Join(sortStrings(ks), ","))
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// A batch whose third op fails applies nothing, and answers that op's
// error with its index; other ops' tokens stay as they were.
func TestBatchFailingOpAppliesNothing(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1"})
	used := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", MaxUses: 1})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: used.Token}), http.StatusOK, nil)
	before := e.record(t, code.Token)
	r := e.batch(t,
		op(t, "consume", wire.ConsumeRequest{Token: code.Token}),
		op(t, "issue", wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family}),
		op(t, "consume", wire.ConsumeRequest{Token: used.Token}),
		op(t, "issue", wire.IssueRequest{Kind: "access", Subject: "user:1"}),
	)
	eb := wantBatchError(t, r, http.StatusGone, wire.CodeTokenConsumed, 2)
	if eb.Token == nil || eb.Token.ID != used.ID {
		t.Errorf("%s: error.token %+v, want the used token", r, eb.Token)
	}
	if after := e.record(t, code.Token); after.Status != "active" || after.UsesLeft != before.UsesLeft {
		t.Errorf("the code after the failed batch: %+v, want it untouched", after)
	}
	list, _ := e.listAll(t, "user:1", "", 100)
	if len(list) != 1 || list[0].ID != code.ID {
		t.Errorf("user:1's tokens after the failed batch: %d, want only the code", len(list))
	}
	// Every status of the single calls comes back with the op.
	for name, tc := range map[string]struct {
		ops    []string
		status int
		code   string
		op     int
	}{
		"malformed":     {[]string{op(t, "revoke", wire.RevokeRequest{Token: "tks_nothing_" + strings.Repeat("a", 30)})}, http.StatusUnauthorized, wire.CodeTokenMalformed, 0},
		"unknown token": {[]string{op(t, "consume", wire.ConsumeRequest{Token: "someone-elses-token-0123456789"})}, http.StatusNotFound, wire.CodeTokenNotFound, 0},
		"kind mismatch": {[]string{op(t, "issue", wire.IssueRequest{Kind: "access"}), op(t, "consume", wire.ConsumeRequest{Token: code.Token, Kind: "access"})}, http.StatusForbidden, wire.CodeKindMismatch, 1},
		"rotate a code": {[]string{op(t, "rotate", wire.RotateRequest{Token: code.Token})}, http.StatusForbidden, wire.CodeKindMismatch, 0},
		"exists":        {[]string{op(t, "issue", wire.IssueRequest{Kind: "access", Token: "brought-twice-0123456789abcdef"}), op(t, "issue", wire.IssueRequest{Kind: "access", Token: "brought-twice-0123456789abcdef"})}, http.StatusConflict, wire.CodeTokenExists, 1},
	} {
		t.Run(name, func(t *testing.T) { wantBatchError(t, e.batch(t, tc.ops...), tc.status, tc.code, tc.op) })
	}
	if after := e.record(t, code.Token); after.Status != "active" {
		t.Errorf("the code after the failed batches: %+v, want it untouched", after)
	}
}

// A used code presented in a batch revokes its family although the batch
// fails; the batch's own issues are not applied.
func TestBatchReuseRevokesFamily(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1"})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: code.Token}), http.StatusOK, nil)
	at := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family})
	r := e.batch(t,
		op(t, "issue", wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", Family: code.Family}),
		op(t, "consume", wire.ConsumeRequest{Token: code.Token, WithData: true}),
	)
	eb := wantBatchError(t, r, http.StatusGone, wire.CodeTokenReused, 1)
	if eb.Token == nil || eb.Token.ID != code.ID {
		t.Errorf("%s: error.token %+v, want the code", r, eb.Token)
	}
	wantError(t, e.lookup(t, at.Token), http.StatusGone, wire.CodeTokenRevoked)
	r = e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, wire.IssueRequest{Kind: "access", Family: code.Family}))
	wantError(t, r, http.StatusGone, wire.CodeFamilyRevoked)
	if list, _ := e.listAll(t, "user:1", "", 100); len(list) != 0 {
		t.Errorf("user:1 has %d active tokens after the reuse, want none", len(list))
	}
}

// The API's bound on a batch is the state machine's: a batch the API took
// and the state machine refused would answer 500.
func TestBatchBoundsAgree(t *testing.T) {
	if wire.MaxBatchOps != fsm.MaxBatchOps {
		t.Fatalf("wire.MaxBatchOps %d, fsm.MaxBatchOps %d: want them equal", wire.MaxBatchOps, fsm.MaxBatchOps)
	}
}

// A batch that issues a code and uses it twice answers the reuse (410
// with the op and the code named), never a 500, and leaves nothing.
func TestBatchReuseOfItsOwnToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	const secret = "own-code-secret-0001"
	consume := op(t, "consume", wire.ConsumeRequest{Token: secret, Kind: "oauth2_code"})
	r := e.batch(t, op(t, "issue", wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", Token: secret}), consume, consume)
	eb := wantBatchError(t, r, http.StatusGone, wire.CodeTokenReused, 2)
	if eb.Token == nil || eb.Token.Kind != "oauth2_code" {
		t.Errorf("%s: error.token %+v, want the code", r, eb.Token)
	}
	wantError(t, e.lookup(t, secret), http.StatusNotFound, wire.CodeTokenNotFound)
}

// Every way a batch request is refused, with the op named when one op is
// at fault.
func TestBatchErrors(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	issue := op(t, "issue", wire.IssueRequest{Kind: "access"})
	many := make([]string, wire.MaxBatchOps+1)
	for i := range many {
		many[i] = issue
	}
	for name, tc := range map[string]struct {
		body   string
		status int
		code   string
		op     int
	}{
		"not JSON":          {`{"ops":[`, http.StatusBadRequest, wire.CodeInvalidJSON, -1},
		"no ops field":      {`{}`, http.StatusBadRequest, wire.CodeMissingField, -1},
		"no ops":            {`{"ops":[]}`, http.StatusBadRequest, wire.CodeMissingField, -1},
		"null ops":          {`{"ops":null}`, http.StatusBadRequest, wire.CodeMissingField, -1},
		"too many ops":      {`{"ops":[` + strings.Join(many, ",") + `]}`, http.StatusBadRequest, wire.CodeInvalidField, -1},
		"unknown top field": {`{"ops":[` + issue + `],"atomic":true}`, http.StatusBadRequest, wire.CodeUnknownField, -1},
		"ops not an array":  {`{"ops":{}}`, http.StatusBadRequest, wire.CodeInvalidJSON, -1},
		"op not an object":  {`{"ops":[` + issue + `,7]}`, http.StatusBadRequest, wire.CodeInvalidJSON, 1},
		"no op name":        {`{"ops":[` + issue + `,{"kind":"access"}]}`, http.StatusBadRequest, wire.CodeMissingField, 1},
		"unknown op":        {`{"ops":[` + issue + `,` + issue + `,{"op":"lookup","token":"x"}]}`, http.StatusBadRequest, wire.CodeInvalidField, 2},
		"unknown op field":  {`{"ops":[{"op":"consume","token":"x","ttl":"1h"}]}`, http.StatusBadRequest, wire.CodeUnknownField, 0},
		"duplicate key":     {`{"ops":[{"op":"issue","kind":"access","kind":"access"}]}`, http.StatusBadRequest, wire.CodeInvalidJSON, 0},
		"op twice":          {`{"ops":[{"op":"issue","op":"consume","kind":"access"}]}`, http.StatusBadRequest, wire.CodeInvalidJSON, 0},
		"wrong type":        {`{"ops":[{"op":"issue","kind":7}]}`, http.StatusBadRequest, wire.CodeInvalidJSON, 0},
		"unknown kind":      {`{"ops":[` + issue + `,{"op":"issue","kind":"nope"}]}`, http.StatusBadRequest, wire.CodeUnknownKind, 1},
		"missing kind":      {`{"ops":[{"op":"issue"}]}`, http.StatusBadRequest, wire.CodeMissingField, 0},
		"ttl too long":      {`{"ops":[` + issue + `,{"op":"issue","kind":"oauth2_code","ttl":"9000h"}]}`, http.StatusBadRequest, wire.CodeTTLTooLong, 1},
		"bad max uses":      {`{"ops":[{"op":"issue","kind":"oauth2_code","max_uses":5}]}`, http.StatusBadRequest, wire.CodeInvalidMaxUses, 0},
		"reserved prefix":   {`{"ops":[{"op":"issue","kind":"access","token":"tks_abc"}]}`, http.StatusBadRequest, wire.CodePrefixReserved, 0},
		"missing token":     {`{"ops":[` + issue + `,{"op":"consume"}]}`, http.StatusBadRequest, wire.CodeMissingField, 1},
		"malformed token":   {`{"ops":[{"op":"rotate","token":"tks_x"}]}`, http.StatusUnauthorized, wire.CodeTokenMalformed, 0},
		"bad reason":        {`{"ops":[{"op":"revoke","token":"someone-elses-token-0123456789","reason":"a\u0000b"}]}`, http.StatusBadRequest, wire.CodeInvalidField, 0},
		"bad scopes":        {`{"ops":[{"op":"rotate","token":"someone-elses-token-0123456789","access":{"scopes":[""]}}]}`, http.StatusBadRequest, wire.CodeInvalidField, 0},
		"bad data":          {`{"ops":[{"op":"issue","kind":"access","data":"` + strings.Repeat("x", 9000) + `"}]}`, http.StatusBadRequest, wire.CodeInvalidField, 0},
		"body too large":    {`{"ops":[{"op":"issue","kind":"access","title":"` + strings.Repeat("x", 70<<10) + `"}]}`, http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge, -1},
	} {
		t.Run(name, func(t *testing.T) {
			wantBatchError(t, e.do(t, http.MethodPost, "/v1/batch", tc.body), tc.status, tc.code, tc.op)
		})
	}
	if wire.MaxBatchOps != fsm.MaxBatchOps {
		t.Fatalf("wire.MaxBatchOps %d, fsm.MaxBatchOps %d", wire.MaxBatchOps, fsm.MaxBatchOps)
	}
	// Exactly the limit is fine.
	r := e.batch(t, many[:wire.MaxBatchOps]...)
	var out wire.BatchResponse
	wantJSON(t, r, http.StatusOK, &out)
	if len(out.Results) != wire.MaxBatchOps {
		t.Fatalf("%s: %d results", r, len(out.Results))
	}
	if r := e.do(t, http.MethodGet, "/v1/batch", ""); r.Status != http.StatusMethodNotAllowed {
		t.Errorf("%s: want 405", r)
	}
}

// No secret a batch brings, mints or presents reaches the node's log,
// which logs at debug.
func TestBatchLogsNoSecret(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{RotationGrace: time.Minute})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1"})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1"})
	brought := "brought-secret-0123456789abcdefghij"
	r := e.batch(t,
		op(t, "issue", wire.IssueRequest{Kind: "access", Subject: "user:1", Token: brought}),
		op(t, "consume", wire.ConsumeRequest{Token: code.Token}),
		op(t, "rotate", wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}),
		op(t, "revoke", wire.RevokeRequest{Token: brought, Reason: "done"}),
	)
	var out struct {
		Results []json.RawMessage `json:"results"`
	}
	wantJSON(t, r, http.StatusOK, &out)
	var rot wire.RotateResponse
	if err := json.Unmarshal(out.Results[2], &rot); err != nil || rot.Access == nil {
		t.Fatalf("rotation result %s: %v", out.Results[2], err)
	}
	// Presented again, in a batch: reuse, logged.
	wantBatchError(t, e.batch(t, op(t, "consume", wire.ConsumeRequest{Token: code.Token})), http.StatusGone, wire.CodeTokenReused, 0)
	logs := []byte(e.n.Logs.String())
	if !strings.Contains(string(logs), "reuse of a consumed token") || !strings.Contains(string(logs), "batch applied") {
		t.Errorf("the log lacks the batch and the reuse")
	}
	for _, tok := range []string{brought, code.Token, rt.Token, rot.Token, rot.Access.Token} {
		hidden(t, "the node's log", logs, tok, e.n.Hasher)
	}
}

// A family's tokens of one kind are revoked, and the family stays open;
// an unknown kind is refused, and without a kind the family is revoked
// for good.
func TestRevokeFamilyByKind(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1"})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: code.Token}), http.StatusOK, nil)
	at := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", Family: code.Family})
	path := "/v1/families/" + code.Family + "/revoke"
	var out wire.BulkRevokeResponse
	wantJSON(t, e.do(t, http.MethodPost, path, `{"kind":"access","reason":"grant refreshed"}`), http.StatusOK, &out)
	if out.Revoked != 1 {
		t.Fatalf("revoked %d, want the access token", out.Revoked)
	}
	if rec := e.byID(t, at.ID); rec.Status != "revoked" || rec.Reason != "grant refreshed" {
		t.Errorf("access token %+v, want revoked with the reason", rec)
	}
	if rec := e.record(t, rt.Token); rec.Status != "active" {
		t.Errorf("refresh token %+v, want active", rec)
	}
	// Open: issuing and rotating into the family work.
	e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family})
	next := e.rotated(t, wire.RotateRequest{Token: rt.Token})
	// The used code is still remembered: presented again, it revokes the
	// family for good.
	wantError(t, e.consume(t, wire.ConsumeRequest{Token: code.Token}), http.StatusGone, wire.CodeTokenReused)
	wantError(t, e.lookup(t, next.Token), http.StatusGone, wire.CodeTokenRevoked)
	wantError(t, e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, wire.IssueRequest{Kind: "access", Family: code.Family})), http.StatusGone, wire.CodeFamilyRevoked)
	wantError(t, e.do(t, http.MethodPost, path, `{"kind":"bogus"}`), http.StatusBadRequest, wire.CodeUnknownKind)
}
