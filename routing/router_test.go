package routing

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokenstore/tokenstore/api/wire"
)

// twoDCs is a router in DC a in front of echo upstreams for DCs a and b.
type twoDCs struct {
	a, b   *httptest.Server
	router *Router
	srv    *httptest.Server
	reg    *prometheus.Registry
}

func startTwoDCs(t *testing.T, primary PrimarySource, mod func(*Config)) *twoDCs {
	t.Helper()
	e := &twoDCs{a: echoUpstream(t, "a"), b: echoUpstream(t, "b"), reg: prometheus.NewRegistry()}
	cfg := Config{
		LocalDC:   "a",
		Upstreams: map[string]*url.URL{"a": mustURL(t, e.a.URL), "b": mustURL(t, e.b.URL)},
		Primary:   primary, StickTTL: 10 * time.Second, Registry: e.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.router = rt
	e.srv = httptest.NewServer(rt)
	t.Cleanup(e.srv.Close)
	return e
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	_, u, err := ParseUpstream("x=" + s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRouterTable(t *testing.T) {
	e := startTwoDCs(t, StaticPrimary("b"), nil)
	hc := testClient()
	for _, c := range routeTable {
		t.Run(c.name, func(t *testing.T) {
			resp := c.send(t, hc, e.srv.URL)
			checkOutcome(t, "router", c, resp)
			if c.method == "HEAD" {
				resp.Body.Close()
				return
			}
			s := readSeen(t, resp)
			if s.Method != c.method || s.RequestURI != c.target || s.Host != "en.wikipedia.org" {
				t.Errorf("upstream got %s %s (Host %s), want %s %s (Host en.wikipedia.org)", s.Method, s.RequestURI, s.Host, c.method, c.target)
			}
			sum := sha256.Sum256([]byte(c.body))
			if s.BodyLen != int64(len(c.body)) || s.BodySHA != hex.EncodeToString(sum[:]) {
				t.Errorf("upstream got a body of %d bytes, want %q", s.BodyLen, c.body)
			}
			for _, h := range c.header {
				if !contains(s.Header[http.CanonicalHeaderKey(h[0])], h[1]) && h[0] != xfp {
					t.Errorf("upstream lost header %s: %q", h[0], h[1])
				}
			}
		})
	}
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// TestRouterFlow is the end-to-end sequence, with a client that
// keeps cookies as a browser does.
func TestRouterFlow(t *testing.T) {
	e := startTwoDCs(t, StaticPrimary("b"), nil)
	jar, _ := cookiejar.New(nil)
	hc := testClient()
	hc.Jar = jar
	get := func(method, path, body string, hdr ...string) (*http.Response, seen) {
		t.Helper()
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		for i := 0; i < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, readSeen(t, resp)
	}

	resp, s := get("GET", "/wiki/Main_Page", "")
	if s.DC != "a" || resp.Header.Get(HeaderServedDC) != "a" || len(stickCookies(resp)) != 0 {
		t.Fatalf("plain GET: served by %s (%s), cookies %q; want local DC a, no stick cookie", s.DC, resp.Header.Get(HeaderRoute), stickCookies(resp))
	}
	resp, s = get("GET", "/w/index.php?title=Special:OAuth/initiate&format=json&oauth_callback=oob", "")
	if s.DC != "b" || resp.Header.Get(HeaderRoute) != "primary/path" {
		t.Fatalf("OAuth initiate: served by %s (%s), want the primary DC b for its path", s.DC, resp.Header.Get(HeaderRoute))
	}
	// The authorize step set the cookie: the jar holds it now, so even a
	// plain read follows to the primary DC.
	resp, s = get("GET", "/wiki/Main_Page", "")
	if s.DC != "b" || resp.Header.Get(HeaderRoute) != "primary/cookie" || len(stickCookies(resp)) != 0 {
		t.Fatalf("GET after the authorize step: served by %s (%s), cookies %q; want DC b for the cookie, not set again",
			s.DC, resp.Header.Get(HeaderRoute), stickCookies(resp))
	}
	if !hasCookie(s.Header["Cookie"], "UseDC=master") {
		t.Errorf("the upstream did not get the cookie: %q", s.Header["Cookie"])
	}

	jar2, _ := cookiejar.New(nil)
	hc.Jar = jar2
	resp, s = get("POST", "/w/api.php", "action=query&list=search&srsearch=x", promise, "true", "Content-Type", "application/x-www-form-urlencoded")
	if s.DC != "a" || len(stickCookies(resp)) != 0 {
		t.Fatalf("promised POST: served by %s (%s), cookies %q; want local DC a", s.DC, resp.Header.Get(HeaderRoute), stickCookies(resp))
	}
	resp, s = get("POST", "/w/api.php", "action=edit&title=Sandbox&text=hi", "Content-Type", "application/x-www-form-urlencoded")
	if s.DC != "b" || resp.Header.Get(HeaderRoute) != "primary/method" {
		t.Fatalf("POST: served by %s (%s), want DC b", s.DC, resp.Header.Get(HeaderRoute))
	}
	if sc := stickCookies(resp); len(sc) != 1 || sc[0] != "UseDC=master; Max-Age=10; Path=/; HttpOnly; SameSite=Lax" {
		t.Fatalf("POST: stick cookie %q", sc)
	}
	if _, s = get("GET", "/wiki/Sandbox", ""); s.DC != "b" {
		t.Fatalf("GET after the POST: served by %s, want the primary DC b", s.DC)
	}

	// The primary DC's upstream goes down: 502 with the API's error shape.
	e.b.Close()
	req, _ := http.NewRequest("POST", e.srv.URL+"/w/api.php", strings.NewReader("action=edit"))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	checkRouterError(t, resp, http.StatusBadGateway, CodeUpstreamUnavailable)
	if resp.Header.Get(HeaderRoute) != "primary/method" || len(stickCookies(resp)) != 0 {
		t.Errorf("502: route %q, cookies %q", resp.Header.Get(HeaderRoute), stickCookies(resp))
	}
	// The local DC still serves reads without the cookie.
	hc.Jar = nil
	if _, s = get("GET", "/wiki/Main_Page", ""); s.DC != "a" {
		t.Fatalf("GET with DC b down: served by %s", s.DC)
	}
	if got := counterValue(t, e.reg, "tokenstore_route_upstream_errors_total", map[string]string{"dc": "b", "code": CodeUpstreamUnavailable}); got != 1 {
		t.Errorf("upstream errors for DC b: %v, want 1", got)
	}
}

func checkRouterError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e wire.Error
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" || dec.Decode(&e) != nil ||
		e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("want %d with {\"error\":{\"code\":%q,...}}, got %d %s %q", status, code, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}

func TestRouterProxyHeaders(t *testing.T) {
	e := startTwoDCs(t, StaticPrimary("b"), nil)
	req, _ := http.NewRequest("GET", e.srv.URL+"/wiki/Main_Page?action=raw&x=%2F+y", nil)
	req.Host = "fr.wikipedia.org"
	h := req.Header
	h.Add("X-Custom", "one")
	h.Add("X-Custom", "two")
	h.Set("Connection", "X-Hop, keep-alive")
	h.Set("X-Hop", "dropped")
	h.Set("Keep-Alive", "timeout=5")
	h.Set("Proxy-Authorization", "Basic c2VjcmV0")
	h.Set("X-Forwarded-For", "198.51.100.7")
	h.Set("Via", "1.1 edge")
	h.Set("Authorization", "Bearer kept")
	resp, err := testClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := readSeen(t, resp)
	got := func(k string) string { return strings.Join(s.Header[k], "|") }
	for k, want := range map[string]string{
		"X-Custom":            "one|two",
		"X-Hop":               "",
		"Keep-Alive":          "",
		"Proxy-Authorization": "",
		"Authorization":       "Bearer kept",
		"X-Forwarded-For":     "198.51.100.7, 127.0.0.1",
		"X-Forwarded-Proto":   "http",
		"X-Forwarded-Host":    "fr.wikipedia.org",
		"Via":                 "1.1 edge|1.1 tokenstore-route",
	} {
		if got(k) != want {
			t.Errorf("upstream header %s = %q, want %q", k, got(k), want)
		}
	}
	if c := got("Connection"); strings.Contains(c, "X-Hop") {
		t.Errorf("Connection forwarded: %q", c)
	}
	if s.RequestURI != "/wiki/Main_Page?action=raw&x=%2F+y" || s.Host != "fr.wikipedia.org" {
		t.Errorf("upstream got %s for host %s", s.RequestURI, s.Host)
	}
	if v := resp.Header.Values("Via"); !contains(v, "1.1 tokenstore-route") {
		t.Errorf("response Via %q", v)
	}

	// A trusted front proxy's scheme and host are kept.
	req, _ = http.NewRequest("GET", e.srv.URL+"/wiki/Main_Page", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Host", "de.wikipedia.org")
	resp, err = testClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s = readSeen(t, resp)
	if got("X-Forwarded-Proto") != "https" || got("X-Forwarded-Host") != "de.wikipedia.org" {
		t.Errorf("front proxy headers: proto %q host %q", got("X-Forwarded-Proto"), got("X-Forwarded-Host"))
	}
}

// TestRouterStreams: neither the request nor the response body is
// buffered whole.
func TestRouterStreams(t *testing.T) {
	firstByte := make(chan struct{})
	release := make(chan struct{})
	var got atomic.Int64
	var sum atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			h := sha256.New()
			buf := make([]byte, 4096)
			for {
				n, err := r.Body.Read(buf)
				if n > 0 && got.Load() == 0 {
					close(firstByte)
				}
				got.Add(int64(n))
				h.Write(buf[:n])
				if err != nil {
					break
				}
			}
			sum.Store(hex.EncodeToString(h.Sum(nil)))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	}))
	t.Cleanup(up.Close)
	rt, err := New(Config{LocalDC: "a", Upstreams: map[string]*url.URL{"a": mustURL(t, up.URL)}, Primary: StaticPrimary("a")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)

	// Request body: the upstream reads the first chunk before the client
	// has sent the rest.
	pr, pw := io.Pipe()
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	want := sha256.New()
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", srv.URL+"/upload", pr)
		resp, err := testClient().Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				err = io.ErrUnexpectedEOF
			}
		}
		done <- err
	}()
	pw.Write(chunk)
	want.Write(chunk)
	select {
	case <-firstByte:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream saw nothing of a request body still being sent: the router buffers bodies")
	}
	for range 7 {
		pw.Write(chunk)
		want.Write(chunk)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.Load() != 8<<20 || sum.Load() != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("upstream got %d bytes (sha %v), want 8 MiB intact", got.Load(), sum.Load())
	}

	// Response body: the first part arrives while the upstream still
	// holds the rest back.
	resp, err := testClient().Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line := make([]byte, 6)
	readDone := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, line); readDone <- err }()
	select {
	case err := <-readDone:
		if err != nil || string(line) != "first\n" {
			t.Fatalf("first part: %q, %v", line, err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the first part of a streamed response did not arrive before the rest: the router buffers responses")
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second\n" {
		t.Fatalf("rest: %q", rest)
	}
}

func TestRouterUpstreamTimeout(t *testing.T) {
	hold := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hold); slow.Close() })
	reg := prometheus.NewRegistry()
	rt, err := New(Config{LocalDC: "a", Upstreams: map[string]*url.URL{"a": mustURL(t, slow.URL)}, Primary: StaticPrimary("a"),
		UpstreamTimeout: 200 * time.Millisecond, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	start := time.Now()
	resp, err := testClient().Get(srv.URL + "/wiki/Main_Page")
	if err != nil {
		t.Fatal(err)
	}
	checkRouterError(t, resp, http.StatusGatewayTimeout, CodeUpstreamTimeout)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("504 after %s", d)
	}
	if got := counterValue(t, reg, "tokenstore_route_upstream_errors_total", map[string]string{"dc": "a", "code": CodeUpstreamTimeout}); got != 1 {
		t.Errorf("timeouts counted: %v", got)
	}
}

// unknownPrimary has never learned the primary DC.
type unknownPrimary struct{}

func (unknownPrimary) PrimaryDC() (string, bool) { return "", false }

func TestRouterPrimaryUnknownAndNoUpstream(t *testing.T) {
	e := startTwoDCs(t, unknownPrimary{}, nil)
	hc := testClient()
	resp, err := hc.Post(e.srv.URL+"/w/api.php", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("primary_unknown without Retry-After")
	}
	checkRouterError(t, resp, http.StatusServiceUnavailable, CodePrimaryUnknown)
	// Reads that stay local are served.
	resp, err = hc.Get(e.srv.URL + "/wiki/Main_Page")
	if err != nil {
		t.Fatal(err)
	}
	if s := readSeen(t, resp); s.DC != "a" {
		t.Fatalf("local read served by %s", s.DC)
	}
	admin := httptest.NewServer(e.router.AdminHandler(e.reg))
	t.Cleanup(admin.Close)
	resp, err = hc.Get(admin.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	checkRouterError(t, resp, http.StatusServiceUnavailable, CodePrimaryUnknown)

	// The leader's DC has no upstream here: 502 no_upstream.
	e2 := startTwoDCs(t, StaticPrimary("c"), nil)
	resp, err = hc.Get(e2.srv.URL + "/wiki/Special:OAuth/authorize")
	if err != nil {
		t.Fatal(err)
	}
	checkRouterError(t, resp, http.StatusBadGateway, CodeNoUpstream)
	if resp.Header.Get(HeaderRoute) != "primary/path" {
		t.Errorf("no_upstream: route %q", resp.Header.Get(HeaderRoute))
	}
	// CONNECT is not a proxied method.
	req, _ := http.NewRequest("CONNECT", e2.srv.URL, nil)
	req.URL.Opaque = "example.org:443"
	if resp, err = hc.Do(req); err != nil {
		t.Fatal(err)
	}
	checkRouterError(t, resp, http.StatusMethodNotAllowed, CodeMethodNotAllowed)
}

func TestRouterStickTTL(t *testing.T) {
	for _, c := range []struct {
		ttl  time.Duration
		want string
	}{
		{0, ""},
		{90 * time.Second, "UseDC=master; Max-Age=90; Path=/; HttpOnly; SameSite=Lax"},
	} {
		e := startTwoDCs(t, StaticPrimary("b"), func(cfg *Config) { cfg.StickTTL = c.ttl })
		resp, err := testClient().Post(e.srv.URL+"/w/api.php", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := strings.Join(stickCookies(resp), "|"); got != c.want {
			t.Errorf("stick TTL %s: cookie %q, want %q", c.ttl, got, c.want)
		}
	}
	if _, err := New(Config{LocalDC: "a", Upstreams: map[string]*url.URL{"a": mustURL(t, "http://127.0.0.1:1")},
		Primary: StaticPrimary("a"), StickTTL: time.Millisecond}); err == nil {
		t.Error("a stick TTL under 1s was accepted")
	}
}

func TestRouterMetricsAndAdmin(t *testing.T) {
	e := startTwoDCs(t, StaticPrimary("b"), nil)
	hc := testClient()
	want := map[[2]string]float64{}
	for _, c := range routeTable {
		c.send(t, hc, e.srv.URL).Body.Close()
		dec, reason, _ := strings.Cut(c.want, "/")
		if dec == "local" {
			reason = ReasonNone
		}
		want[[2]string{dec, reason}]++
	}
	for k, n := range want {
		if got := counterValue(t, e.reg, "tokenstore_route_requests_total", map[string]string{"decision": k[0], "reason": k[1]}); got != n {
			t.Errorf("requests{decision=%s,reason=%s} = %v, want %v", k[0], k[1], got, n)
		}
	}
	var primary, local uint64
	for _, c := range routeTable {
		if c.primary() {
			primary++
		} else {
			local++
		}
	}
	if got := histogramCount(t, e.reg, "tokenstore_route_upstream_seconds", map[string]string{"dc": "b"}); got != primary {
		t.Errorf("upstream latency samples for b: %d, want %d", got, primary)
	}
	if got := histogramCount(t, e.reg, "tokenstore_route_upstream_seconds", map[string]string{"dc": "a"}); got != local {
		t.Errorf("upstream latency samples for a: %d, want %d", got, local)
	}

	admin := httptest.NewServer(e.router.AdminHandler(e.reg))
	t.Cleanup(admin.Close)
	resp, err := hc.Get(admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`tokenstore_route_requests_total{decision="primary",reason="cookie"}`, `tokenstore_route_upstream_seconds_bucket{dc="a"`} {
		if !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	resp, err = hc.Get(admin.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"primary_dc":"b"`) {
		t.Errorf("/readyz: %d %s", resp.StatusCode, b)
	}
	// The proxied namespace has no /metrics of its own.
	resp, err = hc.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if s := readSeen(t, resp); s.DC != "a" || s.RequestURI != "/metrics" {
		t.Errorf("/metrics on the router was not proxied: %+v", s)
	}
}

func TestParseUpstream(t *testing.T) {
	for in, ok := range map[string]bool{
		"a=http://10.0.0.1:8080":   true,
		"eqiad=https://mw.example": true,
		"a=http://10.0.0.1:8080/":  true,
		"a=http://h/app":           false,
		"a=ftp://h":                false,
		"a=http://":                false,
		"=http://h":                false,
		"a b=http://h":             false,
		"a=http://u:p@h":           false,
		"a=http://h?x=1":           false,
		"http://h":                 false,
	} {
		if _, _, err := ParseUpstream(in); (err == nil) != ok {
			t.Errorf("ParseUpstream(%q): err %v, want ok=%v", in, err, ok)
		}
	}
}

func findMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			return m
		}
	}
	return nil
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	if m := findMetric(t, reg, name, labels); m != nil {
		return m.GetCounter().GetValue()
	}
	return 0
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) uint64 {
	t.Helper()
	if m := findMetric(t, reg, name, labels); m != nil {
		return m.GetHistogram().GetSampleCount()
	}
	return 0
}
