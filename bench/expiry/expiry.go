// Package expiry is the mass-expiry bench: a local cluster of the real
// binary is preloaded with tokens whose TTLs all end within one window
// (a minute, say) while a steady open-loop lookup load reads live tokens;
// the bench reports lookup latency before, during and after the expiry
// and its collection, the nodes' GC deletion rate (from /metrics), and
// how long after the last token's GC time the store is back to its live
// tokens.
package expiry

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/proccluster"
	"github.com/tokenstore/tokenstore/token"
)

// Config describes a run.
type Config struct {
	Binary, Dir string
	NodeArgs    []string
	Nodes       int
	// Tokens expire within Window, starting ExpireAfter after the
	// preload starts (0: estimated from the rate the live tokens were
	// issued at, with room to spare).
	Tokens      int
	Window      time.Duration
	ExpireAfter time.Duration
	// GCGrace is the nodes' --gc-grace.
	GCGrace time.Duration
	// Live tokens (an hour's TTL) are what the lookups read.
	Live int
	// Clients issue the preload, closed loop.
	Clients int
	// LookupRate is the open-loop lookups per second, in segments of
	// Segment each (a phase is a whole number of segments).
	LookupRate float64
	Segment    time.Duration
	// After is how long lookups go on once the store is back to its live
	// tokens; MaxWait bounds the wait for that after the last GC time.
	After, MaxWait time.Duration
}

func (c *Config) setDefaults() {
	c.Nodes = max(c.Nodes, 1)
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	if c.Live <= 0 {
		c.Live = 10000
	}
	if c.Clients <= 0 {
		c.Clients = 64
	}
	if c.LookupRate <= 0 {
		c.LookupRate = 1000
	}
	if c.Segment <= 0 {
		c.Segment = 5 * time.Second
	}
	if c.After <= 0 {
		c.After = 20 * time.Second
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 15 * time.Minute
	}
}

// Phase is the lookups of one part of the run.
type Phase struct {
	Name   string        `json:"name"`
	From   float64       `json:"from_s"` // since the first expiry
	To     float64       `json:"to_s"`
	Ops    int           `json:"ops"`
	Errors int           `json:"errors"`
	P50    time.Duration `json:"p50_ns"`
	P99    time.Duration `json:"p99_ns"`
	Max    time.Duration `json:"max_ns"`
	// NodeCPU is the cores the nodes used in the phase, summed.
	NodeCPU float64 `json:"node_cpu"`
}

// Sample is one poll of the nodes' /metrics.
type Sample struct {
	At        float64 `json:"at_s"`   // since the first expiry
	Tokens    int64   `json:"tokens"` // records on the leader
	GCDeleted int64   `json:"gc_deleted"`
	CPU       float64 `json:"cpu_s"` // the nodes' CPU time so far, summed
}

// Report is what a run measured.
type Report struct {
	Nodes, Tokens, Live int
	Window, GCGrace     time.Duration
	LookupRate          float64
	PreloadS            float64 `json:"preload_s"`
	PreloadPerS         float64 `json:"preload_per_s"`
	// Late counts preloaded tokens whose deadline had passed by the
	// time they were issued (they got a 1 s TTL): raise ExpireAfter.
	Late int `json:"late"`
	// CleanS is when (since the first expiry) the leader held only the
	// live tokens again (-1: not within MaxWait); CleanAfterLastGC is
	// that less the last token's GC time (Window + GCGrace).
	CleanS           float64 `json:"clean_s"`
	CleanAfterLastGC float64 `json:"clean_after_last_gc_s"`
	// FirstGCS is the first poll that saw a deletion; GCRate the
	// deletions per second from there to CleanS; PeakGCRate the highest
	// between two polls.
	FirstGCS   float64  `json:"first_gc_s"`
	GCDeleted  int64    `json:"gc_deleted"`
	GCRate     float64  `json:"gc_per_s"`
	PeakGCRate float64  `json:"peak_gc_per_s"`
	Phases     []*Phase `json:"phases"`
	Samples    []Sample `json:"samples"`
	// RSS per node at the start of the expiry and at the end, bytes.
	RSSBefore, RSSAfter map[string]int64
}

// Run starts the cluster, preloads, measures and stops the cluster.
func Run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	cfg.setDefaults()
	args := append([]string{"--gc-grace", cfg.GCGrace.String()}, cfg.NodeArgs...)
	c, err := proccluster.StartCluster(ctx, proccluster.ClusterConfig{Binary: cfg.Binary, Dir: cfg.Dir, Nodes: cfg.Nodes, Args: args})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil,
		MaxIdleConns: 4 * cfg.Clients, MaxIdleConnsPerHost: 4 * cfg.Clients, IdleConnTimeout: time.Minute}}
	leader, err := c.Leader(ctx, hc)
	if err != nil {
		return nil, err
	}
	var nodes []*client.Client
	for _, n := range c.Nodes {
		nodes = append(nodes, client.New(n.URL(), client.WithHTTPClient(hc)))
	}
	rep := &Report{Nodes: cfg.Nodes, Tokens: cfg.Tokens, Live: cfg.Live, Window: cfg.Window, GCGrace: cfg.GCGrace, LookupRate: cfg.LookupRate, CleanS: -1}

	// The live tokens, and the rate they were issued at.
	fmt.Fprintf(log, "issuing %d live tokens\n", cfg.Live)
	start := time.Now()
	live := make([]string, cfg.Live)
	if _, err := issueAll(ctx, nodes, cfg.Clients, cfg.Live, func(i int) (time.Duration, bool) { return time.Hour, false },
		func(i int, tok string) { live[i] = tok }); err != nil {
		return nil, err
	}
	liveRate := float64(cfg.Live) / time.Since(start).Seconds()

	// The preload: token i expires at first + i/Tokens of the window.
	after := cfg.ExpireAfter
	if after <= 0 {
		after = time.Duration(1.6*float64(cfg.Tokens)/liveRate*float64(time.Second)) + 20*time.Second
	}
	preloadStart := time.Now()
	first := preloadStart.Add(after)
	fmt.Fprintf(log, "preloading %d tokens expiring from %s to %s (live tokens went at %.0f/s)\n",
		cfg.Tokens, first.Format(time.TimeOnly), first.Add(cfg.Window).Format(time.TimeOnly), liveRate)
	late, err := issueAll(ctx, nodes, cfg.Clients, cfg.Tokens, func(i int) (time.Duration, bool) {
		at := first.Add(time.Duration(float64(cfg.Window) * float64(i) / float64(max(cfg.Tokens, 1))))
		ttl := time.Until(at)
		if ttl < time.Second {
			return time.Second, true
		}
		return ttl, false
	}, nil)
	if err != nil {
		return nil, err
	}
	rep.Late = late
	rep.PreloadS = time.Since(preloadStart).Seconds()
	rep.PreloadPerS = float64(cfg.Tokens) / rep.PreloadS
	fmt.Fprintf(log, "preload took %.1f s (%.0f/s), %d late; lookups at %.0f/s until the expiry starts in %s\n",
		rep.PreloadS, rep.PreloadPerS, late, cfg.LookupRate, time.Until(first).Round(time.Second))
	rep.RSSBefore = rss(c)

	// Lookups in segments, and /metrics once a second, until the store is
	// back to its live tokens and After more.
	since := func(t time.Time) float64 { return t.Sub(first).Seconds() }
	var clean atomic.Int64 // unix nanos, 0 until clean
	var samplesMu sync.Mutex
	lastTokens := func() int64 {
		samplesMu.Lock()
		defer samplesMu.Unlock()
		if n := len(rep.Samples); n > 0 {
			return rep.Samples[n-1].Tokens
		}
		return 0
	}
	stop := make(chan struct{})
	var pollWG sync.WaitGroup
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-t.C:
			}
			asked := time.Now()
			s, err := poll(ctx, hc, leader.URL(), c)
			if err != nil {
				fmt.Fprintf(log, "poll: %v\n", err)
				continue
			}
			now := time.Now()
			s.At = since(asked.Add(now.Sub(asked) / 2))
			samplesMu.Lock()
			rep.Samples = append(rep.Samples, s)
			samplesMu.Unlock()
			if now.After(first) && s.Tokens <= int64(cfg.Live) && clean.Load() == 0 {
				clean.Store(now.UnixNano())
			}
		}
	}()
	lastGC := first.Add(cfg.Window + cfg.GCGrace)
	type segment struct {
		from, to time.Time
		res      *load.Result
	}
	var segs []segment
	lookup := func(ctx context.Context, i int) error {
		_, _, err := nodes[i%len(nodes)].Lookup(ctx, live[rand.IntN(len(live))], client.LookupOptions{})
		return err
	}
	for ctx.Err() == nil {
		if at := clean.Load(); at != 0 && time.Since(time.Unix(0, at)) >= cfg.After {
			break
		}
		if time.Since(lastGC) > cfg.MaxWait {
			fmt.Fprintf(log, "the store still held expired tokens %s after the last GC time\n", cfg.MaxWait)
			break
		}
		from := time.Now()
		res := load.Drive(ctx, "lookup", load.Load{Clients: 16, Duration: cfg.Segment, Rate: cfg.LookupRate}, lookup, io.Discard)
		segs = append(segs, segment{from, time.Now(), res})
		fmt.Fprintf(log, "%7.1fs tokens %d  lookups p50 %s p99 %s errors %d\n", since(from), lastTokens(),
			res.P50.Round(10*time.Microsecond), res.P99.Round(10*time.Microsecond), res.Errors)
	}
	close(stop)
	pollWG.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	rep.RSSAfter = rss(c)

	cleanAt := time.Time{}
	if at := clean.Load(); at != 0 {
		cleanAt = time.Unix(0, at)
		rep.CleanS = since(cleanAt)
		rep.CleanAfterLastGC = cleanAt.Sub(lastGC).Seconds()
	}
	rep.gcRates()
	// Phases: before the first expiry; from it until clean; after.
	phase := func(name string, in func(s segment) bool) {
		var rs []*load.Result
		p := &Phase{Name: name, From: -1}
		for _, s := range segs {
			if !in(s) {
				continue
			}
			if p.From == -1 {
				p.From = since(s.from)
			}
			p.To = since(s.to)
			rs = append(rs, s.res)
		}
		if len(rs) == 0 {
			return
		}
		m := load.Merge(rs)
		p.Ops, p.Errors, p.P50, p.P99, p.Max = m.Ops, m.Errors, m.P50, m.P99, m.Max
		p.NodeCPU = rep.cpuBetween(p.From, p.To)
		rep.Phases = append(rep.Phases, p)
	}
	phase("before", func(s segment) bool { return !s.to.After(first) })
	phase("expiring", func(s segment) bool { return s.to.After(first) && s.from.Before(first.Add(cfg.Window)) })
	phase("collecting", func(s segment) bool {
		return s.to.After(first.Add(cfg.GCGrace)) && (cleanAt.IsZero() || s.from.Before(cleanAt))
	})
	phase("after", func(s segment) bool { return !cleanAt.IsZero() && !s.from.Before(cleanAt) })
	return rep, nil
}

// cpuBetween is the cores the nodes used between two times (seconds
// since the first expiry), from the samples nearest inside them.
func (r *Report) cpuBetween(from, to float64) float64 {
	var a, b *Sample
	for i := range r.Samples {
		s := &r.Samples[i]
		if s.At >= from && a == nil {
			a = s
		}
		if s.At <= to {
			b = s
		}
	}
	if a == nil || b == nil || b.At <= a.At {
		return 0
	}
	return (b.CPU - a.CPU) / (b.At - a.At)
}

// gcRates fills the GC figures from the samples.
func (r *Report) gcRates() {
	var base, firstAt float64
	var baseDel int64
	found := false
	for i, s := range r.Samples {
		if i > 0 {
			p := r.Samples[i-1]
			if dt := s.At - p.At; dt > 0 {
				r.PeakGCRate = max(r.PeakGCRate, float64(s.GCDeleted-p.GCDeleted)/dt)
			}
			if !found && s.GCDeleted > p.GCDeleted {
				found, base, baseDel, firstAt = true, p.At, p.GCDeleted, s.At
			}
		}
		r.GCDeleted = s.GCDeleted
	}
	if !found {
		return
	}
	r.FirstGCS = firstAt
	end, endDel := r.CleanS, int64(0)
	for _, s := range r.Samples {
		if r.CleanS >= 0 && s.At <= r.CleanS+0.001 {
			endDel = s.GCDeleted
		}
	}
	if end < 0 {
		last := r.Samples[len(r.Samples)-1]
		end, endDel = last.At, last.GCDeleted
	}
	if end > base {
		r.GCRate = float64(endDel-baseDel) / (end - base)
	}
}

// issueAll issues n access tokens over the nodes with the given number of
// closed-loop clients: ttl(i) is token i's TTL and whether it came late;
// got, when set, takes each secret. It returns how many came late.
func issueAll(ctx context.Context, nodes []*client.Client, clients, n int, ttl func(int) (time.Duration, bool), got func(int, string)) (int, error) {
	var next, late atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := nodes[w%len(nodes)]
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				d, isLate := ttl(i)
				if isLate {
					late.Add(1)
				}
				res, err := c.Issue(ctx, appToken(i, d))
				if err != nil {
					errc <- fmt.Errorf("issue %d: %w", i, err)
					return
				}
				if got != nil {
					got(i, res.Token)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	return int(late.Load()), ctx.Err()
}

// appToken is what an application server writes at a login (the
// session of load.SessionOf), with the given TTL.
func appToken(i int, ttl time.Duration) wire.IssueRequest {
	s := load.SessionOf(int64(i))
	return wire.IssueRequest{Kind: token.KindAccess, Subject: s.Subject, ClientID: s.ClientID, TTL: ttl.String(),
		Title: s.Title, IP: s.IP, UserAgent: s.UserAgent}
}

// poll reads the leader's record count and every node's GC deletions.
func poll(ctx context.Context, hc *http.Client, leaderURL string, c *proccluster.Cluster) (Sample, error) {
	var s Sample
	for _, n := range c.Nodes {
		tokens, deleted, err := metrics(ctx, hc, n.URL())
		if err != nil {
			return s, err
		}
		s.GCDeleted += deleted // only a leader collects
		if cpu, err := n.Proc().CPU(); err == nil {
			s.CPU += cpu.Seconds()
		}
		if n.URL() == leaderURL {
			s.Tokens = tokens
		}
	}
	return s, nil
}

// metrics reads tokenstore_tokens (summed) and tokenstore_gc_deleted_total
// from a node's /metrics.
func metrics(ctx context.Context, hc *http.Client, url string) (tokens, deleted int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s/metrics: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, perr := strconv.ParseFloat(value, 64)
		if perr != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "tokenstore_tokens{"):
			tokens += int64(v)
		case name == "tokenstore_gc_deleted_total":
			deleted += int64(v)
		}
	}
	return tokens, deleted, sc.Err()
}

func rss(c *proccluster.Cluster) map[string]int64 {
	out := map[string]int64{}
	for _, n := range c.Nodes {
		if r, err := n.Proc().RSS(); err == nil {
			out[n.ID] = r
		}
	}
	return out
}

// WriteText prints the report.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "mass expiry: %d nodes, %d tokens expiring within %s, --gc-grace %s, %d live tokens looked up at %.0f/s\n",
		r.Nodes, r.Tokens, r.Window, r.GCGrace, r.Live, r.LookupRate)
	fmt.Fprintf(&b, "preload %.1f s (%.0f/s), %d late\n", r.PreloadS, r.PreloadPerS, r.Late)
	if r.CleanS >= 0 {
		fmt.Fprintf(&b, "back to the live tokens %.1f s after the first expiry, %.1f s after the last token's GC time (window + grace)\n", r.CleanS, r.CleanAfterLastGC)
	} else {
		b.WriteString("never back to the live tokens\n")
	}
	fmt.Fprintf(&b, "GC: %d deleted, first seen %.1f s after the first expiry, %.0f/s from there to the end, peak %.0f/s\n",
		r.GCDeleted, r.FirstGCS, r.GCRate, r.PeakGCRate)
	fmt.Fprintf(&b, "RSS before %s, after %s\n", mib(r.RSSBefore), mib(r.RSSAfter))
	b.WriteString("\n| phase | from s | to s | lookups | errors | p50 ms | p99 ms | max ms | node CPU (cores) |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range r.Phases {
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %d | %d | %.2f | %.2f | %.2f | %.2f |\n", p.Name, p.From, p.To, p.Ops, p.Errors, ms(p.P50), ms(p.P99), ms(p.Max), p.NodeCPU)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(m map[string]int64) string {
	var parts []string
	for _, id := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB", id, float64(m[id])/(1<<20)))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]int64) []string { return slices.Sorted(maps.Keys(m)) }

// ErrNotClean is a run after which expired tokens remained.
var ErrNotClean = errors.New("bench expiry: expired tokens remained after the wait")
