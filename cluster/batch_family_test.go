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
