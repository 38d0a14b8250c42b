package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// PrimarySource tells the router which datacenter is the primary one.
type PrimarySource interface {
	// PrimaryDC returns the primary DC, or false while it is not known.
	PrimaryDC() (string, bool)
}

// StaticPrimary is a primary DC fixed by configuration.
type StaticPrimary string

// PrimaryDC implements PrimarySource.
func (s StaticPrimary) PrimaryDC() (string, bool) { return string(s), s != "" }

// WatcherConfig configures a ClusterWatcher.
type WatcherConfig struct {
	// URLs are token store nodes' API base URLs; each poll tries them in
	// turn, starting with the last one that answered.
	URLs []string
	// Token, when set, is sent as a bearer API key (GET /v1/cluster needs
	// one when the store has --api-keys).
	Token string
	// Interval between polls (default 2s). Each request is bounded by
	// the interval, at least 500ms and at most 5s.
	Interval time.Duration
	Client   *http.Client
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// ClusterWatcher follows the token store cluster: the primary DC is the
// leader's DC, read from GET /v1/cluster. While no node answers (or the
// cluster has no leader) the last known primary is kept.
type ClusterWatcher struct {
	cfg     WatcherConfig
	log     *slog.Logger
	primary atomic.Pointer[string]
	mu      sync.Mutex // serialises polls
	next    int        // index of the URL to try first
	failing bool       // the last poll failed (logged once per outage)

	errors  prometheus.Counter
	changes prometheus.Counter
	dcGauge *prometheus.GaugeVec
}

// NewClusterWatcher returns a watcher; call Run (or Refresh) to poll.
func NewClusterWatcher(cfg WatcherConfig) (*ClusterWatcher, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("routing: no token store URL to watch")
	}
	for i, u := range cfg.URLs {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("routing: token store URL %q: want http:// or https://", u)
		}
		cfg.URLs[i] = u
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Client == nil {
		timeout := min(max(cfg.Interval, 500*time.Millisecond), 5*time.Second)
		cfg.Client = &http.Client{Timeout: timeout, Transport: &http.Transport{
			Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: timeout,
		}}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	f := promauto.With(cfg.Registry)
	return &ClusterWatcher{
		cfg: cfg, log: cfg.Logger,
		errors: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_route_primary_poll_errors_total",
			Help: "Polls of the token store cluster that no node answered usably.",
		}),
		changes: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_route_primary_changes_total",
			Help: "Times the primary DC learned from the token store changed.",
		}),
		dcGauge: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenstore_route_primary_dc",
			Help: "1 for the DC the router currently takes as primary.",
		}, []string{"dc"}),
	}, nil
}

// PrimaryDC implements PrimarySource.
func (w *ClusterWatcher) PrimaryDC() (string, bool) {
	if p := w.primary.Load(); p != nil {
		return *p, true
	}
	return "", false
}

// Run polls until ctx ends, starting at once.
func (w *ClusterWatcher) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		w.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh polls once: the first node that answers with a primary DC sets
// it. On failure the last known value stays and the error is returned.
func (w *ClusterWatcher) Refresh(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	n := len(w.cfg.URLs)
	for k := range n {
		i := (w.next + k) % n
		dc, err := w.fetch(ctx, w.cfg.URLs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		w.next = i
		if w.failing {
			w.failing = false
			w.log.Info("token store cluster answering again", "url", w.cfg.URLs[i])
		}
		w.set(dc, w.cfg.URLs[i])
		return nil
	}
	err := errors.Join(errs...)
	w.errors.Inc()
	if !w.failing {
		w.failing = true
		last, known := w.PrimaryDC()
		w.log.Warn("cannot learn the primary DC from the token store; keeping the last known", "primary_dc", last, "known", known, "err", err)
	}
	return err
}

func (w *ClusterWatcher) set(dc, from string) {
	old, known := w.PrimaryDC()
	if known && old == dc {
		return
	}
	w.primary.Store(&dc)
	if known {
		w.changes.Inc()
		w.dcGauge.WithLabelValues(old).Set(0)
		w.log.Info("primary DC changed", "from", old, "to", dc, "source", from)
	} else {
		w.log.Info("primary DC learned", "primary_dc", dc, "source", from)
	}
	w.dcGauge.WithLabelValues(dc).Set(1)
}

// clusterView is the part of GET /v1/cluster the router reads.
type clusterView struct {
	Leader    string `json:"leader"`
	PrimaryDC string `json:"primary_dc"`
	Nodes     []struct {
		ID   string `json:"id"`
		DC   string `json:"dc"`
		Role string `json:"role"`
	} `json:"nodes"`
}

func (w *ClusterWatcher) fetch(ctx context.Context, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/cluster", nil)
	if err != nil {
		return "", err
	}
	if w.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+w.cfg.Token)
	}
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("%s: %w", base, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return "", fmt.Errorf("%s/v1/cluster: %s (give an API key with --tokenstore-token)", base, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("%s/v1/cluster: %s", base, resp.Status)
	}
	var v clusterView
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("%s/v1/cluster: %w", base, err)
	}
	if v.PrimaryDC != "" {
		return v.PrimaryDC, nil
	}
	for _, n := range v.Nodes {
		if n.DC != "" && (n.Role == "leader" || (v.Leader != "" && n.ID == v.Leader)) {
			return n.DC, nil
		}
	}
	return "", fmt.Errorf("%s/v1/cluster: no leader, so no primary DC", base)
}
