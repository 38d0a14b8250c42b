// Package load is the load driver: it measures a running token store
// from the outside, through the same Go client application servers use,
// and any other system behind a Target, with one driver loop (closed, or
// open at a fixed rate) and HDR latency histograms. Its workloads are
// tokenstore's operations and an OAuth authorization-code flow; its Report
// writes a table, JSON, markdown and latency and throughput plots.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

var (
	// ErrUnsupported is answered by a Target for an operation its system
	// has no equivalent of.
	ErrUnsupported = errors.New("bench: operation not supported by this system")
	// ErrExists is a put-if-absent or add() that found the key.
	ErrExists = errors.New("bench: key exists")
	// ErrNotFound is a consume or lookup of a missing key.
	ErrNotFound = errors.New("bench: key not found")
	// errExhausted ends a worker: the pre-issued tokens ran out.
	errExhausted = errors.New("bench: no pre-issued tokens left")
)

// Load is how a workload is driven. With Rate zero it is a closed loop:
// Clients workers, each sending its next request when the last one is
// answered. With Rate set it is an open loop: requests are sent at fixed
// intended times, Rate per second in total, whether or not earlier ones
// were answered, and latency runs from the intended send time, so a
// system that falls behind shows its backlog (no coordinated omission).
type Load struct {
	Clients  int
	Duration time.Duration
	Rate     float64
	// MaxInFlight bounds the requests outstanding in an open loop; a
	// send that finds the bound reached is dropped and counted as an
	// error. Default: 16 × Clients.
	MaxInFlight int
}

// Validate reports a load that cannot be driven.
func (l Load) Validate() error {
	if l.Clients < 1 || l.Duration <= 0 || l.Rate < 0 {
		return fmt.Errorf("bench: need clients >= 1, a positive duration and a rate >= 0")
	}
	return nil
}

// Result is what a run of one workload on one system measured.
type Result struct {
	System   string        `json:"system"`
	Workload string        `json:"workload"`
	Mode     string        `json:"mode"` // closed or open
	Clients  int           `json:"clients"`
	Rate     float64       `json:"rate,omitempty"`
	Live     int           `json:"live_tokens,omitempty"` // tokens issued before measuring
	Ops      int           `json:"ops"`
	Errors   int           `json:"errors"`
	Dropped  int           `json:"dropped,omitempty"` // open loop: sends over --max-inflight, in Errors
	Elapsed  time.Duration `json:"elapsed_ns"`
	OpsPerS  float64       `json:"ops_per_s"`
	P50      time.Duration `json:"p50_ns"`
	P90      time.Duration `json:"p90_ns"`
	P99      time.Duration `json:"p99_ns"`
	P999     time.Duration `json:"p999_ns"`
	Max      time.Duration `json:"max_ns"`
	// FirstError is a sample of what failed, if anything did.
	FirstError string `json:"first_error,omitempty"`
	// PerSecond is the completions in each second of the run.
	PerSecond []int64 `json:"per_second,omitempty"`
	// CDF is the latency distribution, for plots.
	CDF []CDFPoint `json:"cdf,omitempty"`
	// Steps are the parts of a composite operation (oauth), each with
	// its own latencies.
	Steps []*Result `json:"steps,omitempty"`
	// ServerCPU is what the system's server processes spent on CPU in
	// the timed window; nil where it was not measured.
	ServerCPU *ServerCPU `json:"server_cpu,omitempty"`

	hist *hdrhistogram.Histogram // for Merge
}

// CDFPoint is one point of a latency distribution.
type CDFPoint struct {
	Percentile float64       `json:"percentile"`
	Latency    time.Duration `json:"latency_ns"`
}

func (r *Result) String() string {
	s := fmt.Sprintf("%-8s clients=%d ops=%d errors=%d elapsed=%s  %.0f ops/s  p50=%s p90=%s p99=%s p99.9=%s max=%s",
		r.Workload, r.Clients, r.Ops, r.Errors, r.Elapsed.Round(time.Millisecond), r.OpsPerS,
		r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond),
		r.P999.Round(time.Microsecond), r.Max.Round(time.Microsecond))
	if r.FirstError != "" {
		s += fmt.Sprintf(" first_error=%q", r.FirstError)
	}
	return s
}

// summarize fills in the counts and percentiles from h.
func (r *Result) summarize(h *hdrhistogram.Histogram) {
	r.hist, r.Ops = h, int(h.TotalCount())
	if r.Ops == 0 {
		return
	}
	if r.Elapsed > 0 {
		r.OpsPerS = float64(r.Ops) / r.Elapsed.Seconds()
	}
	r.P50, r.P90, r.P99, r.P999 = at(h, 50), at(h, 90), at(h, 99), at(h, 99.9)
	r.Max = time.Duration(h.Max()) * time.Microsecond
	r.CDF = nil
	for _, b := range h.CumulativeDistributionWithTicks(5) {
		r.CDF = append(r.CDF, CDFPoint{Percentile: b.Quantile, Latency: time.Duration(b.ValueAt) * time.Microsecond})
	}
}

// Merge combines runs of one workload (alternated with another, say)
// into one result: percentiles over all samples, throughput over the
// summed time.
func Merge(rs []*Result) *Result {
	if len(rs) == 0 {
		return &Result{}
	}
	m := &Result{System: rs[0].System, Workload: rs[0].Workload, Mode: rs[0].Mode, Clients: rs[0].Clients, Rate: rs[0].Rate}
	h := hdrhistogram.New(histLowest, histHighest, histDigits)
	for _, r := range rs {
		m.Errors += r.Errors
		m.Dropped += r.Dropped
		m.Elapsed += r.Elapsed
		m.PerSecond = append(m.PerSecond, r.PerSecond...)
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		if r.hist != nil {
			h.Merge(r.hist)
		}
	}
	m.summarize(h)
	return m
}

// Op is one operation of a workload; worker spreads work (which
// pre-issued token, which node).
type Op func(ctx context.Context, worker int) error

// failures counts errors and keeps the first.
type failures struct {
	n     atomic.Int64
	first atomic.Value
}

func (f *failures) add(err error) {
	f.n.Add(1)
	f.first.CompareAndSwap(nil, err.Error())
}

func (f *failures) fill(r *Result) {
	r.Errors = int(f.n.Load())
	if s, ok := f.first.Load().(string); ok {
		r.FirstError = s
	}
}

// Drive runs op under load and reports what it measured, the run named
// name; progress lines go to progress once a second. An op returning
// errExhausted ends the run early (a closed-loop worker, or the open
// loop's schedule).
func Drive(ctx context.Context, name string, load Load, op Op, progress io.Writer) *Result {
	if load.Rate > 0 {
		return driveOpen(ctx, name, load, op, progress)
	}
	return driveClosed(ctx, name, load, op, progress)
}

func driveClosed(ctx context.Context, name string, load Load, op Op, progress io.Writer) *Result {
	var (
		done atomic.Int64
		fail failures
		wg   sync.WaitGroup
		h    = newHist()
	)
	runCtx, cancel := context.WithTimeout(ctx, load.Duration)
	defer cancel()
	start := time.Now()
	tl := newTimeline(start)
	stopProgress := reportProgress(runCtx, progress, name, &done, &fail.n)
	for w := range load.Clients {
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
				end := time.Now()
				h.record(end.Sub(t))
				tl.add(end)
				done.Add(1)
				if err != nil {
					fail.add(err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	r := &Result{Workload: name, Mode: "closed", Clients: load.Clients, Elapsed: elapsed, PerSecond: tl.perSecond(elapsed)}
	fail.fill(r)
	r.summarize(h.snapshot())
	return r
}

func driveOpen(ctx context.Context, name string, load Load, op Op, progress io.Writer) *Result {
	var (
		done     atomic.Int64
		fail     failures
		dropped  atomic.Int64
		wg       sync.WaitGroup
		h        = newHist()
		stopped  atomic.Bool
		inflight = make(chan struct{}, cmpOr(load.MaxInFlight, 16*load.Clients))
	)
	// Requests in flight at the end may finish within a grace period.
	opCtx, cancelOps := context.WithTimeout(ctx, load.Duration+30*time.Second)
	defer cancelOps()
	start := time.Now()
	tl := newTimeline(start)
	stopProgress := reportProgress(ctx, progress, name, &done, &fail.n)
	for i := 0; ctx.Err() == nil && !stopped.Load(); i++ {
		intended := start.Add(time.Duration(float64(i) / load.Rate * float64(time.Second)))
		if intended.Sub(start) >= load.Duration {
			break
		}
		if d := time.Until(intended); d > 0 {
			sleepCtx(ctx, d)
		}
		select {
		case inflight <- struct{}{}:
		default:
			dropped.Add(1)
			fail.add(fmt.Errorf("bench: %d requests in flight, send dropped", cap(inflight)))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			err := op(opCtx, i)
			if errors.Is(err, errExhausted) {
				stopped.Store(true)
				return
			}
			end := time.Now()
			h.record(end.Sub(intended))
			tl.add(end)
			done.Add(1)
			if err != nil {
				fail.add(err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	r := &Result{Workload: name, Mode: "open", Clients: load.Clients, Rate: load.Rate, Elapsed: elapsed,
		Dropped: int(dropped.Load()), PerSecond: tl.perSecond(elapsed)}
	fail.fill(r)
	r.summarize(h.snapshot())
	return r
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func cmpOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// reportProgress writes a progress line once a second until stopped.
func reportProgress(ctx context.Context, w io.Writer, name string, done, failed *atomic.Int64) func() {
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
				fmt.Fprintf(w, "  %s: %d ops, %d ops/s, %d errors\n", name, n, n-last, failed.Load())
				last = n
			}
		}
	}()
	return func() { close(stop); <-finished }
}

// SplitList splits a comma-separated flag value, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
