package systemtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// localRead is one local read's answer: its status, error code and the
// contact headers.
type localRead struct {
	what, code               string
	status                   int
	lastContact, knownLeader string
	retryAfter               string
}

func (r localRead) String() string {
	return fmt.Sprintf("%s: %d %s (last contact %q ms, known leader %q, Retry-After %q)",
		r.what, r.status, r.code, r.lastContact, r.knownLeader, r.retryAfter)
}

// readLocally makes the three local reads, lookup, introspection and
// external authorization, of secret on the node, and the listing of its
// subject, user:1.
func readLocally(n *node, secret string) ([]localRead, error) {
	base := n.URL()
	reqs := []struct {
		what string
		make func() (*http.Request, error)
	}{
		{"lookup", func() (*http.Request, error) {
			r, err := http.NewRequest(http.MethodPost, base+"/v1/tokens/lookup", strings.NewReader(`{"token":"`+secret+`"}`))
			if err == nil {
				r.Header.Set("Content-Type", "application/json")
			}
			return r, err
		}},
		{"introspect", func() (*http.Request, error) {
			r, err := http.NewRequest(http.MethodPost, base+"/v1/introspect", strings.NewReader(url.Values{"token": {secret}}.Encode()))
			if err == nil {
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			return r, err
		}},
		{"list", func() (*http.Request, error) {
			return http.NewRequest(http.MethodGet, base+"/v1/tokens?subject=user:1", nil)
		}},
		{"authz", func() (*http.Request, error) {
			r, err := http.NewRequest(http.MethodGet, base+api.AuthzPrefix+"/account", nil)
			if err == nil {
				r.Header.Set("Authorization", "Bearer "+secret)
			}
			return r, err
		}},
	}
	var out []localRead
	for _, q := range reqs {
		req, err := q.make()
		if err != nil {
			return nil, err
		}
		resp, err := probe.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", q.what, err)
		}
		var body struct {
			Error  wire.ErrorBody `json:"error"`
			Active bool           `json:"active"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil && resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %d, body: %v", q.what, resp.StatusCode, err)
		}
		code := body.Error.Code
		if q.what == "introspect" && resp.StatusCode == http.StatusOK {
			code = "active=" + strconv.FormatBool(body.Active)
		}
		out = append(out, localRead{what: q.what, status: resp.StatusCode, code: code,
			lastContact: resp.Header.Get(wire.HeaderLastContact), knownLeader: resp.Header.Get(wire.HeaderKnownLeader),
			retryAfter: resp.Header.Get("Retry-After")})
	}
	return out, nil
}

// TestClusterStaleFollower: a follower whose two peers are stopped with
// SIGSTOP answers local reads 503 replica_stale once it has not heard
// from a leader for --max-staleness, and writes 503 no_leader at once,
// not at the client's deadline; once the peers resume it serves again.
func TestClusterStaleFollower(t *testing.T) {
	const maxStaleness = 3 * time.Second
	specs := voters("n1", "n2", "n3")
	for i := range specs {
		specs[i].Flags = append(specs[i].Flags, "--max-staleness", maxStaleness.String())
	}
	nodes := planNodes(t, specs...)
	formCluster(t, nodes)
	leader := waitLeader(t, nodes)
	f := others(nodes, leader)[0]
	ctx := ctxFor(t, 3*time.Minute)
	iss, err := leader.c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", ClientID: "app1", TTL: "1h"})
	if err != nil {
		t.Fatalf("issue on the leader: %v", err)
	}
	if _, meta, err := leader.c.Lookup(ctx, iss.Token, client.LookupOptions{}); err != nil || meta.LastContact != 0 || !meta.KnownLeader {
		t.Fatalf("lookup on the leader: want 200 with last contact 0 and a known leader, got %+v, %v", meta, err)
	}
	// The follower serves the token on every local read, and says it
	// knows a leader it heard from within the bound.
	waitFor(t, "the follower to serve the token", 30*time.Second, func() error {
		reads, err := readLocally(f, iss.Token)
		if err != nil {
			return err
		}
		for _, r := range reads {
			ms, perr := strconv.ParseInt(r.lastContact, 10, 64)
			if r.status != http.StatusOK || r.knownLeader != "true" || perr != nil || ms > maxStaleness.Milliseconds() {
				return fmt.Errorf("want 200 from a fresh replica, got %s", r)
			}
			if r.what == "introspect" && r.code != "active=true" {
				return fmt.Errorf("want active:true, got %s", r)
			}
		}
		return nil
	})

	for _, p := range others(nodes, f) {
		p.pause()
	}
	waitFor(t, "the cut-off follower to answer local reads 503 replica_stale", time.Minute, func() error {
		reads, err := readLocally(f, iss.Token)
		if err != nil {
			return err
		}
		for _, r := range reads {
			ms, perr := strconv.ParseInt(r.lastContact, 10, 64)
			if r.status != http.StatusServiceUnavailable || r.code != wire.CodeReplicaStale || r.retryAfter == "" ||
				r.knownLeader != "false" || perr != nil || ms <= maxStaleness.Milliseconds() {
				return fmt.Errorf("want 503 %s with Retry-After, no known leader and a last contact over %s, got %s",
					wire.CodeReplicaStale, maxStaleness, r)
			}
		}
		return nil
	})
	// The client's deadline is shorter than the server's own write
	// timeout: only a node that answers at once answers within it.
	waitFor(t, "a write on the cut-off follower to answer 503 no_leader", time.Minute, func() error {
		wctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		_, err := f.c.Issue(wctx, wire.IssueRequest{Kind: "access", Subject: "user:2", ClientID: "app1"})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != wire.CodeNoLeader || ce.Status != http.StatusServiceUnavailable || ce.RetryAfter <= 0 {
			return fmt.Errorf("want 503 %s with Retry-After, got %v", wire.CodeNoLeader, err)
		}
		return nil
	})
	for _, p := range others(nodes, f) {
		p.resume()
	}
	waitFor(t, "the follower to serve again once its peers resume", time.Minute, func() error {
		reads, err := readLocally(f, iss.Token)
		if err != nil {
			return err
		}
		for _, r := range reads {
			if r.status != http.StatusOK || r.knownLeader != "true" {
				return fmt.Errorf("want 200 with a known leader, got %s", r)
			}
		}
		return nil
	})
	if _, err := f.c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:3", ClientID: "app1"}); err != nil {
		t.Fatalf("write on the follower after its peers resumed: want 201, got %v", err)
	}
}
