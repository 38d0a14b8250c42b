package systemtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/internal/proccluster"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/routing"
)

// routeProc is one `tokenstore route` process.
type routeProc struct{ *proccluster.Router }

// startRoute runs the router on free loopback ports and waits until its
// /readyz answers 200 (the primary DC is known).
func startRoute(t *testing.T, args ...string) *routeProc {
	t.Helper()
	r, err := proccluster.StartRouter(context.Background(), binary, t.TempDir(), append([]string{"--log-level", "debug"}, args...)...)
	if err != nil {
		t.Fatalf("tokenstore route: %v", err)
	}
	t.Cleanup(func() {
		r.Kill()
		if t.Failed() {
			t.Logf("--- route log ---\n%s", tail(r.Log(), 80))
		}
	})
	return &routeProc{r}
}

func (p *routeProc) logs() string { return p.Log() }

// servedBy sends a request through the router and returns the DC whose
// upstream answered and the decision header.
func (p *routeProc) servedBy(method, path string) (string, string, *http.Response, error) {
	req, err := http.NewRequest(method, "http://"+p.Addr+path, strings.NewReader("x=1"))
	if err != nil {
		return "", "", nil, err
	}
	resp, err := probe.Do(req)
	if err != nil {
		return "", "", nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Upstream-DC"), resp.Header.Get(routing.HeaderRoute), resp, nil
}

// dcUpstream is a DC's application server: it names its DC.
func dcUpstream(t *testing.T, dc string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Upstream-DC", dc)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestRouteFollowsLeaderAcrossDCs: with --tokenstore, when the token
// store's leadership moves to the other DC the authorize flow follows it,
// and back, without restarting the router; reads stay local throughout.
func TestRouteFollowsLeaderAcrossDCs(t *testing.T) {
	// The store requires API keys: /v1/cluster needs --tokenstore-token.
	const key = "router-key-0123456789abcdef"
	keys, err := api.ParseKeys([]byte("router:" + key + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.StartCluster(t, testcluster.Options{DC: "a", Keys: keys}, testcluster.Options{DC: "a", Keys: keys},
		testcluster.Options{DC: "b", Keys: keys})
	ctx := ctxFor(t, 2*time.Minute)
	leader, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, b := dcUpstream(t, "a"), dcUpstream(t, "b")
	// The first store URL is dead: the router must use the others.
	dead, err := proccluster.FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{"http://" + dead[0]}
	for _, n := range c.Nodes() {
		urls = append(urls, n.API.URL)
	}
	rp := startRoute(t, "--local-dc", "a", "--upstream", "a="+a.URL, "--upstream", "b="+b.URL,
		"--tokenstore", strings.Join(urls, ","), "--tokenstore-token", key, "--primary-refresh", "100ms")

	authorizeGoesTo := func(want string) {
		t.Helper()
		waitFor(t, "the authorize flow served by DC "+want, 30*time.Second, func() error {
			dc, route, _, err := rp.servedBy("GET", "/wiki/Special:OAuth/authorize?oauth_token=t1")
			if err != nil {
				return err
			}
			if dc != want || route != "primary/path" {
				return fmt.Errorf("served by %q (%s)", dc, route)
			}
			return nil
		})
		if dc, route, _, err := rp.servedBy("GET", "/wiki/Main_Page"); err != nil || dc != "a" || route != "local" {
			t.Fatalf("plain GET: served by %q (%s), %v; want the local DC a", dc, route, err)
		}
		if dc, _, resp, err := rp.servedBy("POST", "/w/api.php"); err != nil || dc != want || !strings.HasPrefix(resp.Header.Get("Set-Cookie"), "UseDC=master; Max-Age=10;") {
			t.Fatalf("POST: served by %q, %v; want the primary DC %s and the stick cookie", dc, err, want)
		}
	}
	authorizeGoesTo(leader.Opts.DC)

	moveTo := func(dc string) {
		t.Helper()
		l := c.Leader()
		if l == nil {
			t.Fatal("no leader")
		}
		if l.Opts.DC == dc {
			return
		}
		for _, n := range c.Nodes() {
			if n.Opts.DC == dc {
				if err := l.TransferLeadership(n.ID(), n.RaftAddr()); err != nil {
					t.Fatalf("transfer leadership to %s in DC %s: %v", n.ID(), dc, err)
				}
				break
			}
		}
		waitFor(t, "a leader in DC "+dc, 30*time.Second, func() error {
			if l := c.Leader(); l == nil || l.Opts.DC != dc {
				return fmt.Errorf("leader %v", l)
			}
			return nil
		})
	}
	other := map[string]string{"a": "b", "b": "a"}[leader.Opts.DC]
	moveTo(other)
	authorizeGoesTo(other)
	moveTo(leader.Opts.DC)
	authorizeGoesTo(leader.Opts.DC)
	if logs := rp.logs(); strings.Count(logs, "primary DC changed") < 2 {
		t.Errorf("the router did not log both changes:\n%s", tail(logs, 40))
	}

	// An export with --tokenstore fixes the current leader's DC.
	export := exec.Command(binary, "route", "export", "--format", "envoy-json", "--local-dc", "a",
		"--upstream", "a="+a.URL, "--upstream", "b="+b.URL, "--tokenstore", strings.Join(urls, ","))
	export.Env = append(os.Environ(), "TOKENSTORE_API_KEY="+key)
	out, err := export.Output()
	if err != nil {
		t.Fatalf("export with --tokenstore: %v", err)
	}
	rc := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(out, rc); err != nil {
		t.Fatal(err)
	}
	if got := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster(); got != routing.EnvoyCluster(leader.Opts.DC) {
		t.Errorf("exported primary cluster %s, want %s", got, routing.EnvoyCluster(leader.Opts.DC))
	}

	// SIGTERM: a clean stop.
	if err := rp.Stop(30 * time.Second); err != nil || !strings.Contains(rp.logs(), "stopped cleanly") {
		t.Errorf("SIGTERM: exit %v", err)
	}
}

// TestRouteStaticPrimaryCLI: the command with --primary-dc, its admin
// endpoints, and an upstream that is down.
func TestRouteStaticPrimaryCLI(t *testing.T) {
	a := dcUpstream(t, "a")
	addrs, err := proccluster.FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + addrs[0]
	rp := startRoute(t, "--local-dc", "a", "--upstream", "a="+a.URL, "--upstream", "b="+down, "--primary-dc", "b", "--stick-ttl", "30s")
	if dc, route, _, err := rp.servedBy("GET", "/wiki/Main_Page"); err != nil || dc != "a" || route != "local" {
		t.Fatalf("GET: %q %q %v", dc, route, err)
	}
	_, route, resp, err := rp.servedBy("GET", "/w/index.php?title=Special%3AOAuth%2Finitiate&format=json")
	if err != nil || resp.StatusCode != http.StatusBadGateway || route != "primary/path" {
		t.Fatalf("authorize flow with DC b down: %v %v %q; want 502 primary/path", resp, err, route)
	}
	resp, err = probe.Get("http://" + rp.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{
		`tokenstore_route_requests_total{decision="local",reason="none"} 1`,
		`tokenstore_route_requests_total{decision="primary",reason="path"} 1`,
		`tokenstore_route_upstream_errors_total{code="upstream_unavailable",dc="b"} 1`,
		`go_goroutines`,
	} {
		if !bytes.Contains(b, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func TestRouteCLIRejects(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"route", "--upstream", "a=http://127.0.0.1:1", "--primary-dc", "a"}, "--local-dc is required"},
		{[]string{"route", "--local-dc", "a", "--primary-dc", "a"}, "--upstream a=URL is required"},
		{[]string{"route", "--local-dc", "a", "--upstream", "a=http://127.0.0.1:1"}, "exactly one of --primary-dc and --tokenstore"},
		{[]string{"route", "--local-dc", "a", "--upstream", "a=http://127.0.0.1:1", "--primary-dc", "b"}, "--primary-dc b has no --upstream"},
		{[]string{"route", "--local-dc", "a", "--upstream", "a=http://127.0.0.1:1/app", "--primary-dc", "a"}, "scheme://host[:port] only"},
		{[]string{"route", "--local-dc", "a", "--upstream", "a=http://127.0.0.1:1", "--primary-dc", "a", "--rules", "/nonexistent.yaml"}, "read rules"},
		{[]string{"route", "export", "--format", "nginx"}, "want yaml, ats-lua, envoy or envoy-json"},
	} {
		out, err := exec.Command(binary, c.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%q: exit %v, output %q; want a failure saying %q", c.args, err, out, c.want)
		}
	}
}

func TestRouteExportCLI(t *testing.T) {
	flags := []string{"--local-dc", "a", "--upstream", "a=http://10.0.0.1:8080", "--upstream", "b=https://mw.b.example", "--primary-dc", "b"}
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"route", "export"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("export %q: %v\n%s", args, err, stderr.String())
		}
		return out
	}

	dir := t.TempDir()
	line := strings.TrimSpace(string(run(append([]string{"--format", "ats-lua", "--out", dir}, flags...)...)))
	want := "map / http://10.0.0.1:8080/ @plugin=tslua.so @pparam=tokenstore-route.lua @plugin=header_rewrite.so @pparam=tokenstore-route-stick.config"
	if line != want {
		t.Errorf("remap line %q, want %q", line, want)
	}
	script, err := os.ReadFile(filepath.Join(dir, "tokenstore-route.lua"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`local PRIMARY_HOST = "mw.b.example"`, `local PRIMARY_PORT = 443`, `local PRIMARY_SCHEME = "https"`,
		`["Special:OAuth/initiate"] = true`, "no live view of the token", "function do_remap()"} {
		if !bytes.Contains(script, []byte(s)) {
			t.Errorf("script lacks %q", s)
		}
	}
	stick, err := os.ReadFile(filepath.Join(dir, "tokenstore-route-stick.config"))
	if err != nil || !bytes.Contains(stick, []byte(`add-header Set-Cookie "UseDC=master; Max-Age=10; Path=/; HttpOnly; SameSite=Lax; Secure"`)) {
		t.Errorf("header_rewrite rules: %v\n%s", err, stick)
	}

	y := run(append([]string{"--format", "envoy"}, flags...)...)
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(v)
	rc := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(j, rc); err != nil {
		t.Fatalf("envoy YAML: %v\n%s", err, y)
	}
	if err := rc.Validate(); err != nil {
		t.Fatalf("envoy YAML: %v", err)
	}
	if !bytes.HasPrefix(y, []byte("# Envoy v3 RouteConfiguration")) || !bytes.Contains(y, []byte("cluster: dc_b")) {
		t.Errorf("envoy YAML:\n%s", y)
	}
	out := filepath.Join(dir, "route.json")
	run(append([]string{"--format", "envoy-json", "--out", out}, flags...)...)
	b, _ := os.ReadFile(out)
	if err := protojson.Unmarshal(b, rc); err != nil || rc.Validate() != nil {
		t.Errorf("envoy JSON in --out: %v", err)
	}

	if got := run("--format", "yaml"); !bytes.Equal(got, routing.DefaultRulesYAML()) {
		t.Errorf("export --format yaml is not the built-in rules")
	}
	rules, err := exec.Command(binary, "route", "rules").Output()
	if err != nil || !bytes.Equal(rules, routing.DefaultRulesYAML()) {
		t.Errorf("route rules: %v", err)
	}
	// A rules file: exported normalised, and it drives the export.
	custom := filepath.Join(dir, "rules.yaml")
	os.WriteFile(custom, []byte("methods: [POST, PUT]\npaths: {exact: [/login]}\ncookie: {name: pin, value: primary}\n"), 0o644)
	got := run("--format", "yaml", "--rules", custom)
	if r, err := routing.ParseRules(got); err != nil || strings.Join(r.Methods, ",") != "POST,PUT" {
		t.Errorf("export --format yaml --rules: %v\n%s", err, got)
	}
	y = run(append([]string{"--format", "envoy", "--rules", custom}, flags...)...)
	if !bytes.Contains(y, []byte("POST|PUT")) || !bytes.Contains(y, []byte("pin=primary")) || bytes.Contains(y, []byte("OAuth")) {
		t.Errorf("envoy export of custom rules:\n%s", y)
	}
}

// TestRouteBenchSmoke: the echo upstream and the router overhead bench,
// as tokenstore-bench loopback route runs them.
func TestRouteBenchSmoke(t *testing.T) {
	echo, err := proccluster.StartEcho(context.Background(), benchBinary, t.TempDir(), "a")
	if err != nil {
		t.Fatalf("the echo upstream: %v", err)
	}
	t.Cleanup(echo.Kill)
	addr := echo.Addr
	rp := startRoute(t, "--local-dc", "a", "--upstream", "a=http://"+addr, "--primary-dc", "a")
	out, err := exec.Command(benchBinary, "route", "--direct", "http://"+addr, "--via", "http://"+rp.Addr,
		"--clients", "4", "--duration", "600ms", "--rounds", "2").Output()
	if err != nil {
		t.Fatalf("route bench: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "ratio    router/direct: throughput ") {
		t.Fatalf("want direct, router and ratio lines, got:\n%s", out)
	}
	for i, w := range []string{"direct", "router"} {
		if l := lines[i]; !strings.HasPrefix(l, w+" ") || strings.Contains(l, " ops=0 ") || !strings.Contains(l, " errors=0 ") {
			t.Errorf("want a %s result with ops and no errors, got: %s", w, l)
		}
	}
}
