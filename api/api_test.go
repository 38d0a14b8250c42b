package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/token"
)

func TestIssueMintsEveryBuiltInKind(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	policy := token.DefaultPolicy()
	for _, kind := range policy.Names() {
		t.Run(kind, func(t *testing.T) {
			k := policy.Kinds[kind]
			before := time.Now()
			r := e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, wire.IssueRequest{Kind: kind, Subject: "minter"}))
			after := time.Now()
			var keys map[string]json.RawMessage
			wantJSON(t, r, http.StatusCreated, &keys)
			got := make([]string, 0, len(keys))
			for k := range keys {
				got = append(got, k)
			}
			sort.Strings(got)
			want := []string{"expires_at", "id", "index", "kind", "token"}
			if k.DetectReuse { // a grant starts its family
				want = []string{"expires_at", "family", "id", "index", "kind", "token"}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: keys %v, want %v", r, got, want)
			}
			var out wire.IssueResponse
			wantJSON(t, r, http.StatusCreated, &out)
			if prefix := "tks_" + k.Code + "_"; !strings.HasPrefix(out.Token, prefix) {
				t.Errorf("token %q, want prefix %q", out.Token, prefix)
			}
			if p, err := e.n.Format.Parse(out.Token); err != nil || !p.Minted || p.Kind != kind {
				t.Errorf("Parse(%q) = %+v, %v; want a minted %s", out.Token, p, err, kind)
			}
			if out.ID == "" || strings.Contains(out.Token, out.ID) {
				t.Errorf("id %q: want a non-empty id unrelated to the secret %q", out.ID, out.Token)
			}
			if out.Kind != kind {
				t.Errorf("kind %q, want %q", out.Kind, kind)
			}
			if out.Index == 0 || out.Index != indexOf(t, r) {
				t.Errorf("index %d, header %s %d: want the same non-zero log index", out.Index, wire.HeaderIndex, indexOf(t, r))
			}
			switch {
			case k.DefaultTTL == 0 && out.ExpiresAt != nil:
				t.Errorf("expires_at %v, want null for a kind that never expires", out.ExpiresAt)
			case k.DefaultTTL == 0:
			case out.ExpiresAt == nil:
				t.Errorf("expires_at null, want about now + %s", k.DefaultTTL)
			case out.ExpiresAt.Before(before.Add(k.DefaultTTL)) || out.ExpiresAt.After(after.Add(k.DefaultTTL)):
				t.Errorf("expires_at %v, want between %v and %v", out.ExpiresAt, before.Add(k.DefaultTTL), after.Add(k.DefaultTTL))
			case out.ExpiresAt.Location() != time.UTC:
				t.Errorf("expires_at %v, want UTC", out.ExpiresAt)
			}
			noSecret(t, "lookup", e.lookup(t, out.Token).Body, out.Token, e.n.Hasher)
		})
	}
}

func TestIssueLongestTTL(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	const century = 876000 * time.Hour
	before := time.Now()
	out := e.issue(t, wire.IssueRequest{Kind: "developer", Subject: "user:1", TTL: century.String()})
	if out.ExpiresAt == nil || out.ExpiresAt.Before(before.Add(century)) {
		t.Errorf("a developer token for %s expires at %v, want after %v", century, out.ExpiresAt, before.Add(century))
	}
	if rec := e.record(t, out.Token); rec.Status != "active" {
		t.Errorf("a developer token for a century is %s, want active", rec.Status)
	}
	r := e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, wire.IssueRequest{Kind: "developer", TTL: (century + time.Hour).String()}))
	wantError(t, r, http.StatusBadRequest, wire.CodeTTLTooLong)
}

func TestIssueBroughtTokenIsCreateIfAbsent(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	const brought = "legacy-oauth-code-8f3a2b"
	req := wire.IssueRequest{Kind: "oauth2_code", Subject: "user:7", ClientID: "app1", Token: brought}
	out := e.issue(t, req)
	if out.Token != brought {
		t.Errorf("token %q, want the brought %q back", out.Token, brought)
	}
	before := e.n.AppliedIndex()
	r := e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, req))
	wantError(t, r, http.StatusConflict, wire.CodeTokenExists)
	if indexOf(t, r) <= before {
		t.Errorf("409 answer reflects index %d, want past %d (the refused write)", indexOf(t, r), before)
	}
	rec := e.record(t, brought)
	if rec.ID != out.ID || rec.Subject != "user:7" {
		t.Errorf("lookup of the brought token = %+v, want the first issue (id %s, subject user:7)", rec, out.ID)
	}
	noSecret(t, "lookup", e.lookup(t, brought).Body, brought, e.n.Hasher)
}

func TestLookupShowsTheRecordButNeverTheSecret(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	req := wire.IssueRequest{
		Kind: "access", Subject: "user:42", ClientID: "app1", Scopes: []string{"read", "write"},
		TTL: "30m", Family: "grant-7", Data: json.RawMessage(`{"redirect_uri":"https://app1.example/cb"}`),
		RLC: "gold", IP: "198.51.100.7", UserAgent: "curl/8", Title: "laptop",
	}
	out := e.issue(t, req)
	for _, consistency := range []string{"", wire.ConsistencyLocal, wire.ConsistencyLeader} {
		body := mustJSON(t, wire.LookupRequest{Token: out.Token, Consistency: consistency, MinIndex: out.Index})
		r := e.do(t, http.MethodPost, "/v1/tokens/lookup", body)
		var rec wire.Record
		wantJSON(t, r, http.StatusOK, &rec)
		noSecret(t, "lookup", r.Body, out.Token, e.n.Hasher)
		if indexOf(t, r) < out.Index {
			t.Errorf("%s: index %d, want at least the issue's %d", r, indexOf(t, r), out.Index)
		}
		want := wire.Record{
			ID: out.ID, Kind: "access", Status: "active", Subject: "user:42", ClientID: "app1",
			Scopes: []string{"read", "write"}, Family: "grant-7", Data: req.Data, RLC: "gold",
			CreatedAt: rec.CreatedAt, ExpiresAt: out.ExpiresAt, IP: "198.51.100.7", UserAgent: "curl/8", Title: "laptop",
		}
		if rec.ExpiresAt == nil || !rec.ExpiresAt.Equal(*out.ExpiresAt) || !rec.ExpiresAt.Add(-30*time.Minute).Equal(rec.CreatedAt) {
			t.Errorf("created_at %v, expires_at %v; want expires_at %v, 30m after creation", rec.CreatedAt, rec.ExpiresAt, out.ExpiresAt)
		}
		want.ExpiresAt = rec.ExpiresAt
		if !reflect.DeepEqual(rec, want) {
			t.Errorf("consistency %q: lookup =\n%+v\nwant\n%+v", consistency, rec, want)
		}
	}
	// The other reads of the same token are just as discreet.
	for _, r := range []reply{
		e.do(t, http.MethodGet, "/v1/tokens/"+out.ID, ""),
		e.do(t, http.MethodGet, "/v1/tokens?subject=user:42", ""),
		e.do(t, http.MethodPost, "/v1/tokens/consume", mustJSON(t, wire.ConsumeRequest{Token: out.Token})),
		e.do(t, http.MethodPost, "/v1/tokens/revoke", mustJSON(t, wire.RevokeRequest{Token: out.Token})),
	} {
		if r.Status != http.StatusOK {
			t.Errorf("%s: want 200", r)
		}
		noSecret(t, r.Method+" "+r.Path, r.Body, out.Token, e.n.Hasher)
	}
}

func TestRevokeByTokenAndByID(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})

	t.Run("by token", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "remember", Subject: "user:1"})
		r := e.do(t, http.MethodPost, "/v1/tokens/revoke", mustJSON(t, wire.RevokeRequest{Token: out.Token, Reason: "signed out"}))
		var rec wire.Record
		wantJSON(t, r, http.StatusOK, &rec)
		if rec.ID != out.ID || rec.Status != "revoked" || rec.Reason != "signed out" || rec.InvalidatedAt == nil {
			t.Errorf("revoke answered %+v, want id %s revoked with reason \"signed out\" and invalidated_at", rec, out.ID)
		}
		if indexOf(t, r) <= out.Index {
			t.Errorf("%s: index %d, want past the issue's %d", r, indexOf(t, r), out.Index)
		}
		eb := wantError(t, e.lookup(t, out.Token), http.StatusGone, wire.CodeTokenRevoked)
		if rec.InvalidatedAt != nil && (eb.At == nil || !eb.At.Equal(*rec.InvalidatedAt)) {
			t.Errorf("at %v, want the revocation time %v", eb.At, rec.InvalidatedAt)
		}
		if !strings.Contains(eb.Message, "signed out") {
			t.Errorf("message %q, want the reason %q", eb.Message, "signed out")
		}
	})

	t.Run("by id", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "developer", Subject: "user:1", Title: "ci"})
		var rec wire.Record
		wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens/"+out.ID, ""), http.StatusOK, &rec)
		if rec.ID != out.ID || rec.Kind != "developer" || rec.Status != "active" || rec.Title != "ci" || rec.ExpiresAt != nil {
			t.Errorf("GET by id = %+v, want the active developer token %s titled ci, no expiry", rec, out.ID)
		}
		r := e.do(t, http.MethodDelete, "/v1/tokens/"+out.ID+"?reason="+url.QueryEscape("key leaked"), "")
		wantJSON(t, r, http.StatusOK, &rec)
		if rec.Status != "revoked" || rec.Reason != "key leaked" {
			t.Errorf("DELETE answered %+v, want revoked with reason \"key leaked\"", rec)
		}
		wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens/"+out.ID, ""), http.StatusOK, &rec)
		if rec.Status != "revoked" {
			t.Errorf("GET after DELETE: status %q, want revoked", rec.Status)
		}
		eb := wantError(t, e.lookup(t, out.Token), http.StatusGone, wire.CodeTokenRevoked)
		if !strings.Contains(eb.Message, "key leaked") {
			t.Errorf("message %q, want the reason", eb.Message)
		}
	})
}

func TestListPagesThroughASubject(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	ctx := context.Background()
	const subject = "user:list"
	want := map[string][]string{} // kind -> ids of the active tokens
	for i := 0; i < 12; i++ {
		kind := "access"
		if i%3 == 2 {
			kind = "remember"
		}
		out, err := e.n.Client.Issue(ctx, wire.IssueRequest{Kind: kind, Subject: subject, Data: json.RawMessage(`{"n":1}`)})
		if err != nil {
			t.Fatalf("issue %d: %v", i, err)
		}
		if i == 0 {
			if _, err := e.n.Client.Revoke(ctx, out.Token, "gone"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want[kind] = append(want[kind], out.ID)
	}
	e.issue(t, wire.IssueRequest{Kind: "access", Subject: subject + "x"}) // a neighbour in the index
	want[""] = append(append([]string(nil), want["access"]...), want["remember"]...)

	for _, c := range []struct {
		kind  string
		limit int
		pages int
	}{
		{"access", 3, 3}, {"access", 6, 2}, {"access", 7, 1}, {"access", 1000, 1}, {"remember", 2, 2}, {"", 4, 3}, {"", 1, 11},
	} {
		recs, pages := e.listAll(t, subject, c.kind, c.limit)
		seen := map[string]bool{}
		var ids []string
		for i, rec := range recs {
			if seen[rec.ID] {
				t.Errorf("kind %q limit %d: id %s listed twice", c.kind, c.limit, rec.ID)
			}
			seen[rec.ID] = true
			ids = append(ids, rec.ID)
			if i > 0 && recs[i-1].ID >= rec.ID {
				t.Errorf("kind %q limit %d: ids out of order: %s then %s", c.kind, c.limit, recs[i-1].ID, rec.ID)
			}
			if rec.Subject != subject || rec.Status != "active" || (c.kind != "" && rec.Kind != c.kind) {
				t.Errorf("kind %q: listed %+v, want only active %q tokens of %s", c.kind, rec, c.kind, subject)
			}
		}
		sort.Strings(ids)
		exp := append([]string(nil), want[c.kind]...)
		sort.Strings(exp)
		if !reflect.DeepEqual(ids, exp) {
			t.Errorf("kind %q limit %d: listed %v, want %v", c.kind, c.limit, ids, exp)
		}
		if pages != c.pages {
			t.Errorf("kind %q limit %d: %d pages, want %d", c.kind, c.limit, pages, c.pages)
		}
	}
	var page wire.ListResponse
	wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens?subject=nobody", ""), http.StatusOK, &page)
	if page.Tokens == nil || len(page.Tokens) != 0 || page.NextCursor != "" {
		t.Errorf("list of an unknown subject = %+v, want an empty array and no cursor", page)
	}
}

func TestBulkRevoke(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	revoked := func(t *testing.T, r reply) int {
		t.Helper()
		var keys map[string]json.RawMessage
		wantJSON(t, r, http.StatusOK, &keys)
		var n int
		if len(keys) != 1 || json.Unmarshal(keys["revoked"], &n) != nil {
			t.Fatalf("%s: want exactly {\"revoked\":N}", r)
		}
		return n
	}

	t.Run("subject", func(t *testing.T) {
		var access, remember []wire.IssueResponse
		for i := 0; i < 3; i++ {
			access = append(access, e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:42"}))
		}
		remember = append(remember, e.issue(t, wire.IssueRequest{Kind: "remember", Subject: "user:42"}))
		other := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:43"})

		r := e.do(t, http.MethodPost, "/v1/subjects/user:42/revoke", `{"kind":"access","reason":"password changed"}`)
		if n := revoked(t, r); n != 3 {
			t.Errorf("%s: revoked %d, want the 3 access tokens", r, n)
		}
		for _, a := range access {
			eb := wantError(t, e.lookup(t, a.Token), http.StatusGone, wire.CodeTokenRevoked)
			if !strings.Contains(eb.Message, "password changed") {
				t.Errorf("message %q, want the reason", eb.Message)
			}
		}
		if rec := e.record(t, remember[0].Token); rec.Status != "active" {
			t.Errorf("remember token %s after revoking kind access, want active", rec.Status)
		}
		r = e.do(t, http.MethodPost, "/v1/subjects/user:42/revoke", `{"reason":"logout everywhere"}`)
		if n := revoked(t, r); n != 1 {
			t.Errorf("%s: revoked %d, want the 1 remaining token", r, n)
		}
		wantError(t, e.lookup(t, remember[0].Token), http.StatusGone, wire.CodeTokenRevoked)
		if rec := e.record(t, other.Token); rec.Status != "active" {
			t.Errorf("another subject's token is %s, want active", rec.Status)
		}
		if n := revoked(t, e.do(t, http.MethodPost, "/v1/subjects/user:42/revoke", "")); n != 0 {
			t.Errorf("revoking again (empty body) revoked %d, want 0", n)
		}
		if recs, _ := e.listAll(t, "user:42", "", 100); len(recs) != 0 {
			t.Errorf("list after logout everywhere: %d tokens, want none", len(recs))
		}
	})

	t.Run("family", func(t *testing.T) {
		var chain []wire.IssueResponse
		for _, kind := range []string{"oauth2_code", "oauth2_refresh", "access"} {
			chain = append(chain, e.issue(t, wire.IssueRequest{Kind: kind, Subject: "user:9", Family: "grant-7"}))
		}
		other := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:9", Family: "grant-8"})
		r := e.do(t, http.MethodPost, "/v1/families/grant-7/revoke", `{"reason":"code reused"}`)
		if n := revoked(t, r); n != 3 {
			t.Errorf("%s: revoked %d, want the 3 tokens of grant-7", r, n)
		}
		for _, c := range chain {
			wantError(t, e.lookup(t, c.Token), http.StatusGone, wire.CodeTokenRevoked)
		}
		if rec := e.record(t, other.Token); rec.Status != "active" {
			t.Errorf("token of another family is %s, want active", rec.Status)
		}
		if n, err := e.n.Client.RevokeFamily(context.Background(), "grant-8", ""); err != nil || n != 1 {
			t.Errorf("client RevokeFamily(grant-8) = %d, %v; want 1, nil", n, err)
		}
	})
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	for _, c := range []struct{ path, status string }{{"/healthz", "ok"}, {"/readyz", "ready"}} {
		var body map[string]string
		wantJSON(t, e.do(t, http.MethodGet, c.path, ""), http.StatusOK, &body)
		if body["status"] != c.status {
			t.Errorf("%s: status %q, want %q", c.path, body["status"], c.status)
		}
	}
	if err := e.n.Client.Ready(context.Background()); err != nil {
		t.Errorf("client Ready: %v", err)
	}
	e.do(t, http.MethodGet, "/v1/nothing-here", "")
	r := e.do(t, http.MethodGet, "/metrics", "")
	if r.Status != http.StatusOK {
		t.Fatalf("%s: want 200", r)
	}
	for _, want := range []string{
		"tokenstore_http_requests_total",
		`tokenstore_http_requests_total{code="200",route="GET /healthz"}`,
		`code="404"`,
		"tokenstore_http_request_duration_seconds",
	} {
		if !bytes.Contains(r.Body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	const key = "0123456789abcdef0123"
	keys, err := api.ParseKeys([]byte("app:" + key))
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, testcluster.Options{Keys: keys})
	before := e.n.AppliedIndex()
	issue := mustJSON(t, wire.IssueRequest{Kind: "access", Subject: "keyed"})
	for _, c := range []struct{ name, auth string }{
		{"no key", ""},
		{"wrong key", "Bearer 0123456789abcdef0124"},
		{"key as another scheme", "Basic " + key},
		{"bare key", key},
		{"empty bearer", "Bearer "},
	} {
		for _, req := range []struct{ method, path, body string }{
			{http.MethodPost, "/v1/tokens", issue},
			{http.MethodPost, "/v1/tokens/lookup", `{"token":"whatever-token"}`},
			{http.MethodGet, "/v1/tokens?subject=keyed", ""},
			{http.MethodPost, "/v1/subjects/keyed/revoke", ""},
		} {
			hreq, err := http.NewRequest(req.method, e.n.API.URL+req.path, strings.NewReader(req.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.auth != "" {
				hreq.Header.Set("Authorization", c.auth)
			}
			resp, err := e.hc.Do(hreq)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r := reply{Method: req.method, Path: req.path + " (" + c.name + ")", Status: resp.StatusCode, Header: resp.Header, Body: b}
			if err := commonHeaders(r); err != nil {
				t.Error(err)
			}
			wantError(t, r, http.StatusUnauthorized, wire.CodeUnauthorized)
			if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", r, got)
			}
		}
	}
	if after := e.n.AppliedIndex(); after != before {
		t.Errorf("unauthenticated requests moved the applied index from %d to %d", before, after)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := e.do(t, http.MethodGet, path, ""); r.Status != http.StatusOK {
			t.Errorf("%s without a key: want 200 (open)", r)
		}
	}

	e.key = key
	out := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "keyed"})
	if rec := e.record(t, out.Token); rec.Generator != "app" {
		t.Errorf("generator %q, want the key's name %q", rec.Generator, "app")
	}
	var rec wire.Record
	wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens/"+out.ID, ""), http.StatusOK, &rec)
	if rec.Generator != "app" {
		t.Errorf("GET by id: generator %q, want %q", rec.Generator, "app")
	}
}
