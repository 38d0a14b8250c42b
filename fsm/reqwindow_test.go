package fsm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// TestRequestWindowEdge: an id remembered at t is answered again at
// t+RequestWindow and forgotten a nanosecond later.
func TestRequestWindowEdge(t *testing.T) {
	for _, tc := range []struct {
		after time.Duration
		kept  bool
	}{{fsm.RequestWindow, true}, {fsm.RequestWindow + 1, false}} {
		h := newHarness(t)
		h.issue(t0, newIssue("a", "access", 24*time.Hour, 3))
		consume := &fsm.Consume{Hash: secretHash("a")}
		if r := h.requestBatch(t0, []string{"req"}, consume)[0]; r.Err != nil || r.Record.UsesLeft != 2 {
			t.Fatalf("first consume: want uses_left 2, got %+v", r)
		}
		r := h.requestBatch(t0.Add(tc.after), []string{"req"}, consume)[0]
		want := int64(1)
		if tc.kept {
			want = 2
		}
		if r.Err != nil || r.Record.UsesLeft != want {
			t.Fatalf("retry %v later: want uses_left %d, got %+v", tc.after, want, r)
		}
	}
}

// TestSnapshotWhileRequestsForgotten takes a snapshot, then applies
// entries that forget every request it holds and remember many more (the
// window's arrays are copied and its table shrinks and grows), and
// requires the stream as it was at the Snapshot call.
func TestSnapshotWhileRequestsForgotten(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, newIssue("a", "access", 24*time.Hour, 0))
	consume := &fsm.Consume{Hash: secretHash("a")}
	issues := func(at time.Time, prefix string, n int) {
		var reqs []string
		var cmds []fsm.Command
		for i := 0; i < n; i++ {
			reqs = append(reqs, fmt.Sprintf("%s-%d", prefix, i))
			if i%3 == 0 {
				cmds = append(cmds, consume) // a record of its own
			} else if i%3 == 1 {
				cmds = append(cmds, &fsm.Consume{Hash: secretHash("none")}) // an error
			} else {
				cmds = append(cmds, newIssue(fmt.Sprintf("%s-t%d", prefix, i), "access", time.Hour, 0))
			}
		}
		h.requestBatch(at, reqs, cmds...)
	}
	for i := 0; i < 20; i++ {
		issues(t0.Add(time.Duration(i)*time.Millisecond), fmt.Sprint("old", i), 200)
	}
	want := h.snapshot()
	write, release, err := h.s.TakeSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	later := t0.Add(fsm.RequestWindow + time.Second)
	issues(later, "new0", 10) // forgets every request of the snapshot
	for i := 1; i < 30; i++ {
		issues(later.Add(time.Duration(i)*time.Millisecond), fmt.Sprint("new", i), 200)
	}
	if r := h.requestBatch(later, []string{"old0-0"}, consume)[0]; r.Err != nil {
		t.Fatalf("a forgotten id: want a new consume, got %+v", r)
	}
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("snapshot written after its requests were forgotten (%d bytes) differs from the state at Snapshot time (%d bytes)", buf.Len(), len(want))
	}
	r := restored(t, buf.Bytes())
	h2 := &harness{t: t, s: r, index: h.index}
	if r := h2.requestBatch(t0.Add(time.Second), []string{"old3-2"}, newIssue("old3-t2", "access", time.Hour, 0))[0]; r.Err != nil || r.Record.ID != "old3-t2" {
		t.Fatalf("restored remembered issue: want the first success, got %+v", r)
	}
	if r := h2.requestBatch(t0.Add(time.Second), []string{"old3-1"}, consume)[0]; !errors.Is(r.Err, fsm.ErrNotFound) {
		t.Fatalf("restored remembered failure: want ErrNotFound, got %+v", r)
	}
}

// TestRestoreOldRequestOrder restores a snapshot written by a node that
// streamed its remembered requests by hash (testdata, written by
// cd54bd2): every request is answered as it was, forgotten when its
// window ends, and the restored state's own snapshot restores the same.
func TestRestoreOldRequestOrder(t *testing.T) {
	old, err := os.ReadFile("testdata/requests-cd54bd2.snap")
	if err != nil {
		t.Fatal(err)
	}
	s := restored(t, old)
	again := restored(t, snapshotBytes(t, s))
	if a, b := snapshotBytes(t, s), snapshotBytes(t, again); !bytes.Equal(a, b) {
		t.Fatal("a snapshot of the restored state restores other requests")
	}
	for _, s := range []*fsm.Machine{s, again} {
		h := &harness{t: t, s: s, index: 100}
		consume := &fsm.Consume{Hash: secretHash("a")}
		at := t0.Add(3 * time.Second)
		got := h.requestBatch(at, []string{"r1", "r2", "r3", "r4"}, consume, consume, consume, consume)
		for i, want := range []int64{2, 1, 0} {
			if got[i].Err != nil || got[i].Record.UsesLeft != want {
				t.Fatalf("r%d: want the remembered uses_left %d, got %+v", i+1, want, got[i])
			}
		}
		if !errors.Is(got[3].Err, fsm.ErrConsumed) {
			t.Fatalf("r4: want the remembered ErrConsumed, got %+v", got[3])
		}
		for i := 0; i < 40; i++ {
			id := fmt.Sprintf("t%02d", i)
			r := h.requestBatch(at, []string{fmt.Sprintf("n1-issue-%02d", i)}, newIssue(id, "access", time.Hour, 0))[0]
			if r.Err != nil || r.Record == nil || r.Record.ID != id {
				t.Fatalf("retried issue %s: want the first success, got %+v", id, r)
			}
		}
		// r1-r3 were remembered a second before r4: past their window,
		// inside r4's.
		edge := t0.Add(time.Second + fsm.RequestWindow + 1)
		if r := h.requestBatch(edge, []string{"r4"}, consume)[0]; !errors.Is(r.Err, fsm.ErrConsumed) {
			t.Fatalf("r4 inside its window: want ErrConsumed, got %+v", r)
		}
		if r := h.requestBatch(edge, []string{"r5"}, newIssue("b", "access", time.Hour, 0))[0]; r.Err != nil || r.Record.ID != "b" {
			t.Fatalf("r5 inside its window: want the first success, got %+v", r)
		}
		if r := h.requestBatch(edge, []string{"r1"}, consume)[0]; !errors.Is(r.Err, fsm.ErrConsumed) || reflect.DeepEqual(r, got[0]) {
			t.Fatalf("r1 past its window: want a new consume (ErrConsumed), got %+v", r)
		}
	}
}

// A snapshot holding a request remembered after the snapshot's own log
// time is refused: in the window, kept in time order, it would stop
// every later request from being forgotten.
func TestRestoreRefusesARequestFromTheFuture(t *testing.T) {
	a := newHarness(t)
	a.issue(t0, newIssue("a", "access", 24*time.Hour, 3))
	head, frames := splitSnapshot(t, a.snapshot())
	// A request frame: {"a": MaxInt64, "i": "future"}.
	body := append([]byte("\x82\xa1a\xd3"), binary.BigEndian.AppendUint64(nil, math.MaxInt64)...)
	body = append(body, "\xa1i\xa6future"...)
	stream := cat(append([][]byte{head}, append(frames, frame(3, body))...)...)
	if err := fsm.New().Restore(bytes.NewReader(stream)); err == nil || !strings.Contains(err.Error(), "after the snapshot's time") {
		t.Fatalf("a request remembered after the snapshot's time: %v, want refused", err)
	}
	// The same frame dated at the snapshot's time is read.
	now := append([]byte("\x82\xa1a\xd3"), binary.BigEndian.AppendUint64(nil, uint64(ns(t0)))...)
	now = append(now, "\xa1i\xa6future"...)
	if err := fsm.New().Restore(bytes.NewReader(cat(append([][]byte{head}, append(frames, frame(3, now))...)...))); err != nil {
		t.Fatalf("a request remembered at the snapshot's time: %v", err)
	}
}
