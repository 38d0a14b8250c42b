package nonce

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tokenstore/tokenstore/internal/memcachedtest"
)

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestKey(t *testing.T) {
	k := Key("a", "consumer-1", "n0nce")
	if k != Key("a", "consumer-1", "n0nce") {
		t.Fatal("key is not stable")
	}
	if len(k) > 250 || strings.ContainsAny(k, " \r\n\x00") {
		t.Fatalf("key %q is not a valid memcached key", k)
	}
	if strings.Contains(k, "n0nce") || strings.Contains(k, "consumer-1") {
		t.Fatalf("key %q carries the raw nonce or scope", k)
	}
	long := strings.Repeat("x", MaxLen)
	if len(Key(long, long, long)) != len(k) {
		t.Fatal("key length depends on the input")
	}
	for _, other := range []string{Key("b", "consumer-1", "n0nce"), Key("a", "consumer-2", "n0nce"),
		Key("a", "consumer-1", "n0nc"), Key("a", "consumer-1n", "0nce")} {
		if other == k {
			t.Errorf("different (dc, scope, nonce) share key %s", k)
		}
	}
}

// TestKeyUnchanged pins keys to the digest of "len:part" for each part:
// nodes of two versions share one memcached, and a key that changed
// between them would let a nonce through once on each.
func TestKeyUnchanged(t *testing.T) {
	long := strings.Repeat("x", MaxLen)
	for _, tc := range []struct{ dc, scope, nonce, want string }{
		{"dc1", "consumer-1", "n0nce", "tsn1:yy1pBWVmiHhOFFnUs4uTuar66TZzt50R_1DoeYf09gw"},
		{"", "s", "n", "tsn1:jr94cuesyjm5pVT9r7-2Bu5dHNjomSWsxTghh9qOkUc"},
		{strings.Repeat("d", 1000), long, long, "tsn1:1FvYbIPXkZOAPaj0oX5clleQn25rAMmWAumAB8zrDiQ"},
	} {
		if got := Key(tc.dc, tc.scope, tc.nonce); got != tc.want {
			t.Errorf("Key(%.10q, %.10q, %.10q) = %s, want %s", tc.dc, tc.scope, tc.nonce, got, tc.want)
		}
	}
}

func TestCheckerLocal(t *testing.T) {
	clk := newClock()
	store := NewLocal(1000)
	store.now = clk.now
	c := NewChecker(store, Config{DC: "a", Window: 5 * time.Minute, Now: clk.now})
	now := clk.now().Unix()
	w := int64(300)

	tests := []struct {
		name         string
		scope, nonce string
		ts           int64
		want         error
	}{
		{"fresh", "c1", "n1", now, nil},
		{"replay", "c1", "n1", now, ErrReplayed},
		{"replay with another timestamp", "c1", "n1", now - 10, ErrReplayed},
		{"same nonce, other scope", "c2", "n1", now, nil},
		{"window edge past", "c1", "n2", now - w, nil},
		{"window edge future", "c1", "n3", now + w, nil},
		{"just outside past", "c1", "n4", now - w - 1, ErrOutOfWindow},
		{"just outside future", "c1", "n5", now + w + 1, ErrOutOfWindow},
		{"empty scope", "", "n6", now, ErrInvalid},
		{"empty nonce", "c1", "", now, ErrInvalid},
		{"oversized nonce", "c1", strings.Repeat("n", MaxLen+1), now, ErrInvalid},
		{"not UTF-8", "c1", "\xff\xfe", now, ErrInvalid},
	}
	for _, tt := range tests {
		before := store.Len()
		err := c.Check(tt.scope, tt.nonce, tt.ts)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: want %v, got %v", tt.name, tt.want, err)
		}
		if (errors.Is(tt.want, ErrOutOfWindow) || errors.Is(tt.want, ErrInvalid)) && store.Len() != before {
			t.Errorf("%s: the store was touched", tt.name)
		}
	}
	// n4 was refused for its timestamp, not remembered: fresh now.
	if err := c.Check("c1", "n4", now); err != nil {
		t.Errorf("nonce refused for its timestamp: want fresh later, got %v", err)
	}
}

func TestNonceRememberedWhileTimestampAcceptable(t *testing.T) {
	clk := newClock()
	store := NewLocal(1000)
	store.now = clk.now
	c := NewChecker(store, Config{Window: 5 * time.Minute, Now: clk.now})
	// A timestamp at the future edge stays acceptable for two windows.
	ts := clk.now().Add(5 * time.Minute).Unix()
	if err := c.Check("s", "n", ts); err != nil {
		t.Fatal(err)
	}
	clk.advance(9 * time.Minute)
	if err := c.Check("s", "n", ts); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay while its timestamp is still acceptable: want ErrReplayed, got %v", err)
	}
	clk.advance(2 * time.Minute)
	if err := c.Check("s", "n", clk.now().Unix()); err != nil {
		t.Fatalf("after the timestamp left the window the nonce may be reused: got %v", err)
	}
}

func TestLocalBoundedMemory(t *testing.T) {
	clk := newClock()
	store := NewLocal(100)
	store.now = clk.now
	for i := range 100 {
		if fresh, err := store.Add(fmt.Sprint(i), time.Minute); !fresh || err != nil {
			t.Fatalf("add %d: fresh=%v err=%v", i, fresh, err)
		}
	}
	if _, err := store.Add("one-too-many", time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("full store: want ErrUnavailable (fail closed), got %v", err)
	}
	if fresh, err := store.Add("5", time.Minute); fresh || err != nil {
		t.Fatalf("replay in a full store: want not fresh, got fresh=%v err=%v", fresh, err)
	}
	clk.advance(time.Minute)
	for i := range 1000 {
		if _, err := store.Add(fmt.Sprint("late", i), time.Second); err != nil {
			t.Fatalf("expired keys not evicted: %v", err)
		}
		clk.advance(10 * time.Millisecond)
		if store.Len() > 100 {
			t.Fatalf("store grew to %d keys; bound is 100", store.Len())
		}
	}
	if fresh, _ := store.Add("5", time.Minute); !fresh {
		t.Error("an expired key is fresh again")
	}
}

func concurrentSame(t *testing.T, c *Checker) {
	t.Helper()
	var ok, replay atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	ts := time.Now().Unix()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			switch err := c.Check("race", "same-nonce", ts); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrReplayed):
				replay.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok.Load() != 1 || replay.Load() != 63 {
		t.Fatalf("64 concurrent checks of one nonce: want 1 fresh and 63 replays, got %d and %d", ok.Load(), replay.Load())
	}
}

func TestConcurrentSameNonceLocal(t *testing.T) {
	concurrentSame(t, NewChecker(NewLocal(1000), Config{}))
}

func newMemcached(t *testing.T, cfg MemcachedConfig, servers ...*memcachedtest.Server) *Memcached {
	t.Helper()
	for _, s := range servers {
		cfg.Servers = append(cfg.Servers, s.Addr)
	}
	if cfg.Timeout == 0 {
		// The tests are about answers, not speed: a loaded machine must
		// not turn a slow memcached into an unavailable one.
		cfg.Timeout = 2 * time.Second
	}
	m, err := NewMemcached(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMemcachedFreshReplayConcurrent(t *testing.T) {
	mc := memcachedtest.Start(t)
	c := NewChecker(newMemcached(t, MemcachedConfig{}, mc), Config{DC: "a"})
	now := time.Now().Unix()
	if err := c.Check("c1", "n1", now); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	if err := c.Check("c1", "n1", now); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: want ErrReplayed, got %v", err)
	}
	if err := c.Check("c2", "n1", now); err != nil {
		t.Fatalf("other scope: %v", err)
	}
	// Another DC's checker on the same memcached does not see DC a's nonce.
	if err := NewChecker(newMemcached(t, MemcachedConfig{}, mc), Config{DC: "b"}).Check("c1", "n1", now); err != nil {
		t.Fatalf("nonces are DC-local: %v", err)
	}
	concurrentSame(t, c)
}

func TestMemcachedTTL(t *testing.T) {
	mc := memcachedtest.Start(t)
	c := NewChecker(newMemcached(t, MemcachedConfig{}, mc), Config{Window: time.Second})
	if err := c.Check("s", "n", time.Now().Unix()); err != nil {
		t.Fatal(err)
	}
	if err := c.Check("s", "n", time.Now().Unix()); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay inside the TTL: want ErrReplayed, got %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := c.Check("s", "n", time.Now().Unix())
		if err == nil {
			return
		}
		if !errors.Is(err, ErrReplayed) {
			t.Fatalf("want ErrReplayed until the TTL passes, got %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("nonce not fresh again 15s after a 1s window")
		}
		<-time.After(100 * time.Millisecond)
	}
}

func TestMemcachedTwoServers(t *testing.T) {
	a, b := memcachedtest.Start(t), memcachedtest.Start(t)
	c := NewChecker(newMemcached(t, MemcachedConfig{}, a, b), Config{})
	now := time.Now().Unix()
	for i := range 200 {
		if err := c.Check("s", fmt.Sprint("n", i), now); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		if err := c.Check("s", fmt.Sprint("n", i), now); !errors.Is(err, ErrReplayed) {
			t.Fatalf("replay of n%d: want ErrReplayed, got %v", i, err)
		}
	}
	ia, erra := a.Items()
	ib, errb := b.Items()
	if erra != nil || errb != nil {
		t.Fatal(erra, errb)
	}
	if ia == 0 || ib == 0 || ia+ib != 200 {
		t.Fatalf("keys per server: %d and %d; want both used, 200 in all", ia, ib)
	}
}

// bounded asserts that f answers within limit: a dead memcached must not
// stall a request (the limit is generous; it checks boundedness, not speed).
func bounded(t *testing.T, limit time.Duration, f func() error) error {
	t.Helper()
	start := time.Now()
	err := f()
	if d := time.Since(start); d > limit {
		t.Fatalf("call took %s; want it bounded by %s", d, limit)
	}
	return err
}

func TestMemcachedDownFailsClosedAndRecovers(t *testing.T) {
	mc := memcachedtest.Start(t)
	store := newMemcached(t, MemcachedConfig{Timeout: 200 * time.Millisecond, Cooldown: 50 * time.Millisecond}, mc)
	c := NewChecker(store, Config{})
	open := NewChecker(store, Config{FailOpen: true})
	if err := c.Check("s", "before", time.Now().Unix()); err != nil {
		t.Fatal(err)
	}
	mc.Kill()
	for i := range 20 {
		err := bounded(t, 3*time.Second, func() error { return c.Check("s", fmt.Sprint("down", i), time.Now().Unix()) })
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("memcached down: want ErrUnavailable, got %v", err)
		}
	}
	if store.br.current() == closed {
		t.Error("breaker still closed after 20 failures")
	}
	if err := open.Check("s", "fail-open", time.Now().Unix()); err != nil {
		t.Errorf("fail-open while memcached is down: want fresh, got %v", err)
	}

	mc.Restart()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := c.Check("s", fmt.Sprint("after-", time.Now().UnixNano()), time.Now().Unix())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 15s after memcached restarted: %v", err)
		}
		<-time.After(20 * time.Millisecond)
	}
	if store.br.current() != closed {
		t.Error("breaker not closed after recovery")
	}
}

// load runs 64 checkers at once, each with n fresh nonces, so the store
// ends with as many idle connections as it keeps.
func load(t *testing.T, c *Checker, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range n {
				if err := c.Check("load", fmt.Sprint(prefix, g, "-", i), time.Now().Unix()); err != nil {
					t.Errorf("load: %v", err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
}

// TestMemcachedRestartAfterLoadRecovers restarts memcached after 64-way
// load: the idle connections the load left behind are dead, and checks
// must succeed again soon after memcached is back, not once every dead
// connection has failed a breaker probe of its own. The breaker keeps its
// defaults, as the daemon runs it.
func TestMemcachedRestartAfterLoadRecovers(t *testing.T) {
	mc := memcachedtest.Start(t)
	store := newMemcached(t, MemcachedConfig{}, mc)
	c := NewChecker(store, Config{})
	load(t, c, "before-", 20)
	if t.Failed() {
		t.FailNow()
	}

	mc.Kill()
	for i := range 3 { // enough to open the breaker
		if err := c.Check("s", fmt.Sprint("down-", i), time.Now().Unix()); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("memcached down: want ErrUnavailable, got %v", err)
		}
	}
	mc.Restart()
	back := time.Now()
	deadline := back.Add(15 * time.Second)
	failed := 0
	for {
		err := c.Check("s", fmt.Sprint("after-", time.Now().UnixNano()), time.Now().Unix())
		if err == nil {
			break
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("recovering: want ErrUnavailable until memcached answers, got %v", err)
		}
		failed++
		if time.Now().After(deadline) {
			t.Fatalf("no recovery 15s after memcached was back (%d checks failed): %v", failed, err)
		}
		<-time.After(10 * time.Millisecond)
	}
	t.Logf("checks succeed %s after memcached was back (%d failed meanwhile)", time.Since(back), failed)
	var drops dto.Metric
	if err := store.drops.Write(&drops); err != nil || drops.GetCounter().GetValue() < 1 {
		t.Errorf("tokenstore_memcached_pool_drops_total: want at least 1 after the restart, got %v (%v)", drops.GetCounter().GetValue(), err)
	}
	load(t, c, "after-", 20)
}

// TestBreakerDefaultBoundsRecovery: however long memcached was down, the
// default breaker lets a probe through within a second, so checks succeed
// again about a second after memcached is back.
func TestBreakerDefaultBoundsRecovery(t *testing.T) {
	m, err := NewMemcached(MemcachedConfig{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	m.br.now = clk.now
	for range 3 {
		m.br.failed()
	}
	for range 20 { // memcached stays down: every probe fails
		clk.advance(time.Second)
		if !m.br.allow() {
			t.Fatal("no probe a second after the last one failed")
		}
		m.br.failed()
	}
}

func TestMemcachedHangingTimesOut(t *testing.T) {
	mc := memcachedtest.Start(t)
	store := newMemcached(t, MemcachedConfig{Timeout: 500 * time.Millisecond}, mc)
	c := NewChecker(store, Config{})
	if err := c.Check("s", "warm", time.Now().Unix()); err != nil {
		t.Fatal(err)
	}
	mc.Pause(t)
	defer mc.Resume()
	err := bounded(t, 3*time.Second, func() error { return c.Check("s", "paused", time.Now().Unix()) })
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("memcached paused: want ErrUnavailable after the timeout, got %v", err)
	}
}

func TestBreaker(t *testing.T) {
	clk := newClock()
	b := &breaker{threshold: 3, base: time.Second, max: 4 * time.Second, now: clk.now}
	for range 2 {
		b.failed()
	}
	if !b.allow() {
		t.Fatal("opened before the threshold")
	}
	b.failed()
	if b.allow() {
		t.Fatal("not open after 3 failures")
	}
	clk.advance(time.Second)
	if !b.allow() {
		t.Fatal("no probe after the cooldown")
	}
	if b.allow() {
		t.Fatal("a second probe while one is under way")
	}
	b.failed() // probe failed: cooldown doubles
	clk.advance(time.Second)
	if b.allow() {
		t.Fatal("cooldown did not double after a failed probe")
	}
	clk.advance(time.Second)
	if !b.allow() {
		t.Fatal("no probe after the doubled cooldown")
	}
	b.succeeded()
	if !b.allow() || b.current() != closed {
		t.Fatal("not closed after a successful probe")
	}
}
