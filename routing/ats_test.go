package routing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Where Debian's trafficserver package puts things.
const (
	atsConfigDir  = "/etc/trafficserver"
	atsModulesDir = "/usr/lib/trafficserver/modules"
)

// TestATSExportInTrafficServer loads the exported tslua script and
// header_rewrite rules into a real Apache Traffic Server and checks that
// it routes every request of the table as the built-in router does: the
// same upstream answers, with the same decision header and the same stick
// cookie next to the application's own. A second script, from rules
// without promise, cookie or titles, serves another host of the same ATS.
func TestATSExportInTrafficServer(t *testing.T) {
	bin, err := exec.LookPath("traffic_server")
	if err != nil {
		t.Skip("traffic_server is not installed (make test installs Debian's trafficserver)")
	}
	for _, m := range []string{"tslua.so", "header_rewrite.so"} {
		if _, err := os.Stat(filepath.Join(atsModulesDir, m)); err != nil {
			t.Fatalf("traffic_server is installed but its plugin %s is not: %v", m, err)
		}
	}
	a, b := echoUpstream(t, "a"), echoUpstream(t, "b")
	ups := map[string]*url.URL{"a": mustURL(t, a.URL), "b": mustURL(t, b.URL)}
	x, err := ExportATS(ExportConfig{LocalDC: "a", PrimaryDC: "b", Upstreams: ups, StickTTL: 10 * time.Second},
		"tokenstore-route.lua", "tokenstore-route-stick.config")
	if err != nil {
		t.Fatal(err)
	}
	// Other rules, without promise, cookie or titles, for the host
	// custom.test of the same ATS.
	custom, err := ParseRules([]byte("methods: [PUT, DELETE]\npaths: {prefix: [/api/auth/], exact: [/login]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cx, err := ExportATS(ExportConfig{Rules: custom, LocalDC: "a", PrimaryDC: "b", Upstreams: ups, StickTTL: 10 * time.Second},
		"custom.lua", "unused.config")
	if err != nil {
		t.Fatal(err)
	}
	if cx.StickRules != nil || strings.Contains(cx.RemapLine, "header_rewrite") {
		t.Fatalf("rules without a cookie still stick: %q", cx.RemapLine)
	}
	ats := startATS(t, bin, map[string][]byte{
		"tokenstore-route.lua":          x.Script,
		"tokenstore-route-stick.config": x.StickRules,
		"custom.lua":                    cx.Script,
		"remap.config": []byte(strings.Replace(cx.RemapLine, "map / ", "map http://custom.test/ ", 1) + "\n" +
			x.RemapLine + "\n"),
	})

	rt, err := New(Config{LocalDC: "a", Upstreams: ups, Primary: StaticPrimary("b"), StickTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	router := &http.Server{Handler: rt}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go router.Serve(ln)
	t.Cleanup(func() { router.Close() })

	hc := testClient()
	for _, c := range routeTable {
		t.Run(c.name, func(t *testing.T) {
			viaATS := c.send(t, hc, ats)
			checkOutcome(t, "ATS", c, viaATS)
			viaRouter := c.send(t, hc, "http://"+ln.Addr().String())
			checkOutcome(t, "router", c, viaRouter)
			if a, r := viaATS.Header.Get("X-Upstream-DC"), viaRouter.Header.Get("X-Upstream-DC"); a != r {
				t.Errorf("ATS sent %s %s to DC %q, the router to %q", c.method, c.target, a, r)
			}
			if c.method == "HEAD" {
				viaATS.Body.Close()
				viaRouter.Body.Close()
				return
			}
			s := readSeen(t, viaATS)
			readSeen(t, viaRouter)
			sum := sha256.Sum256([]byte(c.body))
			if s.RequestURI != c.target || s.Method != c.method || s.BodySHA != hex.EncodeToString(sum[:]) {
				t.Errorf("through ATS the upstream got %s %s (body %d bytes), want %s %s (%d)",
					s.Method, s.RequestURI, s.BodyLen, c.method, c.target, len(c.body))
			}
		})
	}
	customRouter, err := New(Config{Rules: custom, LocalDC: "a", Upstreams: ups, Primary: StaticPrimary("b"), StickTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, target, cookie, want string }{
		{"PUT", "/w/rest.php/v1/page/Sandbox", "", "primary/method"},
		{"DELETE", "/x", "", "primary/method"},
		{"POST", "/x", "", "local"},
		{"GET", "/api/auth/token?x=1", "", "primary/path"},
		{"GET", "/api/auth%2Ftoken", "", "primary/path"},
		{"GET", "/api/auth", "", "local"},
		{"GET", "/login", "", "primary/path"},
		{"GET", "/wiki/Special:OAuth/authorize", "", "local"},
		{"GET", "/wiki/Main_Page", "UseDC=master", "local"},
	} {
		rc := routeCase{name: "custom " + c.method + " " + c.target, method: c.method, target: c.target, want: c.want}
		if c.cookie != "" {
			rc.header = hdr("Cookie", c.cookie)
		}
		viaATS := sendHost(t, hc, ats, "custom.test", rc)
		rec := httptest.NewRecorder()
		customRouter.ServeHTTP(rec, rc.rawRequest(t))
		viaRouter := rec.Result()
		for who, resp := range map[string]*http.Response{"ATS": viaATS, "router": viaRouter} {
			if got := resp.Header.Get(HeaderRoute); got != c.want {
				t.Errorf("%s, custom rules, %s %s: %s %q, want %q", who, c.method, c.target, HeaderRoute, got, c.want)
			}
			if len(stickCookies(resp)) != 0 {
				t.Errorf("%s, custom rules, %s %s: a stick cookie without a cookie rule", who, c.method, c.target)
			}
			resp.Body.Close()
		}
		if a, r := viaATS.Header.Get("X-Upstream-DC"), viaRouter.Header.Get("X-Upstream-DC"); a != r || a == "" {
			t.Errorf("custom rules, %s %s: ATS sent it to DC %q, the router to %q", c.method, c.target, a, r)
		}
	}
}

// sendHost sends a case with another Host header.
func sendHost(t *testing.T, hc *http.Client, base, host string, c routeCase) *http.Response {
	t.Helper()
	req, err := http.NewRequest(c.method, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	path, query, _ := strings.Cut(c.target, "?")
	req.URL.Opaque, req.URL.RawQuery = path, query
	req.Host = host
	for _, h := range c.header {
		req.Header.Add(h[0], h[1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// startATS runs traffic_server on a private run root in a temporary
// directory (see the loopback recipe in the project notes), on a free
// loopback port, with the given files in its configuration directory. It
// returns the proxy's base URL once its remap script answers; the process
// is stopped by its pid when the test ends, and its logs are printed if
// the test failed.
func startATS(t *testing.T, bin string, files map[string][]byte) string {
	t.Helper()
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	for _, d := range []string{etc, filepath.Join(root, "var", "log"), filepath.Join(root, "run"), filepath.Join(root, "cache")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.CopyFS(etc, os.DirFS(atsConfigDir)); err != nil {
		t.Fatalf("copy the ATS configuration: %v", err)
	}
	addrs, err := proccluster.FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := addrs[0]
	_, port, _ := net.SplitHostPort(addr)
	files["records.config"] = []byte(strings.Join([]string{
		"CONFIG proxy.config.http.server_ports STRING " + port + ":ip-in=127.0.0.1",
		"CONFIG proxy.config.admin.user_id STRING #-1",
		"CONFIG proxy.config.http.cache.http INT 0",
		"CONFIG proxy.config.url_remap.remap_required INT 1",
		"CONFIG proxy.config.reverse_proxy.enabled INT 1",
		"CONFIG proxy.config.cache.ram_cache.size INT 1048576",
		"",
	}, "\n"))
	files["storage.config"] = []byte(filepath.Join(root, "cache") + " 16M\n")
	files["plugin.config"] = nil // no global plugins
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(etc, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runroot := filepath.Join(root, "runroot.yaml")
	layout := fmt.Sprintf(`prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/sbin
sysconfdir: %[1]s/etc
datadir: %[1]s/cache
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: %[2]s
localstatedir: %[1]s/var
runtimedir: %[1]s/run
logdir: %[1]s/var/log
cachedir: %[1]s/cache
`, root, atsModulesDir)
	if err := os.WriteFile(runroot, []byte(layout), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := proccluster.StartProc(root, "traffic_server", bin, "--run-root="+runroot)
	if err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		var s strings.Builder
		for _, f := range []string{p.LogPath, filepath.Join(root, "var/log/diags.log"), filepath.Join(root, "var/log/error.log")} {
			b, _ := os.ReadFile(f)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			fmt.Fprintf(&s, "--- %s ---\n%s\n", filepath.Base(f), b)
		}
		return s.String()
	}
	t.Cleanup(func() {
		p.Stop(10 * time.Second) // how it exits is not what this test checks
		if t.Failed() {
			t.Logf("traffic_server logs:\n%s", logs())
		}
	})
	base := "http://" + addr
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	err = p.WaitUntil(context.Background(), 60*time.Second, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.Header.Get(HeaderRoute) == "" {
			return fmt.Errorf("answers %s without %s: the remap script does not run", resp.Status, HeaderRoute)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("traffic_server on %s: %v", addr, err)
	}
	return base
}
