package cluster

import (
	"context"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/cluster/membership"
)

// maybeBootstrap forms a new cluster once BootstrapExpect voters with no
// Raft state see each other and have each proved who they are over the
// node-to-node transport. Every one of them bootstraps with the same
// configuration (all of them, by id), which Raft allows; a node that
// sees any member with state joins that cluster instead, added by its
// leader.
func (n *Node) maybeBootstrap(ctx context.Context) {
	if n.inConfiguration() {
		n.hadState = true
		if err := n.members.UpdateMeta(n.meta()); err != nil {
			n.log.Warn("announcing raft state", "err", err)
		}
		return
	}
	if n.cfg.BootstrapExpect == 0 || n.cfg.NonVoter {
		return
	}
	var candidates []membership.Status
	for _, m := range n.members.Members() {
		if m.Alive && m.HasState {
			return // a cluster exists: wait to be added
		}
		if !m.Alive || !m.Voter || m.Expect == 0 {
			continue // nodes started with --join only wait to be added
		}
		if m.Expect != n.cfg.BootstrapExpect {
			n.log.Warn("a node expects another cluster size; not bootstrapping", "node", m.ID, "expect", m.Expect)
			return
		}
		candidates = append(candidates, m)
	}
	if len(candidates) < n.cfg.BootstrapExpect {
		return
	}
	// Gossip only says who a node claims to be. A node that fails the
	// check is left out. Only exactly BootstrapExpect checked voters
	// bootstrap: with fewer the next round tries again, and with more,
	// nodes whose checks disagreed could bootstrap different lists.
	var servers []raft.Server
	for i, err := range n.checkPeers(ctx, candidates) {
		m := candidates[i]
		if err != nil {
			n.log.Warn("not bootstrapping with a node gossip announced: it does not answer as itself",
				"node", m.ID, "raft_addr", m.RaftAddr, "err", err)
			continue
		}
		servers = append(servers, raft.Server{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr), Suffrage: raft.Voter})
	}
	if len(servers) > n.cfg.BootstrapExpect {
		n.log.Warn("more voters expect to bootstrap than --bootstrap-expect; not bootstrapping", "expect", n.cfg.BootstrapExpect, "voters", len(servers))
		return
	}
	if len(servers) < n.cfg.BootstrapExpect || ctx.Err() != nil {
		return
	}
	slices.SortFunc(servers, func(a, b raft.Server) int { return compareIDs(a.ID, b.ID) })
	if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		n.log.Warn("bootstrap", "err", err)
		return
	}
	n.log.Info("bootstrapped the cluster", "voters", len(servers))
}

func compareIDs(a, b raft.ServerID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// inConfiguration reports whether this node has a Raft configuration
// that lists it.
func (n *Node) inConfiguration() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			return true
		}
	}
	return false
}
