package nonce

import (
	"errors"
	"fmt"
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
// Keys are placed on the servers by gomemcache's selector, as they always
// have been, so nodes of every release agree on a nonce's server; each
// server's adds go through a pipeline (pipeline.go).
type Memcached struct {
	servers   memcache.ServerSelector // key placement over all servers
	pipelines map[string]*pipeline    // by server address
	br        *breaker
	latency   *prometheus.HistogramVec
	drops     prometheus.Counter
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
	f := promauto.With(cfg.Registry)
	m := &Memcached{
		servers:   ss,
		pipelines: map[string]*pipeline{},
		br:        &breaker{threshold: cfg.Failures, base: cfg.Cooldown, max: cfg.MaxCooldown, now: time.Now},
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenstore_memcached_duration_seconds",
			Help:    "memcached add latency by result (stored, not_stored, error).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}, []string{"result"}),
		drops: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_memcached_pool_drops_total",
			Help: "memcached connections that failed (refused, reset, timed out, out of protocol).",
		}),
	}
	ss.Each(func(addr net.Addr) error {
		m.pipelines[addr.String()] = newPipeline(addr.String(), cfg.Timeout, m.drops.Inc)
		return nil
	})
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
	stored, err := m.add(key, max(secs, 1))
	switch {
	case err == nil && stored:
		m.latency.WithLabelValues("stored").Observe(time.Since(start).Seconds())
		m.br.succeeded()
		return true, nil
	case err == nil:
		m.latency.WithLabelValues("not_stored").Observe(time.Since(start).Seconds())
		m.br.succeeded()
		return false, nil
	}
	m.latency.WithLabelValues("error").Observe(time.Since(start).Seconds())
	if !errors.Is(err, errPipeFull) {
		// A pipeline full of adds is a burst on a server that answers,
		// not a server down: it fails this add, and opens no breaker.
		m.br.failed()
	}
	return false, fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// add sends the add to its server's pipeline.
func (m *Memcached) add(key string, exp int32) (bool, error) {
	addr, err := m.servers.PickServer(key)
	if err != nil {
		return false, err
	}
	p := m.pipelines[addr.String()]
	if p == nil {
		return false, fmt.Errorf("memcached: no connection for server %s", addr)
	}
	return p.add(key, exp)
}

// Close closes the connections to every server; adds under way fail.
func (m *Memcached) Close() error {
	for _, p := range m.pipelines {
		p.close()
	}
	return nil
}

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
