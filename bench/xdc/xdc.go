// Package xdc measures latency across datacenters as users meet it: a
// local cluster of the real binary with every node in a network namespace
// behind an emulated cross-DC link (internal/netem), no faults, and
// clients placed in every DC, each reaching the nodes of its own DC over
// a local link while only node-to-node traffic crosses DCs. Every client
// makes rounds of an issue, a lookup with min_index right after it
// through the same node, a consume of the token issued and a local lookup
// of a token replicated before the run; one more group of clients sends
// the same rounds to the leader directly, the leader's own time for them.
// The report gives each DC's latency per operation and the verdicts of
// the cross-DC targets (see Targets).
package xdc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/netem"
	"github.com/tokenstore/tokenstore/internal/proccluster"
	"github.com/tokenstore/tokenstore/token"
)

// The operations of a round, in the order a client makes them.
const (
	// OpIssue issues a single-use code through a node of the client's DC.
	OpIssue = "issue"
	// OpLookupAfterWrite looks the code up through the same node right
	// after, with min_index the issue's index: read-your-writes.
	OpLookupAfterWrite = "lookup_after_write"
	// OpConsume consumes the code through the same node.
	OpConsume = "consume"
	// OpLookup is a local lookup of a token replicated before the run.
	OpLookup = "lookup"
)

// Ops are the operations of a round, in order.
var Ops = []string{OpIssue, OpLookupAfterWrite, OpConsume, OpLookup}

// GroupLeader names the clients that send every operation to the leader.
const GroupLeader = "leader"

// ErrNoNetwork is a machine where the emulated network cannot be built.
var ErrNoNetwork = errors.New("bench xdc: needs the emulated network")

// benchClient is the OAuth client id of the codes issued.
const benchClient = "bench-app"

// Config describes a run.
type Config struct {
	Binary, Dir string
	// DCs are the datacenters, the primary first.
	DCs      []proccluster.DC
	NodeArgs []string
	// Net is the cross-DC link.
	Net netem.Config
	// Warmup runs the clients unmeasured first (connections, the
	// followers learning the leader's calls); Duration is measured.
	Warmup, Duration time.Duration
	// ClientsPerDC are the clients of every DC, and of the leader group.
	ClientsPerDC int
	// Rate is the rounds a second of each client at most (0: each starts
	// its next round when the last ended).
	Rate float64
	// Timeout bounds one request.
	Timeout time.Duration
	// Pool is how many tokens the local lookups read.
	Pool int
}

// defaults fills what cfg leaves zero.
func defaults(cfg Config) Config {
	if len(cfg.DCs) == 0 {
		cfg.DCs = []proccluster.DC{{Name: "a", Nodes: 3}, {Name: "b", Nodes: 2}}
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 30 * time.Second
	}
	if cfg.Warmup < 0 {
		cfg.Warmup = 0
	}
	if cfg.ClientsPerDC <= 0 {
		cfg.ClientsPerDC = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Pool <= 0 {
		cfg.Pool = 64
	}
	return cfg
}

// group is a set of clients and the nodes they send their requests to.
type group struct {
	name, dc string
	nodes    []*proccluster.Node
	stats    map[string]*opStats
}

// opStats is one operation's latencies and errors in one group.
type opStats struct {
	mu       sync.Mutex
	h        *hdrhistogram.Histogram
	errors   int
	firstErr string
}

// Latencies are recorded in microseconds, up to a minute.
func newOpStats() *opStats {
	return &opStats{h: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)}
}

func (s *opStats) record(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h.RecordValue(max(1, min(int64(d/time.Microsecond), s.h.HighestTrackableValue())))
	if err != nil {
		s.errors++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
	}
}

// run is the state of one run.
type run struct {
	cfg     Config
	cluster *proccluster.Cluster
	hc      *http.Client
	log     io.Writer
	pool    []string
	// measureFrom is when the warmup ends: operations that start before
	// it are not recorded.
	measureFrom time.Time
}

// Run starts the cluster in network namespaces, waits for a leader in the
// primary DC, drives it from every DC and reports. The error is for a
// run that could not be made; a target missed is in the report.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	cfg = defaults(cfg)
	if err := netem.Available(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoNetwork, err)
	}
	net := cfg.Net
	c, err := proccluster.StartCluster(ctx, proccluster.ClusterConfig{Binary: cfg.Binary, Dir: cfg.Dir, DCs: cfg.DCs,
		Args: cfg.NodeArgs, Net: &net, Secure: true})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	r := &run{cfg: cfg, cluster: c, hc: &http.Client{Transport: tr}, log: log}
	leader, err := r.primaryLeader(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "cluster of %d nodes ready, leader %s in DC %s; issuing %d tokens for the lookups\n", len(c.Nodes), leader.ID, leader.DC, cfg.Pool)
	if err := r.issuePool(ctx, leader); err != nil {
		return nil, err
	}
	// The leader the clients meet, should it have changed meanwhile.
	if leader, err = r.primaryLeader(ctx); err != nil {
		return nil, err
	}
	groups := []*group{{name: GroupLeader, dc: leader.DC, nodes: []*proccluster.Node{leader}}}
	for _, d := range cfg.DCs {
		groups = append(groups, &group{name: d.Name, dc: d.Name, nodes: proccluster.NodesIn(c.Nodes, d.Name)})
	}
	for _, g := range groups {
		g.stats = map[string]*opStats{}
		for _, op := range Ops {
			g.stats[op] = newOpStats()
		}
	}
	fmt.Fprintf(log, "%d clients per DC and for the leader: %s unmeasured, then %s\n", cfg.ClientsPerDC, cfg.Warmup, cfg.Duration)
	r.measureFrom = time.Now().Add(cfg.Warmup)
	// The counters are read once the warmup ended, and again at the end.
	var before map[string]nodeCounters
	load, cancel := context.WithTimeout(ctx, cfg.Warmup+cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	seed := uint64(time.Now().UnixNano())
	for gi, g := range groups {
		for k := range cfg.ClientsPerDC {
			cl := &xdcClient{r: r, g: g, turn: k, rng: rand.New(rand.NewPCG(seed, uint64(gi*1000+k)))}
			wg.Go(func() { cl.run(load) })
		}
	}
	select {
	case <-time.After(time.Until(r.measureFrom)):
		before = r.counters(ctx)
	case <-load.Done():
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	after := r.counters(ctx)
	return r.report(leader, groups, before, after), nil
}

// primaryLeader waits, a minute at most, until the leader is a node of
// the primary DC (the nodes move leadership there); after that it takes
// the leader wherever it is, and the report says where.
func (r *run) primaryLeader(ctx context.Context) (*proccluster.Node, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := r.cluster.Leader(ctx, r.hc)
		if err != nil {
			return nil, err
		}
		if l.DC == r.cfg.DCs[0].Name || time.Now().After(deadline) {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// issuePool issues the tokens of the local lookups through the leader
// and waits until every node has applied them. A write that fails (a
// leader just elected, or moving to the primary DC) is made again through
// the leader then named, for a minute at most.
func (r *run) issuePool(ctx context.Context, leader *proccluster.Node) error {
	lc := r.client(leader)
	var last *wire.IssueResponse
	deadline := time.Now().Add(time.Minute)
	for len(r.pool) < r.cfg.Pool {
		ictx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		res, err := lc.Issue(ictx, wire.IssueRequest{Kind: token.KindAccess, Subject: "xdc", ClientID: benchClient, TTL: "1h"})
		cancel()
		if err != nil {
			if ctx.Err() != nil || time.Now().After(deadline) {
				return fmt.Errorf("issuing the lookups' tokens through %s: %w", leader.ID, err)
			}
			fmt.Fprintf(r.log, "issuing the lookups' tokens through %s: %v; again through the leader now\n", leader.ID, err)
			if leader, err = r.cluster.Leader(ctx, r.hc); err != nil {
				return err
			}
			lc = r.client(leader)
			continue
		}
		r.pool = append(r.pool, res.Token)
		last = res
	}
	deadline = time.Now().Add(30 * time.Second)
	for _, n := range r.cluster.Nodes {
		for {
			lctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			_, _, err := r.client(n).Lookup(lctx, last.Token, client.LookupOptions{MinIndex: last.Index})
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s did not apply the lookups' tokens: %w", n.ID, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func (r *run) client(n *proccluster.Node) *client.Client {
	return client.New(n.URL(), client.WithHTTPClient(r.hc))
}

// xdcClient is one client of a group: it makes rounds through the
// group's nodes in turn.
type xdcClient struct {
	r    *run
	g    *group
	turn int
	rng  *rand.Rand
}

// run makes rounds until ctx ends, at most Rate a second.
func (c *xdcClient) run(ctx context.Context) {
	var tick <-chan time.Time
	if c.r.cfg.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / c.r.cfg.Rate))
		defer t.Stop()
		tick = t.C
	}
	for ctx.Err() == nil {
		n := c.g.nodes[c.turn%len(c.g.nodes)]
		c.turn++
		c.round(ctx, c.r.client(n))
		if tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
			}
		}
	}
}

// round issues a code, looks it up at the issue's index and consumes it,
// all through node n, then looks up a token of the pool there. A failed
// issue ends the round.
func (c *xdcClient) round(ctx context.Context, n *client.Client) {
	var code *wire.IssueResponse
	if err := c.do(ctx, OpIssue, func(ctx context.Context) (err error) {
		code, err = n.Issue(ctx, wire.IssueRequest{Kind: token.KindOAuth2Code, Subject: "xdc", ClientID: benchClient, TTL: "10m"})
		return err
	}); err != nil {
		return
	}
	c.do(ctx, OpLookupAfterWrite, func(ctx context.Context) error {
		_, _, err := n.Lookup(ctx, code.Token, client.LookupOptions{MinIndex: code.Index})
		return err
	})
	c.do(ctx, OpConsume, func(ctx context.Context) error {
		_, err := n.Consume(ctx, wire.ConsumeRequest{Token: code.Token, Kind: token.KindOAuth2Code, ClientID: benchClient})
		return err
	})
	c.do(ctx, OpLookup, func(ctx context.Context) error {
		_, _, err := n.Lookup(ctx, c.r.pool[c.rng.IntN(len(c.r.pool))], client.LookupOptions{})
		return err
	})
}

// do makes one request with the request timeout, past the end of the
// load if it started before, and records it once the warmup is over.
func (c *xdcClient) do(ctx context.Context, op string, f func(context.Context) error) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.r.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := f(rctx)
	if !start.Before(c.r.measureFrom) {
		c.g.stats[op].record(time.Since(start), err)
	}
	return err
}
