package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/fsm"
)

// Consistency is how fresh a read must be.
type Consistency uint8

const (
	// Local reads this node's replica: no cross-DC hop; it may lag.
	Local Consistency = iota
	// Linearizable reads reflect every write acknowledged before the read
	// began: the leader confirms it still leads, and this replica catches
	// up to the leader's commit index (or the leader answers).
	Linearizable
)

// ReadRecord returns the record with digest hash at the consistency asked,
// and the log index the answer reflects. minIndex > 0 asks for
// read-your-writes: the local replica waits, within localWait, until it
// has applied minIndex, and if it cannot, the leader answers. A nil record
// means none. A Local read from a replica that has not heard from a
// leader for Config.MaxStaleness is ErrStale.
func (n *Node) ReadRecord(ctx context.Context, hash string, c Consistency, minIndex uint64, localWait time.Duration) (*fsm.Record, uint64, error) {
	switch c {
	case Linearizable:
		index, err := n.readIndexFromLeader(ctx)
		if err != nil {
			return nil, 0, err
		}
		minIndex = max(minIndex, index)
	case Local:
		if err := n.checkStale(); err != nil {
			return nil, 0, err
		}
		if minIndex == 0 {
			return n.localRead(hash)
		}
	default:
		return nil, 0, fmt.Errorf("unknown consistency %d", c)
	}
	wctx, cancel := context.WithTimeout(ctx, localWait)
	caughtUp := n.fsm.WaitApplied(wctx, minIndex) == nil
	cancel()
	if caughtUp {
		return n.localRead(hash)
	}
	if n.raft.State() == raft.Leader {
		// The leader has applied all it committed: an index beyond it is
		// not committed yet, or not at all.
		return nil, 0, fmt.Errorf("%w: applied %d of %d", ErrBehind, n.fsm.AppliedIndex(), minIndex)
	}
	return n.readFromLeader(ctx, hash, minIndex)
}

// readIndexFromLeader returns a linearizable read point: the leader's
// commit index, confirmed by a quorum while it still leads.
func (n *Node) readIndexFromLeader(ctx context.Context) (uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.readIndex(ctx)
	}
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		return 0, ErrNoLeader
	}
	var reply rpcReply
	if err := n.callLeader(ctx, string(addr), rpcReadIndex, struct{}{}, &reply); err != nil {
		return 0, notReached(err)
	}
	if reply.Fail != "" {
		return 0, remoteErr(reply.Fail)
	}
	return reply.Index, nil
}

func (n *Node) readFromLeader(ctx context.Context, hash string, minIndex uint64) (*fsm.Record, uint64, error) {
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		return nil, 0, ErrNoLeader
	}
	var reply rpcReply
	if err := n.callLeader(ctx, string(addr), rpcRead, &readArgs{Hash: hash, MinIndex: minIndex}, &reply); err != nil {
		return nil, 0, notReached(err)
	}
	if reply.Fail != "" {
		return nil, 0, remoteErr(reply.Fail)
	}
	n.metrics.leaderReads.Inc()
	return reply.Record, reply.Index, nil
}

// notReached makes an unreachable leader no leader, for a read.
func notReached(err error) error {
	if errors.Is(err, errUnreachable) {
		return fmt.Errorf("%w: %v", ErrNoLeader, err)
	}
	return err
}

// readIndex is the leader's side of a linearizable read: the commit index
// when the call began, after a quorum confirmed this node still leads.
// A new leader answers only once it has applied its predecessors' entries.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	if !n.leaderReady.Load() {
		return 0, fmt.Errorf("%w: leader still applying earlier terms", ErrBehind)
	}
	index := n.raft.CommitIndex()
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return index, nil
}

// leaderRead answers a follower's read on the leader.
func (n *Node) leaderRead(ctx context.Context, hash string, minIndex uint64) (*fsm.Record, uint64, error) {
	index, err := n.readIndex(ctx)
	if err != nil {
		return nil, 0, err
	}
	if err := n.fsm.WaitApplied(ctx, index); err != nil {
		return nil, 0, fmt.Errorf("%w: applied %d of %d", ErrBehind, n.fsm.AppliedIndex(), index)
	}
	// Everything committed is applied here: an index beyond it is not
	// committed, and waiting would not help.
	if applied := n.fsm.AppliedIndex(); applied < minIndex {
		return nil, 0, fmt.Errorf("%w: index %d is not committed (commit %d)", ErrBehind, minIndex, applied)
	}
	return n.localRead(hash)
}

// localRead reads this replica and the index it reflects.
func (n *Node) localRead(hash string) (*fsm.Record, uint64, error) {
	if err := n.halted(); err != nil {
		return nil, 0, err
	}
	return n.fsm.ByHash(hash), n.fsm.AppliedIndex(), nil
}
