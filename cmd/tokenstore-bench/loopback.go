package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/bench/peers"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

const loopbackUsage = `usage: tokenstore-bench loopback node|nonce|cluster|route [flags]

Reproducible measurements on loopback, one command each:

  node     one node: issue, consume, rotate, lookup and introspect
  nonce    nonce checks through the API against the same add() made
           directly to the same memcached
  cluster  three nodes: issue, consume and rotate from clients spread over
           all nodes; lookups and introspection on a follower
  route    the primary-DC router's overhead: the same GET straight to an
           upstream and through tokenstore route, alternated in one run

The servers are started on free loopback ports and stopped by their pids.
Run "tokenstore-bench loopback <mode> -h" for the flags.
`

// loopbackModes are the measurements of loopback, by name.
var loopbackModes = map[string]func(l *loopbackRun, ctx context.Context) error{
	"node":    (*loopbackRun).node,
	"nonce":   (*loopbackRun).nonce,
	"cluster": (*loopbackRun).cluster,
	"route":   (*loopbackRun).route,
}

// loopbackRun is one loopback measurement: the load and where its
// servers keep their data and logs.
type loopbackRun struct {
	load     load.Config
	bin, dir string
	nodeArgs []string
}

func loopback(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Print(loopbackUsage)
		if len(args) == 0 {
			return errors.New("loopback: want a mode: node, nonce, cluster or route")
		}
		return flag.ErrHelp
	}
	mode, ok := loopbackModes[args[0]]
	if !ok {
		return fmt.Errorf("loopback: unknown mode %q (want node, nonce, cluster or route)", args[0])
	}
	fs := flag.NewFlagSet("loopback "+args[0], flag.ContinueOnError)
	var l loopbackRun
	var sf serverFlags
	fs.IntVar(&l.load.Clients, "clients", 64, "concurrent clients (closed loop)")
	fs.DurationVar(&l.load.Duration, "duration", 10*time.Second, "measuring time per workload (route: of each side)")
	fs.IntVar(&l.load.Tokens, "tokens", 200000, "tokens issued before a consume or lookup run")
	sf.register(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	l.load.OAuthLookups = 3
	var cleanup func()
	var err error
	if l.bin, l.dir, l.nodeArgs, cleanup, err = sf.env(); err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return mode(&l, ctx)
}

// startNodes starts n nodes that log warnings only, as a measurement
// wants them.
func (l *loopbackRun) startNodes(ctx context.Context, n int, args ...string) (*proccluster.Cluster, error) {
	return proccluster.StartCluster(ctx, proccluster.ClusterConfig{Binary: l.bin, Dir: l.dir, Nodes: n,
		Args: append(args, l.nodeArgs...), LogLevel: "warn"})
}

func (l *loopbackRun) node(ctx context.Context) error {
	c, err := l.startNodes(ctx, 1)
	if err != nil {
		return err
	}
	defer c.Stop()
	l.load.Addr = c.Nodes[0].URL()
	return runWorkloads(ctx, l.load, "issue,consume,rotate,lookup,introspect", outputs{})
}

func (l *loopbackRun) nonce(ctx context.Context) error {
	mc, err := peers.StartMemcached(ctx, l.dir)
	if errors.Is(err, proccluster.ErrNotInstalled) {
		return fmt.Errorf("memcached is not installed (make deps): %w", err)
	}
	if err != nil {
		return err
	}
	defer mc.Stop()
	c, err := l.startNodes(ctx, 1, "--memcached", mc.Addrs[0])
	if err != nil {
		return err
	}
	defer c.Stop()
	l.load.Addr, l.load.Memcached = c.Nodes[0].URL(), mc.Addrs[0]
	return runWorkloads(ctx, l.load, "nonce,memcached", outputs{})
}

func (l *loopbackRun) cluster(ctx context.Context) error {
	c, err := l.startNodes(ctx, 3)
	if err != nil {
		return err
	}
	defer c.Stop()
	l.load.Addr = c.Addrs()
	if err := runWorkloads(ctx, l.load, "issue,consume,rotate", outputs{}); err != nil {
		return err
	}
	leader, followers, err := c.Roles(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("reads on follower %s (leader %s):\n", followers[0].API, leader.ID)
	l.load.Addr = followers[0].URL()
	return runWorkloads(ctx, l.load, "lookup,introspect", outputs{})
}

func (l *loopbackRun) route(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	up, err := proccluster.StartEcho(ctx, self, l.dir, "a")
	if err != nil {
		return err
	}
	defer up.Stop(30 * time.Second)
	rt, err := proccluster.StartRouter(ctx, l.bin, l.dir, "--local-dc", "a", "--upstream", "a=http://"+up.Addr,
		"--primary-dc", "a", "--log-level", "warn")
	if err != nil {
		return err
	}
	defer rt.Stop(30 * time.Second)
	return compareRoute(ctx, "http://"+up.Addr, "http://"+rt.Addr, "/wiki/Main_Page", l.load.Clients, l.load.Duration, 2)
}
