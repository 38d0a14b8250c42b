package systemtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/bench/chaos"
	"github.com/tokenstore/tokenstore/bench/history"
	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/bench/peers"
	"github.com/tokenstore/tokenstore/bench/xdc"
	"github.com/tokenstore/tokenstore/internal/memcachedtest"
	"github.com/tokenstore/tokenstore/internal/netem"
)

// TestBenchRefusesUsedDir: a --dir with an earlier run's data is refused
// at once, not started on and left waiting for a leader.
func TestBenchRefusesUsedDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "n1.log"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(benchBinary, "cluster", "--nodes", "1", "--dir", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is not empty") {
		t.Fatalf("bench cluster on a used --dir: err %v, output:\n%s", err, out)
	}
}

// TestBenchCluster starts `bench cluster` with --secure, drives it with
// `bench run` spread over its nodes, then stops it with SIGTERM: every
// process it started must be gone.
func TestBenchCluster(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(benchBinary, "cluster", "--nodes", "3", "--secure", "--dir", dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL) })

	var pids []int
	var addr string
	deadline := time.After(60 * time.Second)
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("bench cluster ended before printing its addresses:\n%s", stderr.String())
			}
			if a, ok := strings.CutPrefix(l, "addr "); ok {
				addr = a
			}
			if _, p, ok := strings.Cut(l, " pid="); ok {
				pid, err := strconv.Atoi(p)
				if err != nil {
					t.Fatalf("bad pid in %q", l)
				}
				pids = append(pids, pid)
			}
		case <-deadline:
			t.Fatalf("bench cluster printed no addresses in 60s:\n%s", stderr.String())
		}
	}
	urls := strings.Split(addr, ",")
	if len(urls) != 3 || len(pids) != 3 {
		t.Fatalf("want 3 URLs and 3 pids, got %q and %v", addr, pids)
	}
	for _, u := range urls {
		resp, err := probe.Get(u + "/readyz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s not ready: %v %v", u, resp, err)
		}
		resp.Body.Close()
	}
	for i := range 3 {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)))
		if err != nil || !bytes.Contains(b, []byte("node_tls=true")) {
			t.Errorf("--secure: want node n%d started with node_tls=true, got %v:\n%s", i+1, err, tail(string(b), 20))
		}
	}
	out, err := exec.Command(benchBinary, "run", "--addr", addr, "--workload", "issue,lookup_leader",
		"--clients", "4", "--duration", "300ms", "--tokens", "20").Output()
	if err != nil || !strings.HasPrefix(string(out), "issue ") || strings.Contains(string(out), " ops=0 ") {
		t.Fatalf("bench run over the cluster: %v\n%s", err, out)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	for range lines {
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("bench cluster after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("bench cluster ignored SIGTERM for 60s")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("node pid %d still exists after bench cluster ended (kill 0: %v)", pid, err)
		}
	}
}

// TestBenchLoopback runs every mode of `tokenstore-bench loopback`, as the
// make bench-* targets do, briefly: each starts its servers and prints a
// result with operations and no errors per workload. The cluster's reads
// on a follower may miss tokens issued just before through it (local
// reads do not wait for the follower to catch up): some of them may fail.
func TestBenchLoopback(t *testing.T) {
	for _, tc := range []struct {
		mode      string
		workloads []string
		lagging   []string // workloads whose results may count errors
	}{
		{"node", []string{"issue", "consume", "rotate", "lookup", "introspect"}, nil},
		{"nonce", []string{"nonce", "memcached"}, nil},
		{"cluster", []string{"issue", "consume", "rotate", "lookup", "introspect"}, []string{"lookup", "introspect"}},
		{"route", []string{"direct", "router"}, nil},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			out, err := exec.Command(benchBinary, "loopback", tc.mode, "--clients", "4", "--duration", "300ms",
				"--tokens", "20", "--dir", dir).Output()
			if err != nil {
				t.Fatalf("loopback %s: %v\n%s", tc.mode, err, out)
			}
			var results []string
			for _, l := range strings.Split(string(out), "\n") {
				if w, _, ok := strings.Cut(l, " "); ok && slices.Contains(tc.workloads, w) && strings.Contains(l, " ops=") {
					results = append(results, w)
					if strings.Contains(l, " ops=0 ") || (!strings.Contains(l, " errors=0 ") && !slices.Contains(tc.lagging, w)) {
						t.Errorf("want a %s result with ops and no errors, got: %s", w, l)
					}
				}
			}
			if !slices.Equal(results, tc.workloads) {
				t.Errorf("loopback %s: want results for %v, got %v:\n%s", tc.mode, tc.workloads, results, out)
			}
			if tc.mode == "cluster" && !strings.Contains(string(out), "reads on follower ") {
				t.Errorf("loopback cluster: want the follower named before its reads:\n%s", out)
			}
			if tc.mode == "route" && !strings.Contains(string(out), "ratio    router/direct: throughput ") {
				t.Errorf("loopback route: want the router/direct ratio:\n%s", out)
			}
		})
	}
}

// TestBenchRunOutputs runs closed and open loops, the oauth flow among
// them, and checks the JSON, markdown and PNG outputs.
func TestBenchRunOutputs(t *testing.T) {
	mc := memcachedtest.Start(t)
	d := startDaemon(t, t.TempDir(), "--memcached", mc.Addr, "--memcached-timeout", "2s")
	dir := t.TempDir()
	run := func(name string, args ...string) load.Report {
		t.Helper()
		js, md, plots := filepath.Join(dir, name+".json"), filepath.Join(dir, name+".md"), filepath.Join(dir, name+"-plots")
		args = append([]string{"run", "--addr", d.URL(), "--memcached", mc.Addr, "--clients", "4",
			"--duration", "500ms", "--tokens", "40", "--json", js, "--report", md, "--plots", plots}, args...)
		if out, err := exec.Command(benchBinary, args...).CombinedOutput(); err != nil {
			t.Fatalf("bench %v: %v\n%s", args, err, out)
		}
		var rep load.Report
		decodeFile(t, js, &rep)
		if b, err := os.ReadFile(md); err != nil || !bytes.Contains(b, []byte("| tokenstore |")) {
			t.Errorf("%s: want a markdown table with tokenstore rows, got %v:\n%s", md, err, b)
		}
		// A CDF and a throughput plot per workload, a CDF per oauth step.
		n := 0
		for _, r := range rep.Results {
			n += 2 + len(r.Steps)
		}
		checkPNGs(t, plots, n)
		return rep
	}

	closed := run("closed", "--workload", "issue,consume,oauth,oauth_batch,nonce,memcached", "--oauth-lookups", "2")
	checkResults(t, closed, "closed", "issue", "consume", "oauth", "oauth_batch", "nonce", "memcached")
	for i, want := range [][]string{
		{"oauth.issue_code", "oauth.consume_code", "oauth.issue_refresh", "oauth.issue_access", "oauth.lookup", "oauth.rotate"},
		{"oauth_batch.issue_code", "oauth_batch.exchange", "oauth_batch.lookup", "oauth_batch.rotate"},
	} {
		flow := closed.Results[2+i]
		var steps []string
		for _, s := range flow.Steps {
			steps = append(steps, s.Workload)
			// Errors are the steps in flight when the run ends.
			if s.Ops == 0 {
				t.Errorf("%s step %s has no samples", flow.Workload, s.Workload)
			}
		}
		if !slices.Equal(steps, want) {
			t.Errorf("%s steps %v, want %v", flow.Workload, steps, want)
		}
	}

	open := run("open", "--workload", "lookup,issue", "--rate", "200")
	checkResults(t, open, "open", "lookup", "issue")
	for _, r := range open.Results {
		if r.Rate != 200 || r.Ops < 50 || r.Ops > 101 {
			t.Errorf("open loop %s at 200/s for 500ms: %d ops at rate %v", r.Workload, r.Ops, r.Rate)
		}
	}
}

// checkResults wants one result per workload, in order, with samples,
// no errors and percentiles in order.
func checkResults(t *testing.T, rep load.Report, mode string, workloads ...string) {
	t.Helper()
	if len(rep.Results) != len(workloads) {
		t.Fatalf("want %d results, got %d", len(workloads), len(rep.Results))
	}
	for i, r := range rep.Results {
		if r.Workload != workloads[i] || r.Mode != mode || r.Ops == 0 || r.Errors != 0 || len(r.CDF) == 0 ||
			r.P50 > r.P99 || r.P99 > r.Max || len(r.PerSecond) == 0 {
			t.Errorf("result %d: want %s %s with samples and no errors, got %+v", i, mode, workloads[i], r)
		}
	}
}

// checkPNGs wants n PNG files in dir.
func checkPNGs(t *testing.T, dir string, n int) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil || len(files) != n {
		t.Fatalf("want %d PNGs in %s, got %v (%v)", n, dir, files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s is not a PNG (%v)", f, err)
		}
	}
}

// TestBenchPeers runs `bench peers` briefly with tokenstore, memcached,
// the HTTP floor and whichever of etcd and Redis are installed; each
// peer's results are checked in a subtest that is skipped when the peer
// is absent. On Linux every result must carry its servers' CPU time.
func TestBenchPeers(t *testing.T) {
	if _, err := exec.LookPath("memcached"); err != nil {
		t.Fatalf("memcached is not installed (make test installs it): %v", err)
	}
	systems := []string{"tokenstore", "memcached", load.FloorSystem}
	for _, p := range []string{"etcd", "redis"} {
		if _, err := exec.LookPath(peerBinary(p)); err == nil {
			systems = append(systems, p)
		}
	}
	dir := t.TempDir()
	js, plots := filepath.Join(dir, "peers.json"), filepath.Join(dir, "plots")
	out, err := exec.Command(benchBinary, "peers", "--systems", strings.Join(systems, ","), "--clients", "4",
		"--duration", "300ms", "--tokens", "30", "--scale", "20", "--dir", filepath.Join(dir, "data"),
		"--json", js, "--report", filepath.Join(dir, "peers.md"), "--plots", plots).CombinedOutput()
	if err != nil {
		t.Fatalf("bench peers: %v\n%s", err, out)
	}
	var rep load.Report
	decodeFile(t, js, &rep)
	files, _ := filepath.Glob(filepath.Join(plots, "*.png"))
	checkPNGs(t, plots, max(1, len(files)))
	if len(files) != 8 { // cdf and throughput for issue, consume, lookup and nonce
		t.Errorf("want 8 plots, got %v", files)
	}
	want := map[string][]string{"tokenstore": load.PeerOps, load.FloorSystem: load.PeerOps, "etcd": {"issue", "consume", "lookup"},
		"redis": {"issue", "consume", "lookup"}, "memcached": {"nonce"}}
	procs := map[string]int{"tokenstore": 3, "etcd": 3} // server processes; the others have one
	for _, sys := range peers.Systems {
		t.Run(sys, func(t *testing.T) {
			if !slices.Contains(systems, sys) {
				t.Skipf("%s is not installed", peerBinary(sys))
			}
			var ops []string
			for _, r := range rep.Results {
				if r.System != sys {
					continue
				}
				ops = append(ops, r.Workload)
				// A peer on a busy machine may time out a request now and
				// then (an etcd leader election): the smoke run checks the
				// wiring, so some errors are logged, not failed.
				if r.Ops == 0 || r.Errors == r.Ops || r.Live != 20 {
					t.Errorf("%s %s: want successful samples, 20 live tokens: %+v (%s)", sys, r.Workload, r, r.FirstError)
				} else if r.Errors > 0 {
					t.Logf("%s %s: %d of %d failed under load, first: %s", sys, r.Workload, r.Errors, r.Ops, r.FirstError)
				}
				if runtime.GOOS == "linux" && (r.ServerCPU == nil || len(r.ServerCPU.Procs) != max(1, procs[sys]) || r.ServerCPU.Total < 0) {
					t.Errorf("%s %s: want the CPU time of %d server processes, got %+v", sys, r.Workload, max(1, procs[sys]), r.ServerCPU)
				}
			}
			if !slices.Equal(ops, want[sys]) {
				t.Errorf("%s ran %v, want %v", sys, ops, want[sys])
			}
			if !slices.ContainsFunc(rep.Scales, func(s *load.Scale) bool { return s.System == sys && len(s.RSS) > 0 }) {
				t.Errorf("no RSS figures for %s", sys)
			}
			if sys == "tokenstore" && !slices.ContainsFunc(rep.Scales, func(s *load.Scale) bool {
				return s.System == sys && s.Snapshot > 0 && s.SnapshotBytes > 0 && s.Restore > 0 &&
					s.WritesSteady != nil && s.WritesSteady.Ops > 0 && s.WritesDuringSnapshot != nil && s.WritesDuringSnapshot.Ops > 0
			}) {
				t.Errorf("no snapshot, restart and writes-during-snapshot figures for tokenstore: %+v", rep.Scales)
			}
			if sys != "tokenstore" && !slices.ContainsFunc(rep.Ratios(), func(r load.Ratio) bool { return r.Peer == sys }) {
				t.Errorf("no tokenstore/%s ratios", sys)
			}
		})
	}
	if t.Failed() {
		t.Logf("bench peers output:\n%s", out)
	}
}

// peerBinary is the server binary of a peer system.
func peerBinary(system string) string {
	if system == "redis" {
		return "redis-server"
	}
	return system
}

// TestBenchChaos is the chaos smoke: a two-DC cluster of this binary in
// network namespaces, clients in both DCs (plain keys, reuse probes and
// authorization-code flows), the leader SIGKILLed and restarted, then the
// primary DC cut off from the other and healed; every check of the
// history must pass. Where namespaces cannot be built (not root) and make
// test did not ask for them, a node pause stands in for the partition, on
// loopback. It asserts correctness only, never timings.
func TestBenchChaos(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	faults := []string{chaos.FaultKillLeader, chaos.FaultPartitionPrimary}
	args := []string{"chaos", "--dcs", "a:3,b:2", "--duration", "30s", "--seed", "7",
		"--fault-every", "4s", "--downtime", "3s", "--partition-time", "8s", "--clients-per-dc", "2",
		"--dir", dir, "--out", out}
	if err := netem.Available(); err != nil {
		if os.Getenv(netem.RequireEnv) != "" {
			t.Fatal(err)
		}
		t.Logf("%v: a pause instead of the partition, on loopback", err)
		faults[1] = chaos.FaultPause
		args = append(args, "--netns=false")
	}
	cmd := exec.Command(benchBinary, append(args, "--faults", strings.Join(faults, ","))...)
	stdout, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("bench chaos: %v\n%s\n%s", err, stdout, stderr)
	}
	// Every node ran the node port over mutual TLS and gossip with a key.
	logs, _ := filepath.Glob(filepath.Join(dir, "n*.log"))
	if len(logs) != 5 {
		t.Errorf("want the logs of 5 nodes in the bench's directory, got %v", logs)
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if s := string(b); err != nil || !strings.Contains(s, "node_tls=true") || strings.Contains(s, raftWarning) || strings.Contains(s, gossipWarning) {
			t.Errorf("%s: want node_tls=true and no warning about the Raft port or gossip, got %v:\n%s", filepath.Base(l), err, tail(s, 20))
		}
	}
	var rep chaos.Report
	decodeFile(t, filepath.Join(out, "chaos.json"), &rep)
	if !rep.Pass || len(rep.Checks) != 7 {
		t.Fatalf("want 7 passing checks, got %+v\n%s", rep.Checks, stdout)
	}
	var kinds []string
	for _, f := range rep.Faults {
		kinds = append(kinds, f.Kind)
		if f.Err != "" {
			t.Errorf("fault %s on %s: %s", f.Kind, f.Node, f.Err)
		}
		if f.Kind == chaos.FaultPartitionPrimary && (!slices.Equal(f.MajorityDCs, []string{"a"}) || f.MajorityOK == 0) {
			t.Errorf("partition of DC a: want its clients, the majority side's, answered, got %+v", f)
		}
		// The cut-off side answers its clients (503s included) before
		// the partition heals, instead of holding writes until they time out.
		if f.Kind == chaos.FaultPartitionPrimary && (!slices.Equal(f.CutDCs, []string{"b"}) || f.CutWritesAnswered == 0) {
			t.Errorf("partition of DC a: want DC b's clients, the cut side's, answered before the heal, got %+v", f)
		}
	}
	if len(kinds) < len(faults) || !slices.Equal(kinds[:len(faults)], faults) {
		t.Errorf("want the faults %v first, got %+v", faults, rep.Faults)
	}
	if rep.Ops[history.OpIssue][history.OutcomeOK] == 0 || rep.Ops["final_"+history.OpLookup][history.OutcomeOK] == 0 {
		t.Errorf("no acknowledged issues or no final reads: %v", rep.Ops)
	}
	flowOK := 0
	for _, kind := range []string{history.OpFlowIssueCode, history.OpFlowConsume, history.OpFlowRace, history.OpFlowIssueRefresh,
		history.OpFlowIssueAccess, history.OpFlowLookup, history.OpFlowRotate} {
		flowOK += rep.Ops[kind][history.OutcomeOK]
	}
	if flowOK == 0 || rep.Ops["final_"+history.OpFlowLookup][history.OutcomeOK] == 0 {
		t.Errorf("no acknowledged flow step or no final read of a flow token: %v", rep.Ops)
	}
	ops, err := history.Read(filepath.Join(out, "history.json"))
	if err != nil || len(ops) == 0 {
		t.Fatalf("history.json: %d operations, %v", len(ops), err)
	}
	checkPNGs(t, out, 1)
}

// TestBenchXDC is the smoke of the cross-DC latency bench: a two-DC
// cluster in network namespaces, briefly, one client in each DC and one
// at the leader. Every group must report every operation, without
// errors, and DC b, the secondary, a verdict for each target. It asserts
// that the command runs and reports, never its timings. It needs network
// namespaces: skipped where they cannot be built, unless make test asked
// for them.
func TestBenchXDC(t *testing.T) {
	if err := netem.Available(); err != nil {
		if os.Getenv(netem.RequireEnv) != "" {
			t.Fatal(err)
		}
		t.Skipf("%v: the cross-DC bench needs network namespaces", err)
	}
	dir, out := t.TempDir(), t.TempDir()
	jsonOut, mdOut := filepath.Join(out, "xdc.json"), filepath.Join(out, "xdc.md")
	cmd := exec.Command(benchBinary, "xdc", "--dcs", "a:3,b:2", "--latency", "40ms", "--warmup", "1s", "--duration", "3s",
		"--clients-per-dc", "1", "--dir", dir, "--json", jsonOut, "--report", mdOut)
	stdout, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		logs, _ := filepath.Glob(filepath.Join(dir, "n*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s:\n%s", filepath.Base(l), tail(string(b), 30))
		}
		t.Fatalf("bench xdc: %v\n%s\n%s", err, stdout, stderr)
	}
	var rep xdc.Report
	decodeFile(t, jsonOut, &rep)
	if rep.LeaderDC == "" || rep.Leader == "" {
		t.Errorf("no leader in the report: %+v", rep)
	}
	for _, g := range []string{xdc.GroupLeader, "a", "b"} {
		for _, op := range xdc.Ops {
			r := rep.Row(g, op)
			switch {
			case r == nil:
				t.Errorf("no row for %s %s", g, op)
			case r.Count == 0 || r.Errors != 0:
				t.Errorf("%s %s: %d operations, %d errors (%s), want some and none", g, op, r.Count, r.Errors, r.FirstError)
			}
		}
	}
	if rep.LeaderDC == "a" {
		if n := len(rep.Targets); n != 4 {
			t.Errorf("want 4 verdicts for DC b, got %+v", rep.Targets)
		}
		for _, tg := range rep.Targets {
			if tg.DC != "b" {
				t.Errorf("a verdict for DC %s, want DC b's only: %+v", tg.DC, tg)
			}
		}
	}
	md, err := os.ReadFile(mdOut)
	if err != nil || !strings.Contains(string(md), "lookup_after_write") || !strings.Contains(string(stdout), "| DC b |") {
		t.Errorf("the markdown report and the output must hold the table: %v\n%s", err, stdout)
	}
	if t.Failed() {
		t.Logf("bench xdc output:\n%s", stdout)
	}
}

// decodeFile decodes the JSON file at path into v.
func decodeFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s does not decode: %v", path, err)
	}
}
