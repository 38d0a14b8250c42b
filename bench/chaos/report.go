package chaos

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/tokenstore/tokenstore/bench/history"
)

// WriteJSON writes the report as JSON to path.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteMarkdown writes the report as markdown to path.
func (rep *Report) WriteMarkdown(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteText(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

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
	fmt.Fprintf(w, "chaos run: %s, dcs %s, %s, seed %d, %d clients per DC, network: %s\n\n", verdict, rep.DCs, rep.Duration, rep.Seed, rep.ClientsPerDC, network)
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
		if err := addLine(p, 0, "answered", ok); err != nil {
			return err
		}
		if err := addLine(p, 1, "failed or unknown", bad); err != nil {
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

// addLine adds a line of pts named name to p, in the i-th color of the
// palette.
func addLine(p *plot.Plot, i int, name string, pts plotter.XYs) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = plotutil.Color(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}
