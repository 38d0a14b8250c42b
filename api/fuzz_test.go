package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// knownCodes are the stable error codes of api/wire.
var knownCodes = map[string]bool{
	wire.CodeInvalidJSON: true, wire.CodeUnknownField: true, wire.CodeMissingField: true,
	wire.CodeInvalidField: true, wire.CodeBodyTooLarge: true, wire.CodeUnknownKind: true,
	wire.CodeTTLTooLong: true, wire.CodeInvalidMaxUses: true, wire.CodePrefixReserved: true,
	wire.CodeTokenMalformed: true, wire.CodeTokenNotFound: true, wire.CodeTokenExpired: true,
	wire.CodeTokenRevoked: true, wire.CodeTokenConsumed: true, wire.CodeTokenExists: true,
	wire.CodeKindMismatch: true, wire.CodeClientMismatch: true, wire.CodeUnauthorized: true,
	wire.CodeRouteNotFound: true, wire.CodeNoLeader: true, wire.CodeOutcomeUnknown: true,
	wire.CodeReplicaBehind: true, wire.CodeUnavailable: true, wire.CodeInternal: true,
	wire.CodeMethodNotAllowed: true,
}

// checkAnswer holds what any answer to any body must satisfy: no server
// error, valid JSON, the common headers, and for a failure the one error
// shape with a known code. It returns the error code ("" on success).
func checkAnswer(r reply) (string, error) {
	if err := commonHeaders(r); err != nil {
		return "", err
	}
	if !json.Valid(r.Body) {
		return "", fmt.Errorf("%s: body is not valid JSON", r)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return "", fmt.Errorf("%s: Content-Type %q, want application/json", r, ct)
	}
	if r.Status < 300 {
		return "", nil
	}
	code := codeOf(r)
	if !knownCodes[code] {
		return "", fmt.Errorf("%s: code %q is not one of api/wire's", r, code)
	}
	if _, err := errorShape(r, r.Status, code); err != nil {
		return "", err
	}
	if r.Status >= 500 {
		return code, fmt.Errorf("%s: server error", r)
	}
	return code, nil
}

func FuzzDecodeIssue(f *testing.F) {
	n := testcluster.Start(f, testcluster.Options{})
	hc := newHTTPClient()
	for _, seed := range []string{
		`{"kind":"access","subject":"user:42"}`,
		`{"kind":"oauth2_code","subject":"user:42","client_id":"app1","scopes":["read","write"],"ttl":"10m","family":"grant-7","data":{"redirect_uri":"https://app1.example/cb"},"rlc":"gold","ip":"198.51.100.7","user_agent":"curl/8","title":"laptop"}`,
		`{"kind":"access","max_uses":3,"ttl":"90s"}`,
		`{"kind":"oauth1_request","token":"brought-token-0001"}`,
		`{"kind":"developer","ttl":"8760h"}`,
		`{"kind":"remember","data":[1,2,3],"scopes":[]}`,
		`{"kind":"access","ip":"2001:db8::1"}`,
		``, `{}`, `null`, `[]`, `"x"`, `{"kind":`, `{"kind":7}`, `{"kind":"access"}{}`,
		`{"kind":"access","colour":"red"}`, `{"kind":"nope"}`, `{"kind":"access","ttl":"25h"}`,
		`{"kind":"access","ttl":"-1s"}`, `{"kind":"access","max_uses":-1}`, `{"kind":"oauth2_code","max_uses":2}`,
		`{"kind":"access","token":"tks_at_0000"}`, `{"kind":"access","subject":"a\u0001"}`,
		`{"kind":"access","ip":"300.0.0.1"}`, `{"kind":"access","scopes":[""]}`,
		`{"kind":"access","max_uses":1e99}`, `{"kind":"access","data":{"a":` + strings.Repeat("[", 100) + `}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := exchange(hc, http.MethodPost, n.API.URL, "/v1/tokens", "", body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := checkAnswer(r); err != nil {
			t.Fatal(err)
		}
		if r.Status < 300 {
			var out wire.IssueResponse
			if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &out) != nil || out.Token == "" || out.ID == "" || out.Index == 0 {
				t.Fatalf("%s: a success must be 201 with token, id and index", r)
			}
		}
	})
}

func FuzzDecodeLookup(f *testing.F) {
	n := testcluster.Start(f, testcluster.Options{})
	hc := newHTTPClient()
	var live, used, revoked wire.IssueResponse
	for _, c := range []struct {
		out  *wire.IssueResponse
		body string
	}{
		// A kind that keeps no last-used time: its lookups write nothing,
		// so the applied index must stand still.
		{&live, `{"kind":"oauth1_callback","subject":"fuzz"}`},
		{&used, `{"kind":"oauth2_code","subject":"fuzz"}`},
		{&revoked, `{"kind":"remember","subject":"fuzz","token":"brought-remember-1"}`},
	} {
		r, err := exchange(hc, http.MethodPost, n.API.URL, "/v1/tokens", "", []byte(c.body))
		if err != nil || r.Status != http.StatusCreated || json.Unmarshal(r.Body, c.out) != nil {
			f.Fatalf("issue %s: %v %s", c.body, err, r)
		}
	}
	for _, c := range []struct{ path, body string }{
		{"/v1/tokens/consume", `{"token":"` + used.Token + `"}`},
		{"/v1/tokens/revoke", `{"token":"` + revoked.Token + `","reason":"fuzz"}`},
	} {
		if r, err := exchange(hc, http.MethodPost, n.API.URL, c.path, "", []byte(c.body)); err != nil || r.Status != http.StatusOK {
			f.Fatalf("%s: %v %s", c.path, err, r)
		}
	}
	for _, seed := range []string{
		`{"token":"` + live.Token + `"}`,
		`{"token":"` + live.Token + `","consistency":"leader"}`,
		`{"token":"` + live.Token + `","consistency":"local","min_index":1}`,
		`{"token":"` + used.Token + `"}`,
		`{"token":"` + revoked.Token + `"}`,
		`{"token":"` + badChecksum(live.Token) + `"}`,
		`{"token":"tks_"}`, `{"token":"tks_at_"}`, `{"token":"never-issued"}`, `{"token":""}`,
		`{"token":"` + live.Token + `","consistency":"strong"}`, `{"token":"x","min_index":-1}`,
		`{"token":"x","kind":"access"}`, `{"token":7}`, `{"token":"x"} {}`,
		``, `{}`, `null`, `[]`, `{"token":`, `{"token":"\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		applied := n.AppliedIndex()
		r, err := exchange(hc, http.MethodPost, n.API.URL, "/v1/tokens/lookup", "", body)
		if err != nil {
			t.Fatal(err)
		}
		code, err := checkAnswer(r)
		if err != nil && !waitedForAFutureIndex(r, code, body, applied) {
			t.Fatal(err)
		}
		if r.Status < 300 {
			var rec wire.Record
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &rec) != nil || rec.ID != live.ID {
				t.Fatalf("%s: only the live token can be found, want its record %s", r, live.ID)
			}
		}
		if n.AppliedIndex() != applied {
			t.Fatalf("%s: a lookup moved the applied index from %d to %d", r, applied, n.AppliedIndex())
		}
	})
}

// waitedForAFutureIndex reports whether r is the contract's 503 for a
// min_index this replica has not applied: Retry-After, not a failure.
func waitedForAFutureIndex(r reply, code string, body []byte, applied uint64) bool {
	var req wire.LookupRequest
	return r.Status == http.StatusServiceUnavailable && code == wire.CodeReplicaBehind &&
		r.Header.Get("Retry-After") != "" && json.Unmarshal(body, &req) == nil && req.MinIndex > applied
}
