package fsm

import (
	"errors"
	"fmt"
	"time"
)

// RequestWindow is how long, in log time, a request id is remembered. A
// retry under the same id comes within one request's deadline of the first
// attempt (seconds), or when a new leader commits the first attempt after
// an election; two minutes covers both with room to spare.
const RequestWindow = 2 * time.Minute

// request is the remembered outcome of a command that carried a request
// id. Record is shared with the state (records are never modified).
type request struct {
	ID     string  `codec:"i"`
	At     int64   `codec:"a"`
	Record *Record `codec:"r,omitempty"`
	Count  int     `codec:"c,omitempty"`
	Err    string  `codec:"e,omitempty"` // ErrName of the business outcome
}

func (r *request) result() Result {
	return Result{Record: r.Record, Count: r.Count, Err: ErrByName(r.Err)}
}

// request returns the remembered outcome of id, or nil.
func (s *state) request(id string) *request {
	if id == "" {
		return nil
	}
	r, _ := s.reqs.Get(&request{ID: id})
	return r
}

func (s *state) remember(id string, at int64, res Result) {
	r := &request{ID: id, At: at, Record: res.Record, Count: res.Count, Err: ErrName(res.Err)}
	s.reqs.ReplaceOrInsert(r)
	s.reqsByAt.ReplaceOrInsert(r)
}

// forgetRequests drops the ids remembered before at.
func (s *state) forgetRequests(before int64) {
	for {
		r, ok := s.reqsByAt.Min()
		if !ok || r.At >= before {
			return
		}
		s.reqsByAt.DeleteMin()
		s.reqs.Delete(r)
	}
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
}

// ErrName returns the stable name of a business outcome ("" for nil).
func ErrName(err error) string {
	if err == nil {
		return ""
	}
	for name, e := range errNames {
		if errors.Is(err, e) {
			return name
		}
	}
	panic(fmt.Sprintf("fsm: no name for outcome %v", err))
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
	return fmt.Errorf("unknown outcome %q", name)
}
