// Package testcluster starts real token store nodes inside a test: Raft on
// disk in a temporary directory, transports and the HTTP API on loopback
// ports chosen by the kernel.
package testcluster

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/nonce"
	"github.com/tokenstore/tokenstore/token"
)

// Options tune a node. The zero value is the embedded default.
type Options struct {
	Policy   *token.Policy
	Keys     *api.Keys
	HashKey  []byte
	GCGrace  time.Duration
	GCTick   time.Duration
	Now      func() time.Time // the API's clock (reads); writes use the node's
	DataDir  string           // reuse a directory (restart); default: a new temp dir
	Snapshot uint64           // snapshot threshold
	// Nonces serves /v1/nonces; default: the in-process store, as serve's
	// embedded default.
	Nonces api.NonceChecker
}

// Node is one running node with its API server and a client for it.
type Node struct {
	*cluster.Node
	API      *httptest.Server
	Client   *client.Client
	Registry *prometheus.Registry
	Format   *token.Format
	Hasher   token.Hasher
	DataDir  string
	Logs     *Buffer // everything the node logged
}

// Start runs a single-node cluster and waits until it is ready.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	if o.Policy == nil {
		o.Policy = token.DefaultPolicy()
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	format, err := token.NewFormat(token.DefaultVendor, o.Policy)
	if err != nil {
		t.Fatal(err)
	}
	logs := &Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	node, err := cluster.Open(cluster.Config{
		DataDir: o.DataDir, RaftAddr: "127.0.0.1:0", DC: "dc1", Bootstrap: true,
		GCGrace: o.GCGrace, GCInterval: o.GCTick, SnapshotThreshold: o.Snapshot,
		Logger: log, LogOutput: logs, LogLevel: "debug", Registry: reg,
	})
	if err != nil {
		t.Fatalf("open node: %v", err)
	}
	hasher := token.NewHasher(o.HashKey)
	if o.Nonces == nil {
		o.Nonces = nonce.NewChecker(nonce.NewLocal(1<<16), nonce.Config{DC: "dc1", Registry: reg})
	}
	srv := httptest.NewServer(api.New(api.Config{
		Store: node, Policy: o.Policy, Format: format, Hasher: hasher, Keys: o.Keys, Nonces: o.Nonces,
		DC: "dc1", Logger: log, Registry: reg, Gatherer: reg, Now: o.Now,
	}))
	n := &Node{Node: node, API: srv, Client: client.New(srv.URL), Registry: reg,
		Format: format, Hasher: hasher, DataDir: o.DataDir, Logs: logs}
	t.Cleanup(n.Stop)
	n.WaitReady(t)
	return n
}

// WaitReady polls until the node is ready or the deadline passes.
func (n *Node) WaitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		err := n.Ready()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node not ready after 20s: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop closes the API server and the node; it is safe to call twice.
func (n *Node) Stop() {
	n.API.Close()
	n.Node.Close()
}

// Buffer is a bytes.Buffer safe for concurrent writers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
