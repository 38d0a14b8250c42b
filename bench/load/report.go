package load

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a bench command measured, with the machine it ran on.
type Report struct {
	Machine Machine           `json:"machine"`
	Started time.Time         `json:"started"`
	Results []*Result         `json:"results"`
	Scales  []*Scale          `json:"scales,omitempty"`
	Skipped map[string]string `json:"skipped,omitempty"` // system: why
}

// Scale is what a system looked like with Live tokens: memory per
// process and, for tokenstore, the longest of the snapshots every node
// took on request under issue load (its duration and size), and how long
// a follower took from a restart after SIGKILL to ready.
type Scale struct {
	System string `json:"system"`
	Live   int    `json:"live_tokens"`
	// RSSLoaded is each process's RSS once the scale's live tokens are
	// stored, before its operations (with what earlier scales' operations
	// left); RSS is after them, with the tokens they issued and consumed
	// (consumed ones are kept until they expire).
	RSSLoaded map[string]int64 `json:"rss_loaded_bytes,omitempty"`
	RSS       map[string]int64 `json:"rss_bytes"`
	Snapshot  time.Duration    `json:"snapshot_ns,omitempty"`
	// SnapshotBytes is the size of the snapshot Snapshot timed.
	SnapshotBytes int64 `json:"snapshot_bytes,omitempty"`
	// WritesSteady and WritesDuringSnapshot are the issue runs just
	// before the snapshots and while they were written.
	WritesSteady         *Result       `json:"writes_steady,omitempty"`
	WritesDuringSnapshot *Result       `json:"writes_during_snapshot,omitempty"`
	Restore              time.Duration `json:"restore_ns,omitempty"`
}

// Machine describes where a report was measured.
type Machine struct {
	CPUs     int               `json:"cpus"`
	CPU      string            `json:"cpu"`
	MemBytes int64             `json:"mem_bytes"`
	Kernel   string            `json:"kernel"`
	Go       string            `json:"go"`
	Versions map[string]string `json:"versions,omitempty"` // peer servers
}

// ReadMachine describes this machine and the peer servers installed.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Versions: map[string]string{}}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		var n int64
		fmt.Sscan(strings.TrimSuffix(kb, " kB"), &n)
		m.MemBytes = n * 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	for bin, flag := range map[string]string{"etcd": "--version", "redis-server": "--version", "memcached": "-V"} {
		if out, err := exec.Command(bin, flag).Output(); err == nil {
			m.Versions[bin] = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
		}
	}
	return m
}

// procField is the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// FloorSystem is the HTTP floor among the peers: a server that decodes
// each request's JSON and answers a fixed record, and does nothing else.
const FloorSystem = "floor"

// Ratio is tokenstore against one peer for one operation at one scale.
type Ratio struct {
	Op      string  `json:"op"`
	Live    int     `json:"live_tokens,omitempty"`
	Peer    string  `json:"peer"`
	OpsPerS float64 `json:"ops_per_s"` // tokenstore / peer: higher is better
	P99     float64 `json:"p99"`       // tokenstore / peer: lower is better
	// CPU is the servers' CPU per operation, tokenstore / peer (lower is
	// better), where both were measured.
	CPU float64 `json:"cpu_per_op,omitempty"`
}

// Ratios compares tokenstore with every peer that ran the same operation
// at the same scale.
func (rep *Report) Ratios() []Ratio {
	var out []Ratio
	for _, p := range rep.pairs() {
		ts, peer := p[0], p[1]
		x := Ratio{Op: ts.Workload, Live: ts.Live, Peer: peer.System,
			OpsPerS: ts.OpsPerS / peer.OpsPerS, P99: float64(ts.P99) / float64(peer.P99)}
		if ts.ServerCPU != nil && peer.ServerCPU != nil && peer.ServerCPU.PerOp > 0 {
			x.CPU = ts.ServerCPU.PerOp / peer.ServerCPU.PerOp
		}
		out = append(out, x)
	}
	return out
}

// pairs are tokenstore's result and a peer's for each operation and
// scale both ran, the peer's with samples.
func (rep *Report) pairs() [][2]*Result {
	var out [][2]*Result
	for _, ts := range rep.Results {
		if ts.System != "tokenstore" {
			continue
		}
		for _, p := range rep.Results {
			if p.System == "tokenstore" || p.Workload != ts.Workload || p.Live != ts.Live || p.OpsPerS == 0 || p.P99 == 0 {
				continue
			}
			out = append(out, [2]*Result{ts, p})
		}
	}
	return out
}

// cpuRatio is x.CPU for a table, "-" when it was not measured.
func cpuRatio(x Ratio) string {
	if x.CPU == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", x.CPU)
}

// allResults lists the results with the steps of composite operations.
func (rep *Report) allResults() []*Result {
	var out []*Result
	for _, r := range rep.Results {
		out = append(out, r)
		out = append(out, r.Steps...)
	}
	return out
}

// WriteTable writes the summary: one row per system and operation, then
// the ratios and the scale figures.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\top\tlive\tmode\tclients\tops/s\tp50\tp90\tp99\tp99.9\tmax\terrors\tcpu/op\t")
	for _, r := range rep.allResults() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t\n", r.System, r.Workload, r.Live, r.Mode, r.Clients,
			r.OpsPerS, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max), r.Errors, cpuPerOp(r))
	}
	if ratios := rep.Ratios(); len(ratios) > 0 {
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t\t\t\t")
		fmt.Fprintln(tw, "tokenstore/peer\top\tlive\t\t\tops/s\t\t\tp99\t\t\t\tcpu/op\t")
		for _, x := range ratios {
			fmt.Fprintf(tw, "%s\t%s\t%d\t\t\t%.2f\t\t\t%.2f\t\t\t\t%s\t\n", x.Peer, x.Op, x.Live, x.OpsPerS, x.P99, cpuRatio(x))
		}
	}
	if len(rep.Scales) > 0 {
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t\t\t\t")
		fmt.Fprintln(tw, "system\tlive\tmax RSS/process, loaded\tafter the ops\tsnapshot\trestore\t\t\t\t\t\t\t\t")
		for _, s := range rep.Scales {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t\t\t\t\t\t\t\t\n", s.System, s.Live, mib(maxRSS(s.RSSLoaded)), mib(maxRSS(s.RSS)), snapshotCell(s), ms(s.Restore))
		}
	}
	for _, s := range rep.Scales {
		if s.WritesSteady != nil && s.WritesDuringSnapshot != nil {
			fmt.Fprintf(tw, "%s at %d: issue steady %s; during the snapshot %s\t\t\t\t\t\t\t\t\t\t\t\t\t\n", s.System, s.Live, writesCell(s.WritesSteady), writesCell(s.WritesDuringSnapshot))
		}
	}
	for name, why := range rep.Skipped {
		fmt.Fprintf(tw, "skipped %s: %s\t\t\t\t\t\t\t\t\t\t\t\t\t\n", name, why)
	}
	return tw.Flush()
}

func maxRSS(m map[string]int64) int64 {
	var top int64
	for _, v := range m {
		top = max(top, v)
	}
	return top
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond))
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// WriteJSON writes the report as one JSON document to path.
func (rep *Report) WriteJSON(path string) error { return WriteJSONFile(path, rep) }

// WriteJSONFile writes v as one indented JSON document to path.
func WriteJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteFileWith creates path and writes it with write.
func WriteFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteMarkdown writes the report as markdown to path.
func (rep *Report) WriteMarkdown(path string) error {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "# tokenstore bench, %s\n\n", rep.Started.Format(time.RFC3339))
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %.1f GiB RAM, Linux %s, %s", m.CPUs, m.CPU, float64(m.MemBytes)/(1<<30), m.Kernel, m.Go)
	for _, k := range sortedKeys(m.Versions) {
		fmt.Fprintf(&b, "; %s", m.Versions[k])
	}
	b.WriteString(".\n\n## Results\n\n")
	b.WriteString("| system | op | live tokens | mode | clients | ops/s | p50 | p90 | p99 | p99.9 | max | errors | server CPU/op |\n")
	b.WriteString("|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rep.allResults() {
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %d | %.0f | %s | %s | %s | %s | %s | %d | %s |\n", r.System, r.Workload, r.Live, r.Mode,
			r.Clients, r.OpsPerS, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max), r.Errors, cpuPerOp(r))
	}
	if ratios := rep.Ratios(); len(ratios) > 0 {
		b.WriteString("\n## tokenstore / peer\n\n| op | live tokens | peer | ops/s ratio | p99 ratio | CPU/op ratio |\n|---|--:|---|--:|--:|--:|\n")
		for _, x := range ratios {
			fmt.Fprintf(&b, "| %s | %d | %s | %.2f | %.2f | %s |\n", x.Op, x.Live, x.Peer, x.OpsPerS, x.P99, cpuRatio(x))
		}
	}
	rep.writeFloor(&b)
	if len(rep.Scales) > 0 {
		b.WriteString("\n## Scale\n\n| system | live tokens | RSS per process, loaded | after the ops | snapshot | restart to ready |\n|---|--:|---|---|--:|--:|\n")
		for _, s := range rep.Scales {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", s.System, s.Live, rssList(s.RSSLoaded), rssList(s.RSS), snapshotCell(s), ms(s.Restore))
		}
		for _, s := range rep.Scales {
			if s.WritesSteady != nil && s.WritesDuringSnapshot != nil {
				fmt.Fprintf(&b, "\n%s at %d live tokens, issue: steady %s; during the snapshot %s\n", s.System, s.Live, writesCell(s.WritesSteady), writesCell(s.WritesDuringSnapshot))
			}
		}
	}
	for _, k := range sortedKeys(rep.Skipped) {
		fmt.Fprintf(&b, "\nSkipped %s: %s\n", k, rep.Skipped[k])
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// rssList is each process's RSS, by name.
func rssList(m map[string]int64) string {
	var rss []string
	for _, k := range sortedKeys(m) {
		rss = append(rss, k+" "+mib(m[k]))
	}
	return strings.Join(rss, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// writeFloor writes tokenstore beside the HTTP floor, operation by
// operation, if the floor ran.
func (rep *Report) writeFloor(b *strings.Builder) {
	var floor [][2]*Result
	for _, p := range rep.pairs() {
		if p[1].System == FloorSystem {
			floor = append(floor, p)
		}
	}
	if len(floor) == 0 {
		return
	}
	b.WriteString("\n## tokenstore beside the HTTP floor\n\n")
	b.WriteString("The floor decodes each request's JSON body and answers a fixed record-sized JSON, with the same requests.\n\n")
	b.WriteString("| op | live tokens | tokenstore ops/s | floor ops/s | tokenstore / floor | tokenstore p99 | floor p99 | tokenstore CPU/op | floor CPU/op |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range floor {
		ts, fl := p[0], p[1]
		fmt.Fprintf(b, "| %s | %d | %.0f | %.0f | %.2f | %s | %s | %s | %s |\n", ts.Workload, ts.Live, ts.OpsPerS, fl.OpsPerS,
			ts.OpsPerS/fl.OpsPerS, ms(ts.P99), ms(fl.P99), cpuPerOp(ts), cpuPerOp(fl))
	}
}

// snapshotCell is the snapshot's time, with its size when known.
func snapshotCell(s *Scale) string {
	if s.SnapshotBytes == 0 {
		return ms(s.Snapshot)
	}
	return fmt.Sprintf("%s (%s)", ms(s.Snapshot), mib(s.SnapshotBytes))
}

// writesCell is a run's rate and latency, in a line.
func writesCell(r *Result) string {
	return fmt.Sprintf("%.0f ops/s, p50 %s, p99 %s", r.OpsPerS, ms(r.P50), ms(r.P99))
}
