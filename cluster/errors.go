package cluster

import (
	"errors"

	"github.com/tokenstore/tokenstore/fsm"
)

// Sentinel errors of the cluster layer.
var (
	// ErrNotLeader: this node cannot accept the write or leader read.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader: the cluster has no leader right now.
	ErrNoLeader = errors.New("no leader")
	// ErrOutcomeUnknown: leadership was lost while the write was in flight;
	// it may or may not have been applied.
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrShutdown: the node is shutting down.
	ErrShutdown = errors.New("node is shutting down")
	// ErrBusy: Raft did not take the write in time; it was not applied.
	ErrBusy = errors.New("raft queue full")
	// ErrBehind: the local replica did not reach the requested index in time.
	ErrBehind = errors.New("replica has not reached the requested index")
	// ErrRefused: the command failed the checks before it could be
	// proposed (a forwarded write the leader refused); nothing was written.
	ErrRefused = errors.New("write refused")
	// ErrUnsupported: the write needs a command type that not every voter
	// knows yet (a rolling upgrade in progress); it was not proposed.
	ErrUnsupported = errors.New("not every voter supports this write yet")
	// ErrStale: this replica has not heard from a leader for longer than
	// Config.MaxStaleness; it does not answer local reads.
	ErrStale = errors.New("replica has not heard from a leader recently")
	// ErrHalted: the local state machine stopped at an entry it cannot
	// apply (fsm.Store.Halted); it serves nothing until a newer version runs.
	ErrHalted = fsm.ErrHalted
)
