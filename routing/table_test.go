package routing

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// routeCase is one request and the decision every implementation must
// make for it under the built-in rules.
type routeCase struct {
	name   string
	method string
	target string      // request-target exactly as sent
	header [][2]string // in order; a repeated name is a repeated field
	body   string
	want   string // the X-Tokenstore-Route value
	secure bool   // the stick cookie is Secure
}

// sticks reports whether the response must set the stick cookie.
func (c routeCase) sticks() bool {
	return c.want == "primary/"+ReasonMethod || c.want == "primary/"+ReasonPath
}

func (c routeCase) primary() bool { return strings.HasPrefix(c.want, "primary/") }

const (
	promise = "Promise-Non-Write-API-Action"
	xfp     = "X-Forwarded-Proto"
)

func hdr(kv ...string) [][2]string {
	var h [][2]string
	for i := 0; i < len(kv); i += 2 {
		h = append(h, [2]string{kv[i], kv[i+1]})
	}
	return h
}

// routeTable is real Wikimedia URL forms: both title forms, query-string
// variants, encoded titles, methods and headers.
var routeTable = []routeCase{
	// The authorize flow: reason path.
	{name: "article path authorize", method: "GET", target: "/wiki/Special:OAuth/authorize?oauth_token=4b1c2d&oauth_consumer_key=9f8e7d", want: "primary/path"},
	{name: "article path authorize, encoded title", method: "GET", target: "/wiki/Special%3AOAuth%2Fauthorize?oauth_token=4b1c2d", want: "primary/path"},
	{name: "article path authorize, lower-case hex", method: "GET", target: "/wiki/Special%3aOAuth%2fauthorize", want: "primary/path"},
	{name: "article path authenticate", method: "GET", target: "/wiki/Special:OAuth/authenticate?oauth_token=4b1c2d&oauth_consumer_key=9f8e7d", want: "primary/path"},
	{name: "index.php initiate", method: "GET", target: "/w/index.php?title=Special:OAuth/initiate&format=json&oauth_callback=oob", want: "primary/path"},
	{name: "index.php initiate, encoded title", method: "GET", target: "/w/index.php?title=Special%3AOAuth%2Finitiate&format=json&oauth_callback=oob", want: "primary/path"},
	{name: "index.php token, title not first", method: "GET", target: "/w/index.php?format=json&title=Special:OAuth/token&oauth_verifier=77aa", want: "primary/path"},
	{name: "index.php authorize", method: "GET", target: "/w/index.php?title=Special:OAuth/authorize&oauth_token=4b1c2d&oauth_consumer_key=9f8e7d", want: "primary/path"},
	{name: "index.php path info", method: "GET", target: "/w/index.php/Special:OAuth/authorize?oauth_token=4b1c2d", want: "primary/path"},
	{name: "rest oauth2 authorize", method: "GET", target: "/w/rest.php/oauth2/authorize?client_id=c1&response_type=code&state=s1", want: "primary/path"},
	{name: "rest oauth2 access_token GET", method: "GET", target: "/w/rest.php/oauth2/access_token", want: "primary/path"},
	{name: "rest oauth2 authorize, encoded slash", method: "GET", target: "/w/rest.php/oauth2%2Fauthorize?client_id=c1", want: "primary/path"},
	// A repeated title: PHP keeps the last one, and that is the page MediaWiki serves.
	{name: "repeated title, the last authorize", method: "GET", target: "/w/index.php?title=Main_Page&title=Special:OAuth/authorize", want: "primary/path"},
	{name: "repeated title, the last initiate", method: "GET", target: "/w/index.php?title=Main_Page&title=Special:OAuth/initiate", want: "primary/path"},
	{name: "repeated title, the last encoded, among others", method: "GET", target: "/w/index.php?title=Main_Page&oauth_token=4b1c2d&title=Special%3AOAuth%2Fauthorize&oauth_consumer_key=9f8e7d", want: "primary/path"},
	{name: "repeated title, the last after another", method: "GET", target: "/w/index.php?title=Special:OAuth/token&title=Main_Page&title=Special:OAuth/authorize", want: "primary/path"},
	{name: "repeated title, look-alike names after", method: "GET", target: "/w/index.php?title=Main_Page&title=Special:OAuth/token&titles=Main_Page&title.x=1&titlex=2&t=3&titl&=4", want: "primary/path"},
	{name: "repeated title, the same twice", method: "GET", target: "/w/index.php?title=Special:OAuth/authenticate&title=Special:OAuth/authenticate", want: "primary/path"},
	{name: "HEAD authorize", method: "HEAD", target: "/wiki/Special:OAuth/authorize", want: "primary/path"},
	{name: "promise does not exempt a path", method: "POST", target: "/w/index.php?title=Special:OAuth/initiate", header: hdr(promise, "true"), body: "oauth_callback=oob", want: "primary/path"},
	{name: "authorize over https", method: "GET", target: "/wiki/Special:OAuth/authorize?oauth_token=4b1c2d", header: hdr(xfp, "https"), want: "primary/path", secure: true},
	{name: "authorize with the cookie sticks again", method: "GET", target: "/wiki/Special:OAuth/authorize", header: hdr("Cookie", "UseDC=master"), want: "primary/path"},

	// Writes: reason method.
	{name: "api edit POST", method: "POST", target: "/w/api.php", body: "action=edit&title=Sandbox&text=hi&format=json", want: "primary/method"},
	{name: "oauth2 access_token POST", method: "POST", target: "/w/rest.php/oauth2/access_token", body: "grant_type=authorization_code&code=c0de", want: "primary/method"},
	{name: "index.php submit", method: "POST", target: "/w/index.php?title=Sandbox&action=submit", body: "wpTextbox1=hi", want: "primary/method"},
	{name: "promise false", method: "POST", target: "/w/api.php", header: hdr(promise, "false"), body: "action=edit", want: "primary/method"},
	{name: "POST over https", method: "POST", target: "/w/api.php", header: hdr(xfp, "https"), body: "action=edit", want: "primary/method", secure: true},
	{name: "POST with the cookie", method: "POST", target: "/w/api.php", header: hdr("Cookie", "UseDC=master"), body: "action=edit", want: "primary/method"},

	// Following a write: reason cookie.
	{name: "cookie", method: "GET", target: "/wiki/Main_Page", header: hdr("Cookie", "UseDC=master"), want: "primary/cookie"},
	{name: "cookie among others", method: "GET", target: "/wiki/Main_Page", header: hdr("Cookie", "enwikiSession=abc; UseDC=master; cpPosIndex=1%401700000000"), want: "primary/cookie"},
	{name: "cookie without spaces", method: "GET", target: "/wiki/Main_Page", header: hdr("Cookie", "a=1;UseDC=master"), want: "primary/cookie"},
	{name: "cookie in a second field", method: "GET", target: "/w/api.php?action=query&meta=userinfo", header: hdr("Cookie", "a=1", "Cookie", "UseDC=master"), want: "primary/cookie"},
	{name: "promised POST with the cookie", method: "POST", target: "/w/api.php", header: hdr(promise, "true", "Cookie", "UseDC=master"), body: "action=query", want: "primary/cookie"},

	// Everything else: local.
	{name: "article", method: "GET", target: "/wiki/Main_Page", want: "local"},
	{name: "HEAD article", method: "HEAD", target: "/wiki/Main_Page", want: "local"},
	{name: "index.php history", method: "GET", target: "/w/index.php?title=Main_Page&action=history", want: "local"},
	{name: "api query", method: "GET", target: "/w/api.php?action=query&meta=userinfo&format=json", want: "local"},
	{name: "other special page", method: "GET", target: "/wiki/Special:OAuthConsumerRegistration/propose", want: "local"},
	{name: "OAuth subpage not listed", method: "GET", target: "/wiki/Special:OAuth/verified?oauth_verifier=77aa", want: "local"},
	{name: "title with a further subpage", method: "GET", target: "/wiki/Special:OAuth/authorize/extra", want: "local"},
	{name: "titles is not title", method: "GET", target: "/w/index.php?titles=Special:OAuth/initiate", want: "local"},
	{name: "title on another script", method: "GET", target: "/w/api.php?title=Special:OAuth/initiate", want: "local"},
	{name: "longer title", method: "GET", target: "/w/index.php?title=Special:OAuth/initiate2", want: "local"},
	{name: "repeated title, the last is another page", method: "GET", target: "/w/index.php?title=Special:OAuth/authorize&title=Main_Page", want: "local"},
	{name: "repeated title, the last among others", method: "GET", target: "/w/index.php?title=Special:OAuth/initiate&format=json&title=Main_Page&action=raw", want: "local"},
	{name: "repeated title, the last empty", method: "GET", target: "/w/index.php?title=Special:OAuth/authorize&title=", want: "local"},
	{name: "repeated title, the last without a value", method: "GET", target: "/w/index.php?title=Special:OAuth/authorize&x=1&title", want: "local"},
	{name: "repeated title, the last longer", method: "GET", target: "/w/index.php?title=Special:OAuth/authorize&title=Special:OAuth/authorize2", want: "local"},
	{name: "lower-case namespace", method: "GET", target: "/wiki/special:OAuth/authorize", want: "local"},
	{name: "encoded letter", method: "GET", target: "/wiki/%53pecial:OAuth/authorize", want: "local"},
	{name: "double encoded", method: "GET", target: "/wiki/Special%253AOAuth%252Fauthorize", want: "local"},
	{name: "rest trailing slash", method: "GET", target: "/w/rest.php/oauth2/authorize/", want: "local"},
	{name: "rest profile", method: "GET", target: "/w/rest.php/oauth2/resource/profile", want: "local"},
	{name: "promised POST", method: "POST", target: "/w/api.php", header: hdr(promise, "true"), body: "action=query&list=search", want: "local"},
	{name: "promised POST, upper case", method: "POST", target: "/w/api.php", header: hdr(promise, "TRUE"), body: "action=query", want: "local"},
	{name: "promise on a GET", method: "GET", target: "/wiki/Main_Page", header: hdr(promise, "true"), want: "local"},
	{name: "cookie other value", method: "GET", target: "/wiki/Main_Page", header: hdr("Cookie", "UseDC=local"), want: "local"},
	{name: "cookie other name", method: "GET", target: "/wiki/Main_Page", header: hdr("Cookie", "XUseDC=master"), want: "local"},
	{name: "cookie value prefix", method: "GET", target: "/wiki/Main_Page", header: hdr("Cookie", "UseDC=masterful"), want: "local"},
}

// rawRequest parses the case as a server does.
func (c routeCase) rawRequest(t testing.TB) *http.Request {
	t.Helper()
	var b strings.Builder
	b.WriteString(c.method + " " + c.target + " HTTP/1.1\r\nHost: en.wikipedia.org\r\n")
	for _, h := range c.header {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	b.WriteString("Content-Length: " + itoa(len(c.body)) + "\r\n\r\n" + c.body)
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(b.String())))
	if err != nil {
		t.Fatalf("%s: parse request: %v", c.name, err)
	}
	return req
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// send sends the case to base (a router or a proxy) with the target as
// given, byte for byte.
func (c routeCase) send(t testing.TB, hc *http.Client, base string) *http.Response {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	path, query, hasQuery := strings.Cut(c.target, "?")
	u.Opaque, u.RawQuery, u.ForceQuery = path, query, hasQuery && query == ""
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, base, body)
	if err != nil {
		t.Fatal(err)
	}
	req.URL = u
	req.Host = "en.wikipedia.org"
	for _, h := range c.header {
		req.Header.Add(h[0], h[1])
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s: %s %s via %s: %v", c.name, c.method, c.target, base, err)
	}
	return resp
}

// seen is what an echo upstream received, as it answers it.
type seen struct {
	DC         string              `json:"dc"`
	Method     string              `json:"method"`
	Host       string              `json:"host"`
	RequestURI string              `json:"request_uri"`
	Header     map[string][]string `json:"header"`
	BodyLen    int64               `json:"body_len"`
	BodySHA    string              `json:"body_sha256"`
	RemoteAddr string              `json:"remote_addr"`
}

// echoUpstream is an application server of one DC: it answers what it
// received as JSON, names its DC in X-Upstream-DC and sets a cookie of
// its own (which the stick cookie must not replace).
func echoUpstream(t testing.TB, dc string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		s := seen{DC: dc, Method: r.Method, Host: r.Host, RequestURI: r.RequestURI, Header: r.Header,
			BodyLen: n, BodySHA: hex.EncodeToString(h.Sum(nil)), RemoteAddr: r.RemoteAddr}
		w.Header().Set("X-Upstream-DC", dc)
		w.Header().Add("Set-Cookie", "app=1; Path=/")
		w.Header().Add("Set-Cookie", "app2=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// readSeen decodes an echo upstream's answer.
func readSeen(t testing.TB, resp *http.Response) seen {
	t.Helper()
	defer resp.Body.Close()
	var s seen
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("upstream answer %d %q: %v", resp.StatusCode, b, err)
	}
	return s
}

// stickCookies returns the Set-Cookie fields of the stick cookie.
func stickCookies(resp *http.Response) []string {
	var out []string
	for _, v := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(v, "UseDC=") {
			out = append(out, v)
		}
	}
	return out
}

// checkOutcome checks one response of a proxy that served the case with
// local DC "a" and primary DC "b" under the built-in rules (stick 10s).
func checkOutcome(t testing.TB, who string, c routeCase, resp *http.Response) {
	t.Helper()
	wantDC := "a"
	if c.primary() {
		wantDC = "b"
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s %q: status %d, want 200", who, c.name, resp.StatusCode)
	}
	if got := resp.Header.Get("X-Upstream-DC"); got != wantDC {
		t.Errorf("%s %q (%s %s): served by DC %q, want %q", who, c.name, c.method, c.target, got, wantDC)
	}
	if got := resp.Header.Get(HeaderRoute); got != c.want {
		t.Errorf("%s %q: %s %q, want %q", who, c.name, HeaderRoute, got, c.want)
	}
	if got := resp.Header.Get(HeaderServedDC); got != wantDC {
		t.Errorf("%s %q: %s %q, want %q", who, c.name, HeaderServedDC, got, wantDC)
	}
	sc := stickCookies(resp)
	want := []string(nil)
	if c.sticks() {
		want = []string{"UseDC=master; Max-Age=10; Path=/; HttpOnly; SameSite=Lax"}
		if c.secure {
			want[0] += "; Secure"
		}
	}
	if strings.Join(sc, "|") != strings.Join(want, "|") {
		t.Errorf("%s %q: stick cookie %q, want %q", who, c.name, sc, want)
	}
	if got := resp.Header.Values("Set-Cookie"); len(got) != 2+len(want) {
		t.Errorf("%s %q: Set-Cookie fields %q: want the application's two and %d stick cookie", who, c.name, got, len(want))
	}
}

// testClient does not follow redirects or keep cookies.
func testClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
