package cluster

import (
	"context"
	"fmt"
	"sync"

	"github.com/tokenstore/tokenstore/cluster/membership"
)

// checkPeer asks the node at m's Raft address who it is, over the
// node-to-node transport: with mutual TLS, only a node holding a
// certificate from the cluster CA can answer at all. Ours is taken as it
// is.
func (n *Node) checkPeer(ctx context.Context, m membership.Status) error {
	if m.ID == n.cfg.NodeID && m.RaftAddr == n.RaftAddr() {
		return nil
	}
	st, err := n.remoteStatus(ctx, m.RaftAddr)
	if err != nil {
		return err
	}
	if st.ID != m.ID {
		return fmt.Errorf("answers as %q", st.ID)
	}
	// A node older than the log's fence would halt at it.
	if v, need := max(1, int(st.Version)), n.fsm.LogVersion(); v < need {
		return fmt.Errorf("runs state machine version %d; the log needs %d", v, need)
	}
	return nil
}

// checkPeers runs checkPeer on every member at once (each bounded by the
// status call's timeout) and returns each one's result, in order.
func (n *Node) checkPeers(ctx context.Context, ms []membership.Status) []error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = n.checkPeer(ctx, m) })
	}
	wg.Wait()
	return errs
}
