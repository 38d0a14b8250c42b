package xdc

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/internal/netem"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Row is one operation of one group of clients.
type Row struct {
	Group  string   `json:"group"` // GroupLeader or the DC's name
	DC     string   `json:"dc"`
	Nodes  []string `json:"nodes"`
	Op     string   `json:"op"`
	Count  int64    `json:"count"`
	Errors int      `json:"errors"`
	P50    float64  `json:"p50_ms"`
	P90    float64  `json:"p90_ms"`
	P99    float64  `json:"p99_ms"`
	Max    float64  `json:"max_ms"`
	// FirstError is the first error recorded, if any.
	FirstError string `json:"first_error,omitempty"`
}

// Target is one cross-DC target and its verdict.
type Target struct {
	DC   string `json:"dc"`
	Name string `json:"name"`
	// Measured is the figure the target is about, Limit what it may be
	// at most, both in milliseconds.
	Measured float64 `json:"measured_ms"`
	Limit    float64 `json:"limit_ms"`
	Met      bool    `json:"met"`
	Detail   string  `json:"detail"`
}

// NodeCounters are what a node's metrics counted while the run was
// measured.
type NodeCounters struct {
	Node string `json:"node"`
	DC   string `json:"dc"`
	// LeaderReads are reads this node had the leader answer (a lookup
	// whose min_index it had not applied in time, or a leader read).
	LeaderReads int64 `json:"leader_reads"`
	// Forwarded are writes this node forwarded to the leader.
	Forwarded int64 `json:"forwarded_writes"`
}

// Report is the outcome of a run.
type Report struct {
	DCs          string         `json:"dcs"`
	Net          netem.Config   `json:"network"`
	Warmup       string         `json:"warmup"`
	Duration     string         `json:"duration"`
	ClientsPerDC int            `json:"clients_per_dc"`
	Rate         float64        `json:"rounds_per_s_per_client"`
	Leader       string         `json:"leader"`
	LeaderDC     string         `json:"leader_dc"`
	Rows         []Row          `json:"rows"`
	Targets      []Target       `json:"targets"`
	Nodes        []NodeCounters `json:"nodes"`
	// Met is whether every target was met.
	Met bool `json:"met"`
}

// nodeCounters are a node's counters at one time, unset (nil) for a node
// whose metrics could not be read.
type nodeCounters map[string]int64

// Counters read from each node's metrics.
const (
	metricLeaderReads = "tokenstore_leader_reads_total"
	metricForwarded   = "tokenstore_forwarded_writes_total"
)

// counters reads the counters of every node; a node that does not answer
// is left out.
func (r *run) counters(ctx context.Context) map[string]nodeCounters {
	out := map[string]nodeCounters{}
	for _, n := range r.cluster.Nodes {
		if c, err := r.scrape(ctx, n); err == nil {
			out[n.ID] = c
		}
	}
	return out
}

func (r *run) scrape(ctx context.Context, n *proccluster.Node) (nodeCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics: %s", n.URL(), resp.Status)
	}
	return parseCounters(resp.Body)
}

// parseCounters reads the unlabelled counters of the Prometheus text
// format that a run reports.
func parseCounters(rd io.Reader) (nodeCounters, error) {
	out := nodeCounters{}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || (name != metricLeaderReads && name != metricForwarded) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		out[name] = int64(v)
	}
	return out, sc.Err()
}

func ms(h *hdrhistogram.Histogram, p float64) float64 {
	return float64(h.ValueAtPercentile(p)) / 1000
}

// report gathers the rows, the counters and the targets.
func (r *run) report(leader *proccluster.Node, groups []*group, before, after map[string]nodeCounters) *Report {
	rep := &Report{DCs: proccluster.FormatDCs(r.cfg.DCs), Net: r.cfg.Net, Warmup: r.cfg.Warmup.String(), Duration: r.cfg.Duration.String(),
		ClientsPerDC: r.cfg.ClientsPerDC, Rate: r.cfg.Rate, Leader: leader.ID, LeaderDC: leader.DC}
	for _, g := range groups {
		var ids []string
		for _, n := range g.nodes {
			ids = append(ids, n.ID)
		}
		for _, op := range Ops {
			s := g.stats[op]
			s.mu.Lock()
			rep.Rows = append(rep.Rows, Row{Group: g.name, DC: g.dc, Nodes: ids, Op: op, Count: s.h.TotalCount(), Errors: s.errors,
				P50: ms(s.h, 50), P90: ms(s.h, 90), P99: ms(s.h, 99), Max: float64(s.h.Max()) / 1000, FirstError: s.firstErr})
			s.mu.Unlock()
		}
	}
	for _, n := range r.cluster.Nodes {
		b, a := before[n.ID], after[n.ID]
		if a == nil || b == nil {
			continue
		}
		rep.Nodes = append(rep.Nodes, NodeCounters{Node: n.ID, DC: n.DC,
			LeaderReads: a[metricLeaderReads] - b[metricLeaderReads], Forwarded: a[metricForwarded] - b[metricForwarded]})
	}
	rep.Targets = targets(rep)
	rep.Met = len(rep.Targets) > 0
	for _, t := range rep.Targets {
		rep.Met = rep.Met && t.Met
	}
	return rep
}

// Row returns the row of group and op, or nil.
func (rep *Report) Row(group, op string) *Row {
	for i := range rep.Rows {
		if rep.Rows[i].Group == group && rep.Rows[i].Op == op {
			return &rep.Rows[i]
		}
	}
	return nil
}

// The targets' bounds.
const (
	// writeSlack is how far above one round trip plus the leader's own
	// time a write through a secondary DC may be at the median.
	writeSlack = 5.0
	// localLookupP99 bounds a secondary DC's local lookups at p99.
	localLookupP99 = 2.0
)

// targets are the verdicts for every DC but the leader's:
//   - an issue and a consume through a node of the DC cost one round trip
//     and the leader's own time at most: p50 within writeSlack of the
//     round trip plus the leader group's p50 of the same operation;
//   - its local lookups: p99 at most localLookupP99;
//   - a lookup with min_index right after a write through the same node
//     answers without a second round trip: p99 under one round trip.
func targets(rep *Report) []Target {
	rtt := float64(rep.Net.Latency) / float64(time.Millisecond)
	var out []Target
	seen := map[string]bool{rep.LeaderDC: true}
	for _, row := range rep.Rows {
		dc := row.Group
		if row.Group == GroupLeader || seen[dc] {
			continue
		}
		seen[dc] = true
		for _, op := range []string{OpIssue, OpConsume} {
			got, ref := rep.Row(dc, op), rep.Row(GroupLeader, op)
			if got == nil || ref == nil {
				continue
			}
			limit := rtt + ref.P50 + writeSlack
			out = append(out, Target{DC: dc, Name: op + " p50 ≤ one round trip + the leader's own p50 + 5 ms", Measured: got.P50, Limit: limit,
				Met:    got.Count > 0 && got.P50 <= limit,
				Detail: fmt.Sprintf("round trip %.1f ms + leader p50 %.2f ms = %.2f ms; p99 %.2f ms (leader's own p99 %.2f ms)", rtt, ref.P50, rtt+ref.P50, got.P99, ref.P99)})
		}
		if got := rep.Row(dc, OpLookup); got != nil {
			out = append(out, Target{DC: dc, Name: "local lookup p99 ≤ 2 ms", Measured: got.P99, Limit: localLookupP99,
				Met: got.Count > 0 && got.P99 <= localLookupP99, Detail: fmt.Sprintf("p50 %.2f ms, max %.2f ms", got.P50, got.Max)})
		}
		if got := rep.Row(dc, OpLookupAfterWrite); got != nil {
			var reads, forwarded int64
			for _, n := range rep.Nodes {
				if n.DC == dc {
					reads += n.LeaderReads
					forwarded += n.Forwarded
				}
			}
			out = append(out, Target{DC: dc, Name: "lookup with min_index after a write through the same node: no second round trip (p99 < one round trip)",
				Measured: got.P99, Limit: rtt, Met: got.Count > 0 && got.P99 < rtt,
				Detail: fmt.Sprintf("p50 %.2f ms, p90 %.2f ms, max %.2f ms; reads the DC's nodes had the leader answer: %d, writes they forwarded: %d",
					got.P50, got.P90, got.Max, reads, forwarded)})
		}
	}
	return out
}

// WriteJSON writes the report as JSON to path.
func (rep *Report) WriteJSON(path string) error { return load.WriteJSONFile(path, rep) }

// WriteMarkdown writes the report as markdown to path.
func (rep *Report) WriteMarkdown(path string) error { return load.WriteFileWith(path, rep.WriteText) }

// WriteText writes the report as markdown tables: the latencies per DC
// and operation, the targets and the nodes' counters.
func (rep *Report) WriteText(w io.Writer) error {
	rate := "closed loop"
	if rep.Rate > 0 {
		rate = fmt.Sprintf("%g rounds/s each at most", rep.Rate)
	}
	fmt.Fprintf(w, "across datacenters: dcs %s, cross-DC round trip %s ± %s, %s measured after %s, %d clients per DC and for the leader (%s), leader %s in DC %s\n\n",
		rep.DCs, rep.Net.Latency, rep.Net.Jitter, rep.Duration, rep.Warmup, rep.ClientsPerDC, rate, rep.Leader, rep.LeaderDC)
	fmt.Fprintln(w, "| clients | nodes | operation | count | errors | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range rep.Rows {
		who := "DC " + r.Group
		if r.Group == GroupLeader {
			who = "leader (DC " + r.DC + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %.2f | %.2f | %.2f | %.2f |\n", who, strings.Join(r.Nodes, ","), r.Op, r.Count, r.Errors, r.P50, r.P90, r.P99, r.Max)
	}
	fmt.Fprintln(w, "\n| DC | target | measured ms | limit ms | verdict | detail |\n|---|---|---:|---:|---|---|")
	for _, t := range rep.Targets {
		verdict := "met"
		if !t.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %s | %s |\n", t.DC, t.Name, t.Measured, t.Limit, verdict, t.Detail)
	}
	if len(rep.Nodes) > 0 {
		fmt.Fprintln(w, "\n| node | DC | reads the leader answered | writes forwarded |\n|---|---|---:|---:|")
		for _, n := range rep.Nodes {
			fmt.Fprintf(w, "| %s | %s | %d | %d |\n", n.Node, n.DC, n.LeaderReads, n.Forwarded)
		}
	}
	var errs []string
	for _, r := range rep.Rows {
		if r.FirstError != "" {
			errs = append(errs, fmt.Sprintf("- %s %s: %s", r.Group, r.Op, r.FirstError))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(w, "\nfirst errors:\n%s\n", strings.Join(errs, "\n"))
	}
	_, err := fmt.Fprintln(w)
	return err
}
