package cluster

import (
	"errors"
	"fmt"

	"github.com/tokenstore/tokenstore/fsm"
)

// What may be proposed. Client writes come from the API, which checks
// them itself before a node proposes or forwards them. Touch is a node's
// buffered last uses, which any node proposes. Expiry is the leader's own
// garbage collection, and a Fence its mark of the version the log needs.
// A Batch is what the leader makes of the commands it
// admits: it is never taken from anyone. A ClientBatch is a client write
// whose ops are client writes (issue, consume, revoke, rotate), never a
// batch of either kind.
var (
	clientTypes = map[fsm.Type]bool{
		fsm.TypeIssue: true, fsm.TypeConsume: true, fsm.TypeRevoke: true, fsm.TypeRevokeSubject: true,
		fsm.TypeRevokeFamily: true, fsm.TypeRotate: true, fsm.TypeClientBatch: true, fsm.TypeRevokeFamilyKind: true,
	}
	nodeTypes   = map[fsm.Type]bool{fsm.TypeTouch: true}
	leaderTypes = map[fsm.Type]bool{fsm.TypeExpire: true, fsm.TypeFence: true}
)

// maxRequestID bounds a forwarded request id (a node's are about 20 bytes).
const maxRequestID = 128

// admit checks a command before it is proposed: its type may be proposed
// from where it comes (fromPeer: a forwarded write), and it passes check,
// the API's own validation (Config.Check), which recomputes what the
// policy decides, in place. A client write of this node's own API was
// checked there, by the same function.
func admit(check func(fsm.Command) error, c fsm.Command, fromPeer bool) error {
	t := c.Type()
	if !clientTypes[t] && !nodeTypes[t] && (fromPeer || !leaderTypes[t]) {
		return fmt.Errorf("%w: command type %d cannot be proposed by %s", ErrRefused, t, origin(fromPeer))
	}
	if b, ok := c.(*fsm.ClientBatch); ok {
		// The ops' count and types, whoever checks the rest.
		if _, err := b.DecodeOps(); err != nil {
			return fmt.Errorf("%w: %v", ErrRefused, err)
		}
	}
	if check != nil && (fromPeer || !clientTypes[t]) {
		if err := check(c); err != nil {
			return fmt.Errorf("%w: %v", ErrRefused, err)
		}
	}
	return nil
}

func origin(fromPeer bool) string {
	if fromPeer {
		return "a peer"
	}
	return "this node"
}

// admitForwarded decodes and admits a write a peer forwarded, and returns
// it encoded as it will be proposed.
func admitForwarded(check func(fsm.Command) error, req string, entry []byte) ([]byte, error) {
	if len(req) > maxRequestID {
		return nil, fmt.Errorf("%w: request id of %d bytes", ErrRefused, len(req))
	}
	c, err := fsm.Decode(entry)
	if errors.Is(err, fsm.ErrUnknownType) {
		// Maybe a newer node's command, in a rolling upgrade: not now.
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if err := admit(check, c, true); err != nil {
		return nil, err
	}
	// Proposed as this build encodes it, so that nothing it does not know
	// (a field of a newer version, bytes past the command) reaches the
	// log; a peer of this build sent just that, and its entry is kept.
	return fsm.Reencode(c, entry)
}
