package cluster

import (
	"errors"

	"github.com/tokenstore/tokenstore/fsm"
)

// Sentinel errors of the cluster layer, matched with errors.Is; the ones a
// leader reports to a forwarding node keep their identity across the wire.
var (
	// ErrNotLeader is returned for a write or leader read that this node
	// cannot accept: it does not lead.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader is returned when the cluster has no leader right now.
	ErrNoLeader = errors.New("no leader")
	// ErrOutcomeUnknown is returned when a write may or may not have been
	// applied: leadership was lost while it was in flight, or the leader
	// it was forwarded to did not answer.
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrShutdown is returned by a node that is shutting down.
	ErrShutdown = errors.New("node is shutting down")
	// ErrBusy is returned when Raft did not take the write in time; it was
	// not applied.
	ErrBusy = errors.New("raft queue full")
	// ErrBehind is returned when the local replica did not reach the
	// requested index in time.
	ErrBehind = errors.New("replica has not reached the requested index")
	// ErrRefused is returned for a command that failed the checks before
	// it could be proposed (a forwarded write the leader refused); nothing
	// was written.
	ErrRefused = errors.New("write refused")
	// ErrUnsupported is returned for a write that needs a command type not
	// every voter knows yet (a rolling upgrade in progress); it was not
	// proposed.
	ErrUnsupported = errors.New("not every voter supports this write yet")
	// ErrStale is returned for a local read on a replica that has not
	// heard from a leader for longer than Config.MaxStaleness.
	ErrStale = errors.New("replica has not heard from a leader recently")
	// ErrHalted is returned once the local state machine stopped at an
	// entry it cannot apply (fsm.Machine.Halted): the node serves nothing
	// until a version that knows the entry runs.
	ErrHalted = fsm.ErrHalted
)
