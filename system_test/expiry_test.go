package systemtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tokenstore/tokenstore/bench/expiry"
)

// TestBenchExpiry is the smoke of the mass-expiry bench: a few thousand
// tokens expiring within seconds under lookups, on one node. Every
// expired token must be collected, every lookup of a live token answered,
// and the report must hold each phase. It asserts what the run did, never
// its timings.
func TestBenchExpiry(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	jsonOut := filepath.Join(out, "expiry.json")
	const tokens = 3000
	cmd := exec.Command(benchBinary, "expiry", "--tokens", "3000", "--live", "100", "--window", "3s", "--gc-grace", "1s",
		"--expire-after", "10s", "--lookup-rate", "100", "--segment", "1s", "--after", "2s", "--max-wait", "2m",
		"--clients", "8", "--dir", dir, "--json", jsonOut)
	stdout, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		b, _ := os.ReadFile(filepath.Join(dir, "n1.log"))
		t.Fatalf("bench expiry: %v\n%s\n%s\nn1.log:\n%s", err, stdout, stderr, tail(string(b), 30))
	}
	var rep expiry.Report
	decodeFile(t, jsonOut, &rep)
	if rep.CleanS < 0 || rep.GCDeleted < tokens {
		t.Errorf("collected %d of %d expired tokens, back to the live ones at %v s", rep.GCDeleted, tokens, rep.CleanS)
	}
	phases := map[string]*expiry.Phase{}
	for _, p := range rep.Phases {
		phases[p.Name] = p
		if p.Ops == 0 || p.Errors != 0 {
			t.Errorf("phase %s: %d lookups, %d errors, want some and none", p.Name, p.Ops, p.Errors)
		}
	}
	for _, name := range []string{"before", "expiring", "collecting", "after"} {
		if phases[name] == nil {
			t.Errorf("no phase %s in %+v", name, rep.Phases)
		}
	}
}
