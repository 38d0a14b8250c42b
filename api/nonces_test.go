package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/memcachedtest"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/nonce"
)

// nonceAnswer is what POST /v1/nonces said.
type nonceAnswer struct {
	status     int
	code       string
	retryAfter string
	took       time.Duration
}

// checkNonce posts one nonce check with a raw HTTP request, so the test
// sees the status, the error code and the headers on the wire.
func checkNonce(t *testing.T, n *testcluster.Node, body any) nonceAnswer {
	t.Helper()
	a, err := postNonce(n.API.URL, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// postNonce is checkNonce for goroutines other than the test's.
func postNonce(base string, body any) (nonceAnswer, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nonceAnswer{}, err
	}
	start := time.Now()
	resp, err := checkedClient.Post(base+"/v1/nonces", "application/json", bytes.NewReader(b))
	if err != nil {
		return nonceAnswer{}, fmt.Errorf("POST /v1/nonces: %w", err)
	}
	defer resp.Body.Close()
	a := nonceAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), took: time.Since(start)}
	if resp.StatusCode == http.StatusCreated {
		var ok wire.NonceResponse
		if err := json.NewDecoder(resp.Body).Decode(&ok); err != nil || !ok.Fresh {
			return a, fmt.Errorf("201 body: want {\"fresh\":true}, got %+v (%v)", ok, err)
		}
		return a, nil
	}
	var e wire.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error.Code == "" {
		return a, fmt.Errorf("%d answer without the error shape: %v", resp.StatusCode, err)
	}
	a.code = e.Error.Code
	return a, nil
}

func nonceReq(scope, n string, ts int64) wire.NonceRequest {
	return wire.NonceRequest{Scope: scope, Nonce: n, Timestamp: ts}
}

func wantNonce(t *testing.T, what string, got nonceAnswer, status int, code string) {
	t.Helper()
	if got.status != status || got.code != code {
		t.Fatalf("%s: want %d %q, got %d %q", what, status, code, got.status, got.code)
	}
}

// fixedClock pins the checker's clock, so window edges are exact.
func fixedClock() (func() time.Time, int64) {
	at := time.Now().Truncate(time.Second)
	return func() time.Time { return at }, at.Unix()
}

func newMemcachedChecker(t *testing.T, cfg nonce.Config, mcfg nonce.MemcachedConfig, servers ...*memcachedtest.Server) *nonce.Checker {
	t.Helper()
	for _, s := range servers {
		mcfg.Servers = append(mcfg.Servers, s.Addr)
	}
	mcfg.Registry = prometheus.NewRegistry()
	if mcfg.Timeout == 0 {
		// The tests are about answers, not speed: a loaded machine must
		// not turn a slow memcached into an unavailable one.
		mcfg.Timeout = 2 * time.Second
	}
	store, err := nonce.NewMemcached(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DC = "dc1"
	return nonce.NewChecker(store, cfg)
}

// nonceSemantics is what every nonce store must answer through the API.
func nonceSemantics(t *testing.T, n *testcluster.Node, now int64, stored func() int) {
	w := int64(5 * 60)
	wantNonce(t, "fresh", checkNonce(t, n, nonceReq("c1", "n1", now)), 201, "")
	wantNonce(t, "replay", checkNonce(t, n, nonceReq("c1", "n1", now)), 409, wire.CodeNonceReplayed)
	wantNonce(t, "replay, other timestamp", checkNonce(t, n, nonceReq("c1", "n1", now-30)), 409, wire.CodeNonceReplayed)
	wantNonce(t, "same nonce, other scope", checkNonce(t, n, nonceReq("c2", "n1", now)), 201, "")
	wantNonce(t, "past edge", checkNonce(t, n, nonceReq("c1", "past-edge", now-w)), 201, "")
	wantNonce(t, "future edge", checkNonce(t, n, nonceReq("c1", "future-edge", now+w)), 201, "")

	before := stored()
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"past, outside", nonceReq("c1", "n2", now-w-1), 400, wire.CodeTimestampOutOfWindow},
		{"future, outside", nonceReq("c1", "n3", now+w+1), 400, wire.CodeTimestampOutOfWindow},
		{"empty scope", nonceReq("", "n4", now), 400, wire.CodeMissingField},
		{"empty nonce", nonceReq("c1", "", now), 400, wire.CodeMissingField},
		{"no timestamp", map[string]any{"scope": "c1", "nonce": "n5"}, 400, wire.CodeMissingField},
		{"oversized scope", nonceReq(strings.Repeat("s", nonce.MaxLen+1), "n6", now), 400, wire.CodeInvalidField},
		{"oversized nonce", nonceReq("c1", strings.Repeat("n", nonce.MaxLen+1), now), 400, wire.CodeInvalidField},
		{"timestamp as string", map[string]any{"scope": "c1", "nonce": "n7", "timestamp": "now"}, 400, wire.CodeInvalidJSON},
		{"unknown field", map[string]any{"scope": "c1", "nonce": "n8", "timestamp": now, "dc": "x"}, 400, wire.CodeUnknownField},
	} {
		wantNonce(t, tc.name, checkNonce(t, n, tc.body), tc.status, tc.code)
	}
	if after := stored(); after != before {
		t.Fatalf("refused requests touched the nonce store: %d keys before, %d after", before, after)
	}
	// n2 was refused for its timestamp, not remembered.
	wantNonce(t, "refused nonce, good timestamp", checkNonce(t, n, nonceReq("c1", "n2", now)), 201, "")

	// 64 callers with one nonce at once: exactly one is fresh.
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[int]int{}
	start := make(chan struct{})
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			a, err := postNonce(n.API.URL, nonceReq("race", "same", now))
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			counts[a.status]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if counts[201] != 1 || counts[409] != 63 {
		t.Fatalf("64 concurrent checks of one nonce: want one 201 and 63 409s, got %v", counts)
	}
}

func TestNoncesMemcached(t *testing.T) {
	mc := memcachedtest.Start(t)
	clock, now := fixedClock()
	n := testcluster.Start(t, testcluster.Options{
		Nonces: newMemcachedChecker(t, nonce.Config{Now: clock}, nonce.MemcachedConfig{}, mc),
	})
	nonceSemantics(t, n, now, func() int {
		items, err := mc.Items()
		if err != nil {
			t.Fatal(err)
		}
		return items
	})
}

func TestNoncesEmbedded(t *testing.T) {
	clock, now := fixedClock()
	store := nonce.NewLocal(200)
	n := testcluster.Start(t, testcluster.Options{Nonces: nonce.NewChecker(store, nonce.Config{DC: "dc1", Now: clock})})
	nonceSemantics(t, n, now, store.Len)

	// Bounded: once full of live nonces the store refuses (fail closed)
	// instead of forgetting one, and a replay is still a replay.
	for i := 0; store.Len() < 200; i++ {
		if a := checkNonce(t, n, nonceReq("fill", fmt.Sprint(i), now)); a.status != 201 {
			t.Fatalf("filling the store: nonce %d answered %d %s", i, a.status, a.code)
		}
	}
	a := checkNonce(t, n, nonceReq("fill", "one-too-many", now))
	wantNonce(t, "full store", a, 503, wire.CodeNonceStoreUnavailable)
	if a.retryAfter == "" {
		t.Error("full store: 503 without Retry-After")
	}
	wantNonce(t, "replay in a full store", checkNonce(t, n, nonceReq("fill", "0", now)), 409, wire.CodeNonceReplayed)
}

func TestNonceFreshAgainAfterTTL(t *testing.T) {
	mc := memcachedtest.Start(t)
	n := testcluster.Start(t, testcluster.Options{
		Nonces: newMemcachedChecker(t, nonce.Config{Window: 2 * time.Second}, nonce.MemcachedConfig{}, mc),
	})
	ts := time.Now().Unix()
	wantNonce(t, "fresh", checkNonce(t, n, nonceReq("s", "ttl", ts)), 201, "")
	wantNonce(t, "replay", checkNonce(t, n, nonceReq("s", "ttl", ts)), 409, wire.CodeNonceReplayed)
	// Kept while its timestamp is acceptable (ts + window), then forgotten:
	// the same nonce with a current timestamp is fresh again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		a := checkNonce(t, n, nonceReq("s", "ttl", time.Now().Unix()))
		if a.status == 201 {
			if time.Now().Unix() <= ts+2 {
				t.Fatalf("nonce forgotten at %d, while its timestamp %d was still in the 2s window", time.Now().Unix(), ts)
			}
			return
		}
		wantNonce(t, "before the TTL passes", a, 409, wire.CodeNonceReplayed)
		if time.Now().After(deadline) {
			t.Fatal("nonce not fresh again 20s after a 2s window")
		}
		<-time.After(100 * time.Millisecond)
	}
}

func TestNoncesTwoMemcachedServers(t *testing.T) {
	a, b := memcachedtest.Start(t), memcachedtest.Start(t)
	n := testcluster.Start(t, testcluster.Options{
		Nonces: newMemcachedChecker(t, nonce.Config{}, nonce.MemcachedConfig{}, a, b),
	})
	ts := time.Now().Unix()
	for i := range 100 {
		wantNonce(t, "fresh", checkNonce(t, n, nonceReq("s", fmt.Sprint("n", i), ts)), 201, "")
	}
	ia, erra := a.Items()
	ib, errb := b.Items()
	if erra != nil || errb != nil {
		t.Fatal(erra, errb)
	}
	if ia == 0 || ib == 0 || ia+ib != 100 {
		t.Fatalf("keys per server: %d and %d; want both used, 100 in all", ia, ib)
	}
	for i := range 100 {
		wantNonce(t, "replay", checkNonce(t, n, nonceReq("s", fmt.Sprint("n", i), ts)), 409, wire.CodeNonceReplayed)
	}
}

// TestNonceMemcachedDown kills memcached under a running node: checks fail
// closed with 503 and Retry-After within a bound (never a hang), fail-open
// answers 201, and after a restart checks succeed again with no restart of
// the node.
func TestNonceMemcachedDown(t *testing.T) {
	mc := memcachedtest.Start(t)
	mcfg := nonce.MemcachedConfig{Timeout: 200 * time.Millisecond, Cooldown: 50 * time.Millisecond, MaxCooldown: 200 * time.Millisecond}
	closed := testcluster.Start(t, testcluster.Options{Nonces: newMemcachedChecker(t, nonce.Config{}, mcfg, mc)})
	open := testcluster.Start(t, testcluster.Options{Nonces: newMemcachedChecker(t, nonce.Config{FailOpen: true}, mcfg, mc)})
	wantNonce(t, "before the kill", checkNonce(t, closed, nonceReq("s", "before", time.Now().Unix())), 201, "")

	mc.Kill()
	// The bound is generous: it checks that a dead memcached never stalls
	// the API, not how fast the answer is.
	const bound = 3 * time.Second
	for i := range 10 {
		a := checkNonce(t, closed, nonceReq("s", fmt.Sprint("down-", i), time.Now().Unix()))
		wantNonce(t, "memcached down", a, 503, wire.CodeNonceStoreUnavailable)
		if a.retryAfter == "" {
			t.Fatal("503 without Retry-After")
		}
		if a.took > bound {
			t.Fatalf("memcached down: answered in %s, want within %s", a.took, bound)
		}
	}
	wantNonce(t, "fail-open while down", checkNonce(t, open, nonceReq("s", "open", time.Now().Unix())), 201, "")

	mc.Restart()
	deadline := time.Now().Add(15 * time.Second)
	var fresh wire.NonceRequest
	for i := 0; ; i++ {
		fresh = nonceReq("s", fmt.Sprint("after-", i), time.Now().Unix())
		a := checkNonce(t, closed, fresh)
		if a.status == 201 {
			break
		}
		wantNonce(t, "recovering", a, 503, wire.CodeNonceStoreUnavailable)
		if time.Now().After(deadline) {
			t.Fatal("nonce checks did not recover 15s after memcached restarted")
		}
		<-time.After(20 * time.Millisecond)
	}
	wantNonce(t, "replay after recovery", checkNonce(t, closed, fresh), 409, wire.CodeNonceReplayed)
}

// TestNonceMemcachedRestartAfterLoad restarts memcached after 64-way load
// on a node whose nonce store keeps its default breaker: the node answers
// 201 again soon after memcached is back, not 503 until every connection
// the load left idle, now dead, has failed a probe of its own.
func TestNonceMemcachedRestartAfterLoad(t *testing.T) {
	mc := memcachedtest.Start(t)
	n := testcluster.Start(t, testcluster.Options{Nonces: newMemcachedChecker(t, nonce.Config{}, nonce.MemcachedConfig{}, mc)})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range 10 {
				a, err := postNonce(n.API.URL, nonceReq("load", fmt.Sprint(g, "-", i), time.Now().Unix()))
				if err != nil || a.status != 201 {
					t.Errorf("load: want 201, got %d %q (%v)", a.status, a.code, err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	mc.Kill()
	for i := range 3 { // enough to open the breaker
		a := checkNonce(t, n, nonceReq("s", fmt.Sprint("down-", i), time.Now().Unix()))
		wantNonce(t, "memcached down", a, 503, wire.CodeNonceStoreUnavailable)
	}
	mc.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		a := checkNonce(t, n, nonceReq("s", fmt.Sprint("after-", i), time.Now().Unix()))
		if a.status == 201 {
			break
		}
		wantNonce(t, "recovering", a, 503, wire.CodeNonceStoreUnavailable)
		if time.Now().After(deadline) {
			t.Fatalf("still 503 15s after memcached was back (%d checks)", i+1)
		}
		<-time.After(20 * time.Millisecond)
	}
}
