package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/tokenstore/tokenstore/fsm"
)

// ApplyRaw puts data into the Raft log as it is, past every check of the
// leader: for tests of what replicas do with entries that should never
// have been proposed. The node must lead.
func (n *Node) ApplyRaw(data []byte) (any, error) {
	f := n.raft.Apply(data, 5*time.Second)
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("apply raw entry: %w", err)
	}
	return f.Response(), nil
}

// LogVersion is the version of the state machine the local replica's log
// needs, from its last applied fence on (fsm.Machine.LogVersion).
func (n *Node) LogVersion() int { return n.fsm.LogVersion() }

// Propose queues an encoded command on this node, the leader, as a
// forwarded write is queued once admitted.
func (n *Node) Propose(entry []byte) error {
	_, _, err := n.applyLocal(context.Background(), "", entry)
	return err
}

// DecodeForwarded decodes the body of a forwarded write as the leader's
// handler does, and admits it with check.
func DecodeForwarded(check func(fsm.Command) error, body []byte) ([]byte, error) {
	var args applyArgs
	if err := decodeRPC(body, &args); err != nil {
		return nil, err
	}
	return admitForwarded(check, args.Req, args.Entry)
}

// DecodeRead decodes the body of a read call as the leader's handler does.
func DecodeRead(body []byte) (hash string, minIndex uint64, err error) {
	var args readArgs
	err = decodeRPC(body, &args)
	return args.Hash, args.MinIndex, err
}

// EncodeRPC encodes v as a node-to-node call body.
func EncodeRPC(v any) []byte {
	var b []byte
	if err := codec.NewEncoderBytes(&b, rpcHandle).Encode(v); err != nil {
		panic(err)
	}
	return b
}

// ForwardedWrite is the body of a forwarded write.
type ForwardedWrite = applyArgs

// ReadCall is the body of a leader read.
type ReadCall = readArgs

// ServeRPCVersion makes the node claim and serve the node-to-node calls of
// version v only, as a node of an earlier release would (0: its own).
func (n *Node) ServeRPCVersion(v int) { n.rpcServed.Store(int32(v)) }

// ClaimVersion makes the node report version v of the state machine to
// its peers, as a node of an earlier release would (0: its own): while a
// voter reports an older one, the leader writes no fence of this version.
func (n *Node) ClaimVersion(v int) { n.versionClaimed.Store(int32(v)) }

// MaxForwardBatch is how many writes one batch of forwarded writes holds
// at most.
const MaxForwardBatch = maxForwardBatch

// DecodeForwardedBatch decodes the body of a batch of forwarded writes as
// the leader's handler does, and admits each write with check: the
// entries admitted, and the error of each write refused, by position.
func DecodeForwardedBatch(check func(fsm.Command) error, body []byte) ([][]byte, []error, error) {
	var args applyBatchArgs
	if err := decodeRPC(body, &args); err != nil {
		return nil, nil, err
	}
	if err := checkBatch(&args); err != nil {
		return nil, nil, err
	}
	entries := make([][]byte, len(args.Writes))
	errs := make([]error, len(args.Writes))
	for i, w := range args.Writes {
		entries[i], errs[i] = admitForwarded(check, w.Req, w.Entry)
	}
	return entries, errs, nil
}

// ForwardedBatch is the body of a batch of forwarded writes.
type ForwardedBatch = applyBatchArgs

// LeaderRPCVersion is the version of the node-to-node calls this node
// last learned its leader serves (0: not known yet).
func (n *Node) LeaderRPCVersion() int {
	n.leaderRPC.mu.Lock()
	defer n.leaderRPC.mu.Unlock()
	return n.leaderRPC.version
}

// HeartbeatTimeout is the heartbeat timeout Raft runs with now.
func (n *Node) HeartbeatTimeout() time.Duration { return n.raft.ReloadableConfig().HeartbeatTimeout }
