package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// When the leader's process is gone (its Raft port refuses connections),
// a follower shortens its election timeouts rather than wait out its
// heartbeat timeout, and the configured ones come back with a new leader.
func TestFollowersFindADeadLeaderGone(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, time.Minute)
	old, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	survivors := followers(c)
	old.Kill()
	waitFor(t, "a new leader among the survivors", 30*time.Second, func() error {
		for _, n := range survivors {
			if n.IsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no survivor leads")
	})
	gone := 0.0
	for _, n := range survivors {
		gone += counter(t, n, "tokenstore_leader_gone_total")
	}
	if gone < 1 {
		t.Fatalf("tokenstore_leader_gone_total summed over the survivors = %v, want at least 1", gone)
	}
	waitFor(t, "the configured timeouts back on every survivor", 30*time.Second, func() error {
		for _, n := range survivors {
			if hb := n.HeartbeatTimeout(); hb != time.Second {
				return fmt.Errorf("%s: heartbeat timeout %s, want 1s", n.ID(), hb)
			}
		}
		return nil
	})
}

// counter reads a counter without labels from a node's registry.
func counter(t *testing.T, n *testcluster.Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("%s: no metric %s", n.ID(), name)
	return 0
}
