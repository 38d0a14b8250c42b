package fositestore_test

import (
	"errors"
	"net/http"
	"sync"
	"testing"

	"golang.org/x/oauth2"
)

// A code exchanged twice: the second exchange answers 400 invalid_grant,
// never a 500, and the tokens the first one got are revoked (RFC 6749
// §4.1.2).
func TestReplayedCode(t *testing.T) {
	e := newEnv(t)
	code, verifier := e.authorize(e.conf)
	tok, err := e.exchange(e.conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	e.wantActive(tok.AccessToken, true)
	_, err = e.exchange(e.config("/token2"), code, verifier)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	e.wantActive(tok.AccessToken, false)
	e.wantActive(tok.RefreshToken, false)
	_, err = e.refresh(e.conf, tok.RefreshToken)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	// And again: still invalid_grant.
	_, err = e.exchange(e.conf, code, verifier)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
}

// 16 concurrent exchanges of one code through two token endpoints on two
// nodes: exactly one gets tokens, every other answers 400 invalid_grant.
// Presented once more, the code revokes what the winner got.
func TestConcurrentExchanges(t *testing.T) {
	e := newEnv(t)
	confs := []*oauth2.Config{e.config("/token"), e.config("/token2")}
	for _, c := range confs {
		c.Scopes = []string{"offline", "read"}
	}
	code, verifier := e.authorize(confs[0])
	const n = 16
	wins, losses := race(t, n, func(i int) (*oauth2.Token, error) { return e.exchange(confs[i%2], code, verifier) })
	if len(wins) != 1 {
		t.Fatalf("%d exchanges of one code got tokens, want 1 (losses: %v)", len(wins), losses)
	}
	if losses["Bad Request invalid_grant"] != n-1 {
		t.Fatalf("the losing exchanges answered %v, want %d × 400 invalid_grant", losses, n-1)
	}
	_, err := e.exchange(confs[1], code, verifier)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	e.wantActive(wins[0].AccessToken, false)
	_, err = e.refresh(confs[0], wins[0].RefreshToken)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
}

// 8 concurrent refreshes with one refresh token: at most one gets a new
// pair, every other answers 400 invalid_grant; after, the grant is revoked,
// the winner's pair too (RFC 9700: both may die).
func TestConcurrentRefresh(t *testing.T) {
	e := newEnv(t)
	code, verifier := e.authorize(e.conf)
	tok, err := e.exchange(e.conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	confs := []*oauth2.Config{e.config("/token"), e.config("/token2")}
	const n = 8
	wins, losses := race(t, n, func(i int) (*oauth2.Token, error) { return e.refresh(confs[i%2], tok.RefreshToken) })
	if len(wins) > 1 {
		t.Fatalf("%d concurrent refreshes with one token got new tokens, want at most 1", len(wins))
	}
	if losses["Bad Request invalid_grant"] != n-len(wins) {
		t.Fatalf("the losing refreshes answered %v, want %d × 400 invalid_grant", losses, n-len(wins))
	}
	// One more presentation of the used token is reuse, whatever raced.
	_, err = e.refresh(e.conf, tok.RefreshToken)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	for _, w := range wins {
		e.wantActive(w.AccessToken, false)
		_, err = e.refresh(e.conf, w.RefreshToken)
		wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	}
	e.wantActive(tok.AccessToken, false)
}

// race runs f(0) … f(n-1) at once and returns the tokens of the calls
// that got some, and the others' answers counted by status and OAuth error
// code (the body of any 5xx is logged).
func race(t *testing.T, n int, f func(i int) (*oauth2.Token, error)) (wins []*oauth2.Token, losses map[string]int) {
	t.Helper()
	losses = map[string]int{}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			tok, err := f(i)
			mu.Lock()
			defer mu.Unlock()
			var re *oauth2.RetrieveError
			switch {
			case err == nil:
				wins = append(wins, tok)
			case !errors.As(err, &re):
				losses["transport: "+err.Error()]++
			default:
				losses[http.StatusText(re.Response.StatusCode)+" "+re.ErrorCode]++
				if re.Response.StatusCode >= 500 {
					t.Logf("%d %s", re.Response.StatusCode, re.Body)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	return wins, losses
}
