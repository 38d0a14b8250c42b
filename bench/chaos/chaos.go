// Package chaos is the correctness bench: a local cluster of the real
// binary in one or more datacenters (in network namespaces behind an
// emulated cross-DC link, or on loopback) is driven by clients in every DC
// while faults, each a type behind the Fault interface, are injected on a
// schedule and healed. Every key is then read back from the leader and the
// recorded history is checked (package history); the report says what each
// fault left working.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/bench/history"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/netem"
	"github.com/tokenstore/tokenstore/internal/proccluster"
	"github.com/tokenstore/tokenstore/token"
)

// Errors of a chaos run.
var (
	ErrUnknownFault = errors.New("bench: unknown fault")
	ErrNoLeaderSeen = proccluster.ErrNoLeaderSeen
	ErrNeedsNetwork = errors.New("bench: partitions need the emulated network")
)

// benchClient is the OAuth client id, and tokenTTL the lifetime, of every
// token a chaos run issues: those of a load run's tokens.
const (
	benchClient = "bench-app"
	tokenTTL    = time.Hour
)

// Config describes a chaos run: a local cluster of the real binary,
// clients in every datacenter, and faults on a schedule.
type Config struct {
	Binary, Dir string
	DCs         []proccluster.DC
	NodeArgs    []string
	// Net, when set, runs the nodes in network namespaces with this
	// cross-DC link; partitions need it.
	Net      *netem.Config
	Duration time.Duration // of the client load
	Seed     uint64
	// Faults name the faults (FaultKinds or FaultRandom) injected in
	// this order, cycled, one every FaultEvery.
	Faults     []string
	FaultEvery time.Duration
	// Downtime is how long a killed node stays down and a paused one
	// stopped.
	Downtime time.Duration
	// PartitionTime is how long a partition lasts.
	PartitionTime time.Duration
	ClientsPerDC  int
	// Keys is how many recent token keys the clients share, so that
	// their operations collide.
	Keys int
	// Timeout bounds one request; a write that times out is unknown.
	Timeout time.Duration
	// CheckTimeout bounds the linearizability check.
	CheckTimeout time.Duration
	// Out receives the history, the report and the timeline.
	Out string
}

// FaultEvent is one injected fault, its times in seconds since the start.
// The fields that measure an expectation (see Expectation) are filled for
// the faults that expect it only.
type FaultEvent struct {
	Kind   string  `json:"kind"` // the fault's name
	Node   string  `json:"node"` // for a partition, the nodes cut off
	DC     string  `json:"dc"`
	At     float64 `json:"at_s"`
	Healed float64 `json:"healed_s"`
	// Resume is, for a fault that expects it (a leader kill), the time
	// from the fault to the first acknowledged write invoked after it
	// (-1: none).
	Resume float64 `json:"resume_s,omitempty"`
	// Writes counts the writes invoked while the fault lasted, WritesOK
	// those that got a definite answer.
	WritesOK int `json:"writes_ok"`
	Writes   int `json:"writes"`
	// For a partition: the DCs wholly on the side that keeps a majority
	// of the voters (none: neither side has one), the operations their
	// clients invoked while it lasted, and answered, and those they
	// invoked in as long a time just before it.
	MajorityDCs       []string `json:"majority_dcs,omitempty"`
	MajorityOps       int      `json:"majority_ops,omitempty"`
	MajorityOK        int      `json:"majority_ok,omitempty"`
	MajorityOpsBefore int      `json:"majority_ops_before,omitempty"`
	// For a partition: the DCs wholly on a side without a majority of
	// the voters (cut off from any leader), the writes their clients had
	// in flight while it lasted, and those the nodes answered before it
	// healed, 503s included: a cut-off node answers, it does not hold a
	// write until the client gives up.
	CutDCs            []string `json:"cut_dcs,omitempty"`
	CutWrites         int      `json:"cut_writes,omitempty"`
	CutWritesAnswered int      `json:"cut_writes_answered,omitempty"`
	Err               string   `json:"error,omitempty"`
}

// chaosRun is the state of one run.
type chaosRun struct {
	cfg      Config
	schedule []Fault // cfg.Faults, injected in this order, cycled
	cluster  *proccluster.Cluster
	h        *history.History
	log      io.Writer
	hc       *http.Client
	rng      *rand.Rand // faults' choices; used by one goroutine
	next     atomic.Int64
	probes   atomic.Int64
	// background are operations a client started and did not wait for.
	background sync.WaitGroup
}

// Run starts the cluster, drives it with clients in every DC while
// faults are injected, heals, reads every key back at leader consistency
// and checks the history. The error is for a run that could not be made;
// a failed check is in the report.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	cfg = chaosDefaults(cfg)
	faults, err := schedule(cfg.Faults, cfg.Net != nil)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	// Mutual TLS and a gossip key on loopback too: faults meet the same
	// transport with or without namespaces.
	c, err := proccluster.StartCluster(ctx, proccluster.ClusterConfig{Binary: cfg.Binary, Dir: cfg.Dir, DCs: cfg.DCs, Args: cfg.NodeArgs, Net: cfg.Net, Secure: true})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	r := &chaosRun{cfg: cfg, cluster: c, log: log, hc: &http.Client{Transport: tr},
		rng: rand.New(rand.NewPCG(cfg.Seed, 1)), schedule: faults}
	fmt.Fprintf(log, "cluster of %d nodes ready; load for %s, a fault every %s\n", len(c.Nodes), cfg.Duration, cfg.FaultEvery)
	r.h = history.New()
	events := r.drive(ctx)
	fmt.Fprintln(log, "faults healed; reading every key back from the leader")
	r.verify(ctx)
	return r.report(events)
}

// chaosDefaults fills what cfg leaves zero.
func chaosDefaults(cfg Config) Config {
	if len(cfg.DCs) == 0 {
		cfg.DCs = []proccluster.DC{{Name: "a", Nodes: 3}, {Name: "b", Nodes: 2}}
	}
	if cfg.Duration <= 0 {
		cfg.Duration = time.Minute
	}
	if len(cfg.Faults) == 0 {
		cfg.Faults = ProcessFaults
		if cfg.Net != nil {
			cfg.Faults = FaultKinds
		}
	}
	if cfg.FaultEvery <= 0 {
		cfg.FaultEvery = 15 * time.Second
	}
	if cfg.Downtime <= 0 {
		cfg.Downtime = 3 * time.Second
	}
	if cfg.PartitionTime <= 0 {
		cfg.PartitionTime = 8 * time.Second
	}
	if cfg.ClientsPerDC <= 0 {
		cfg.ClientsPerDC = 4
	}
	if cfg.Keys <= 0 {
		cfg.Keys = 16
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 5 * time.Minute
	}
	if cfg.Out == "" {
		cfg.Out = filepath.Join(cfg.Dir, "chaos")
	}
	return cfg
}

// drive runs the clients for the duration and the faults alongside; it
// returns once the clients stopped and the last fault healed.
func (r *chaosRun) drive(ctx context.Context) []FaultEvent {
	load, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	id := 0
	for _, dc := range r.cfg.DCs {
		nodes := r.nodesOf(dc.Name)
		for range r.cfg.ClientsPerDC {
			cl := r.newClient(id, dc.Name, nodes)
			wg.Add(1)
			go func() { defer wg.Done(); cl.run(load) }()
			id++
		}
	}
	faults := r.faults(ctx, load)
	wg.Wait()
	r.background.Wait()
	return faults
}

// nodesOf are the API clients of the nodes of one DC.
func (r *chaosRun) nodesOf(dc string) []*client.Client {
	var out []*client.Client
	for _, n := range proccluster.NodesIn(r.cluster.Nodes, dc) {
		out = append(out, client.New(n.URL(), client.WithHTTPClient(r.hc)))
	}
	return out
}

// faults injects the schedule until load ends; the fault in progress
// then heals before it returns.
func (r *chaosRun) faults(ctx, load context.Context) []FaultEvent {
	var out []FaultEvent
	for i := 0; ; i++ {
		select {
		case <-load.Done():
			return out
		case <-time.After(r.cfg.FaultEvery):
		}
		if load.Err() != nil {
			return out
		}
		ev := r.inject(ctx, r.schedule[i%len(r.schedule)])
		fmt.Fprintf(r.log, "%6.1fs %s %s (dc %s), healed at %.1fs %s\n", ev.At, ev.Kind, ev.Node, ev.DC, ev.Healed, ev.Err)
		out = append(out, ev)
	}
}

// inject makes one fault, keeps it for as long as it lasts, or until ctx
// ends, and heals it. A fault that could not be made is healed at once.
func (r *chaosRun) inject(ctx context.Context, f Fault) FaultEvent {
	in, err := f.Inject(ctx, r)
	if err == nil {
		// The fault itself: the node stays down, or the side cut off.
		lasts := time.NewTimer(in.Lasts)
		select {
		case <-lasts.C:
		case <-ctx.Done():
			lasts.Stop()
		}
	}
	if herr := in.Heal(ctx); err == nil {
		err = herr
	}
	ev := in.Event
	ev.Healed = r.seconds()
	if err != nil {
		ev.Err = err.Error()
	}
	return ev
}

// The run is the environment of its faults.

func (r *chaosRun) nodes() []*proccluster.Node   { return r.cluster.Nodes }
func (r *chaosRun) dcs() []proccluster.DC        { return r.cfg.DCs }
func (r *chaosRun) intN(n int) int               { return r.rng.IntN(n) }
func (r *chaosRun) downtime() time.Duration      { return r.cfg.Downtime }
func (r *chaosRun) partitionTime() time.Duration { return r.cfg.PartitionTime }

func (r *chaosRun) network() partitioner {
	if r.cluster.Net == nil {
		return nil
	}
	return r.cluster.Net
}

// leader asks the running nodes which one leads.
func (r *chaosRun) leader(ctx context.Context) (*proccluster.Node, error) {
	return r.cluster.Leader(ctx, r.hc)
}

func (r *chaosRun) seconds() float64 { return float64(r.h.Now()) / float64(time.Second) }

// chaosClient is one closed-loop client of a DC: it spreads its requests
// over the nodes of its DC and records every operation.
type chaosClient struct {
	r     *chaosRun
	id    int
	dc    string
	nodes []*client.Client
	rng   *rand.Rand
	turn  int
}

func (r *chaosRun) newClient(id int, dc string, nodes []*client.Client) *chaosClient {
	return &chaosClient{r: r, id: id, dc: dc, nodes: nodes, rng: rand.New(rand.NewPCG(r.cfg.Seed, uint64(id)+2))}
}

// node is the next node of the client's DC.
func (c *chaosClient) node() *client.Client {
	c.turn++
	return c.nodes[c.turn%len(c.nodes)]
}

// run issues, consumes and looks up shared keys, with a reuse probe or
// an authorization-code flow now and then, until ctx ends.
func (c *chaosClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		switch x := c.rng.Float64(); {
		case x < 0.05:
			c.probe(ctx)
		case x < 0.15:
			c.flow(ctx)
		case x < 0.45:
			c.issue(ctx)
		case x < 0.78:
			c.consume(ctx, c.pick())
		default:
			c.lookup(ctx, c.pick(), history.OpLookup, 0)
		}
	}
}

// key names the n-th key of the run; a brought secret must not carry the
// minted prefix.
func (c *chaosClient) key(n int64) string {
	return fmt.Sprintf("chaos-%d-%07d", c.r.cfg.Seed, n)
}

// pick is one of the most recent keys.
func (c *chaosClient) pick() string {
	n := c.r.next.Load()
	if n == 0 {
		return c.key(0)
	}
	return c.key(max(0, n-int64(c.r.cfg.Keys)) + c.rng.Int64N(min(n, int64(c.r.cfg.Keys))))
}

// do runs one operation against the store and records it.
func (c *chaosClient) do(ctx context.Context, op history.Op, success string, f func(ctx context.Context) error) history.Op {
	c.call(ctx, &op, success, f)
	c.r.h.Add(op)
	return op
}

// call runs f with the request timeout and fills in op: who made it, its
// invoke and return times and its outcome. f may fill in op's key.
func (c *chaosClient) call(ctx context.Context, op *history.Op, success string, f func(ctx context.Context) error) {
	op.Client, op.DC = c.id, c.dc
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.r.cfg.Timeout)
	defer cancel()
	op.Call = c.r.h.Now()
	err := f(rctx)
	op.Return = c.r.h.Now()
	op.Outcome, op.Result = history.Classify(op.Kind, err, success)
	var ce *client.Error
	op.Answered = err == nil || errors.As(err, &ce)
	if err != nil && op.Outcome != history.OutcomeOK {
		op.Err = err.Error()
	}
}

// issue stores a single-use token under a new key half of the time and
// an existing one otherwise.
func (c *chaosClient) issue(ctx context.Context) {
	key := c.pick()
	if c.rng.IntN(2) == 0 {
		key = c.key(c.r.next.Add(1) - 1)
	}
	n := c.node()
	c.do(ctx, history.Op{Kind: history.OpIssue, Key: key}, history.ResultCreated, func(ctx context.Context) error {
		_, err := n.Issue(ctx, wire.IssueRequest{Kind: chaosKind, Subject: "chaos", ClientID: benchClient, TTL: tokenTTL.String(), Token: key})
		return err
	})
}

func (c *chaosClient) consume(ctx context.Context, key string) {
	n := c.node()
	c.do(ctx, history.Op{Kind: history.OpConsume, Key: key}, history.ResultUsed, func(ctx context.Context) error {
		_, err := n.Consume(ctx, wire.ConsumeRequest{Token: key})
		return err
	})
}

func (c *chaosClient) lookup(ctx context.Context, key, kind string, probe int) history.Op {
	n := c.node()
	return c.do(ctx, history.Op{Kind: kind, Key: key, Probe: probe}, history.ResultActive, func(ctx context.Context) error {
		_, _, err := n.Lookup(ctx, key, client.LookupOptions{Consistency: wire.ConsistencyLeader})
		return err
	})
}

// probe issues a refresh token, rotates it, replays the rotation (reuse
// detection must fire) and reads the successor (it must be revoked). A
// step without a definite answer ends the probe.
func (c *chaosClient) probe(ctx context.Context) {
	id := int(c.r.probes.Add(1))
	n := c.node()
	ictx, cancel := context.WithTimeout(ctx, c.r.cfg.Timeout)
	res, err := n.Issue(ictx, wire.IssueRequest{Kind: token.KindOAuth2Refresh, Subject: "chaos", ClientID: benchClient, TTL: tokenTTL.String()})
	cancel()
	if err != nil {
		return
	}
	parent := res.Token
	var child string
	rot := c.do(ctx, history.Op{Kind: history.OpRotate, Key: parent, Probe: id}, history.ResultUsed, func(ctx context.Context) error {
		out, err := n.Rotate(ctx, wire.RotateRequest{Token: parent})
		if err == nil {
			child = out.Token
		}
		return err
	})
	if rot.Outcome != history.OutcomeOK || rot.Result != history.ResultUsed {
		return
	}
	replay := c.do(ctx, history.Op{Kind: history.OpReplay, Key: parent, Probe: id}, history.ResultUsed, func(ctx context.Context) error {
		_, err := c.node().Rotate(ctx, wire.RotateRequest{Token: parent})
		return err
	})
	if replay.Outcome != history.OutcomeOK {
		return
	}
	c.lookup(ctx, child, history.OpLookupChild, id)
}

// chaosKind is the kind of the linearizability keys: single-use, without
// reuse detection, so a consume only ever changes its own token.
const chaosKind = token.KindOAuth1Request

// verify reads every key of the history and every acknowledged flow
// token back at leader consistency, retrying each until it gets a
// definite answer or the time allowed (two minutes and 2ms a key) ends.
func (r *chaosRun) verify(ctx context.Context) {
	type target struct {
		key, kind string
		probe     int
	}
	seen := map[string]bool{}
	var keys []target
	for _, op := range r.h.Ops() {
		kind := history.OpLookup
		switch op.Kind {
		case history.OpLookupChild:
			kind = history.OpLookupChild
		case history.OpIssue, history.OpConsume, history.OpLookup:
		case history.OpFlowIssueCode, history.OpFlowIssueRefresh, history.OpFlowIssueAccess:
			if !history.FlowIssued(op) {
				continue
			}
			kind = history.OpFlowLookup
		default:
			continue
		}
		if !seen[op.Key] {
			seen[op.Key] = true
			keys = append(keys, target{op.Key, kind, op.Probe})
		}
	}
	// Every node serves the reads, those across the emulated WAN too; the
	// time allowed grows with the keys.
	vctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(len(keys))*2*time.Millisecond)
	defer cancel()
	work := make(chan target)
	var wg sync.WaitGroup
	var all []*client.Client
	for _, n := range r.cluster.Nodes {
		all = append(all, client.New(n.URL(), client.WithHTTPClient(r.hc)))
	}
	base := len(r.cfg.DCs) * r.cfg.ClientsPerDC
	for w := range 16 {
		cl := &chaosClient{r: r, id: base + w, dc: "verify", nodes: all, turn: w}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				cl.readBack(vctx, t.key, t.kind, t.probe)
			}
		}()
	}
	for _, t := range keys {
		work <- t
	}
	close(work)
	wg.Wait()
}

// readBack retries a leader read of key until it is definite; only
// definite answers are recorded.
func (c *chaosClient) readBack(ctx context.Context, key, kind string, probe int) {
	for ctx.Err() == nil {
		n := c.node()
		op := history.Op{Client: c.id, DC: c.dc, Kind: kind, Key: key, Probe: probe, Final: true}
		rctx, cancel := context.WithTimeout(ctx, c.r.cfg.Timeout)
		op.Call = c.r.h.Now()
		_, _, err := n.Lookup(rctx, key, client.LookupOptions{Consistency: wire.ConsistencyLeader})
		op.Return = c.r.h.Now()
		cancel()
		op.Outcome, op.Result = history.Classify(kind, err, history.ResultActive)
		if op.Outcome == history.OutcomeOK {
			c.r.h.Add(op)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
