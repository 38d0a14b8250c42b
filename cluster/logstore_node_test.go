package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// TestNodeKeepsABoltLog: a node whose data directory an earlier version
// wrote (the bbolt log) starts on it with the default setting and still
// has what it acknowledged; asked for the WAL, it refuses to start.
func TestNodeKeepsABoltLog(t *testing.T) {
	n := testcluster.Start(t, testcluster.Options{LogStore: cluster.LogStoreBolt})
	ctx := ctxFor(t, time.Minute)
	iss, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access"})
	if err != nil {
		t.Fatal(err)
	}
	o := n.Opts
	o.RaftAddr = n.RaftAddr()
	n.Kill()
	if _, err := os.Stat(filepath.Join(o.DataDir, "raft.db")); err != nil {
		t.Fatalf("the bbolt log: %v", err)
	}

	o.LogStore = cluster.LogStoreWAL
	if _, err := testcluster.TryStart(t, o); err == nil || !strings.Contains(err.Error(), "cannot be opened as wal") {
		t.Fatalf("a bbolt data directory started as wal: %v", err)
	}
	o.LogStore = ""
	n = testcluster.Start(t, o)
	if _, _, err := n.Client.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index}); err != nil {
		t.Fatalf("the token written before the restart: %v", err)
	}
	if _, err := os.Stat(filepath.Join(o.DataDir, "raft-wal")); err == nil {
		t.Fatal("a WAL was created beside the bbolt log")
	}
}
