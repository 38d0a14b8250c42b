package bench

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// good is a history with collisions, an unknown issue and an unknown
// consume, that is linearizable and keeps every promise.
func good() []HistOp {
	return []HistOp{
		{Client: 0, Kind: OpIssue, Key: "k1", Call: 0, Return: 10, Outcome: OutcomeOK, Result: ResultCreated},
		{Client: 1, Kind: OpIssue, Key: "k1", Call: 5, Return: 12, Outcome: OutcomeOK, Result: wire.CodeTokenExists},
		{Client: 2, Kind: OpLookup, Key: "k1", Call: 11, Return: 13, Outcome: OutcomeOK, Result: ResultActive},
		{Client: 0, Kind: OpConsume, Key: "k1", Call: 20, Return: 30, Outcome: OutcomeOK, Result: ResultUsed},
		{Client: 1, Kind: OpConsume, Key: "k1", Call: 21, Return: 31, Outcome: OutcomeOK, Result: wire.CodeTokenConsumed},
		{Client: 2, Kind: OpIssue, Key: "k2", Call: 20, Return: 40, Outcome: OutcomeUnknown},
		{Client: 1, Kind: OpLookup, Key: "k2", Call: 41, Return: 42, Outcome: OutcomeOK, Result: wire.CodeTokenNotFound},
		{Client: 1, Kind: OpLookup, Key: "k2", Call: 50, Return: 52, Outcome: OutcomeOK, Result: ResultActive},
		{Client: 0, Kind: OpConsume, Key: "k2", Call: 60, Return: 70, Outcome: OutcomeUnknown},
		{Client: 0, Kind: OpLookup, Key: "k2", Call: 71, Return: 72, Outcome: OutcomeFailed},
		{Client: 3, Kind: OpLookup, Key: "k1", Call: 100, Return: 101, Outcome: OutcomeOK, Result: wire.CodeTokenConsumed, Final: true},
		{Client: 3, Kind: OpLookup, Key: "k2", Call: 102, Return: 103, Outcome: OutcomeOK, Result: wire.CodeTokenConsumed, Final: true},
		// A reuse probe: rotate, replay detected, the successor revoked.
		{Client: 1, Kind: OpRotate, Key: "r1", Call: 1, Return: 2, Outcome: OutcomeOK, Result: ResultUsed, Probe: 1},
		{Client: 1, Kind: OpReplay, Key: "r1", Call: 3, Return: 4, Outcome: OutcomeOK, Result: wire.CodeTokenReused, Probe: 1},
		{Client: 1, Kind: OpLookupChild, Key: "c1", Call: 5, Return: 6, Outcome: OutcomeOK, Result: wire.CodeTokenRevoked, Probe: 1},
	}
}

func TestCheckHistoryPasses(t *testing.T) {
	for _, c := range CheckHistory(good(), 10*time.Second, "") {
		if !c.Pass {
			t.Errorf("%s failed on a good history: %s", c.Name, c.Detail)
		}
	}
}

// failing returns the names of the checks that fail on ops.
func failing(t *testing.T, ops []HistOp, html string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range CheckHistory(ops, 10*time.Second, html) {
		if !c.Pass {
			out[c.Name] = c.Detail
		}
	}
	return out
}

func TestCheckHistoryCatchesDoubleConsume(t *testing.T) {
	ops := good()
	ops[4].Result = ResultUsed // the second consume of k1 succeeds too
	html := filepath.Join(t.TempDir(), "lin.html")
	bad := failing(t, ops, html)
	for _, name := range []string{CheckLinearizable, CheckExactlyOnce} {
		if _, ok := bad[name]; !ok {
			t.Errorf("%s passed a double consume", name)
		}
	}
	if _, err := os.Stat(html); err != nil {
		t.Errorf("no visualization written: %v", err)
	}
}

func TestCheckHistoryCatchesStaleRead(t *testing.T) {
	ops := good()
	// A leader read after the consume returned finds the token active.
	ops = append(ops, HistOp{Client: 2, Kind: OpLookup, Key: "k1", Call: 35, Return: 36, Outcome: OutcomeOK, Result: ResultActive})
	if _, ok := failing(t, ops, "")[CheckLinearizable]; !ok {
		t.Error("a stale read passed")
	}
}

func TestCheckHistoryCatchesLostWrite(t *testing.T) {
	ops := good()
	ops[10].Result = wire.CodeTokenNotFound // k1 vanished
	bad := failing(t, ops, "")
	if _, ok := bad[CheckNoLostWrite]; !ok {
		t.Error("a lost issue passed")
	}
	ops = good()
	ops = append(ops[:10], ops[11:]...) // k1 has no final answer
	if _, ok := failing(t, ops, "")[CheckNoLostWrite]; !ok {
		t.Error("a key without a final answer passed")
	}
}

func TestCheckHistoryCatchesReuse(t *testing.T) {
	ops := good()
	ops[13].Result = wire.CodeTokenConsumed // replay not detected
	if _, ok := failing(t, ops, "")[CheckReuse]; !ok {
		t.Error("an undetected replay passed")
	}
	ops = good()
	ops[14].Result = ResultActive // the successor is still valid
	if _, ok := failing(t, ops, "")[CheckRevoked]; !ok {
		t.Error("a successor valid after reuse passed")
	}
	ops = good()
	ops[13].Result = ResultUsed // the replay rotated again
	if _, ok := failing(t, ops, "")[CheckExactlyOnce]; !ok {
		t.Error("a refresh token rotated twice passed")
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		kind    string
		err     error
		outcome string
	}{
		{OpIssue, nil, OutcomeOK},
		{OpIssue, errCode(409, wire.CodeTokenExists), OutcomeOK},
		{OpConsume, errCode(503, wire.CodeOutcomeUnknown), OutcomeUnknown},
		{OpConsume, errCode(503, wire.CodeNoLeader), OutcomeUnknown},
		{OpIssue, errCode(400, wire.CodeInvalidField), OutcomeFailed},
		{OpLookup, errCode(503, wire.CodeNoLeader), OutcomeFailed},
		{OpConsume, os.ErrDeadlineExceeded, OutcomeUnknown},
		{OpIssue, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, OutcomeFailed},
		{OpIssue, &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, OutcomeUnknown},
	}
	for _, c := range cases {
		if got, _ := classify(c.kind, c.err, "x"); got != c.outcome {
			t.Errorf("classify(%s, %v) = %s, want %s", c.kind, c.err, got, c.outcome)
		}
	}
}

func errCode(status int, code string) error { return &client.Error{Status: status, Code: code} }
