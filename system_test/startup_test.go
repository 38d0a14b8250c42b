package systemtest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/proccluster"
	"github.com/tokenstore/tokenstore/internal/testpki"
)

// refusal runs serve with args, on loopback API and Raft addresses unless
// args override them, and returns its output once it has exited non-zero.
func refusal(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append([]string{"serve", "--data-dir", t.TempDir(), "--api-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, args...)
	out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve %v: want a refusal at start, it was still running after 30s: %s", args[1:], out)
	}
	if err == nil {
		t.Fatalf("serve %v: want a refusal, it exited 0: %s", args[1:], out)
	}
	return string(out)
}

// onAllInterfaces returns addr (a free 127.0.0.1 address) with its host
// replaced by 0.0.0.0: a bind that is not loopback, on a port that is free.
func onAllInterfaces(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("0.0.0.0", port)
}

// countLines counts the lines of logs that contain every one of subs.
func countLines(logs string, subs ...string) int {
	n := 0
lines:
	for _, l := range strings.Split(logs, "\n") {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue lines
			}
		}
		n++
	}
	return n
}

const (
	raftWarning   = "INSECURE: the Raft port is off loopback without TLS"
	gossipWarning = "INSECURE: gossip is off loopback without --gossip-key"
)

// TestRefusesExposedNodePorts: a Raft port off loopback without mutual
// TLS, or gossip off loopback without a key, refuses to start and says
// what to give, or that --insecure overrides.
func TestRefusesExposedNodePorts(t *testing.T) {
	pki := testpki.New(t).Issue(t, "n1")
	tlsFlags := []string{"--tls-cert", pki.Cert, "--tls-key", pki.Key, "--tls-ca", pki.CA}
	raftWant := []string{"refusing", "Raft port", "--tls-cert", "--tls-key", "--tls-ca", "--insecure"}
	gossipWant := []string{"refusing", "gossip", "--gossip-key", "--insecure"}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"raft on all interfaces", []string{"--raft-addr", "0.0.0.0:0"}, raftWant},
		{"raft on ::", []string{"--raft-addr", "[::]:0"}, raftWant},
		{"raft on a host name", []string{"--raft-addr", "node1.invalid:0"}, raftWant},
		{"raft advertised off loopback", []string{"--advertise-raft", "192.0.2.1:7401"}, raftWant},
		{"raft with only some TLS flags", []string{"--raft-addr", "0.0.0.0:0", "--tls-cert", pki.Cert}, []string{"--tls-cert, --tls-key and --tls-ca"}},
		{"gossip on all interfaces", append([]string{"--gossip-addr", "0.0.0.0:0", "--gossip-lan-addr", "127.0.0.1:0"}, tlsFlags...), gossipWant},
		{"LAN gossip on all interfaces", []string{"--gossip-addr", "127.0.0.1:0", "--gossip-lan-addr", "0.0.0.0:0"}, gossipWant},
		{"gossip advertised off loopback", []string{"--gossip-addr", "127.0.0.1:0", "--advertise-gossip", "192.0.2.1:7402"}, gossipWant},
		// The gossip addresses default to the Raft host, ports +1 and +2.
		{"gossip derived from the raft address", append([]string{"--raft-addr", "0.0.0.0:0", "--bootstrap-expect", "1"}, tlsFlags...), gossipWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := refusal(t, tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("serve %v: want the refusal to name %q, got: %s", tc.args, w, out)
				}
			}
		})
	}
}

// TestInsecureNodePortsStartWithWarnings: with --insecure both exposed
// ports start, and each is named in one warning line at every start.
func TestInsecureNodePortsStartWithWarnings(t *testing.T) {
	a, err := proccluster.FreeAddrs(3)
	if err != nil {
		t.Fatal(err)
	}
	raft, gossip, lan := a[0], a[1], a[2]
	d := startDaemon(t, t.TempDir(), "--insecure",
		"--raft-addr", onAllInterfaces(t, raft), "--advertise-raft", raft,
		"--gossip-addr", onAllInterfaces(t, gossip), "--advertise-gossip", gossip, "--gossip-lan-addr", lan)
	check := func(starts int) {
		t.Helper()
		logs := d.logs()
		for _, w := range []string{raftWarning, gossipWarning} {
			if n := countLines(logs, "level=WARN", w); n != starts {
				t.Errorf("after %d starts: want %d warning lines %q, got %d; log:\n%s", starts, starts, w, n, tail(logs, 40))
			}
		}
	}
	check(1)
	if err := d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	d.start()
	check(2)
}

// TestSecuredNodePortsOffLoopback: mutual TLS and a gossip key make the
// same exposed binds start without --insecure and without a warning.
func TestSecuredNodePortsOffLoopback(t *testing.T) {
	a, err := proccluster.FreeAddrs(3)
	if err != nil {
		t.Fatal(err)
	}
	raft, gossip, lan := a[0], a[1], a[2]
	pki := testpki.New(t).Issue(t, "n1")
	key := base64.StdEncoding.EncodeToString([]byte("tokenstore gossip key, 32 bytes!"))
	d := startDaemon(t, t.TempDir(), "--tls-cert", pki.Cert, "--tls-key", pki.Key, "--tls-ca", pki.CA, "--gossip-key", key,
		"--raft-addr", onAllInterfaces(t, raft), "--advertise-raft", raft,
		"--gossip-addr", onAllInterfaces(t, gossip), "--advertise-gossip", gossip, "--gossip-lan-addr", onAllInterfaces(t, lan), "--advertise-gossip-lan", lan)
	logs := d.logs()
	if strings.Contains(logs, "INSECURE") || !strings.Contains(logs, "node_tls=true") {
		t.Errorf("want a start with node_tls=true and no INSECURE warning, log:\n%s", tail(logs, 40))
	}
}

// TestProfiles: --pprof on the API port asks for the API's key, and
// --pprof-addr serves the profiles on a loopback listener of their own.
func TestProfiles(t *testing.T) {
	const key = "profile-reader-key-0123"
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("ops:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs, err := proccluster.FreeAddrs(1)
	if err != nil {
		t.Fatal(err)
	}
	pprofAddr := addrs[0]
	d := startDaemon(t, t.TempDir(), "--api-keys", keys, "--pprof", "--pprof-addr", pprofAddr)
	get := func(url, bearer string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := probe.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tc := range []struct {
		name, url, bearer string
		want              int
	}{
		{"API port without a key", d.URL() + "/debug/pprof/", "", http.StatusUnauthorized},
		{"API port with a wrong key", d.URL() + "/debug/pprof/heap", "not-the-key-at-all-0000", http.StatusUnauthorized},
		{"API port with the key", d.URL() + "/debug/pprof/", key, http.StatusOK},
		{"API port, a profile with the key", d.URL() + "/debug/pprof/goroutine?debug=1", key, http.StatusOK},
		{"own listener", "http://" + pprofAddr + "/debug/pprof/", "", http.StatusOK},
		{"own listener, a profile", "http://" + pprofAddr + "/debug/pprof/heap?debug=1", "", http.StatusOK},
		{"own listener serves profiles only", "http://" + pprofAddr + "/readyz", "", http.StatusNotFound},
		{"no command line (it may hold a key)", "http://" + pprofAddr + "/debug/pprof/cmdline", "", http.StatusNotFound},
	} {
		if code, body := get(tc.url, tc.bearer); code != tc.want {
			t.Errorf("%s: GET %s: want %d, got %d: %.200s", tc.name, tc.url, tc.want, code, body)
		}
	}
	if !strings.Contains(d.logs(), "pprof_addr="+pprofAddr) {
		t.Errorf("want the profile listener logged at start, log:\n%s", tail(d.logs(), 20))
	}
	if err := d.stop(); err != nil || !strings.Contains(d.logs(), "stopped cleanly") {
		t.Errorf("SIGTERM with a profile listener: want a clean stop, got %v, log:\n%s", err, tail(d.logs(), 20))
	}
}

// TestRefusesOpenProfiles: profiles off loopback without a key are refused,
// --insecure or not, and so is a --pprof-addr that is not loopback.
func TestRefusesOpenProfiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"--pprof on an open API", []string{"--pprof", "--api-addr", "0.0.0.0:0", "--insecure"}, "refusing --pprof"},
		{"--pprof-addr on all interfaces", []string{"--pprof-addr", "0.0.0.0:0"}, "refusing --pprof-addr"},
		{"--pprof-addr on a host name", []string{"--pprof-addr", "debug.invalid:6060", "--insecure"}, "refusing --pprof-addr"},
	} {
		if out := refusal(t, tc.args...); !strings.Contains(out, tc.want) {
			t.Errorf("%s: want %q, got: %s", tc.name, tc.want, out)
		}
	}
}

// -h on every command prints its usage and exits 0.
func TestHelpExitsZero(t *testing.T) {
	for _, c := range []struct {
		bin  string
		args []string
	}{
		{binary, []string{"-h"}}, {binary, []string{"serve", "-h"}}, {binary, []string{"token", "-h"}},
		{binary, []string{"token", "issue", "-h"}}, {binary, []string{"nonce", "-h"}}, {binary, []string{"route", "-h"}},
		{binary, []string{"route", "export", "-h"}},
		{benchBinary, []string{"-h"}}, {benchBinary, []string{"run", "-h"}}, {benchBinary, []string{"cluster", "-h"}},
		{benchBinary, []string{"peers", "-h"}}, {benchBinary, []string{"chaos", "-h"}}, {benchBinary, []string{"route", "-h"}},
		{benchBinary, []string{"echo", "-h"}}, {benchBinary, []string{"loopback", "-h"}}, {benchBinary, []string{"loopback", "node", "-h"}},
	} {
		out, err := exec.Command(c.bin, c.args...).CombinedOutput()
		if err != nil || !strings.Contains(strings.ToLower(string(out)), "usage") {
			t.Errorf("%s %s: %v, output %q; want exit 0 and the usage", filepath.Base(c.bin), strings.Join(c.args, " "), err, out)
		}
	}
}

// With --log-format json every line a node writes is JSON with slog's
// keys, Raft's own too.
func TestJSONLogsAreOneStream(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--log-format", "json")
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(d.logs()), "\n")
	raft := 0
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("a log line that is not a JSON object: %q: %v", l, err)
		}
		for _, key := range []string{"time", "level", "msg"} {
			if v, ok := rec[key].(string); !ok || v == "" {
				t.Errorf("a log line without slog's %q: %q", key, l)
			}
		}
		for _, key := range []string{"@level", "@message", "@module", "@timestamp"} {
			if _, ok := rec[key]; ok {
				t.Errorf("a log line with hclog's %q: %q", key, l)
			}
		}
		if rec["module"] == "raft" {
			raft++
		}
	}
	if raft == 0 {
		t.Fatalf("no line of Raft's (module raft) among %d lines", len(lines))
	}
}

// With --log-format json a node that cannot start says why in JSON too;
// a gossip key from the environment never shows in the usage.
func TestServeFailsInJSONAndHidesTheEnvKey(t *testing.T) {
	addrs, err := proccluster.FreeAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addrs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(binary, "serve", "--data-dir", t.TempDir(), "--log-format", "json",
		"--api-addr", addrs[0], "--raft-addr", addrs[1])
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("serve on a taken Raft port: want a failure, got exit 0: %s", out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("a line that is not JSON: %q", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, `"level":"ERROR"`) || !strings.Contains(last, "address already in use") {
		t.Errorf("last line %q: want the reason at ERROR", last)
	}

	const key = "c2VjcmV0LWdvc3NpcC1rZXktMzItYnl0ZXMhISEhISE="
	help := exec.Command(binary, "serve", "-h")
	help.Env = append(os.Environ(), "TOKENSTORE_GOSSIP_KEY="+key)
	out, err = help.CombinedOutput()
	if err != nil || strings.Contains(string(out), key) {
		t.Errorf("serve -h with $TOKENSTORE_GOSSIP_KEY: %v; the key must not be printed: %s", err, out)
	}
}
