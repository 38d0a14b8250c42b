// Package testcluster starts real token store nodes inside a test: Raft on
// disk in a temporary directory, transports, gossip and the HTTP API on
// loopback ports chosen by the kernel. Each node is built by server.New,
// the wiring tokenstore serve runs.
package testcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/server"
	"github.com/tokenstore/tokenstore/token"
)

// Options tune a node. The zero value is the embedded default.
type Options struct {
	Policy   *token.Policy
	Keys     *api.Keys
	HashKey  []byte
	GCGrace  time.Duration
	GCTick   time.Duration
	Clock    func() time.Time // the node's wall clock (what it reports, log time when it leads); default time.Now
	Now      func() time.Time // the API's clock (reads); default Clock
	DataDir  string           // reuse a directory (restart); default: a new temp dir
	Snapshot uint64           // snapshot threshold
	LogStore string           // the Raft log's store; default what DataDir holds, else the WAL
	// Nonces serves /v1/nonces; default: the in-process store, as serve's
	// embedded default.
	Nonces api.NonceChecker

	// Cluster membership; the zero values make a one-node cluster.
	DC              string // default dc1
	NonVoter        bool
	PrimaryDC       string
	BootstrapExpect int
	Join            []string
	TLS             *tls.Config
	GossipKeys      [][]byte
	DeadNodeTimeout time.Duration
	// Addresses; default 127.0.0.1:0 (a restart reuses the old ones).
	RaftAddr, GossipAddr, GossipLANAddr string
	// MaxStaleness bounds how long ago a replica answering local reads
	// last heard from a leader; 0: no bound.
	MaxStaleness time.Duration
	// MinIndexWait bounds a local read's wait for min_index.
	MinIndexWait time.Duration
	// LastUsedGranularity is how often a token's last use may be written.
	LastUsedGranularity time.Duration
	// RotationGrace and Authz configure the API as serve's flags do.
	RotationGrace time.Duration
	Authz         api.AuthzConfig
}

// Node is one running node with its API server and a client for it.
type Node struct {
	*cluster.Node
	Server   *server.Server
	API      Endpoint // where the API answers
	Client   *client.Client
	Registry *prometheus.Registry
	Format   *token.Format
	Hasher   token.Hasher
	DataDir  string
	Logs     *Buffer // everything the node logged
	Opts     Options // what it was started with (DataDir filled in)
	conns    *conns
}

// Endpoint is the address of a node's HTTP API.
type Endpoint struct {
	URL string // http://host:port
}

// Start runs a node and, for a node that bootstraps alone (no Join, no
// BootstrapExpect), waits until it is ready.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	n, err := start(t, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	if len(o.Join) == 0 && o.BootstrapExpect == 0 {
		n.WaitReady(t)
	}
	return n
}

// start builds the node through server.New, as tokenstore serve does,
// from serve's defaults and the options.
// TryStart starts a node as Start does, but returns what keeps it from
// starting instead of failing the test.
func TryStart(t testing.TB, o Options) (*Node, error) {
	t.Helper()
	n, err := start(t, o)
	if err != nil {
		return nil, err
	}
	t.Cleanup(n.Stop)
	return n, nil
}

func start(t testing.TB, o Options) (*Node, error) {
	if o.Policy == nil {
		o.Policy = token.DefaultPolicy()
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.DC == "" {
		o.DC = "dc1"
	}
	if o.RaftAddr == "" {
		o.RaftAddr = "127.0.0.1:0"
	}
	logs := &Buffer{}
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.DC, cfg.RaftAddr, cfg.APIAddr, cfg.TLS = o.DataDir, o.DC, o.RaftAddr, "127.0.0.1:0", o.TLS
	cfg.Join, cfg.BootstrapExpect, cfg.NonVoter, cfg.PrimaryDC = o.Join, o.BootstrapExpect, o.NonVoter, o.PrimaryDC
	cfg.GossipAddr, cfg.GossipLANAddr, cfg.GossipKeys = o.GossipAddr, o.GossipLANAddr, o.GossipKeys
	cfg.DeadNodeTimeout, cfg.LastUsedGranularity, cfg.MaxStaleness = o.DeadNodeTimeout, o.LastUsedGranularity, o.MaxStaleness
	cfg.SnapshotThreshold, cfg.GCGrace, cfg.GCInterval = o.Snapshot, o.GCGrace, o.GCTick
	cfg.LogStore = o.LogStore
	cfg.Policy, cfg.HashKey, cfg.Keys, cfg.Authz, cfg.RotationGrace = o.Policy, o.HashKey, o.Keys, o.Authz, o.RotationGrace
	cfg.Nonce.LocalMax, cfg.NonceChecker = 1<<16, o.Nonces
	cfg.LogOutput, cfg.LogLevel = logs, "debug"
	cfg.Clock, cfg.Now, cfg.MinIndexWait = o.Clock, o.Now, o.MinIndexWait
	conns := &conns{state: map[net.Conn]http.ConnState{}}
	cfg.ConnState = conns.track
	if cfg.Gossips() {
		cfg.ReconcileInterval = 200 * time.Millisecond
	}
	s, err := server.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("open node: %w", err)
	}
	s.Start()
	return &Node{Node: s.Node(), Server: s, API: Endpoint{URL: s.URL()}, Client: client.New(s.URL()),
		Registry: s.Registry(), Format: s.Format(), Hasher: s.Hasher(), DataDir: o.DataDir, Logs: logs, Opts: o, conns: conns}, nil
}

// conns tracks the states of a node's API connections.
type conns struct {
	mu    sync.Mutex
	state map[net.Conn]http.ConnState
}

func (c *conns) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(c.state, conn)
		return
	}
	c.state[conn] = st
}

// closeUnused closes the connections that carry no request: a client's
// spare connection that never sent one would hold a graceful shutdown
// for five seconds.
func (c *conns) closeUnused() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn, st := range c.state {
		if st == http.StateNew || st == http.StateIdle {
			conn.Close()
		}
	}
}

// WaitReady polls until the node is ready or the deadline passes.
func (n *Node) WaitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := n.Ready()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s not ready after 30s: %v", n.ID(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop closes the API server and the node gracefully; it is safe to call
// twice.
func (n *Node) Stop() {
	n.conns.closeUnused()
	n.Server.Shutdown(context.Background())
}

// Kill stops the node as a crash would: no leadership transfer, no gossip
// goodbye. Its data directory stays for Restart.
func (n *Node) Kill() {
	n.Server.Kill()
}

// Cluster is several nodes of one Raft group that found each other
// through gossip.
type Cluster struct {
	t     testing.TB
	mu    sync.Mutex
	nodes []*Node
}

// StartCluster starts one node per Options; the voters among them
// bootstrap together (BootstrapExpect is set to their number), and every
// node joins through the first node's gossip address. It waits until
// every node is ready.
func StartCluster(t testing.TB, opts ...Options) *Cluster {
	t.Helper()
	voters := 0
	for _, o := range opts {
		if !o.NonVoter {
			voters++
		}
	}
	c := &Cluster{t: t}
	var seed string
	for i, o := range opts {
		if !o.NonVoter {
			o.BootstrapExpect = voters
		}
		if i > 0 {
			o.Join = []string{seed}
		}
		if i == 0 && o.NonVoter {
			t.Fatal("testcluster: the first node must be a voter")
		}
		n := Start(t, o)
		if i == 0 {
			seed = n.GossipAddr()
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.WaitReady(t)
	}
	return c
}

// NewCluster groups nodes started one by one (Start, with
// BootstrapExpect and Join) as a Cluster, for a test that must act on a
// node before the next starts.
func NewCluster(t testing.TB, nodes ...*Node) *Cluster {
	return &Cluster{t: t, nodes: nodes}
}

// Nodes returns the nodes, in start order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Node returns node i.
func (c *Cluster) Node(i int) *Node { return c.Nodes()[i] }

// Leader returns the node that leads now, or nil.
func (c *Cluster) Leader() *Node {
	for _, n := range c.Nodes() {
		if n.IsLeader() {
			return n
		}
	}
	return nil
}

// WaitForLeader polls until a node leads and is ready to serve.
func (c *Cluster) WaitForLeader(ctx context.Context) (*Node, error) {
	for {
		if l := c.Leader(); l != nil && l.Ready() == nil {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Restart starts node i again on its data directory and addresses, as an
// operator restarts a node, joining through the other nodes, and waits
// until it is ready.
func (c *Cluster) Restart(i int) *Node {
	c.t.Helper()
	old := c.Node(i)
	o := old.Opts
	o.RaftAddr, o.GossipAddr, o.GossipLANAddr = old.RaftAddr(), old.GossipAddr(), old.GossipLANAddr()
	old.Kill()
	o.Join = nil
	for j, other := range c.Nodes() {
		if j != i {
			o.Join = append(o.Join, other.GossipAddr())
		}
	}
	n := Start(c.t, o)
	n.WaitReady(c.t)
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
	return n
}

// KillAll stops every node as an outage of the whole cluster would (see
// Kill); RestartAll starts them again.
func (c *Cluster) KillAll() {
	for _, n := range c.Nodes() {
		n.Opts.RaftAddr, n.Opts.GossipAddr, n.Opts.GossipLANAddr = n.RaftAddr(), n.GossipAddr(), n.GossipLANAddr()
		n.Kill()
	}
}

// RestartAll starts every node killed by KillAll again on its data
// directory and addresses, each joining through the others, and waits
// until every node is ready. Options changed in Nodes()[i].Opts meanwhile
// (a clock moved on) take effect.
func (c *Cluster) RestartAll() {
	c.t.Helper()
	old := c.Nodes()
	started := make([]*Node, len(old))
	for i, n := range old {
		o := n.Opts
		o.Join = nil
		for j, other := range old {
			if j != i {
				o.Join = append(o.Join, other.Opts.GossipAddr)
			}
		}
		s, err := start(c.t, o)
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(s.Stop)
		started[i] = s
	}
	for _, n := range started {
		n.WaitReady(c.t)
	}
	c.mu.Lock()
	c.nodes = started
	c.mu.Unlock()
}

// Buffer is a bytes.Buffer safe for concurrent writers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
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
