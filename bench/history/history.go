// Package history records what the clients of a chaos run did, each
// operation with its invoke and return times and its outcome (a definite
// answer, a certain failure, or unknown), and checks the recorded history:
// linearizability of single-use tokens against a porcupine model,
// exactly-once use, no lost acknowledged write, reuse detection, and the
// races and writes of the authorization-code flows.
package history

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// Operation kinds of a chaos history. Issue, consume and lookup act on the
// keys of the linearizability model; rotate, replay and child lookups are
// the steps of a reuse probe.
const (
	OpIssue       = "issue"
	OpConsume     = "consume"
	OpLookup      = "lookup"
	OpRotate      = "rotate"
	OpReplay      = "replay"
	OpLookupChild = "lookup_child"
)

// Operation kinds of the OAuth 2.0 authorization-code flows. The steps of
// one flow share Op.Flow, and the key of a step is the token it acts
// on: an issue's key is the token the node minted, empty when the issue got
// no answer.
const (
	// OpFlowIssueCode issues the oauth2_code that starts a flow's family.
	OpFlowIssueCode = "flow_issue_code"
	// OpFlowIssueRefresh issues an oauth2_refresh in the code's family.
	OpFlowIssueRefresh = "flow_issue_refresh"
	// OpFlowIssueAccess issues an access token in the code's family.
	OpFlowIssueAccess = "flow_issue_access"
	// OpFlowConsume consumes the code.
	OpFlowConsume = "flow_consume"
	// OpFlowRace is one of two concurrent consumes of the code, through
	// nodes of different DCs: one may use it, the other must be answered
	// token_reused.
	OpFlowRace = "flow_race"
	// OpFlowLookup reads a flow token at leader consistency: the access
	// token during the flow, every flow token in the final reads.
	OpFlowLookup = "flow_lookup"
	// OpFlowRotate rotates the refresh token, with an access token.
	OpFlowRotate = "flow_rotate"
)

// Outcomes of an operation.
const (
	// OutcomeOK is a definite answer: success or a business error.
	OutcomeOK = "ok"
	// OutcomeFailed is an operation that certainly had no effect: a read
	// that got no answer, or a request the API refused as invalid.
	OutcomeFailed = "failed"
	// OutcomeUnknown is a write that may or may not have taken effect:
	// a timeout, a lost connection, write_outcome_unknown, a 503.
	OutcomeUnknown = "unknown"
)

// Results of a successful operation; business errors are their wire codes
// (token_exists, token_consumed, token_not_found, token_revoked, ...).
const (
	ResultCreated = "created" // issue stored the token
	ResultUsed    = "used"    // consume or rotate used the token up
	ResultActive  = "active"  // lookup found the token valid
)

// Op is one operation of a chaos history, with its invoke and return
// times in nanoseconds since the start of the run (monotonic clock).
type Op struct {
	Client  int    `json:"client"`
	DC      string `json:"dc"`
	Kind    string `json:"op"`
	Key     string `json:"key"`
	Call    int64  `json:"call_ns"`
	Return  int64  `json:"return_ns"`
	Outcome string `json:"outcome"`
	Result  string `json:"result,omitempty"`
	Err     string `json:"error,omitempty"`
	// Probe numbers the steps of one reuse probe (0: not a probe).
	Probe int `json:"probe,omitempty"`
	// Flow numbers the steps of one authorization-code flow (0: not a
	// flow step).
	Flow int `json:"flow,omitempty"`
	// Final marks the verification reads made after the faults healed.
	Final bool `json:"final,omitempty"`
	// Answered: the node gave an HTTP answer, whatever its status (a 503
	// included), not a timeout or a lost connection.
	Answered bool `json:"answered,omitempty"`
}

// History records operations from many goroutines.
type History struct {
	start time.Time
	flows atomic.Int64
	mu    sync.Mutex
	ops   []Op
}

// New starts a history; its clock counts from now.
func New() *History { return &History{start: time.Now()} }

// Now is the time since the start of the history.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// NextFlow numbers a new flow of the run, from 1.
func (h *History) NextFlow() int { return int(h.flows.Add(1)) }

// Add records a finished operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns a copy of the operations recorded so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Write writes ops as JSON to path.
func Write(path string, ops []Op) error {
	b, err := json.MarshalIndent(ops, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Read reads a history Write wrote.
func Read(path string) ([]Op, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ops []Op
	return ops, json.Unmarshal(b, &ops)
}

// businessCodes are the API's definite answers about a token.
var businessCodes = map[string]bool{
	wire.CodeTokenExists: true, wire.CodeTokenConsumed: true, wire.CodeTokenNotFound: true,
	wire.CodeTokenRevoked: true, wire.CodeTokenReused: true, wire.CodeTokenExpired: true,
}

// Classify turns an operation's error into its outcome and result, the
// result of a success being success. A read is never unknown: it has no
// effect, so a read without an answer failed.
func Classify(kind string, err error, success string) (outcome, result string) {
	if err == nil {
		return OutcomeOK, success
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		if businessCodes[ce.Code] {
			return OutcomeOK, ce.Code
		}
		if ce.Status >= 400 && ce.Status < 500 && ce.Status != http.StatusRequestTimeout {
			return OutcomeFailed, ce.Code
		}
	}
	if kind == OpLookup || kind == OpLookupChild || kind == OpFlowLookup || errors.Is(err, syscall.ECONNREFUSED) {
		// A read has no effect; a refused connection never carried the
		// request.
		return OutcomeFailed, ""
	}
	// A 503 (no_leader, write_outcome_unknown, unavailable), a timeout or
	// a lost connection: the write may have been applied.
	return OutcomeUnknown, ""
}

// FlowIssued reports whether op is an acknowledged issue of a flow token,
// one that must be found after the faults healed.
func FlowIssued(op Op) bool {
	switch op.Kind {
	case OpFlowIssueCode, OpFlowIssueRefresh, OpFlowIssueAccess:
		return op.Key != "" && op.Outcome == OutcomeOK && op.Result == ResultCreated
	}
	return false
}
