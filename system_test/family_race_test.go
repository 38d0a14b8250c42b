package systemtest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// TestCodeExchangeRaceRevokesFamilyForGood races many exchanges of one
// authorization code over the nodes of a real cluster: each consumes the
// code and, if that worked, issues a refresh and an access token into the
// code's family. The losers' reuse detection revokes the family, whatever
// it lands before or after the winner's issues: at the end no token of the
// family is usable, and an issue the revocation came before is refused
// 410 family_revoked.
func TestCodeExchangeRaceRevokesFamilyForGood(t *testing.T) {
	nodes := planNodes(t, voters("a", "b", "c")...)
	formCluster(t, nodes)
	waitLeader(t, nodes)
	ctx := ctxFor(t, 2*time.Minute)
	const rounds, exchanges = 5, 16
	for round := range rounds {
		code, err := nodes[round%3].c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1", Scopes: []string{"read"}})
		if err != nil {
			t.Fatalf("round %d: issue the code: %v", round, err)
		}
		var (
			mu                        sync.Mutex
			winners, reused, refusals int
			issued                    []string // secrets of the tokens issued into the family
			failures                  []string
		)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range exchanges {
			n := nodes[i%len(nodes)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				rec, err := n.c.Consume(ctx, wire.ConsumeRequest{Token: code.Token, Kind: "oauth2_code", ClientID: "app1"})
				if err != nil {
					mu.Lock()
					if errors.Is(err, client.ErrTokenReused) {
						reused++
					} else {
						failures = append(failures, fmt.Sprintf("consume on %s: %v", n.ID, err))
					}
					mu.Unlock()
					return
				}
				// The winner issues into the code's family, as an OAuth
				// server's token endpoint does.
				var got []string
				var errs []error
				for _, req := range []wire.IssueRequest{
					{Kind: "oauth2_refresh", Subject: rec.Subject, ClientID: rec.ClientID, Family: rec.Family, Scopes: rec.Scopes},
					{Kind: "access", Subject: rec.Subject, ClientID: rec.ClientID, Family: rec.Family, Scopes: rec.Scopes},
				} {
					if out, err := n.c.Issue(ctx, req); err != nil {
						errs = append(errs, err)
					} else {
						got = append(got, out.Token)
					}
				}
				mu.Lock()
				defer mu.Unlock()
				winners++
				issued = append(issued, got...)
				for _, err := range errs {
					if tok := client.TokenOf(err); errors.Is(err, client.ErrFamilyRevoked) && tok != nil && tok.Family == code.Family {
						refusals++
					} else {
						failures = append(failures, fmt.Sprintf("issue on %s: %v", n.ID, err))
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(failures) > 0 || winners != 1 || reused != exchanges-1 {
			t.Fatalf("round %d: %d winners, %d reuses of %d exchanges, failures %q; want 1 winner, the rest token_reused",
				round, winners, reused, exchanges, failures)
		}
		// Whatever the order, nothing of the family is usable, on any node.
		for _, tok := range issued {
			for _, n := range nodes {
				_, _, err := n.c.Lookup(ctx, tok, client.LookupOptions{Consistency: wire.ConsistencyLeader})
				if !errors.Is(err, client.ErrTokenRevoked) {
					t.Fatalf("round %d: a token issued into family %s, whose code's reuse was detected, looked up on %s: %v; want token_revoked",
						round, code.Family, n.ID, err)
				}
			}
		}
		// An issue into the family now is refused, with the reason.
		_, err = nodes[(round+1)%3].c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1", Family: code.Family})
		if !errors.Is(err, client.ErrFamilyRevoked) {
			t.Fatalf("round %d: issue into the revoked family after the race: %v, want family_revoked", round, err)
		}
		t.Logf("round %d: %d of the winner's 2 issues refused family_revoked, %d issued and revoked", round, refusals, len(issued))
	}
}
