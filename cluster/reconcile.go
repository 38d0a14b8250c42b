package cluster

import (
	"context"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/cluster/membership"
)

// reconcile runs on the leader: it adds the nodes gossip knows and Raft
// does not (as voters or non-voters, as each asks), updates a node that
// came back at another address, removes servers gone longer than
// DeadNodeTimeout, and moves leadership to the primary DC.
func (n *Node) reconcile(ctx context.Context) {
	if n.members == nil {
		return
	}
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	missing := map[raft.ServerID]time.Time{} // servers gossip does not know, since when
	var lastTransfer time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.changed:
		}
		f := n.raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		servers := f.Configuration().Servers
		n.addMembers(ctx, servers)
		n.removeDead(servers, missing)
		if n.cfg.PrimaryDC != "" && n.cfg.DC != n.cfg.PrimaryDC && time.Since(lastTransfer) > 10*time.Second {
			if n.moveToPrimary(ctx, servers) {
				lastTransfer = time.Now()
			}
		}
	}
}

func (n *Node) addMembers(ctx context.Context, servers []raft.Server) {
	members := slices.DeleteFunc(n.members.Members(), func(m membership.Status) bool {
		return !m.Alive || m.ID == n.cfg.NodeID || m.RaftAddr == ""
	})
	index := func(m membership.Status) int {
		return slices.IndexFunc(servers, func(s raft.Server) bool { return s.ID == raft.ServerID(m.ID) })
	}
	// Gossip only says who a node claims to be: a new or moved node must
	// answer as itself over the node-to-node transport (mutual TLS when
	// on) before it gets a vote, or it would only add to quorum. The
	// checks run at once, so strangers do not hold up the round.
	var unchecked []membership.Status
	for _, m := range members {
		if i := index(m); i < 0 || servers[i].Address != raft.ServerAddress(m.RaftAddr) {
			unchecked = append(unchecked, m)
		}
	}
	checked := map[string]error{}
	for i, err := range n.checkPeers(ctx, unchecked) {
		checked[unchecked[i].ID] = err
	}
	for _, m := range members {
		id, addr := raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr)
		i := index(m)
		var f raft.IndexFuture
		switch {
		case i < 0 || servers[i].Address != addr:
			if err := checked[m.ID]; err != nil {
				n.log.Warn("not adding a node gossip announced: it does not answer as itself", "node", m.ID, "raft_addr", m.RaftAddr, "err", err)
				continue
			}
			if m.Voter {
				f = n.raft.AddVoter(id, addr, 0, 0)
			} else {
				f = n.raft.AddNonvoter(id, addr, 0, 0)
			}
		case m.Voter && servers[i].Suffrage != raft.Voter:
			f = n.raft.AddVoter(id, addr, 0, 0) // promotes
		case !m.Voter && servers[i].Suffrage == raft.Voter:
			f = n.raft.DemoteVoter(id, 0, 0)
		default:
			continue
		}
		if f == nil {
			continue
		}
		if err := f.Error(); err != nil {
			n.log.Warn("adding a node to raft", "node", m.ID, "err", err)
			continue
		}
		n.log.Info("raft configuration: node added or updated", "node", m.ID, "dc", m.DC, "voter", m.Voter, "raft_addr", m.RaftAddr)
	}
}

func (n *Node) removeDead(servers []raft.Server, missing map[raft.ServerID]time.Time) {
	now := time.Now()
	for _, s := range servers {
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			continue
		}
		goneSince, gone := time.Time{}, false
		if m, ok := n.members.Member(string(s.ID)); ok {
			goneSince, gone = m.Since, !m.Alive
			delete(missing, s.ID)
		} else {
			if _, seen := missing[s.ID]; !seen {
				missing[s.ID] = now
			}
			goneSince, gone = missing[s.ID], true
		}
		if !gone || now.Sub(goneSince) < n.cfg.DeadNodeTimeout {
			continue
		}
		if err := n.raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
			n.log.Warn("removing a dead node from raft", "node", s.ID, "err", err)
			continue
		}
		delete(missing, s.ID)
		n.members.Forget(string(s.ID))
		n.log.Warn("raft configuration: removed a node gone too long", "node", s.ID, "gone_since", goneSince, "timeout", n.cfg.DeadNodeTimeout)
	}
}

// moveToPrimary hands leadership to a healthy, caught-up voter in the
// primary DC, if there is one. It reports whether it tried.
func (n *Node) moveToPrimary(ctx context.Context, servers []raft.Server) bool {
	commit := n.raft.CommitIndex()
	for _, s := range servers {
		m, ok := n.members.Member(string(s.ID))
		if s.Suffrage != raft.Voter || !ok || !m.Alive || m.DC != n.cfg.PrimaryDC {
			continue
		}
		st, err := n.remoteStatus(ctx, string(s.Address))
		if err != nil || st.Applied+maxLag < commit {
			continue
		}
		n.log.Info("moving leadership to the primary DC", "to", s.ID, "dc", m.DC)
		if err := n.raft.LeadershipTransferToServer(s.ID, s.Address).Error(); err != nil {
			n.log.Warn("leadership transfer to the primary DC", "to", s.ID, "err", err)
		}
		return true
	}
	return false
}
