// Package peers measures tokenstore side by side with etcd, Redis and
// memcached on one machine, and with the HTTP floor (a server that only
// decodes each request's JSON and answers a fixed record): each system is
// started on loopback, stopped by pid, filled to the same live token
// counts and driven with the same operations and load by the load
// driver, one system after the other. The servers' CPU time is read
// around each timed window. The report gives tokenstore's ratios to each
// peer.
package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Systems are what Run measures, tokenstore first and the floor right
// after it, so that the two meet the machine in the same state.
var Systems = []string{"tokenstore", load.FloorSystem, "etcd", "redis", "memcached"}

// capabilities are the operations each system has an equivalent of.
var capabilities = map[string][]string{
	"tokenstore":     load.PeerOps,
	load.FloorSystem: load.PeerOps,
	"etcd":           {"issue", "consume", "lookup"},
	"redis":          {"issue", "consume", "lookup"},
	"memcached":      {"nonce"},
}

// Config describes a side-by-side run: every system is started by
// the bench on loopback, measured with the same operations and load, and
// stopped by pid before the next one starts.
type Config struct {
	Binary  string   // the tokenstore binary
	Bench   string   // the tokenstore-bench binary, whose floor command serves the floor
	Dir     string   // data and logs of every server
	Systems []string // default Systems
	Ops     []string // default PeerOps
	Load    load.Load
	// Tokens is how many tokens a consume run pre-issues.
	Tokens int
	// Scales are the live token counts issued before measuring, in
	// ascending order; each system is filled up to each in turn.
	Scales []int
	// Nodes of the tokenstore cluster and members of the etcd cluster.
	Nodes int
	// NodeArgs are added to every tokenstore node's serve flags.
	NodeArgs []string
}

// system is one running system under measurement.
type system struct {
	name   string
	all    load.Target // issue, consume, nonce: spread over every node
	reader load.Target // lookup: a follower where there is one
	stop   func()
	rss    func() map[string]int64
	// procs are the server processes whose CPU time is the system's.
	procs func() []*proccluster.Proc
	// scaled records the snapshot and restore figures of tokenstore.
	scaled func(ctx context.Context, s *load.Scale, progress io.Writer) error
}

func (s *system) close() {
	s.all.Close()
	if s.reader != s.all {
		s.reader.Close()
	}
	s.stop()
}

// Run runs every configured system in turn and reports their results.
// A peer whose server is not installed is skipped and named in Skipped.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*load.Report, error) {
	if err := cfg.Load.Validate(); err != nil {
		return nil, err
	}
	cfg.Systems = orDefault(cfg.Systems, Systems)
	cfg.Ops = orDefault(cfg.Ops, load.PeerOps)
	if len(cfg.Scales) == 0 {
		cfg.Scales = []int{10000}
	}
	slices.Sort(cfg.Scales)
	rep := &load.Report{Machine: load.ReadMachine(), Started: time.Now().UTC(), Skipped: map[string]string{}}
	mc, err := StartMemcached(ctx, cfg.Dir)
	if err != nil && !errors.Is(err, proccluster.ErrNotInstalled) {
		return nil, err
	}
	if mc != nil {
		defer mc.Stop()
	}
	for _, name := range cfg.Systems {
		fmt.Fprintf(progress, "== %s\n", name)
		sys, err := startSystem(ctx, name, cfg, mc)
		if errors.Is(err, proccluster.ErrNotInstalled) {
			fmt.Fprintf(progress, "skipping %s: %v\n", name, err)
			rep.Skipped[name] = err.Error()
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("start %s: %w", name, err)
		}
		err = measureSystem(ctx, sys, cfg, rep, progress)
		sys.close()
		if err != nil {
			return rep, fmt.Errorf("%s: %w", name, err)
		}
	}
	return rep, nil
}

func orDefault(v, def []string) []string {
	if len(v) == 0 {
		return def
	}
	return v
}

// measureSystem fills sys to each scale and runs every operation it has.
func measureSystem(ctx context.Context, sys *system, cfg Config, rep *load.Report, progress io.Writer) error {
	ops := capabilities[sys.name]
	var live []string
	for _, scale := range cfg.Scales {
		if slices.Contains(ops, "issue") && len(live) < scale {
			more, err := load.Preload(ctx, sys.all, scale-len(live), cfg.Load.Clients, progress)
			if err != nil {
				return err
			}
			live = append(live, more...)
		}
		// The memory once the scale's live tokens are stored, before its
		// operations add the tokens they issue and consume (from the
		// second scale on, with what the scales before it left).
		loaded := sys.rss()
		for _, op := range cfg.Ops {
			if !slices.Contains(ops, op) {
				continue
			}
			t := sys.all
			if op == "lookup" {
				t = sys.reader
			}
			run, err := load.Prepare(ctx, t, op, load.Prepared{Tokens: cfg.Tokens, Clients: cfg.Load.Clients, Live: live}, progress)
			if err != nil {
				return err
			}
			before := readCPU(sys.procs())
			r := load.Drive(ctx, op, cfg.Load, run, progress)
			if after := readCPU(sys.procs()); before != nil && after != nil {
				r.ServerCPU = load.NewServerCPU(before, after, r.Ops)
			}
			r.System, r.Live = sys.name, scale
			fmt.Fprintf(progress, "%-10s %s\n", sys.name, r)
			rep.Results = append(rep.Results, r)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		s := &load.Scale{System: sys.name, Live: scale, RSSLoaded: loaded, RSS: sys.rss()}
		if sys.scaled != nil {
			if err := sys.scaled(ctx, s, progress); err != nil {
				return err
			}
		}
		rep.Scales = append(rep.Scales, s)
	}
	return nil
}

// startSystem starts the servers of one system and connects its Targets.
func startSystem(ctx context.Context, name string, cfg Config, mc *Server) (*system, error) {
	clients := cfg.Load.Clients
	switch name {
	case "tokenstore":
		return startTokenstore(ctx, cfg, mc)
	case "etcd":
		srv, err := StartEtcd(ctx, cfg.Dir, max(1, cfg.Nodes))
		if err != nil {
			return nil, err
		}
		var eps []string
		for _, a := range srv.Addrs {
			eps = append(eps, "http://"+a)
		}
		all, err := NewEtcd(ctx, eps)
		if err != nil {
			srv.Stop()
			return nil, err
		}
		reader, err := NewEtcd(ctx, []string{etcdFollower(ctx, all.clients[0], eps)})
		if err != nil {
			all.Close()
			srv.Stop()
			return nil, err
		}
		return &system{name: name, all: all, reader: reader, stop: srv.Stop, rss: srv.RSS, procs: srv.procs}, nil
	case "redis":
		srv, err := StartRedis(ctx, cfg.Dir)
		if err != nil {
			return nil, err
		}
		r, err := NewRedis(ctx, srv.Addrs[0], clients)
		if err != nil {
			srv.Stop()
			return nil, err
		}
		return &system{name: name, all: r, reader: r, stop: srv.Stop, rss: srv.RSS, procs: srv.procs}, nil
	case "memcached":
		if mc == nil {
			return nil, fmt.Errorf("memcached: %w", proccluster.ErrNotInstalled)
		}
		m := load.NewMemcached(mc.Addrs[0], clients)
		return &system{name: name, all: m, reader: m, stop: func() {}, rss: mc.RSS, procs: mc.procs}, nil
	case load.FloorSystem:
		srv, err := StartFloor(ctx, cfg.Bench, cfg.Dir)
		if err != nil {
			return nil, err
		}
		f := newFloor(srv, clients)
		return &system{name: name, all: f, reader: f, stop: srv.Stop, rss: srv.RSS, procs: srv.procs}, nil
	}
	return nil, fmt.Errorf("bench: unknown system %q (want one of %v)", name, Systems)
}

// etcdFollower returns the endpoint of a member that does not lead, or
// the first endpoint if that cannot be told.
func etcdFollower(ctx context.Context, c *clientv3.Client, eps []string) string {
	for _, ep := range eps {
		st, err := c.Status(ctx, ep)
		if err == nil && st.Leader != st.Header.MemberId {
			return ep
		}
	}
	return eps[0]
}

// startTokenstore starts a cluster of the real binary, its nonces in mc.
func startTokenstore(ctx context.Context, cfg Config, mc *Server) (*system, error) {
	args := slices.Clone(cfg.NodeArgs)
	if mc != nil {
		args = append(args, "--memcached", mc.Addrs[0], "--memcached-timeout", "2s")
	}
	c, err := proccluster.StartCluster(ctx, proccluster.ClusterConfig{Binary: cfg.Binary, Dir: cfg.Dir, Nodes: max(1, cfg.Nodes), Args: args})
	if err != nil {
		return nil, err
	}
	_, followers, err := c.Roles(ctx)
	if err != nil {
		c.Stop()
		return nil, err
	}
	reader := c.Nodes[0]
	if len(followers) > 0 {
		reader = followers[0]
	}
	sys := &system{name: "tokenstore", stop: c.Stop,
		all:    load.NewTokenstore(c.Addrs(), "", cfg.Load.Clients),
		reader: load.NewTokenstore(reader.URL(), "", cfg.Load.Clients),
		rss: func() map[string]int64 {
			out := map[string]int64{}
			for _, n := range c.Nodes {
				if b, err := n.Proc().RSS(); err == nil {
					out[n.ID] = b
				}
			}
			return out
		},
		// The nodes only: memcached, behind the nonce checks, is
		// measured as a peer of its own.
		procs: func() []*proccluster.Proc {
			var out []*proccluster.Proc
			for _, n := range c.Nodes {
				out = append(out, n.Proc())
			}
			return out
		},
	}
	sys.scaled = func(ctx context.Context, s *load.Scale, progress io.Writer) error {
		// Writes while every node writes a snapshot, against the steady
		// state just before.
		steady, during, took, size, err := writesDuringSnapshot(ctx, c.Nodes, sys.all, cfg.Load, progress)
		for _, r := range []*load.Result{steady, during} {
			if r != nil {
				r.System, r.Live = sys.name, s.Live
				fmt.Fprintf(progress, "%-10s %s\n", sys.name, r)
			}
		}
		s.WritesSteady, s.WritesDuringSnapshot = steady, during
		if err != nil {
			return err
		}
		s.Snapshot, s.SnapshotBytes = took, size
		// Restart a follower after SIGKILL: it restores its last snapshot
		// and replays the log after it. The lookup target stays on the
		// same node.
		d, err := reader.RestartKilled(ctx)
		s.Restore = d
		return err
	}
	return sys, nil
}

// readCPU is the CPU time of each process by name, or nil if any cannot
// be read (outside Linux, where it is not measured).
func readCPU(procs []*proccluster.Proc) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, p := range procs {
		d, err := p.CPU()
		if err != nil {
			return nil
		}
		out[p.Name] = d
	}
	return out
}

// ParseScales parses "10000,1000000".
func ParseScales(s string) ([]int, error) {
	var out []int
	for _, f := range load.SplitList(s) {
		var n int
		if _, err := fmt.Sscan(strings.ReplaceAll(f, "_", ""), &n); err != nil || n < 1 {
			return nil, fmt.Errorf("bench: bad scale %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}
