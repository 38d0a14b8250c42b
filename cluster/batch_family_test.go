package cluster_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// A batch holding family revocations, sent to a follower once the log is
// fenced at this version: forwarded and applied on every node; one whose
// later op fails leaves every node's family and tokens as they were.
func TestFollowerForwardsAFamilyRevocationBatch(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	f := follower(t, c)
	for _, n := range c.Nodes() {
		waitFor(t, n.ID()+" applies the fence", 30*time.Second, func() error {
			if got := n.LogVersion(); got != fsm.Version {
				return fmt.Errorf("LogVersion %d, want %d", got, fsm.Version)
			}
			return nil
		})
	}
	rt, err := f.Client.Issue(ctx, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1"})
	if err != nil {
		t.Fatal(err)
	}
	at, err := f.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", ClientID: "app1", Family: rt.Family})
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Client.Batch(ctx,
		client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: rt.Family, Kind: "access", Reason: "rotated"}),
		client.RotateOp(wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}),
	)
	if err != nil {
		t.Fatalf("batch through a follower: %v", err)
	}
	if r := out.Results; r[0].Revoked == nil || r[0].Revoked.Revoked != 1 || r[1].Rotate == nil || r[1].Rotate.Access == nil {
		t.Fatalf("batch answered %+v", out.Results)
	}
	next := out.Results[1].Rotate
	want := map[string]string{at.ID: "revoked", rt.ID: "consumed", next.ID: "active", next.Access.ID: "active"}
	waitApplied(t, c, out.Index)
	for _, n := range c.Nodes() {
		for id, status := range want {
			if rec, err := n.Client.Get(ctx, id); err != nil || rec.Status != status {
				t.Fatalf("node %s: %s is %+v, %v; want %s", n.ID(), id, rec, err, status)
			}
		}
	}

	// The family for good, then an issue into it: refused at op 1, and
	// on every node the family's tokens are active and it takes new ones.
	_, err = f.Client.Batch(ctx,
		client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: rt.Family, Reason: "logout"}),
		client.IssueOp(wire.IssueRequest{Kind: "access", Subject: "user:1", Family: rt.Family}),
	)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Op != 1 || ce.Code != wire.CodeFamilyRevoked {
		t.Fatalf("failing batch through a follower: %v, want family_revoked at op 1", err)
	}
	mark, err := c.Leader().Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: rt.Family})
	if err != nil {
		t.Fatalf("an issue into the family after the failed batch: %v", err)
	}
	waitApplied(t, c, mark.Index)
	for _, n := range c.Nodes() {
		for _, id := range []string{next.ID, next.Access.ID} {
			if rec, err := n.Client.Get(ctx, id); err != nil || rec.Status != "active" {
				t.Fatalf("node %s: %s is %+v, %v after the failed batch; want active", n.ID(), id, rec, err)
			}
		}
	}
}

// startUnfenced starts a cluster of three voters whose first two report
// the state machine version before this one, as nodes not yet upgraded
// would: whichever node leads, a voter reports the older version, so no
// fence of this version is written.
func startUnfenced(t *testing.T) *testcluster.Cluster {
	t.Helper()
	first := testcluster.Start(t, testcluster.Options{BootstrapExpect: 3})
	first.ClaimVersion(fsm.Version - 1)
	second := testcluster.Start(t, testcluster.Options{BootstrapExpect: 3, Join: []string{first.GossipAddr()}})
	second.ClaimVersion(fsm.Version - 1)
	third := testcluster.Start(t, testcluster.Options{BootstrapExpect: 3, Join: []string{first.GossipAddr()}})
	c := testcluster.NewCluster(t, first, second, third)
	for _, n := range c.Nodes() {
		n.WaitReady(t)
	}
	return c
}

// A batch holding a family revocation, sent to a follower before the
// log's fence: the follower answers that the cluster is being upgraded
// itself, without forwarding it (a leader of the earlier release would
// refuse it as malformed); once every voter reports this version and the
// fence is written, the same batch goes through.
func TestFollowerBeforeTheFenceAnswersUpgrading(t *testing.T) {
	c := startUnfenced(t)
	ctx := ctxFor(t, 2*time.Minute)
	f := follower(t, c)
	rt, err := f.Client.Issue(ctx, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1"})
	if err != nil {
		t.Fatal(err)
	}
	// Forwarded writes go in batches once the follower knows its leader
	// serves them: from then on each call answered is counted.
	access := 0 // issued into rt's family: the kind revocation below counts them
	waitFor(t, "a forwarded batch call", 30*time.Second, func() error {
		if _, err := f.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: rt.Family}); err != nil {
			return err
		}
		access++
		if calls, _ := forwardCalls(t, f); calls == 0 {
			return errors.New("no call answered yet")
		}
		return nil
	})
	if v := f.LogVersion(); v >= fsm.Version {
		t.Fatalf("the follower's log is at version %d before the voters all report %d", v, fsm.Version)
	}
	before, _ := forwardCalls(t, f)
	ops := []wire.BatchOp{
		client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: rt.Family, Kind: "access", Reason: "rotated"}),
		client.RotateOp(wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}),
	}
	_, err = f.Client.Batch(ctx, ops...)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 503 || ce.Code != wire.CodeUpgrading {
		t.Fatalf("a family batch through a follower before the fence: %v, want 503 %s", err, wire.CodeUpgrading)
	}
	if after, _ := forwardCalls(t, f); after != before {
		t.Errorf("the follower forwarded the batch (%d calls answered, %d before)", after, before)
	}
	// The follower's read is local: it shows rt once it has applied it.
	waitFor(t, "the refresh token active after the refused batch", 30*time.Second, func() error {
		if rec, err := f.Client.Get(ctx, rt.ID); err != nil || rec.Status != "active" {
			return fmt.Errorf("%+v, %v; want active", rec, err)
		}
		return nil
	})

	// Every voter upgraded: the fence, then the batch.
	for _, n := range c.Nodes() {
		n.ClaimVersion(0)
	}
	for _, n := range c.Nodes() {
		waitFor(t, n.ID()+" applies the fence", time.Minute, func() error {
			if got := n.LogVersion(); got != fsm.Version {
				return fmt.Errorf("LogVersion %d, want %d", got, fsm.Version)
			}
			return nil
		})
	}
	out, err := f.Client.Batch(ctx, ops...)
	if err != nil {
		t.Fatalf("the batch after the fence: %v", err)
	}
	if r := out.Results; r[0].Revoked == nil || r[0].Revoked.Revoked != access || r[1].Rotate == nil {
		t.Fatalf("batch answered %+v (revoked %+v), want the %d access tokens of the family revoked and the rotation", out.Results, out.Results[0].Revoked, access)
	}
}
