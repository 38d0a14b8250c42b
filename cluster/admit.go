package cluster

import (
	"fmt"

	"github.com/tokenstore/tokenstore/fsm"
)

// What may be proposed. A peer forwards what its API and its last-use
// buffer propose: client writes and Touch. Expiry is the leader's own
// garbage collection; a Batch is what the leader makes of the commands it
// admits. Neither is ever taken from a peer.
var (
	peerTypes = map[fsm.Type]bool{
		fsm.TypeIssue: true, fsm.TypeConsume: true, fsm.TypeRevoke: true, fsm.TypeRevokeSubject: true,
		fsm.TypeRevokeFamily: true, fsm.TypeRotate: true, fsm.TypeTouch: true,
	}
	leaderTypes = map[fsm.Type]bool{fsm.TypeExpire: true}
)

// maxRequestID bounds a forwarded request id (a node's are about 20 bytes).
const maxRequestID = 128

// admit checks a command before it is proposed: its type may be proposed
// from where it comes (fromPeer: a forwarded write). A forwarded command
// also passes Config.Check, the API's own validation, which recomputes
// what the policy decides, in place. A local command was checked by the
// API that built it, with the same function, or is this node's own (last
// uses, expiry) built from its state.
func admit(check func(fsm.Command) error, c fsm.Command, fromPeer bool) error {
	t := c.Type()
	if !peerTypes[t] && (fromPeer || !leaderTypes[t]) {
		return fmt.Errorf("%w: command type %d cannot be proposed by %s", ErrRefused, t, origin(fromPeer))
	}
	if fromPeer && check != nil {
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
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if err := admit(check, c, true); err != nil {
		return nil, err
	}
	return fsm.Encode(c)
}
