package load

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewServerCPU(t *testing.T) {
	before := map[string]time.Duration{"n1": time.Second, "n2": 2 * time.Second, "gone": time.Second}
	after := map[string]time.Duration{"n1": 3 * time.Second, "n2": 3 * time.Second, "new": time.Second}
	c := NewServerCPU(before, after, 1000)
	if c.Total != 3*time.Second || c.PerOp != 3000 || len(c.Procs) != 2 || c.Procs["n1"] != 2*time.Second {
		t.Errorf("NewServerCPU = %+v; want 3s in all from n1 and n2, 3000µs per op", c)
	}
	if c := NewServerCPU(before, after, 0); c.PerOp != 0 {
		t.Errorf("no operations: PerOp = %v, want 0", c.PerOp)
	}
}

// TestReportFloor wants the ratios to carry CPU where both sides have it
// and the markdown to set tokenstore beside the floor.
func TestReportFloor(t *testing.T) {
	res := func(system, op string, opsPerS float64, cpu float64) *Result {
		r := &Result{System: system, Workload: op, Live: 10, Ops: 100, OpsPerS: opsPerS, P50: time.Millisecond, P99: 4 * time.Millisecond}
		if cpu > 0 {
			r.ServerCPU = &ServerCPU{Total: time.Duration(cpu*100) * time.Microsecond, PerOp: cpu}
		}
		return r
	}
	rep := &Report{Results: []*Result{
		res("tokenstore", "issue", 3000, 300), res(FloorSystem, "issue", 20000, 50),
		res("tokenstore", "nonce", 12000, 0), res(FloorSystem, "nonce", 20000, 50), res("etcd", "issue", 1000, 600),
	}}
	want := map[string]Ratio{
		"issue/floor": {Op: "issue", Live: 10, Peer: FloorSystem, OpsPerS: 0.15, P99: 1, CPU: 6},
		"nonce/floor": {Op: "nonce", Live: 10, Peer: FloorSystem, OpsPerS: 0.6, P99: 1},
		"issue/etcd":  {Op: "issue", Live: 10, Peer: "etcd", OpsPerS: 3, P99: 1, CPU: 0.5},
	}
	got := rep.Ratios()
	if len(got) != len(want) {
		t.Fatalf("Ratios = %+v, want %d", got, len(want))
	}
	for _, x := range got {
		if w := want[x.Op+"/"+x.Peer]; x != w {
			t.Errorf("ratio %s/%s = %+v, want %+v", x.Op, x.Peer, x, w)
		}
	}
	path := filepath.Join(t.TempDir(), "report.md")
	if err := rep.WriteMarkdown(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"| issue | 10 | 3000 | 20000 | 0.15 | 4.000ms | 4.000ms | 300µs | 50µs |",
		"| nonce | 10 | 12000 | 20000 | 0.60 | 4.000ms | 4.000ms | - | 50µs |",
		"| issue | 10 | etcd | 3.00 | 1.00 | 0.50 |",
	} {
		if !strings.Contains(string(b), line) {
			t.Errorf("the markdown has no line %q:\n%s", line, b)
		}
	}
}

// A run's line names what failed first, so that a run without --json
// still tells why its errors are there.
func TestResultLineNamesTheFirstError(t *testing.T) {
	r := &Result{Workload: "consume", Clients: 1, Ops: 3, Errors: 1, FirstError: "api: 410 consumed"}
	if got := r.String(); !strings.Contains(got, `errors=1`) || !strings.HasSuffix(got, ` first_error="api: 410 consumed"`) {
		t.Fatalf("String() = %q, want the errors and the first one", got)
	}
	r.Errors, r.FirstError = 0, ""
	if got := r.String(); strings.Contains(got, "first_error") {
		t.Fatalf("String() = %q names a first error of a run without errors", got)
	}
}
