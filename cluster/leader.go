package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
)

// watchLeadership runs on every change of leadership: on gaining it, it
// commits an empty batch so that everything from earlier terms is applied
// before leader reads are served, then runs GC until leadership is lost.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	stop := func() {}
	defer func() { stop() }()
	for {
		select {
		case <-n.closing:
			return
		case leader := <-n.leaderCh:
			stop()
			n.leaderReady.Store(false)
			if !leader {
				n.log.Info("lost leadership")
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			stop = cancel
			// Not in wg: its Raft calls end when Close shuts Raft down.
			go n.lead(ctx)
		}
	}
}

// lead runs while this node leads, until ctx ends: once everything from
// earlier terms is applied and a majority of the voters has reported its
// clock, leader reads are served, and reconcile, the voters' sampling and
// garbage collection run.
func (n *Node) lead(ctx context.Context) {
	gen := n.seen.reset()
	for {
		err := n.commitEmpty()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("establishing leadership", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A halted state machine cannot answer what it commits.
	if n.halted() != nil {
		n.handOverHalted()
		return
	}
	// No batch gets a time before a majority of the voters has said what
	// their clocks read.
	if !n.waitForVoters(ctx, gen) {
		return
	}
	n.maybeFence(ctx)
	n.leaderReady.Store(true)
	n.log.Info("leading", "applied_index", n.fsm.AppliedIndex())
	go n.reconcile(ctx)
	go n.refreshVoters(ctx, gen)
	n.collectGarbage(ctx)
}

// handOverHalted gives leadership away from a node whose state machine
// halted, if it leads and another voter can take it: a leader must answer
// the writes it commits.
func (n *Node) handOverHalted() {
	if n.raft.State() != raft.Leader || n.voters() < 2 {
		return
	}
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		n.log.Warn("handing leadership over from a halted state machine", "err", err)
		return
	}
	n.log.Info("handed leadership over: this node's state machine halted")
}
