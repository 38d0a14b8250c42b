package chaos

import (
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/tokenstore/tokenstore/bench/history"
	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/internal/netem"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Second is the operations that returned in one second of a run.
type Second struct {
	OK     int `json:"ok"`
	Errors int `json:"errors"`
}

// Report is the outcome of a chaos run.
type Report struct {
	DCs          string                    `json:"dcs"`
	Net          *netem.Config             `json:"network,omitempty"`
	Duration     string                    `json:"duration"`
	Seed         uint64                    `json:"seed"`
	ClientsPerDC int                       `json:"clients_per_dc"`
	Ops          map[string]map[string]int `json:"ops"` // kind → outcome → count
	Checks       []history.Check           `json:"checks"`
	Faults       []FaultEvent              `json:"faults"`
	PerSecond    []Second                  `json:"per_second"`
	Pass         bool                      `json:"pass"`
	Files        []string                  `json:"files"`
}

// report checks the history and writes the files.
func (r *chaosRun) report(faults []FaultEvent) (*Report, error) {
	ops := r.h.Ops()
	sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	rep := &Report{DCs: proccluster.FormatDCs(r.cfg.DCs), Net: r.cfg.Net, Duration: r.cfg.Duration.String(), Seed: r.cfg.Seed,
		ClientsPerDC: r.cfg.ClientsPerDC, Ops: countOps(ops), PerSecond: perSecond(ops)}
	rep.Faults = measureFaults(faults, ops)
	html := filepath.Join(r.cfg.Out, "linearizability.html")
	rep.Checks = history.CheckAll(ops, r.cfg.CheckTimeout, html)
	rep.Pass = true
	for _, c := range rep.Checks {
		rep.Pass = rep.Pass && c.Pass
	}
	for _, f := range rep.Faults {
		if f.Err != "" {
			rep.Pass = false
		}
	}
	if _, err := os.Stat(html); err == nil {
		rep.Files = append(rep.Files, html)
	}
	return rep, r.writeFiles(rep, ops)
}

// writeFiles writes the history, the report as JSON and markdown and the
// timeline PNG to the output directory.
func (r *chaosRun) writeFiles(rep *Report, ops []history.Op) error {
	files := map[string]func(string) error{
		"history.json": func(p string) error { return history.Write(p, ops) },
		"chaos.json":   rep.WriteJSON,
		"chaos.md":     rep.WriteMarkdown,
		"timeline.png": rep.WriteTimeline,
	}
	names := []string{"history.json", "chaos.json", "chaos.md", "timeline.png"}
	for _, name := range names {
		p := filepath.Join(r.cfg.Out, name)
		if err := files[name](p); err != nil {
			return err
		}
		rep.Files = append(rep.Files, p)
	}
	return nil
}

// isWrite reports whether op is a write of the history.
func isWrite(op history.Op) bool {
	switch op.Kind {
	case history.OpIssue, history.OpConsume, history.OpRotate, history.OpReplay,
		history.OpFlowIssueCode, history.OpFlowIssueRefresh, history.OpFlowIssueAccess, history.OpFlowConsume, history.OpFlowRace, history.OpFlowRotate:
		return true
	}
	return false
}

// acknowledged reports whether a write was acknowledged with a change.
func acknowledged(op history.Op) bool {
	return isWrite(op) && op.Outcome == history.OutcomeOK && (op.Result == history.ResultCreated || op.Result == history.ResultUsed)
}

// measureFaults adds to each fault the writes made while it lasted and
// what its fault's expectation asks: the time until writes resumed, the
// answers of the majority side's clients and of the cut side's nodes.
func measureFaults(faults []FaultEvent, ops []history.Op) []FaultEvent {
	out := append([]FaultEvent(nil), faults...)
	for i := range out {
		f := &out[i]
		expect := expectOf(f.Kind)
		at, healed := int64(f.At*float64(time.Second)), int64(f.Healed*float64(time.Second))
		first := int64(-1)
		for _, op := range ops {
			// A race's second consume goes to another DC on purpose.
			if expect.MajorityAnswered && len(f.MajorityDCs) > 0 && !op.Final && op.Kind != history.OpFlowRace && slices.Contains(f.MajorityDCs, op.DC) {
				switch {
				case op.Call >= at && op.Call <= healed:
					f.MajorityOps++
					if op.Outcome == history.OutcomeOK {
						f.MajorityOK++
					}
				case op.Call >= 2*at-healed && op.Call < at:
					f.MajorityOpsBefore++
				}
			}
			if expect.CutAnswered && isWrite(op) && !op.Final && op.Kind != history.OpFlowRace && slices.Contains(f.CutDCs, op.DC) && op.Call <= healed && op.Return >= at {
				f.CutWrites++
				if op.Answered && op.Return <= healed {
					f.CutWritesAnswered++
				}
			}
			if !isWrite(op) || op.Final || op.Call < at {
				continue
			}
			if op.Call <= healed {
				f.Writes++
				if op.Outcome == history.OutcomeOK {
					f.WritesOK++
				}
			}
			if acknowledged(op) && (first < 0 || op.Return < first) {
				first = op.Return
			}
		}
		if expect.Resume {
			f.Resume = -1
			if first >= 0 {
				f.Resume = float64(first-at) / float64(time.Second)
			}
		}
	}
	return out
}

// countOps counts the operations by kind and outcome.
func countOps(ops []history.Op) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, op := range ops {
		kind := op.Kind
		if op.Final {
			kind = "final_" + kind
		}
		if out[kind] == nil {
			out[kind] = map[string]int{}
		}
		out[kind][op.Outcome]++
	}
	return out
}

// perSecond buckets the operations of the load by the second they
// returned in: definite answers, and failed or unknown ones.
func perSecond(ops []history.Op) []Second {
	var out []Second
	for _, op := range ops {
		if op.Final {
			continue
		}
		s := int(op.Return / int64(time.Second))
		for len(out) <= s {
			out = append(out, Second{})
		}
		if op.Outcome == history.OutcomeOK {
			out[s].OK++
		} else {
			out[s].Errors++
		}
	}
	return out
}

// WriteJSON writes the report as JSON to path.
func (rep *Report) WriteJSON(path string) error { return load.WriteJSONFile(path, rep) }

// WriteMarkdown writes the report as markdown to path.
func (rep *Report) WriteMarkdown(path string) error { return load.WriteFileWith(path, rep.WriteText) }

// WriteText writes the report as markdown tables: the checks, the
// operations by outcome and the faults.
func (rep *Report) WriteText(w io.Writer) error {
	verdict := "PASS"
	if !rep.Pass {
		verdict = "FAIL"
	}
	network := "loopback"
	if rep.Net != nil {
		network = fmt.Sprintf("namespaces, cross-DC round trip %s ± %s", rep.Net.Latency, rep.Net.Jitter)
	}
	// Run starts every cluster with mutual TLS and a gossip key.
	fmt.Fprintf(w, "chaos run: %s, dcs %s, %s, seed %d, %d clients per DC, network: %s, nodes on mutual TLS with a gossip key\n\n", verdict, rep.DCs, rep.Duration, rep.Seed, rep.ClientsPerDC, network)
	if rs, none := rep.Resumes(); len(rs) > 0 || none > 0 {
		fmt.Fprintf(w, "writes resumed after %d leader kills in %s s", len(rs), joinSeconds(rs))
		if len(rs) > 0 {
			fmt.Fprintf(w, ": median %.2f s, worst %.2f s", median(rs), slices.Max(rs))
		}
		if none > 0 {
			fmt.Fprintf(w, "; after %d more, no write resumed", none)
		}
		fmt.Fprint(w, "\n\n")
	}
	fmt.Fprintln(w, "| check | result | detail |\n|---|---|---|")
	for _, c := range rep.Checks {
		res := "pass"
		if !c.Pass {
			res = "FAIL"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", c.Name, res, strings.ReplaceAll(c.Detail, "|", "/"))
	}
	fmt.Fprintln(w, "\n| operation | ok | unknown | failed |\n|---|---:|---:|---:|")
	kinds := make([]string, 0, len(rep.Ops))
	for k := range rep.Ops {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		o := rep.Ops[k]
		fmt.Fprintf(w, "| %s | %d | %d | %d |\n", k, o[history.OutcomeOK], o[history.OutcomeUnknown], o[history.OutcomeFailed])
	}
	fmt.Fprintln(w, "\n| fault | node | at (s) | healed (s) | writes answered during it | writes resumed after (s) | majority side answered | cut side's writes answered before the heal |\n|---|---|---:|---:|---:|---:|---|---|")
	for _, f := range rep.Faults {
		resume, majority, cut := "", "", ""
		expect := expectOf(f.Kind)
		if expect.Resume {
			resume = fmt.Sprintf("%.2f", f.Resume)
		}
		if expect.MajorityAnswered {
			majority = "no side has a majority"
			if len(f.MajorityDCs) > 0 {
				d := max(f.Healed-f.At, 0.001)
				majority = fmt.Sprintf("%d / %d (%.1f%%), %.0f/s (before: %.0f/s), clients of %s", f.MajorityOK, f.MajorityOps,
					100*float64(f.MajorityOK)/float64(max(1, f.MajorityOps)), float64(f.MajorityOps)/d, float64(f.MajorityOpsBefore)/d,
					strings.Join(f.MajorityDCs, ","))
			}
		}
		if expect.CutAnswered && len(f.CutDCs) > 0 {
			cut = fmt.Sprintf("%d / %d (%.1f%%, 503s included), clients of %s", f.CutWritesAnswered, f.CutWrites,
				100*float64(f.CutWritesAnswered)/float64(max(1, f.CutWrites)), strings.Join(f.CutDCs, ","))
		}
		node := f.Node + " (" + f.DC + ")"
		if f.Err != "" {
			node += " error: " + f.Err
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %d / %d | %s | %s | %s |\n", f.Kind, node, f.At, f.Healed, f.WritesOK, f.Writes, resume, majority, cut)
	}
	_, err := fmt.Fprintln(w)
	return err
}

// WriteTimeline plots definite answers and failed or unknown operations
// per second, with a dashed line at the start of every fault and, above,
// a bar for as long as it lasted, one row and color per kind of fault.
func (rep *Report) WriteTimeline(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("chaos: %s, seed %d", rep.DCs, rep.Seed)
	p.X.Label.Text = "second of the run"
	p.Y.Label.Text = "operations/s"
	var ok, bad plotter.XYs
	top := 1.0
	for s, n := range rep.PerSecond {
		ok = append(ok, plotter.XY{X: float64(s), Y: float64(n.OK)})
		bad = append(bad, plotter.XY{X: float64(s), Y: float64(n.Errors)})
		top = max(top, float64(n.OK), float64(n.Errors))
	}
	if len(ok) > 0 {
		if err := load.AddLine(p, 0, "answered", ok); err != nil {
			return err
		}
		if err := load.AddLine(p, 1, "failed or unknown", bad); err != nil {
			return err
		}
	}
	// Each kind of fault has a row above the lines, in a color of its own:
	// a bar for as long as the fault lasted, labeled with its node.
	var labels plotter.XYLabels
	var colors []color.Color
	for i, f := range rep.Faults {
		l, err := plotter.NewLine(plotter.XYs{{X: f.At, Y: 0}, {X: f.At, Y: top}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 96}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		if i == 0 {
			p.Legend.Add("fault", l)
		}
		row := slices.Index(FaultKinds, f.Kind)
		y := top * (1.04 + 0.05*float64(row))
		span, err := plotter.NewLine(plotter.XYs{{X: f.At, Y: y}, {X: f.Healed, Y: y}})
		if err != nil {
			return err
		}
		span.Color, span.Width = plotutil.Color(2+row), vg.Points(3)
		p.Add(span)
		if !slices.ContainsFunc(rep.Faults[:i], func(g FaultEvent) bool { return g.Kind == f.Kind }) {
			p.Legend.Add(f.Kind, span)
		}
		if !strings.Contains(f.Node, ",") {
			labels.XYs = append(labels.XYs, plotter.XY{X: f.Healed, Y: y})
			labels.Labels = append(labels.Labels, f.Node)
			colors = append(colors, plotutil.Color(2+row))
		}
	}
	if len(labels.XYs) > 0 {
		lb, err := plotter.NewLabels(labels)
		if err != nil {
			return err
		}
		for i := range lb.TextStyle {
			lb.TextStyle[i].Color = colors[i]
			lb.TextStyle[i].Font.Size = vg.Points(7)
			lb.TextStyle[i].YAlign = -0.5
		}
		p.Add(lb)
	}
	// Room on the right for the legend.
	p.Legend.Top = true
	p.X.Max *= 1.22
	return p.Save(9*vg.Inch, 4.5*vg.Inch, path)
}

// Resumes are the times until writes resumed after each fault that
// expects it (leader kills), in order, and how many such faults no write
// resumed after.
func (rep *Report) Resumes() (rs []float64, none int) {
	for _, f := range rep.Faults {
		switch {
		case f.Resume > 0:
			rs = append(rs, f.Resume)
		case f.Resume < 0:
			none++
		}
	}
	return rs, none
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func joinSeconds(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
}
