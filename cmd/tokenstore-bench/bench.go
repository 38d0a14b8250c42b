// Command tokenstore-bench measures tokenstore: workloads against running
// nodes, local clusters, tokenstore beside etcd, Redis and memcached, the
// chaos run with its checked history, and the router's overhead. It runs
// the tokenstore binary; the daemon links none of its tooling.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tokenstore/tokenstore/bench/chaos"
	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/bench/peers"
	"github.com/tokenstore/tokenstore/bench/xdc"
	"github.com/tokenstore/tokenstore/internal/netem"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

const usage = `usage: tokenstore-bench <command> [flags]

commands:
  run      drive workloads against a running tokenstore
  cluster  start a local cluster of tokenstore until SIGINT/SIGTERM
  peers    tokenstore side by side with etcd, Redis, memcached and the
           HTTP floor, with the servers' CPU per operation
  chaos    a local multi-DC cluster under faults, its history checked
  expiry   tokens expiring in bulk under lookups: lookup latency before,
           during and after, the GC rate, the time until they are gone
  xdc      latency across datacenters per DC and operation, in network
           namespaces behind an emulated cross-DC link, with the verdicts
           of the cross-DC targets
  route    the router's overhead: the same request direct and through it
  echo     a small upstream for trials and benchmarks of the router
  floor    the HTTP floor of peers: decodes each request's JSON body and
           answers a fixed record-sized JSON
  loopback one-command measurements on loopback, servers started for them:
           node, nonce, cluster or route

The commands that start nodes run the tokenstore binary named by
$TOKENSTORE_BIN, else the one next to this binary, else tokenstore on $PATH.
Run "tokenstore-bench <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = benchRun(args)
	case "cluster":
		err = benchCluster(args)
	case "peers":
		err = benchPeers(args)
	case "chaos":
		err = benchChaos(args)
	case "xdc":
		err = benchXDC(args)
	case "expiry":
		err = benchExpiry(args)
	case "route":
		err = routeBench(args)
	case "echo":
		err = echo(args)
	case "floor":
		err = floor(args)
	case "loopback":
		err = loopback(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tokenstore-bench: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flag set printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenstore-bench:", err)
		os.Exit(1)
	}
}

// outputs are the files a bench command writes besides the terminal.
type outputs struct {
	json, report, plots string
}

func (o *outputs) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.json, "json", "", "write the results as JSON to this file")
	fs.StringVar(&o.report, "report", "", "write a markdown report to this file")
	fs.StringVar(&o.plots, "plots", "", "write latency CDF and throughput PNGs to this directory")
}

// write prints the summary table and writes the requested files.
func (o *outputs) write(rep *load.Report) error {
	fmt.Println()
	if err := rep.WriteTable(os.Stdout); err != nil {
		return err
	}
	if o.json != "" {
		if err := rep.WriteJSON(o.json); err != nil {
			return err
		}
	}
	if o.report != "" {
		if err := rep.WriteMarkdown(o.report); err != nil {
			return err
		}
	}
	if o.plots != "" {
		if _, err := rep.WritePlots(o.plots); err != nil {
			return err
		}
	}
	return nil
}

func benchRun(args []string) error {
	fs := flag.NewFlagSet("bench run", flag.ContinueOnError)
	var cfg load.Config
	var workloads string
	var out outputs
	fs.StringVar(&cfg.Addr, "addr", envOr("TOKENSTORE_ADDR", "http://127.0.0.1:7400"), "node API address, or several comma-separated (requests are spread over them)")
	fs.StringVar(&cfg.APIKey, "api-key", os.Getenv("TOKENSTORE_API_KEY"), "API key (or $TOKENSTORE_API_KEY)")
	fs.StringVar(&workloads, "workload", "issue,consume", "comma-separated: "+strings.Join(load.Workloads, ", "))
	fs.IntVar(&cfg.Clients, "clients", 64, "concurrent clients (closed loop)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measuring time per workload")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: requests per second in total, latency from the intended send time (0: closed loop)")
	fs.IntVar(&cfg.MaxInFlight, "max-inflight", 0, "open loop: requests outstanding at most; sends over it are dropped as errors (default 16 × clients)")
	fs.IntVar(&cfg.Tokens, "tokens", 200000, "tokens issued before a consume or lookup run")
	fs.StringVar(&cfg.Memcached, "memcached", "", "memcached host:port for the direct memcached workload")
	fs.IntVar(&cfg.OAuthLookups, "oauth-lookups", 3, "lookups of the access token in one oauth flow")
	out.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runWorkloads(ctx, cfg, workloads, out)
}

// runWorkloads runs the comma-separated workloads one after the other,
// printing each result and, when both ran, the ratio of the API's nonce
// checks to memcached's add(); then the summary table and the files out
// asks for.
func runWorkloads(ctx context.Context, cfg load.Config, workloads string, out outputs) error {
	rep := &load.Report{Machine: load.ReadMachine(), Started: time.Now().UTC()}
	opsPerS := map[string]float64{}
	for _, w := range strings.Split(workloads, ",") {
		cfg.Workload = strings.TrimSpace(w)
		res, err := load.Run(ctx, cfg, os.Stderr)
		if err != nil {
			return err
		}
		opsPerS[res.Workload] = res.OpsPerS
		rep.Results = append(rep.Results, res)
		fmt.Println(res)
	}
	// The API's nonce check against the same add() made directly.
	if api, direct := opsPerS["nonce"], opsPerS["memcached"]; api > 0 && direct > 0 {
		fmt.Printf("ratio    nonce/memcached = %.2f\n", api/direct)
	}
	return out.write(rep)
}

func benchCluster(args []string) error {
	fs := flag.NewFlagSet("bench cluster", flag.ContinueOnError)
	cfg := proccluster.ClusterConfig{}
	var sf serverFlags
	fs.IntVar(&cfg.Nodes, "nodes", 3, "nodes (in one datacenter unless --dcs is given)")
	dcs := dcsFlag(fs, "")
	fs.BoolVar(&cfg.Secure, "secure", false, "nodes talk over mutual TLS with a gossip key, both made for this run in --dir")
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.DCs, err = proccluster.ParseDCs(*dcs); err != nil {
		return err
	}
	var cleanup func()
	if cfg.Binary, cfg.Dir, cfg.Args, cleanup, err = sf.env(); err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := proccluster.StartCluster(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Stop()
	for _, n := range c.Nodes {
		fmt.Printf("node %s dc=%s url=%s pid=%d\n", n.ID, n.DC, n.URL(), n.Pid())
	}
	fmt.Printf("addr %s\n", c.Addrs())
	fmt.Fprintf(os.Stderr, "data and logs in %s; stop with SIGINT or SIGTERM\n", cfg.Dir)
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "stopping the cluster")
	return nil
}

// serverFlags are the flags of the bench subcommands that start servers:
// a directory for data and logs, and extra serve flags.
type serverFlags struct{ dir, nodeFlags string }

func (f *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "dir", "", "directory for data and logs (default: a temporary one, removed at exit)")
	fs.StringVar(&f.nodeFlags, "node-flags", "", "extra serve flags for every tokenstore node, space-separated")
}

// env is what a bench that starts servers needs: the tokenstore binary,
// to run them, a directory for their data and logs (--dir, created if
// missing, or a new temporary one that cleanup removes), and the extra
// serve flags. A --dir that holds anything is refused: nodes started on an
// earlier run's data keep that run's Raft configuration, whose addresses
// are gone, and would wait for a leader that never comes.
func (f *serverFlags) env() (binary, workDir string, nodeArgs []string, cleanup func(), err error) {
	if binary, err = daemonBinary(); err != nil {
		return "", "", nil, nil, err
	}
	nodeArgs = strings.Fields(f.nodeFlags)
	if f.dir != "" {
		if ents, err := os.ReadDir(f.dir); err == nil && len(ents) > 0 {
			return "", "", nil, nil, fmt.Errorf("--dir %s is not empty (data of an earlier run?): give a new or empty directory", f.dir)
		}
		return binary, f.dir, nodeArgs, func() {}, os.MkdirAll(f.dir, 0o755)
	}
	if workDir, err = os.MkdirTemp("", "tokenstore-bench-"); err != nil {
		return "", "", nil, nil, err
	}
	return binary, workDir, nodeArgs, func() { os.RemoveAll(workDir) }, nil
}

// textReport is the report of a bench that runs to its end.
type textReport interface {
	WriteText(io.Writer) error
	WriteJSON(path string) error
}

// runReport runs a bench on the servers sf describes (setup takes the
// binary, the directory and the node flags), until it ends or SIGINT or
// SIGTERM, prints its report and writes it as JSON to jsonOut, if set.
func runReport[R textReport](sf *serverFlags, jsonOut string, setup func(bin, dir string, nodeArgs []string),
	run func(context.Context) (R, error)) (R, error) {
	var zero R
	bin, dir, nodeArgs, cleanup, err := sf.env()
	if err != nil {
		return zero, err
	}
	defer cleanup()
	setup(bin, dir, nodeArgs)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx)
	if err != nil {
		return zero, err
	}
	fmt.Println()
	if err := rep.WriteText(os.Stdout); err != nil {
		return zero, err
	}
	if jsonOut != "" {
		if err := rep.WriteJSON(jsonOut); err != nil {
			return zero, err
		}
	}
	return rep, nil
}

// daemonBinary finds the tokenstore binary: $TOKENSTORE_BIN, the one next
// to this binary (as make build puts them), or tokenstore on $PATH.
func daemonBinary() (string, error) {
	if b := os.Getenv("TOKENSTORE_BIN"); b != "" {
		return b, nil
	}
	if self, err := os.Executable(); err == nil {
		next := filepath.Join(filepath.Dir(self), "tokenstore")
		if _, err := os.Stat(next); err == nil {
			return next, nil
		}
	}
	b, err := exec.LookPath("tokenstore")
	if err != nil {
		return "", fmt.Errorf("no tokenstore binary: set $TOKENSTORE_BIN, or put it next to tokenstore-bench or on $PATH: %w", err)
	}
	return b, nil
}

// dcsFlag is --dcs of the subcommands that start a local cluster.
func dcsFlag(fs *flag.FlagSet, def string) *string {
	return fs.String("dcs", def, "datacenters and their voters, name:voters[+nonvoters],... (the first is the primary)")
}

func benchPeers(args []string) error {
	fs := flag.NewFlagSet("bench peers", flag.ContinueOnError)
	var cfg peers.Config
	var systems, ops, scales string
	var sf serverFlags
	var out outputs
	fs.StringVar(&systems, "systems", strings.Join(peers.Systems, ","), "systems to measure, comma-separated")
	fs.StringVar(&ops, "ops", strings.Join(load.PeerOps, ","), "operations, comma-separated")
	fs.IntVar(&cfg.Load.Clients, "clients", 64, "concurrent clients (closed loop)")
	fs.DurationVar(&cfg.Load.Duration, "duration", 10*time.Second, "measuring time per operation and system")
	fs.Float64Var(&cfg.Load.Rate, "rate", 0, "open loop: requests per second in total (0: closed loop)")
	fs.IntVar(&cfg.Load.MaxInFlight, "max-inflight", 0, "open loop: requests outstanding at most (default 16 × clients)")
	fs.IntVar(&cfg.Tokens, "tokens", 100000, "tokens pre-issued for a consume run")
	fs.StringVar(&scales, "scale", "10000", "live tokens issued before measuring, comma-separated (e.g. 10000,1000000)")
	fs.IntVar(&cfg.Nodes, "nodes", 3, "tokenstore nodes and etcd members")
	sf.register(fs)
	out.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Scales, err = peers.ParseScales(scales); err != nil {
		return err
	}
	cfg.Systems, cfg.Ops = load.SplitList(systems), load.SplitList(ops)
	var cleanup func()
	if cfg.Binary, cfg.Dir, cfg.NodeArgs, cleanup, err = sf.env(); err != nil {
		return err
	}
	defer cleanup()
	// This binary serves the floor; without it the floor is skipped.
	cfg.Bench, _ = os.Executable()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := peers.Run(ctx, cfg, os.Stderr)
	if rep != nil && len(rep.Results) > 0 {
		if werr := out.write(rep); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// errChaosFailed is a chaos run whose history failed a check.
var errChaosFailed = errors.New("bench chaos: a check failed")

func benchChaos(args []string) error {
	fs := flag.NewFlagSet("bench chaos", flag.ContinueOnError)
	var cfg chaos.Config
	var faults string
	var sf serverFlags
	var net netem.Config
	var netns bool
	dcs := dcsFlag(fs, "a:3,b:2")
	fs.BoolVar(&netns, "netns", true, "run every node in a network namespace of its own behind an emulated network (needs root and iproute2); false: all on 127.0.0.1, without partitions or latency")
	fs.DurationVar(&net.Latency, "latency", 40*time.Millisecond, "round trip between nodes of different datacenters (with --netns)")
	fs.DurationVar(&net.Jitter, "jitter", 10*time.Millisecond, "the cross-DC round trip varies by up to ± this much")
	fs.DurationVar(&cfg.Duration, "duration", time.Minute, "how long the clients run")
	fs.Uint64Var(&cfg.Seed, "seed", uint64(time.Now().UnixNano()), "seed of the clients' and the faults' choices")
	fs.StringVar(&faults, "faults", "", "faults in order, cycled, comma-separated: "+strings.Join(chaos.FaultKinds, ", ")+" or "+chaos.FaultRandom+" (default: all; without --netns, those that need no network)")
	fs.DurationVar(&cfg.FaultEvery, "fault-every", 15*time.Second, "time between the end of one fault and the start of the next")
	fs.DurationVar(&cfg.Downtime, "downtime", 3*time.Second, "how long a killed node stays down and a paused one stopped")
	fs.DurationVar(&cfg.PartitionTime, "partition-time", 8*time.Second, "how long a partition lasts")
	fs.IntVar(&cfg.ClientsPerDC, "clients-per-dc", 4, "concurrent clients in every datacenter")
	fs.IntVar(&cfg.Keys, "keys", 16, "recent token keys the clients share (fewer: more collisions)")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of one request; a write that times out has an unknown outcome")
	fs.StringVar(&cfg.Out, "out", "chaos-out", "directory for the history, the report, the timeline and, on failure, the linearizability visualization")
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.DCs, err = proccluster.ParseDCs(*dcs); err != nil {
		return err
	}
	cfg.Faults = load.SplitList(faults)
	if netns {
		if err := netem.Available(); err != nil {
			return fmt.Errorf("%w (--netns=false runs the process faults on loopback)", err)
		}
		cfg.Net = &net
	}
	var cleanup func()
	if cfg.Binary, cfg.Dir, cfg.NodeArgs, cleanup, err = sf.env(); err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "seed %d\n", cfg.Seed)
	rep, err := chaos.Run(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	if err := rep.WriteText(os.Stdout); err != nil {
		return err
	}
	fmt.Printf("files: %s\n", strings.Join(rep.Files, " "))
	if !rep.Pass {
		return errChaosFailed
	}
	return nil
}

func benchXDC(args []string) error {
	fs := flag.NewFlagSet("bench xdc", flag.ContinueOnError)
	var cfg xdc.Config
	var sf serverFlags
	var jsonOut, report string
	dcs := dcsFlag(fs, "a:3,b:2")
	fs.DurationVar(&cfg.Net.Latency, "latency", 40*time.Millisecond, "round trip between nodes of different datacenters")
	fs.DurationVar(&cfg.Net.Jitter, "jitter", 0, "the cross-DC round trip varies by up to ± this much")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long the clients are measured")
	fs.DurationVar(&cfg.Warmup, "warmup", 3*time.Second, "how long the clients run unmeasured first")
	fs.IntVar(&cfg.ClientsPerDC, "clients-per-dc", 4, "concurrent clients in every datacenter, and sending to the leader directly")
	fs.Float64Var(&cfg.Rate, "rate", 20, "rounds (issue, lookup with min_index, consume, local lookup) a second of each client at most; 0: closed loop")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of one request")
	fs.StringVar(&jsonOut, "json", "", "write the results as JSON to this file")
	fs.StringVar(&report, "report", "", "write a markdown report to this file")
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.DCs, err = proccluster.ParseDCs(*dcs); err != nil {
		return err
	}
	if err := netem.Available(); err != nil {
		return err
	}
	rep, err := runReport(&sf, jsonOut, func(bin, dir string, args []string) { cfg.Binary, cfg.Dir, cfg.NodeArgs = bin, dir, args },
		func(ctx context.Context) (*xdc.Report, error) { return xdc.Run(ctx, cfg, os.Stderr) })
	if err != nil {
		return err
	}
	if report != "" {
		return rep.WriteMarkdown(report)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
