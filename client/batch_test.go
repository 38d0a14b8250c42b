package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

func TestBatch(t *testing.T) {
	n := testcluster.Start(t, testcluster.Options{})
	c, ctx := n.Client, context.Background()
	code, err := c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Batch(ctx,
		client.ConsumeOp(wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code"}),
		client.IssueOp(wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family}),
		client.RotateOp(wire.RotateRequest{Token: rt.Token}),
		client.IssueOp(wire.IssueRequest{Kind: "access", Subject: "user:2"}),
		client.RevokeOp(wire.RevokeRequest{Token: code.Token}),
	)
	if err != nil {
		t.Fatal(err)
	}
	if out.Index == 0 || len(out.Results) != 5 {
		t.Fatalf("batch answered %+v", out)
	}
	r := out.Results
	if r[0].Record == nil || r[0].Record.Status != "consumed" || r[1].Issue == nil || r[1].Issue.Family != code.Family ||
		r[2].Rotate == nil || r[2].Rotate.Token == "" || r[3].Issue == nil || r[4].Record == nil || r[4].Record.ID != code.ID {
		t.Fatalf("batch results %+v %+v %+v %+v %+v", r[0], r[1], r[2], r[3], r[4])
	}

	// A failing op: its error, its index, nothing applied.
	_, err = c.Batch(ctx,
		client.IssueOp(wire.IssueRequest{Kind: "access", Subject: "user:3"}),
		client.RotateOp(wire.RotateRequest{Token: r[2].Rotate.Token, ClientID: "other"}),
	)
	var ce *client.Error
	if !errors.Is(err, client.ErrClientMismatch) || !errors.As(err, &ce) || ce.Op != 1 {
		t.Fatalf("failing batch: %v, want client_mismatch at op 1", err)
	}
	if page, err := c.List(ctx, "user:3", client.ListOptions{}); err != nil || len(page.Tokens) != 0 {
		t.Fatalf("user:3 after the failed batch: %+v, %v", page, err)
	}
	// A batch-level error names no op; neither does another call's.
	if _, err := c.Batch(ctx); !errors.As(err, &ce) || ce.Op != -1 || !errors.Is(err, client.ErrMissingField) {
		t.Fatalf("empty batch: %v, want missing_field without an op", err)
	}
	if _, err := c.Consume(ctx, wire.ConsumeRequest{Token: code.Token}); !errors.As(err, &ce) || ce.Op != -1 {
		t.Fatalf("consume of a revoked code: %v, want no op", err)
	}
	if _, err := c.Batch(ctx, wire.BatchOp{Op: "lookup"}); err == nil {
		t.Fatal("an unknown op was sent")
	}
}

func TestRevokeFamilyKind(t *testing.T) {
	n := testcluster.Start(t, testcluster.Options{})
	c, ctx := n.Client, context.Background()
	rt, err := c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: rt.Family}); err != nil {
			t.Fatal(err)
		}
	}
	if k, err := c.RevokeFamilyKind(ctx, rt.Family, "access", "rotated"); err != nil || k != 2 {
		t.Fatalf("RevokeFamilyKind: %d, %v; want 2 revoked", k, err)
	}
	// The family is open: issuing and rotating into it work.
	if _, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: rt.Family}); err != nil {
		t.Fatalf("issue into the family after revoking its access tokens: %v", err)
	}
	if _, err := c.Rotate(ctx, wire.RotateRequest{Token: rt.Token}); err != nil {
		t.Fatalf("rotate in the family after revoking its access tokens: %v", err)
	}
	if _, err := c.RevokeFamilyKind(ctx, rt.Family, "nope", ""); !errors.Is(err, client.ErrUnknownKind) {
		t.Fatalf("unknown kind: %v, want ErrUnknownKind", err)
	}
	if k, err := c.RevokeFamily(ctx, rt.Family, "signed out"); err != nil || k != 2 {
		t.Fatalf("RevokeFamily: %d, %v; want the access token and the successor", k, err)
	}
	if _, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Family: rt.Family}); !errors.Is(err, client.ErrFamilyRevoked) {
		t.Fatalf("issue after RevokeFamily: %v, want ErrFamilyRevoked", err)
	}
}

// A family revocation in a batch: by kind, then a rotation into the open
// family; its result is the count.
func TestBatchRevokeFamilyOp(t *testing.T) {
	n := testcluster.Start(t, testcluster.Options{})
	c, ctx := n.Client, context.Background()
	rt, err := c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "user:1", ClientID: "app1"})
	if err != nil {
		t.Fatal(err)
	}
	at, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: rt.Family})
	if err != nil {
		t.Fatal(err)
	}
	ops := []wire.BatchOp{
		client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: rt.Family, Kind: "access", Reason: "rotated"}),
		client.RotateOp(wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}}),
	}
	var out *wire.BatchResponse
	waitFenced(t, func() error { out, err = c.Batch(ctx, ops...); return err })
	if r := out.Results; r[0].Revoked == nil || r[0].Revoked.Revoked != 1 || r[1].Rotate == nil || r[1].Rotate.Access == nil {
		t.Fatalf("batch results %+v %+v", r[0], r[1])
	}
	if rec, _, err := c.Lookup(ctx, at.Token, client.LookupOptions{}); !errors.Is(err, client.ErrTokenRevoked) {
		t.Fatalf("the old access token: %+v, %v; want revoked", rec, err)
	}
	// For good: the family is closed.
	out, err = c.Batch(ctx, client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: rt.Family}))
	if err != nil || out.Results[0].Revoked == nil || out.Results[0].Revoked.Revoked != 2 {
		t.Fatalf("revoking the family for good: %+v, %v; want the successor and its access token", out, err)
	}
	if _, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Family: rt.Family}); !errors.Is(err, client.ErrFamilyRevoked) {
		t.Fatalf("an issue into the revoked family: %v", err)
	}
}

// waitFenced calls f again while it answers cluster_upgrading: a new
// cluster takes a batch of family revocations once its log is fenced.
func waitFenced(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != wire.CodeUpgrading || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
}
