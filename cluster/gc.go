package cluster

import (
	"context"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// collectGarbage runs on the leader: every GCInterval it proposes expiry
// commands for records whose GC time is GCGrace in the past, at most
// GCMaxPerTick commands of GCBatch ids each, so GC never floods the log.
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
		for range n.cfg.GCMaxPerTick {
			now, err := n.logNow()
			if err != nil {
				n.log.Debug("gc", "err", err)
				break
			}
			before := now - int64(n.cfg.GCGrace)
			ids := n.fsm.DueForGC(before, n.cfg.GCBatch)
			if len(ids) == 0 {
				break
			}
			res, _, err := n.Apply(ctx, &fsm.Expire{Before: before, IDs: ids})
			if err != nil {
				n.log.Warn("gc", "err", err)
				break
			}
			n.metrics.gcDeleted.Add(float64(res.Count))
			if len(ids) < n.cfg.GCBatch {
				break
			}
		}
	}
}
