package wire_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/api/wire"
)

func TestBatchOpJSON(t *testing.T) {
	for _, tc := range []struct {
		op   wire.BatchOp
		json string
	}{
		{wire.BatchOp{Op: wire.OpIssue, Issue: &wire.IssueRequest{Kind: "access", Subject: "user:1"}}, `{"op":"issue","kind":"access","subject":"user:1"}`},
		{wire.BatchOp{Op: wire.OpIssue, Issue: &wire.IssueRequest{}}, `{"op":"issue","kind":""}`},
		{wire.BatchOp{Op: wire.OpConsume, Consume: &wire.ConsumeRequest{Token: "t", WithData: true}}, `{"op":"consume","token":"t","with_data":true}`},
		{wire.BatchOp{Op: wire.OpRevoke, Revoke: &wire.RevokeRequest{Token: "t", Reason: "r"}}, `{"op":"revoke","token":"t","reason":"r"}`},
		{wire.BatchOp{Op: wire.OpRotate, Rotate: &wire.RotateRequest{Token: "t", Access: &wire.AccessRequest{Scopes: []string{"a"}}}},
			`{"op":"rotate","token":"t","access":{"scopes":["a"]}}`},
	} {
		b, err := json.Marshal(tc.op)
		if err != nil || string(b) != tc.json {
			t.Errorf("%+v marshals to %s, %v; want %s", tc.op, b, err, tc.json)
		}
		var back wire.BatchOp
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, tc.op) {
			t.Errorf("%s unmarshals to %+v, %v; want %+v", b, back, err, tc.op)
		}
	}
	for _, bad := range []wire.BatchOp{{Op: "lookup"}, {Op: wire.OpIssue}, {Op: wire.OpConsume, Issue: &wire.IssueRequest{}}} {
		if b, err := json.Marshal(bad); err == nil {
			t.Errorf("%+v marshalled to %s", bad, b)
		}
	}
	for _, bad := range []string{`{"kind":"access"}`, `{"op":"lookup","token":"t"}`, `{"op":"consume","token":"t","ttl":"1h"}`, `[]`, `{"op":7}`} {
		var op wire.BatchOp
		if err := json.Unmarshal([]byte(bad), &op); err == nil {
			t.Errorf("%s unmarshalled to %+v", bad, op)
		}
	}
}

func TestBatchResultJSON(t *testing.T) {
	issue := &wire.IssueResponse{Token: "t", ID: "i", Kind: "access", Index: 3}
	rec := &wire.Record{ID: "i", Kind: "access", Status: "consumed", Scopes: []string{}}
	rot := &wire.RotateResponse{IssueResponse: *issue, Access: &wire.IssueResponse{Token: "a", ID: "j", Kind: "access"}}
	for op, r := range map[string]wire.BatchResult{wire.OpIssue: {Issue: issue}, wire.OpConsume: {Record: rec}, wire.OpRotate: {Rotate: rot}} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var single []byte
		switch {
		case r.Issue != nil:
			single, _ = json.Marshal(r.Issue)
		case r.Record != nil:
			single, _ = json.Marshal(r.Record)
		default:
			single, _ = json.Marshal(r.Rotate)
		}
		if string(b) != string(single) {
			t.Errorf("%s result marshals to %s, the single call's body is %s", op, b, single)
		}
		var byOp, guessed wire.BatchResult
		if err := byOp.Decode(op, b); err != nil || !reflect.DeepEqual(byOp, r) {
			t.Errorf("%s result decoded by its op as %+v, %v", op, byOp, err)
		}
		if err := json.Unmarshal(b, &guessed); err != nil || !reflect.DeepEqual(guessed, r) {
			t.Errorf("%s result unmarshalled as %+v, %v", op, guessed, err)
		}
	}
	resp := wire.BatchResponse{Index: 9, Results: []wire.BatchResult{{Issue: issue}, {Record: rec}}}
	b, _ := json.Marshal(resp)
	if !strings.HasPrefix(string(b), `{"index":9,"results":[{"token":"t"`) {
		t.Errorf("a batch response marshals to %s", b)
	}
}
