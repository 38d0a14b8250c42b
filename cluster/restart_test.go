package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// restartState is what a node answers about a set of tokens: each by id,
// and each subject's list.
type restartState struct {
	byID      map[string]wire.Record
	bySubject map[string][]wire.Record
}

func readRestartState(t *testing.T, ctx context.Context, n *testcluster.Node, ids, subjects []string) restartState {
	t.Helper()
	st := restartState{byID: map[string]wire.Record{}, bySubject: map[string][]wire.Record{}}
	for _, id := range ids {
		r, err := n.Client.Get(ctx, id)
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		st.byID[id] = *r
	}
	for _, s := range subjects {
		l, err := n.Client.List(ctx, s, client.ListOptions{Limit: 1000})
		if err != nil {
			t.Fatalf("list %s: %v", s, err)
		}
		st.bySubject[s] = l.Tokens
	}
	return st
}

// TestSingleNodeRestartKeepsStateAndElectsAtOnce: a single node killed
// with entries in its log after its last snapshot answers, once started
// again on its data directory, exactly what it answered before, for the
// records of the snapshot and of the log after it; it stood for election
// without waiting out the heartbeat timeout, and runs with the configured
// timeout afterwards.
func TestSingleNodeRestartKeepsStateAndElectsAtOnce(t *testing.T) {
	ctx := ctxFor(t, 2*time.Minute)
	n := testcluster.Start(t, testcluster.Options{})
	var ids []string
	subjects := []string{"user:1", "user:2", "user:3"}
	issue := func(count int) []string {
		var out []string
		for i := 0; i < count; i++ {
			iss, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: subjects[i%len(subjects)],
				ClientID: "web", Title: fmt.Sprint("token ", len(ids)+i), IP: "10.0.0.1", UserAgent: "restart-test"})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, iss.ID)
		}
		ids = append(ids, out...)
		return out
	}
	before := issue(30)
	for _, id := range before[:5] {
		if _, err := n.Client.RevokeID(ctx, id, "before the snapshot"); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := n.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Past the fence of this version, the snapshot is in version 2 of
	// the stream: the restart below restores the records as stored.
	checkStoredSnapshots(t, n.Opts.DataDir)
	after := issue(30)
	for _, id := range append(before[5:8], after[:3]...) {
		if _, err := n.Client.RevokeID(ctx, id, "after the snapshot"); err != nil {
			t.Fatal(err)
		}
	}
	if n.AppliedIndex() <= snap.Index {
		t.Fatalf("applied %d, no entry after the snapshot at %d", n.AppliedIndex(), snap.Index)
	}
	want := readRestartState(t, ctx, n, ids, subjects)

	o := n.Opts
	o.RaftAddr = n.RaftAddr()
	n.Kill()
	n = testcluster.Start(t, o)
	got := readRestartState(t, ctx, n, ids, subjects)
	for _, id := range ids {
		if !reflect.DeepEqual(got.byID[id], want.byID[id]) {
			t.Errorf("token %s after the restart:\n%+v\nbefore:\n%+v", id, got.byID[id], want.byID[id])
		}
	}
	for _, s := range subjects {
		if !reflect.DeepEqual(got.bySubject[s], want.bySubject[s]) {
			t.Errorf("subject %s lists %d tokens after the restart, %d before", s, len(got.bySubject[s]), len(want.bySubject[s]))
		}
	}
	if !strings.Contains(n.Logs.String(), "the only voter of the configuration: electing at once") {
		t.Error("the restarted single node did not stand for election at once")
	}
	if hb, def := n.HeartbeatTimeout(), raft.DefaultConfig().HeartbeatTimeout; hb != def {
		t.Errorf("heartbeat timeout %v after the election, want the configured %v", hb, def)
	}
}

// TestJoiningFollowerReadyOnlyOnceCaughtUp: a node that joins a leader
// with thousands of entries in its log knows the leader at the first
// heartbeat, and its own commit index follows its log as it is sent; it
// answers ready only once it has applied the leader's commit index, less
// the lag a follower is allowed.
func TestJoiningFollowerReadyOnlyOnceCaughtUp(t *testing.T) {
	ctx := ctxFor(t, 2*time.Minute)
	leader := testcluster.Start(t, testcluster.Options{GossipAddr: "127.0.0.1:0"})
	applyEmpty(t, leader, 4000) // four times the lag allowed
	commit := leader.AppliedIndex()

	f, err := testcluster.TryStart(t, testcluster.Options{Join: []string{leader.GossipAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if err := f.Ready(); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the follower never became ready: %v\nthe follower's log:\n%s\nthe leader's log:\n%s", f.Ready(), f.Logs, leader.Logs)
		case <-time.After(5 * time.Millisecond):
		}
	}
	// maxLag: what Ready allows a follower.
	if applied := f.AppliedIndex(); applied+1000 < commit {
		t.Fatalf("the follower answered ready at applied index %d, the leader's commit index was %d", applied, commit)
	}
}

// TestFollowerCatchesUpByStoredSnapshot: a node that joins a leader whose
// log was compacted past its start is sent the leader's snapshot, in
// version 2 of the stream past the fence, restores it and then answers
// for the records it holds.
func TestFollowerCatchesUpByStoredSnapshot(t *testing.T) {
	ctx := ctxFor(t, 3*time.Minute)
	// The log in bbolt, which drops entries one by one where the WAL
	// drops whole segments (64 MiB, more than this test writes).
	leader := testcluster.Start(t, testcluster.Options{GossipAddr: "127.0.0.1:0", LogStore: cluster.LogStoreBolt})
	var ids []string
	for i := range 20 {
		iss, err := leader.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: fmt.Sprint("user:", i%3), ClientID: "web",
			Title: "laptop", UserAgent: "catch-up-test"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, iss.ID)
	}
	// More entries than Raft keeps after a snapshot (TrailingLogs, 10240),
	// so that the joining node cannot be sent the log from its start.
	applyEmpty(t, leader, 11200)
	if _, err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}
	f := testcluster.Start(t, testcluster.Options{Join: []string{leader.GossipAddr()}})
	f.WaitReady(t)
	checkStoredSnapshots(t, f.Opts.DataDir)
	if !strings.Contains(f.Logs.String(), "Installed remote snapshot") {
		t.Fatalf("the follower caught up without the leader's snapshot (applied %d, the leader %d); its log:\n%s", f.AppliedIndex(), leader.AppliedIndex(), f.Logs)
	}
	for _, id := range ids {
		waitFor(t, "the follower reads "+id, 30*time.Second, func() error {
			r, err := f.Client.Get(ctx, id)
			if err != nil {
				return err
			}
			if r.Status != "active" || r.Title != "laptop" || r.UserAgent != "catch-up-test" {
				return fmt.Errorf("read %+v", r)
			}
			return nil
		})
	}
}

// checkStoredSnapshots fails t unless dir holds snapshots, each in
// version 2 of the stream.
func checkStoredSnapshots(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if len(files) == 0 {
		t.Fatalf("no snapshot file in %s", dir)
	}
	for _, f := range files {
		if head, err := os.ReadFile(f); err != nil || len(head) < 7 || string(head[:7]) != "TKSNAP\x02" {
			t.Fatalf("snapshot %s starts %q (%v), want version 2 of the stream", f, head[:min(7, len(head))], err)
		}
	}
}

// applyEmpty writes n empty entries through leader, from 16 writers at
// once.
func applyEmpty(t *testing.T, leader *testcluster.Node, n int) {
	t.Helper()
	entry, err := fsm.Encode(&fsm.Batch{})
	if err != nil {
		t.Fatal(err)
	}
	const workers = 16
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w; i < n; i += workers {
				if _, err := leader.ApplyRaw(entry); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
