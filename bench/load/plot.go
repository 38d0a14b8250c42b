package load

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WritePlots writes PNGs to dir: per operation (and live-token scale),
// the latency CDF with a line per system, and the throughput over time
// (completions per second) with a line per system; the steps of a
// composite operation get a CDF each. It returns the files.
func (rep *Report) WritePlots(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, g := range rep.groups() {
		cdf, err := cdfPlot(g)
		if err != nil {
			return files, err
		}
		tput, err := throughputPlot(g)
		if err != nil {
			return files, err
		}
		plots := map[string]*plot.Plot{"cdf": cdf}
		if tput != nil {
			plots["throughput"] = tput
		}
		for kind, p := range plots {
			path := filepath.Join(dir, fmt.Sprintf("%s-%s.png", kind, g.name))
			if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
				return files, err
			}
			files = append(files, path)
		}
	}
	return files, nil
}

// group is the results of one operation at one scale, one per system.
type group struct {
	name    string // op, or op-live
	title   string
	results []*Result
}

func (rep *Report) groups() []*group {
	var out []*group
	byName := map[string]*group{}
	for _, r := range rep.allResults() {
		name, title := r.Workload, r.Workload
		if r.Live > 0 {
			name, title = fmt.Sprintf("%s-%d", r.Workload, r.Live), fmt.Sprintf("%s, %d live tokens", r.Workload, r.Live)
		}
		g := byName[name]
		if g == nil {
			g = &group{name: name, title: title}
			byName[name] = g
			out = append(out, g)
		}
		g.results = append(g.results, r)
	}
	return out
}

func label(r *Result) string {
	if r.Mode == "open" {
		return fmt.Sprintf("%s (%.0f/s open loop)", r.System, r.Rate)
	}
	return fmt.Sprintf("%s (%d clients)", r.System, r.Clients)
}

// cdfPlot plots the latency distributions: percentile over latency.
func cdfPlot(g *group) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "latency CDF: " + g.title
	p.X.Label.Text = "latency (ms, log)"
	p.Y.Label.Text = "percentile"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = false, true
	for i, r := range g.results {
		var pts plotter.XYs
		for _, c := range r.CDF {
			pts = append(pts, plotter.XY{X: max(0.001, float64(c.Latency)/float64(time.Millisecond)), Y: c.Percentile})
		}
		if len(pts) == 0 {
			continue
		}
		if err := AddLine(p, i, label(r), pts); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// throughputPlot plots completions per second over the run; it is nil
// when no result has them (the steps of a composite operation).
func throughputPlot(g *group) (*plot.Plot, error) {
	if !slices.ContainsFunc(g.results, func(r *Result) bool { return len(r.PerSecond) > 0 }) {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "throughput: " + g.title
	p.X.Label.Text = "second of the run"
	p.Y.Label.Text = "ops/s"
	for i, r := range g.results {
		var pts plotter.XYs
		for s, n := range r.PerSecond {
			pts = append(pts, plotter.XY{X: float64(s), Y: float64(n)})
		}
		if len(pts) == 0 {
			continue
		}
		if err := AddLine(p, i, label(r), pts); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// AddLine adds a line of pts named name to p, in the i-th color of the
// palette.
func AddLine(p *plot.Plot, i int, name string, pts plotter.XYs) error {
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
