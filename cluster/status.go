package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/fsm"
)

// NodeStatus is one server of the Raft configuration as seen from here.
type NodeStatus struct {
	ID           string
	DC           string
	Role         string // leader, voter or nonvoter
	APIAddr      string
	RaftAddr     string
	AppliedIndex uint64
	Lag          uint64 // entries behind the leader's commit index
	// Healthy reports that the node answered its status call and that
	// gossip (when on) sees it alive.
	Healthy bool
}

// Status is the cluster as seen from this node.
type Status struct {
	Leader    string // node id, "" while there is none
	PrimaryDC string // the leader's DC: where writes are applied
	// PreferredPrimaryDC is where leadership is moved when it can be.
	PreferredPrimaryDC string
	Nodes              []NodeStatus
}

// statusTimeout bounds each node's status call.
const statusTimeout = time.Second

func (n *Node) localStatus() *statusReply {
	known := fsm.KnownTypes()
	types := make([]uint8, len(known))
	for i, t := range known {
		types[i] = uint8(t)
	}
	return &statusReply{ID: n.cfg.NodeID, State: n.raft.State().String(),
		Applied: n.fsm.AppliedIndex(), Commit: n.raft.CommitIndex(),
		Now: n.cfg.Now().UnixNano(), Types: types, Version: n.reportsVersion(),
		RPC: uint8(n.servesRPC())}
}

// reportsVersion is the fsm.Version this node reports to its peers.
func (n *Node) reportsVersion() uint8 {
	if v := n.versionClaimed.Load(); v != 0 {
		return uint8(v)
	}
	return fsm.Version
}

func (n *Node) remoteStatus(ctx context.Context, raftAddr string) (*statusReply, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	var st statusReply
	if err := n.call(ctx, raftAddr, rpcStatus, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ClusterStatus lists every server of the Raft configuration with its DC,
// role, addresses, applied index and health, asking each node in parallel.
func (n *Node) ClusterStatus(ctx context.Context) Status {
	st := Status{PreferredPrimaryDC: n.cfg.PrimaryDC}
	_, leaderID := n.raft.LeaderWithID()
	st.Leader = string(leaderID)
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return st
	}
	servers := f.Configuration().Servers
	st.Nodes = make([]NodeStatus, len(servers))
	var commit uint64
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, s := range servers {
		ns := &st.Nodes[i]
		ns.ID, ns.RaftAddr, ns.Role = string(s.ID), string(s.Address), "voter"
		if s.Suffrage != raft.Voter {
			ns.Role = "nonvoter"
		}
		if s.ID == leaderID {
			ns.Role = "leader"
		}
		alive := true
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			ns.DC, ns.APIAddr = n.cfg.DC, n.cfg.APIAddr
		} else if n.members != nil {
			m, ok := n.members.Member(string(s.ID))
			ns.DC, ns.APIAddr, alive = m.DC, m.APIAddr, ok && m.Alive
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r *statusReply
			var err error
			if s.ID == raft.ServerID(n.cfg.NodeID) {
				r = n.localStatus()
			} else if r, err = n.remoteStatus(ctx, string(s.Address)); err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ns.AppliedIndex, ns.Healthy = r.Applied, alive
			if s.ID == leaderID {
				commit = r.Commit
			}
		}()
	}
	wg.Wait()
	for i := range st.Nodes {
		ns := &st.Nodes[i]
		if ns.Role == "leader" {
			st.PrimaryDC = ns.DC
		}
		if ns.Healthy && commit > ns.AppliedIndex {
			ns.Lag = commit - ns.AppliedIndex
		}
	}
	return st
}
