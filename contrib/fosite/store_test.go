package fositestore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/storage"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	fositestore "github.com/tokenstore/tokenstore/contrib/fosite"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// storeEnv is two stores on two nodes of a 3-node cluster, for the
// contracts of the methods themselves.
type storeEnv struct {
	cluster *testcluster.Cluster
	a, b    *fositestore.Store // through nodes 0 and 1
	clients *storage.MemoryStore
}

func newStoreEnv(t *testing.T) *storeEnv {
	t.Helper()
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	clients := storage.NewMemoryStore()
	clients.Clients[clientID] = &fosite.DefaultClient{ID: clientID, Scopes: []string{"openid", "offline", "read"}}
	return &storeEnv{cluster: c, clients: clients,
		a: fositestore.New(client.New(c.Node(0).API.URL), clients),
		b: fositestore.New(client.New(c.Node(1).API.URL), clients)}
}

// oidcRequest is an authorization request as fosite stores it for an
// OpenID Connect code, with claims of the size given.
func oidcRequest(id string, extraClaims int) *fosite.Request {
	now := time.Now().UTC().Round(time.Second)
	sess := newSession()
	sess.Claims.Issuer, sess.Claims.Nonce = "https://issuer.example", "nonce-"+strings.Repeat("n", 32)
	sess.Claims.Audience = []string{clientID}
	sess.Claims.AuthenticationContextClassReference = "urn:mace:incommon:iap:silver"
	sess.Claims.AuthenticationMethodsReferences = []string{"pwd", "otp"}
	sess.Claims.JTI = "0b8d3c7e-4f1a-4a58-9e0b-2f7c9a1d6e53"
	for i := range extraClaims {
		sess.Claims.Extra[fmt.Sprintf("claim_%02d", i)] = strings.Repeat("v", 40)
	}
	sess.Claims.Extra["groups"] = []string{"wiki-admins", "stewards", "oversight", "checkusers", "bureaucrats"}
	sess.SetExpiresAt(fosite.AuthorizeCode, now.Add(10*time.Minute))
	sess.SetExpiresAt(fosite.AccessToken, now.Add(time.Hour))
	sess.SetExpiresAt(fosite.RefreshToken, now.Add(24*time.Hour))
	sess.SetExpiresAt(fosite.IDToken, now.Add(time.Hour))
	return &fosite.Request{
		ID: id, RequestedAt: now, Client: &fosite.DefaultClient{ID: clientID},
		RequestedScope: fosite.Arguments{"openid", "offline", "read"}, GrantedScope: fosite.Arguments{"openid", "offline", "read"},
		RequestedAudience: fosite.Arguments{}, GrantedAudience: fosite.Arguments{},
		Form: url.Values{
			"redirect_uri": {redirectURL}, "response_type": {"code"}, "scope": {"openid offline read"},
			"client_id": {clientID}, "nonce": {sess.Claims.Nonce}, "max_age": {"3600"}, "prompt": {"login consent"},
			"acr_values": {"urn:mace:incommon:iap:silver"}, "code_challenge": {strings.Repeat("c", 43)},
			"code_challenge_method": {"S256"},
			// Secrets fosite's sanitation may let through; never stored.
			"code": {"ory_ac_secret.code"}, "code_verifier": {"the-verifier"}, "client_secret": {"the-client-secret"},
		},
		Session: sess,
	}
}

// The size of a fosite request with OpenID Connect claims as a record's
// data: a request with the claims a wiki's identity provider sends fits
// in the 8 KiB every kind allows with room to spare; one that does not
// fit is refused, never cut.
func TestRequestSize(t *testing.T) {
	for _, extra := range []int{0, 20, 60} {
		b, err := fositestore.EncodeRequest(oidcRequest("0b8d3c7e-4f1a-4a58-9e0b-2f7c9a1d6e53", extra))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("an OpenID Connect request with %d extra claims of 40 bytes: %d bytes of data (limit %d)", extra, len(b), fositestore.MaxData)
		if len(b) > fositestore.MaxData/2 && extra <= 20 {
			t.Errorf("%d bytes for %d extra claims: less than half of the limit left", len(b), extra)
		}
		for _, secret := range []string{"ory_ac_secret.code", "the-verifier", "the-client-secret"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("the data holds the secret parameter %q", secret)
			}
		}
	}
	_, err := fositestore.EncodeRequest(oidcRequest("0b8d3c7e-4f1a-4a58-9e0b-2f7c9a1d6e53", 200))
	if !errors.Is(err, fositestore.ErrRequestTooLarge) {
		t.Fatalf("a request of 200 claims: %v, want ErrRequestTooLarge", err)
	}
}

// A request goes in through one node and comes out of another as it went
// in: ids, scopes, form, session with its claims and expiries.
func TestRoundTrip(t *testing.T) {
	s := newStoreEnv(t)
	ctx := context.Background()
	req := oidcRequest("req-roundtrip-1", 3)
	if err := s.a.CreateAuthorizeCodeSession(ctx, "sig-roundtrip-code-1", req); err != nil {
		t.Fatal(err)
	}
	got, err := s.b.GetAuthorizeCodeSession(ctx, "sig-roundtrip-code-1", &openid.DefaultSession{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetID() != req.ID || got.GetClient().GetID() != clientID || !got.GetRequestedAt().Equal(req.RequestedAt) {
		t.Fatalf("request %+v", got)
	}
	if strings.Join(got.GetGrantedScopes(), " ") != "openid offline read" || got.GetRequestForm().Get("nonce") != req.Form.Get("nonce") {
		t.Fatalf("scopes %v, form %v", got.GetGrantedScopes(), got.GetRequestForm())
	}
	if got.GetRequestForm().Get("code_verifier") != "" || got.GetRequestForm().Get("client_secret") != "" {
		t.Fatal("a secret parameter came back")
	}
	sess := got.GetSession().(*openid.DefaultSession)
	want := req.Session.(*openid.DefaultSession)
	if sess.Subject != subject || sess.Claims.Nonce != want.Claims.Nonce || sess.Claims.Extra["claim_02"] != want.Claims.Extra["claim_02"] ||
		!sess.GetExpiresAt(fosite.AccessToken).Equal(want.GetExpiresAt(fosite.AccessToken)) {
		t.Fatalf("session %+v", sess)
	}
	if _, err := s.b.GetAccessTokenSession(ctx, "sig-roundtrip-code-1", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("a code's signature looked up as an access token: %v, want ErrNotFound", err)
	}
	if _, err := s.b.GetPKCERequestSession(ctx, "sig-roundtrip-code-1", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("a code's signature looked up as a PKCE request: %v, want ErrNotFound", err)
	}
}

// The contracts of fosite's storage interfaces.
func TestContracts(t *testing.T) {
	s := newStoreEnv(t)
	ctx := context.Background()
	req := oidcRequest("req-contracts-1", 0)

	// A used code: its stored request with ErrInvalidatedAuthorizeCode.
	if err := s.a.CreateAuthorizeCodeSession(ctx, "sig-code-1", req); err != nil {
		t.Fatal(err)
	}
	if err := s.b.InvalidateAuthorizeCodeSession(ctx, "sig-code-1"); err != nil {
		t.Fatal(err)
	}
	got, err := s.a.GetAuthorizeCodeSession(ctx, "sig-code-1", &openid.DefaultSession{})
	if !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) || got == nil || got.GetID() != req.ID ||
		got.GetSession().(*openid.DefaultSession).Claims.Nonce != req.Session.(*openid.DefaultSession).Claims.Nonce {
		t.Fatalf("a used code: %v, %+v; want its request and ErrInvalidatedAuthorizeCode", err, got)
	}
	// Used again: the same error, and the grant's tokens are revoked by
	// the code's reuse detection.
	err = s.b.InvalidateAuthorizeCodeSession(ctx, "sig-code-1")
	if !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) || !errors.Is(err, client.ErrTokenReused) {
		t.Fatalf("a code used twice: %v", err)
	}
	if _, err := s.a.GetAuthorizeCodeSession(ctx, "sig-unknown", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("an unknown code: %v, want ErrNotFound", err)
	}

	// A rotated refresh token: its request with ErrInactiveToken; the
	// grant's access token revoked, the grant open for successors.
	req2 := oidcRequest("req-contracts-2", 0)
	for _, step := range []func() error{
		func() error { return s.a.CreateAccessTokenSession(ctx, "sig-at-1", req2) },
		func() error { return s.a.CreateRefreshTokenSession(ctx, "sig-rt-1", "sig-at-1", req2) },
		func() error { return s.b.RotateRefreshToken(ctx, req2.ID, "sig-rt-1") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-at-1", nil); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("the access token of a rotated refresh token: %v, want ErrInactiveToken", err)
	}
	got, err = s.a.GetRefreshTokenSession(ctx, "sig-rt-1", nil)
	if !errors.Is(err, fosite.ErrInactiveToken) || got == nil || got.GetID() != req2.ID || got.GetClient().GetID() != clientID {
		t.Fatalf("a used refresh token: %v, %+v; want its request and ErrInactiveToken", err, got)
	}
	if err := s.a.CreateAccessTokenSession(ctx, "sig-at-2", req2); err != nil {
		t.Fatalf("issue into the grant after a rotation: %v", err)
	}
	if err := s.a.CreateRefreshTokenSession(ctx, "sig-rt-2", "sig-at-2", req2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.b.GetAccessTokenSession(ctx, "sig-at-2", nil); err != nil {
		t.Fatal(err)
	}

	// Revocation by request id revokes the grant for good.
	if err := s.b.RevokeRefreshToken(ctx, req2.ID); err != nil {
		t.Fatal(err)
	}
	got, err = s.a.GetRefreshTokenSession(ctx, "sig-rt-2", nil)
	if !errors.Is(err, fosite.ErrInactiveToken) || got == nil || got.GetID() != req2.ID {
		t.Fatalf("a revoked refresh token: %v, %+v; want its request and ErrInactiveToken", err, got)
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-at-2", nil); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("an access token of a revoked grant: %v", err)
	}
	if err := s.a.CreateAccessTokenSession(ctx, "sig-at-3", req2); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("issue into a revoked grant: %v, want ErrInactiveToken", err)
	}
	if err := s.a.RevokeAccessToken(ctx, req2.ID); err != nil {
		t.Fatalf("revoke a revoked grant again: %v", err)
	}

	// Deletes of what is gone are no error.
	for _, del := range []func() error{
		func() error { return s.a.DeleteAccessTokenSession(ctx, "sig-never-issued") },
		func() error { return s.a.DeleteRefreshTokenSession(ctx, "sig-rt-2") },
		func() error { return s.a.DeletePKCERequestSession(ctx, "sig-never-issued") },
		func() error { return s.a.DeleteOpenIDConnectSession(ctx, "ory_ac_never.issued") },
	} {
		if err := del(); err != nil {
			t.Fatalf("delete: %v", err)
		}
	}

	// PKCE and OpenID Connect requests: found, then gone once deleted.
	req3 := oidcRequest("req-contracts-3", 0)
	if err := s.a.CreatePKCERequestSession(ctx, "sig-code-3", req3); err != nil {
		t.Fatal(err)
	}
	if err := s.a.CreateOpenIDConnectSession(ctx, "ory_ac_code3.sig-code-3", req3); err != nil {
		t.Fatal(err)
	}
	if got, err := s.b.GetPKCERequestSession(ctx, "sig-code-3", nil); err != nil || got.GetRequestForm().Get("code_challenge") == "" {
		t.Fatalf("PKCE request: %v %+v", err, got)
	}
	if got, err := s.b.GetOpenIDConnectSession(ctx, "ory_ac_code3.sig-code-3", fosite.NewAccessRequest(&openid.DefaultSession{})); err != nil ||
		got.GetSession().(*openid.DefaultSession).Claims.Subject != subject {
		t.Fatalf("OpenID Connect request: %v %+v", err, got)
	}
	if err := s.b.DeletePKCERequestSession(ctx, "sig-code-3"); err != nil {
		t.Fatal(err)
	}
	if err := s.b.DeleteOpenIDConnectSession(ctx, "ory_ac_code3.sig-code-3"); err != nil {
		t.Fatal(err)
	}
	// The PKCE request is kept (see DeletePKCERequestSession): the code
	// it belongs to is single use and it expires with it.
	if _, err := s.a.GetPKCERequestSession(ctx, "sig-code-3", nil); err != nil {
		t.Fatalf("the PKCE request after its deletion was asked: %v, want it kept", err)
	}
	if _, err := s.a.GetOpenIDConnectSession(ctx, "ory_ac_code3.sig-code-3", fosite.NewAccessRequest(&openid.DefaultSession{})); !errors.Is(err, openid.ErrNoSessionFound) {
		t.Fatalf("a deleted OpenID Connect request: %v, want ErrNoSessionFound", err)
	}
}

// A transaction is one batch at Commit: nothing is written before it; if
// an op fails, nothing of it is (the code stays usable); Rollback drops
// the writes.
func TestTransaction(t *testing.T) {
	s := newStoreEnv(t)
	ctx := context.Background()
	req := oidcRequest("req-tx-1", 0)
	if err := s.a.CreateAuthorizeCodeSession(ctx, "sig-tx-code", req); err != nil {
		t.Fatal(err)
	}

	// Rolled back: nothing written, the code unused.
	tx, err := s.b.BeginTX(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.b.InvalidateAuthorizeCodeSession(tx, "sig-tx-code"); err != nil {
		t.Fatal(err)
	}
	if err := s.b.CreateAccessTokenSession(tx, "sig-tx-at-0", req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.a.GetAuthorizeCodeSession(ctx, "sig-tx-code", nil); err != nil {
		t.Fatalf("the code before Commit: %v", err)
	}
	if err := s.b.Rollback(tx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-tx-at-0", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("an access token of a rolled back transaction: %v", err)
	}

	// The third op fails (its token exists): nothing of the batch applies.
	if err := s.a.CreateAccessTokenSession(ctx, "sig-tx-taken", req); err != nil {
		t.Fatal(err)
	}
	tx, _ = s.b.BeginTX(ctx)
	for _, step := range []func() error{
		func() error { return s.b.InvalidateAuthorizeCodeSession(tx, "sig-tx-code") },
		func() error { return s.b.CreateAccessTokenSession(tx, "sig-tx-at-1", req) },
		func() error { return s.b.CreateRefreshTokenSession(tx, "sig-tx-taken", "sig-tx-at-1", req) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	err = s.b.Commit(tx)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Op != 2 || ce.Code != wire.CodeTokenExists {
		t.Fatalf("commit: %v, want op 2 token_exists", err)
	}
	if _, err := s.a.GetAuthorizeCodeSession(ctx, "sig-tx-code", nil); err != nil {
		t.Fatalf("the code after a failed batch: %v, want it unused", err)
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-tx-at-1", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("the access token of a failed batch: %v, want ErrNotFound", err)
	}

	// Committed: all of it.
	tx, _ = s.b.BeginTX(ctx)
	for _, step := range []func() error{
		func() error { return s.b.InvalidateAuthorizeCodeSession(tx, "sig-tx-code") },
		func() error { return s.b.CreateAccessTokenSession(tx, "sig-tx-at-2", req) },
		func() error { return s.b.CreateRefreshTokenSession(tx, "sig-tx-rt-2", "sig-tx-at-2", req) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.b.Commit(tx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.a.GetAuthorizeCodeSession(ctx, "sig-tx-code", nil); !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		t.Fatalf("the code after the batch: %v", err)
	}
	if _, err := s.a.GetRefreshTokenSession(ctx, "sig-tx-rt-2", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.b.Commit(tx); !errors.Is(err, fositestore.ErrNoTransaction) {
		t.Fatalf("a second commit: %v", err)
	}

	// A used code in a batch: ErrInvalidatedAuthorizeCode at Commit.
	tx, _ = s.b.BeginTX(ctx)
	_ = s.b.InvalidateAuthorizeCodeSession(tx, "sig-tx-code")
	_ = s.b.CreateAccessTokenSession(tx, "sig-tx-at-3", req)
	if err := s.b.Commit(tx); !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		t.Fatalf("a batch with a used code: %v", err)
	}
}

// No code, access or refresh token, nor the signatures fosite keys them
// by, reaches a node's disk (the Raft log, a snapshot) or its log.
func TestNoSecretOnDisk(t *testing.T) {
	e := newEnv(t)
	code, verifier := e.authorize(e.conf)
	tok, err := e.exchange(e.conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.refresh(e.conf, tok.RefreshToken); err != nil {
		t.Fatal(err)
	}
	_, _ = e.exchange(e.conf, code, verifier) // a replay: tombstones, revocations
	code2, _ := e.authorize(e.conf)           // a code never exchanged
	_ = code2
	for _, n := range e.cluster.Nodes() {
		if _, err := n.Client.Snapshot(context.Background()); err != nil && !errors.Is(err, &client.Error{Code: wire.CodeNothingToSnapshot}) {
			t.Fatal(err)
		}
	}
	var needles []string
	for _, s := range e.secrets {
		needles = append(needles, s)
		if _, sig, ok := strings.Cut(s, "."); ok && !strings.Contains(sig, ".") {
			needles = append(needles, sig) // the HMAC signature of an ory_ token
		}
	}
	if len(needles) < 8 {
		t.Fatalf("only %d secrets to look for", len(needles))
	}
	files := 0
	for _, n := range e.cluster.Nodes() {
		err := filepath.WalkDir(n.DataDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			for _, s := range needles {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%s holds a secret (%d bytes, starting %.8s)", p, len(s), s)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files == 0 {
		t.Fatal("no files in the data directories")
	}
	for i, n := range e.cluster.Nodes() {
		logs := n.Logs.String()
		for _, s := range needles {
			if strings.Contains(logs, s) {
				t.Errorf("node %d logged a secret (%d bytes, starting %.8s)", i, len(s), s)
			}
		}
	}
}
