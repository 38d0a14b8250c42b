package api_test

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// A subject with more expired records than a page examines gets short
// pages with a cursor, and paging on still finds every active token.
func TestListPagesPastManyExpiredRecords(t *testing.T) {
	t.Parallel()
	var ahead atomic.Int64 // how far the API's read clock runs ahead
	e := startEnv(t, testcluster.Options{Now: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }})
	ctx := context.Background()
	const subject = "user:expired-many"
	active := e.issue(t, wire.IssueRequest{Kind: "remember", Subject: subject}).ID

	n := fsm.ListScan + 100
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	next := atomic.Int64{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := e.n.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: subject, TTL: "1m"}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("issue: %v", err)
	}
	ahead.Store(int64(time.Hour)) // every access token has expired; the remember token has not

	q := url.Values{"subject": {subject}, "limit": {"10"}}
	var first wire.ListResponse
	wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens?"+q.Encode(), ""), http.StatusOK, &first)
	if first.NextCursor == "" {
		t.Fatalf("first page of %d records = %d tokens and no cursor; want a cursor, the page examining at most %d", n+1, len(first.Tokens), fsm.ListScan)
	}
	recs, pages := e.listAll(t, subject, "", 10)
	if len(recs) != 1 || recs[0].ID != active || pages < 2 {
		t.Fatalf("listing %s = %d tokens in %d pages, want only %s, in 2 pages or more", subject, len(recs), pages, active)
	}
}
