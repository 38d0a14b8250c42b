package cluster

import (
	"context"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// collectGarbage runs on the leader. Every GCInterval it looks for records
// whose GC time is GCGrace in the past and, while any are left, proposes
// expiry commands of at most GCBatch ids back to back, each once the one
// before has applied. So one expiry command is in the log at a time, each
// applies in bounded time (GCBatch deletions under the state's write
// lock, which reads and writes take in between), and a mass expiry is
// collected as fast as the log commits, not at a fixed number of commands
// a tick (at 4 × 500 a second, a million tokens expiring within a minute
// took over eight minutes to collect: BENCHMARKS.md, mass expiry).
//
// Deadlines are absolute log times in the records, so a change of leader
// neither resets nor extends any TTL, and "now" is log time too: a leader
// whose clock runs ahead does not collect what is not yet due.
func (n *Node) collectGarbage(ctx context.Context) {
	t := time.NewTicker(n.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.collectDue(ctx)
	}
}

// collectDue proposes expiry commands until nothing due is left, a
// command deletes nothing (what is left is not due by the log's time, or
// is held as a reuse tombstone), or ctx ends.
func (n *Node) collectDue(ctx context.Context) {
	for ctx.Err() == nil {
		now, err := n.logNow()
		if err != nil {
			n.log.Debug("gc", "err", err)
			return
		}
		before := now - int64(n.cfg.GCGrace)
		ids := n.fsm.DueForGC(before, n.cfg.GCBatch)
		if len(ids) == 0 {
			return
		}
		res, _, err := n.Apply(ctx, &fsm.Expire{Before: before, IDs: ids})
		if err != nil {
			n.log.Warn("gc", "err", err)
			return
		}
		n.metrics.gcDeleted.Add(float64(res.Count))
		if len(ids) < n.cfg.GCBatch || res.Count == 0 {
			return
		}
	}
}
