package history

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
func good() []Op {
	return []Op{
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

// flows are authorization-code flows that keep every promise: one that
// ran to its rotation, a race decided both ways, a race with an unknown
// consume, an issue without an answer, and the final reads.
func flows() []Op {
	return []Op{
		{Client: 4, Kind: OpFlowIssueCode, Key: "ac1", Flow: 1, Call: 0, Return: 2, Outcome: OutcomeOK, Result: ResultCreated},
		{Client: 4, Kind: OpFlowConsume, Key: "ac1", Flow: 1, Call: 3, Return: 4, Outcome: OutcomeOK, Result: ResultUsed},
		{Client: 4, Kind: OpFlowIssueRefresh, Key: "rt1", Flow: 1, Call: 5, Return: 6, Outcome: OutcomeOK, Result: ResultCreated},
		{Client: 4, Kind: OpFlowIssueAccess, Key: "at1", Flow: 1, Call: 7, Return: 8, Outcome: OutcomeOK, Result: ResultCreated},
		{Client: 4, Kind: OpFlowLookup, Key: "at1", Flow: 1, Call: 9, Return: 10, Outcome: OutcomeOK, Result: ResultActive},
		{Client: 4, Kind: OpFlowRotate, Key: "rt1", Flow: 1, Call: 11, Return: 12, Outcome: OutcomeOK, Result: ResultUsed},
		{Client: 5, Kind: OpFlowIssueCode, Key: "ac2", Flow: 2, Call: 0, Return: 2, Outcome: OutcomeOK, Result: ResultCreated},
		{Client: 5, Kind: OpFlowRace, Key: "ac2", Flow: 2, Call: 3, Return: 6, Outcome: OutcomeOK, Result: ResultUsed},
		{Client: 5, Kind: OpFlowRace, Key: "ac2", Flow: 2, Call: 3, Return: 7, Outcome: OutcomeOK, Result: wire.CodeTokenReused},
		{Client: 6, Kind: OpFlowIssueCode, Key: "ac3", Flow: 3, Call: 0, Return: 2, Outcome: OutcomeOK, Result: ResultCreated},
		{Client: 6, Kind: OpFlowRace, Key: "ac3", Flow: 3, Call: 3, Return: 9, Outcome: OutcomeUnknown},
		{Client: 6, Kind: OpFlowRace, Key: "ac3", Flow: 3, Call: 3, Return: 5, Outcome: OutcomeOK, Result: wire.CodeTokenReused},
		{Client: 7, Kind: OpFlowIssueCode, Flow: 4, Call: 0, Return: 9, Outcome: OutcomeUnknown},
		{Client: 3, Kind: OpFlowLookup, Key: "ac1", Call: 100, Return: 101, Outcome: OutcomeOK, Result: wire.CodeTokenConsumed, Final: true},
		{Client: 3, Kind: OpFlowLookup, Key: "rt1", Call: 100, Return: 101, Outcome: OutcomeOK, Result: wire.CodeTokenConsumed, Final: true},
		{Client: 3, Kind: OpFlowLookup, Key: "at1", Call: 100, Return: 101, Outcome: OutcomeOK, Result: ResultActive, Final: true},
		{Client: 3, Kind: OpFlowLookup, Key: "ac2", Call: 100, Return: 101, Outcome: OutcomeOK, Result: wire.CodeTokenConsumed, Final: true},
		{Client: 3, Kind: OpFlowLookup, Key: "ac3", Call: 100, Return: 101, Outcome: OutcomeOK, Result: wire.CodeTokenConsumed, Final: true},
	}
}

// withFlows is good() followed by flows(), so the indexes of good() hold.
func withFlows() []Op { return append(good(), flows()...) }

// opIndex is the index in ops of the operation of kind on key, final or not;
// for a race, the one that answered result.
func opIndex(t *testing.T, ops []Op, kind, key, result string, final bool) int {
	t.Helper()
	for i, op := range ops {
		if op.Kind == kind && op.Key == key && op.Final == final && (kind != OpFlowRace || op.Result == result) {
			return i
		}
	}
	t.Fatalf("no %s of %s (final %v) in the history", kind, key, final)
	return -1
}

func TestCheckHistoryPasses(t *testing.T) {
	for _, ops := range [][]Op{good(), withFlows()} {
		for _, c := range CheckAll(ops, 10*time.Second, "") {
			if !c.Pass {
				t.Errorf("%s failed on a good history of %d operations: %s", c.Name, len(ops), c.Detail)
			}
		}
	}
}

// Flow operations stay out of the linearizability model, which knows
// single-use tokens without families only.
func TestLinearizableLeavesFlowsOut(t *testing.T) {
	if got := linearizable(flows()); len(got) != 0 {
		t.Errorf("want no flow operation checked for linearizability, got %d", len(got))
	}
}

// failing returns the names of the checks that fail on ops.
func failing(t *testing.T, ops []Op, html string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range CheckAll(ops, 10*time.Second, html) {
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
	ops = append(ops, Op{Client: 2, Kind: OpLookup, Key: "k1", Call: 35, Return: 36, Outcome: OutcomeOK, Result: ResultActive})
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
	ops = good()
	ops[8].Outcome, ops[8].Result = OutcomeOK, ResultUsed // k2's consume acknowledged after its unknown issue
	ops[11].Result = ResultActive                         // ...and lost
	if _, ok := failing(t, ops, "")[CheckNoLostWrite]; !ok {
		t.Error("a lost consume of a key whose issue was unknown passed")
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

func TestCheckHistoryCatchesRaceDoubleUse(t *testing.T) {
	ops := withFlows()
	ops[opIndex(t, ops, OpFlowRace, "ac2", wire.CodeTokenReused, false)].Result = ResultUsed
	bad := failing(t, ops, "")
	for _, name := range []string{CheckCodeRace, CheckExactlyOnce} {
		if _, ok := bad[name]; !ok {
			t.Errorf("%s passed a code used by both consumes of a race", name)
		}
	}
	if _, ok := bad[CheckLinearizable]; ok {
		t.Errorf("a double use of a flow code failed the plain keys' model: %s", bad[CheckLinearizable])
	}

	ops = withFlows()
	ops[opIndex(t, ops, OpFlowRace, "ac2", wire.CodeTokenReused, false)].Result = wire.CodeTokenConsumed
	if _, ok := failing(t, ops, "")[CheckCodeRace]; !ok {
		t.Error("a race whose second consume was not detected as reuse passed")
	}
	ops = withFlows()
	ops[opIndex(t, ops, OpFlowRace, "ac3", wire.CodeTokenReused, false)].Result = wire.CodeTokenConsumed
	if _, ok := failing(t, ops, "")[CheckCodeRace]; !ok {
		t.Error("a lone definite race answer other than used or token_reused passed")
	}
	ops = withFlows()
	ops[opIndex(t, ops, OpFlowRace, "ac3", "", false)].Outcome = OutcomeFailed
	if _, ok := failing(t, ops, "")[CheckCodeRace]; !ok {
		t.Error("token_reused passed although the other consume certainly failed: nobody used the code")
	}
}

func TestCheckHistoryCatchesLostFlowWrite(t *testing.T) {
	cases := []struct {
		name   string
		key    string
		final  bool
		result string // the read's answer; "" drops the read
	}{
		{"access token issue lost", "at1", true, wire.CodeTokenNotFound},
		{"code consume lost", "ac1", true, ResultActive},
		{"rotation lost", "rt1", true, ResultActive},
		{"raced code reads active", "ac3", true, ResultActive},
		{"no final answer", "ac2", true, ""},
		{"leader read misses the issue", "at1", false, wire.CodeTokenNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ops := withFlows()
			i := opIndex(t, ops, OpFlowLookup, c.key, "", c.final)
			if c.result == "" {
				ops = append(ops[:i], ops[i+1:]...)
			} else {
				ops[i].Result = c.result
			}
			bad := failing(t, ops, "")
			if _, ok := bad[CheckFlowWrite]; !ok {
				t.Errorf("%s passed", CheckFlowWrite)
			}
			if _, ok := bad[CheckNoLostWrite]; ok {
				t.Errorf("a flow token failed the plain keys' %s: %s", CheckNoLostWrite, bad[CheckNoLostWrite])
			}
		})
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
		{OpFlowLookup, os.ErrDeadlineExceeded, OutcomeFailed},
		{OpFlowRace, errCode(410, wire.CodeTokenReused), OutcomeOK},
		{OpConsume, os.ErrDeadlineExceeded, OutcomeUnknown},
		{OpIssue, &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, OutcomeFailed},
		{OpIssue, &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, OutcomeUnknown},
	}
	for _, c := range cases {
		if got, _ := Classify(c.kind, c.err, "x"); got != c.outcome {
			t.Errorf("Classify(%s, %v) = %s, want %s", c.kind, c.err, got, c.outcome)
		}
	}
}

func errCode(status int, code string) error { return &client.Error{Status: status, Code: code} }
