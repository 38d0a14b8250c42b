package server

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/token"
)

// MaxTrustedProxies bounds Config.Authz.TrustedProxies: a longer chain of
// proxies that each append to X-Forwarded-For is a misconfiguration.
const MaxTrustedProxies = 16

// Config is everything a node needs, as values. New takes them as they
// are: start from DefaultConfig for the defaults of tokenstore serve. Its
// refusals name the serve flag that sets the value, as operators know it.
type Config struct {
	// The node and its Raft port.
	NodeID        string // default: generated once and kept in DataDir
	DataDir       string
	DC            string
	RaftAddr      string      // bind address, host:port
	RaftAdvertise string      // default: the address RaftAddr bound
	TLS           *tls.Config // node-to-node mutual TLS; nil: plain TCP

	// Membership. With no Join and no BootstrapExpect the node bootstraps
	// as its own one-voter cluster, without gossip unless GossipAddr is
	// set (a first node that others then join).
	Join            []string // WAN gossip addresses of existing nodes
	BootstrapExpect int
	NonVoter        bool
	PrimaryDC       string
	// GossipAddr defaults, when the node gossips, to the RaftAddr host with
	// the port plus one; GossipLANAddr to the GossipAddr host, port plus one.
	GossipAddr, GossipAdvertise       string
	GossipLANAddr, GossipLANAdvertise string
	GossipKeys                        [][]byte // key ring, the first one primary
	DeadNodeTimeout                   time.Duration
	LastUsedGranularity               time.Duration
	MaxStaleness                      time.Duration // 0: no bound
	// Snapshots: see cluster.Config. SnapshotLogRatio 0 takes the
	// cluster's default.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	SnapshotLogRatio  float64
	GCGrace           time.Duration
	LogStore          string // cluster.LogStoreWAL or LogStoreBolt; "": what DataDir holds

	// The API. It listens on Listener when one is given (the server owns
	// it from then on, closing it on an error and at a stop), else on
	// APIAddr.
	APIAddr      string
	Listener     net.Listener
	APIAdvertise string        // the API address others are told; default: the bound one
	Policy       *token.Policy // default: token.DefaultPolicy()
	Vendor       string        // prefix of minted secrets
	HashKey      []byte        // set: secrets are stored as HMAC-SHA-256
	Keys         *api.Keys     // set: required on every /v1 request
	Authz        api.AuthzConfig
	// RotationGrace is how long a retried rotation gets the same successor.
	RotationGrace time.Duration
	// Insecure allows, with a warning, what is refused off loopback: an
	// API without Keys, a Raft port without TLS, gossip without GossipKeys.
	Insecure bool

	// Replay nonces are checked by NonceChecker when set, else by the store
	// Nonce describes.
	Nonce        NonceConfig
	NonceChecker api.NonceChecker

	// Every line the node logs, Raft's included, goes to LogOutput (default
	// stderr) at LogLevel, as LogFormat ("text" or "json").
	LogOutput           io.Writer
	LogLevel, LogFormat string

	// Pprof serves Go profiles on the API address, behind Keys; PprofAddr
	// on a loopback listener of its own.
	Pprof     bool
	PprofAddr string
	// DrainTimeout bounds how long Shutdown waits for requests in flight;
	// 0 waits for none.
	DrainTimeout time.Duration

	// For tests: the node's wall clock (default time.Now), the API's read
	// clock (default Clock), the API's bound on a min_index wait, and how
	// often the leader collects garbage and reconciles membership (0: the
	// cluster's defaults).
	Clock, Now        func() time.Time
	MinIndexWait      time.Duration
	GCInterval        time.Duration
	ReconcileInterval time.Duration
	// ConnState, when set, is told every state change of an API
	// connection, as http.Server.ConnState is.
	ConnState func(net.Conn, http.ConnState)
}

// NonceConfig describes the replay-nonce store: memcached when Memcached
// names servers, else an in-process store of at most LocalMax nonces.
type NonceConfig struct {
	Memcached []string
	Timeout   time.Duration // of one memcached operation
	LocalMax  int
	Window    time.Duration // accepted timestamp skew, and how long a nonce is kept
	FailOpen  bool          // accept nonces as fresh while the store is down
}

// DefaultConfig returns the defaults of tokenstore serve: the embedded
// single node, data in ./data, the API on 127.0.0.1:7400.
func DefaultConfig() Config {
	one := 1
	return Config{
		DataDir: "./data", DC: "dc1", RaftAddr: "127.0.0.1:7401", APIAddr: "127.0.0.1:7400",
		DeadNodeTimeout: 72 * time.Hour, LastUsedGranularity: time.Minute, MaxStaleness: 30 * time.Second,
		SnapshotThreshold: 65536, SnapshotInterval: time.Second, SnapshotLogRatio: 0.25, GCGrace: 10 * time.Minute,
		Vendor: token.DefaultVendor,
		Authz: api.AuthzConfig{Cookie: "tks_session", DefaultRLC: "default", TrustedProxies: &one,
			BearerKinds: []string{token.KindAccess, token.KindDeveloper}, CookieKinds: []string{token.KindAccess, token.KindRemember}},
		Nonce:    NonceConfig{Timeout: 250 * time.Millisecond, LocalMax: 1 << 20, Window: 5 * time.Minute},
		LogLevel: "info", LogFormat: "text", DrainTimeout: 30 * time.Second,
	}
}

// Gossips reports whether the node runs gossip membership: to join or
// bootstrap a cluster, or as a first node others join.
func (c *Config) Gossips() bool {
	return len(c.Join) > 0 || c.BootstrapExpect != 0 || c.GossipAddr != ""
}

// check refuses values no node runs with, and fills in the gossip
// addresses. What Insecure allows is logged, at every start.
func (c *Config) check(log *slog.Logger) error {
	if tp := c.Authz.TrustedProxies; tp != nil && (*tp < 0 || *tp > MaxTrustedProxies) {
		return fmt.Errorf("--trusted-proxies %d: want 0 to %d", *tp, MaxTrustedProxies)
	}
	for _, k := range []struct {
		flag  string
		kinds []string
	}{{"authz-bearer-kinds", c.Authz.BearerKinds}, {"authz-cookie-kinds", c.Authz.CookieKinds}} {
		for _, kind := range k.kinds {
			if _, ok := c.Policy.Kinds[kind]; !ok {
				return fmt.Errorf("--%s: unknown kind %q", k.flag, kind)
			}
		}
	}
	if err := cluster.CheckLogStore(c.LogStore); err != nil {
		return fmt.Errorf("--raft-log-store: %w", err)
	}
	if c.SnapshotLogRatio < 0 {
		return fmt.Errorf("--snapshot-log-ratio %g: want more than 0 (0 takes the default)", c.SnapshotLogRatio)
	}
	if c.RotationGrace < 0 || c.RotationGrace > api.MaxRotationGrace {
		return fmt.Errorf("--rotation-grace %s: want 0 (off) to %s", c.RotationGrace, api.MaxRotationGrace)
	}
	apiAddr := c.APIAddr
	if c.Listener != nil {
		apiAddr = c.Listener.Addr().String()
	}
	if c.Keys == nil && !isLoopback(apiAddr) {
		if !c.Insecure {
			return fmt.Errorf("refusing to serve the API on non-loopback %s without --api-keys (or pass --insecure)", apiAddr)
		}
		log.Warn("INSECURE: the API is off loopback without --api-keys: anyone who reaches it can issue, read and revoke tokens (--insecure)", "api_addr", apiAddr)
	}
	if err := checkProfiles(c, apiAddr); err != nil {
		return err
	}
	if err := c.checkMembership(); err != nil {
		return err
	}
	return checkNodePorts(c, log)
}

// checkMembership checks the cluster values and fills in the gossip
// addresses of a node that gossips.
func (c *Config) checkMembership() error {
	if c.MaxStaleness < 0 {
		return fmt.Errorf("--max-staleness %s: want 0 (no bound) or more", c.MaxStaleness)
	}
	if c.BootstrapExpect < 0 {
		return fmt.Errorf("--bootstrap-expect %d: want 0 or more", c.BootstrapExpect)
	}
	if c.NonVoter && c.BootstrapExpect > 0 {
		return fmt.Errorf("--nonvoter and --bootstrap-expect: a non-voter cannot bootstrap a cluster")
	}
	if !c.Gossips() {
		return nil
	}
	var err error
	if c.GossipAddr == "" {
		if c.GossipAddr, err = nextPort(c.RaftAddr); err != nil {
			return fmt.Errorf("--gossip-addr: %w", err)
		}
	}
	if c.GossipLANAddr == "" {
		if c.GossipLANAddr, err = nextPort(c.GossipAddr); err != nil {
			return fmt.Errorf("--gossip-lan-addr: %w", err)
		}
	}
	return nil
}

// checkNodePorts refuses node-to-node ports off loopback without their
// protection: the Raft port (Raft and forwarded writes) without mutual
// TLS, gossip without a key ring. With Insecure they are allowed, and
// each is logged at every start.
func checkNodePorts(c *Config, log *slog.Logger) error {
	if raft := offLoopback(c.RaftAddr, c.RaftAdvertise); len(raft) > 0 && c.TLS == nil {
		if !c.Insecure {
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
		if !c.Insecure {
			return fmt.Errorf("refusing to gossip on non-loopback %s without a key ring: give --gossip-key (or pass --insecure)",
				strings.Join(gossip, ", "))
		}
		log.Warn("INSECURE: gossip is off loopback without --gossip-key: anyone who reaches it can read and forge the membership (addresses, roles, DCs) (--insecure)",
			"gossip_addr", strings.Join(gossip, ","))
	}
	return nil
}

// clusterConfig is the node's part of c, checked, with the API address
// the other nodes are told. It is the one place that hands the cluster
// its logging.
func clusterConfig(c *Config, apiAddr string, log *slog.Logger) cluster.Config {
	cc := cluster.Config{
		NodeID: c.NodeID, DataDir: c.DataDir, RaftAddr: c.RaftAddr, RaftAdvertise: c.RaftAdvertise,
		DC: c.DC, APIAddr: apiAddr, TLS: c.TLS,
		Bootstrap: len(c.Join) == 0 && c.BootstrapExpect == 0, BootstrapExpect: c.BootstrapExpect,
		NonVoter: c.NonVoter, PrimaryDC: c.PrimaryDC, Join: c.Join,
		DeadNodeTimeout: c.DeadNodeTimeout, ReconcileInterval: c.ReconcileInterval,
		LastUsedGranularity: c.LastUsedGranularity, MaxStaleness: c.MaxStaleness,
		SnapshotThreshold: c.SnapshotThreshold, SnapshotInterval: c.SnapshotInterval, SnapshotLogRatio: c.SnapshotLogRatio,
		GCInterval: c.GCInterval, GCGrace: c.GCGrace, Now: c.Clock,
		LogStore: c.LogStore, Logger: log,
	}
	if c.Gossips() {
		cc.GossipAddr, cc.GossipAdvertise = c.GossipAddr, c.GossipAdvertise
		cc.GossipLANAddr, cc.GossipLANAdvertise = c.GossipLANAddr, c.GossipLANAdvertise
		cc.GossipKeys = c.GossipKeys
	}
	return cc
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
