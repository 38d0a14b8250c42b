package cluster_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// waitApplied waits until every node of c applied index.
func waitApplied(t *testing.T, c *testcluster.Cluster, index uint64) {
	t.Helper()
	waitFor(t, fmt.Sprint("every node at index ", index), time.Minute, func() error {
		for _, n := range c.Nodes() {
			if n.AppliedIndex() < index {
				return fmt.Errorf("node %s at %d", n.ID(), n.AppliedIndex())
			}
		}
		return nil
	})
}

// follower returns a node of c that does not lead, once both it and the
// leader are ready.
func follower(t *testing.T, c *testcluster.Cluster) *testcluster.Node {
	t.Helper()
	var f *testcluster.Node
	waitFor(t, "a ready leader and follower", time.Minute, func() error {
		l := c.Leader()
		if l == nil || l.Ready() != nil {
			return errors.New("no ready leader")
		}
		for _, n := range c.Nodes() {
			if n != l && n.Ready() == nil {
				f = n
				return nil
			}
		}
		return errors.New("no ready follower")
	})
	return f
}

// A batch sent to a follower is forwarded, applied once in one entry, and
// every node holds its effects; a batch failing there leaves nothing on
// any node.
func TestFollowerForwardsABatch(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	f := follower(t, c)
	code, err := f.Client.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Client.Batch(ctx,
		client.ConsumeOp(wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code", ClientID: "app1"}),
		client.IssueOp(wire.IssueRequest{Kind: "access", Subject: "user:1", ClientID: "app1", Family: code.Family, Scopes: []string{"read"}}),
		client.IssueOp(wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1", Family: code.Family, Scopes: []string{"read"}}),
	)
	if err != nil {
		t.Fatalf("batch through a follower: %v", err)
	}
	at, rt := out.Results[1].Issue, out.Results[2].Issue
	if at == nil || rt == nil || at.Index != out.Index || rt.Index != out.Index {
		t.Fatalf("batch answered %+v: want both issues at the batch's index %d", out.Results, out.Index)
	}
	want := map[string]string{code.ID: "consumed", at.ID: "active", rt.ID: "active"}
	waitApplied(t, c, out.Index)
	for _, n := range c.Nodes() {
		for id, status := range want {
			rec, err := n.Client.Get(ctx, id)
			if err != nil || rec.Status != status {
				t.Fatalf("node %s: %s is %+v, %v; want %s", n.ID(), id, rec, err, status)
			}
		}
	}

	// Through the follower again, a failing batch: nothing on any node.
	_, err = f.Client.Batch(ctx,
		client.IssueOp(wire.IssueRequest{Kind: "access", Subject: "user:2"}),
		client.IssueOp(wire.IssueRequest{Kind: "access", Subject: "user:2"}),
		client.ConsumeOp(wire.ConsumeRequest{Token: at.Token, Kind: "oauth2_refresh"}),
	)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Op != 2 || ce.Code != wire.CodeKindMismatch {
		t.Fatalf("failing batch through a follower: %v, want kind_mismatch at op 2", err)
	}
	leader := c.Leader()
	mark, err := leader.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:3"})
	if err != nil {
		t.Fatal(err)
	}
	waitApplied(t, c, mark.Index)
	for _, n := range c.Nodes() {
		if page, err := n.Client.List(ctx, "user:2", client.ListOptions{}); err != nil || len(page.Tokens) != 0 {
			t.Fatalf("node %s: user:2 has %+v, %v after the failed batch; want nothing", n.ID(), page, err)
		}
	}
}

// batchReply is a leader's answer to a forwarded client batch.
type batchReply struct {
	Index uint64 `codec:"i"`
	Err   string `codec:"e"`
	Fail  string `codec:"f"`
	Op    int    `codec:"op"`
	Ops   []struct {
		Record *fsm.Record `codec:"r"`
		Err    string      `codec:"e"`
	} `codec:"o"`
}

// A forwarded batch sent again under its request id, as a follower
// retries a write whose answer it lost, applies once: the second call
// answers the first one's results (in an entry of its own, which applies
// nothing).
func TestRetriedForwardedBatchAppliesOnce(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	follower(t, c)
	leader := c.Leader()
	tok, err := leader.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", MaxUses: 3})
	if err != nil {
		t.Fatal(err)
	}
	hash := leader.Hasher.Sum(tok.Token)
	newID := "n0000000000000000000nn"
	cb, err := fsm.NewClientBatch(
		&fsm.Consume{Hash: hash},
		&fsm.Issue{Record: fsm.Record{ID: newID, Hash: strings.Repeat("n", 32), Kind: "access", Subject: "user:1"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	caller := newRPCCaller(t, nil)
	write := map[string]any{"q": "batch-retry.1", "e": mustEncode(t, cb)}
	var replies [2]batchReply
	for i := range replies {
		if err := caller.callInto(leader.RaftAddr(), "/rpc/v1/apply", write, &replies[i]); err != nil {
			t.Fatal(err)
		}
	}
	first := replies[0]
	if first.Fail != "" || first.Err != "" || first.Index == 0 || len(first.Ops) != 2 || first.Ops[0].Record.UsesLeft != 2 ||
		first.Ops[1].Record == nil || first.Ops[1].Record.ID != newID {
		t.Fatalf("the forwarded batch answered %+v", first)
	}
	second := replies[1]
	second.Index = first.Index
	if replies[1].Index <= first.Index || !reflect.DeepEqual(second, first) {
		t.Fatalf("the retry answered %+v, want the first answer %+v", replies[1], first)
	}
	waitApplied(t, c, first.Index)
	for _, n := range c.Nodes() {
		rec, _, err := n.Client.Lookup(ctx, tok.Token, client.LookupOptions{})
		if err != nil || rec.UsesLeft != 2 {
			t.Fatalf("node %s: the token after the retried batch: %+v, %v; want one use taken", n.ID(), rec, err)
		}
	}
	// A forwarded batch of a kind of op no client writes is refused.
	bad := &fsm.ClientBatch{Ops: [][]byte{mustEncode(t, &fsm.Expire{Before: 1, IDs: []string{newID}})}}
	r, err := caller.call(leader.RaftAddr(), "/rpc/v1/apply", map[string]any{"q": "batch-retry.2", "e": mustEncode(t, bad)})
	if err != nil || !strings.HasPrefix(r.Fail, "refused") {
		t.Fatalf("a batch holding an expiry: %+v, %v; want refused", r, err)
	}
}
