package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// envoyClient talks to the node as Envoy's HTTP external authorization
// does: it never follows a redirect, any answer but 200 is a denial.
var envoyClient = &http.Client{
	Transport:     checked(http.DefaultTransport),
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// check sends an authorization check: the original request's method, its
// path under the node's prefix, and the headers given.
func check(t *testing.T, n *testcluster.Node, method, path string, hdr http.Header) reply {
	t.Helper()
	req, err := http.NewRequest(method, n.API.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := envoyClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return reply{Method: method, Path: path, Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// creds builds the headers of a request with an Authorization value and a
// session cookie (name=value), each only when not empty. The cookie rides
// among others, as a browser sends it.
func creds(authorization, cookieName, cookie string) http.Header {
	h := http.Header{}
	if authorization != "" {
		h.Set("Authorization", authorization)
	}
	if cookie != "" {
		h.Set("Cookie", "theme=dark; "+cookieName+"="+cookie+"; lang=en")
	}
	h.Set("X-Forwarded-For", "198.51.100.9, 10.0.0.1")
	h.Set("User-Agent", "browser/1")
	return h
}

// allowed is what a 200 must tell the upstream.
type allowed struct{ subject, rlc, clientID, tokenID string }

func wantAllowed(t *testing.T, r reply, want allowed) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Errorf("%s: want 200", r)
		return
	}
	if len(r.Body) != 0 {
		t.Errorf("%s: want an empty body", r)
	}
	// Each identity header is present, empty or not, so that Envoy
	// replaces a client-sent one of the same name.
	for h, v := range map[string]string{wire.HeaderSubject: want.subject, wire.HeaderRLC: want.rlc,
		wire.HeaderClientID: want.clientID, wire.HeaderTokenID: want.tokenID} {
		if got := r.Header.Values(h); len(got) != 1 || got[0] != v {
			t.Errorf("%s: %s %q, want exactly one, %q", r, h, got, v)
		}
	}
	if want.subject == "" || want.rlc == "" || want.tokenID == "" {
		t.Errorf("%s: an allowed answer must name a subject, a class and a token: %+v", r, want)
	}
	if err := commonHeaders(r); err != nil {
		t.Error(err)
	}
}

// wantDenied checks a 401 with a challenge and the one error shape.
func wantDenied(t *testing.T, r reply, code string) wire.ErrorBody {
	t.Helper()
	eb := wantError(t, r, http.StatusUnauthorized, code)
	if ch := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") {
		t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", r, ch)
	}
	for _, h := range []string{wire.HeaderSubject, wire.HeaderRLC, wire.HeaderTokenID} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("%s: a denial carries %s: %q", r, h, v)
		}
	}
	return eb
}

// TestEnvoyAuthz: the external authorization answers of every
// combination of bearer token and session cookie, and the rate-limit
// class each resolves to.
func TestEnvoyAuthz(t *testing.T) {
	t.Parallel()
	// A GC grace of an hour keeps the expired token around.
	e := startEnv(t, testcluster.Options{GCGrace: time.Hour})
	issue := func(kind, subject, rlc, ttl string) wire.IssueResponse {
		return e.issue(t, wire.IssueRequest{Kind: kind, Subject: subject, ClientID: "app-" + kind, RLC: rlc, TTL: ttl})
	}
	gold := issue("access", "user:1", "gold", "")
	plain := issue("access", "user:1", "", "")
	dev := issue("developer", "user:1", "dev", "")
	silver := issue("remember", "user:1", "silver", "")
	bare := issue("remember", "user:1", "", "")
	// Tokens without a subject name nobody.
	anonAccess := issue("access", "", "gold", "")
	anonDev := issue("developer", "", "dev", "")
	anonRemember := issue("remember", "", "silver", "")
	other := issue("remember", "user:2", "bronze", "")
	refresh := issue("oauth2_refresh", "user:1", "gold", "")
	revoked := issue("access", "user:1", "gold", "")
	wantJSON(t, e.do(t, http.MethodPost, "/v1/tokens/revoke", mustJSON(t, wire.RevokeRequest{Token: revoked.Token, Reason: "logout"})), http.StatusOK, nil)
	expired := issue("access", "user:1", "gold", "1s")
	unknown, err := e.n.Format.Mint("access")
	if err != nil {
		t.Fatal(err)
	}
	malformed := "tks_at_" + strings.Repeat("A", 40)
	eventually(t, 10*time.Second, "a 1s access token expires", func() (bool, string) {
		r := e.lookup(t, expired.Token)
		return codeOf(r) == wire.CodeTokenExpired, r.String()
	})

	const cookie = "tks_session"
	bearer := func(tok string) string { return "Bearer " + tok }
	as := func(r wire.IssueResponse, subject, rlc string) allowed {
		return allowed{subject: subject, rlc: rlc, clientID: "app-" + r.Kind, tokenID: r.ID}
	}
	type tc struct {
		name                  string
		authorization, cookie string
		want                  allowed // when code is ""
		code                  string
		says                  string // in the denial's message
	}
	cases := []tc{
		{name: "bearer with rlc", authorization: bearer(gold.Token), want: as(gold, "user:1", "gold")},
		{name: "bearer without rlc", authorization: bearer(plain.Token), want: as(plain, "user:1", "default")},
		{name: "developer bearer", authorization: bearer(dev.Token), want: as(dev, "user:1", "dev")},
		{name: "bearer scheme in lower case", authorization: "bearer " + gold.Token, want: as(gold, "user:1", "gold")},
		{name: "cookie with rlc", cookie: silver.Token, want: as(silver, "user:1", "silver")},
		{name: "cookie without rlc", cookie: bare.Token, want: as(bare, "user:1", "default")},
		{name: "access token in the cookie", cookie: gold.Token, want: as(gold, "user:1", "gold")},
		{name: "both with rlc: the bearer's", authorization: bearer(gold.Token), cookie: silver.Token, want: as(gold, "user:1", "gold")},
		{name: "both, only the cookie has an rlc", authorization: bearer(plain.Token), cookie: silver.Token, want: as(plain, "user:1", "silver")},
		{name: "both without rlc", authorization: bearer(plain.Token), cookie: bare.Token, want: as(plain, "user:1", "default")},
		{name: "Basic is not a bearer", authorization: "Basic dXNlcjpwYXNz", cookie: silver.Token, want: as(silver, "user:1", "silver")},

		{name: "different subjects", authorization: bearer(gold.Token), cookie: other.Token, code: wire.CodeCredentialConflict},
		{name: "neither", code: wire.CodeCredentialMissing},
		{name: "Basic alone", authorization: "Basic dXNlcjpwYXNz", code: wire.CodeCredentialMissing},
		{name: "empty bearer", authorization: "Bearer ", code: wire.CodeCredentialMissing},
		{name: "malformed bearer", authorization: bearer(malformed), code: wire.CodeCredentialInvalid, says: "malformed"},
		{name: "unknown bearer", authorization: bearer(unknown), code: wire.CodeCredentialInvalid, says: "not known"},
		{name: "expired bearer", authorization: bearer(expired.Token), code: wire.CodeCredentialInvalid, says: "expired"},
		{name: "revoked bearer", authorization: bearer(revoked.Token), code: wire.CodeCredentialInvalid, says: "revoked"},
		{name: "refresh token as bearer", authorization: bearer(refresh.Token), code: wire.CodeCredentialInvalid, says: "oauth2_refresh"},
		{name: "remember token as bearer", authorization: bearer(silver.Token), code: wire.CodeCredentialInvalid, says: "remember"},
		{name: "developer token in the cookie", cookie: dev.Token, code: wire.CodeCredentialInvalid, says: "developer"},
		{name: "expired cookie", cookie: expired.Token, code: wire.CodeCredentialInvalid, says: "expired"},
		{name: "valid bearer, revoked cookie", authorization: bearer(gold.Token), cookie: revoked.Token, code: wire.CodeCredentialInvalid, says: "revoked"},
		{name: "access bearer without subject", authorization: bearer(anonAccess.Token), code: wire.CodeCredentialInvalid, says: "no subject"},
		{name: "developer bearer without subject", authorization: bearer(anonDev.Token), code: wire.CodeCredentialInvalid, says: "no subject"},
		{name: "remember cookie without subject", cookie: anonRemember.Token, code: wire.CodeCredentialInvalid, says: "no subject"},
		{name: "access cookie without subject", cookie: anonAccess.Token, code: wire.CodeCredentialInvalid, says: "no subject"},
		{name: "valid bearer, cookie without subject", authorization: bearer(gold.Token), cookie: anonRemember.Token, code: wire.CodeCredentialInvalid, says: "no subject"},
		{name: "bearer without subject, valid cookie", authorization: bearer(anonAccess.Token), cookie: silver.Token, code: wire.CodeCredentialInvalid, says: "no subject"},
	}
	// An invalid bearer token is refused also next to a valid cookie.
	for _, bad := range []struct{ what, tok, says string }{
		{"malformed", malformed, "malformed"}, {"unknown", unknown, "not known"},
		{"expired", expired.Token, "expired"}, {"revoked", revoked.Token, "revoked"}, {"refresh", refresh.Token, "oauth2_refresh"},
	} {
		cases = append(cases, tc{name: bad.what + " bearer, valid cookie", authorization: bearer(bad.tok), cookie: silver.Token,
			code: wire.CodeCredentialInvalid, says: bad.says})
	}
	methods := []string{http.MethodGet, http.MethodPost, http.MethodDelete}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Envoy forwards the original method; the answer does not depend on it.
			method := methods[i%len(methods)]
			r := check(t, e.n, method, api.AuthzPrefix+"/api/v2/items?page=2", creds(c.authorization, cookie, c.cookie))
			for _, tok := range []string{strings.TrimPrefix(c.authorization, "Bearer "), c.cookie} {
				if !strings.HasPrefix(tok, "tks_") {
					continue
				}
				var shown strings.Builder
				shown.Write(r.Body)
				for _, vs := range r.Header {
					shown.WriteString(strings.Join(vs, " "))
				}
				if strings.Contains(shown.String(), tok) {
					t.Errorf("%s: the answer shows a presented secret", r)
				}
			}
			if c.code == "" {
				wantAllowed(t, r, c.want)
				return
			}
			if eb := wantDenied(t, r, c.code); c.says != "" && !strings.Contains(eb.Message, c.says) {
				t.Errorf("%s: the message %q does not say %q", r, eb.Message, c.says)
			}
		})
	}

	t.Run("conflict is logged", func(t *testing.T) {
		check(t, e.n, http.MethodPut, api.AuthzPrefix+"/conflict/here", creds(bearer(gold.Token), cookie, other.Token))
		var line string
		for _, l := range strings.Split(e.n.Logs.String(), "\n") {
			if strings.Contains(l, "different subjects") && strings.Contains(l, "/conflict/here") {
				line = l
			}
		}
		if line == "" || !strings.Contains(line, gold.ID) || !strings.Contains(line, other.ID) {
			t.Errorf("want a log line of the conflict on /conflict/here naming both token ids %s and %s; got %q", gold.ID, other.ID, line)
		}
		for _, tok := range []string{gold.Token, other.Token} {
			hidden(t, "the node's log", []byte(e.n.Logs.String()), tok, e.n.Hasher)
		}
	})

	t.Run("client-sent identity headers are overridden", func(t *testing.T) {
		// A token without a client id still answers the header, empty.
		noClient := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:3"})
		forged := map[string]string{wire.HeaderSubject: "user:admin", wire.HeaderClientID: "admin-console",
			wire.HeaderRLC: "unlimited", wire.HeaderTokenID: "forged-id"}
		for _, c := range []struct {
			tok  wire.IssueResponse
			want allowed
		}{
			{noClient, allowed{subject: "user:3", rlc: "default", tokenID: noClient.ID}},
			{plain, as(plain, "user:1", "default")},
		} {
			h := creds(bearer(c.tok.Token), cookie, "")
			for k, v := range forged {
				h.Set(k, v)
			}
			wantAllowed(t, check(t, e.n, http.MethodGet, api.AuthzPrefix+"/api/items", h), c.want)
		}
	})

	t.Run("every method", func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
			r := check(t, e.n, m, api.AuthzPrefix+"/x", creds(bearer(gold.Token), cookie, ""))
			if r.Status != http.StatusOK || r.Header.Get(wire.HeaderRLC) != "gold" {
				t.Errorf("%s: want 200 with rlc gold", r)
			}
		}
	})

	t.Run("path as Envoy sends it", func(t *testing.T) {
		// Envoy's HTTP service prepends path_prefix to the original path,
		// which starts with "/": with AuthzPrefix as the prefix, the
		// check for GET /api/v2/items arrives as AuthzPrefix+"/api/v2/items".
		// Neither an original path that is not clean nor a prefix
		// configured with a trailing slash may turn the check into a
		// redirect, which Envoy would take for a denial.
		for _, prefix := range []string{api.AuthzPrefix, api.AuthzPrefix + "/"} {
			for _, orig := range []string{"/api/v2/items", "/", "/a/b?c=d", "/a//b/../c", "/%2e%2e/x"} {
				r := check(t, e.n, http.MethodGet, prefix+orig, creds(bearer(gold.Token), cookie, ""))
				if r.Status != http.StatusOK {
					t.Errorf("Envoy's check of GET %s with path_prefix %q: %d (Location %q), want 200 with the subject",
						orig, prefix, r.Status, r.Header.Get("Location"))
					continue
				}
				wantAllowed(t, r, as(gold, "user:1", "gold"))
			}
		}
	})

	t.Run("configuration", func(t *testing.T) {
		n := startEnv(t, testcluster.Options{Authz: api.AuthzConfig{Cookie: "sid", DefaultRLC: "free",
			BearerKinds: []string{"access"}, CookieKinds: []string{"remember"}}})
		at := n.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:9", ClientID: "web"})
		rm := n.issue(t, wire.IssueRequest{Kind: "remember", Subject: "user:9", ClientID: "web", RLC: "plus"})
		dv := n.issue(t, wire.IssueRequest{Kind: "developer", Subject: "user:9"})
		wantAllowed(t, check(t, n.n, http.MethodGet, api.AuthzPrefix+"/p", creds(bearer(at.Token), "sid", "")),
			allowed{subject: "user:9", rlc: "free", clientID: "web", tokenID: at.ID})
		wantAllowed(t, check(t, n.n, http.MethodPost, api.AuthzPrefix+"/p", creds("", "sid", rm.Token)),
			allowed{subject: "user:9", rlc: "plus", clientID: "web", tokenID: rm.ID})
		wantAllowed(t, check(t, n.n, http.MethodGet, api.AuthzPrefix+"/p", creds(bearer(at.Token), "sid", rm.Token)),
			allowed{subject: "user:9", rlc: "plus", clientID: "web", tokenID: at.ID})
		// The default cookie name means nothing here.
		wantDenied(t, check(t, n.n, http.MethodGet, api.AuthzPrefix+"/p", creds("", "tks_session", rm.Token)), wire.CodeCredentialMissing)
		// Kinds the configuration leaves out.
		wantDenied(t, check(t, n.n, http.MethodGet, api.AuthzPrefix+"/p", creds(bearer(dv.Token), "sid", "")), wire.CodeCredentialInvalid)
		wantDenied(t, check(t, n.n, http.MethodGet, api.AuthzPrefix+"/p", creds("", "sid", at.Token)), wire.CodeCredentialInvalid)
	})
}

// TestEnvoyAuthzCallerKey: with API keys, the external authorization
// takes the caller's key from X-Tokenstore-Key (Authorization is the end
// user's there); the other routes keep taking it from Authorization.
func TestEnvoyAuthzCallerKey(t *testing.T) {
	t.Parallel()
	const key = "envoy-key-0123456789abcdef"
	keys, err := api.ParseKeys([]byte("envoy:" + key))
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, testcluster.Options{Keys: keys})
	e.key = key
	at := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:k", ClientID: "app1", RLC: "gold"})
	rm := e.issue(t, wire.IssueRequest{Kind: "remember", Subject: "user:k", ClientID: "app1"})
	with := func(h http.Header, k string) http.Header {
		h.Set(wire.HeaderAPIKey, k)
		return h
	}
	path := api.AuthzPrefix + "/api/items"

	unauthorized := func(what string, r reply) {
		t.Helper()
		eb := wantError(t, r, http.StatusUnauthorized, wire.CodeUnauthorized)
		if !strings.Contains(eb.Message, wire.HeaderAPIKey) {
			t.Errorf("%s: %s: the message does not say where the key goes", what, r)
		}
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %s: no WWW-Authenticate", what, r)
		}
	}
	unauthorized("no key, a valid user bearer token", check(t, e.n, http.MethodGet, path, creds("Bearer "+at.Token, "tks_session", "")))
	unauthorized("no key, a valid cookie", check(t, e.n, http.MethodPost, path, creds("", "tks_session", rm.Token)))
	unauthorized("the key as Authorization: Bearer", check(t, e.n, http.MethodGet, path, creds("Bearer "+key, "tks_session", rm.Token)))
	unauthorized("a wrong key", check(t, e.n, http.MethodGet, path, with(creds("Bearer "+at.Token, "", ""), key+"x")))
	unauthorized("an empty key", check(t, e.n, http.MethodGet, path, with(creds("Bearer "+at.Token, "", ""), "")))

	wantAllowed(t, check(t, e.n, http.MethodGet, path, with(creds("Bearer "+at.Token, "", ""), key)),
		allowed{subject: "user:k", rlc: "gold", clientID: "app1", tokenID: at.ID})
	wantAllowed(t, check(t, e.n, http.MethodPost, path, with(creds("Bearer "+at.Token, "tks_session", rm.Token), key)),
		allowed{subject: "user:k", rlc: "gold", clientID: "app1", tokenID: at.ID})
	wantDenied(t, check(t, e.n, http.MethodGet, path, with(creds("", "", ""), key)), wire.CodeCredentialMissing)
	wantDenied(t, check(t, e.n, http.MethodGet, path, with(creds("Bearer "+key, "", ""), key)), wire.CodeCredentialInvalid)

	// The /v1 routes: the key in Authorization: Bearer, not in X-Tokenstore-Key.
	if rec := e.record(t, at.Token); rec.ID != at.ID {
		t.Errorf("lookup with the key as bearer: %+v, want %s", rec, at.ID)
	}
	for what, h := range map[string]http.Header{
		"key in X-Tokenstore-Key": {wire.HeaderAPIKey: {key}, "Content-Type": {"application/json"}},
		"no key":                  {"Content-Type": {"application/json"}},
	} {
		req, err := http.NewRequest(http.MethodPost, e.n.API.URL+"/v1/tokens/lookup", strings.NewReader(mustJSON(t, wire.LookupRequest{Token: at.Token})))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = h
		resp, err := e.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := reply{Method: req.Method, Path: "/v1/tokens/lookup", Status: resp.StatusCode, Header: resp.Header, Body: b}
		eb := wantError(t, r, http.StatusUnauthorized, wire.CodeUnauthorized)
		if !strings.Contains(eb.Message, "Authorization") {
			t.Errorf("%s: %s: the message does not say the key goes in Authorization", what, r)
		}
	}
}

// TestEnvoyAuthzTrustedProxies: the recorded last-use IP is the entry of
// X-Forwarded-For that the outermost trusted proxy appended, never one the
// client put to its left.
func TestEnvoyAuthzTrustedProxies(t *testing.T) {
	t.Parallel()
	const xff = "203.0.113.66, 198.51.100.9, 10.0.0.1"
	for _, c := range []struct {
		name    string
		trusted *int
		fields  []string
		want    string // "" for no address recorded
	}{
		{name: "default: one proxy", fields: []string{xff}, want: "10.0.0.1"},
		{name: "two proxies", trusted: ptr(2), fields: []string{xff}, want: "198.51.100.9"},
		{name: "two proxies, repeated fields", trusted: ptr(2), fields: []string{"203.0.113.66", "198.51.100.9,10.0.0.1"}, want: "198.51.100.9"},
		{name: "three proxies", trusted: ptr(3), fields: []string{xff}, want: "203.0.113.66"},
		{name: "fewer entries than proxies", trusted: ptr(4), fields: []string{xff}},
		{name: "none trusted", trusted: ptr(0), fields: []string{xff}},
		{name: "not an address", trusted: ptr(2), fields: []string{"10.0.0.7, unknown, 10.0.0.1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := startEnv(t, testcluster.Options{Authz: api.AuthzConfig{TrustedProxies: c.trusted}})
			at := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:p", ClientID: "web"})
			h := creds("Bearer "+at.Token, "", "")
			h.Del("X-Forwarded-For")
			for _, f := range c.fields {
				h.Add("X-Forwarded-For", f)
			}
			wantAllowed(t, check(t, e.n, http.MethodGet, api.AuthzPrefix+"/x", h),
				allowed{subject: "user:p", rlc: "default", clientID: "web", tokenID: at.ID})
			// The use is written within a second or so; read the replica
			// directly, since a lookup would be a use of its own.
			eventually(t, 10*time.Second, "the authorization's use is recorded", func() (bool, string) {
				rec, _, err := e.n.ReadRecord(context.Background(), e.n.Hasher.Sum(at.Token), cluster.Local, 0, 0)
				if err != nil || rec == nil {
					return false, "read: " + errString(err)
				}
				if rec.LastUsedAt == 0 {
					return false, "no use recorded yet"
				}
				return rec.IP == c.want, "recorded IP " + rec.IP + ", want " + c.want
			})
		})
	}
}

func ptr(n int) *int { return &n }

func errString(err error) string {
	if err == nil {
		return "no record"
	}
	return err.Error()
}
