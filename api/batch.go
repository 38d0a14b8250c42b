package api

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/fsm"
)

// batchBody is the body of POST /v1/batch as it is first read: each op is
// decoded by the request type its "op" names.
type batchBody struct {
	Ops []json.RawMessage `json:"ops"`
}

// The ops as they are decoded: the single call's request and "op".
type (
	issueOpBody struct {
		Op string `json:"op"`
		wire.IssueRequest
	}
	consumeOpBody struct {
		Op string `json:"op"`
		wire.ConsumeRequest
	}
	revokeOpBody struct {
		Op string `json:"op"`
		wire.RevokeRequest
	}
	rotateOpBody struct {
		Op string `json:"op"`
		wire.RotateRequest
	}
	revokeFamilyOpBody struct {
		Op string `json:"op"`
		wire.RevokeFamilyRequest
	}
)

// batchOp is one op of a batch: its command, and what its answer needs.
type batchOp struct {
	name    string
	cmd     fsm.Command
	secret  string // an issue's
	consume *wire.ConsumeRequest
	rotate  *wire.RotateRequest
	minted  rotateMint
}

// batch applies up to wire.MaxBatchOps issues, consumes, revocations,
// rotations and family revocations in order, all or nothing, as one write: one log entry under
// one request id, so a retry by the cluster applies it once. Each op is
// decoded, checked and answered as its single call is; a failing op's
// error is its single call's, naming the op.
func (s *Server) batch(w http.ResponseWriter, r *http.Request) *Error {
	var req batchBody
	if e := decodeJSON(w, r, &req, false); e != nil {
		return e
	}
	if e := checkBatchLen(len(req.Ops)); e != nil {
		return e
	}
	ops := make([]batchOp, len(req.Ops))
	cmds := make([]fsm.Command, len(req.Ops))
	gen := caller(r)
	for i, raw := range req.Ops {
		op, e := s.batchOp(raw, gen)
		if e != nil {
			e.Op = &i
			return e
		}
		ops[i], cmds[i] = op, op.cmd
	}
	cb, err := fsm.NewClientBatch(cmds...)
	if err != nil {
		return errorf(http.StatusInternalServerError, wire.CodeInternal, "encoding the batch failed")
	}
	res, index, e := s.applyIndex(r.Context(), w, cb)
	if e != nil {
		return e
	}
	if res.Err != nil {
		if res.Op < 0 || res.Op >= len(ops) {
			s.log.Error("batch refused by the state machine", "ops", len(ops), "err", res.Err)
			return errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
		}
		_, e := s.batchAnswer(&ops[res.Op], res)
		if e == nil {
			e = errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
		}
		e.Op = &res.Op
		s.log.Debug("batch failed", "ops", len(ops), "op", res.Op, "code", e.Code, "index", index)
		return e
	}
	if len(res.Ops) != len(ops) {
		return errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
	}
	out := wire.BatchResponse{Index: index, Results: make([]wire.BatchResult, len(ops))}
	for i := range ops {
		if out.Results[i], e = s.batchAnswer(&ops[i], res.Ops[i]); e != nil {
			e.Op = &i
			return e
		}
	}
	s.log.Debug("batch applied", "ops", len(ops), "index", index)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// batchOp decodes one op and builds its command as its single call does.
func (s *Server) batchOp(raw json.RawMessage, gen string) (batchOp, *Error) {
	var head struct {
		Op *string `json:"op"`
	}
	if json.Unmarshal(raw, &head) != nil {
		return batchOp{}, errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "An op must be a JSON object.")
	}
	if head.Op == nil {
		return batchOp{}, errorf(http.StatusBadRequest, wire.CodeMissingField, "Field \"op\" is required.")
	}
	op := batchOp{name: *head.Op}
	var e *Error
	switch op.name {
	case wire.OpIssue:
		var b issueOpBody
		if e = decodeStrict(bytes.NewReader(raw), &b, false); e == nil {
			op.cmd, op.secret, e = s.issueCommand(&b.IssueRequest, gen)
		}
	case wire.OpConsume:
		var b consumeOpBody
		if e = decodeStrict(bytes.NewReader(raw), &b, false); e == nil {
			op.consume = &b.ConsumeRequest
			op.cmd, e = s.consumeCommand(&b.ConsumeRequest)
		}
	case wire.OpRevoke:
		var b revokeOpBody
		if e = decodeStrict(bytes.NewReader(raw), &b, false); e == nil {
			op.cmd, e = s.revokeCommand(&b.RevokeRequest)
		}
	case wire.OpRotate:
		var b rotateOpBody
		if e = decodeStrict(bytes.NewReader(raw), &b, false); e == nil {
			op.rotate = &b.RotateRequest
			op.cmd, op.minted, e = s.rotateCommand(&b.RotateRequest, gen)
		}
	case wire.OpRevokeFamily:
		var b revokeFamilyOpBody
		if e = decodeStrict(bytes.NewReader(raw), &b, false); e == nil {
			op.cmd, e = s.revokeFamilyCommand(b.Family, wire.BulkRevokeRequest{Kind: b.Kind, Reason: b.Reason})
		}
	default:
		return batchOp{}, errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"op\" must be %q, %q, %q, %q or %q, not %q.",
			wire.OpIssue, wire.OpConsume, wire.OpRevoke, wire.OpRotate, wire.OpRevokeFamily, op.name)
	}
	if e != nil {
		return batchOp{}, e
	}
	return op, nil
}

// batchAnswer is an op's answer to res, as its single call answers.
func (s *Server) batchAnswer(op *batchOp, res fsm.Result) (wire.BatchResult, *Error) {
	switch op.name {
	case wire.OpIssue:
		out, e := s.issueAnswer(res, op.secret)
		return wire.BatchResult{Issue: &out}, e
	case wire.OpConsume:
		out, e := s.consumeAnswer(res, op.consume.WithData)
		return wire.BatchResult{Record: &out}, e
	case wire.OpRevoke:
		out, e := s.revokeAnswer(res, op.cmd.(*fsm.Revoke).Reason)
		return wire.BatchResult{Record: &out}, e
	case wire.OpRotate:
		out, e := s.rotateAnswer(res, op.rotate.Token, op.minted)
		return wire.BatchResult{Rotate: &out}, e
	case wire.OpRevokeFamily:
		if res.Err != nil {
			break // a family revocation of the API's own cannot fail
		}
		return wire.BatchResult{Revoked: &wire.BulkRevokeResponse{Revoked: res.Count}}, nil
	}
	return wire.BatchResult{}, errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
}
