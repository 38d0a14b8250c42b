package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// The node exports its state's arena: what is mapped, what the records
// take of it, and what was given back to the kernel; the records' bytes
// grow with the records issued, within what is mapped.
func TestArenaMetrics(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	n := testcluster.Start(t, testcluster.Options{})
	before := metric(t, n, "tokenstore_state_arena_record_bytes", "")
	for i := range 50 {
		if _, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: fmt.Sprint("user:", i),
			ClientID: "web", IP: "10.0.0.1", UserAgent: "arena-metrics-test"}); err != nil {
			t.Fatal(err)
		}
	}
	records := metric(t, n, "tokenstore_state_arena_record_bytes", "")
	mapped := metric(t, n, "tokenstore_state_arena_mapped_bytes", "")
	returned := metric(t, n, "tokenstore_state_arena_returned_bytes", "")
	if records < before+50*64 {
		t.Errorf("record bytes %v after 50 issues, %v before", records, before)
	}
	if mapped < records+returned {
		t.Errorf("%v bytes mapped, fewer than the records' %v and the returned %v", mapped, records, returned)
	}
}
