package api_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// postForm sends an introspection form with an optional API key and
// returns the status and the raw body.
func postForm(t *testing.T, n *testcluster.Node, key string, form url.Values) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.API.URL+"/v1/introspect", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := checkedClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestIntrospectEveryState(t *testing.T) {
	const key = "0123456789abcdef0123"
	keys, err := api.ParseKeys([]byte("gateway:" + key))
	if err != nil {
		t.Fatal(err)
	}
	n := testcluster.Start(t, testcluster.Options{Keys: keys})
	c := client.New(n.API.URL, client.WithAPIKey(key))
	ctx := t.Context()
	issue := func(req wire.IssueRequest) *wire.IssueResponse {
		t.Helper()
		res, err := c.Issue(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	active := issue(wire.IssueRequest{Kind: "access", Subject: "user:42", ClientID: "app1", Scopes: []string{"read", "write"}, RLC: "gold", TTL: "1h"})
	forever := issue(wire.IssueRequest{Kind: "developer", Subject: "user:42"})
	consumed := issue(wire.IssueRequest{Kind: "oauth2_code", Subject: "user:42"})
	if _, err := c.Consume(ctx, wire.ConsumeRequest{Token: consumed.Token}); err != nil {
		t.Fatal(err)
	}
	revoked := issue(wire.IssueRequest{Kind: "access", Subject: "user:42"})
	if _, err := c.Revoke(ctx, revoked.Token, "logged out"); err != nil {
		t.Fatal(err)
	}
	expired := issue(wire.IssueRequest{Kind: "access", Subject: "user:42", TTL: "1ms"})
	waitForExpiry := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := c.Lookup(ctx, expired.Token, client.LookupOptions{}); errors.Is(err, client.ErrTokenExpired) {
			break
		}
		if time.Now().After(waitForExpiry) {
			t.Fatal("a 1ms token not expired after 10s")
		}
		<-time.After(5 * time.Millisecond)
	}

	status, hdr, body := postForm(t, n, key, url.Values{"token": {active.Token}, "token_type_hint": {"access_token"}})
	var got wire.IntrospectResponse
	if status != 200 || json.Unmarshal(body, &got) != nil {
		t.Fatalf("active token: want 200 and JSON, got %d %s", status, body)
	}
	want := wire.IntrospectResponse{Active: true, Subject: "user:42", ClientID: "app1", Scope: "read write",
		TokenType: "access", RLC: "gold", ID: active.ID, ExpiresAt: active.ExpiresAt.Unix(), IssuedAt: got.IssuedAt}
	if got != want || got.IssuedAt < time.Now().Add(-time.Minute).Unix() || got.IssuedAt > got.ExpiresAt {
		t.Fatalf("active token:\n got %+v\nwant %+v", got, want)
	}
	if hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("introspection answer: Cache-Control %q, want no-store", hdr.Get("Cache-Control"))
	}
	if strings.Contains(string(body), active.Token) {
		t.Fatal("the introspection answer carries the secret")
	}
	if r, err := c.Introspect(ctx, forever.Token); err != nil || !r.Active || r.ExpiresAt != 0 {
		t.Fatalf("token without expiry: want active with no exp, got %+v, %v", r, err)
	}

	inactive := map[string]string{
		"consumed":        consumed.Token,
		"revoked":         revoked.Token,
		"expired":         expired.Token,
		"unknown brought": "no-such-token",
		"bad checksum":    badChecksum(active.Token),
		"changed body":    strings.Replace(active.Token, active.Token[7:12], "AAAAA", 1),
		"not text":        "\x00\x01",
	}
	for what, tok := range inactive {
		status, _, body := postForm(t, n, key, url.Values{"token": {tok}})
		if status != 200 || strings.TrimSpace(string(body)) != `{"active":false}` {
			t.Errorf("%s: want exactly 200 {\"active\":false}, got %d %s", what, status, body)
		}
	}

	// The caller must be authenticated; a bad request is not an answer.
	if status, _, body := postForm(t, n, "", url.Values{"token": {active.Token}}); status != 401 || !strings.Contains(string(body), wire.CodeUnauthorized) {
		t.Errorf("no API key: want 401 unauthorized, got %d %s", status, body)
	}
	if status, _, body := postForm(t, n, key, url.Values{}); status != 400 || !strings.Contains(string(body), wire.CodeMissingField) {
		t.Errorf("no token field: want 400 missing_field, got %d %s", status, body)
	}
	req, _ := http.NewRequest(http.MethodPost, n.API.URL+"/v1/introspect", strings.NewReader(`{"token":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	if resp, err := checkedClient.Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("JSON body: want 415, got %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}
