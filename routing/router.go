package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenstore/tokenstore/api/wire"
)

// Response headers the router adds.
const (
	// HeaderServedDC names the datacenter whose upstream answered.
	HeaderServedDC = "X-Tokenstore-Served-DC"
	// HeaderRoute is the decision and its reason: primary/method,
	// primary/path, primary/cookie or local.
	HeaderRoute = "X-Tokenstore-Route"
	// ViaName is what the router adds to Via.
	ViaName = "tokenstore-route"
)

// Error codes of the router's own answers (the API's JSON error shape).
const (
	CodeUpstreamUnavailable = "upstream_unavailable" // 502: the upstream did not answer
	CodeUpstreamTimeout     = "upstream_timeout"     // 504: no response headers in time
	CodeNoUpstream          = "no_upstream"          // 502: the chosen DC has no --upstream
	CodePrimaryUnknown      = "primary_unknown"      // 503: the primary DC was never learned
	CodeMethodNotAllowed    = "method_not_allowed"   // 405: CONNECT
)

// Config configures a Router.
type Config struct {
	Rules   *Rules
	LocalDC string
	// Upstreams are the application servers of each DC (at least the
	// local one).
	Upstreams map[string]*url.URL
	// Primary names the primary DC: StaticPrimary or a ClusterWatcher.
	Primary PrimarySource
	// StickTTL is the Max-Age of the cookie set after a write routed to
	// the primary DC; 0 sets none.
	StickTTL time.Duration
	// DialTimeout bounds connecting to an upstream (default 5s);
	// UpstreamTimeout bounds the wait for its response headers (default
	// 60s). Bodies stream without a deadline.
	DialTimeout, UpstreamTimeout time.Duration
	// Transport replaces the one built from the timeouts.
	Transport http.RoundTripper
	Logger    *slog.Logger
	Registry  prometheus.Registerer
}

// Router is the reverse proxy. It implements http.Handler.
type Router struct {
	cfg   Config
	log   *slog.Logger
	proxy *httputil.ReverseProxy
	m     *routeMetrics
	// stick and stickSecure are the Set-Cookie values; "" when disabled.
	stick, stickSecure string
}

var dcName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// ValidDC reports whether name is usable as a datacenter name (it becomes
// an Envoy cluster name and a Lua string).
func ValidDC(name string) bool { return dcName.MatchString(name) }

// ParseUpstream parses DC=URL: an http or https URL with a host and no
// path, query or credentials.
func ParseUpstream(s string) (string, *url.URL, error) {
	dc, raw, ok := strings.Cut(s, "=")
	if !ok || !ValidDC(dc) {
		return "", nil, fmt.Errorf("upstream %q: want DC=URL with a DC name of letters, digits, _ . -", s)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", nil, fmt.Errorf("upstream %s: %w", dc, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", nil, fmt.Errorf("upstream %s: %q: want an http:// or https:// URL", dc, raw)
	case u.Host == "" || u.Hostname() == "":
		return "", nil, fmt.Errorf("upstream %s: %q has no host", dc, raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return "", nil, fmt.Errorf("upstream %s: %q: want scheme://host[:port] only", dc, raw)
	}
	u.Path, u.RawPath = "", ""
	return dc, u, nil
}

// New builds a Router.
func New(cfg Config) (*Router, error) {
	if cfg.Rules == nil {
		cfg.Rules = DefaultRules()
	} else if cfg.Rules.c == nil {
		if err := cfg.Rules.Validate(); err != nil {
			return nil, err
		}
	}
	if !ValidDC(cfg.LocalDC) {
		return nil, fmt.Errorf("routing: local DC %q: want letters, digits, _ . -", cfg.LocalDC)
	}
	if cfg.Upstreams[cfg.LocalDC] == nil {
		return nil, fmt.Errorf("routing: no upstream for the local DC %s", cfg.LocalDC)
	}
	for dc := range cfg.Upstreams {
		if !ValidDC(dc) {
			return nil, fmt.Errorf("routing: DC %q: want letters, digits, _ . -", dc)
		}
	}
	if cfg.Primary == nil {
		return nil, errors.New("routing: no primary DC source")
	}
	if cfg.StickTTL < 0 || (cfg.StickTTL > 0 && cfg.StickTTL < time.Second) {
		return nil, fmt.Errorf("routing: stick TTL %s: want 0 (none) or at least 1s", cfg.StickTTL)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{
			Proxy:                 nil, // never an environment proxy
			DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: cfg.UpstreamTimeout,
			ExpectContinueTimeout: time.Second,
		}
	}
	rt := &Router{cfg: cfg, log: cfg.Logger, m: newRouteMetrics(cfg.Registry)}
	if ck := cfg.Rules.Cookie; ck != nil && cfg.StickTTL > 0 {
		rt.stick = StickCookie(ck, cfg.StickTTL, false)
		rt.stickSecure = StickCookie(ck, cfg.StickTTL, true)
	}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:        rt.rewrite,
		Transport:      cfg.Transport,
		ModifyResponse: rt.modifyResponse,
		ErrorHandler:   rt.proxyError,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return rt, nil
}

// StickCookie is the Set-Cookie value set after a write: the rules'
// cookie for ttl (whole seconds), on every path, out of scripts' reach,
// sent on top-level navigations from other sites (an OAuth consumer
// redirecting its user back), and Secure when the client used https.
func StickCookie(c *CookieMatch, ttl time.Duration, secure bool) string {
	s := fmt.Sprintf("%s; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax", c.Pair(), int(ttl/time.Second))
	if secure {
		s += "; Secure"
	}
	return s
}

// decision travels with a proxied request.
type decision struct {
	dc     string
	route  string // the HeaderRoute value
	target *url.URL
	stick  string // Set-Cookie value, or ""
	start  time.Time
}

type ctxKey struct{}

// ServeHTTP implements http.Handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		writeError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "CONNECT is not proxied.")
		return
	}
	primary, reason := rt.cfg.Rules.Decide(r)
	d := &decision{dc: rt.cfg.LocalDC, route: "local"}
	label := "local"
	if primary {
		label, d.route = "primary", "primary/"+reason
	}
	rt.m.requests.WithLabelValues(label, reason).Inc()
	if primary {
		dc, ok := rt.cfg.Primary.PrimaryDC()
		if !ok {
			w.Header().Set(HeaderRoute, d.route)
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, CodePrimaryUnknown,
				"The primary datacenter is not known yet (the token store has not answered); retry shortly.")
			return
		}
		d.dc = dc
		if Sticks(reason) && rt.stick != "" {
			d.stick = rt.stick
			if isHTTPS(r) {
				d.stick = rt.stickSecure
			}
		}
	}
	if d.target = rt.cfg.Upstreams[d.dc]; d.target == nil {
		rt.m.errors.WithLabelValues(d.dc, CodeNoUpstream).Inc()
		w.Header().Set(HeaderRoute, d.route)
		writeError(w, http.StatusBadGateway, CodeNoUpstream,
			fmt.Sprintf("No upstream is configured for datacenter %s.", d.dc))
		return
	}
	d.start = time.Now()
	rt.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, d)))
}

// isHTTPS reports whether the client reached the proxy chain over TLS.
func isHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	v, ok := joined(r.Header, "X-Forwarded-Proto")
	return ok && asciiEqualFold(v, "https")
}

func (rt *Router) rewrite(pr *httputil.ProxyRequest) {
	d := pr.In.Context().Value(ctxKey{}).(*decision)
	pr.SetURL(d.target)
	pr.Out.Host = pr.In.Host // the application sees the host the client asked for
	// The proxies in front (TLS termination, the CDN) are trusted: their
	// X-Forwarded-For chain is extended, their -Host and -Proto kept.
	pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	pr.SetXForwarded()
	for _, k := range []string{"X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v := pr.In.Header[k]; len(v) > 0 {
			pr.Out.Header[k] = v
		}
	}
	pr.Out.Header.Add("Via", via(pr.In.ProtoMajor, pr.In.ProtoMinor))
}

func via(major, minor int) string {
	if major == 1 && minor == 1 {
		return "1.1 " + ViaName
	}
	if minor == 0 && major > 1 {
		return strconv.Itoa(major) + " " + ViaName
	}
	return strconv.Itoa(major) + "." + strconv.Itoa(minor) + " " + ViaName
}

func (rt *Router) modifyResponse(resp *http.Response) error {
	d := resp.Request.Context().Value(ctxKey{}).(*decision)
	rt.m.upstream.WithLabelValues(d.dc).Observe(time.Since(d.start).Seconds())
	h := resp.Header
	h.Set(HeaderServedDC, d.dc)
	h.Set(HeaderRoute, d.route)
	h.Add("Via", via(resp.ProtoMajor, resp.ProtoMinor))
	if d.stick != "" {
		h.Add("Set-Cookie", d.stick)
	}
	return nil
}

func (rt *Router) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	d := r.Context().Value(ctxKey{}).(*decision)
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away: nobody reads an answer.
		rt.log.Debug("client gone before the upstream answered", "dc", d.dc, "err", err)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	var ne net.Error
	status, code, msg := http.StatusBadGateway, CodeUpstreamUnavailable, "The application servers of datacenter %s cannot be reached."
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status, code, msg = http.StatusGatewayTimeout, CodeUpstreamTimeout, "The application servers of datacenter %s did not answer in time."
	}
	rt.m.errors.WithLabelValues(d.dc, code).Inc()
	w.Header().Set(HeaderRoute, d.route)
	rt.log.Warn("upstream failed", "dc", d.dc, "upstream", d.target.Host, "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, status, code, fmt.Sprintf(msg, d.dc))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(wire.Error{Error: wire.ErrorBody{Code: code, Message: msg}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// AdminHandler serves GET /metrics (from gatherer), /healthz and /readyz
// (ready once the primary DC is known), apart from the proxied namespace.
func (rt *Router) AdminHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	if gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		dc, ok := rt.cfg.Primary.PrimaryDC()
		if !ok {
			writeError(w, http.StatusServiceUnavailable, CodePrimaryUnknown, "The primary datacenter is not known yet.")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "local_dc": rt.cfg.LocalDC, "primary_dc": dc})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

type routeMetrics struct {
	requests *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

func newRouteMetrics(reg prometheus.Registerer) *routeMetrics {
	f := promauto.With(reg)
	return &routeMetrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenstore_route_requests_total",
			Help: "Requests by routing decision (primary, local) and reason (method, path, cookie, none).",
		}, []string{"decision", "reason"}),
		upstream: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenstore_route_upstream_seconds",
			Help:    "Time from sending a request upstream to its response headers, by the DC that served.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"dc"}),
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenstore_route_upstream_errors_total",
			Help: "Requests answered by the router itself because the DC's upstream failed or is missing, by code.",
		}, []string{"dc", "code"}),
	}
}

// bufferPool recycles the proxy's copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
