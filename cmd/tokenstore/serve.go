package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/cluster/transport"
	"github.com/tokenstore/tokenstore/internal/logging"
	"github.com/tokenstore/tokenstore/server"
	"github.com/tokenstore/tokenstore/token"
)

// serveFlags are the flags that name files to read or lists to parse
// before they are values of the node's server.Config; the others set it
// directly.
type serveFlags struct {
	policyFile, keysFile, hashKeyFile  string
	memcached, join, gossipKey         string
	tlsCert, tlsKey, tlsCA             string
	authzBearerKinds, authzCookieKinds string
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var f serveFlags
	cfg := server.DefaultConfig()
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Raft log, snapshots and node id")
	fs.StringVar(&cfg.APIAddr, "api-addr", cfg.APIAddr, "HTTP API listen address")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "Raft listen address")
	fs.StringVar(&cfg.RaftAdvertise, "advertise-raft", cfg.RaftAdvertise, "Raft address other nodes reach this one at (default: --raft-addr)")
	fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "node id (default: generated once and kept in the data dir)")
	fs.StringVar(&cfg.DC, "dc", cfg.DC, "datacenter of this node")
	fs.StringVar(&f.policyFile, "policy", "", "YAML policy file overriding the built-in token kinds")
	fs.StringVar(&f.keysFile, "api-keys", "", "file of API keys, one name:key per line")
	fs.StringVar(&f.hashKeyFile, "hash-key-file", "", "file with a cluster-wide key: secrets are stored as HMAC-SHA-256 instead of SHA-256")
	fs.StringVar(&cfg.Vendor, "vendor-prefix", cfg.Vendor, "prefix of minted secrets")
	fs.BoolVar(&cfg.Insecure, "insecure", cfg.Insecure, "allow, with a warning at every start, what is refused off loopback: an API without API keys, a Raft port without mutual TLS, gossip without --gossip-key")
	fs.BoolVar(&cfg.Pprof, "pprof", cfg.Pprof, "serve Go profiles under /debug/pprof/ on the API address, behind --api-keys (refused on a non-loopback API without keys)")
	fs.StringVar(&cfg.PprofAddr, "pprof-addr", cfg.PprofAddr, "serve Go profiles under /debug/pprof/ on a listener of their own, which must be loopback")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	fs.DurationVar(&cfg.GCGrace, "gc-grace", cfg.GCGrace, "how long expired tokens answer token_expired before they are collected")
	fs.StringVar(&cfg.LogStore, "raft-log-store", cfg.LogStore, "the Raft log's store on disk: wal (append-only segments, one fsync per write) or boltdb (raft-boltdb); default: what --data-dir holds, wal for a new one")
	fs.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", cfg.SnapshotThreshold, "log entries between Raft snapshots, at most (one is taken sooner by size: --snapshot-log-ratio)")
	fs.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", cfg.SnapshotInterval, "how often to check whether a snapshot is due")
	fs.Float64Var(&cfg.SnapshotLogRatio, "snapshot-log-ratio", cfg.SnapshotLogRatio, "take a snapshot once the log since the last one is this fraction of its size (at least 4 MiB, at most 16 MiB of log)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "how long SIGTERM waits for requests in flight")
	fs.StringVar(&f.memcached, "memcached", "", "memcached servers for replay nonces, host:port[,host:port...] (default: an in-process store, node-local)")
	fs.DurationVar(&cfg.Nonce.Window, "nonce-window", cfg.Nonce.Window, "accepted nonce timestamp skew either way, and how long a nonce is remembered")
	fs.BoolVar(&cfg.Nonce.FailOpen, "nonce-fail-open", cfg.Nonce.FailOpen, "accept nonces as fresh while the nonce store is down (replays pass unnoticed)")
	fs.DurationVar(&cfg.Nonce.Timeout, "memcached-timeout", cfg.Nonce.Timeout, "timeout of one memcached operation")
	fs.IntVar(&cfg.Nonce.LocalMax, "nonce-local-max", cfg.Nonce.LocalMax, "live nonces the in-process store holds before it refuses (fail closed)")
	fs.StringVar(&cfg.APIAdvertise, "advertise-api", cfg.APIAdvertise, "API address other nodes and /v1/cluster show (default: the bound --api-addr)")
	fs.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "gossip address of the cross-DC (WAN) pool; default with --join or --bootstrap-expect: the --raft-addr host, port+1")
	fs.StringVar(&cfg.GossipAdvertise, "advertise-gossip", cfg.GossipAdvertise, "WAN gossip address other nodes reach this one at")
	fs.StringVar(&cfg.GossipLANAddr, "gossip-lan-addr", cfg.GossipLANAddr, "gossip address of the pool of this DC (default: the --gossip-addr host, port+1)")
	fs.StringVar(&cfg.GossipLANAdvertise, "advertise-gossip-lan", cfg.GossipLANAdvertise, "LAN gossip address other nodes of this DC reach this one at")
	fs.StringVar(&f.gossipKey, "gossip-key", "", "gossip encryption keyring: base64 keys of 16, 24 or 32 bytes, comma-separated, the first one primary (or $TOKENSTORE_GOSSIP_KEY)")
	fs.StringVar(&f.join, "join", "", "WAN gossip addresses of existing nodes, comma-separated")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", cfg.BootstrapExpect, "first start of a new cluster: bootstrap once this many voters see each other")
	fs.BoolVar(&cfg.NonVoter, "nonvoter", cfg.NonVoter, "join as a non-voter: a read replica that never leads")
	fs.StringVar(&cfg.PrimaryDC, "primary-dc", cfg.PrimaryDC, "datacenter that leadership moves to whenever a voter there is healthy")
	fs.DurationVar(&cfg.DeadNodeTimeout, "dead-node-timeout", cfg.DeadNodeTimeout, "remove a node from the Raft configuration after it has been gone this long")
	fs.DurationVar(&cfg.LastUsedGranularity, "last-used-granularity", cfg.LastUsedGranularity, "a token's last use (lookups, introspection) is written at most this often")
	fs.DurationVar(&cfg.MaxStaleness, "max-staleness", cfg.MaxStaleness, "a replica that has not heard from a leader for this long answers local reads (lookup, introspection, external authorization) 503 replica_stale (0: no bound)")
	fs.DurationVar(&cfg.RotationGrace, "rotation-grace", cfg.RotationGrace, "a retried rotation of the same refresh token within this time gets the same successor instead of revoking the grant (0: off)")
	fs.StringVar(&cfg.Authz.Cookie, "authz-cookie", cfg.Authz.Cookie, "session cookie that Envoy external authorization ("+api.AuthzPrefix+") reads")
	fs.StringVar(&cfg.Authz.DefaultRLC, "authz-default-rlc", cfg.Authz.DefaultRLC, "rate-limit class of an authorized request whose tokens name none")
	fs.StringVar(&f.authzBearerKinds, "authz-bearer-kinds", strings.Join(cfg.Authz.BearerKinds, ","), "kinds accepted as Authorization: Bearer tokens by external authorization")
	fs.StringVar(&f.authzCookieKinds, "authz-cookie-kinds", strings.Join(cfg.Authz.CookieKinds, ","), "kinds accepted in the session cookie by external authorization")
	fs.IntVar(cfg.Authz.TrustedProxies, "trusted-proxies", *cfg.Authz.TrustedProxies, "proxies in front of external authorization that append to X-Forwarded-For: the last-use IP is the entry this far from the right (0: record none)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for node-to-node mutual TLS (Raft and forwarding)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA that every node's certificate must be signed by")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	// Read after parsing, not as the flag's default: a default would be
	// printed with the usage.
	if f.gossipKey == "" {
		f.gossipKey = os.Getenv("TOKENSTORE_GOSSIP_KEY")
	}
	err := f.apply(&cfg)
	if err == nil {
		err = run(cfg)
	}
	if err != nil && cfg.LogFormat == "json" {
		// Every line is JSON, the reason the node stopped included.
		if log, lerr := logging.New(os.Stderr, cfg.LogLevel, cfg.LogFormat); lerr == nil {
			log.Error("tokenstore serve stopped", "err", err)
			return errReported
		}
	}
	return err
}

// run serves the node until SIGTERM or SIGINT, then drains the requests
// in flight and closes the node.
func run(cfg server.Config) error {
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	log := s.Logger()
	s.Start()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sg := <-sig:
		log.Info("shutting down: draining requests", "signal", sg.String())
	case err := <-s.Err():
		s.Close()
		return err
	}
	if err := s.Shutdown(context.Background()); err != nil {
		return err
	}
	log.Info("stopped cleanly")
	return nil
}

// apply reads the files the flags name and parses their lists into c.
func (f serveFlags) apply(c *server.Config) error {
	var err error
	if f.policyFile != "" {
		if c.Policy, err = token.LoadPolicy(f.policyFile); err != nil {
			return err
		}
	}
	if f.hashKeyFile != "" {
		b, err := os.ReadFile(f.hashKeyFile)
		if err != nil {
			return fmt.Errorf("read hash key: %w", err)
		}
		if c.HashKey = []byte(strings.TrimSpace(string(b))); len(c.HashKey) < 32 {
			return fmt.Errorf("hash key in %s: want at least 32 bytes", f.hashKeyFile)
		}
	}
	c.Authz.BearerKinds, c.Authz.CookieKinds = kindList(f.authzBearerKinds), kindList(f.authzCookieKinds)
	if f.keysFile != "" {
		if c.Keys, err = api.LoadKeys(f.keysFile); err != nil {
			return err
		}
	}
	if f.memcached != "" {
		c.Nonce.Memcached = strings.Split(f.memcached, ",")
	}
	if f.join != "" {
		c.Join = strings.Split(f.join, ",")
	}
	if c.Gossips() {
		if c.GossipKeys, err = gossipKeys(f.gossipKey); err != nil {
			return err
		}
	}
	c.TLS, err = nodeTLS(f.tlsCert, f.tlsKey, f.tlsCA)
	return err
}

// kindList splits a comma-separated list of kinds; empty: none.
func kindList(list string) []string {
	kinds := []string{}
	for _, kind := range strings.Split(list, ",") {
		if kind = strings.TrimSpace(kind); kind != "" {
			kinds = append(kinds, kind)
		}
	}
	return kinds
}

// gossipKeys decodes the gossip key ring: base64 keys, comma-separated.
func gossipKeys(ring string) ([][]byte, error) {
	var keys [][]byte
	for _, k := range strings.Split(ring, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(k)
		if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
			return nil, fmt.Errorf("--gossip-key: each key must be base64 of 16, 24 or 32 bytes")
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// nodeTLS loads the node-to-node mutual TLS files; nil without them.
func nodeTLS(cert, key, ca string) (*tls.Config, error) {
	if cert == "" && key == "" && ca == "" {
		return nil, nil
	}
	if cert == "" || key == "" || ca == "" {
		return nil, fmt.Errorf("--tls-cert, --tls-key and --tls-ca: give all three for node-to-node mutual TLS")
	}
	return transport.LoadTLS(transport.TLSFiles{Cert: cert, Key: key, CA: ca})
}
