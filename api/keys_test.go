package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// A body with a key twice, or a key in another case than the field's, is
// refused naming the key, and changes nothing: encoding/json alone would
// take the last of two keys and match keys regardless of case.
func TestBodiesWithADuplicateOrMiscasedKey(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	refresh := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:keys"})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:keys"})
	for _, tt := range []struct {
		name, path, body string
		key              string // the key the message names
	}{
		{"a subject twice", "/v1/tokens", `{"kind":"access","subject":"user:u2","subject":"user:u3"}`, `"subject"`},
		{"the kind upper-case", "/v1/tokens", `{"KIND":"access","subject":"user:u3"}`, `"KIND" must be spelled "kind"`},
		{"the subject capitalised", "/v1/tokens", `{"kind":"access","Subject":"user:u3"}`, `"Subject" must be spelled "subject"`},
		{"a field and its other case", "/v1/tokens", `{"kind":"access","subject":"user:u2","SUBJECT":"user:u3"}`, `"SUBJECT"`},
		{"a Kelvin sign for a k", "/v1/tokens", `{"\u212aind":"access","subject":"user:u3"}`, "must be spelled \"kind\""},
		{"the data twice", "/v1/tokens", `{"kind":"access","subject":"user:u3","data":{},"data":{"a":1}}`, `"data"`},
		{"scopes twice", "/v1/tokens", `{"kind":"access","subject":"user:u3","scopes":["a"],"scopes":["b"]}`, `"scopes"`},
		{"a nested key twice", "/v1/tokens/rotate", `{"token":"` + refresh.Token + `","access":{"scopes":["a"],"scopes":["b"]}}`, `"access.scopes"`},
		{"a nested key in another case", "/v1/tokens/rotate", `{"token":"` + refresh.Token + `","access":{"TTL":"1m"}}`, `"access.TTL" must be spelled "access.ttl"`},
		{"a consume's client twice", "/v1/tokens/consume", `{"token":"` + code.Token + `","client_id":"app1","client_id":"app2"}`, `"client_id"`},
		{"a token twice", "/v1/tokens/lookup", `{"token":"` + code.Token + `","token":"x"}`, `"token"`},
		{"a reason in another case", "/v1/subjects/user:keys/revoke", `{"Reason":"x"}`, `"Reason"`},
		{"a nonce twice", "/v1/nonces", `{"scope":"app","nonce":"n1","nonce":"n2","timestamp":1}`, `"nonce"`},
	} {
		r := e.do(t, http.MethodPost, tt.path, tt.body)
		body := wantError(t, r, http.StatusBadRequest, wire.CodeInvalidJSON)
		if !strings.Contains(body.Message, tt.key) {
			t.Errorf("%s: message %q does not name %s", tt.name, body.Message, tt.key)
		}
	}
	for _, subject := range []string{"user:u2", "user:u3"} {
		if recs, _ := e.listAll(t, subject, "", 10); len(recs) != 0 {
			t.Errorf("%s holds %d tokens after refused bodies, want none", subject, len(recs))
		}
	}
	// Nothing was consumed, rotated or revoked.
	for _, tok := range []string{refresh.Token, code.Token} {
		if rec := e.record(t, tok); rec.Status != "active" {
			t.Errorf("token %s is %s after refused bodies, want active", rec.ID, rec.Status)
		}
	}
	// A token's data is opaque: kept as sent, duplicate keys and all.
	data := `{"a":1,"a":2,"A":3}`
	out := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:keys", Data: []byte(data)})
	if rec := e.record(t, out.Token); string(rec.Data) != data {
		t.Errorf("data = %s, want %s as sent", rec.Data, data)
	}
}
