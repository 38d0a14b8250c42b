package fsm

import (
	"errors"
	"fmt"
	"time"
)

// RequestWindow is how long, in log time, a request id is remembered. A
// retry under the same id comes within one request's deadline of the first
// attempt (the API's is 10s), and a first attempt that was not answered
// commits late only when a new leader, elected within seconds, commits
// it. Every write is remembered this long, so it is kept short: at 10,000
// writes/s, 300,000 entries.
const RequestWindow = 30 * time.Second

// request is the remembered outcome of a command that carried a request
// id, as a restore reads it and a look-up answers it: the window itself
// keeps it as a reqEntry (reqlog.go). Its records are the state's own
// stored records when they are the ones the command stored (an issue's, a
// use's): a remembered write costs no record of its own. Either way they
// are records in the arena that the request holds (state.share,
// state.drop); noHandle for none.
type request struct {
	id       string
	at       int64
	rec, acc handle
	rest     *Outcome // the outcome but its records, when any of it is set
}

// requestFrame is a remembered request in the form that is encoded, in
// snapshots.
type requestFrame struct {
	ID string `codec:"i"`
	At int64  `codec:"a"`
	// In version 2 of the stream, RecRef and AccRef name the outcome's
	// records by their place among the record frames, from 1, when they
	// are the state's own (Record and Access are nil then); 0 for none.
	RecRef uint32 `codec:"rn,omitempty"`
	AccRef uint32 `codec:"an,omitempty"`
	Outcome
}

// frameTo sets *f to r in its encodable form, with its records in *rec
// and *acc, views of st's arena: a snapshot walks every remembered
// request, and reuses one frame and two records for them all. A record
// refs names (its place among the snapshot's record frames) is named by
// it instead; refs is nil in version 1 of the stream.
func (r *request) frameTo(st *state, f *requestFrame, rec, acc *Record, refs *refTable) {
	*f = requestFrame{ID: r.id, At: r.at}
	if r.rest != nil {
		f.Outcome = *r.rest
	}
	f.Record, f.Access = nil, nil
	if r.rec != noHandle {
		if f.RecRef = refs.ref(r.rec); f.RecRef == 0 {
			st.recordTo(r.rec, rec, false)
			f.Record = rec
		}
	}
	if r.acc != noHandle {
		if f.AccRef = refs.ref(r.acc); f.AccRef == 0 {
			st.recordTo(r.acc, acc, false)
			f.Access = acc
		}
	}
}

// request returns f as it is remembered, its records compacted with st's
// pairs of kind and client id, or, named by their place, those of recs
// (the records restored so far, in the stream's order), shared.
func (f *requestFrame) request(st *state, recs []handle) (*request, error) {
	if f.RecRef == 0 && f.AccRef == 0 {
		return st.newRequest(f.ID, f.At, f.Outcome), nil
	}
	ref := func(n uint32, r *Record) (handle, error) {
		switch {
		case n == 0:
			return st.compactOf(r), nil
		case r != nil || uint64(n) > uint64(len(recs)):
			return noHandle, fmt.Errorf("request %s names record frame %d of %d", f.ID, n, len(recs))
		}
		return st.sharedOrCopy(recs[n-1]), nil
	}
	r := &request{id: f.ID, at: f.At}
	o := f.Outcome
	o.Record, o.Access = nil, nil
	st.setOutcome(r, o) // the rest
	var err error
	if r.rec, err = ref(f.RecRef, f.Record); err != nil {
		return nil, err
	}
	if r.acc, err = ref(f.AccRef, f.Access); err != nil {
		return nil, err
	}
	return r, nil
}

// outcome returns the remembered outcome, its records copies.
func (r *request) outcome(st *state) Outcome {
	var o Outcome
	if r.rest != nil {
		o = *r.rest
	}
	o.Record, o.Access = st.expand(r.rec), st.expand(r.acc)
	return o
}

// Result returns the remembered outcome.
func (r *request) Result(st *state) Result { return r.outcome(st).Result() }

// newRequest returns o remembered under id, sharing the records it names
// with the state when they are the last ones stored.
func (s *state) newRequest(id string, at int64, o Outcome) *request {
	r := &request{id: id, at: at}
	s.setOutcome(r, o)
	return r
}

// setOutcome sets the outcome of r, which has none yet, to o.
func (s *state) setOutcome(r *request, o Outcome) {
	r.rec, r.acc = s.compactOf(o.Record), s.compactOf(o.Access)
	if o.Sealed != nil || o.Count != 0 || o.Err != "" || o.Family != nil || o.Ops != nil || o.Op != 0 {
		// A copy of its own, made only here: o itself stays on the stack.
		rest := o
		rest.Record, rest.Access = nil, nil
		r.rest = &rest
	}
}

// compactOf returns r as a stored record that a request holds: the one
// the state just stored if it holds what r does (shared), a new one
// otherwise.
func (s *state) compactOf(r *Record) handle {
	if r == nil {
		return noHandle
	}
	if p := s.storedOf(r); p != noHandle && s.share(p) {
		return p
	}
	return s.own(s.compact(r))
}

// Outcome is a Result in the form that can be encoded: between nodes, and
// in snapshots for remembered requests. Records are shared, not copied.
type Outcome struct {
	Record *Record `codec:"r,omitempty"`
	Access *Record `codec:"ac,omitempty"`
	Sealed []byte  `codec:"x,omitempty"`
	Count  int     `codec:"c,omitempty"`
	Err    string  `codec:"e,omitempty"` // ErrName of the business outcome
	// Family is Result.Family.
	Family *RevokedFamily `codec:"fr,omitempty"`
	// Ops and Op are a ClientBatch's: Result.Ops and Result.Op.
	Ops []Outcome `codec:"o,omitempty"`
	Op  int       `codec:"op,omitempty"`
}

// Outcome returns res in its encodable form.
func (res Result) Outcome() Outcome {
	o := Outcome{Record: res.Record, Access: res.Access, Sealed: res.Sealed, Count: res.Count, Err: ErrName(res.Err), Family: res.Family, Op: res.Op}
	if res.Ops != nil {
		o.Ops = make([]Outcome, len(res.Ops))
		for i, r := range res.Ops {
			o.Ops[i] = r.Outcome()
		}
	}
	return o
}

// Result is the inverse of Result.Outcome.
func (o Outcome) Result() Result {
	res := Result{Record: o.Record, Access: o.Access, Sealed: o.Sealed, Count: o.Count, Err: ErrByName(o.Err), Family: o.Family, Op: o.Op}
	if o.Ops != nil {
		res.Ops = make([]Result, len(o.Ops))
		for i, r := range o.Ops {
			res.Ops[i] = r.Result()
		}
	}
	return res
}

// errNames names the business outcomes, so that results can be carried in
// snapshots and between nodes.
var errNames = map[string]error{
	"not_found":       ErrNotFound,
	"exists":          ErrExists,
	"expired":         ErrExpired,
	"consumed":        ErrConsumed,
	"revoked":         ErrRevoked,
	"kind_mismatch":   ErrKindMismatch,
	"client_mismatch": ErrClientMismatch,
	"reused":          ErrReused,
	"scope":           ErrScope,
	"family_revoked":  ErrFamilyRevoked,
	"bad_entry":       ErrBadEntry,
	"halted":          ErrHalted,
}

// ErrName returns the stable name of a business outcome ("" for nil). An
// outcome this build has no name for (one read from a newer node) keeps
// the name it came with.
func ErrName(err error) string {
	if err == nil {
		return ""
	}
	for name, e := range errNames {
		if errors.Is(err, e) {
			return name
		}
	}
	var u unknownOutcome
	if errors.As(err, &u) {
		return string(u)
	}
	return "internal"
}

// ErrByName is the inverse of ErrName; an unknown name is an error of its
// own, never nil, so that no failure reads as success.
func ErrByName(name string) error {
	if name == "" {
		return nil
	}
	if e, ok := errNames[name]; ok {
		return e
	}
	return unknownOutcome(name)
}

// unknownOutcome is an outcome whose name this build does not know.
type unknownOutcome string

func (u unknownOutcome) Error() string { return fmt.Sprintf("unknown outcome %q", string(u)) }
