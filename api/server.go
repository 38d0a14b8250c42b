// Package api serves the v1 HTTP API of the token store: routing,
// authentication, request decoding and validation, error mapping and
// metrics. The node behind it is an interface, Node, declared here.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// Node is what the API needs of a node: coalesced writes, reads of the
// local replica, and the read barriers of the consistency levels.
type Node interface {
	// Apply proposes a command and returns its result and log index.
	Apply(ctx context.Context, c fsm.Command) (fsm.Result, uint64, error)
	// ReadRecord reads by secret digest at a consistency level, after the
	// replica has applied minIndex (waiting up to localWait, then asking
	// the leader), and returns the index the answer reflects.
	ReadRecord(ctx context.Context, hash string, c cluster.Consistency, minIndex uint64, localWait time.Duration) (*fsm.Record, uint64, error)
	ByID(id string) (*fsm.Record, error)
	ListBySubject(subject, kind, after string, limit int, now int64) ([]*fsm.Record, string, error)
	AppliedIndex() uint64
	// LeaderContact is how long ago the node last heard from a leader (0
	// on the leader), and whether it knows one now.
	LeaderContact() (time.Duration, bool)
	// ClusterStatus describes every node of the cluster.
	ClusterStatus(ctx context.Context) cluster.Status
	// Touch notes a read of the token with digest hash, for its last-used
	// time; it is written later, in bulk.
	Touch(hash string, at time.Time, ip, userAgent string)
	// Ready is nil when the node can serve.
	Ready() error
	// Snapshot writes a snapshot of the node's state now and waits until
	// it is on disk (cluster.ErrNothingNewToSnapshot: none is needed).
	Snapshot() (cluster.SnapshotInfo, error)
}

// Config configures the API server.
type Config struct {
	Node   Node
	Policy *token.Policy
	Format *token.Format
	Hasher token.Hasher
	// Nonces, when set, serves POST /v1/nonces.
	Nonces NonceChecker
	// Keys, when set, are required on every /v1 request.
	Keys   *Keys
	DC     string
	Logger *slog.Logger
	// Registry receives the API's metrics; Gatherer serves /metrics.
	Registry prometheus.Registerer
	Gatherer prometheus.Gatherer
	// WriteTimeout bounds a write's wait for Raft; default 10s.
	WriteTimeout time.Duration
	// MinIndexWait bounds a local read's wait for min_index; default 2s.
	MinIndexWait time.Duration
	// RotationGrace is how long a retried rotation of the same refresh
	// token gets the same successor instead of revoking the family; 0: off.
	RotationGrace time.Duration
	// Authz configures Envoy external authorization.
	Authz AuthzConfig
	// Now is the reader's clock; default time.Now.
	Now func() time.Time
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *httpMetrics
	authz   http.Handler
	dc      []string // the DC header's value; nil without a DC
}

// New returns the API server for cfg.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MinIndexWait == 0 {
		cfg.MinIndexWait = 2 * time.Second
	}
	cfg.Authz.setDefaults()
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), metrics: newHTTPMetrics(cfg.Registry)}
	if cfg.DC != "" {
		s.dc = []string{cfg.DC}
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.handle("POST /v1/tokens", s.issue)
	s.handle("POST /v1/tokens/lookup", s.lookup)
	s.handle("POST /v1/tokens/consume", s.consume)
	s.handle("POST /v1/tokens/revoke", s.revoke)
	s.handle("POST /v1/tokens/rotate", s.rotate)
	s.handle("GET /v1/tokens/{id}", s.getByID)
	s.handle("DELETE /v1/tokens/{id}", s.revokeByID)
	s.handle("GET /v1/tokens", s.list)
	s.handle("POST /v1/subjects/{subject}/revoke", s.revokeSubject)
	s.handle("POST /v1/families/{family}/revoke", s.revokeFamily)
	s.handle("POST /v1/batch", s.batch)
	if s.cfg.Nonces != nil {
		s.handle("POST /v1/nonces", s.checkNonce)
	}
	s.handle("POST /v1/introspect", s.introspect)
	// Every method: Envoy sends the original request's. Authorization is
	// the end user's here, so the caller's key comes in its own header.
	// ServeHTTP sends the checks here before the mux sees their paths.
	s.authz = s.withKey(AuthzPrefix+"/", apiKeyHeader, s.authzEnvoy)
	s.handle("GET /v1/cluster", s.clusterStatus)
	s.handle("POST /v1/operator/snapshot", s.operatorSnapshot)
	s.handle("GET /v1/openapi.json", s.openapi)
	s.open("/", s.noRoute)
	s.open("GET /healthz", func(w http.ResponseWriter, r *http.Request) *Error {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	})
	s.open("GET /readyz", func(w http.ResponseWriter, r *http.Request) *Error {
		if err := s.cfg.Node.Ready(); err != nil {
			return unavailable(wire.CodeUnavailable, "Not ready: "+err.Error())
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return nil
	})
	if s.cfg.Gatherer != nil {
		metrics := promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{})
		s.open("GET /metrics", func(w http.ResponseWriter, r *http.Request) *Error {
			metrics.ServeHTTP(w, r)
			return nil
		})
	}
}

// noRoute answers what no route matched: 405 with Allow when the path
// exists under other methods, else 404.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) *Error {
	if name, ok := strings.CutPrefix(r.URL.Path, "/v1/tokens/"); ok && tokenActions[name] {
		return actionMethod(w, r) // not the {id} routes' methods
	}
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host}
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		return errorf(http.StatusNotFound, wire.CodeRouteNotFound, "No route for %s %s.", r.Method, r.URL.Path)
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	return errorf(http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed, "%s %s is not allowed; use %s.", r.Method, r.URL.Path, strings.Join(allow, " or "))
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, AuthzPrefix+"/") {
		s.authz.ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// handlerFunc is a handler that returns its failure instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) *Error

type ctxKey struct{}

// caller returns the name of the API key that authenticated r, if any.
func caller(r *http.Request) string {
	name, _ := r.Context().Value(ctxKey{}).(string)
	return name
}

// handle registers an authenticated /v1 route.
func (s *Server) handle(pattern string, h handlerFunc) {
	s.mux.Handle(pattern, s.withKey(pattern, authorizationHeader, h))
}

// A keySource finds the API key in a request, and says where for people.
type keySource struct {
	find  func(*http.Request) (string, bool)
	where string
}

var (
	authorizationHeader = keySource{func(r *http.Request) (string, bool) { return bearerToken(r.Header.Get("Authorization")) },
		"Authorization: Bearer <key>"}
	apiKeyHeader = keySource{func(r *http.Request) (string, bool) { v := r.Header.Get(wire.HeaderAPIKey); return v, v != "" },
		wire.HeaderAPIKey + ": <key>"}
)

// withKey returns the handler of a route that needs an API key (when keys
// are configured), found by src.
func (s *Server) withKey(route string, src keySource, h handlerFunc) http.Handler {
	return s.wrap(route, func(w http.ResponseWriter, r *http.Request) *Error {
		if s.cfg.Keys != nil {
			key, ok := src.find(r)
			name, match := s.cfg.Keys.Match(key)
			if !ok || !match {
				return &Error{Status: http.StatusUnauthorized, Code: wire.CodeUnauthorized, Challenge: `Bearer realm="tokenstore"`,
					Message: "A valid API key is required (" + src.where + ")."}
			}
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, name))
		}
		return h(w, r)
	})
}

// RequireKey returns h behind the check of the /v1 routes, for handlers
// served beside the API (profiles): when keys are configured, a request
// without a valid Authorization: Bearer key is answered 401. route names
// it in the metrics.
func (s *Server) RequireKey(route string, h http.Handler) http.Handler {
	return s.withKey(route, authorizationHeader, func(w http.ResponseWriter, r *http.Request) *Error {
		h.ServeHTTP(w, r)
		return nil
	})
}

// open registers a route that needs no API key (health, metrics).
func (s *Server) open(pattern string, h handlerFunc) { s.mux.Handle(pattern, s.wrap(pattern, h)) }

// wrap adds what every response gets: the index and DC headers, the JSON
// error body, metrics, and a recover that turns a handler bug into a 500
// instead of a dropped connection.
func (s *Server) wrap(route string, h handlerFunc) http.Handler {
	metrics := s.metrics.route(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		hdr := sw.Header()
		hdr[headerIndex] = []string{strconv.FormatUint(s.cfg.Node.AppliedIndex(), 10)}
		if s.dc != nil {
			hdr[headerDC] = s.dc
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panic", "route", route, "panic", p)
				if !sw.wrote {
					writeError(sw, errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error"))
				}
			}
			metrics.observe(sw.status, time.Since(start))
		}()
		if e := h(sw, r); e != nil {
			if e.Status == http.StatusInternalServerError {
				s.log.Error("request failed", "route", route, "code", e.Code, "msg", e.Message)
			}
			writeError(sw, e)
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	reuse    *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	f := promauto.With(reg)
	return &httpMetrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenstore_http_requests_total",
			Help: "API requests by route and status code.",
		}, []string{"route", "code"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenstore_http_request_duration_seconds",
			Help:    "API request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"route"}),
		reuse: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenstore_token_reuse_detected_total",
			Help: "Consumed codes and refresh tokens presented again (each revoked its family), by kind.",
		}, []string{"kind"}),
	}
}

// routeMetrics are one route's series, found once: finding a series by
// its label values hashes them under the vector's lock, a tenth of the
// API's own cost of a lookup when done for every request.
type routeMetrics struct {
	m       *httpMetrics
	route   string
	latency prometheus.Observer
	// byStatus holds the request counter of each status code seen.
	byStatus [600]atomic.Pointer[prometheus.Counter]
}

func (m *httpMetrics) route(route string) *routeMetrics {
	return &routeMetrics{m: m, route: route, latency: m.latency.WithLabelValues(route)}
}

func (rm *routeMetrics) observe(status int, d time.Duration) {
	rm.latency.Observe(d.Seconds())
	if status < 0 || status >= len(rm.byStatus) {
		rm.m.requests.WithLabelValues(rm.route, strconv.Itoa(status)).Inc()
		return
	}
	c := rm.byStatus[status].Load()
	if c == nil {
		n := rm.m.requests.WithLabelValues(rm.route, strconv.Itoa(status))
		c = &n
		rm.byStatus[status].Store(c)
	}
	(*c).Inc()
}

// The headers every answer or every read carries, in the canonical form
// Header.Set would give them, set without it. A header's values set from
// a shared slice are only read by net/http.
var (
	headerIndex       = http.CanonicalHeaderKey(wire.HeaderIndex)
	headerDC          = http.CanonicalHeaderKey(wire.HeaderDC)
	headerLastContact = http.CanonicalHeaderKey(wire.HeaderLastContact)
	headerKnownLeader = http.CanonicalHeaderKey(wire.HeaderKnownLeader)
	knownLeader       = map[bool][]string{true: {"true"}, false: {"false"}}
)

// contactHeaders tells, on a local read, how fresh the replica is.
func (s *Server) contactHeaders(w http.ResponseWriter) {
	since, known := s.cfg.Node.LeaderContact()
	h := w.Header()
	h[headerLastContact] = []string{strconv.FormatInt(since.Milliseconds(), 10)}
	h[headerKnownLeader] = knownLeader[known]
}

// operatorSnapshot takes a Raft snapshot of this node's state now, as
// `consul snapshot save` or `etcdctl snapshot save` would before a backup
// or a maintenance, and answers its last index, size and time once it is
// on disk. A node that applied nothing since its last snapshot answers
// 409 nothing_to_snapshot.
func (s *Server) operatorSnapshot(w http.ResponseWriter, r *http.Request) *Error {
	info, err := s.cfg.Node.Snapshot()
	switch {
	case errors.Is(err, cluster.ErrNothingNewToSnapshot):
		return errorf(http.StatusConflict, wire.CodeNothingToSnapshot, "Nothing was applied since the last snapshot.")
	case err != nil:
		return unavailable(wire.CodeUnavailable, "Snapshot: "+err.Error())
	}
	writeJSON(w, http.StatusOK, wire.SnapshotResponse{Index: info.Index, Bytes: info.Bytes, TookMS: info.Took.Milliseconds()})
	return nil
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) *Error {
	st := s.cfg.Node.ClusterStatus(r.Context())
	out := wire.ClusterResponse{Leader: st.Leader, PrimaryDC: st.PrimaryDC, PreferredPrimaryDC: st.PreferredPrimaryDC,
		Nodes: make([]wire.ClusterNode, len(st.Nodes))}
	for i, n := range st.Nodes {
		out.Nodes[i] = wire.ClusterNode{ID: n.ID, DC: n.DC, Role: n.Role, APIAddr: n.APIAddr, RaftAddr: n.RaftAddr,
			AppliedIndex: n.AppliedIndex, Lag: n.Lag, Healthy: n.Healthy}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
