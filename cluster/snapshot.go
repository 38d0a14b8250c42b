package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Snapshots are taken by size, not by a fixed count of log entries: a
// restart restores the last snapshot and replays the log after it, so the
// log is let grow to a fraction of the state before the state is written
// out again (SnapshotLogRatio of the last snapshot's size, at least
// SnapshotMinLog, at most SnapshotMaxLog bytes). A small state is
// written often and costs little; a large one is written as often as
// the replay it saves is worth. Raft's own trigger stays as the
// ceiling in entries (SnapshotThreshold), for a log of many small
// entries.
//
// A byte of log costs a restart several times what a byte of snapshot
// does (at 1M tokens, 1.0-1.1 s to replay 16 MB of issues against about
// 1.2 s of CPU on each core to restore the 146 MB snapshot; BENCHMARKS.md),
// so the ceiling is what bounds a large state's restart: 16 MiB. What a
// restart replays at worst is that, plus what was written between two
// checks (SnapshotInterval, 1 s) and while the snapshot was written. A
// snapshot of that state costs a core about 0.3-0.4 s on a quiet
// machine (0.5-0.9 s under load), every 16 MiB of log: a twentieth of a
// core at most under the bench's sustained issues (2 MB of log a second).

// snapshotDue tells whether logBytes of log since the last snapshot,
// whose stream was snapBytes long (0 before the first), call for the
// next.
func (c *Config) snapshotDue(logBytes, snapBytes uint64) bool {
	// In floating point, clamped before it is an integer again: no ratio
	// overflows.
	need := min(max(c.SnapshotLogRatio*float64(snapBytes), float64(c.SnapshotMinLog)), float64(c.SnapshotMaxLog))
	return logBytes >= uint64(need)
}

// snapshotLoop checks every SnapshotInterval whether a snapshot is due
// by size, and takes it. Raft writes it in the background: the state
// machine hands over a point-in-time view and applies on.
func (n *Node) snapshotLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.SnapshotInterval)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
		}
		logBytes, snapBytes := n.fsm.LogSinceSnapshot()
		if !n.cfg.snapshotDue(logBytes, snapBytes) || n.catchingUp() {
			continue
		}
		start := time.Now()
		err := n.raft.Snapshot().Error()
		switch {
		case err == nil:
			_, size := n.fsm.LogSinceSnapshot()
			n.log.Info("snapshot taken", "log_bytes", logBytes, "previous_bytes", snapBytes, "bytes", size,
				"took", time.Since(start).Round(time.Millisecond))
		case errors.Is(err, raft.ErrNothingNewToSnapshot), errors.Is(err, raft.ErrRaftShutdown):
		default:
			n.log.Warn("snapshot", "err", err, "log_bytes", logBytes)
		}
	}
}

// catchingUp reports whether the node is still applying what was
// committed before it could serve: a leader before it leads (a restart
// replaying its log after the snapshot), a follower more than maxLag
// behind its commit index. The size trigger waits for it: a snapshot
// written then competes with the replay for the cores and delays
// readiness (at 1M tokens, one started 0.5-1.4 s before a restarted
// node was ready, replaying 41 MB), and it is due as much once caught up.
func (n *Node) catchingUp() bool {
	if n.raft.State() == raft.Leader {
		return !n.leaderReady.Load()
	}
	return n.raft.CommitIndex() > n.raft.AppliedIndex()+maxLag
}

// ErrNothingNewToSnapshot: a snapshot on request found nothing applied
// since the last one.
var ErrNothingNewToSnapshot = raft.ErrNothingNewToSnapshot

// SnapshotInfo describes a snapshot taken on request.
type SnapshotInfo struct {
	Index uint64        // the last log index it holds
	Bytes int64         // its size on disk
	Took  time.Duration // from the request until it was on disk
}

// Snapshot takes a snapshot of the local state now, whatever the
// triggers say, and waits until it is on disk: what an operator asks for
// before a backup or a maintenance, or a benchmark of writes during one.
func (n *Node) Snapshot() (SnapshotInfo, error) {
	start := time.Now()
	applied := n.fsm.AppliedIndex() // what the snapshot holds at least
	f := n.raft.Snapshot()
	if err := f.Error(); err != nil {
		return SnapshotInfo{}, err
	}
	took := time.Since(start)
	// The future's Open would read the whole snapshot again to check its
	// checksum (about 100 ms of CPU at 1M tokens) only to tell its size:
	// the store's list of snapshots tells it from their metadata. The
	// newest listed is this one, or one written since (by the size
	// trigger, or installed from the leader) that holds at least as much.
	// A store that lists none that new (it skips a snapshot whose
	// metadata it cannot read) is an error, not an older answer.
	metas, err := n.snaps.List()
	if err != nil {
		return SnapshotInfo{}, err
	}
	if len(metas) == 0 || metas[0].Index < applied {
		return SnapshotInfo{}, fmt.Errorf("snapshot taken but not listed by the snapshot store at index %d or later", applied)
	}
	meta := metas[0]
	return SnapshotInfo{Index: meta.Index, Bytes: meta.Size, Took: took}, nil
}
