package cluster

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenstore/tokenstore/fsm"
)

// Config configures a node. Zero values take the defaults noted.
type Config struct {
	NodeID        string // default: kept in DataDir/node-id, generated once
	DataDir       string
	RaftAddr      string // bind address, host:port
	RaftAdvertise string // default: the address RaftAddr bound (port 0 allowed)
	DC            string
	APIAddr       string      // the client API address others are told
	TLS           *tls.Config // node-to-node mutual TLS (transport.LoadTLS); nil: plain TCP

	// Bootstrap makes a node with no Raft state a one-voter cluster.
	Bootstrap bool
	// BootstrapExpect makes a node with no Raft state wait until this many
	// voters (counting itself) see each other through gossip; then they
	// form the cluster together. 0 with Join set: wait to be added.
	BootstrapExpect int
	NonVoter        bool   // join as a non-voter (a read replica)
	PrimaryDC       string // leadership moves to a healthy voter here
	// GossipAddr and the rest are the gossip pools' bind and advertise
	// addresses, the key ring and the WAN addresses to join through (see
	// membership.Config). An empty GossipAddr means no membership: a
	// single node.
	GossipAddr, GossipAdvertise       string // WAN pool, every node
	GossipLANAddr, GossipLANAdvertise string // LAN pool, this DC
	GossipKeys                        [][]byte
	Join                              []string // WAN gossip addresses
	// DeadNodeTimeout is how long a server may be gone before the leader
	// removes it from the Raft configuration. Default 72h.
	DeadNodeTimeout time.Duration
	// ReconcileInterval is how often the leader compares membership with
	// the Raft configuration. Default 1s.
	ReconcileInterval time.Duration
	// LastUsedGranularity is how often, at most, a token's last use is
	// written. Default 1m.
	LastUsedGranularity time.Duration
	// MaxStaleness is how long a replica may go without hearing from a
	// leader before it answers local reads ErrStale. 0: no bound.
	MaxStaleness time.Duration
	// Check validates a command a peer forwards before the leader proposes
	// it: the API's field checks (api.CommandChecker, which the API runs on
	// its own writes), and the policy's decisions (single use, max uses,
	// reuse detection, TTL bounds) recomputed, in place. A refusal answers
	// the peer ErrRefused. nil checks command types only.
	Check func(fsm.Command) error

	// LogStore is the Raft log's store on disk, LogStoreWAL or
	// LogStoreBolt; "" takes what DataDir holds, the WAL in a new one.
	LogStore string

	// A snapshot is taken once the log since the last one holds
	// SnapshotLogRatio of that snapshot's size in bytes, at least
	// SnapshotMinLog and at most SnapshotMaxLog (defaults 0.25, 4 MiB,
	// 16 MiB), or SnapshotThreshold entries (default 65536), whichever
	// comes first; whether one is due is checked every SnapshotInterval
	// (default 1s). See snapshot.go.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	SnapshotLogRatio  float64
	SnapshotMinLog    uint64
	SnapshotMaxLog    uint64
	GCInterval        time.Duration // default 1s
	GCGrace           time.Duration // expired tokens stay readable (as expired) this long
	// GCBatch is the most ids one expiry command deletes, default 500.
	// While more are due the leader proposes one such command after
	// another, each once the last applied (gc.go).
	GCBatch int

	// Now is the node's wall clock; default time.Now. Log time follows
	// what the voters' clocks say (voters.go).
	Now func() time.Time

	// Logger receives the node's lines, Raft's and memberlist's included;
	// its handler decides their format and level. Default slog.Default().
	Logger *slog.Logger
	// Registry takes the node's metrics; default a registry of its own.
	Registry prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 65536
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = time.Second
	}
	if c.SnapshotLogRatio == 0 {
		c.SnapshotLogRatio = 0.25
	}
	if c.SnapshotMinLog == 0 {
		c.SnapshotMinLog = 4 << 20
	}
	if c.SnapshotMaxLog == 0 {
		c.SnapshotMaxLog = 16 << 20
	}
	if c.GCInterval == 0 {
		c.GCInterval = time.Second
	}
	if c.GCBatch == 0 {
		c.GCBatch = 500
	}
	if c.DeadNodeTimeout == 0 {
		c.DeadNodeTimeout = 72 * time.Hour
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = time.Second
	}
	if c.LastUsedGranularity == 0 {
		c.LastUsedGranularity = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
}
