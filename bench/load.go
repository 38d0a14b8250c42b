// Package bench measures a running token store from the outside, through
// the same Go client application servers use.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/nonce"
)

// Config describes one closed-loop run: Clients workers, each sending its
// next request when the last one is answered, for Duration.
type Config struct {
	// Addr is one node's API address, or several comma-separated: workers
	// are spread over them round-robin.
	Addr     string
	APIKey   string
	Workload string // one of Workloads
	Clients  int
	Duration time.Duration
	// Tokens is how many tokens consume and lookup issue before measuring.
	Tokens int
	// Memcached is the server the "memcached" workload adds to directly,
	// the peer of the "nonce" workload (which goes through the API).
	Memcached string
}

// Workloads lists what Run can drive.
var Workloads = []string{"issue", "consume", "rotate", "lookup", "introspect", "nonce", "memcached"}

// Result is what a run measured.
type Result struct {
	Workload string        `json:"workload"`
	Clients  int           `json:"clients"`
	Ops      int           `json:"ops"`
	Errors   int           `json:"errors"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	OpsPerS  float64       `json:"ops_per_s"`
	P50      time.Duration `json:"p50_ns"`
	P90      time.Duration `json:"p90_ns"`
	P99      time.Duration `json:"p99_ns"`
	P999     time.Duration `json:"p999_ns"`
	Max      time.Duration `json:"max_ns"`
	// FirstError is a sample of what failed, if anything did.
	FirstError string `json:"first_error,omitempty"`

	samples []time.Duration // sorted latencies, for Merge
}

func (r *Result) String() string {
	return fmt.Sprintf("%-8s clients=%d ops=%d errors=%d elapsed=%s  %.0f ops/s  p50=%s p90=%s p99=%s p99.9=%s max=%s",
		r.Workload, r.Clients, r.Ops, r.Errors, r.Elapsed.Round(time.Millisecond), r.OpsPerS,
		r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond),
		r.P999.Round(time.Microsecond), r.Max.Round(time.Microsecond))
}

// Run drives the workload and reports latency percentiles. Progress lines
// go to progress once a second.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	if cfg.Clients < 1 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("bench: need clients >= 1 and a positive duration")
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: cfg.Clients * 2, MaxIdleConnsPerHost: cfg.Clients * 2, IdleConnTimeout: time.Minute,
	}}
	var cs nodes
	for _, addr := range strings.Split(cfg.Addr, ",") {
		cs = append(cs, client.New(strings.TrimSpace(addr), client.WithAPIKey(cfg.APIKey), client.WithHTTPClient(hc)))
	}
	op, err := prepare(ctx, cs, cfg, progress)
	if err != nil {
		return nil, err
	}

	return measure(ctx, cfg.Workload, cfg.Clients, cfg.Duration, op, progress), nil
}

// measure runs op from clients closed-loop workers for duration and
// reports latency percentiles; op returning errExhausted ends a worker.
func measure(ctx context.Context, name string, clients int, duration time.Duration,
	op func(ctx context.Context, worker int) error, progress io.Writer) *Result {
	var (
		done     atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
		lat      = make([][]time.Duration, clients)
	)
	runCtx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	stopProgress := reportProgress(runCtx, progress, name, &done)
	start := time.Now()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				t := time.Now()
				err := op(runCtx, w)
				if errors.Is(err, errExhausted) {
					return
				}
				if runCtx.Err() != nil {
					return // cut off by the deadline: neither success nor failure
				}
				lat[w] = append(lat[w], time.Since(t))
				done.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	r := &Result{Workload: name, Clients: clients, Errors: int(failures.Load()), Elapsed: elapsed}
	if fe, ok := firstErr.Load().(string); ok {
		r.FirstError = fe
	}
	r.summarize(slices.Concat(lat...))
	return r
}

// summarize fills in the counts and percentiles from the latencies.
func (r *Result) summarize(all []time.Duration) {
	slices.Sort(all)
	r.samples, r.Ops = all, len(all)
	if len(all) > 0 {
		r.OpsPerS = float64(len(all)) / r.Elapsed.Seconds()
		r.P50, r.P90, r.P99, r.P999 = pct(all, 50), pct(all, 90), pct(all, 99), pct(all, 99.9)
		r.Max = all[len(all)-1]
	}
}

// Merge combines runs of one workload (alternated with another, say)
// into one result: percentiles over all samples, throughput over the
// summed time.
func Merge(rs []*Result) *Result {
	if len(rs) == 0 {
		return &Result{}
	}
	m := &Result{Workload: rs[0].Workload, Clients: rs[0].Clients}
	var all [][]time.Duration
	for _, r := range rs {
		m.Errors += r.Errors
		m.Elapsed += r.Elapsed
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		all = append(all, r.samples)
	}
	m.summarize(slices.Concat(all...))
	return m
}

var errExhausted = errors.New("no pre-issued tokens left")

// nodes are the clients of the nodes a run drives, one per address.
type nodes []*client.Client

// of returns the client worker w uses.
func (cs nodes) of(w int) *client.Client { return cs[w%len(cs)] }

// onceEach returns an operation that hands each token to op once, until
// they run out.
func (cs nodes) onceEach(toks []string, op func(ctx context.Context, c *client.Client, tok string) error) func(ctx context.Context, w int) error {
	var next atomic.Int64
	return func(ctx context.Context, w int) error {
		i := next.Add(1) - 1
		if int(i) >= len(toks) {
			return errExhausted
		}
		return op(ctx, cs.of(w), toks[i])
	}
}

// runID makes nonces unique across runs within their TTL.
func runID() string { return strconv.FormatInt(time.Now().UnixNano(), 36) }

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// prepare issues what the workload needs and returns the operation.
func prepare(ctx context.Context, cs nodes, cfg Config, progress io.Writer) (func(ctx context.Context, worker int) error, error) {
	switch cfg.Workload {
	case "issue":
		return func(ctx context.Context, w int) error {
			_, err := cs.of(w).Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "bench", TTL: "1h"})
			return err
		}, nil
	case "consume":
		toks, err := preissue(ctx, cs, cfg, "oauth2_code", progress)
		if err != nil {
			return nil, err
		}
		return cs.onceEach(toks, func(ctx context.Context, c *client.Client, tok string) error {
			_, err := c.Consume(ctx, wire.ConsumeRequest{Token: tok})
			return err
		}), nil
	case "rotate":
		// Each operation rotates a fresh refresh token and takes an
		// access token with its successor: the refresh grant's write.
		toks, err := preissue(ctx, cs, cfg, "oauth2_refresh", progress)
		if err != nil {
			return nil, err
		}
		return cs.onceEach(toks, func(ctx context.Context, c *client.Client, tok string) error {
			_, err := c.Rotate(ctx, wire.RotateRequest{Token: tok, Access: &wire.AccessRequest{}})
			return err
		}), nil
	case "lookup", "introspect":
		toks, err := preissue(ctx, cs, cfg, "access", progress)
		if err != nil {
			return nil, err
		}
		var next atomic.Int64
		return func(ctx context.Context, w int) error {
			tok := toks[int(next.Add(1))%len(toks)]
			if cfg.Workload == "introspect" {
				r, err := cs.of(w).Introspect(ctx, tok)
				if err == nil && !r.Active {
					err = fmt.Errorf("bench: an issued token introspects inactive")
				}
				return err
			}
			_, _, err := cs.of(w).Lookup(ctx, tok, client.LookupOptions{})
			return err
		}, nil
	case "nonce":
		run, seq := runID(), atomic.Int64{}
		return func(ctx context.Context, w int) error {
			return cs.of(w).CheckNonce(ctx, "bench", fmt.Sprint(run, "-", seq.Add(1)), time.Now().Unix())
		}, nil
	case "memcached":
		// The same add a node makes for a nonce, straight from this client.
		if cfg.Memcached == "" {
			return nil, fmt.Errorf("bench: the memcached workload needs --memcached host:port")
		}
		mc := memcache.New(cfg.Memcached)
		mc.MaxIdleConns = cfg.Clients
		mc.Timeout = time.Second
		run, seq := runID(), atomic.Int64{}
		return func(ctx context.Context, w int) error {
			key := nonce.Key("bench", "bench", fmt.Sprint(run, "-", seq.Add(1)))
			return mc.Add(&memcache.Item{Key: key, Value: []byte{'1'}, Expiration: 301})
		}, nil
	}
	return nil, fmt.Errorf("bench: unknown workload %q (want one of %v)", cfg.Workload, Workloads)
}

// preissue issues cfg.Tokens tokens of kind with cfg.Clients workers.
func preissue(ctx context.Context, cs nodes, cfg Config, kind string, progress io.Writer) ([]string, error) {
	if cfg.Tokens < 1 {
		return nil, fmt.Errorf("bench: %s needs --tokens >= 1", cfg.Workload)
	}
	fmt.Fprintf(progress, "issuing %d %s tokens...\n", cfg.Tokens, kind)
	toks := make([]string, cfg.Tokens)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Clients)
	for w := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(toks); i = int(next.Add(1) - 1) {
				res, err := cs.of(w).Issue(ctx, wire.IssueRequest{Kind: kind, Subject: "bench"})
				if err != nil {
					errs <- fmt.Errorf("bench: pre-issue: %w", err)
					return
				}
				toks[i] = res.Token
			}
		}()
	}
	wg.Wait()
	close(errs)
	return toks, <-errs
}

func reportProgress(ctx context.Context, w io.Writer, name string, done *atomic.Int64) func() {
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				n := done.Load()
				fmt.Fprintf(w, "  %s: %d ops, %d ops/s\n", name, n, n-last)
				last = n
			}
		}
	}()
	return func() { close(stop); <-finished }
}
