package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Each round of status calls classifies the leader anew: a round of slow
// calls after a fast one makes it far, and the other way round; a round
// about another leader changes nothing.
func TestLeaderRPCRoundReplacesTheRoundTrip(t *testing.T) {
	l := &leaderRPC{addr: "a"}
	for i, round := range []struct {
		addr raft.ServerAddress
		took time.Duration
		far  bool
	}{
		{"a", 2 * farLeader, true},
		{"a", farLeader / 10, false},
		{"a", 2 * farLeader, true},
		{"b", farLeader / 10, true},
		{"a", farLeader - 1, false},
		{"a", farLeader, true},
	} {
		l.measured(round.addr, round.took)
		if got := l.far(); got != round.far {
			t.Fatalf("round %d (%s took %s): far %v, want %v", i, round.addr, round.took, got, round.far)
		}
	}
}
