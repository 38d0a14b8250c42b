package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// A backlog of many batches is collected in one round, batch after batch,
// not a few batches a tick; what is not due stays.
func TestGCCollectsABacklogBatchAfterBatch(t *testing.T) {
	var now atomic.Int64
	now.Store(base.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	n, err := Open(Config{DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true, Now: clock,
		GCInterval: time.Hour, GCBatch: 10, GCGrace: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for deadline := time.Now().Add(30 * time.Second); n.Ready() != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v", n.Ready())
		}
		<-time.After(20 * time.Millisecond)
	}
	const due, live = 95, 5
	for i := range due + live {
		ttl := time.Second
		if i >= due {
			ttl = time.Hour
		}
		id := fmt.Sprintf("gc%020d", i)
		res, _, err := n.Apply(ctx, &fsm.Issue{TTL: int64(ttl), Record: fsm.Record{ID: id, Kind: "access", Hash: fmt.Sprintf("%032d", i)}})
		if err != nil || res.Err != nil {
			t.Fatalf("issue %d: %v %v", i, err, res.Err)
		}
	}
	now.Add(int64(time.Second + time.Minute)) // every short TTL and the grace have passed
	n.collectDue(ctx)
	if left := n.fsm.DueForGC(now.Load()-int64(time.Minute), 1000); len(left) != 0 {
		t.Fatalf("after one round of %d due in batches of 10: %d still due", due, len(left))
	}
	total := int64(0)
	for _, k := range n.fsm.Counts() {
		total += k
	}
	if total != live {
		t.Fatalf("after one round: %d records, want the %d live ones", total, live)
	}
	for i := due; i < due+live; i++ {
		if n.fsm.ByID(fmt.Sprintf("gc%020d", i)) == nil {
			t.Fatalf("live record %d was collected", i)
		}
	}
	// Nothing more is due: the round ends at once rather than spin on
	// the live records.
	n.collectDue(ctx)
}
