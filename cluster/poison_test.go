package cluster_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// restartAll kills every node and starts each again on its data and
// addresses, without waiting for it to be ready (a halted node is not).
func restartAll(t *testing.T, old []*testcluster.Node) []*testcluster.Node {
	t.Helper()
	opts := make([]testcluster.Options, len(old))
	for i, n := range old {
		o := n.Opts
		o.RaftAddr, o.GossipAddr, o.GossipLANAddr = n.RaftAddr(), n.GossipAddr(), n.GossipLANAddr()
		opts[i] = o
	}
	for _, n := range old {
		n.Kill()
	}
	var nodes []*testcluster.Node
	for i, o := range opts {
		o.Join = nil
		for j := range opts {
			if j != i {
				o.Join = append(o.Join, opts[j].GossipAddr)
			}
		}
		n := testcluster.Start(t, o)
		t.Cleanup(n.Kill)
		nodes = append(nodes, n)
	}
	return nodes
}

func leaderOf(t *testing.T, nodes []*testcluster.Node) *testcluster.Node {
	t.Helper()
	var leader *testcluster.Node
	waitFor(t, "a leader", 30*time.Second, func() error {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
				return nil
			}
		}
		return errors.New("none")
	})
	return leader
}

// Entries that the leader's checks would never let through, put into the
// log as they are: every replica answers them the same, keeps running and
// restarts cleanly on its data; an unknown type halts every replica at its
// index, up and reporting it, again after a restart.
func TestBadLogEntriesLeaveReplicasUp(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	leader, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, err := leader.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1"})
	if err != nil {
		t.Fatal(err)
	}
	issue := mustEncode(t, &fsm.Issue{Record: fsm.Record{ID: "raw", Hash: strings.Repeat("h", 32), Kind: "access"}})
	for _, tt := range []struct {
		name   string
		entry  []byte
		want   error // the state machine's answer
		reason string
	}{
		{"undecodable bytes", []byte{byte(fsm.TypeIssue), 0xc1, 0x63}, fsm.ErrBadEntry, fsm.RejectUndecodable},
		{"a nested batch", mustEncode(t, &fsm.Batch{Entries: [][]byte{mustEncode(t, &fsm.Batch{Entries: [][]byte{issue}})}}), nil, fsm.RejectNestedBatch},
		{"an unknown type flagged ignorable", []byte{byte(fsm.IgnoreUnknown) | 0x63, 0x01}, nil, fsm.RejectSkipped},
	} {
		res, err := leader.ApplyRaw(tt.entry)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		r, _ := fsm.TakeResult(res)
		if !errors.Is(r.Err, tt.want) {
			t.Fatalf("%s: the state machine answered %+v, want %v", tt.name, r, tt.want)
		}
		if tt.reason == fsm.RejectNestedBatch && (len(r.Batch) != 1 || !errors.Is(r.Batch[0].Err, fsm.ErrBadEntry)) {
			t.Fatalf("%s: answered %+v, want the entry answered as bad", tt.name, r)
		}
		index := leader.AppliedIndex()
		for _, n := range c.Nodes() {
			waitFor(t, fmt.Sprintf("%s: %s applies past it", tt.name, n.ID()), 30*time.Second, func() error {
				if got := n.AppliedIndex(); got < index {
					return fmt.Errorf("applied %d of %d", got, index)
				}
				return nil
			})
			if got := labeledMetric(t, n, "tokenstore_fsm_rejected_entries_total", "reason", tt.reason); got < 1 {
				t.Fatalf("%s: %s counted %v rejections for %s, want 1", tt.name, n.ID(), got, tt.reason)
			}
			if err := n.Ready(); err != nil {
				t.Fatalf("%s: %s is not ready: %v", tt.name, n.ID(), err)
			}
		}
	}
	if r, err := c.Nodes()[0].ByID("raw"); err != nil {
		t.Fatalf("read the local replica: %v", err)
	} else if r != nil {
		t.Fatal("the issue inside a nested batch was applied")
	}

	nodes := restartAll(t, c.Nodes())
	leader = leaderOf(t, nodes)
	for _, n := range nodes {
		n.WaitReady(t)
		if _, _, err := n.Client.Lookup(ctx, before.Token, client.LookupOptions{MinIndex: before.Index}); err != nil {
			t.Fatalf("after the restart, %s: the token issued before: %v", n.ID(), err)
		}
	}

	// An unknown type without the flag halts every replica at its index.
	res, err := leader.ApplyRaw([]byte{0x63})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := fsm.TakeResult(res); !errors.Is(r.Err, fsm.ErrHalted) {
		t.Fatalf("unknown type: the leader's state machine answered %+v, want ErrHalted", r)
	}
	checkHalted := func(nodes []*testcluster.Node) {
		t.Helper()
		for _, n := range nodes {
			waitFor(t, n.ID()+" halts", 30*time.Second, func() error {
				err := n.Ready()
				if !errors.Is(err, cluster.ErrHalted) || !strings.Contains(err.Error(), "command type 99") {
					return fmt.Errorf("Ready() = %v, want halted naming type 99", err)
				}
				return nil
			})
			if _, _, err := n.Client.Lookup(ctx, before.Token, client.LookupOptions{}); err == nil || !strings.Contains(err.Error(), "replica_halted") {
				t.Fatalf("%s: a lookup on a halted replica: %v, want 503 replica_halted", n.ID(), err)
			}
		}
	}
	checkHalted(nodes)
	// A halted leader commits nothing it could not answer: writes are
	// refused before they reach the log.
	for _, n := range nodes {
		last := n.AppliedIndex()
		if _, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:2"}); err == nil || !strings.Contains(err.Error(), "replica_halted") {
			t.Fatalf("an issue on %s of a halted cluster: %v, want 503 replica_halted", n.ID(), err)
		}
		if got := n.AppliedIndex(); got != last {
			t.Fatalf("%s applied %d past its halt", n.ID(), got)
		}
	}
	nodes = restartAll(t, nodes)
	checkHalted(nodes)
}

func mustEncode(t testing.TB, c fsm.Command) []byte {
	t.Helper()
	b, err := fsm.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The version gate: the leader does not propose a command type that a
// voter has not reported knowing (here none knows it), since every replica
// that does not know it would halt there.
func TestLeaderProposesOnlyTypesEveryVoterKnows(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	leader, err := c.WaitForLeader(ctxFor(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	applied := leader.AppliedIndex()
	if err := leader.Propose([]byte{0x40, 0x80}); !errors.Is(err, cluster.ErrUnsupported) {
		t.Fatalf("proposing a type no voter knows: %v, want ErrUnsupported", err)
	}
	if err := leader.Propose(mustEncode(t, &fsm.RevokeFamily{Family: "f", Reason: "gate"})); err != nil {
		t.Fatalf("proposing a type every voter knows: %v", err)
	}
	if leader.AppliedIndex() <= applied {
		t.Fatal("the known command was not applied")
	}
}

// A cluster whose voters all run this build writes the fence of its
// version, after which the log may hold that version's fields.
func TestVotersOfThisVersionFenceTheLog(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	for _, n := range c.Nodes() {
		waitFor(t, n.ID()+" applies the fence", 30*time.Second, func() error {
			if got := n.LogVersion(); got != fsm.Version {
				return fmt.Errorf("LogVersion %d, want %d", got, fsm.Version)
			}
			return nil
		})
	}
}
