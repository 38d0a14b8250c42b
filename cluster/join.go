package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/cluster/membership"
)

// startMembership joins the gossip pools and starts what follows from
// them: the first bootstrap of a new cluster (BootstrapExpect) and
// rejoining the others after a restart.
func (n *Node) startMembership() error {
	m, err := membership.Start(membership.Config{
		Meta:         n.meta(),
		WANBind:      n.cfg.GossipAddr,
		WANAdvertise: n.cfg.GossipAdvertise,
		LANBind:      n.cfg.GossipLANAddr,
		LANAdvertise: n.cfg.GossipLANAdvertise,
		Keyring:      n.cfg.GossipKeys,
		Logger:       n.log,
		OnChange:     n.membershipChanged,
	})
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	n.members = m
	n.log.Info("gossip started", "wan_addr", m.WANAddr(), "lan_addr", m.LANAddr())
	n.wg.Add(1)
	go n.joinLoop()
	return nil
}

func (n *Node) meta() membership.Meta {
	return membership.Meta{
		ID: n.cfg.NodeID, DC: n.cfg.DC, RaftAddr: n.RaftAddr(), APIAddr: n.cfg.APIAddr,
		Voter: !n.cfg.NonVoter, Expect: n.cfg.BootstrapExpect, HasState: n.hadState,
	}
}

func (n *Node) membershipChanged() {
	for _, ch := range []chan struct{}{n.changed, n.joinWake} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// joinLoop keeps trying the --join addresses until one answers, then
// watches for the moment to bootstrap, and notes when this node has
// become part of a Raft configuration (so that nobody bootstraps with it).
func (n *Node) joinLoop() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	joined := len(n.cfg.Join) == 0
	wait := 100 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-n.joinWake:
		case <-t.C:
		}
		if !joined {
			if reached, err := n.members.Join(n.cfg.Join); err != nil || reached == 0 {
				n.log.Warn("joining the cluster through gossip", "join", n.cfg.Join, "err", err)
				wait = min(2*wait, 5*time.Second)
			} else {
				n.log.Info("joined the gossip pool", "reached", reached)
				joined, wait = true, time.Second
			}
		}
		if !n.hadState {
			n.maybeBootstrap(ctx)
		}
		t.Reset(wait)
	}
}

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

// checkPeer asks the node at m's Raft address who it is, over the
// node-to-node transport: with mutual TLS, only a node holding a
// certificate from the cluster CA can answer at all. Ours is taken as it
// is.
func (n *Node) checkPeer(ctx context.Context, m membership.Status) error {
	if m.ID == n.cfg.NodeID && m.RaftAddr == n.RaftAddr() {
		return nil
	}
	st, err := n.remoteStatus(ctx, m.RaftAddr)
	if err != nil {
		return err
	}
	if st.ID != m.ID {
		return fmt.Errorf("answers as %q", st.ID)
	}
	// A node older than the log's fence would halt at it.
	if v, need := max(1, int(st.Version)), n.store.LogVersion(); v < need {
		return fmt.Errorf("runs state machine version %d; the log needs %d", v, need)
	}
	return nil
}

// checkPeers runs checkPeer on every member at once (each bounded by the
// status call's timeout) and returns each one's result, in order.
func (n *Node) checkPeers(ctx context.Context, ms []membership.Status) []error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = n.checkPeer(ctx, m) })
	}
	wg.Wait()
	return errs
}
