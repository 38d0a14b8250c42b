package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/cluster/membership"
	"github.com/tokenstore/tokenstore/cluster/transport"
	"github.com/tokenstore/tokenstore/fsm"
)

// Node is one member of the token store's Raft group.
type Node struct {
	cfg       Config
	log       *slog.Logger
	raft      *raft.Raft
	fsm       *fsm.Machine
	logs      logStore
	snaps     raft.SnapshotStore
	mux       *transport.Mux
	transport *raft.NetworkTransport
	rpc       *http.Client
	rpcSrv    *http.Server
	members   *membership.Membership // nil without gossip
	metrics   *metrics

	// changed wakes the leader's reconcile loop, joinWake the join loop,
	// on a membership change.
	changed, joinWake chan struct{}

	queue    chan *pending
	inflight chan struct{}
	// fwdQueue holds the writes a follower forwards in batches, and
	// leaderRPC what it knows of the calls its leader serves.
	fwdQueue    chan *forwarded
	fwdInflight *callSlots
	leaderRPC   leaderRPC
	// rpcServed, when not 0, is the rpcVersion this node claims and
	// serves instead of its own (tests of mixed versions).
	rpcServed atomic.Int32
	// versionClaimed, when not 0, is the fsm.Version this node reports
	// instead of its own (tests of a cluster before the log's fence).
	versionClaimed atomic.Int32
	leaderCh       chan bool // Raft's NotifyCh

	// leaderReady is true once this node leads and has applied everything
	// committed before its term; leader reads and GC wait for it.
	leaderReady atomic.Bool
	hadState    bool // Raft state existed when the node opened
	// seen is what the leader knows of its voters' clocks and command
	// types; log time and the version gate follow it.
	seen voterView

	reqPrefix string // of this process's request ids
	reqSeq    atomic.Uint64

	touches touches // last uses waiting to be written
	contact contact // what the node last knew of a leader

	closeOnce sync.Once
	closing   chan struct{}
	wg        sync.WaitGroup
}

// Open starts a node on its data directory.
func Open(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	id, err := nodeID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	cfg.NodeID = id
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("node", id),
		fsm:         fsm.New(),
		queue:       make(chan *pending, 4096),
		inflight:    make(chan struct{}, maxInflight),
		fwdQueue:    make(chan *forwarded, 4096),
		fwdInflight: new(callSlots),
		leaderRPC:   leaderRPC{wake: make(chan struct{}, 1)},
		closing:     make(chan struct{}),
		changed:     make(chan struct{}, 1),
		touches:     touches{pending: map[string]fsm.Use{}, written: map[string]int64{}},
		joinWake:    make(chan struct{}, 1),
	}
	prefix := make([]byte, 12)
	if _, err := rand.Read(prefix); err != nil {
		return nil, err
	}
	n.reqPrefix = base64.RawURLEncoding.EncodeToString(prefix) + "."
	n.contact.gone = make(chan struct{})
	n.metrics = newMetrics(cfg.Registry, n)
	n.fsm.OnHalt(func(h fsm.Halt) {
		n.log.Error("the state machine stopped applying: this node does not know an entry of the log; it serves nothing until a version that knows it runs on this data",
			"index", h.Index, "type", int(h.Type), "reason", h.Reason)
		go n.handOverHalted() // not on Raft's apply goroutine, which it waits for
	})
	if err := n.openRaft(); err != nil {
		n.closeStores()
		return nil, err
	}
	n.electAlone()
	// Counted from here: restoring a large snapshot at start is no time
	// without a leader.
	n.contact.mu.Lock()
	n.contact.opened = time.Now()
	n.contact.known = n.contact.opened
	n.contact.mu.Unlock()
	n.rpc = n.rpcClient()
	n.rpcSrv = n.rpcServer()
	go n.rpcSrv.Serve(n.mux.RPCListener())
	n.wg.Add(8)
	go n.snapshotLoop()
	go n.coalesce()
	go n.forwardLoop()
	go n.askLeaderLoop()
	go n.watchLeadership()
	go n.flushTouches()
	go n.watchContact()
	go n.watchLeader()
	if n.members != nil {
		n.wg.Add(1)
		go n.joinLoop()
	}
	return n, nil
}

func (n *Node) openRaft() error {
	cfg := n.cfg
	// From the node's logger as given, without n.log's "node": Raft's
	// own pairs use that key for its state ("Node at addr [Follower]").
	hlog := newRaftLogger(cfg.Logger, "raft")
	var err error
	var kind string
	n.logs, kind, err = openLogStore(cfg.DataDir, cfg.LogStore, newRaftLogger(cfg.Logger, "raft-wal"))
	if err != nil {
		return err
	}
	n.log.Info("raft log", "store", kind)
	logs, err := raft.NewLogCache(1024, n.logs)
	if err != nil {
		return err
	}
	snaps, err := newSnapshotStore(cfg.DataDir, 2, hlog)
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	n.snaps = snaps
	var adv net.Addr // nil: the mux advertises the address it bound
	if cfg.RaftAdvertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
		if err != nil {
			return fmt.Errorf("raft advertise address %q: %w", cfg.RaftAdvertise, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			return fmt.Errorf("raft advertise address %q: must be a reachable IP", cfg.RaftAdvertise)
		}
		adv = a
	}
	if n.mux, err = transport.Listen(cfg.RaftAddr, adv, cfg.TLS, n.log); err != nil {
		return err
	}
	n.transport = n.mux.RaftTransport(hlog)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.CommitTimeout = commitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	n.leaderCh = make(chan bool, 16)
	rc.NotifyCh = n.leaderCh

	has, err := raft.HasExistingState(logs, n.logs, snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	n.hadState = has
	if !has && cfg.Bootstrap {
		conf := raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: n.transport.LocalAddr(), Suffrage: raft.Voter,
		}}}
		if err := raft.BootstrapCluster(rc, logs, n.logs, snaps, n.transport, conf); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		n.log.Info("bootstrapped a new cluster", "raft_addr", n.transport.LocalAddr())
	}
	if cfg.GossipAddr != "" {
		if err := n.startMembership(); err != nil {
			return err
		}
	}
	n.raft, err = raft.NewRaft(rc, n.fsm.RaftFSM(), logs, n.logs, snaps, n.transport)
	if err != nil {
		if n.members != nil {
			n.members.Shutdown()
		}
		return fmt.Errorf("start raft: %w", err)
	}
	return nil
}

// electAlone starts an election at once on a node that is the only voter
// of its configuration (a single node restarting on its data directory):
// nobody else can lead, so waiting out Raft's heartbeat timeout (1-2 s)
// first is only time without a leader. As watchLeader does for a gone
// leader, it lowers the heartbeat timeout through ReloadConfig, which
// makes a follower check it at once, and puts it back: the check sees no
// leader's contact ever, and Raft stands. Only timing changes, never what
// Raft decides.
func (n *Node) electAlone() {
	if n.cfg.NonVoter || n.raft.State() != raft.Follower {
		return
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters, self := 0, false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
			self = self || s.ID == raft.ServerID(n.cfg.NodeID)
		}
	}
	if voters != 1 || !self {
		return
	}
	normal := n.raft.ReloadableConfig()
	if normal.HeartbeatTimeout <= leaderQuiet {
		return
	}
	short := normal
	short.HeartbeatTimeout = leaderQuiet // Raft's floor: the leader lease
	if err := n.raft.ReloadConfig(short); err != nil {
		n.log.Warn("electing at once as the only voter", "err", err)
		return
	}
	if err := n.raft.ReloadConfig(normal); err != nil {
		n.log.Warn("restoring the heartbeat timeout", "err", err)
		return
	}
	n.log.Info("the only voter of the configuration: electing at once")
}

// nodeID returns the configured id, or the one kept in the data directory,
// generating it on the first start. A node must keep its id for life.
func nodeID(dir, configured string) (string, error) {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		kept := strings.TrimSpace(string(b))
		if configured != "" && configured != kept {
			return "", fmt.Errorf("node id %q given, but data dir belongs to node %q", configured, kept)
		}
		return kept, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("read node id: %w", err)
	}
	id := configured
	if id == "" {
		r := make([]byte, 8)
		if _, err := rand.Read(r); err != nil {
			return "", err
		}
		id = "node-" + hex.EncodeToString(r)
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return id, nil
}

// ID returns the node's Raft server id.
func (n *Node) ID() string { return n.cfg.NodeID }

// RaftAddr returns the address other nodes reach this node's Raft (and
// RPC) at.
func (n *Node) RaftAddr() string { return n.mux.Addr().String() }

// GossipAddr returns the node's WAN gossip address, "" without gossip.
func (n *Node) GossipAddr() string {
	if n.members == nil {
		return ""
	}
	return n.members.WANAddr()
}

// GossipLANAddr returns the node's LAN gossip address, "" without gossip.
func (n *Node) GossipLANAddr() string {
	if n.members == nil {
		return ""
	}
	return n.members.LANAddr()
}

func (n *Node) notLeader() error {
	if addr, _ := n.raft.LeaderWithID(); addr == "" {
		return ErrNoLeader
	}
	return ErrNotLeader
}

// Ready returns nil when the node can serve: a leader is known, and this
// node, if it leads, has applied everything from earlier terms; a follower
// must not lag the commit index by more than maxLag entries, its own or,
// when the leader answers within probeTimeout, the leader's.
func (n *Node) Ready() error {
	if err := n.halted(); err != nil {
		return err
	}
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		return ErrNoLeader
	}
	if n.raft.State() == raft.Leader {
		if !n.leaderReady.Load() {
			return fmt.Errorf("%w: leader still applying earlier terms", ErrBehind)
		}
		return nil
	}
	applied := n.raft.AppliedIndex()
	if commit := n.raft.CommitIndex(); commit > applied+maxLag {
		return fmt.Errorf("%w: applied %d, commit %d", ErrBehind, applied, commit)
	}
	// A follower's own commit index goes no further than its log: one
	// that is being sent a snapshot, or whose log the leader is still
	// looking for the match of (a new node, a restarted one far behind),
	// knows a leader and no commit index past what it applied. The
	// leader's says how far behind it is. A leader that does not answer
	// in time leaves the follower's own view to decide: a busy leader does
	// not take its followers out of service.
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	if st, err := n.remoteStatus(ctx, string(addr)); err == nil && st.Commit > applied+maxLag {
		return fmt.Errorf("%w: applied %d, the leader's commit %d", ErrBehind, applied, st.Commit)
	}
	return nil
}

const maxLag = 1000

// halted is ErrHalted, naming where and why, once the state machine stopped.
func (n *Node) halted() error {
	if h, ok := n.fsm.Halted(); ok {
		return fmt.Errorf("%w at log index %d (command type %d): %s", ErrHalted, h.Index, h.Type, h.Reason)
	}
	return nil
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// TransferLeadership hands leadership to the server id at addr; this node
// must lead.
func (n *Node) TransferLeadership(id, addr string) error {
	return n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr)).Error()
}

// Close hands leadership over if there is anyone to take it, stops Raft
// and closes the log. Writes still queued fail with ErrShutdown.
func (n *Node) Close() error { return n.stop(true) }

// Kill stops the node as a crash would: no leadership transfer, no
// goodbye to the other nodes. The data directory is left as it is.
func (n *Node) Kill() error { return n.stop(false) }

func (n *Node) stop(graceful bool) error {
	var err error
	n.closeOnce.Do(func() {
		if graceful && n.raft.State() == raft.Leader && n.voters() > 1 {
			if terr := n.raft.LeadershipTransfer().Error(); terr != nil {
				n.log.Warn("leadership transfer before shutdown", "err", terr)
			} else {
				n.log.Info("handed leadership over before shutdown")
			}
		}
		if graceful && n.members != nil {
			if lerr := n.members.Leave(2 * time.Second); lerr != nil {
				n.log.Warn("leaving the gossip pools", "err", lerr)
			}
		}
		close(n.closing)
		n.wg.Wait()
		err = n.raft.Shutdown().Error()
		if n.members != nil {
			n.members.Shutdown()
		}
		n.rpcSrv.Close()
		n.closeStores()
	})
	return err
}

// closeStores closes what the node opened, in the order that keeps Raft
// from seeing accept errors: the transport (and its pooled outgoing
// streams) before the mux under it.
func (n *Node) closeStores() {
	if n.transport != nil {
		n.transport.CloseStreams()
		n.transport.Close()
	}
	if n.mux != nil {
		n.mux.Close()
	}
	if n.logs != nil {
		n.logs.Close()
	}
}

func (n *Node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	v := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			v++
		}
	}
	return v
}

// ByID reads the local replica by public id; like every local read, it
// fails on a halted or stale replica.
func (n *Node) ByID(id string) (*fsm.Record, error) {
	if err := errors.Join(n.halted(), n.checkStale()); err != nil {
		return nil, err
	}
	return n.fsm.ByID(id), nil
}

// ListBySubject reads a page of a subject's active tokens from the local
// replica.
func (n *Node) ListBySubject(subject, kind, after string, limit int, now int64) ([]*fsm.Record, string, error) {
	if err := errors.Join(n.halted(), n.checkStale()); err != nil {
		return nil, "", err
	}
	recs, next := n.fsm.ListBySubject(subject, kind, after, limit, now)
	return recs, next, nil
}

// AppliedIndex is the index the local replica reflects.
func (n *Node) AppliedIndex() uint64 { return n.fsm.AppliedIndex() }

// commitTimeout is how long a leader goes without new entries before it
// sends its followers the commit index (Raft's default is 50 ms; it waits
// between one and two of it). At low load that wait is what a follower's
// lookup with min_index after a write through it waits for. 10 ms costs
// an idle 3-node cluster about 4% of a core more than 50 ms
// (BENCHMARKS.md, across datacenters).
const commitTimeout = 10 * time.Millisecond
