package server_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/server"
)

// syncBuffer is a log output safe for the node's concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// heldNonces holds every nonce check until release is closed, so that a
// request is in flight for as long as the test wants.
type heldNonces struct {
	entered chan struct{}
	release chan struct{}
}

func (h heldNonces) Check(string, string, int64) error {
	h.entered <- struct{}{}
	<-h.release
	return nil
}

func (h heldNonces) Window() time.Duration { return 5 * time.Minute }

// testConfig is serve's default node on loopback ports the kernel picks,
// with its data in dir.
func testConfig(dir string, logs *syncBuffer) server.Config {
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.APIAddr, cfg.RaftAddr = dir, "127.0.0.1:0", "127.0.0.1:0"
	cfg.LogOutput = logs
	return cfg
}

// waitReady polls the node's /readyz until it answers 200.
func waitReady(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := c.Ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node not ready after 30s: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// within fails the test unless ch delivers before the deadline.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nothing after 30s", what)
	}
	var zero T
	return zero
}

// TestServeDrainRestart: a node built by New issues a token over HTTP;
// Shutdown waits for a request in flight, which gets its answer; the node
// started again on its data directory still has the token, and logs its
// nonce window as text in JSON.
func TestServeDrainRestart(t *testing.T) {
	dir, logs := t.TempDir(), &syncBuffer{}
	held := heldNonces{entered: make(chan struct{}), release: make(chan struct{})}
	cfg := testConfig(dir, logs)
	cfg.NonceChecker = held
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	c := client.New(s.URL())
	waitReady(t, c)
	ctx := context.Background()
	issued, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1"})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}

	inFlight := make(chan error, 1)
	go func() { inFlight <- c.CheckNonce(ctx, "scope", "n-1", time.Now().Unix()) }()
	within(t, held.entered, "the nonce request reaching the checker")
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(ctx) }()
	// Shutdown closes the listener first: poll until a new connection is refused.
	deadline := time.After(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", s.APIAddr(), time.Second)
		if err != nil {
			break
		}
		conn.Close()
		select {
		case <-deadline:
			t.Fatal("the API still accepts connections 30s into Shutdown")
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(held.release)
	if err := within(t, inFlight, "the in-flight request"); err != nil {
		t.Errorf("the request in flight during Shutdown: want its answer, got %v", err)
	}
	if err := within(t, stopped, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if strings.Contains(logs.String(), "drain incomplete") {
		t.Errorf("want a complete drain, log:\n%s", logs.String())
	}

	jsonLogs := &syncBuffer{}
	cfg = testConfig(dir, jsonLogs)
	cfg.RaftAddr = s.Node().RaftAddr() // as an operator restarts a node
	cfg.LogFormat = "json"
	again, err := server.New(cfg)
	if err != nil {
		t.Fatalf("restart on %s: %v", dir, err)
	}
	again.Start()
	t.Cleanup(func() { again.Close() })
	c = client.New(again.URL())
	waitReady(t, c)
	rec, _, err := c.Lookup(ctx, issued.Token, client.LookupOptions{})
	if err != nil || rec.ID != issued.ID || rec.Subject != "user:1" {
		t.Fatalf("after the restart: want token %s of user:1, got %+v, %v", issued.ID, rec, err)
	}
	if err := again.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if !strings.Contains(jsonLogs.String(), `"window":"5m0s"`) {
		t.Errorf(`JSON log: want the nonce window as "window":"5m0s", log:\n%s`, jsonLogs.String())
	}
}

// closeCounter is a listener that counts its Close calls.
type closeCounter struct {
	net.Listener
	closed int
}

func (l *closeCounter) Close() error { l.closed++; return l.Listener.Close() }

// New refuses what serve refuses, for every caller, and closes the
// listener it was given.
func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*server.Config)
		want string
	}{
		{"trusted proxies", func(c *server.Config) { n := 17; c.Authz.TrustedProxies = &n }, "--trusted-proxies 17: want 0 to 16"},
		{"rotation grace", func(c *server.Config) { c.RotationGrace = 2 * time.Hour }, "--rotation-grace 2h0m0s: want 0 (off) to 1h0m0s"},
		{"unknown authz kind", func(c *server.Config) { c.Authz.CookieKinds = []string{"nope"} }, `--authz-cookie-kinds: unknown kind "nope"`},
		{"open API", func(c *server.Config) { c.APIAddr = "0.0.0.0:0" }, "refusing to serve the API on non-loopback 0.0.0.0:0 without --api-keys"},
		{"open profiles", func(c *server.Config) { c.PprofAddr = "0.0.0.0:0" }, "refusing --pprof-addr 0.0.0.0:0"},
		{"raft without TLS", func(c *server.Config) { c.RaftAddr = "0.0.0.0:0" }, "refusing to run the Raft port on non-loopback 0.0.0.0:0 without mutual TLS"},
		{"non-voter bootstrap", func(c *server.Config) { c.NonVoter, c.BootstrapExpect = true, 3 }, "a non-voter cannot bootstrap"},
		{"nonce window", func(c *server.Config) { c.Nonce.Window = 0 }, "--nonce-window 0s: want at least 1s"},
		{"log format", func(c *server.Config) { c.LogFormat = "xml" }, `--log-format "xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			cfg := testConfig(t.TempDir(), logs)
			tc.set(&cfg)
			_, err := server.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a refusal naming %q, got %v", tc.want, err)
			}
		})
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cc := &closeCounter{Listener: ln}
	cfg := testConfig(t.TempDir(), &syncBuffer{})
	cfg.Listener, cfg.RotationGrace = cc, -time.Second
	if _, err := server.New(cfg); err == nil || cc.closed == 0 {
		t.Fatalf("a refused config: want an error and the given listener closed, got %v, %d closes", err, cc.closed)
	}
}
