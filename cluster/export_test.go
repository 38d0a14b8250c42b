package cluster

import (
	"context"
	"fmt"
	"time"
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

// Propose queues an encoded command on this node, the leader, as a
// forwarded write is queued once admitted.
func (n *Node) Propose(entry []byte) error {
	_, _, err := n.applyLocal(context.Background(), "", entry)
	return err
}
