package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Contact with a leader bounds two things. A local read from a replica
// that has not heard from a leader for Config.MaxStaleness answers
// ErrStale: a partitioned replica never keeps calling a revoked token
// active. And once a node has known no leader for noLeaderBound, writes
// and leader reads answer ErrNoLeader at once instead of waiting out the
// caller's deadline, and calls in flight to the old leader are given up.

// noLeaderBound counts from when the node stopped knowing a leader (a
// heartbeat timeout after the leader went quiet): two election timeouts
// (a node keeps refusing votes while it still knows the old leader, and a
// split vote retries after another) and a second. Long enough for an
// ordinary election to end, short enough that a cut-off node's clients get
// an answer well within their own timeouts.
var noLeaderBound = 2*raft.DefaultConfig().ElectionTimeout + time.Second

// contactTick is how often the node samples whether it leads or knows a
// leader.
const contactTick = 50 * time.Millisecond

// contact is what the node last knew of a leader.
type contact struct {
	mu sync.Mutex
	// opened is when the node opened; led when it last saw itself lead
	// (zero: never); known when it last knew any leader, itself
	// included (from opened on).
	opened, led, known time.Time
	// gone is closed while the node has known no leader for
	// noLeaderBound; a new channel replaces it once a leader is known.
	gone chan struct{}
}

// sample notes what the node knows of a leader now and returns the
// channel that is closed while it has had none for too long.
func (n *Node) sample() <-chan struct{} {
	now := time.Now()
	leads := n.raft.State() == raft.Leader
	addr, _ := n.raft.LeaderWithID()
	c := &n.contact
	c.mu.Lock()
	defer c.mu.Unlock()
	if leads {
		c.led = now
	}
	switch {
	case leads || addr != "":
		c.known = now
		select {
		case <-c.gone:
			c.gone = make(chan struct{})
		default:
		}
	case now.Sub(c.known) > noLeaderBound:
		select {
		case <-c.gone:
		default:
			close(c.gone)
		}
	}
	return c.gone
}

// watchContact samples contact with a leader until the node closes, so
// that calls in flight learn of a lost leader without a request arriving.
func (n *Node) watchContact() {
	defer n.wg.Done()
	t := time.NewTicker(contactTick)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
			n.sample()
		}
	}
}

// noLeader reports whether the node has known no leader for longer than
// noLeaderBound.
func (n *Node) noLeader() bool {
	select {
	case <-n.sample():
		return true
	default:
		return false
	}
}

// untilNoLeader returns ctx, cancelled also once the node has known no
// leader for noLeaderBound: a call to a leader that went away is given up.
func (n *Node) untilNoLeader(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	gone := n.sample()
	go func() {
		select {
		case <-gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// LeaderContact returns how long ago this node last heard from a leader
// (0 while it leads) and whether it knows a leader now. A node that has
// heard from none since it opened counts from then.
func (n *Node) LeaderContact() (time.Duration, bool) {
	since, _, known := n.leaderContact()
	return since, known
}

// leaderContact is LeaderContact, and whether any leader was heard from
// since the node opened.
func (n *Node) leaderContact() (since time.Duration, heard, known bool) {
	addr, _ := n.raft.LeaderWithID()
	if n.raft.State() == raft.Leader {
		return 0, true, true
	}
	last := n.raft.LastContact()
	n.contact.mu.Lock()
	if n.contact.led.After(last) {
		last = n.contact.led // it led until then: it was its own leader
	}
	opened := n.contact.opened
	n.contact.mu.Unlock()
	if last.IsZero() {
		return max(time.Since(opened), 0), false, addr != ""
	}
	return max(time.Since(last), 0), true, addr != ""
}

// checkStale is ErrStale when this replica has not heard from a leader for
// Config.MaxStaleness (0: no bound).
func (n *Node) checkStale() error {
	if n.cfg.MaxStaleness <= 0 {
		return nil
	}
	since, heard, _ := n.leaderContact()
	if !heard {
		// Its state may be from before a long downtime.
		return fmt.Errorf("%w: no leader heard from since this node started", ErrStale)
	}
	if since > n.cfg.MaxStaleness {
		return fmt.Errorf("%w: last heard from a leader %s ago (bound %s)", ErrStale, since.Round(time.Millisecond), n.cfg.MaxStaleness)
	}
	return nil
}
