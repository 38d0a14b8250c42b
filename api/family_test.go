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

// The exchange race, one step at a time: the winner consumes the code, a
// loser's reuse revokes the family, then the winner issues into it. Its
// issues are refused 410 family_revoked, naming the token and the reason.
func TestIssueIntoFamilyRevokedByReuse(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	data := json.RawMessage(`{"redirect_uri":"https://app1.example/cb","scope":"read"}`)
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:42", ClientID: "app1", Scopes: []string{"read"}, Data: data})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: code.Token}), http.StatusOK, nil)

	// The loser, asking for the data: the 410 names the code, data and all.
	r := e.consume(t, wire.ConsumeRequest{Token: code.Token, WithData: true})
	eb := wantError(t, r, http.StatusGone, wire.CodeTokenReused)
	tok := eb.Token
	if tok == nil || tok.ID != code.ID || tok.Kind != "oauth2_code" || tok.Subject != "user:42" || tok.ClientID != "app1" ||
		tok.Family != code.Family || strings.Join(tok.Scopes, " ") != "read" || tok.InvalidatedAt == nil || tok.Reason != "consumed" ||
		tok.ExpiresAt == nil || string(tok.Data) != string(data) {
		t.Fatalf("%s: error.token %+v, want the code with its family, times, reason and data", r, tok)
	}
	noSecret(t, "token_reused", r.Body, code.Token, e.n.Hasher)
	// Without with_data, no data.
	if eb := wantError(t, e.consume(t, wire.ConsumeRequest{Token: code.Token}), http.StatusGone, wire.CodeTokenReused); eb.Token == nil || eb.Token.Data != nil {
		t.Fatalf("token_reused without with_data: token %+v, want it without data", eb.Token)
	}

	for _, req := range []wire.IssueRequest{
		{Kind: "oauth2_refresh", Subject: "user:42", ClientID: "app1", Family: code.Family},
		{Kind: "access", Subject: "user:42", ClientID: "app1", Family: code.Family, Scopes: []string{"read"}},
	} {
		r := e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, req))
		eb := wantError(t, r, http.StatusGone, wire.CodeFamilyRevoked)
		if !strings.Contains(eb.Message, "reuse of consumed oauth2_code "+code.ID) || eb.At == nil {
			t.Errorf("%s: message %q, want the family's reason and date", r, eb.Message)
		}
		if eb.Token == nil || eb.Token.Kind != req.Kind || eb.Token.Family != code.Family || eb.Token.Subject != "user:42" {
			t.Errorf("%s: error.token %+v, want the refused %s of family %s", r, eb.Token, req.Kind, code.Family)
		}
	}
}

func TestIssueIntoFamilyRevokedOnRequest(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	rt := e.issue(t, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1", Scopes: []string{"read"}})
	var out wire.BulkRevokeResponse
	wantJSON(t, e.do(t, http.MethodPost, "/v1/families/"+rt.Family+"/revoke", `{"reason":"user signed out"}`), http.StatusOK, &out)
	if out.Revoked != 1 {
		t.Fatalf("family revoke: %+v, want 1 revoked", out)
	}
	r := e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: rt.Family}))
	eb := wantError(t, r, http.StatusGone, wire.CodeFamilyRevoked)
	if !strings.Contains(eb.Message, "user signed out") {
		t.Errorf("%s: message %q, want the reason", r, eb.Message)
	}
	// The revoked refresh token itself answers token_revoked, naming itself.
	r = e.do(t, http.MethodPost, "/v1/tokens/rotate", mustJSON(t, wire.RotateRequest{Token: rt.Token}))
	if eb := wantError(t, r, http.StatusGone, wire.CodeTokenRevoked); eb.Token == nil || eb.Token.ID != rt.ID || eb.Token.Reason != "user signed out" {
		t.Errorf("%s: error.token %+v, want the refresh token with its reason", r, eb.Token)
	}
	// Another family is open.
	e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: "another"})
	if m := e.do(t, http.MethodGet, "/metrics", ""); !strings.Contains(string(m.Body), "\ntokenstore_revoked_families 1\n") {
		t.Errorf("/metrics lacks tokenstore_revoked_families 1")
	}
}

// A consumed token keeps its data until its own expiry, for lookups and
// consumes that ask for it; never after.
func TestConsumedDataUntilExpiry(t *testing.T) {
	t.Parallel()
	var clk readClock
	e := startEnv(t, testcluster.Options{Now: clk.Now, GCGrace: time.Hour})
	data := json.RawMessage(`{"callback":"https://consumer.example/cb"}`)
	out := e.issue(t, wire.IssueRequest{Kind: "oauth1_request", Subject: "user:9", TTL: "10m", Data: data})
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: out.Token}), http.StatusOK, nil)

	lookup := func(withData bool) wire.ErrorBody {
		t.Helper()
		r := e.do(t, http.MethodPost, "/v1/tokens/lookup", mustJSON(t, wire.LookupRequest{Token: out.Token, WithData: withData}))
		return wantError(t, r, http.StatusGone, wire.CodeTokenConsumed)
	}
	if eb := lookup(true); eb.Token == nil || string(eb.Token.Data) != string(data) || eb.Token.ID != out.ID {
		t.Fatalf("lookup with_data of a consumed token: token %+v, want its id and data", eb.Token)
	}
	if eb := lookup(false); eb.Token == nil || eb.Token.Data != nil {
		t.Fatalf("lookup without with_data: token %+v, want no data", eb.Token)
	}
	r := e.consume(t, wire.ConsumeRequest{Token: out.Token, WithData: true})
	if eb := wantError(t, r, http.StatusGone, wire.CodeTokenConsumed); eb.Token == nil || string(eb.Token.Data) != string(data) {
		t.Fatalf("%s: consume with_data: token %+v, want the data", r, eb.Token)
	}
	var got wire.Record
	wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens/"+out.ID, ""), http.StatusOK, &got)
	if got.Data != nil {
		t.Errorf("GET by id of a consumed token shows its data %s; want none", got.Data)
	}
	clk.Advance(11 * time.Minute)
	if eb := lookup(true); eb.Token == nil || eb.Token.Data != nil {
		t.Fatalf("lookup with_data past the token's expiry: token %+v, want no data", eb.Token)
	}
}
