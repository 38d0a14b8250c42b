package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/internal/logging"
	"github.com/tokenstore/tokenstore/nonce"
	"github.com/tokenstore/tokenstore/token"
)

// maxTrustedProxies bounds --trusted-proxies: a longer chain of proxies
// that each append to X-Forwarded-For is a misconfiguration.
const maxTrustedProxies = 16

type serveFlags struct {
	dataDir, apiAddr, raftAddr, raftAdvertise string
	nodeID, dc                                string
	pprofAddr                                 string
	policyFile, keysFile, hashKeyFile, vendor string
	insecure, pprof                           bool
	logLevel, logFormat                       string
	gcGrace, snapshotInterval, drainTimeout   time.Duration
	snapshotThreshold                         uint64

	memcached                     string
	nonceWindow, memcachedTimeout time.Duration
	nonceFailOpen                 bool
	nonceLocalMax                 int

	apiAdvertise                         string
	gossipAddr, gossipAdvertise          string
	gossipLANAddr, gossipLANAdvertise    string
	gossipKey, join, primaryDC           string
	tlsCert, tlsKey, tlsCA               string
	bootstrapExpect                      int
	nonVoter                             bool
	deadNodeTimeout, lastUsedGranularity time.Duration
	maxStaleness                         time.Duration

	rotationGrace                      time.Duration
	authzCookie, authzDefaultRLC       string
	authzBearerKinds, authzCookieKinds string
	trustedProxies                     int
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	fs.StringVar(&f.dataDir, "data-dir", "./data", "directory for the Raft log, snapshots and node id")
	fs.StringVar(&f.apiAddr, "api-addr", "127.0.0.1:7400", "HTTP API listen address")
	fs.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7401", "Raft listen address")
	fs.StringVar(&f.raftAdvertise, "advertise-raft", "", "Raft address other nodes reach this one at (default: --raft-addr)")
	fs.StringVar(&f.nodeID, "node-id", "", "node id (default: generated once and kept in the data dir)")
	fs.StringVar(&f.dc, "dc", "dc1", "datacenter of this node")
	fs.StringVar(&f.policyFile, "policy", "", "YAML policy file overriding the built-in token kinds")
	fs.StringVar(&f.keysFile, "api-keys", "", "file of API keys, one name:key per line")
	fs.StringVar(&f.hashKeyFile, "hash-key-file", "", "file with a cluster-wide key: secrets are stored as HMAC-SHA-256 instead of SHA-256")
	fs.StringVar(&f.vendor, "vendor-prefix", token.DefaultVendor, "prefix of minted secrets")
	fs.BoolVar(&f.insecure, "insecure", false, "allow, with a warning at every start, what is refused off loopback: an API without API keys, a Raft port without mutual TLS, gossip without --gossip-key")
	fs.BoolVar(&f.pprof, "pprof", false, "serve Go profiles under /debug/pprof/ on the API address, behind --api-keys (refused on a non-loopback API without keys)")
	fs.StringVar(&f.pprofAddr, "pprof-addr", "", "serve Go profiles under /debug/pprof/ on a listener of their own, which must be loopback")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&f.gcGrace, "gc-grace", 10*time.Minute, "how long expired tokens answer token_expired before they are collected")
	fs.Uint64Var(&f.snapshotThreshold, "snapshot-threshold", 8192, "log entries between Raft snapshots")
	fs.DurationVar(&f.snapshotInterval, "snapshot-interval", 2*time.Minute, "how often to check whether a snapshot is due")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", 30*time.Second, "how long SIGTERM waits for requests in flight")
	fs.StringVar(&f.memcached, "memcached", "", "memcached servers for replay nonces, host:port[,host:port...] (default: an in-process store, node-local)")
	fs.DurationVar(&f.nonceWindow, "nonce-window", 5*time.Minute, "accepted nonce timestamp skew either way, and how long a nonce is remembered")
	fs.BoolVar(&f.nonceFailOpen, "nonce-fail-open", false, "accept nonces as fresh while the nonce store is down (replays pass unnoticed)")
	fs.DurationVar(&f.memcachedTimeout, "memcached-timeout", 250*time.Millisecond, "timeout of one memcached operation")
	fs.IntVar(&f.nonceLocalMax, "nonce-local-max", 1<<20, "live nonces the in-process store holds before it refuses (fail closed)")
	fs.StringVar(&f.apiAdvertise, "advertise-api", "", "API address other nodes and /v1/cluster show (default: the bound --api-addr)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "", "gossip address of the cross-DC (WAN) pool; default with --join or --bootstrap-expect: the --raft-addr host, port+1")
	fs.StringVar(&f.gossipAdvertise, "advertise-gossip", "", "WAN gossip address other nodes reach this one at")
	fs.StringVar(&f.gossipLANAddr, "gossip-lan-addr", "", "gossip address of the pool of this DC (default: the --gossip-addr host, port+1)")
	fs.StringVar(&f.gossipLANAdvertise, "advertise-gossip-lan", "", "LAN gossip address other nodes of this DC reach this one at")
	fs.StringVar(&f.gossipKey, "gossip-key", os.Getenv("TOKENSTORE_GOSSIP_KEY"), "gossip encryption keyring: base64 keys of 16, 24 or 32 bytes, comma-separated, the first one primary (or $TOKENSTORE_GOSSIP_KEY)")
	fs.StringVar(&f.join, "join", "", "WAN gossip addresses of existing nodes, comma-separated")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "first start of a new cluster: bootstrap once this many voters see each other")
	fs.BoolVar(&f.nonVoter, "nonvoter", false, "join as a non-voter: a read replica that never leads")
	fs.StringVar(&f.primaryDC, "primary-dc", "", "datacenter that leadership moves to whenever a voter there is healthy")
	fs.DurationVar(&f.deadNodeTimeout, "dead-node-timeout", 72*time.Hour, "remove a node from the Raft configuration after it has been gone this long")
	fs.DurationVar(&f.lastUsedGranularity, "last-used-granularity", time.Minute, "a token's last use (lookups, introspection) is written at most this often")
	fs.DurationVar(&f.maxStaleness, "max-staleness", 30*time.Second, "a replica that has not heard from a leader for this long answers local reads (lookup, introspection, external authorization) 503 replica_stale (0: no bound)")
	fs.DurationVar(&f.rotationGrace, "rotation-grace", 0, "a retried rotation of the same refresh token within this time gets the same successor instead of revoking the grant (0: off)")
	fs.StringVar(&f.authzCookie, "authz-cookie", "tks_session", "session cookie that Envoy external authorization ("+api.AuthzPrefix+") reads")
	fs.StringVar(&f.authzDefaultRLC, "authz-default-rlc", "default", "rate-limit class of an authorized request whose tokens name none")
	fs.StringVar(&f.authzBearerKinds, "authz-bearer-kinds", "access,developer", "kinds accepted as Authorization: Bearer tokens by external authorization")
	fs.StringVar(&f.authzCookieKinds, "authz-cookie-kinds", "access,remember", "kinds accepted in the session cookie by external authorization")
	fs.IntVar(&f.trustedProxies, "trusted-proxies", 1, "proxies in front of external authorization that append to X-Forwarded-For: the last-use IP is the entry this far from the right (0: record none)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for node-to-node mutual TLS (Raft and forwarding)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA that every node's certificate must be signed by")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	return run(f, os.Stderr)
}

func run(f serveFlags, logOut io.Writer) error {
	log, err := logging.New(logOut, f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	policy := token.DefaultPolicy()
	if f.policyFile != "" {
		if policy, err = token.LoadPolicy(f.policyFile); err != nil {
			return err
		}
	}
	format, err := token.NewFormat(f.vendor, policy)
	if err != nil {
		return err
	}
	var hashKey []byte
	if f.hashKeyFile != "" {
		b, err := os.ReadFile(f.hashKeyFile)
		if err != nil {
			return fmt.Errorf("read hash key: %w", err)
		}
		if hashKey = []byte(strings.TrimSpace(string(b))); len(hashKey) < 32 {
			return fmt.Errorf("hash key in %s: want at least 32 bytes", f.hashKeyFile)
		}
	}
	if f.trustedProxies < 0 || f.trustedProxies > maxTrustedProxies {
		return fmt.Errorf("--trusted-proxies %d: want 0 to %d", f.trustedProxies, maxTrustedProxies)
	}
	authz := api.AuthzConfig{Cookie: f.authzCookie, DefaultRLC: f.authzDefaultRLC, TrustedProxies: &f.trustedProxies}
	for _, k := range []struct {
		flag, list string
		out        *[]string
	}{{"authz-bearer-kinds", f.authzBearerKinds, &authz.BearerKinds}, {"authz-cookie-kinds", f.authzCookieKinds, &authz.CookieKinds}} {
		*k.out = []string{}
		for _, kind := range strings.Split(k.list, ",") {
			if kind = strings.TrimSpace(kind); kind == "" {
				continue
			}
			if _, ok := policy.Kinds[kind]; !ok {
				return fmt.Errorf("--%s: unknown kind %q", k.flag, kind)
			}
			*k.out = append(*k.out, kind)
		}
	}
	if f.rotationGrace < 0 || f.rotationGrace > api.MaxRotationGrace {
		return fmt.Errorf("--rotation-grace %s: want 0 (off) to %s", f.rotationGrace, api.MaxRotationGrace)
	}
	var keys *api.Keys
	if f.keysFile != "" {
		if keys, err = api.LoadKeys(f.keysFile); err != nil {
			return err
		}
	}
	if keys == nil && !isLoopback(f.apiAddr) {
		if !f.insecure {
			return fmt.Errorf("refusing to serve the API on non-loopback %s without --api-keys (or pass --insecure)", f.apiAddr)
		}
		log.Warn("INSECURE: the API is off loopback without --api-keys: anyone who reaches it can issue, read and revoke tokens (--insecure)", "api_addr", f.apiAddr)
	}
	if err := checkProfiles(f, keys); err != nil {
		return err
	}
	ccfg, err := clusterConfig(f)
	if err != nil {
		return err
	}
	if err := checkNodePorts(f.insecure, ccfg, log); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nonces, err := newNonceChecker(f, log, reg)
	if err != nil {
		return err
	}
	ccfg.Logger, ccfg.LogOutput, ccfg.LogLevel, ccfg.Registry = log, logOut, f.logLevel, reg
	ccfg.LogJSON = f.logFormat == "json"
	ccfg.Check = api.CommandChecker(policy, f.rotationGrace)
	// The API listens first, so that the address other nodes are told is
	// the one bound (port 0 allowed).
	ln, err := net.Listen("tcp", f.apiAddr)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	if ccfg.APIAddr == "" {
		ccfg.APIAddr = ln.Addr().String()
	}
	pprofLn, err := listenProfiles(f.pprofAddr)
	if err != nil {
		ln.Close()
		return err
	}
	node, err := cluster.Open(ccfg)
	if err != nil {
		ln.Close()
		if pprofLn != nil {
			pprofLn.Close()
		}
		return err
	}
	apiSrv := api.New(api.Config{
		Store: node, Policy: policy, Format: format, Hasher: token.NewHasher(hashKey), Keys: keys,
		Nonces: nonces, DC: f.dc, Logger: log, Registry: reg, Gatherer: reg,
		RotationGrace: f.rotationGrace, Authz: authz,
	})
	var handler http.Handler = apiSrv
	if f.pprof {
		handler = withProfiles(apiSrv)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("tokenstore serving", "node", node.ID(), "dc", f.dc, "api_addr", ln.Addr().String(),
		"raft_addr", node.RaftAddr(), "data_dir", f.dataDir, "auth", keys != nil, "hmac", hashKey != nil,
		"node_tls", ccfg.TLS != nil)

	serveErr := make(chan error, 2)
	go func() { serveErr <- fmt.Errorf("api: %w", srv.Serve(ln)) }()
	pprofSrv := profileServer(log)
	if pprofLn != nil {
		log.Info("serving Go profiles", "pprof_addr", pprofLn.Addr().String())
		go func() { serveErr <- fmt.Errorf("pprof: %w", pprofSrv.Serve(pprofLn)) }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("shutting down: draining requests", "signal", s.String())
	case err := <-serveErr:
		srv.Close()
		pprofSrv.Close()
		node.Close()
		return err
	}
	// Profiles are not requests to drain.
	pprofSrv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), f.drainTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	if err := node.Close(); err != nil && !errors.Is(err, cluster.ErrShutdown) {
		return fmt.Errorf("close raft: %w", err)
	}
	log.Info("stopped cleanly")
	return nil
}

// clusterConfig turns the flags into the node's configuration. With no
// --join and no --bootstrap-expect a new node bootstraps as its own
// one-voter cluster: the embedded default, without gossip, or with
// --gossip-addr a first node that others then --join.
func clusterConfig(f serveFlags) (cluster.Config, error) {
	c := cluster.Config{
		NodeID: f.nodeID, DataDir: f.dataDir, RaftAddr: f.raftAddr, RaftAdvertise: f.raftAdvertise,
		DC: f.dc, APIAddr: f.apiAdvertise, NonVoter: f.nonVoter, PrimaryDC: f.primaryDC,
		BootstrapExpect: f.bootstrapExpect, DeadNodeTimeout: f.deadNodeTimeout, LastUsedGranularity: f.lastUsedGranularity,
		SnapshotThreshold: f.snapshotThreshold, SnapshotInterval: f.snapshotInterval, GCGrace: f.gcGrace,
		MaxStaleness: f.maxStaleness,
	}
	if f.join != "" {
		c.Join = strings.Split(f.join, ",")
	}
	c.Bootstrap = f.join == "" && f.bootstrapExpect == 0
	clustered := !c.Bootstrap || f.gossipAddr != ""
	if f.maxStaleness < 0 {
		return c, fmt.Errorf("--max-staleness %s: want 0 (no bound) or more", f.maxStaleness)
	}
	if f.bootstrapExpect < 0 {
		return c, fmt.Errorf("--bootstrap-expect %d: want 0 or more", f.bootstrapExpect)
	}
	if f.nonVoter && f.bootstrapExpect > 0 {
		return c, fmt.Errorf("--nonvoter and --bootstrap-expect: a non-voter cannot bootstrap a cluster")
	}
	if clustered {
		var err error
		if c.GossipAddr = f.gossipAddr; c.GossipAddr == "" {
			if c.GossipAddr, err = nextPort(f.raftAddr); err != nil {
				return c, fmt.Errorf("--gossip-addr: %w", err)
			}
		}
		if c.GossipLANAddr = f.gossipLANAddr; c.GossipLANAddr == "" {
			if c.GossipLANAddr, err = nextPort(c.GossipAddr); err != nil {
				return c, fmt.Errorf("--gossip-lan-addr: %w", err)
			}
		}
		c.GossipAdvertise, c.GossipLANAdvertise = f.gossipAdvertise, f.gossipLANAdvertise
		for _, k := range strings.Split(f.gossipKey, ",") {
			if k = strings.TrimSpace(k); k == "" {
				continue
			}
			key, err := base64.StdEncoding.DecodeString(k)
			if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
				return c, fmt.Errorf("--gossip-key: each key must be base64 of 16, 24 or 32 bytes")
			}
			c.GossipKeys = append(c.GossipKeys, key)
		}
	}
	if f.tlsCert != "" || f.tlsKey != "" || f.tlsCA != "" {
		if f.tlsCert == "" || f.tlsKey == "" || f.tlsCA == "" {
			return c, fmt.Errorf("--tls-cert, --tls-key and --tls-ca: give all three for node-to-node mutual TLS")
		}
		tlsConf, err := cluster.LoadTLS(cluster.TLSFiles{Cert: f.tlsCert, Key: f.tlsKey, CA: f.tlsCA})
		if err != nil {
			return c, err
		}
		c.TLS = tlsConf
	}
	return c, nil
}

// checkNodePorts refuses node-to-node ports off loopback without their
// protection: the Raft port (Raft and forwarded writes) without mutual
// TLS, gossip without a key ring. With insecure they are allowed, and
// each is logged at every start.
func checkNodePorts(insecure bool, c cluster.Config, log *slog.Logger) error {
	if raft := offLoopback(c.RaftAddr, c.RaftAdvertise); len(raft) > 0 && c.TLS == nil {
		if !insecure {
			return fmt.Errorf("refusing to run the Raft port on non-loopback %s without mutual TLS: give --tls-cert, --tls-key and --tls-ca (or pass --insecure)",
				strings.Join(raft, ", "))
		}
		log.Warn("INSECURE: the Raft port is off loopback without TLS: anyone who reaches it can read the replicated log, join the cluster and write as a node (--insecure)",
			"raft_addr", strings.Join(raft, ","))
	}
	if c.GossipAddr == "" || len(c.GossipKeys) > 0 {
		return nil
	}
	if gossip := offLoopback(c.GossipAddr, c.GossipAdvertise, c.GossipLANAddr, c.GossipLANAdvertise); len(gossip) > 0 {
		if !insecure {
			return fmt.Errorf("refusing to gossip on non-loopback %s without a key ring: give --gossip-key (or pass --insecure)",
				strings.Join(gossip, ", "))
		}
		log.Warn("INSECURE: gossip is off loopback without --gossip-key: anyone who reaches it can read and forge the membership (addresses, roles, DCs) (--insecure)",
			"gossip_addr", strings.Join(gossip, ","))
	}
	return nil
}

// offLoopback returns the given addresses that are set and not loopback,
// each once.
func offLoopback(addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		if a != "" && !isLoopback(a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// nextPort returns addr with its port plus one (port 0 stays 0).
func nextPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", err
	}
	if p != 0 {
		p++
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// newNonceChecker builds the replay-nonce store: memcached when servers
// are given, else the in-process store of the embedded default.
func newNonceChecker(f serveFlags, log *slog.Logger, reg prometheus.Registerer) (*nonce.Checker, error) {
	if f.nonceWindow < time.Second {
		return nil, fmt.Errorf("--nonce-window %s: want at least 1s", f.nonceWindow)
	}
	var store nonce.Store
	if f.memcached != "" {
		servers := strings.Split(f.memcached, ",")
		mc, err := nonce.NewMemcached(nonce.MemcachedConfig{Servers: servers, Timeout: f.memcachedTimeout, Registry: reg})
		if err != nil {
			return nil, err
		}
		store = mc
		log.Info("replay nonces in memcached", "servers", servers, "window", f.nonceWindow)
	} else {
		if f.nonceLocalMax < 1 {
			return nil, fmt.Errorf("--nonce-local-max %d: want at least 1", f.nonceLocalMax)
		}
		store = nonce.NewLocal(f.nonceLocalMax)
		log.Warn("replay nonces are node-local: in-process store, not shared with other nodes (use --memcached)",
			"window", f.nonceWindow, "max", f.nonceLocalMax)
	}
	if f.nonceFailOpen {
		log.Warn("NONCE CHECKS FAIL OPEN: while the nonce store is down every nonce is accepted and replays pass unnoticed (--nonce-fail-open)")
	}
	return nonce.NewChecker(store, nonce.Config{DC: f.dc, Window: f.nonceWindow, FailOpen: f.nonceFailOpen, Registry: reg}), nil
}

// isLoopback reports whether a listen address only accepts local clients.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
