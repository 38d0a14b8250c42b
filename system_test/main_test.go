// Package systemtest runs the built binaries, tokenstore and
// tokenstore-bench, as an operator would: single nodes and clusters of
// separate processes on loopback ports (internal/proccluster), the
// command-line tools against them, the router and the benchmarks.
package systemtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/memcachedtest"
)

// binary is the tokenstore command built once for these tests, and
// benchBinary tokenstore-bench beside it (where it finds the daemon).
var binary, benchBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tokenstore-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary, benchBinary = filepath.Join(dir, "tokenstore"), filepath.Join(dir, "tokenstore-bench")
	const module = "github.com/tokenstore/tokenstore"
	for out, pkg := range map[string]string{binary: module + "/cmd/tokenstore", benchBinary: module + "/cmd/tokenstore-bench"} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", out, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type issued struct {
	token, id, kind string
}

// issueMany issues n tokens with 8 workers; kinds alternate.
func issueMany(t *testing.T, c *client.Client, n int, kinds ...string) []issued {
	t.Helper()
	out := make([]issued, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				kind := kinds[i%len(kinds)]
				res, err := c.Issue(context.Background(), wire.IssueRequest{
					Kind: kind, Subject: fmt.Sprintf("user:%d", i%5), Data: []byte(`{"n":` + fmt.Sprint(i) + `}`)})
				if err != nil {
					errs <- err
					return
				}
				out[i] = issued{res.Token, res.ID, kind}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("issue: %v", err)
	}
	return out
}

func lookupErr(c *client.Client, tok string) error {
	_, _, err := c.Lookup(context.Background(), tok, client.LookupOptions{})
	return err
}

// TestKill9KeepsAcknowledgedWrites: every write answered before a SIGKILL
// is there after a restart on the same data directory, including writes
// acknowledged while the kill landed.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	c := d.c
	ctx := context.Background()

	toks := issueMany(t, c, 120, "oauth2_code", "access")
	consumed, revoked := map[string]bool{}, map[string]bool{}
	for i, tk := range toks {
		switch {
		case tk.kind == "oauth2_code" && i%4 == 0:
			if _, err := c.Consume(ctx, wire.ConsumeRequest{Token: tk.token}); err != nil {
				t.Fatalf("consume: %v", err)
			}
			consumed[tk.token] = true
		case tk.kind == "access" && i%3 == 0:
			if _, err := c.Revoke(ctx, tk.token, "test revoke"); err != nil {
				t.Fatalf("revoke: %v", err)
			}
			revoked[tk.token] = true
		}
	}

	// Writers keep issuing while the process is killed; what they got a 201
	// for must survive.
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "inflight"})
				if err != nil {
					return // the process is gone
				}
				mu.Lock()
				acked = append(acked, res.Token)
				mu.Unlock()
			}
		}()
	}
	// Let some in-flight writes be acknowledged before the kill.
	waitFor(t, "50 in-flight writes acknowledged", 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(acked); n < 50 {
			return fmt.Errorf("only %d", n)
		}
		return nil
	})
	d.Kill()
	close(stop)
	wg.Wait()

	d.start()
	for _, tk := range toks {
		err := lookupErr(c, tk.token)
		switch {
		case consumed[tk.token]:
			if !errors.Is(err, client.ErrTokenConsumed) {
				t.Errorf("consumed token %s after restart: want token_consumed, got %v", tk.id, err)
			}
		case revoked[tk.token]:
			if !errors.Is(err, client.ErrTokenRevoked) {
				t.Errorf("revoked token %s after restart: want token_revoked, got %v", tk.id, err)
			}
		case err != nil:
			t.Errorf("token %s after restart: want active, got %v", tk.id, err)
		}
	}
	for _, tok := range acked {
		if err := lookupErr(c, tok); err != nil {
			t.Errorf("write acknowledged before SIGKILL is lost: %v", err)
		}
	}
	t.Logf("%d tokens, %d in-flight acknowledged writes all survived SIGKILL", len(toks), len(acked))
}

// TestNoSecretAtRest: after issuing, consuming, revoking and a snapshot, no
// token secret appears in any file of the data directory or in the logs;
// SIGTERM exits cleanly and the restart restores from the snapshot.
func TestNoSecretAtRest(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir, "--snapshot-threshold", "32", "--snapshot-interval", "100ms", "--rotation-grace", "1h")
	c := d.c
	ctx := context.Background()
	toks := issueMany(t, c, 200, "oauth2_code", "access", "remember", "developer")
	secrets := make([]string, 0, len(toks)+10)
	for _, tk := range toks {
		secrets = append(secrets, tk.token)
	}
	// Rotations within a grace period keep their successors' secrets,
	// sealed under the rotated token's.
	for range 5 {
		rt, err := c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_refresh", Subject: "rest"})
		if err != nil {
			t.Fatal(err)
		}
		next, err := c.Rotate(ctx, wire.RotateRequest{Token: rt.Token, Access: &wire.AccessRequest{}})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, rt.Token, next.Token, next.Access.Token)
	}
	for i := range 10 {
		brought := fmt.Sprintf("brought-secret-%02d-0123456789", i)
		if _, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Token: brought}); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, brought)
	}
	for i, tk := range toks[:40] {
		if tk.kind == "oauth2_code" {
			c.Consume(ctx, wire.ConsumeRequest{Token: tk.token})
		} else if i%2 == 1 {
			c.Revoke(ctx, tk.token, "rest test")
		}
		lookupErr(c, tk.token)
	}

	// Wait for Raft to write a snapshot.
	waitFor(t, "a snapshot", 30*time.Second, func() error {
		if m, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin")); len(m) == 0 {
			return fmt.Errorf("none in %s; log:\n%s", dir, tail(d.logs(), 40))
		}
		return nil
	})
	if err := d.stop(); err != nil {
		t.Fatalf("SIGTERM: want exit 0, got %v\n%s", err, d.logs())
	}
	if !strings.Contains(d.logs(), "stopped cleanly") {
		t.Errorf("SIGTERM: log does not say the node stopped cleanly")
	}

	var files int
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) || bytes.Contains(b, []byte(s[len(s)/4:])) {
				t.Errorf("secret %.10s… found in %s", s, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := d.logs()
	for _, s := range secrets {
		if strings.Contains(logs, s[len(s)/4:]) {
			t.Errorf("secret %.10s… found in the logs", s)
		}
	}
	if files < 3 {
		t.Errorf("walked %d files; want the raft log, a snapshot and its meta", files)
	}

	// Restart restores the snapshot (and the log after it).
	d.start()
	for _, tk := range toks[40:] {
		if err := lookupErr(c, tk.token); err != nil {
			t.Fatalf("after restore: %v", err)
		}
	}
}

func TestRefusesOpenNonLoopbackAPI(t *testing.T) {
	out, err := exec.Command(binary, "serve", "--data-dir", t.TempDir(), "--api-addr", "0.0.0.0:0",
		"--raft-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil {
		t.Fatalf("serve on 0.0.0.0 without API keys: want a refusal, it exited 0: %s", out)
	}
	if !strings.Contains(string(out), "refusing") {
		t.Errorf("want the refusal explained, got: %s", out)
	}
}

func TestTokenCLI(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append(append([]string{"token"}, args[:1]...), append([]string{"--addr", d.URL()}, args[1:]...)...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tokenstore token %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("", "issue", "--kind", "oauth2_code", "--subject", "cli-user", "--data", `{"a":1}`)
	var tok string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), `"token": "`); ok {
			tok = strings.TrimSuffix(v, `",`)
		}
	}
	if !strings.HasPrefix(tok, "tks_ac_") {
		t.Fatalf("issue: no token in output:\n%s", out)
	}
	if out := run(tok+"\n", "lookup", "-"); !strings.Contains(out, `"subject": "cli-user"`) {
		t.Errorf("lookup via stdin: got\n%s", out)
	}
	if out := run("", "list", "--subject", "cli-user"); !strings.Contains(out, `"kind": "oauth2_code"`) {
		t.Errorf("list: got\n%s", out)
	}
	if out := run(tok+"\n", "introspect"); !strings.Contains(out, `"active": true`) || !strings.Contains(out, `"sub": "cli-user"`) {
		t.Errorf("introspect: got\n%s", out)
	}
	if out := run(tok+"\n", "consume"); !strings.Contains(out, `"uses_left": 0`) {
		t.Errorf("consume: got\n%s", out)
	}
	cmd := exec.Command(binary, "token", "consume", "--addr", d.URL(), tok)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "token_reused") {
		t.Errorf("second consume of a code: want a token_reused failure, got %v: %s", err, out)
	}

	// Rotation and family revocation.
	var rt, next wire.RotateResponse
	if err := json.Unmarshal([]byte(run("", "issue", "--kind", "oauth2_refresh", "--subject", "cli-user", "--scopes", "a,b")), &rt); err != nil || rt.Family == "" {
		t.Fatalf("issue refresh: %+v, %v", rt, err)
	}
	if err := json.Unmarshal([]byte(run(rt.Token+"\n", "rotate", "--access", "--access-scopes", "a")), &next); err != nil ||
		next.Token == "" || next.Token == rt.Token || next.Family != rt.Family || next.Access == nil || next.Access.Token == "" {
		t.Fatalf("rotate: %+v, %v", next, err)
	}
	cmd = exec.Command(binary, "token", "rotate", "--addr", d.URL(), rt.Token)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "token_reused") {
		t.Errorf("rotating the old refresh token again: want token_reused, got %v: %s", err, out)
	}
	if out := run("", "revoke", "--family", rt.Family, "--reason", "test"); !strings.Contains(out, `"revoked": 0`) {
		t.Errorf("revoke --family after the reuse revoked it: got\n%s", out)
	}
}

func TestBenchSmoke(t *testing.T) {
	mc := memcachedtest.Start(t)
	// A generous timeout: the smoke run checks the wiring, and the machine
	// may be busy.
	d := startDaemon(t, t.TempDir(), "--memcached", mc.Addr, "--memcached-timeout", "2s")
	out, err := exec.Command(benchBinary, "run", "--addr", d.URL(), "--workload", "issue,consume,rotate,lookup,introspect,nonce,memcached",
		"--memcached", mc.Addr, "--clients", "4", "--duration", "500ms", "--tokens", "40").Output()
	if err != nil {
		t.Fatalf("bench run: %v\n%s", err, out)
	}
	// One line per workload and the ratio, then the summary table.
	head, _, _ := strings.Cut(string(out), "\n\n")
	lines := strings.Split(strings.TrimSpace(head), "\n")
	if len(lines) != 8 || !strings.HasPrefix(lines[7], "ratio    nonce/memcached = ") {
		t.Fatalf("want one result line per workload and the nonce/memcached ratio, got:\n%s", out)
	}
	for i, w := range []string{"issue", "consume", "rotate", "lookup", "introspect", "nonce", "memcached"} {
		l := lines[i]
		if !strings.HasPrefix(l, w+" ") || strings.Contains(l, " ops=0 ") || !strings.Contains(l, " errors=0 ") {
			t.Errorf("want a %s result with ops and no errors, got: %s", w, l)
		}
	}
}

// TestNonceFlagsAndCLI runs the real binary against a real memcached: the
// nonce CLI, fail-closed then fail-open while memcached is down, the
// metrics, and the embedded default that says nonces are node-local.
func TestNonceFlagsAndCLI(t *testing.T) {
	mc := memcachedtest.Start(t)
	d := startDaemon(t, t.TempDir(), "--memcached", mc.Addr, "--memcached-timeout", "200ms")
	nonceCLI := func(addr string, args ...string) (string, error) {
		out, err := exec.Command(binary, append([]string{"nonce", "--addr", "http://" + addr}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := nonceCLI(d.API, "--scope", "consumer-1", "n-1"); err != nil || strings.TrimSpace(out) != "fresh" {
		t.Fatalf("first nonce: want fresh, got %v: %s", err, out)
	}
	if out, err := nonceCLI(d.API, "--scope", "consumer-1", "n-1"); err == nil || !strings.Contains(out, wire.CodeNonceReplayed) {
		t.Fatalf("replayed nonce: want a %s failure, got %v: %s", wire.CodeNonceReplayed, err, out)
	}
	old := fmt.Sprint(time.Now().Add(-time.Hour).Unix())
	if out, err := nonceCLI(d.API, "--scope", "consumer-1", "--timestamp", old, "n-2"); err == nil || !strings.Contains(out, wire.CodeTimestampOutOfWindow) {
		t.Fatalf("old timestamp: want a %s failure, got %v: %s", wire.CodeTimestampOutOfWindow, err, out)
	}
	if strings.Contains(d.logs(), "n-1") || strings.Contains(d.logs(), "node-local") {
		t.Errorf("with --memcached the log must neither name a nonce nor call nonces node-local:\n%s", d.logs())
	}

	open := startDaemon(t, t.TempDir(), "--memcached", mc.Addr, "--memcached-timeout", "200ms", "--nonce-fail-open")
	if !strings.Contains(open.logs(), "FAIL OPEN") {
		t.Errorf("--nonce-fail-open must be logged loudly at start:\n%s", open.logs())
	}
	mc.Kill()
	c := d.c
	err := c.CheckNonce(context.Background(), "consumer-1", "while-down", time.Now().Unix())
	var ce *client.Error
	if !errors.As(err, &ce) || !errors.Is(err, client.ErrNonceStoreUnavailable) || ce.RetryAfter == 0 {
		t.Fatalf("memcached down: want nonce_store_unavailable with Retry-After, got %v", err)
	}
	if err := open.c.CheckNonce(context.Background(), "consumer-1", "while-down", time.Now().Unix()); err != nil {
		t.Fatalf("fail-open while memcached is down: want fresh, got %v", err)
	}
	resp, err := http.Get(d.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`tokenstore_nonce_checks_total{outcome="fresh"} 1`, `tokenstore_nonce_checks_total{outcome="replayed"} 1`,
		`tokenstore_nonce_checks_total{outcome="unavailable"}`, "tokenstore_memcached_duration_seconds_bucket", "tokenstore_memcached_breaker_state"} {
		if !bytes.Contains(body, []byte(m)) {
			t.Errorf("metrics: want %s", m)
		}
	}

	local := startDaemon(t, t.TempDir())
	if !strings.Contains(local.logs(), "node-local") {
		t.Errorf("the embedded default must say nonces are node-local:\n%s", local.logs())
	}
	if out, err := nonceCLI(local.API, "--scope", "s", "n-1"); err != nil || strings.TrimSpace(out) != "fresh" {
		t.Fatalf("embedded store, first nonce: want fresh, got %v: %s", err, out)
	}
	if out, err := nonceCLI(local.API, "--scope", "s", "n-1"); err == nil || !strings.Contains(out, wire.CodeNonceReplayed) {
		t.Fatalf("embedded store, replay: want %s, got %v: %s", wire.CodeNonceReplayed, err, out)
	}
}

// TestLastSnapshotFromLog reads a real node's log for its last Raft
// snapshot, as the peer benchmarks do: Raft's lines come out of the
// node's own log handler.
func TestLastSnapshotFromLog(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--snapshot-threshold", "64", "--snapshot-interval", "200ms")
	waitFor(t, "a snapshot in the node's log", 30*time.Second, func() error {
		// Writes go on until the log passes the threshold: concurrent
		// issues share log entries.
		issueMany(t, d.c, 16, "access")
		if took, ok := d.LastSnapshot(); !ok || took < 0 {
			return fmt.Errorf("none yet; log:\n%s", tail(d.logs(), 5))
		}
		return nil
	})
}
