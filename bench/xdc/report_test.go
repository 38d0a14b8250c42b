package xdc

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/netem"
)

func TestParseCounters(t *testing.T) {
	text := `# HELP tokenstore_leader_reads_total Reads answered by the leader.
# TYPE tokenstore_leader_reads_total counter
tokenstore_leader_reads_total 7
tokenstore_forwarded_writes_total 1.234e+06
tokenstore_forwarded_writes_refused_total 3
tokenstore_raft_batch_commands_bucket{le="1"} 5
`
	got, err := parseCounters(strings.NewReader(text))
	if err != nil || got[metricLeaderReads] != 7 || got[metricForwarded] != 1234000 || len(got) != 2 {
		t.Fatalf("parseCounters = %v, %v", got, err)
	}
}

func TestTargets(t *testing.T) {
	rep := &Report{Net: netem.Config{Latency: 40 * time.Millisecond}, LeaderDC: "a", Rows: []Row{
		{Group: GroupLeader, Op: OpIssue, Count: 10, P50: 5},
		{Group: GroupLeader, Op: OpConsume, Count: 10, P50: 4},
		{Group: "a", Op: OpIssue, Count: 10, P50: 6},
		{Group: "b", Op: OpIssue, Count: 10, P50: 49.9},
		{Group: "b", Op: OpConsume, Count: 10, P50: 49.1},
		{Group: "b", Op: OpLookup, Count: 10, P99: 1.5},
		{Group: "b", Op: OpLookupAfterWrite, Count: 10, P99: 40},
	}}
	got := targets(rep)
	want := []bool{true, false, true, false} // issue, consume, lookup, lookup after write
	if len(got) != len(want) {
		t.Fatalf("targets = %+v, want %d of DC b", got, len(want))
	}
	for i, tg := range got {
		if tg.DC != "b" || tg.Met != want[i] {
			t.Errorf("target %d: %+v, want DC b met=%v", i, tg, want[i])
		}
	}
	if got[0].Limit != 50 {
		t.Errorf("issue limit %.2f, want 40 + 5 + 5", got[0].Limit)
	}
}
