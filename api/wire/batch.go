package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// MaxBatchOps is the most ops one batch may hold.
const MaxBatchOps = 16

// The ops of a batch.
const (
	OpIssue   = "issue"
	OpConsume = "consume"
	OpRevoke  = "revoke"
	OpRotate  = "rotate"
	// OpRevokeFamily is POST /v1/families/{family}/revoke, with the
	// family in the body (RevokeFamilyRequest).
	OpRevokeFamily = "revoke_family"
)

// RevokeFamilyRequest is a family revocation in a batch: the family, and
// the body of POST /v1/families/{family}/revoke. With Kind, the family's
// active tokens of that kind are revoked and the family stays open;
// without, the family is revoked for good.
type RevokeFamilyRequest struct {
	Family string `json:"family"`
	Kind   string `json:"kind,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// BatchRequest is the body of POST /v1/batch: 1 to MaxBatchOps ops,
// applied in order, all or nothing, in one log entry.
type BatchRequest struct {
	Ops []BatchOp `json:"ops"`
}

// BatchOp is one op of a batch: the body of the single call (Issue for
// "issue": POST /v1/tokens, Consume, Revoke, Rotate for
// /v1/tokens/{consume,revoke,rotate}, RevokeFamily for
// /v1/families/{family}/revoke) with "op" added. The request set is the
// one Op names; the others are nil.
type BatchOp struct {
	Op           string
	Issue        *IssueRequest
	Consume      *ConsumeRequest
	Revoke       *RevokeRequest
	Rotate       *RotateRequest
	RevokeFamily *RevokeFamilyRequest
}

// body returns the request o's Op names, nil if it is not set.
func (o BatchOp) body() (any, error) {
	var v any
	switch o.Op {
	case OpIssue:
		if o.Issue != nil {
			v = o.Issue
		}
	case OpConsume:
		if o.Consume != nil {
			v = o.Consume
		}
	case OpRevoke:
		if o.Revoke != nil {
			v = o.Revoke
		}
	case OpRotate:
		if o.Rotate != nil {
			v = o.Rotate
		}
	case OpRevokeFamily:
		if o.RevokeFamily != nil {
			v = o.RevokeFamily
		}
	default:
		return nil, fmt.Errorf("unknown batch op %q", o.Op)
	}
	if v == nil {
		return nil, fmt.Errorf("batch op %q without its request", o.Op)
	}
	return v, nil
}

// MarshalJSON writes the op's request with "op" first.
func (o BatchOp) MarshalJSON() ([]byte, error) {
	v, err := o.body()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	name, _ := json.Marshal(o.Op)
	out := append([]byte(`{"op":`), name...)
	if rest := bytes.TrimPrefix(b, []byte("{")); len(rest) > 1 {
		out = append(append(out, ','), rest...)
	} else {
		out = append(out, '}')
	}
	return out, nil
}

// UnmarshalJSON reads an op: "op" selects the request the other fields
// are decoded into, strictly (a field that request does not have is an
// error).
func (o *BatchOp) UnmarshalJSON(b []byte) error {
	var head struct {
		Op *string `json:"op"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	if head.Op == nil {
		return errors.New(`batch op without "op"`)
	}
	op := BatchOp{Op: *head.Op}
	var v any
	switch op.Op {
	case OpIssue:
		op.Issue = new(IssueRequest)
		v = &struct {
			Op string `json:"op"`
			*IssueRequest
		}{IssueRequest: op.Issue}
	case OpConsume:
		op.Consume = new(ConsumeRequest)
		v = &struct {
			Op string `json:"op"`
			*ConsumeRequest
		}{ConsumeRequest: op.Consume}
	case OpRevoke:
		op.Revoke = new(RevokeRequest)
		v = &struct {
			Op string `json:"op"`
			*RevokeRequest
		}{RevokeRequest: op.Revoke}
	case OpRotate:
		op.Rotate = new(RotateRequest)
		v = &struct {
			Op string `json:"op"`
			*RotateRequest
		}{RotateRequest: op.Rotate}
	case OpRevokeFamily:
		op.RevokeFamily = new(RevokeFamilyRequest)
		v = &struct {
			Op string `json:"op"`
			*RevokeFamilyRequest
		}{RevokeFamilyRequest: op.RevokeFamily}
	default:
		return fmt.Errorf("unknown batch op %q", op.Op)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	*o = op
	return nil
}

// BatchResponse answers a batch that applied: the log index of its entry,
// and each op's answer, in order.
type BatchResponse struct {
	Index   uint64        `json:"index"`
	Results []BatchResult `json:"results"`
}

// BatchResult is one op's answer, exactly the single call's success body:
// an IssueResponse for an issue, the Record for a consume or revoke, a
// RotateResponse for a rotation, a BulkRevokeResponse for a family
// revocation. The one set is the JSON.
type BatchResult struct {
	Issue   *IssueResponse
	Record  *Record
	Rotate  *RotateResponse
	Revoked *BulkRevokeResponse
}

// MarshalJSON writes the answer that is set.
func (r BatchResult) MarshalJSON() ([]byte, error) {
	switch {
	case r.Issue != nil:
		return json.Marshal(r.Issue)
	case r.Record != nil:
		return json.Marshal(r.Record)
	case r.Rotate != nil:
		return json.Marshal(r.Rotate)
	case r.Revoked != nil:
		return json.Marshal(r.Revoked)
	}
	return []byte("null"), nil
}

// UnmarshalJSON reads an answer without knowing its op: a record (it has
// a status), a family revocation's count (it has "revoked") or an issue;
// a rotation answer with an access token is read as a rotation, one
// without as an issue (the same fields). Decode reads it knowing the op.
func (r *BatchResult) UnmarshalJSON(b []byte) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return err
	}
	op := OpIssue
	if _, ok := probe["status"]; ok {
		op = OpConsume
	} else if _, ok := probe["access"]; ok {
		op = OpRotate
	} else if _, ok := probe["revoked"]; ok {
		op = OpRevokeFamily
	}
	return r.Decode(op, b)
}

// Decode reads b as the answer of an op named op.
func (r *BatchResult) Decode(op string, b []byte) error {
	*r = BatchResult{}
	switch op {
	case OpIssue:
		r.Issue = new(IssueResponse)
		return json.Unmarshal(b, r.Issue)
	case OpConsume, OpRevoke:
		r.Record = new(Record)
		return json.Unmarshal(b, r.Record)
	case OpRotate:
		r.Rotate = new(RotateResponse)
		return json.Unmarshal(b, r.Rotate)
	case OpRevokeFamily:
		r.Revoked = new(BulkRevokeResponse)
		return json.Unmarshal(b, r.Revoked)
	}
	return fmt.Errorf("unknown batch op %q", op)
}
