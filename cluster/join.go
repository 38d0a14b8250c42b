package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/tokenstore/tokenstore/cluster/membership"
)

// startMembership joins the gossip pools. It runs before Raft starts: a
// node that is the only voter of its configuration leads at once, and
// its leader loop (reconcile) reads n.members from the first moment.
// What follows from the pools, the first bootstrap of a new cluster
// (BootstrapExpect) and rejoining the others after a restart, is
// joinLoop's, started once Raft runs.
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
