package load

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/token"
)

// Target is one system under measurement: tokenstore or a peer. Every
// workload drives a Target, so all systems run the same driver loop with
// the same concurrency and the same histograms. A Target is safe for
// concurrent use; an operation it does not have answers ErrUnsupported.
type Target interface {
	// Issue stores a new single-use token with the run's TTL. Systems
	// that take the caller's key store it under key; tokenstore mints
	// the secret itself. The answer is what Consume and Lookup take.
	Issue(ctx context.Context, key string) (handle string, err error)
	// Consume uses a token exactly once: a second Consume of the same
	// handle fails.
	Consume(ctx context.Context, handle string) error
	// Lookup reads a token without consuming it; a missing token fails.
	Lookup(ctx context.Context, handle string) error
	// Nonce records a replay nonce with add() semantics; a replay fails.
	Nonce(ctx context.Context, key string) error
	// Close releases connections.
	Close() error
}

// TokenTTL is the lifetime of every token a run issues, on every system.
const TokenTTL = time.Hour

// Tokenstore is the Target of a running tokenstore: the Go client over
// HTTP, requests spread round-robin over the given nodes.
type Tokenstore struct {
	nodes []*client.Client
	tr    *http.Transport
	next  atomic.Uint64
	// Consistency of Lookup: wire.ConsistencyLocal (default) or leader.
	Consistency string
}

// NewTokenstore returns the Target of the nodes at the comma-separated
// addrs, with a connection pool sized for clients concurrent requests.
func NewTokenstore(addrs, apiKey string, clients int) *Tokenstore {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: clients * 2, MaxIdleConnsPerHost: clients * 2, IdleConnTimeout: time.Minute}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	t := &Tokenstore{tr: tr}
	for _, a := range strings.Split(addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			t.nodes = append(t.nodes, client.New(a, client.WithAPIKey(apiKey), client.WithHTTPClient(hc)))
		}
	}
	return t
}

// node returns the client of the next request.
func (t *Tokenstore) node() *client.Client {
	return t.nodes[int(t.next.Add(1)%uint64(len(t.nodes)))]
}

// Issue issues an authorization code (single-use); key is not used: the
// node mints the secret, as it does for an OAuth server.
func (t *Tokenstore) Issue(ctx context.Context, _ string) (string, error) {
	res, err := t.node().Issue(ctx, wire.IssueRequest{Kind: token.KindOAuth2Code, Subject: "bench", ClientID: benchClient, TTL: TokenTTL.String()})
	if err != nil {
		return "", err
	}
	return res.Token, nil
}

// Consume consumes a token through the API.
func (t *Tokenstore) Consume(ctx context.Context, tok string) error {
	_, err := t.node().Consume(ctx, wire.ConsumeRequest{Token: tok})
	return err
}

// Lookup reads a token at t.Consistency.
func (t *Tokenstore) Lookup(ctx context.Context, tok string) error {
	_, _, err := t.node().Lookup(ctx, tok, client.LookupOptions{Consistency: t.Consistency})
	return err
}

// Nonce checks a nonce through the API (the node adds it to memcached).
func (t *Tokenstore) Nonce(ctx context.Context, key string) error {
	return t.node().CheckNonce(ctx, "bench", key, time.Now().Unix())
}

// Close drops idle connections.
func (t *Tokenstore) Close() error {
	t.tr.CloseIdleConnections()
	return nil
}

// benchClient is the OAuth client id of everything a run issues.
const benchClient = "bench-app"

// Unsupported is embedded by the Target of a system that has only some
// of the operations: the others answer ErrUnsupported, naming System.
type Unsupported struct{ System string }

// Issue answers ErrUnsupported.
func (u Unsupported) Issue(context.Context, string) (string, error) {
	return "", fmt.Errorf("%s: issue: %w", u.System, ErrUnsupported)
}

// Consume answers ErrUnsupported.
func (u Unsupported) Consume(context.Context, string) error {
	return fmt.Errorf("%s: consume: %w", u.System, ErrUnsupported)
}

// Lookup answers ErrUnsupported.
func (u Unsupported) Lookup(context.Context, string) error {
	return fmt.Errorf("%s: lookup: %w", u.System, ErrUnsupported)
}

// Nonce answers ErrUnsupported.
func (u Unsupported) Nonce(context.Context, string) error {
	return fmt.Errorf("%s: nonce: %w", u.System, ErrUnsupported)
}
