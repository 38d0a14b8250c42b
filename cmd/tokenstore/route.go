package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenstore/tokenstore/internal/logging"
	"github.com/tokenstore/tokenstore/routing"
)

const routeUsage = `usage: tokenstore route [flags]             run the primary-DC router
       tokenstore route export --format F   write the rules for another proxy
       tokenstore route rules               print the built-in rules (YAML)

(tokenstore-bench echo is a small upstream for trials; tokenstore-bench
route measures the router's overhead.)

The router is an HTTP reverse proxy run in each datacenter in front of the
application servers. Requests that write (POST unless it carries
Promise-Non-Write-API-Action: true), the OAuth authorize flow, and requests
with the cookie UseDC=master go to the primary datacenter; everything else
to the local one (rules: --rules FILE, default: Wikimedia's). After a write
routed to the primary DC the response sets UseDC=master for --stick-ttl.

The primary DC is --primary-dc, or with --tokenstore the token store
leader's DC, polled from GET /v1/cluster (the last known value is kept while
no node answers).

Responses name the DC that served (X-Tokenstore-Served-DC) and the decision
(X-Tokenstore-Route). An upstream that cannot be reached answers 502
upstream_unavailable (504 upstream_timeout), a DC without --upstream 502
no_upstream, a primary DC never learned 503 primary_unknown. --admin-listen
serves /metrics, /healthz and /readyz apart from the proxied paths.
`

func routeCmd(args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "export":
			return routeExport(args[1:], os.Stdout)
		case "rules":
			if len(args) > 1 {
				return fmt.Errorf("usage: tokenstore route rules")
			}
			_, err := os.Stdout.Write(routing.DefaultRulesYAML())
			return err
		}
	}
	return routeServe(args)
}

// upstreamFlags collects repeated --upstream DC=URL.
type upstreamFlags map[string]*url.URL

func (u upstreamFlags) String() string {
	var s []string
	for dc, v := range u {
		s = append(s, dc+"="+v.String())
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func (u upstreamFlags) Set(v string) error {
	dc, target, err := routing.ParseUpstream(v)
	if err != nil {
		return err
	}
	if u[dc] != nil {
		return fmt.Errorf("upstream for DC %s given twice", dc)
	}
	u[dc] = target
	return nil
}

// routeCommon are the flags serve and export share.
type routeCommon struct {
	localDC, primaryDC, tokenstore, token, rulesFile string
	upstreams                                        upstreamFlags
	stickTTL                                         time.Duration
}

func (c *routeCommon) register(fs *flag.FlagSet) {
	c.upstreams = upstreamFlags{}
	fs.StringVar(&c.localDC, "local-dc", "", "datacenter this router runs in (required)")
	fs.Var(c.upstreams, "upstream", "DC=URL: the application servers of a DC, http(s)://host:port (repeat for each DC)")
	fs.StringVar(&c.primaryDC, "primary-dc", "", "the primary DC, fixed")
	fs.StringVar(&c.tokenstore, "tokenstore", "", "token store node URLs, comma-separated: the primary DC is the leader's DC (GET /v1/cluster)")
	fs.StringVar(&c.token, "tokenstore-token", os.Getenv("TOKENSTORE_API_KEY"), "API key for /v1/cluster when the store has --api-keys (or $TOKENSTORE_API_KEY)")
	fs.StringVar(&c.rulesFile, "rules", "", "YAML rules file (default: the built-in Wikimedia rules, see tokenstore route rules)")
	fs.DurationVar(&c.stickTTL, "stick-ttl", 10*time.Second, "how long the UseDC cookie set after a write sends the client to the primary DC (0: never set)")
}

func (c *routeCommon) check() (*routing.Rules, error) {
	if c.localDC == "" {
		return nil, errors.New("--local-dc is required")
	}
	if c.upstreams[c.localDC] == nil {
		return nil, fmt.Errorf("--upstream %s=URL is required (the local DC's application servers)", c.localDC)
	}
	if (c.primaryDC == "") == (c.tokenstore == "") {
		return nil, errors.New("give exactly one of --primary-dc and --tokenstore")
	}
	if c.primaryDC != "" && c.upstreams[c.primaryDC] == nil {
		return nil, fmt.Errorf("--primary-dc %s has no --upstream %s=URL", c.primaryDC, c.primaryDC)
	}
	if c.rulesFile == "" {
		return routing.DefaultRules(), nil
	}
	return routing.LoadRules(c.rulesFile)
}

func (c *routeCommon) watcher(interval time.Duration, log *slog.Logger, reg prometheus.Registerer) (*routing.ClusterWatcher, error) {
	return routing.NewClusterWatcher(routing.WatcherConfig{
		URLs: strings.Split(c.tokenstore, ","), Token: c.token, Interval: interval, Logger: log, Registry: reg,
	})
}

func routeServe(args []string) error {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), routeUsage, "\nflags of tokenstore route:\n"); fs.PrintDefaults() }
	var c routeCommon
	c.register(fs)
	listen := fs.String("listen", "127.0.0.1:7480", "address the router serves on")
	admin := fs.String("admin-listen", "", "address for /metrics, /healthz and /readyz (default: none)")
	refresh := fs.Duration("primary-refresh", 2*time.Second, "how often to read the primary DC from --tokenstore")
	upstreamTimeout := fs.Duration("upstream-timeout", 60*time.Second, "how long to wait for an upstream's response headers (then 504)")
	dialTimeout := fs.Duration("dial-timeout", 5*time.Second, "how long to wait for a connection to an upstream (then 502)")
	drain := fs.Duration("drain-timeout", 30*time.Second, "how long SIGTERM waits for requests in flight")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("route: unexpected argument %q", fs.Arg(0))
	}
	rules, err := c.check()
	if err != nil {
		return fmt.Errorf("route: %w", err)
	}
	log, err := logging.New(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var primary routing.PrimarySource = routing.StaticPrimary(c.primaryDC)
	if c.tokenstore != "" {
		w, err := c.watcher(*refresh, log, reg)
		if err != nil {
			return err
		}
		first, cancel := context.WithTimeout(ctx, 5*time.Second)
		w.Refresh(first) // failures are logged; requests for the primary get 503 until it is known
		cancel()
		go w.Run(ctx)
		primary = w
	}
	rt, err := routing.New(routing.Config{
		Rules: rules, LocalDC: c.localDC, Upstreams: c.upstreams, Primary: primary, StickTTL: c.stickTTL,
		DialTimeout: *dialTimeout, UpstreamTimeout: *upstreamTimeout, Logger: log, Registry: reg,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("route listen: %w", err)
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	// The router is the handler itself, not under a ServeMux: paths reach
	// the rules and the upstream exactly as sent.
	srv := &http.Server{Handler: rt, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	var adminSrv *http.Server
	if *admin != "" {
		aln, err := net.Listen("tcp", *admin)
		if err != nil {
			srv.Close()
			return fmt.Errorf("admin listen: %w", err)
		}
		adminSrv = &http.Server{Handler: rt.AdminHandler(reg), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
		go func() { serveErr <- adminSrv.Serve(aln) }()
		log.Info("admin endpoints", "addr", aln.Addr().String())
	}
	log.Info("tokenstore route serving", "addr", ln.Addr().String(), "local_dc", c.localDC, "upstreams", c.upstreams.String(),
		"primary", primarySourceName(c), "rules", rulesName(c.rulesFile), "stick_ttl", c.stickTTL)

	select {
	case <-ctx.Done():
		log.Info("shutting down: draining requests")
	case err := <-serveErr:
		srv.Close()
		if adminSrv != nil {
			adminSrv.Close()
		}
		return fmt.Errorf("route: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if adminSrv != nil {
		adminSrv.Shutdown(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	log.Info("stopped cleanly")
	return nil
}

func primarySourceName(c routeCommon) string {
	if c.primaryDC != "" {
		return "static " + c.primaryDC
	}
	return "leader's DC from " + c.tokenstore
}

func rulesName(file string) string {
	if file == "" {
		return "built-in (Wikimedia)"
	}
	return file
}

const exportUsage = `usage: tokenstore route export --format yaml|ats-lua|envoy|envoy-json [flags]

Writes the router's rules for another proxy; the decisions are the same as
the built-in router's for the same flags:

  yaml        the rules themselves (the built-in ones with their comments)
  ats-lua     Apache Traffic Server: a tslua remap script and header_rewrite
              rules for the stick cookie, written into --out (a directory);
              the remap.config line is printed
  envoy       Envoy v3 RouteConfiguration (YAML); clusters dc_<DC> must be
  envoy-json  defined for the local and the primary DC

ATS and Envoy have no live view of the token store cluster: the primary
DC (--primary-dc, or with --tokenstore the leader's DC read once now) and
its upstream (--upstream) are fixed in the output. Export again after a
failover, or run tokenstore route, which follows the leader.
`

func routeExport(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("route export", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), exportUsage, "\nflags:\n"); fs.PrintDefaults() }
	var c routeCommon
	c.register(fs)
	format := fs.String("format", "", "yaml, ats-lua, envoy or envoy-json")
	out := fs.String("out", "", "ats-lua: directory for the two files (default: the current one); others: output file (default: stdout)")
	scriptName := fs.String("script-name", "tokenstore-route.lua", "ats-lua: the script's path as remap.config names it (relative: to the ATS config directory)")
	stickName := fs.String("stick-name", "tokenstore-route-stick.config", "ats-lua: the header_rewrite rules' path as remap.config names it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("route export: unexpected argument %q", fs.Arg(0))
	}
	write := func(b []byte) error {
		if *out == "" {
			_, err := stdout.Write(b)
			return err
		}
		return os.WriteFile(*out, b, 0o644)
	}
	if *format == "yaml" {
		if c.rulesFile == "" {
			return write(routing.DefaultRulesYAML())
		}
		rules, err := routing.LoadRules(c.rulesFile)
		if err != nil {
			return err
		}
		b, err := routing.MarshalRules(rules)
		if err != nil {
			return err
		}
		return write(b)
	}
	if *format != "ats-lua" && *format != "envoy" && *format != "envoy-json" {
		return fmt.Errorf("route export: --format %q: want yaml, ats-lua, envoy or envoy-json", *format)
	}
	rules, err := c.check()
	if err != nil {
		return fmt.Errorf("route export: %w", err)
	}
	primaryDC := c.primaryDC
	if primaryDC == "" {
		w, err := c.watcher(5*time.Second, slog.New(slog.DiscardHandler), nil)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Refresh(ctx); err != nil {
			return fmt.Errorf("route export: reading the primary DC: %w", err)
		}
		primaryDC, _ = w.PrimaryDC()
		fmt.Fprintf(os.Stderr, "tokenstore route export: the primary DC is %s (the token store leader's), fixed in the output\n", primaryDC)
	}
	cfg := routing.ExportConfig{Rules: rules, LocalDC: c.localDC, PrimaryDC: primaryDC, Upstreams: c.upstreams, StickTTL: c.stickTTL}
	switch *format {
	case "ats-lua":
		x, err := routing.ExportATS(cfg, *scriptName, *stickName)
		if err != nil {
			return err
		}
		dir := *out
		if dir == "" {
			dir = "."
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(*scriptName)), x.Script, 0o644); err != nil {
			return err
		}
		if x.StickRules != nil {
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(*stickName)), x.StickRules, 0o644); err != nil {
				return err
			}
		}
		_, err = fmt.Fprintln(stdout, x.RemapLine)
		return err
	default:
		rc, err := routing.ExportEnvoy(cfg)
		if err != nil {
			return err
		}
		for _, w := range routing.EnvoyRegexWarnings(rc) {
			fmt.Fprintln(os.Stderr, "tokenstore route export: warning:", w)
		}
		var b []byte
		if *format == "envoy-json" {
			b, err = routing.EnvoyJSON(rc)
		} else {
			b, err = routing.EnvoyYAML(rc, fmt.Sprintf(
				"Envoy v3 RouteConfiguration of the tokenstore primary-DC router, generated by\n"+
					"tokenstore route export --format envoy. Local DC %s (cluster %s), primary DC %s\n"+
					"(cluster %s), fixed here: export again after a failover.",
				c.localDC, routing.EnvoyCluster(c.localDC), primaryDC, routing.EnvoyCluster(primaryDC)))
		}
		if err != nil {
			return err
		}
		return write(b)
	}
}
