package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

func (e *env) consume(t *testing.T, req wire.ConsumeRequest) reply {
	t.Helper()
	return e.do(t, http.MethodPost, "/v1/tokens/consume", mustJSON(t, req))
}

// wantExplained checks a 410 whose message names the date in "at" (and
// the reason, when there is one).
func wantExplained(t *testing.T, r reply, code string, at time.Time, reason string) {
	t.Helper()
	eb := wantError(t, r, http.StatusGone, code)
	if eb.At == nil || !eb.At.Equal(at) {
		t.Errorf("%s: at %v, want %v", r, eb.At, at)
	}
	if date := at.UTC().Format(time.RFC3339); !strings.Contains(eb.Message, date) {
		t.Errorf("%s: message %q does not name the date %s", r, eb.Message, date)
	}
	if reason != "" && !strings.Contains(eb.Message, reason) {
		t.Errorf("%s: message %q does not give the reason %q", r, eb.Message, reason)
	}
}

func TestConsume(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})

	t.Run("single use", func(t *testing.T) {
		data := json.RawMessage(`{"redirect_uri":"https://app1.example/cb"}`)
		out := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:42", ClientID: "app1", Data: data})
		r := e.consume(t, wire.ConsumeRequest{Token: out.Token, Kind: "oauth2_code", ClientID: "app1"})
		var rec wire.Record
		wantJSON(t, r, http.StatusOK, &rec)
		if rec.ID != out.ID || rec.MaxUses != 1 || rec.UsesLeft != 0 || rec.LastUsedAt == nil || string(rec.Data) != string(data) {
			t.Errorf("consume answered %+v; want id %s, max_uses 1, uses_left 0, last_used_at and the data %s", rec, out.ID, data)
		}
		if indexOf(t, r) <= out.Index {
			t.Errorf("%s: index %d, want past the issue's %d", r, indexOf(t, r), out.Index)
		}
		noSecret(t, "consume", r.Body, out.Token, e.n.Hasher)
		wantExplained(t, e.lookup(t, out.Token), wire.CodeTokenConsumed, *rec.LastUsedAt, "")
		// A code's second presentation is an attack on its grant (reuse
		// detection, tested with rotation); other single-use kinds are
		// only used up.
		wantExplained(t, e.consume(t, wire.ConsumeRequest{Token: out.Token}), wire.CodeTokenReused, *rec.LastUsedAt, "")
		req := e.issue(t, wire.IssueRequest{Kind: "oauth1_request", Subject: "user:42"})
		wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: req.Token}), http.StatusOK, &rec)
		wantExplained(t, e.consume(t, wire.ConsumeRequest{Token: req.Token}), wire.CodeTokenConsumed, *rec.LastUsedAt, "")
		var got wire.Record
		wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens/"+out.ID, ""), http.StatusOK, &got)
		if got.Status != "consumed" || got.Data != nil {
			t.Errorf("GET by id after the last use: %+v, want status consumed without data", got)
		}
	})

	t.Run("max uses", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:42", MaxUses: 3})
		for want := int64(2); want >= 0; want-- {
			var rec wire.Record
			wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: out.Token}), http.StatusOK, &rec)
			if rec.UsesLeft != want || rec.MaxUses != 3 {
				t.Errorf("consume: uses_left %d of max_uses %d, want %d of 3", rec.UsesLeft, rec.MaxUses, want)
			}
		}
		wantError(t, e.consume(t, wire.ConsumeRequest{Token: out.Token}), http.StatusGone, wire.CodeTokenConsumed)
	})

	t.Run("unlimited", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:42"})
		for i := 0; i < 3; i++ {
			var rec wire.Record
			wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: out.Token, Kind: "access"}), http.StatusOK, &rec)
			if rec.Status != "active" || rec.MaxUses != 0 {
				t.Errorf("consume %d of an unlimited token: %+v, want active with max_uses 0", i, rec)
			}
		}
	})

	t.Run("brought token", func(t *testing.T) {
		const brought = "ext-request-token-5521"
		e.issue(t, wire.IssueRequest{Kind: "oauth1_request", Token: brought})
		wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: brought}), http.StatusOK, nil)
		wantError(t, e.consume(t, wire.ConsumeRequest{Token: brought}), http.StatusGone, wire.CodeTokenConsumed)
	})
}

func TestConsumeMismatchDoesNotUseTheToken(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	code := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1"})
	multi := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:1", ClientID: "app1", MaxUses: 2})
	for _, issued := range []wire.IssueResponse{code, multi} {
		tok := issued.Token
		for _, c := range []struct {
			req  wire.ConsumeRequest
			code string
		}{
			{wire.ConsumeRequest{Token: tok, Kind: "oauth1_request"}, wire.CodeKindMismatch},
			{wire.ConsumeRequest{Token: tok, Kind: "remember", ClientID: "app1"}, wire.CodeKindMismatch},
			{wire.ConsumeRequest{Token: tok, ClientID: "app2"}, wire.CodeClientMismatch},
			{wire.ConsumeRequest{Token: tok, ClientID: "APP1"}, wire.CodeClientMismatch},
		} {
			// Read by id: a lookup would note a last use of its own, which
			// the node writes at its next flush, maybe in between.
			before := e.byID(t, issued.ID)
			wantError(t, e.consume(t, c.req), http.StatusForbidden, c.code)
			after := e.byID(t, issued.ID)
			if after.Status != "active" || after.UsesLeft != before.UsesLeft || after.LastUsedAt != nil {
				t.Errorf("after a %s: %+v, want still active with uses_left %d and never used", c.code, after, before.UsesLeft)
			}
		}
	}
	wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code", ClientID: "app1"}), http.StatusOK, nil)
	for i := 0; i < 2; i++ {
		wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: multi.Token, ClientID: "app1"}), http.StatusOK, nil)
	}
	wantError(t, e.consume(t, wire.ConsumeRequest{Token: multi.Token}), http.StatusGone, wire.CodeTokenConsumed)
}

// readClock is the API's read clock, movable by the test.
type readClock struct{ offset atomic.Int64 }

func (c *readClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *readClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

func TestInvalidTokensExplainThemselves(t *testing.T) {
	t.Parallel()
	var clk readClock
	// A GC grace of an hour keeps expired tokens around to explain themselves.
	e := startEnv(t, testcluster.Options{Now: clk.Now, GCGrace: time.Hour})

	t.Run("expired at consume, by leader time", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:5", TTL: "50ms"})
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			r := e.consume(t, wire.ConsumeRequest{Token: out.Token})
			if r.Status != http.StatusOK {
				wantExplained(t, r, wire.CodeTokenExpired, *out.ExpiresAt, "")
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a 50ms token still consumable after 10s: %s", r)
			}
			<-tick.C
		}
		wantExplained(t, e.lookup(t, out.Token), wire.CodeTokenExpired, *out.ExpiresAt, "")
	})

	t.Run("expired at lookup, by the reader's clock", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "oauth1_callback", Subject: "user:6", TTL: "1m"})
		if rec := e.record(t, out.Token); rec.Status != "active" {
			t.Fatalf("fresh token is %s, want active", rec.Status)
		}
		clk.Advance(2 * time.Minute)
		wantExplained(t, e.lookup(t, out.Token), wire.CodeTokenExpired, *out.ExpiresAt, "")
		var rec wire.Record
		wantJSON(t, e.do(t, http.MethodGet, "/v1/tokens/"+out.ID, ""), http.StatusOK, &rec)
		if rec.Status != "expired" {
			t.Errorf("GET by id past expiry: status %q, want expired", rec.Status)
		}
		if recs, _ := e.listAll(t, "user:6", "", 10); len(recs) != 0 {
			t.Errorf("list past expiry shows %d tokens, want none", len(recs))
		}
	})

	t.Run("revoked", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "developer", Subject: "user:7"})
		var rec wire.Record
		r := e.do(t, http.MethodPost, "/v1/tokens/revoke", mustJSON(t, wire.RevokeRequest{Token: out.Token, Reason: "left the company"}))
		wantJSON(t, r, http.StatusOK, &rec)
		if rec.InvalidatedAt == nil {
			t.Fatalf("%s: no invalidated_at", r)
		}
		wantExplained(t, e.lookup(t, out.Token), wire.CodeTokenRevoked, *rec.InvalidatedAt, "left the company")
		wantExplained(t, e.consume(t, wire.ConsumeRequest{Token: out.Token}), wire.CodeTokenRevoked, *rec.InvalidatedAt, "left the company")
		// Revoking again changes nothing and keeps the first reason.
		wantJSON(t, e.do(t, http.MethodDelete, "/v1/tokens/"+out.ID+"?reason=again", ""), http.StatusOK, &rec)
		if rec.Reason != "left the company" {
			t.Errorf("second revoke: reason %q, want the first %q", rec.Reason, "left the company")
		}
	})

	t.Run("consumed", func(t *testing.T) {
		out := e.issue(t, wire.IssueRequest{Kind: "oauth1_request", Subject: "user:8"})
		var rec wire.Record
		wantJSON(t, e.consume(t, wire.ConsumeRequest{Token: out.Token}), http.StatusOK, &rec)
		wantExplained(t, e.lookup(t, out.Token), wire.CodeTokenConsumed, *rec.LastUsedAt, "")
		wantExplained(t, e.consume(t, wire.ConsumeRequest{Token: out.Token}), wire.CodeTokenConsumed, *rec.LastUsedAt, "")
	})
}

// consumeAtOnce sends the same consume from n goroutines released at
// once and returns the answers.
func consumeAtOnce(t *testing.T, e *env, tok string, n int) []reply {
	t.Helper()
	return postAtOnce(t, e, "/v1/tokens/consume", []byte(fmt.Sprintf(`{"token":%q}`, tok)), n)
}

// postAtOnce sends the same POST from n goroutines released at once and
// returns the answers.
func postAtOnce(t *testing.T, e *env, path string, body []byte, n int) []reply {
	t.Helper()
	replies := make([]reply, n)
	errs := make([]error, n)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			replies[i], errs[i] = exchange(e.hc, http.MethodPost, e.n.API.URL, path, e.key, body)
		}()
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s %d: %v", path, i, err)
		}
		if err := commonHeaders(replies[i]); err != nil {
			t.Error(err)
		}
	}
	return replies
}

// tally checks that every answer is a 200 or a 410 with code (the
// token's second presentation) and returns the number of 200s.
func tally(t *testing.T, replies []reply, id, code string) int {
	t.Helper()
	ok := 0
	for _, r := range replies {
		if r.Status == http.StatusOK {
			ok++
			var rec wire.Record
			if err := json.Unmarshal(r.Body, &rec); err != nil || rec.ID != id {
				t.Errorf("%s: want the record of %s", r, id)
			}
			continue
		}
		if _, err := errorShape(r, http.StatusGone, code); err != nil {
			t.Error(err)
		}
	}
	return ok
}

func TestConsumeExactlyOnce(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	const consumers, tokens = 64, 20

	t.Run("single use", func(t *testing.T) {
		for i := 0; i < tokens; i++ {
			out := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:race", ClientID: "app1"})
			if ok := tally(t, consumeAtOnce(t, e, out.Token, consumers), out.ID, wire.CodeTokenReused); ok != 1 {
				t.Errorf("token %d: %d of %d concurrent consumes succeeded, want exactly 1", i, ok, consumers)
			}
			wantError(t, e.lookup(t, out.Token), http.StatusGone, wire.CodeTokenConsumed)
		}
	})

	t.Run("max uses 3", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			out := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "user:race", MaxUses: 3})
			replies := consumeAtOnce(t, e, out.Token, consumers)
			if ok := tally(t, replies, out.ID, wire.CodeTokenConsumed); ok != 3 {
				t.Errorf("token %d: %d of %d concurrent consumes succeeded, want exactly 3", i, ok, consumers)
			}
			left := map[int64]int{}
			for _, r := range replies {
				var rec wire.Record
				if r.Status == http.StatusOK && json.Unmarshal(r.Body, &rec) == nil {
					left[rec.UsesLeft]++
				}
			}
			if left[0] != 1 || left[1] != 1 || left[2] != 1 {
				t.Errorf("token %d: uses_left seen %v, want 2, 1 and 0 once each", i, left)
			}
			wantError(t, e.lookup(t, out.Token), http.StatusGone, wire.CodeTokenConsumed)
		}
	})
}
