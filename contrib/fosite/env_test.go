package fositestore_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/storage"
	"github.com/ory/fosite/token/jwt"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/client"
	fositestore "github.com/tokenstore/tokenstore/contrib/fosite"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

const (
	clientID     = "app1"
	clientSecret = "app1-secret-of-the-tests"
	redirectURL  = "http://localhost/cb"
	subject      = "user:42"
)

// env is a fosite server on a 3-node tokenstore cluster: its authorize
// endpoint keeps its state through node 0, its token endpoints through
// nodes 1 and 2 (/token, /token2), introspection and revocation through
// node 2, each endpoint with a Store and a provider of its own, as
// servers in different places would be.
type env struct {
	t       *testing.T
	cluster *testcluster.Cluster
	srv     *httptest.Server
	key     *rsa.PrivateKey
	conf    *oauth2.Config
	hc      *http.Client // follows no redirects

	mu      sync.Mutex
	secrets []string // every code and token the server gave out
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func newEnv(t *testing.T, configure ...func(*fosite.Config)) *env {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	e := &env{t: t, key: rsaKey, hc: &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	e.cluster = testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})

	hash, err := bcrypt.GenerateFromPassword([]byte(clientSecret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	clients := storage.NewMemoryStore()
	clients.Clients[clientID] = &fosite.DefaultClient{
		ID: clientID, Secret: hash, RedirectURIs: []string{redirectURL},
		GrantTypes:    []string{"authorization_code", "refresh_token"},
		ResponseTypes: []string{"code"},
		Scopes:        []string{"openid", "offline", "read", "write"},
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	provider := func(node int) (fosite.OAuth2Provider, *fositestore.Store) {
		cfg := &fosite.Config{
			AccessTokenLifespan:        time.Hour,
			AuthorizeCodeLifespan:      10 * time.Minute,
			RefreshTokenLifespan:       24 * time.Hour,
			IDTokenLifespan:            time.Hour,
			IDTokenIssuer:              "https://issuer.example",
			GlobalSecret:               secret,
			EnforcePKCE:                true,
			SendDebugMessagesToClients: true,
			// fosite sets these on first use when they are nil, a data
			// race between concurrent requests: set them up front.
			ScopeStrategy:            fosite.WildcardScopeStrategy,
			AudienceMatchingStrategy: fosite.DefaultAudienceMatchingStrategy,
			JWKSFetcherStrategy:      fosite.NewDefaultJWKSFetcherStrategy(),
		}
		cfg.ClientSecretsHasher = &fosite.BCrypt{Config: cfg}
		for _, f := range configure {
			f(cfg)
		}
		keyGetter := func(context.Context) (interface{}, error) { return e.key, nil }
		st := fositestore.New(client.New(e.cluster.Node(node).API.URL), clients)
		strategy := &compose.CommonStrategy{
			CoreStrategy:               compose.NewOAuth2HMACStrategy(cfg),
			OpenIDConnectTokenStrategy: compose.NewOpenIDConnectStrategy(keyGetter, cfg),
			Signer:                     &jwt.DefaultSigner{GetPrivateKey: keyGetter},
		}
		return compose.Compose(cfg, st, strategy,
			compose.OAuth2AuthorizeExplicitFactory,
			compose.OAuth2RefreshTokenGrantFactory,
			compose.OpenIDConnectExplicitFactory,
			compose.OpenIDConnectRefreshFactory,
			compose.OAuth2TokenIntrospectionFactory,
			compose.OAuth2TokenRevocationFactory,
			compose.OAuth2PKCEFactory,
		), st
	}
	authz, _ := provider(0)
	token1, _ := provider(1)
	token2, _ := provider(2)

	mux := http.NewServeMux()
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ar, err := authz.NewAuthorizeRequest(ctx, r)
		if err != nil {
			authz.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		for _, s := range ar.GetRequestedScopes() {
			ar.GrantScope(s)
		}
		resp, err := authz.NewAuthorizeResponse(ctx, ar, newSession())
		if err != nil {
			authz.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		authz.WriteAuthorizeResponse(ctx, w, ar, resp)
	})
	tokenEndpoint := func(p fosite.OAuth2Provider) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			ar, err := p.NewAccessRequest(ctx, r, &openid.DefaultSession{})
			if err != nil {
				p.WriteAccessError(ctx, w, ar, fositestore.TokenEndpointError(err))
				return
			}
			resp, err := p.NewAccessResponse(ctx, ar)
			if err != nil {
				p.WriteAccessError(ctx, w, ar, fositestore.TokenEndpointError(err))
				return
			}
			p.WriteAccessResponse(ctx, w, ar, resp)
		}
	}
	mux.HandleFunc("/token", tokenEndpoint(token1))
	mux.HandleFunc("/token2", tokenEndpoint(token2))
	mux.HandleFunc("/introspect", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ir, err := token2.NewIntrospectionRequest(ctx, r, &openid.DefaultSession{})
		if err != nil {
			token2.WriteIntrospectionError(ctx, w, err)
			return
		}
		token2.WriteIntrospectionResponse(ctx, w, ir)
	})
	mux.HandleFunc("/revoke", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		token2.WriteRevocationResponse(ctx, w, token2.NewRevocationRequest(ctx, r))
	})
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	e.conf = e.config("/token")
	return e
}

// config is the OAuth client's view of the server, with the token
// endpoint at path.
func (e *env) config(path string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID, ClientSecret: clientSecret, RedirectURL: redirectURL,
		Scopes: []string{"openid", "offline", "read"},
		Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + "/auth", TokenURL: e.srv.URL + path,
			AuthStyle: oauth2.AuthStyleInHeader},
	}
}

func newSession() *openid.DefaultSession {
	now := time.Now().UTC()
	return &openid.DefaultSession{
		Claims: &jwt.IDTokenClaims{Subject: subject, AuthTime: now, RequestedAt: now,
			Extra: map[string]interface{}{"name": "Ada Lovelace", "email": "ada@example.org"}},
		Headers: &jwt.Headers{Extra: map[string]interface{}{"kid": "test"}},
		Subject: subject,
	}
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	e.t.Cleanup(cancel)
	return context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: 30 * time.Second})
}

func (e *env) remember(s ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, v := range s {
		if v != "" {
			e.secrets = append(e.secrets, v)
		}
	}
}

// authorize runs the authorize endpoint for conf's scopes (and extra
// options) and returns the code and the PKCE verifier.
func (e *env) authorize(conf *oauth2.Config, opts ...oauth2.AuthCodeOption) (code, verifier string) {
	e.t.Helper()
	verifier = oauth2.GenerateVerifier()
	state := "state-" + oauth2.GenerateVerifier()[:16]
	opts = append(opts, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "nonce-"+state))
	resp, err := e.hc.Get(conf.AuthCodeURL(state, opts...))
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("authorize: %d, want a redirect", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	q := loc.Query()
	if q.Get("error") != "" {
		e.t.Fatalf("authorize: %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != state {
		e.t.Fatalf("authorize: state %q, want %q", q.Get("state"), state)
	}
	code = q.Get("code")
	if code == "" {
		e.t.Fatalf("authorize: no code in %s", loc)
	}
	e.remember(code)
	return code, verifier
}

// exchange exchanges a code at conf's token endpoint.
func (e *env) exchange(conf *oauth2.Config, code, verifier string) (*oauth2.Token, error) {
	tok, err := conf.Exchange(e.ctx(), code, oauth2.VerifierOption(verifier))
	if err == nil {
		e.remember(tok.AccessToken, tok.RefreshToken)
		if id, ok := tok.Extra("id_token").(string); ok {
			e.remember(id)
		}
	}
	return tok, err
}

// refresh refreshes with a refresh token.
func (e *env) refresh(conf *oauth2.Config, refreshToken string) (*oauth2.Token, error) {
	tok, err := conf.TokenSource(e.ctx(), &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Now().Add(-time.Minute)}).Token()
	if err == nil {
		e.remember(tok.AccessToken, tok.RefreshToken)
	}
	return tok, err
}

// oauthError is the status and OAuth error code of a failed token request.
func oauthError(t *testing.T, err error) (int, string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("error %v is not an OAuth error answer", err)
	}
	return re.Response.StatusCode, re.ErrorCode
}

func wantOAuthError(t *testing.T, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %d %s", status, code)
	}
	if s, c := oauthError(t, err); s != status || c != code {
		t.Fatalf("answer %d %s (%v), want %d %s", s, c, err, status, code)
	}
}

// introspection is what fosite's RFC 7662 endpoint answers.
type introspection struct {
	Active    bool   `json:"active"`
	Subject   string `json:"sub"`
	ClientID  string `json:"client_id"`
	Scope     string `json:"scope"`
	TokenType string `json:"token_use"`
}

func (e *env) introspect(token string) introspection {
	e.t.Helper()
	var out introspection
	status := e.postForm("/introspect", url.Values{"token": {token}}, &out)
	if status != http.StatusOK {
		e.t.Fatalf("introspect: %d", status)
	}
	return out
}

func (e *env) wantActive(token string, active bool) {
	e.t.Helper()
	if got := e.introspect(token); got.Active != active {
		e.t.Fatalf("introspection of a token: active %v, want %v", got.Active, active)
	}
}

// revoke asks fosite's RFC 7009 endpoint to revoke a token.
func (e *env) revoke(token, hint string) int {
	e.t.Helper()
	return e.postForm("/revoke", url.Values{"token": {token}, "token_type_hint": {hint}}, nil)
}

func (e *env) postForm(path string, form url.Values, out any) int {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			e.t.Fatal(fmt.Errorf("%s: %w", path, err))
		}
	}
	return resp.StatusCode
}
