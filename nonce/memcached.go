package nonce

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// MemcachedConfig configures the memcached backend.
type MemcachedConfig struct {
	Servers []string      // host:port; keys are spread by the client's selector
	Timeout time.Duration // per operation; default 250ms
	// Failures, Cooldown and MaxCooldown drive the breaker: after Failures
	// consecutive failures the backend answers ErrUnavailable at once for
	// Cooldown (doubling up to MaxCooldown while probes keep failing),
	// then lets one probe through. MaxCooldown bounds how long checks keep
	// failing after memcached is back.
	Failures    int           // default 3
	Cooldown    time.Duration // default 250ms
	MaxCooldown time.Duration // default 1s
	Registry    prometheus.Registerer
}

// Memcached is a Backend on memcached's add: NOT_STORED means the key exists.
//
// It keeps one client, with its own idle pool, per server: a connection
// error drops that server's idle connections, which a restart of memcached
// has left dead. Kept, each would fail one breaker probe in turn, and the
// store would answer ErrUnavailable for minutes after memcached is back.
type Memcached struct {
	servers memcache.ServerSelector     // key placement over all servers
	clients map[string]*memcache.Client // by server address
	br      *breaker
	latency *prometheus.HistogramVec
	drops   prometheus.Counter
}

// NewMemcached returns a backend on the given servers. It does not connect
// until the first Add.
func NewMemcached(cfg MemcachedConfig) (*Memcached, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("memcached: no servers")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 250 * time.Millisecond
	}
	if cfg.Failures <= 0 {
		cfg.Failures = 3
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 250 * time.Millisecond
	}
	if cfg.MaxCooldown < cfg.Cooldown {
		cfg.MaxCooldown = max(cfg.Cooldown, time.Second)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	ss := new(memcache.ServerList)
	if err := ss.SetServers(cfg.Servers...); err != nil {
		return nil, fmt.Errorf("memcached servers %v: %w", cfg.Servers, err)
	}
	clients := map[string]*memcache.Client{}
	ss.Each(func(addr net.Addr) error {
		mc := memcache.NewFromSelector(oneServer{addr})
		mc.Timeout = cfg.Timeout
		mc.MaxIdleConns = 64
		clients[addr.String()] = mc
		return nil
	})
	f := promauto.With(cfg.Registry)
	m := &Memcached{
		servers: ss,
		clients: clients,
		br:      &breaker{threshold: cfg.Failures, base: cfg.Cooldown, max: cfg.MaxCooldown, now: time.Now},
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenstore_memcached_duration_seconds",
			Help:    "memcached add latency by result (stored, not_stored, error).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}, []string{"result"}),
		drops: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_memcached_pool_drops_total",
			Help: "Times a connection error dropped a memcached server's idle connections.",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_memcached_breaker_state",
		Help: "Nonce store breaker: 0 closed, 1 open, 2 half-open (probing).",
	}, func() float64 { return float64(m.br.current()) })
	return m, nil
}

// Add implements Backend.
func (m *Memcached) Add(key string, ttl time.Duration) (bool, error) {
	if !m.br.allow() {
		return false, fmt.Errorf("%w: memcached breaker open", ErrUnavailable)
	}
	secs := int32(min(math.Ceil(ttl.Seconds()), 30*24*3600-1)) // beyond 30 days memcached reads a date
	start := time.Now()
	err := m.add(&memcache.Item{Key: key, Value: []byte{'1'}, Expiration: max(secs, 1)})
	switch {
	case err == nil:
		m.latency.WithLabelValues("stored").Observe(time.Since(start).Seconds())
		m.br.succeeded()
		return true, nil
	case errors.Is(err, memcache.ErrNotStored):
		m.latency.WithLabelValues("not_stored").Observe(time.Since(start).Seconds())
		m.br.succeeded()
		return false, nil
	}
	m.latency.WithLabelValues("error").Observe(time.Since(start).Seconds())
	m.br.failed()
	return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// add sends the item to its server's client and, on a connection error,
// closes that client's idle connections: the next request dials afresh.
func (m *Memcached) add(it *memcache.Item) error {
	addr, err := m.servers.PickServer(it.Key)
	if err != nil {
		return err
	}
	mc := m.clients[addr.String()]
	if mc == nil {
		return fmt.Errorf("memcached: no client for server %s", addr)
	}
	err = mc.Add(it)
	if connError(err) {
		mc.Close() // only idle connections; the client stays usable
		m.drops.Inc()
	}
	return err
}

// connError reports whether err says the connection or the server is gone
// (refused, reset, closed, timed out), rather than an answer from a live
// server such as NOT_STORED or SERVER_ERROR, after which idle connections
// are still good.
func connError(err error) bool {
	var ne net.Error
	var cte *memcache.ConnectTimeoutError
	if errors.As(err, &cte) {
		return true
	}
	// A read or write that timed out was on a live but slow server: its
	// other connections are as good as they were.
	return errors.As(err, &ne) && !ne.Timeout() ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// oneServer is the selector of one server's client.
type oneServer struct{ addr net.Addr }

func (s oneServer) PickServer(string) (net.Addr, error) { return s.addr, nil }
func (s oneServer) Each(f func(net.Addr) error) error   { return f(s.addr) }

type breakerState int

const (
	closed breakerState = iota
	open
	halfOpen
)

// breaker fails fast while memcached is down, so a dead server costs
// requests nothing, and lets one probe through per cooldown to notice
// recovery without a restart.
type breaker struct {
	mu        sync.Mutex
	threshold int
	base, max time.Duration
	now       func() time.Time

	state    breakerState
	fails    int
	cooldown time.Duration
	until    time.Time // open until
}

func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case open:
		if b.now().Before(b.until) {
			return false
		}
		b.state = halfOpen // this caller is the probe
		return true
	case halfOpen:
		return false // a probe is under way
	}
	return true
}

func (b *breaker) succeeded() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.fails, b.cooldown = closed, 0, 0
}

func (b *breaker) failed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fails++
	switch {
	case b.state == halfOpen:
		b.cooldown = min(b.cooldown*2, b.max)
	case b.fails >= b.threshold:
		b.cooldown = b.base
	default:
		return
	}
	b.state, b.until = open, b.now().Add(b.cooldown)
}

func (b *breaker) current() breakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}
