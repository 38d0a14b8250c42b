package routing

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeCluster answers GET /v1/cluster with a body the test sets, and
// requires a bearer key when one is set.
type fakeCluster struct {
	mu    sync.Mutex
	body  string
	code  int
	key   string
	calls int
	srv   *httptest.Server
}

func newFakeCluster(t *testing.T, body string) *fakeCluster {
	f := &fakeCluster{body: body, code: 200}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls++
		if r.URL.Path != "/v1/cluster" || r.Method != "GET" {
			http.NotFound(w, r)
			return
		}
		if f.key != "" && r.Header.Get("Authorization") != "Bearer "+f.key {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(f.code)
		w.Write([]byte(f.body))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCluster) set(code int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.code, f.body = code, body
}

func (f *fakeCluster) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestClusterWatcher(t *testing.T) {
	ctx := context.Background()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	f := newFakeCluster(t, `{"leader":"n1","primary_dc":"eqiad","nodes":[{"id":"n1","dc":"eqiad","role":"leader"}],"future_field":1}`)
	f.key = "k-0123456789abcdef"
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	w, err := NewClusterWatcher(WatcherConfig{URLs: []string{deadURL, f.srv.URL + "/"}, Token: "wrong", Interval: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.PrimaryDC(); ok {
		t.Fatal("primary known before any poll")
	}
	// A wrong key: an error that says what to do.
	if err := w.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "--tokenstore-token") {
		t.Fatalf("wrong key: %v", err)
	}
	w.cfg.Token = f.key
	// The first URL is dead; the second answers.
	if err := w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if dc, ok := w.PrimaryDC(); !ok || dc != "eqiad" {
		t.Fatalf("primary %q %v, want eqiad", dc, ok)
	}
	// No primary_dc field: the leader node's DC.
	f.set(200, `{"leader":"n2","nodes":[{"id":"n1","dc":"eqiad","role":"voter"},{"id":"n2","dc":"codfw","role":"leader"}]}`)
	if err := w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if dc, _ := w.PrimaryDC(); dc != "codfw" {
		t.Fatalf("primary %q, want codfw (the leader's DC)", dc)
	}
	// No leader, then an error, then garbage: the last known value stays.
	for _, c := range []struct {
		code int
		body string
	}{{200, `{"leader":"","primary_dc":"","nodes":[{"id":"n1","dc":"eqiad","role":"voter"}]}`}, {503, `{}`}, {200, `not json`}} {
		f.set(c.code, c.body)
		if err := w.Refresh(ctx); err == nil {
			t.Fatalf("%d %s: no error", c.code, c.body)
		}
		if dc, ok := w.PrimaryDC(); !ok || dc != "codfw" {
			t.Fatalf("after %d %s: primary %q %v, want codfw kept", c.code, c.body, dc, ok)
		}
	}
	if got := counterValue(t, reg, "tokenstore_route_primary_poll_errors_total", nil); got != 4 {
		t.Errorf("poll errors %v, want 4", got)
	}
	if got := counterValue(t, reg, "tokenstore_route_primary_changes_total", nil); got != 1 {
		t.Errorf("primary changes %v, want 1", got)
	}
	if m := findMetric(t, reg, "tokenstore_route_primary_dc", map[string]string{"dc": "codfw"}); m == nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("primary_dc gauge for codfw: %v", m)
	}
	l := logs.String()
	for _, s := range []string{"primary DC learned", "primary DC changed", "from=eqiad to=codfw", "keeping the last known"} {
		if !strings.Contains(l, s) {
			t.Errorf("log lacks %q:\n%s", s, l)
		}
	}
	if n := strings.Count(l, "keeping the last known"); n != 2 {
		t.Errorf("outage logged %d times, want once per outage (2)", n)
	}
}

func TestClusterWatcherRun(t *testing.T) {
	f := newFakeCluster(t, `{"leader":"n1","primary_dc":"a","nodes":[]}`)
	w, err := NewClusterWatcher(WatcherConfig{URLs: []string{f.srv.URL}, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the first poll", func() bool { dc, _ := w.PrimaryDC(); return dc == "a" })
	f.set(200, `{"leader":"n2","primary_dc":"b","nodes":[]}`)
	waitFor(t, "the change to b", func() bool { dc, _ := w.PrimaryDC(); return dc == "b" })
	if n := f.callCount(); n < 2 {
		t.Errorf("%d polls", n)
	}
}

func TestNewClusterWatcherRejects(t *testing.T) {
	for _, urls := range [][]string{nil, {"127.0.0.1:7400"}, {"ftp://x"}} {
		if _, err := NewClusterWatcher(WatcherConfig{URLs: urls}); err == nil {
			t.Errorf("URLs %q accepted", urls)
		}
	}
}

// waitFor polls cond until it holds, failing after 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(10 * time.Millisecond)
	}
}
