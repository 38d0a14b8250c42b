package cluster

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// A follower learns that its leader is gone when its heartbeat timeout
// fires (Raft's 1 s, randomized up to 2 s), and it can only be elected
// once a majority has timed out too: until then the others refuse its
// pre-vote because they still know a leader, and a refused candidate
// waits an election timeout (1-2 s) before it tries again. After a
// leader's process died that took up to 4 s (BENCHMARKS.md, failover).
//
// A dead process leaves its host answering: a connection to its Raft port
// is refused at once. So a follower that has not heard from its leader
// for leaderQuiet dials the leader's Raft port; when the connection is
// refused, the leader's process is gone, and the follower lowers its
// heartbeat and election timeouts to leaderQuiet through Raft's
// ReloadConfig. Raft then checks the heartbeat at once and, since the
// leader has been quiet that long, starts an election. Every follower of
// the dead leader does the same within a tick or a round trip of the
// others, so pre-votes are refused for a leader they still know for that
// long at most. When they all stand at once the vote may split, and Raft
// tries again after an election timeout, now the short one. Once a leader
// is known again (or after goneHold) the configured timeouts come back.
//
// A leader that is paused, overloaded or cut off by the network accepts
// the connection or lets it time out: nothing changes, and the ordinary
// timeouts decide, as before. Only timing changes here, never what Raft
// decides: a timeout cannot make an election unsafe.
//
// A refusal can also come from a firewall that rejects rather than drops,
// or a proxy in front of the port while it restarts. A follower cut off
// that way from a leader that lives then stands every short timeout, for
// goneHold at most; pre-vote (on in hashicorp/raft, and never turned off
// here) keeps that harmless: the others still hear the leader and refuse
// to vote, so no term moves and the leader is not deposed.
const (
	// leaderQuiet is how long a follower goes without hearing from its
	// leader before it checks the leader's process (the leader
	// heartbeats every tenth of the heartbeat timeout, 100 ms), and its
	// timeouts while that leader is gone. Raft holds the heartbeat
	// timeout at or above the leader lease (500 ms), and it cannot be
	// changed at run time.
	leaderQuiet = 500 * time.Millisecond
	// probeTimeout bounds the dial to the leader: a refusal comes back
	// within a round trip; anything slower is not taken as gone.
	probeTimeout = 300 * time.Millisecond
	// goneHold is the longest the short timeouts stay without a new
	// leader (a majority may be down too).
	goneHold = 10 * time.Second
)

// leaderWatch is what watchLeader knows between ticks.
type leaderWatch struct {
	probed time.Time     // the last dial to the leader
	gone   raft.ServerID // the leader found gone; "" with the configured timeouts
	since  time.Time     // when it was found gone
	normal raft.ReloadableConfig
}

// watchLeader checks, on a follower, whether a quiet leader's process is
// gone (see leaderQuiet), until the node closes.
func (n *Node) watchLeader() {
	defer n.wg.Done()
	if n.cfg.NonVoter {
		return // a non-voter never stands for election
	}
	w := &leaderWatch{}
	t := time.NewTicker(contactTick)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			if w.gone != "" {
				n.restoreTimeouts(w)
			}
			return
		case <-t.C:
			n.checkLeader(w)
		}
	}
}

func (n *Node) checkLeader(w *leaderWatch) {
	state := n.raft.State()
	addr, id := n.raft.LeaderWithID()
	now := time.Now()
	if w.gone != "" {
		if state == raft.Leader || (addr != "" && id != w.gone) || now.Sub(w.since) > goneHold {
			if n.restoreTimeouts(w) {
				n.log.Info("the configured election timeouts are back", "leader", string(id), "after", now.Sub(w.since).Round(time.Millisecond))
			}
		}
		return
	}
	if state != raft.Follower || addr == "" || now.Sub(n.raft.LastContact()) < leaderQuiet || now.Sub(w.probed) < leaderQuiet {
		return
	}
	w.probed = now
	if !n.refused(string(addr)) {
		return
	}
	w.normal = n.raft.ReloadableConfig()
	if w.normal.HeartbeatTimeout <= leaderQuiet {
		return // the configured timeouts are as short already
	}
	short := w.normal
	short.HeartbeatTimeout, short.ElectionTimeout = leaderQuiet, leaderQuiet
	if err := n.raft.ReloadConfig(short); err != nil {
		n.log.Warn("shortening the election timeouts", "err", err)
		return
	}
	w.gone, w.since = id, now
	n.metrics.leaderGone.Inc()
	n.log.Info("the leader's Raft port refuses connections: its process is gone; electing without waiting out the heartbeat timeout",
		"leader", string(id), "addr", string(addr), "quiet", now.Sub(n.raft.LastContact()).Round(time.Millisecond), "timeout", leaderQuiet)
}

// restoreTimeouts puts the timeouts back as they were before the leader
// was found gone, keeping any other setting changed since; false if Raft
// refused (it is tried again at the next tick).
func (n *Node) restoreTimeouts(w *leaderWatch) bool {
	rc := n.raft.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = w.normal.HeartbeatTimeout, w.normal.ElectionTimeout
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.log.Warn("restoring the election timeouts", "err", err)
		return false
	}
	w.gone = ""
	return true
}

// refused dials addr's RPC protocol (so that a live leader sees one
// connection close without a request, nothing it logs) and reports
// whether the connection was refused.
func (n *Node) refused(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	conn, err := n.mux.DialRPC(ctx, addr)
	if err == nil {
		conn.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
