package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// Reads record when a token was last used, but a read must never cost a
// log entry: each node buffers the uses it sees and proposes them in
// bulk, at most once per token per LastUsedGranularity. A use that comes
// sooner waits in the buffer until its token may be written again.
const (
	maxBufferedUses = 100_000 // past this, new uses are dropped (last_used is informational)
	maxUsesPerEntry = 1_000
)

type touches struct {
	mu      sync.Mutex
	pending map[string]fsm.Use // hash -> latest use not yet proposed
	written map[string]int64   // hash -> when its last use was proposed
}

// Touch notes that the token with digest hash was read at time at, from
// ip with user agent ua (either may be empty).
func (n *Node) Touch(hash string, at time.Time, ip, ua string) {
	t := &n.touches
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.pending[hash]; !ok && len(t.pending) >= maxBufferedUses {
		n.metrics.touchDropped.Inc()
		return
	}
	t.pending[hash] = fsm.Use{Hash: hash, At: at.UnixNano(), IP: ip, UserAgent: ua}
}

// takeDue removes and returns the buffered uses whose token may be
// written again at now, and forgets write times that no longer hold
// anything back.
func (t *touches) takeDue(now time.Time, granularity time.Duration) []fsm.Use {
	t.mu.Lock()
	defer t.mu.Unlock()
	horizon := now.Add(-granularity).UnixNano()
	var due []fsm.Use
	for h, u := range t.pending {
		if t.written[h] > horizon {
			continue
		}
		due = append(due, u)
		delete(t.pending, h)
		t.written[h] = now.UnixNano()
	}
	for h, at := range t.written {
		if at <= horizon {
			if _, waiting := t.pending[h]; !waiting {
				delete(t.written, h)
			}
		}
	}
	return due
}

// flushTouches proposes the due uses every second until the node closes.
func (n *Node) flushTouches() {
	defer n.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-tick.C:
		}
		due := n.touches.takeDue(time.Now(), n.cfg.LastUsedGranularity)
		for len(due) > 0 {
			k := min(len(due), maxUsesPerEntry)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, _, err := n.Apply(ctx, &fsm.Touch{Uses: due[:k]})
			cancel()
			if err != nil {
				// Best effort: a lost batch of last-used times is not
				// worth retrying behind newer ones.
				n.log.Debug("recording last use", "uses", k, "err", err)
			} else {
				n.metrics.touched.Add(float64(res.Count))
			}
			due = due[k:]
		}
	}
}
