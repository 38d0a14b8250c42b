package history

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/tokenstore/tokenstore/api/wire"
)

// Check is the verdict of one check of a chaos history.
type Check struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// Names of the checks.
const (
	CheckLinearizable = "linearizable"
	CheckExactlyOnce  = "exactly_once"
	CheckNoLostWrite  = "no_lost_write"
	CheckReuse        = "reuse_detected"
	CheckRevoked      = "revoked_stays_revoked"
	CheckCodeRace     = "code_race"
	CheckFlowWrite    = "flow_no_lost_write"
)

// tokenState is the model's state of one single-use token.
type tokenState byte

const (
	stateAbsent tokenState = iota
	stateActive
	stateUsed
)

func (s tokenState) String() string {
	return [...]string{"absent", "active", "used"}[s]
}

// TokenModel is the sequential specification of one single-use token
// (a kind without reuse detection), partitioned by key: issue with a
// brought secret, consume, and lookup at leader consistency. An unknown
// outcome returns at the end of the history and its step accepts either
// effect, so it may be linearized as applied or, last, as never applied.
var TokenModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			k := o.Input.(Op).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return stateAbsent },
	Step: func(state, input, _ any) (bool, any) {
		return stepToken(state.(tokenState), input.(Op))
	},
	DescribeOperation: func(input, _ any) string {
		op := input.(Op)
		if op.Outcome == OutcomeUnknown {
			return fmt.Sprintf("%s(%s) -> ?", op.Kind, op.Key)
		}
		return fmt.Sprintf("%s(%s) -> %s", op.Kind, op.Key, op.Result)
	},
	DescribeState: func(state any) string { return state.(tokenState).String() },
}

// stepToken is one transition of TokenModel.
func stepToken(s tokenState, op Op) (bool, tokenState) {
	unknown := op.Outcome == OutcomeUnknown
	switch op.Kind {
	case OpIssue:
		switch {
		case unknown && s == stateAbsent:
			return true, stateActive
		case unknown:
			return true, s
		case op.Result == ResultCreated:
			return s == stateAbsent, stateActive
		case op.Result == wire.CodeTokenExists:
			return s != stateAbsent, s
		}
	case OpConsume:
		switch {
		case unknown && s == stateActive:
			return true, stateUsed
		case unknown:
			return true, s
		case op.Result == ResultUsed:
			return s == stateActive, stateUsed
		case op.Result == wire.CodeTokenConsumed:
			return s == stateUsed, s
		case op.Result == wire.CodeTokenNotFound:
			return s == stateAbsent, s
		}
	case OpLookup:
		switch op.Result {
		case ResultActive:
			return s == stateActive, s
		case wire.CodeTokenConsumed:
			return s == stateUsed, s
		case wire.CodeTokenNotFound:
			return s == stateAbsent, s
		}
	}
	return false, s
}

// linearizable are the operations TokenModel checks, as porcupine takes
// them: failed operations had no effect and are left out; an unknown one
// returns after everything else.
func linearizable(ops []Op) []porcupine.Operation {
	var end int64
	for _, op := range ops {
		end = max(end, op.Return)
	}
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Outcome == OutcomeFailed || (op.Kind != OpIssue && op.Kind != OpConsume && op.Kind != OpLookup) {
			continue
		}
		ret := op.Return
		if op.Outcome == OutcomeUnknown {
			ret = end + 1
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Return: ret})
	}
	return out
}

// CheckLinearizability checks the token operations of ops against
// TokenModel. When the history is not linearizable and html is set, it
// writes porcupine's visualization there.
func CheckLinearizability(ops []Op, timeout time.Duration, html string) Check {
	hist := linearizable(ops)
	res, info := porcupine.CheckOperationsVerbose(TokenModel, hist, timeout)
	c := Check{Name: CheckLinearizable, Pass: res == porcupine.Ok}
	switch res {
	case porcupine.Ok:
		c.Detail = fmt.Sprintf("%d operations linearizable", len(hist))
	case porcupine.Unknown:
		c.Detail = fmt.Sprintf("undecided after %s (%d operations)", timeout, len(hist))
	default:
		c.Detail = fmt.Sprintf("%d operations: not linearizable", len(hist))
		if html != "" {
			if err := porcupine.VisualizePath(TokenModel, info, html); err != nil {
				c.Detail += fmt.Sprintf("; visualization: %v", err)
			} else {
				c.Detail += "; see " + html
			}
		}
	}
	return c
}

// CheckExactlyOnceUse fails when a token was used successfully more than
// once, across all clients: any operation answered used counts for its
// key, so this covers consumes of plain keys, rotations of the probes and
// the flows' code consumes (raced or not) and rotations.
func CheckExactlyOnceUse(ops []Op) Check {
	uses := map[string]int{}
	for _, op := range ops {
		if op.Outcome == OutcomeOK && op.Result == ResultUsed {
			uses[op.Key]++
		}
	}
	var twice []string
	for k, n := range uses {
		if n > 1 {
			twice = append(twice, fmt.Sprintf("%s×%d", k, n))
		}
	}
	sort.Strings(twice)
	c := Check{Name: CheckExactlyOnce, Pass: len(twice) == 0}
	c.Detail = fmt.Sprintf("%d tokens used, %d used more than once", len(uses), len(twice))
	if len(twice) > 0 {
		c.Detail += ": " + firstFew(twice)
	}
	return c
}

// CheckNoLostWrites compares the final reads with what was acknowledged:
// a token whose issue was acknowledged must be found, and one whose
// consume was acknowledged must read as consumed, whatever its issue's
// outcome. A key with an acknowledged write and no final answer fails
// too.
func CheckNoLostWrites(ops []Op) Check {
	issued, used := map[string]bool{}, map[string]string{}
	final := map[string]string{}
	for _, op := range ops {
		switch {
		case op.Final && op.Kind == OpLookup && op.Outcome == OutcomeOK:
			final[op.Key] = op.Result
		case op.Kind == OpIssue && op.Outcome == OutcomeOK && op.Result == ResultCreated:
			issued[op.Key] = true
		case op.Kind == OpConsume && op.Outcome == OutcomeOK && op.Result == ResultUsed:
			used[op.Key] = op.Kind
		}
	}
	keys := maps.Clone(issued) // a consume acknowledged after an unknown issue counts too
	for k := range used {
		keys[k] = true
	}
	lost := contradicted(keys, used, final)
	c := Check{Name: CheckNoLostWrite, Pass: len(lost) == 0}
	c.Detail = fmt.Sprintf("%d acknowledged issues, %d acknowledged consumes, %d lost", len(issued), len(used), len(lost))
	if len(lost) > 0 {
		c.Detail += ": " + firstFew(lost)
	}
	return c
}

// CheckReuseProbes checks the reuse probes: replaying a refresh token
// that was rotated must answer token_reused, and every later definite
// read of the successor must find it revoked, the final reads included.
func CheckReuseProbes(ops []Op) (reuse, revoked Check) {
	type probe struct {
		rotated, replay  *Op
		child            string
		reads, readsLate []Op
	}
	probes := map[int]*probe{}
	get := func(id int) *probe {
		if probes[id] == nil {
			probes[id] = &probe{}
		}
		return probes[id]
	}
	children := map[string]int{}
	for i := range ops {
		op := &ops[i]
		if op.Probe == 0 {
			continue
		}
		p := get(op.Probe)
		switch op.Kind {
		case OpRotate:
			if op.Outcome == OutcomeOK && op.Result == ResultUsed {
				p.rotated = op
			}
		case OpReplay:
			if op.Outcome == OutcomeOK {
				p.replay = op
			}
		case OpLookupChild:
			children[op.Key] = op.Probe
			if op.Outcome == OutcomeOK {
				p.reads = append(p.reads, *op)
			}
		}
	}
	var missed, unrevoked []string
	detected, checkedReads := 0, 0
	for id, p := range probes {
		if p.rotated == nil || p.replay == nil {
			continue
		}
		if p.replay.Result != wire.CodeTokenReused {
			missed = append(missed, fmt.Sprintf("probe %d: replay answered %s", id, p.replay.Result))
			continue
		}
		detected++
		for _, r := range p.reads {
			if r.Call < p.replay.Return {
				continue
			}
			checkedReads++
			if r.Result != wire.CodeTokenRevoked && r.Result != wire.CodeTokenReused {
				unrevoked = append(unrevoked, fmt.Sprintf("probe %d: successor read %s", id, r.Result))
			}
		}
	}
	sort.Strings(missed)
	sort.Strings(unrevoked)
	reuse = Check{Name: CheckReuse, Pass: len(missed) == 0,
		Detail: fmt.Sprintf("%d probes, %d replays detected, %d missed", len(probes), detected, len(missed))}
	if len(missed) > 0 {
		reuse.Detail += ": " + firstFew(missed)
	}
	revoked = Check{Name: CheckRevoked, Pass: len(unrevoked) == 0,
		Detail: fmt.Sprintf("%d reads of revoked successors, %d found valid", checkedReads, len(unrevoked))}
	if len(unrevoked) > 0 {
		revoked.Detail += ": " + firstFew(unrevoked)
	}
	return reuse, revoked
}

// CheckCodeRaces checks the flows that consumed their code twice at once
// through two DCs. Reuse detection is on for oauth2_code, so when both
// consumes got a definite answer exactly one used the code and the other
// was answered token_reused; both used is a double use. With one definite
// answer, it must be used, or token_reused when the other consume's
// outcome is unknown (it may have used the code); one that certainly
// failed left the code unused, so token_reused is then wrong.
func CheckCodeRaces(ops []Op) Check {
	races := map[int][]Op{}
	for _, op := range ops {
		if op.Kind == OpFlowRace {
			races[op.Flow] = append(races[op.Flow], op)
		}
	}
	var bad []string
	decided, doubles := 0, 0
	for id, race := range races {
		var answers, others []string
		for _, op := range race {
			if op.Outcome == OutcomeOK {
				answers = append(answers, op.Result)
			} else {
				others = append(others, op.Outcome)
			}
		}
		unknown := slices.Contains(others, OutcomeUnknown)
		sort.Strings(answers)
		switch {
		case len(answers) == 2 && answers[0] == ResultUsed && answers[1] == ResultUsed:
			decided++
			doubles++
			bad = append(bad, fmt.Sprintf("flow %d: code used twice", id))
		case len(answers) == 2:
			decided++
			if answers[0] != wire.CodeTokenReused || answers[1] != ResultUsed {
				bad = append(bad, fmt.Sprintf("flow %d: answered %s and %s", id, answers[0], answers[1]))
			}
		case len(answers) == 1 && answers[0] != ResultUsed && (answers[0] != wire.CodeTokenReused || !unknown):
			bad = append(bad, fmt.Sprintf("flow %d: answered %s, the other consume %s", id, answers[0], strings.Join(others, ",")))
		}
	}
	sort.Strings(bad)
	c := Check{Name: CheckCodeRace, Pass: len(bad) == 0}
	c.Detail = fmt.Sprintf("%d code races, %d with both answers definite, %d double uses, %d failed", len(races), decided, doubles, len(bad))
	if len(bad) > 0 {
		c.Detail += ": " + firstFew(bad)
	}
	return c
}

// CheckFlowWrites compares what the flows were told with the final reads
// of their tokens. It stands apart from CheckNoLostWrites because flow
// tokens live otherwise than the plain keys: minted by the node, in
// families, used up by rotation, and read back as flow_lookup, outside the
// linearizability model. A token whose issue was acknowledged must have a
// final answer that is not token_not_found (active, consumed, or revoked
// with its family), and no leader read invoked after the issue returned
// may answer token_not_found. A code whose consume was acknowledged (or
// answered token_reused in a race: the other consume used it) and a
// refresh token whose rotation was acknowledged must read token_consumed:
// a lookup of a used code or refresh token answers its consumed tombstone,
// which a family revocation leaves as it is.
func CheckFlowWrites(ops []Op) Check {
	issued := map[string]int64{} // token → return of its acknowledged issue
	used := map[string]string{}  // token → the step that used it
	final := map[string]string{}
	for _, op := range ops {
		switch {
		case FlowIssued(op):
			issued[op.Key] = op.Return
		case op.Outcome != OutcomeOK:
		case op.Kind == OpFlowLookup && op.Final:
			final[op.Key] = op.Result
		case (op.Kind == OpFlowConsume || op.Kind == OpFlowRotate) && op.Result == ResultUsed,
			op.Kind == OpFlowRace && (op.Result == ResultUsed || op.Result == wire.CodeTokenReused):
			used[op.Key] = op.Kind
		}
	}
	var lost []string
	for _, op := range ops {
		ret, ok := issued[op.Key]
		if ok && op.Kind == OpFlowLookup && !op.Final && op.Outcome == OutcomeOK &&
			op.Result == wire.CodeTokenNotFound && op.Call > ret {
			lost = append(lost, fmt.Sprintf("flow %d: %s read token_not_found after its issue", op.Flow, op.Key))
		}
	}
	keys := map[string]bool{} // a flow uses only tokens it was told it issued
	for k := range issued {
		keys[k] = true
	}
	lost = append(lost, contradicted(keys, used, final)...)
	sort.Strings(lost)
	c := Check{Name: CheckFlowWrite, Pass: len(lost) == 0}
	c.Detail = fmt.Sprintf("%d acknowledged flow issues, %d tokens known used, %d lost", len(issued), len(used), len(lost))
	if len(lost) > 0 {
		c.Detail += ": " + firstFew(lost)
	}
	return c
}

// contradicted lists, sorted, the keys whose final read contradicts an
// acknowledged write: no final answer, token_not_found, or not consumed
// although used[key], the step that used it, was acknowledged.
func contradicted(keys map[string]bool, used, final map[string]string) []string {
	var out []string
	for k := range keys {
		f, ok := final[k]
		switch {
		case !ok:
			out = append(out, k+" (no final answer)")
		case f == wire.CodeTokenNotFound:
			out = append(out, k+" (issue lost)")
		case used[k] != "" && f != wire.CodeTokenConsumed:
			out = append(out, k+" ("+used[k]+" lost: "+f+")")
		}
	}
	sort.Strings(out)
	return out
}

// CheckAll runs every check on ops.
func CheckAll(ops []Op, timeout time.Duration, html string) []Check {
	reuse, revoked := CheckReuseProbes(ops)
	return []Check{
		CheckLinearizability(ops, timeout, html),
		CheckExactlyOnceUse(ops),
		CheckNoLostWrites(ops),
		reuse,
		revoked,
		CheckCodeRaces(ops),
		CheckFlowWrites(ops),
	}
}

// firstFew joins up to ten items.
func firstFew(items []string) string {
	if len(items) > 10 {
		return strings.Join(items[:10], ", ") + fmt.Sprintf(" and %d more", len(items)-10)
	}
	return strings.Join(items, ", ")
}
