package fsm_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

func TestKnownTypesIncludeBaseTypes(t *testing.T) {
	known := fsm.KnownTypes()
	if !slices.IsSorted(known) {
		t.Fatalf("KnownTypes() = %v, want sorted", known)
	}
	for _, b := range fsm.BaseTypes() {
		if !slices.Contains(known, b) {
			t.Errorf("base type %d missing from KnownTypes() %v", b, known)
		}
		if !fsm.IsBaseType(b) {
			t.Errorf("IsBaseType(%d) = false for a base type", b)
		}
	}
	if fsm.IsBaseType(0) || fsm.IsBaseType(fsm.TypeRotate+1) || fsm.IsBaseType(fsm.TypeIssue|fsm.IgnoreUnknown) {
		t.Error("IsBaseType true for a type the first release did not have")
	}
}

// A batch with Now 0 (a new leader's barrier) keeps the state's time.
func TestBatchWithoutTimeKeepsLogTime(t *testing.T) {
	h := newHarness(t)
	h.issue(t2031, newIssue("a", "access", time.Hour, 0))
	h.applyRaw(encode(t, &fsm.Batch{}), 0)
	res := h.batch(time.Unix(0, 0), newIssue("b", "access", time.Hour, 0))
	if r := res[0].Record; r == nil || r.CreatedAt != ns(t2031) {
		t.Fatalf("Issue after a batch with Now 0: record %+v, want CreatedAt %d", r, ns(t2031))
	}
}
