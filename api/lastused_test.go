package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// TestLastUsedIsBufferedNotOneWritePerRead: a thousand lookups of one
// token cost at most a couple of log entries, and the last use (with the
// reader's ip and user agent) shows in the subject's listing.
func TestLastUsedIsBufferedNotOneWritePerRead(t *testing.T) {
	n := testcluster.Start(t, testcluster.Options{})
	ctx := context.Background()
	iss, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:7", Title: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	code, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "oauth1_callback", Subject: "user:7"})
	if err != nil {
		t.Fatal(err)
	}
	before := n.AppliedIndex()
	for i := range 1000 {
		if _, err := lookupFrom(ctx, n, iss.Token, "198.51.100.7", fmt.Sprint("browser/", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A kind whose policy does not update last_used is never touched.
	if _, err := lookupFrom(ctx, n, code.Token, "198.51.100.8", "x"); err != nil {
		t.Fatal(err)
	}
	var rec wire.Record
	deadline := time.Now().Add(20 * time.Second)
	for {
		page, err := n.Client.List(ctx, "user:7", client.ListOptions{Kind: "access"})
		if err != nil || len(page.Tokens) != 1 {
			t.Fatalf("listing: %+v, %v", page, err)
		}
		if rec = page.Tokens[0]; rec.LastUsedAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("last_used_at not in the listing 20s after 1000 lookups")
		}
		<-time.After(50 * time.Millisecond)
	}
	if rec.IP != "198.51.100.7" || rec.UserAgent == "" || rec.Title != "laptop" {
		t.Errorf("listed session: want ip 198.51.100.7, a user agent and the title, got %+v", rec)
	}
	if entries := n.AppliedIndex() - before; entries > 2 {
		t.Fatalf("1000 lookups wrote %d log entries; want at most 2", entries)
	}
	if r, err := n.Client.Get(ctx, code.ID); err != nil || r.LastUsedAt != nil {
		t.Fatalf("oauth1_callback (no update_last_used): want no last_used_at, got %+v, %v", r, err)
	}
	if _, err := lookupFrom(ctx, n, iss.Token, "not-an-ip", ""); err == nil {
		t.Fatal("a lookup with a bad ip: want invalid_field")
	}
}

func lookupFrom(ctx context.Context, n *testcluster.Node, tok, ip, ua string) (*wire.Record, error) {
	rec, _, err := n.Client.Lookup(ctx, tok, client.LookupOptions{IP: ip, UserAgent: ua})
	return rec, err
}
