package fositestore_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ory/fosite"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	fositestore "github.com/tokenstore/tokenstore/contrib/fosite"
	"github.com/tokenstore/tokenstore/internal/intercept"
)

// refreshTx runs fosite's refresh transaction on s: rotate the refresh
// token old of req, create the access and refresh tokens at and rt,
// commit.
func refreshTx(s interface {
	fosite.Storage
	BeginTX(context.Context) (context.Context, error)
	Commit(context.Context) error
	RotateRefreshToken(context.Context, string, string) error
	CreateAccessTokenSession(context.Context, string, fosite.Requester) error
	CreateRefreshTokenSession(context.Context, string, string, fosite.Requester) error
}, req fosite.Requester, old, at, rt string) error {
	tx, err := s.BeginTX(context.Background())
	if err != nil {
		return err
	}
	for _, step := range []func() error{
		func() error { return s.RotateRefreshToken(tx, req.GetID(), old) },
		func() error { return s.CreateAccessTokenSession(tx, at, req) },
		func() error { return s.CreateRefreshTokenSession(tx, rt, at, req) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return s.Commit(tx)
}

// A refresh is one batch: when its last op fails, the old refresh token
// and the grant's access token are as they were, read through another
// node; when it applies, the old access token is revoked and the new one
// is not.
func TestRotationIsOneBatch(t *testing.T) {
	s := newStoreEnv(t)
	ctx := context.Background()
	// Until the log's fence a refresh takes two writes
	// (TestRotationDuringUpgrade); from it on, one.
	intercept.WaitFenced(t, client.New(s.cluster.Node(1).API.URL))
	req := oidcRequest("req-rot-1", 0)
	other := oidcRequest("req-rot-other", 0)
	for _, step := range []func() error{
		func() error { return s.a.CreateAccessTokenSession(ctx, "sig-rot-at-0", req) },
		func() error { return s.a.CreateRefreshTokenSession(ctx, "sig-rot-rt-0", "sig-rot-at-0", req) },
		func() error { return s.a.CreateAccessTokenSession(ctx, "sig-rot-taken", other) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	// The successor's signature is taken: op 3 fails, nothing applies.
	err := refreshTx(s.b, req, "sig-rot-rt-0", "sig-rot-at-1", "sig-rot-taken")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Op != 3 || ce.Code != wire.CodeTokenExists {
		t.Fatalf("a refresh whose last op fails: %v, want op 3 token_exists", err)
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-rot-at-0", nil); err != nil {
		t.Fatalf("the access token after a failed refresh: %v, want it active", err)
	}
	if _, err := s.a.GetRefreshTokenSession(ctx, "sig-rot-rt-0", nil); err != nil {
		t.Fatalf("the refresh token after a failed refresh: %v, want it unused", err)
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-rot-at-1", nil); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("the failed refresh's access token: %v, want ErrNotFound", err)
	}

	// Applied: the old access token revoked, the new pair active.
	if err := refreshTx(s.b, req, "sig-rot-rt-0", "sig-rot-at-1", "sig-rot-rt-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-rot-at-0", nil); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("the old access token after the refresh: %v, want ErrInactiveToken", err)
	}
	if _, err := s.a.GetRefreshTokenSession(ctx, "sig-rot-rt-0", nil); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("the old refresh token after the refresh: %v, want ErrInactiveToken", err)
	}
	for _, sig := range []string{"sig-rot-at-1", "sig-rot-rt-1"} {
		get := s.a.GetAccessTokenSession
		if sig == "sig-rot-rt-1" {
			get = s.a.GetRefreshTokenSession
		}
		if _, err := get(ctx, sig, nil); err != nil {
			t.Fatalf("%s after the refresh: %v, want it active", sig, err)
		}
	}
}

// Concurrent refresh transactions with one refresh token, through two
// nodes: exactly one commits; every other fails with ErrInactiveToken,
// its batch applying nothing but the reuse's revocation of the grant.
func TestConcurrentRefreshTransactions(t *testing.T) {
	s := newStoreEnv(t)
	ctx := context.Background()
	req := oidcRequest("req-rot-race", 0)
	if err := s.a.CreateAccessTokenSession(ctx, "sig-race-at-0", req); err != nil {
		t.Fatal(err)
	}
	if err := s.a.CreateRefreshTokenSession(ctx, "sig-race-rt-0", "sig-race-at-0", req); err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		store := s.a
		if i%2 == 1 {
			store = s.b
		}
		wg.Go(func() {
			<-start
			errs[i] = refreshTx(store, req, "sig-race-rt-0", fmt.Sprintf("sig-race-at-%d", i+1), fmt.Sprintf("sig-race-rt-%d", i+1))
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, fosite.ErrInactiveToken):
			t.Errorf("refresh %d: %v, want ErrInactiveToken", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent refreshes committed, want exactly 1: %v", wins, n, errs)
	}
	if _, err := s.a.GetAccessTokenSession(ctx, "sig-race-at-0", nil); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("the old access token: %v, want ErrInactiveToken", err)
	}
	// A loser's access token was never issued.
	found := 0
	for i := range n {
		if _, err := s.a.GetAccessTokenSession(ctx, fmt.Sprintf("sig-race-at-%d", i+1), nil); !errors.Is(err, fosite.ErrNotFound) {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("%d new access tokens stored, want the winner's only", found)
	}
}

// While the cluster cannot take a family revocation in a batch (a rolling
// upgrade: 503 cluster_upgrading, or an old node's 400 invalid_field at
// that op), a refresh revokes the access tokens alone, then commits the
// rest as a batch; a failing op keeps its index in the transaction.
func TestRotationDuringUpgrade(t *testing.T) {
	s := newStoreEnv(t)
	ctx := context.Background()
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
			upgrading := fositestore.New(client.New(s.cluster.Node(1).API.URL, client.WithHTTPClient(&http.Client{Transport: x})), s.clients)
			id := "req-upgrade-" + strings.ReplaceAll(name, " ", "-")
			req := oidcRequest(id, 0)
			if err := s.a.CreateAccessTokenSession(ctx, id+"-at-0", req); err != nil {
				t.Fatal(err)
			}
			if err := s.a.CreateRefreshTokenSession(ctx, id+"-rt-0", id+"-at-0", req); err != nil {
				t.Fatal(err)
			}
			if err := refreshTx(upgrading, req, id+"-rt-0", id+"-at-1", id+"-rt-1"); err != nil {
				t.Fatalf("a refresh during the upgrade: %v", err)
			}
			sent, faked := x.Counts()
			if faked != 1 || sent["/v1/batch"] != 1 {
				t.Errorf("%d batches refused, %d sent to the node; want 1 and 1 (%v)", faked, sent["/v1/batch"], sent)
			}
			if _, err := s.a.GetAccessTokenSession(ctx, id+"-at-0", nil); !errors.Is(err, fosite.ErrInactiveToken) {
				t.Fatalf("the old access token after the refresh: %v, want ErrInactiveToken", err)
			}
			if _, err := s.a.GetRefreshTokenSession(ctx, id+"-rt-0", nil); !errors.Is(err, fosite.ErrInactiveToken) {
				t.Fatalf("the old refresh token after the refresh: %v, want ErrInactiveToken", err)
			}
			if _, err := s.a.GetAccessTokenSession(ctx, id+"-at-1", nil); err != nil {
				t.Fatalf("the new access token: %v, want it active", err)
			}

			// The successor's signature is taken: op 3 of the
			// transaction fails (op 2 of the batch sent).
			err := refreshTx(upgrading, req, id+"-rt-1", id+"-at-2", id+"-at-1")
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Op != 3 || ce.Code != wire.CodeTokenExists {
				t.Fatalf("a refresh whose last op fails: %v, want op 3 token_exists", err)
			}
		})
	}
}
