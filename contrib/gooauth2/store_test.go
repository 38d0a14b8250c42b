package gooauth2_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	oauth2srv "github.com/go-oauth2/oauth2/v4"
	oautherrors "github.com/go-oauth2/oauth2/v4/errors"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/contrib/gooauth2"
	"github.com/tokenstore/tokenstore/internal/intercept"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

const (
	clientID     = "app1"
	clientSecret = "app1-secret"
	redirectURI  = "https://app1.example/cb"
)

// env is a go-oauth2 server whose authorize, token and resource endpoints
// each keep their tokens through another node of a 3-node cluster.
type env struct {
	cluster *testcluster.Cluster
	ts      *httptest.Server
	conf    *oauth2.Config
	hc      *http.Client // the OAuth client's, following no redirect
	mu      sync.Mutex
	user    string // the user the next authorization is for
	// secrets is every code, access and refresh token string handed out.
	secrets []string
	// tokenStore is the token endpoint's store.
	tokenStore *gooauth2.TokenStore
	clients    *store.ClientStore
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The built-in policy: the adapter needs no kind of its own.
	var o testcluster.Options
	c := testcluster.StartCluster(t, o, o, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	clients := store.NewClientStore()
	if err := clients.Set(clientID, &models.Client{ID: clientID, Secret: clientSecret, Domain: "https://app1.example"}); err != nil {
		t.Fatal(err)
	}
	e := &env{cluster: c, user: "user:42", clients: clients}
	newServer := func(ts *gooauth2.TokenStore) *server.Server {
		m := manage.NewDefaultManager()
		m.MapClientStorage(clients)
		m.MapTokenStorage(ts)
		srv := server.NewDefaultServer(m)
		srv.Config.ForcePKCE = true
		srv.SetResponseErrorHandler(gooauth2.RFC6749Status)
		srv.SetUserAuthorizationHandler(func(w http.ResponseWriter, r *http.Request) (string, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.user, nil
		})
		srv.SetInternalErrorHandler(func(err error) *oautherrors.Response {
			t.Logf("go-oauth2 internal error: %v", err)
			return nil
		})
		return srv
	}
	authorize := newServer(gooauth2.NewTokenStore(c.Node(0).Client))
	e.tokenStore = gooauth2.NewTokenStore(c.Node(1).Client)
	tokens := newServer(e.tokenStore)
	resource := newServer(gooauth2.NewTokenStore(c.Node(2).Client, gooauth2.WithAccessConsistency(wire.ConsistencyLeader)))
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		if err := authorize.HandleAuthorizeRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		_ = tokens.HandleTokenRequest(w, r)
	})
	mux.HandleFunc("/resource", func(w http.ResponseWriter, r *http.Request) {
		ti, err := resource.ValidationBearerToken(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, ti.GetUserID())
	})
	e.ts = httptest.NewServer(mux)
	t.Cleanup(e.ts.Close)
	e.conf = &oauth2.Config{
		ClientID: clientID, ClientSecret: clientSecret, RedirectURL: redirectURI, Scopes: []string{"read", "write"},
		Endpoint: oauth2.Endpoint{AuthURL: e.ts.URL + "/authorize", TokenURL: e.ts.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
	e.hc = &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return e
}

func (e *env) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return context.WithValue(ctx, oauth2.HTTPClient, e.hc)
}

// managerRefresh refreshes with refresh as go-oauth2's manager does (the
// token endpoint's calls: GetByRefresh, Create, RemoveByAccess,
// RemoveByRefresh), on ts.
func (e *env) managerRefresh(t *testing.T, ts *gooauth2.TokenStore, refresh string) (oauth2srv.TokenInfo, error) {
	m := manage.NewDefaultManager()
	m.MapClientStorage(e.clients)
	m.MapTokenStorage(ts)
	ti, err := m.RefreshAccessToken(e.ctx(t), &oauth2srv.TokenGenerateRequest{ClientID: clientID, ClientSecret: clientSecret, Refresh: refresh})
	if err == nil {
		e.remember(ti.GetAccess(), ti.GetRefresh())
	}
	return ti, err
}

func (e *env) remember(secrets ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, secrets...)
}

// newPair is an access and refresh token pair for user, with ext, as
// go-oauth2's manager makes one for an exchange; its secrets are
// remembered.
func (e *env) newPair(user string, ext url.Values) *models.Token {
	tok := models.NewToken()
	tok.SetExtension(ext)
	tok.SetClientID(clientID)
	tok.SetUserID(user)
	tok.SetAccess(oauth2.GenerateVerifier())
	tok.SetAccessCreateAt(time.Now())
	tok.SetAccessExpiresIn(time.Hour)
	tok.SetRefresh(oauth2.GenerateVerifier())
	tok.SetRefreshCreateAt(time.Now())
	tok.SetRefreshExpiresIn(24 * time.Hour)
	e.remember(tok.GetAccess(), tok.GetRefresh())
	return tok
}

// authorize runs the authorization request for user with PKCE S256 and
// returns the code from the redirect.
func (e *env) authorize(t *testing.T, user, verifier string) string {
	t.Helper()
	e.mu.Lock()
	e.user = user
	e.mu.Unlock()
	resp, err := e.hc.Get(e.conf.AuthCodeURL("state-1", oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d %s, want 302", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != redirectURI {
		t.Fatalf("authorize redirected to %s, want %s", loc, redirectURI)
	}
	if s := loc.Query().Get("state"); s != "state-1" {
		t.Fatalf("authorize: state %q, want state-1", s)
	}
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("authorize: no code in %s", loc)
	}
	e.remember(code)
	return code
}

func (e *env) exchange(t *testing.T, code, verifier string) (*oauth2.Token, error) {
	tok, err := e.conf.Exchange(e.ctx(t), code, oauth2.VerifierOption(verifier))
	if err == nil {
		e.remember(tok.AccessToken, tok.RefreshToken)
	}
	return tok, err
}

func (e *env) refresh(t *testing.T, refresh string) (*oauth2.Token, error) {
	tok, err := e.conf.TokenSource(e.ctx(t), &oauth2.Token{RefreshToken: refresh, Expiry: time.Now().Add(-time.Hour)}).Token()
	if err == nil {
		e.remember(tok.AccessToken, tok.RefreshToken)
	}
	return tok, err
}

// grant runs authorization and exchange for user.
func (e *env) grant(t *testing.T, user string) *oauth2.Token {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	tok, err := e.exchange(t, e.authorize(t, user, verifier), verifier)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("exchange: %+v, want an access and a refresh token", tok)
	}
	return tok
}

// resource answers whether access is accepted at the resource endpoint,
// and for whom.
func (e *env) resource(t *testing.T, access string) (string, bool) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.ts.URL+"/resource", nil)
	req.Header.Set("Authorization", "Bearer "+access)
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body), resp.StatusCode == http.StatusOK
}

func (e *env) wantAccepted(t *testing.T, what, access, user string) {
	t.Helper()
	if got, ok := e.resource(t, access); !ok || got != user {
		t.Errorf("%s: resource answered %q, %v; want accepted for %s", what, got, ok, user)
	}
}

func (e *env) wantRefused(t *testing.T, what, access string) {
	t.Helper()
	if got, ok := e.resource(t, access); ok {
		t.Errorf("%s: resource accepted it for %q; want refused", what, got)
	}
}

// wantInvalidGrant checks that err is the token endpoint's invalid_grant,
// with status 400 (RFC 6749 §5.2).
func wantInvalidGrant(t *testing.T, what string, err error) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("%s: %v, want invalid_grant", what, err)
		return
	}
	if re.Response.StatusCode != http.StatusBadRequest {
		t.Errorf("%s: invalid_grant with status %d, want 400", what, re.Response.StatusCode)
	}
}

func TestGoOAuth2(t *testing.T) {
	e := newEnv(t)

	t.Run("AuthorizationCodePKCE", func(t *testing.T) {
		before := gooauth2.PendingCodes(e.tokenStore)
		verifier := oauth2.GenerateVerifier()
		code := e.authorize(t, "user:pkce", verifier)
		// The wrong verifier is refused. It does not spend the code:
		// go-oauth2 checks it after RemoveByCode, before Create, and the
		// code is consumed in Create's batch.
		_, err := e.exchange(t, code, oauth2.GenerateVerifier())
		wantInvalidGrant(t, "exchange with another verifier", err)
		// The code remembers its redirect URI.
		other := *e.conf
		other.RedirectURL = "https://app1.example/other"
		_, err = other.Exchange(e.ctx(t), code, oauth2.VerifierOption(verifier))
		wantInvalidGrant(t, "exchange with another redirect URI", err)
		tok, err := e.exchange(t, code, verifier)
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		// The exchange that consumed the code forgets it, though the
		// failed exchanges before it read it too.
		if n := gooauth2.PendingCodes(e.tokenStore); n != before || n < 0 {
			t.Errorf("%d codes pending after the exchange, %d before", n, before)
		}
		if tok.TokenType != "Bearer" || tok.Extra("scope") != "read write" {
			t.Errorf("token %+v scope %v, want a Bearer token for read write", tok, tok.Extra("scope"))
		}
		e.wantAccepted(t, "access token", tok.AccessToken, "user:pkce")
		e.wantRefused(t, "the code as an access token", code)
		e.wantRefused(t, "the refresh token as an access token", tok.RefreshToken)
	})

	t.Run("ClientCredentials", func(t *testing.T) {
		cc := clientcredentials.Config{ClientID: clientID, ClientSecret: clientSecret, TokenURL: e.conf.Endpoint.TokenURL}
		tok, err := cc.Token(e.ctx(t))
		if err != nil {
			t.Fatalf("client credentials: %v", err)
		}
		e.remember(tok.AccessToken)
		if tok.RefreshToken != "" {
			t.Errorf("client credentials answered a refresh token")
		}
		e.wantAccepted(t, "client credentials access token", tok.AccessToken, "")
	})

	t.Run("Refresh", func(t *testing.T) {
		first := e.grant(t, "user:refresh")
		next, err := e.refresh(t, first.RefreshToken)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if next.AccessToken == first.AccessToken || next.RefreshToken == first.RefreshToken || next.RefreshToken == "" {
			t.Fatalf("refresh answered %+v, want a new pair", next)
		}
		e.wantAccepted(t, "the new access token", next.AccessToken, "user:refresh")
		e.wantRefused(t, "the access token the refresh replaced", first.AccessToken)
		again, err := e.refresh(t, next.RefreshToken)
		if err != nil {
			t.Fatalf("second refresh: %v", err)
		}
		e.wantAccepted(t, "the third access token", again.AccessToken, "user:refresh")
	})

	t.Run("ReplayedCode", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := e.authorize(t, "user:replay", verifier)
		tok, err := e.exchange(t, code, verifier)
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		e.wantAccepted(t, "access token", tok.AccessToken, "user:replay")
		_, err = e.exchange(t, code, verifier)
		wantInvalidGrant(t, "replayed code", err)
		e.wantRefused(t, "the access token of a replayed code", tok.AccessToken)
		_, err = e.refresh(t, tok.RefreshToken)
		wantInvalidGrant(t, "the refresh token of a replayed code", err)
	})

	t.Run("ConcurrentExchanges", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := e.authorize(t, "user:race", verifier)
		const n = 16
		toks, errs := concurrently(n, func(int) (*oauth2.Token, error) { return e.exchange(t, code, verifier) })
		var won *oauth2.Token
		for i := range n {
			if errs[i] == nil {
				if won != nil {
					t.Errorf("exchange %d succeeded too", i)
				}
				won = toks[i]
				continue
			}
			wantInvalidGrant(t, fmt.Sprintf("exchange %d", i), errs[i])
		}
		if won == nil {
			t.Fatal("no exchange of the code succeeded")
		}
		// Every loser's consume of the code was a reuse: the grant is
		// revoked, the winner's pair with it (RFC 9700 §4.14).
		e.wantRefused(t, "the winner's access token after the race", won.AccessToken)
		_, err := e.refresh(t, won.RefreshToken)
		wantInvalidGrant(t, "the winner's refresh token after the race", err)
		_, err = e.exchange(t, code, verifier)
		wantInvalidGrant(t, "replay after the race", err)
	})

	t.Run("ReplayedRefresh", func(t *testing.T) {
		first := e.grant(t, "user:rt-replay")
		next, err := e.refresh(t, first.RefreshToken)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		_, err = e.refresh(t, first.RefreshToken)
		wantInvalidGrant(t, "replayed refresh token", err)
		// The newest pair dies with the family.
		e.wantRefused(t, "the newest access token", next.AccessToken)
		_, err = e.refresh(t, next.RefreshToken)
		wantInvalidGrant(t, "the newest refresh token", err)
		e.wantRefused(t, "the first access token", first.AccessToken)
	})

	t.Run("ConcurrentRefresh", func(t *testing.T) {
		first := e.grant(t, "user:rt-race")
		const n = 8
		toks, errs := concurrently(n, func(int) (*oauth2.Token, error) { return e.refresh(t, first.RefreshToken) })
		var won []*oauth2.Token
		for i := range n {
			if errs[i] == nil {
				won = append(won, toks[i])
				continue
			}
			wantInvalidGrant(t, fmt.Sprintf("refresh %d", i), errs[i])
		}
		// Each refresh is one batch that consumes the token: the first
		// to apply wins, every other is a reuse.
		if len(won) != 1 {
			t.Errorf("%d refreshes of one token succeeded, want exactly one", len(won))
		}
		// Every refresh after the first was a reuse: the family is
		// revoked, the winner's pair with it (RFC 9700 §4.14).
		for _, tok := range append(won, first) {
			e.wantRefused(t, "an access token of the raced grant", tok.AccessToken)
			_, err := e.refresh(t, tok.RefreshToken)
			wantInvalidGrant(t, "a refresh token of the raced grant", err)
		}
	})

	// The store's calls of one exchange, as go-oauth2 makes them: only
	// Create writes, and it consumes the code in its batch.
	t.Run("ExchangeWritesInCreate", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := e.authorize(t, "user:steps", verifier)
		c := e.cluster.Node(1).Client
		s := gooauth2.NewTokenStore(c)
		ctx := e.ctx(t)
		if err := s.RemoveByCode(ctx, code); !errors.Is(err, oautherrors.ErrInvalidAuthorizeCode) {
			t.Fatalf("RemoveByCode of a code not read: %v, want ErrInvalidAuthorizeCode", err)
		}
		ti, err := s.GetByCode(ctx, code)
		if err != nil || ti == nil {
			t.Fatalf("GetByCode: %v, %v", ti, err)
		}
		if err := s.RemoveByCode(ctx, code); err != nil {
			t.Fatalf("RemoveByCode: %v", err)
		}
		if rec, _, err := c.Lookup(ctx, code, client.LookupOptions{Consistency: wire.ConsistencyLeader}); err != nil || rec.Status != "active" {
			t.Fatalf("the code after RemoveByCode: %v, %v; want active", rec, err)
		}
		// A family no code was taken for gets no tokens.
		stray := e.newPair(ti.GetUserID(), url.Values{gooauth2.ExtensionFamily: {"no-such-family"}})
		if err := s.Create(ctx, stray); !errors.Is(err, oautherrors.ErrInvalidGrant) {
			t.Fatalf("Create into a family without a taken code: %v, want ErrInvalidGrant", err)
		}
		ext := ti.(oauth2srv.ExtendableTokenInfo).GetExtension()
		first := e.newPair(ti.GetUserID(), ext)
		if err := s.Create(ctx, first); err != nil {
			t.Fatalf("Create: %v", err)
		}
		if _, _, err := c.Lookup(ctx, code, client.LookupOptions{Consistency: wire.ConsistencyLeader}); !errors.Is(err, client.ErrTokenConsumed) && !errors.Is(err, client.ErrTokenReused) {
			t.Fatalf("the code after Create: %v, want consumed", err)
		}
		e.wantAccepted(t, "the access token Create issued", first.GetAccess(), "user:steps")
		// The exchange is over: the code is forgotten, and a second
		// Create of it issues nothing.
		if n := gooauth2.PendingCodes(s); n != 0 {
			t.Fatalf("%d codes pending after the exchange, want 0", n)
		}
		second := e.newPair(ti.GetUserID(), ext)
		if err := s.Create(ctx, second); !errors.Is(err, oautherrors.ErrInvalidGrant) {
			t.Fatalf("second Create: %v, want ErrInvalidGrant", err)
		}
		e.wantRefused(t, "the access token of the second Create", second.GetAccess())
		// The code read again is a replay: the grant is revoked.
		if ti, err := s.GetByCode(ctx, code); ti != nil || err != nil {
			t.Errorf("GetByCode of the used code: %v, %v; want nil, nil", ti, err)
		}
		e.wantRefused(t, "the first access token after the replay", first.GetAccess())
	})

	// A refresh is one batch: when its last op fails (the new access
	// token's string is taken), the old access and refresh tokens are as
	// they were.
	t.Run("RefreshIsOneBatch", func(t *testing.T) {
		// Until the log's fence a refresh takes two writes (see
		// RefreshDuringUpgrade); from it on, one.
		intercept.WaitFenced(t, e.cluster.Node(1).Client)
		first := e.grant(t, "user:rt-atomic")
		s := gooauth2.NewTokenStore(e.cluster.Node(1).Client)
		ctx := e.ctx(t)
		ti, err := s.GetByRefresh(ctx, first.RefreshToken)
		if err != nil || ti == nil {
			t.Fatalf("GetByRefresh: %v, %v", ti, err)
		}
		ti.SetAccess(first.AccessToken) // taken
		ti.SetAccessCreateAt(time.Now())
		ti.SetRefresh(oauth2.GenerateVerifier())
		ti.SetRefreshCreateAt(time.Now())
		e.remember(ti.GetRefresh())
		err = s.Create(ctx, ti)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != wire.CodeTokenExists || ce.Op != 3 {
			t.Fatalf("a refresh whose access token exists: %v, want token_exists at op 3", err)
		}
		e.wantAccepted(t, "the access token after the failed refresh", first.AccessToken, "user:rt-atomic")
		if rec, _, err := e.cluster.Node(2).Client.Lookup(ctx, ti.GetRefresh(), client.LookupOptions{Consistency: wire.ConsistencyLeader}); !errors.Is(err, client.ErrTokenNotFound) {
			t.Fatalf("the failed refresh's refresh token: %+v, %v; want not found", rec, err)
		}
		next, err := e.refresh(t, first.RefreshToken)
		if err != nil {
			t.Fatalf("refresh after the failed one: %v, want the refresh token unused", err)
		}
		e.wantAccepted(t, "the new access token", next.AccessToken, "user:rt-atomic")
		e.wantRefused(t, "the access token the refresh replaced", first.AccessToken)
	})

	// While the cluster cannot take a family revocation in a batch (a
	// rolling upgrade: 503 cluster_upgrading, or an old node's 400 for the
	// unknown op), a refresh revokes the access tokens first, then sends
	// the rest as a batch.
	t.Run("RefreshDuringUpgrade", func(t *testing.T) {
		for name, answer := range map[string]func(op int) *http.Response{
			"cluster_upgrading": func(int) *http.Response {
				return intercept.APIError(http.StatusServiceUnavailable, wire.CodeUpgrading, -1)
			},
			"unknown op": func(op int) *http.Response {
				return intercept.APIError(http.StatusBadRequest, wire.CodeInvalidField, op)
			},
		} {
			t.Run(name, func(t *testing.T) {
				x := intercept.New(func(path string, body []byte) *http.Response {
					if op := intercept.FamilyOpAt(body); path == "/v1/batch" && op >= 0 {
						return answer(op)
					}
					return nil
				})
				s := gooauth2.NewTokenStore(client.New(e.cluster.Node(1).API.URL, client.WithHTTPClient(&http.Client{Transport: x})))
				first := e.grant(t, "user:upgrade")
				next, err := e.managerRefresh(t, s, first.RefreshToken)
				if err != nil {
					t.Fatalf("refresh during the upgrade: %v", err)
				}
				sent, faked := x.Counts()
				if faked != 1 || sent["/v1/batch"] != 1 {
					t.Errorf("%d batches refused, %d sent to the node; want 1 and 1 (%v)", faked, sent["/v1/batch"], sent)
				}
				e.wantRefused(t, "the access token the refresh replaced", first.AccessToken)
				e.wantAccepted(t, "the new access token", next.GetAccess(), "user:upgrade")

				// A failing batch names its op in the whole refresh.
				ti, err := s.GetByRefresh(e.ctx(t), next.GetRefresh())
				if err != nil || ti == nil {
					t.Fatalf("GetByRefresh: %v, %v", ti, err)
				}
				ti.SetAccess(next.GetAccess()) // taken
				ti.SetAccessCreateAt(time.Now())
				ti.SetRefresh(oauth2.GenerateVerifier())
				ti.SetRefreshCreateAt(time.Now())
				e.remember(ti.GetRefresh())
				var ce *client.Error
				if err := s.Create(e.ctx(t), ti); !errors.As(err, &ce) || ce.Code != wire.CodeTokenExists || ce.Op != 3 {
					t.Fatalf("a refresh whose access token exists: %v, want token_exists at op 3", err)
				}
				// The old refresh token was consumed: presented again, it
				// revokes the grant.
				_, err = e.refresh(t, first.RefreshToken)
				wantInvalidGrant(t, "the old refresh token after the refresh", err)
				e.wantRefused(t, "the new access token after the replay", next.GetAccess())
			})
		}
	})

	// RemoveByRefresh after a refresh writes nothing: a failure there
	// would answer the client 500 for a refresh whose tokens are stored.
	t.Run("RemoveByRefreshWritesNothing", func(t *testing.T) {
		failed := false
		x := intercept.New(func(path string, body []byte) *http.Response {
			if path == "/v1/tokens/revoke" && !failed {
				failed = true
				return intercept.APIError(http.StatusServiceUnavailable, wire.CodeNoLeader, -1)
			}
			return nil
		})
		s := gooauth2.NewTokenStore(client.New(e.cluster.Node(1).API.URL, client.WithHTTPClient(&http.Client{Transport: x})))
		first := e.grant(t, "user:rt-remove")
		next, err := e.managerRefresh(t, s, first.RefreshToken)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if sent, faked := x.Counts(); faked != 0 || sent["/v1/tokens/revoke"] != 0 {
			t.Errorf("the refresh sent %d revocations (%d failed), want none", sent["/v1/tokens/revoke"], faked)
		}
		e.wantAccepted(t, "the new access token", next.GetAccess(), "user:rt-remove")
		if _, err := e.refresh(t, next.GetRefresh()); err != nil {
			t.Fatalf("a refresh with the new refresh token: %v", err)
		}
		// Any other token is still revoked.
		other := e.grant(t, "user:rt-remove-other")
		if err := s.RemoveByRefresh(e.ctx(t), other.RefreshToken); err == nil {
			t.Fatal("RemoveByRefresh of a token not refreshed here: nil, want the failed revocation")
		}
		if err := s.RemoveByRefresh(e.ctx(t), other.RefreshToken); err != nil {
			t.Fatalf("RemoveByRefresh: %v", err)
		}
		_, err = e.refresh(t, other.RefreshToken)
		wantInvalidGrant(t, "a refresh token removed", err)
	})

	// An exchange that fails after reading the code (a wrong verifier)
	// leaves it pending only until an exchange of it succeeds.
	t.Run("FailedExchangeForgotten", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := e.authorize(t, "user:forgotten", verifier)
		_, err := e.exchange(t, code, oauth2.GenerateVerifier())
		wantInvalidGrant(t, "exchange with another verifier", err)
		if n := gooauth2.PendingCodes(e.tokenStore); n != 1 {
			t.Errorf("%d codes pending after the failed exchange, want 1", n)
		}
		if _, err := e.exchange(t, code, verifier); err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if n := gooauth2.PendingCodes(e.tokenStore); n != 0 {
			t.Errorf("%d codes pending after the exchange, want 0", n)
		}
	})

	// Two exchanges of one code that both read it before either's batch,
	// step by step: the first gets the tokens and the code leaves the
	// pending table; the second, which takes it after that, still
	// consumes it in its batch, and the reuse revokes the grant.
	t.Run("RacedExchangeRevokes", func(t *testing.T) {
		verifier := oauth2.GenerateVerifier()
		code := e.authorize(t, "user:raced-steps", verifier)
		s := gooauth2.NewTokenStore(e.cluster.Node(1).Client)
		ctx := e.ctx(t)
		var infos [2]oauth2srv.TokenInfo
		for i := range infos {
			ti, err := s.GetByCode(ctx, code)
			if err != nil || ti == nil {
				t.Fatalf("GetByCode %d: %v, %v", i, ti, err)
			}
			infos[i] = ti
		}
		pair := func(ti oauth2srv.TokenInfo) *models.Token {
			return e.newPair(ti.GetUserID(), ti.(oauth2srv.ExtendableTokenInfo).GetExtension())
		}
		if err := s.RemoveByCode(ctx, code); err != nil {
			t.Fatalf("RemoveByCode of the first: %v", err)
		}
		won := pair(infos[0])
		if err := s.Create(ctx, won); err != nil {
			t.Fatalf("Create of the first: %v", err)
		}
		if n := gooauth2.PendingCodes(s); n != 0 {
			t.Errorf("%d codes pending after the first exchange, want 0", n)
		}
		e.wantAccepted(t, "the first exchange's access token", won.GetAccess(), "user:raced-steps")
		if err := s.RemoveByCode(ctx, code); err != nil {
			t.Fatalf("RemoveByCode of the second: %v", err)
		}
		lost := pair(infos[1])
		if err := s.Create(ctx, lost); !errors.Is(err, oautherrors.ErrInvalidGrant) {
			t.Fatalf("Create of the second: %v, want ErrInvalidGrant", err)
		}
		e.wantRefused(t, "the first exchange's access token after the second", won.GetAccess())
		e.wantRefused(t, "the second exchange's access token", lost.GetAccess())
	})

	// Sequential exchanges leave no code in the token endpoint's table.
	t.Run("PendingCodesForgotten", func(t *testing.T) {
		before := gooauth2.PendingCodes(e.tokenStore)
		if before < 0 {
			t.Fatal("the table of pending codes disagrees with itself")
		}
		for i := range 5 {
			e.grant(t, fmt.Sprintf("user:seq-%d", i))
			if n := gooauth2.PendingCodes(e.tokenStore); n < 0 || n > before {
				t.Fatalf("after %d sequential exchanges %d codes pending, %d before", i+1, n, before)
			}
		}
	})

	t.Run("MissingTokens", func(t *testing.T) {
		s := gooauth2.NewTokenStore(e.cluster.Node(1).Client)
		ctx := e.ctx(t)
		for name, get := range map[string]func(context.Context, string) (oauth2srv.TokenInfo, error){
			"GetByCode": s.GetByCode, "GetByAccess": s.GetByAccess, "GetByRefresh": s.GetByRefresh,
		} {
			for _, tok := range []string{"no-such-token-0123456789abcdef", "tks_rt_malformed", ""} {
				if ti, err := get(ctx, tok); ti != nil || err != nil {
					t.Errorf("%s(%q) = %v, %v; want nil, nil", name, tok, ti, err)
				}
			}
		}
	})

	// Last: every string handed out above, searched for in what each node
	// wrote (Raft log, snapshots) and logged.
	t.Run("NoSecretOnDisk", func(t *testing.T) {
		e.mu.Lock()
		secrets := append([]string(nil), e.secrets...)
		e.mu.Unlock()
		if len(secrets) < 20 {
			t.Fatalf("only %d secrets handed out", len(secrets))
		}
		ctx := e.ctx(t)
		// A control: a string a record's data holds is found.
		canary := "canary-" + oauth2.GenerateVerifier()
		issued, err := e.cluster.Node(0).Client.Issue(ctx, wire.IssueRequest{
			Kind: "access", Subject: "user:canary", Data: []byte(`{"c":"` + canary + `"}`),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range e.cluster.Nodes() {
			// Each node has applied everything before the canary.
			if _, _, err := n.Client.Lookup(ctx, issued.Token, client.LookupOptions{MinIndex: issued.Index}); err != nil {
				t.Fatalf("lookup on %s: %v", n.ID(), err)
			}
			if _, err := n.Client.Snapshot(ctx); err != nil {
				t.Logf("snapshot of %s: %v", n.ID(), err)
			}
			var files, found int
			err := filepath.WalkDir(n.DataDir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				files++
				if bytes.Contains(b, []byte(canary)) {
					found++
				}
				for _, s := range secrets {
					if s != "" && bytes.Contains(b, []byte(s)) {
						t.Errorf("node %s: %s holds a token string", n.ID(), path)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if files == 0 || found == 0 {
				t.Errorf("node %s: %d files in %s, %d hold the canary; want some", n.ID(), files, n.DataDir, found)
			}
			logs := n.Logs.String()
			for _, s := range secrets {
				if s != "" && bytes.Contains([]byte(logs), []byte(s)) {
					t.Errorf("node %s logged a token string", n.ID())
				}
			}
		}
	})
}

// concurrently runs f(0) … f(n-1) at once and returns what each returned.
func concurrently(n int, f func(i int) (*oauth2.Token, error)) ([]*oauth2.Token, []error) {
	toks, errs := make([]*oauth2.Token, n), make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			toks[i], errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return toks, errs
}
