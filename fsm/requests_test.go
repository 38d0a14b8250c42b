package fsm_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// requestBatch applies cmds as one batch whose entries carry reqs.
func (h *harness) requestBatch(now time.Time, reqs []string, cmds ...fsm.Command) []fsm.Result {
	h.t.Helper()
	b := &fsm.Batch{Now: ns(now), Reqs: reqs}
	for _, c := range cmds {
		b.Entries = append(b.Entries, encode(h.t, c))
	}
	return h.applyRaw(encode(h.t, b), len(cmds))
}

// TestRequestAppliesAtMostOnce retries a consume and an issue under their
// request ids: the retry answers the first result and changes nothing, in
// the same batch, in a later one, and after a snapshot and restore.
func TestRequestAppliesAtMostOnce(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, with(newIssue("a", "oauth2_code", time.Hour, 1), func(r *fsm.Record) { r.Data = []byte(`{"x":1}`) }))

	consume := &fsm.Consume{Hash: secretHash("a")}
	first := h.requestBatch(t0.Add(time.Second), []string{"req-1", "req-1"}, consume, consume)
	if first[0].Err != nil || string(first[0].Record.Data) != `{"x":1}` {
		t.Fatalf("first consume: want success with the data, got %+v", first[0])
	}
	if !reflect.DeepEqual(first[1], first[0]) {
		t.Fatalf("same request id in the same batch: want the first result %+v, got %+v", first[0], first[1])
	}
	retry := h.requestBatch(t0.Add(2*time.Second), []string{"req-1"}, consume)[0]
	if !reflect.DeepEqual(retry, first[0]) {
		t.Fatalf("retry in a later batch: want the first result %+v, got %+v", first[0], retry)
	}
	other := h.requestBatch(t0.Add(2*time.Second), []string{"req-2"}, consume)[0]
	if !errors.Is(other.Err, fsm.ErrConsumed) {
		t.Fatalf("another request consuming the used token: want ErrConsumed, got %+v", other)
	}

	issue := newIssue("b", "access", time.Hour, 0)
	if r := h.requestBatch(t0.Add(3*time.Second), []string{"req-3"}, issue)[0]; r.Err != nil {
		t.Fatalf("issue: %v", r.Err)
	}
	r2 := restored(t, h.snapshot())
	h2 := &harness{t: t, s: r2, index: h.index}
	for _, hh := range []*harness{h, h2} {
		if r := hh.requestBatch(t0.Add(4*time.Second), []string{"req-3"}, issue)[0]; r.Err != nil || r.Record.ID != "b" {
			t.Fatalf("retried issue: want the first success, got %+v", r)
		}
		if r := hh.requestBatch(t0.Add(4*time.Second), []string{"req-4"}, issue)[0]; !errors.Is(r.Err, fsm.ErrExists) {
			t.Fatalf("a new request issuing the same token: want ErrExists, got %+v", r)
		}
		if r := hh.requestBatch(t0.Add(4*time.Second), []string{"req-2"}, consume)[0]; !errors.Is(r.Err, fsm.ErrConsumed) {
			t.Fatalf("remembered failure: want ErrConsumed again, got %+v", r)
		}
	}
	if a, b := h.snapshot(), h2.snapshot(); string(a) != string(b) {
		t.Fatal("a restored store remembers other request ids than the original")
	}
}

// TestRequestForgottenAfterWindow: ids are remembered for RequestWindow of
// log time, then forgotten, so the table stays bounded.
func TestRequestForgottenAfterWindow(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, newIssue("a", "access", 24*time.Hour, 3))
	consume := &fsm.Consume{Hash: secretHash("a")}
	first := h.requestBatch(t0, []string{"req"}, consume)[0]
	if first.Err != nil || first.Record.UsesLeft != 2 {
		t.Fatalf("first consume: want uses_left 2, got %+v", first)
	}
	if r := h.requestBatch(t0.Add(fsm.RequestWindow-time.Second), []string{"req"}, consume)[0]; r.Record.UsesLeft != 2 {
		t.Fatalf("inside the window: want the remembered uses_left 2, got %+v", r.Record)
	}
	if r := h.requestBatch(t0.Add(fsm.RequestWindow+time.Second), []string{"req"}, consume)[0]; r.Err != nil || r.Record.UsesLeft != 1 {
		t.Fatalf("after the window: want a new use (uses_left 1), got %+v", r)
	}
}

func TestErrNames(t *testing.T) {
	for _, err := range []error{nil, fsm.ErrNotFound, fsm.ErrExists, fsm.ErrExpired, fsm.ErrConsumed,
		fsm.ErrRevoked, fsm.ErrKindMismatch, fsm.ErrClientMismatch, fsm.ErrReused, fsm.ErrScope, fsm.ErrBadEntry, fsm.ErrHalted} {
		if got := fsm.ErrByName(fsm.ErrName(err)); got != err {
			t.Errorf("ErrByName(ErrName(%v)) = %v", err, got)
		}
	}
	if fsm.ErrByName("no-such-outcome") == nil {
		t.Error("an unknown outcome name must not read as success")
	}
}
