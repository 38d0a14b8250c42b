package fsm_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// clientBatch encodes ops into a ClientBatch or fails the test.
func clientBatch(t testing.TB, ops ...fsm.Command) *fsm.ClientBatch {
	t.Helper()
	c, err := fsm.NewClientBatch(ops...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The ops of a batch apply in order, each seeing the ones before: a code
// issued and exchanged in one batch, with the tokens it yields.
func TestClientBatchAppliesInOrder(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, newIssue("old", "access", time.Hour, 0))
	now := t0.Add(time.Minute)
	res := h.ok(now, clientBatch(t,
		code("ac1"),
		&fsm.Consume{Hash: secretHash("ac1"), Kind: "oauth2_code", FamilyHold: hold},
		refresh("rt1", "ac1", 24*time.Hour),
		&fsm.Revoke{ID: "old", Reason: "replaced"},
		rotation("rt1", "rt2", true),
	))
	if len(res.Ops) != 5 || res.Record != nil || res.Op != 0 {
		t.Fatalf("batch result %+v: want 5 op results and nothing else", res)
	}
	if r := res.Ops[0].Record; r == nil || r.ID != "ac1" || r.State != fsm.Active {
		t.Errorf("op 0 (issue): %+v, want the code as issued", r)
	}
	if r := res.Ops[1].Record; r == nil || r.ID != "ac1" || r.State != fsm.Consumed || string(r.Data) == "" {
		t.Errorf("op 1 (consume): %+v, want the code consumed, with its data", r)
	}
	if r := res.Ops[3].Record; r == nil || r.ID != "old" || r.State != fsm.Revoked || r.Reason != "replaced" {
		t.Errorf("op 3 (revoke): %+v, want old revoked", r)
	}
	if r, a := res.Ops[4].Record, res.Ops[4].Access; r == nil || r.ID != "rt2" || r.Family != "ac1" || a == nil || a.ID != "rt2-at" {
		t.Errorf("op 4 (rotate): %+v, access %+v: want rt2 and rt2-at in family ac1", r, a)
	}
	for id, want := range map[string]fsm.State{"ac1": fsm.Consumed, "rt1": fsm.Consumed, "rt2": fsm.Active, "rt2-at": fsm.Active, "old": fsm.Revoked} {
		if r := h.s.ByID(id); r == nil || r.State != want || r.CreateIndex == 0 {
			t.Errorf("%s after the batch: %+v, want state %d", id, r, want)
		}
	}
	checkConsistent(t, h.s, []string{"old", "ac1", "rt1", "rt2", "rt2-at"}, ns(now))
}

// A batch whose third op fails leaves nothing behind: the state, its
// indexes and counts, the revoked families and the remembered requests
// are those of a node that applied an empty entry instead.
func TestClientBatchFailingOpLeavesNothing(t *testing.T) {
	setup := func(h *harness) {
		h.issue(t0, code("ac1"))
		h.issue(t0, with(newIssue("multi", "access", time.Hour, 3), func(r *fsm.Record) { r.Subject = "user:1" }))
		h.issue(t0, refresh("rt1", "", 24*time.Hour))
		h.ok(t0, rotation("rt1", "rt2", false))
		h.issue(t0, newIssue("taken", "access", time.Hour, 0))
	}
	failing, control := newHarness(t), newHarness(t)
	setup(failing)
	setup(control)
	now := t0.Add(time.Minute)
	cb := clientBatch(t,
		&fsm.Consume{Hash: secretHash("ac1"), FamilyHold: hold},                              // the code, used up
		with(inFamily("new", "access", "ac1"), func(r *fsm.Record) { r.Subject = "user:1" }), // into the code's family
		with(newIssue("dup", "access", time.Hour, 0), func(r *fsm.Record) { r.Hash = secretHash("taken") }),
		&fsm.Revoke{ID: "multi"}, // never reached
	)
	cb2 := clientBatch(t,
		&fsm.Consume{Hash: secretHash("multi")},
		rotation("rt2", "rt3", true),
		&fsm.Revoke{Hash: secretHash("nobody")},
	)
	b := &fsm.Batch{Now: ns(now), Entries: [][]byte{encode(t, cb), encode(t, cb2)}, Reqs: []string{"q1", "q2"}}
	res := failing.applyRaw(encode(t, b), 2)
	wantErr(t, "batch with a taken hash", res[0], fsm.ErrExists)
	if res[0].Op != 2 || res[0].Ops != nil {
		t.Fatalf("batch result %+v: want op 2's failure", res[0])
	}
	wantErr(t, "batch revoking an unknown token", res[1], fsm.ErrNotFound)
	if res[1].Op != 2 {
		t.Fatalf("second batch result %+v: want op 2's failure", res[1])
	}
	// The control node applies the same entry without the batches.
	control.applyRaw(encode(t, &fsm.Batch{Now: ns(now), Entries: [][]byte{}}), 0)
	ids := []string{"ac1", "multi", "rt1", "rt2", "rt3", "rt3-at", "taken", "new", "dup"}
	for _, id := range ids {
		if got, want := failing.s.ByID(id), control.s.ByID(id); !reflect.DeepEqual(got, want) {
			t.Errorf("%s after the failed batches: %+v, want %+v", id, got, want)
		}
	}
	countsEqual(t, "after the failed batches", failing.s.Counts(), control.s.Counts())
	checkConsistent(t, failing.s, ids, ns(now))
	if failing.s.RevokedFamilies() != control.s.RevokedFamilies() {
		t.Errorf("revoked families %d, want %d", failing.s.RevokedFamilies(), control.s.RevokedFamilies())
	}
	// Nothing remembered but the two batches' own answers: a retry of q1
	// answers op 2's failure again and applies nothing.
	again := failing.applyRaw(encode(t, &fsm.Batch{Now: ns(now.Add(time.Second)), Entries: [][]byte{encode(t, &fsm.Revoke{ID: "multi"})}, Reqs: []string{"q1"}}), 1)
	if again[0].Err != fsm.ErrExists || again[0].Op != 2 {
		t.Fatalf("a retry of the failed batch answered %+v, want op 2's ErrExists", again[0])
	}
	if r := failing.s.ByID("multi"); r.State != fsm.Active || r.UsesLeft != 3 {
		t.Fatalf("multi after the retry: %+v, want untouched", r)
	}
	// Once the window of remembered requests has passed on both, their
	// snapshots are the same bytes: nothing else of the batches stayed.
	control.applyRaw(encode(t, &fsm.Batch{Now: ns(now.Add(time.Second)), Entries: [][]byte{}}), 0)
	later := now.Add(fsm.RequestWindow + time.Minute)
	for _, h := range []*harness{failing, control} {
		h.applyRaw(encode(t, &fsm.Batch{Now: ns(later), Entries: [][]byte{}}), 0)
	}
	if a, b := failing.snapshot(), control.snapshot(); !bytes.Equal(a, b) {
		t.Errorf("snapshots differ once the requests are forgotten: %d and %d bytes", len(a), len(b))
	}
	// And the snapshot of the failed node restores into the control's state.
	snapFailed, snapControl := restored(t, failing.snapshot()), control.s
	for _, id := range ids {
		if got, want := snapFailed.ByID(id), snapControl.ByID(id); !reflect.DeepEqual(got, want) {
			t.Errorf("%s restored after the failed batches: %+v, want %+v", id, got, want)
		}
	}
}

// A batch whose op presents a used refresh token fails, and the reuse it
// detected stands: the family is revoked, remembered, and the batch's
// other ops are undone.
func TestClientBatchReuseStands(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, refresh("rt1", "", 24*time.Hour))
	h.ok(t0.Add(time.Minute), rotation("rt1", "rt2", true))
	now := t0.Add(time.Hour)
	again := rotation("rt1", "rt9", true)
	again.FamilyHold = hold
	res := h.do(now, clientBatch(t,
		inFamily("extra", "access", "rt1"),
		again,
		newIssue("after", "access", time.Hour, 0),
	))
	wantErr(t, "batch reusing rt1", res, fsm.ErrReused)
	if res.Op != 1 || res.Record == nil || res.Record.ID != "rt1" || res.Count != 2 {
		t.Fatalf("reuse result %+v: want op 1, rt1's tombstone, 2 revoked (rt2, rt2-at)", res)
	}
	for _, id := range []string{"rt2", "rt2-at"} {
		if r := h.s.ByID(id); r.State != fsm.Revoked || !strings.Contains(r.Reason, "reuse") {
			t.Errorf("%s: %+v, want revoked for the reuse", id, r)
		}
	}
	for _, id := range []string{"extra", "rt9", "rt9-at", "after"} {
		if r := h.s.ByID(id); r != nil {
			t.Errorf("%s was left by the failed batch: %+v", id, r)
		}
	}
	if h.s.RevokedFamilies() != 1 {
		t.Fatalf("revoked families %d, want rt1's", h.s.RevokedFamilies())
	}
	// The family stays revoked: nothing is issued into it.
	wantErr(t, "issue into the revoked family", h.do(now, inFamily("late", "access", "rt1")), fsm.ErrFamilyRevoked)
	checkConsistent(t, h.s, []string{"rt1", "rt2", "rt2-at", "extra", "rt9", "rt9-at", "after", "late"}, ns(now))
}

// A code presented twice in one batch is reuse: the batch fails at the
// second, and the family (the code with it) is revoked.
func TestClientBatchReuseWithinBatch(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	consume := &fsm.Consume{Hash: secretHash("ac1"), FamilyHold: hold}
	res := h.do(t0.Add(time.Minute), clientBatch(t, consume, inFamily("at", "access", "ac1"), consume))
	wantErr(t, "the code twice", res, fsm.ErrReused)
	if res.Op != 2 || res.Record == nil || res.Record.State != fsm.Revoked {
		t.Fatalf("result %+v: want op 2, the code revoked", res)
	}
	if r := h.s.ByID("ac1"); r.State != fsm.Revoked || h.s.ByID("at") != nil || h.s.RevokedFamilies() != 1 {
		t.Fatalf("after: code %+v, at %+v, %d families: want the code revoked, nothing issued, its family remembered",
			r, h.s.ByID("at"), h.s.RevokedFamilies())
	}
}

// A code issued and used twice in one batch: the batch fails at the second
// use, naming the code as the batch saw it, and nothing stays: outside the
// batch the code and its family never were.
func TestClientBatchReuseOfItsOwnToken(t *testing.T) {
	h := newHarness(t)
	consume := &fsm.Consume{Hash: secretHash("x1"), Kind: "oauth2_code", FamilyHold: hold}
	res := h.do(t0, clientBatch(t, code("x1"), consume, consume))
	wantErr(t, "its own code twice", res, fsm.ErrReused)
	if res.Op != 2 || res.Record == nil || res.Record.ID != "x1" || res.Record.State != fsm.Consumed {
		t.Fatalf("result %+v: want op 2 and the code consumed, as the batch saw it", res)
	}
	if h.s.ByID("x1") != nil || h.s.RevokedFamilies() != 0 {
		t.Fatalf("after: code %+v, %d revoked families; want neither", h.s.ByID("x1"), h.s.RevokedFamilies())
	}
	checkConsistent(t, h.s, []string{"x1"}, ns(t0))
}

// What a batch cannot hold is refused on every replica, changing nothing.
func TestClientBatchShape(t *testing.T) {
	h := newHarness(t)
	issue := encode(t, newIssue("a", "access", time.Hour, 0))
	inner := encode(t, clientBatch(t, newIssue("b", "access", time.Hour, 0)))
	coalescing := encode(t, &fsm.Batch{Entries: [][]byte{issue}})
	many := make([][]byte, fsm.MaxBatchOps+1)
	for i := range many {
		many[i] = encode(t, newIssue(strings.Repeat("x", i+1), "access", time.Hour, 0))
	}
	for name, tc := range map[string]struct {
		ops [][]byte
		op  int
	}{
		"no op":              {nil, -1},
		"too many":           {many, -1},
		"a nested batch":     {[][]byte{issue, inner}, 1},
		"a coalescing batch": {[][]byte{coalescing}, 0},
		"a fence":            {[][]byte{issue, encode(t, &fsm.Fence{Version: 1})}, 1},
		"an expiry":          {[][]byte{encode(t, &fsm.Expire{IDs: []string{"a"}})}, 0},
		"undecodable":        {[][]byte{issue, {byte(fsm.TypeIssue), 0xc1}}, 1},
		"empty":              {[][]byte{{}}, 0},
	} {
		res := h.do(t0, &fsm.ClientBatch{Ops: tc.ops})
		if res.Err != fsm.ErrBadEntry || res.Op != tc.op {
			t.Errorf("%s: %+v, want ErrBadEntry at op %d", name, res, tc.op)
		}
		if _, err := (&fsm.ClientBatch{Ops: tc.ops}).DecodeOps(); !errors.Is(err, fsm.ErrBatchShape) {
			t.Errorf("%s: DecodeOps: %v, want ErrBatchShape", name, err)
		}
	}
	if h.s.ByID("a") != nil || h.s.ByID("b") != nil {
		t.Fatal("a refused batch issued tokens")
	}
	if _, err := fsm.NewClientBatch(&fsm.Batch{}); err == nil {
		t.Fatal("NewClientBatch took a Batch")
	}
}

// A retried batch answers its first result, every op's, and applies once;
// also after the state was snapshotted and restored.
func TestClientBatchRetryAnswersFirstResult(t *testing.T) {
	h := newHarness(t)
	cb := clientBatch(t, newIssue("a", "access", time.Hour, 0), &fsm.Consume{Hash: secretHash("a")})
	entry := func(now time.Time) []byte {
		return encode(t, &fsm.Batch{Now: ns(now), Entries: [][]byte{encode(t, cb)}, Reqs: []string{"q"}})
	}
	first := h.applyRaw(entry(t0), 1)[0]
	if first.Err != nil || len(first.Ops) != 2 {
		t.Fatalf("first: %+v", first)
	}
	second := h.applyRaw(entry(t0.Add(time.Second)), 1)[0]
	if !reflect.DeepEqual(first.Outcome(), second.Outcome()) {
		t.Fatalf("retry answered %+v, want %+v", second.Outcome(), first.Outcome())
	}
	r := restored(t, h.snapshot())
	third := r.Apply(h.index+1, entry(t0.Add(2*time.Second))).Batch[0]
	if !reflect.DeepEqual(first.Outcome(), third.Outcome()) {
		t.Fatalf("retry after a restore answered %+v, want %+v", third.Outcome(), first.Outcome())
	}
	if rec := r.ByID("a"); rec == nil || rec.LastUsedAt != ns(t0) {
		t.Fatalf("a after retries: %+v, want used once at t0", rec)
	}
	if !bytes.Equal(h.snapshot(), h.snapshot()) {
		t.Fatal("snapshots differ")
	}
}

// Revoking a family's tokens of one kind leaves the family open and its
// reuse tombstones held.
func TestRevokeFamilyKind(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, refresh("rt1", "", 24*time.Hour))
	h.ok(t0, rotation("rt1", "rt2", true))
	h.issue(t0, inFamily("at2", "access", "rt1"))
	res := h.ok(t0.Add(time.Minute), &fsm.RevokeFamilyKind{Family: "rt1", Kind: "access", Reason: "rotated"})
	if res.Count != 2 {
		t.Fatalf("revoked %d, want rt2-at and at2", res.Count)
	}
	for id, want := range map[string]fsm.State{"rt2-at": fsm.Revoked, "at2": fsm.Revoked, "rt2": fsm.Active, "rt1": fsm.Consumed} {
		if r := h.s.ByID(id); r.State != want {
			t.Errorf("%s: state %d, want %d", id, r.State, want)
		}
	}
	if h.s.RevokedFamilies() != 0 {
		t.Fatal("the family was remembered as revoked")
	}
	h.issue(t0.Add(2*time.Minute), inFamily("at3", "access", "rt1"))
	h.ok(t0.Add(2*time.Minute), rotation("rt2", "rt3", true))
	// rt1's reuse is still detected: its tombstone was not released.
	wantErr(t, "rt1 again", h.do(t0.Add(3*time.Minute), rotation("rt1", "rt8", false)), fsm.ErrReused)
	wantErr(t, "no kind", h.do(t0, &fsm.RevokeFamilyKind{Family: "rt1"}), fsm.ErrBadEntry)
}

// Downgrade clears the fields of later versions in a batch's ops, as in
// the same ops alone.
func TestDowngradeClientBatch(t *testing.T) {
	cb := clientBatch(t, &fsm.Consume{Hash: secretHash("a"), FamilyHold: hold}, newIssue("b", "access", time.Hour, 0))
	entry := encode(t, cb)
	if same, err := fsm.Downgrade(entry, fsm.Version); err != nil || &same[0] != &entry[0] {
		t.Fatalf("Downgrade to this version: %v, a copy %v", err, &same[0] != &entry[0])
	}
	down, err := fsm.Downgrade(entry, 1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := fsm.Decode(down)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := c.(*fsm.ClientBatch).DecodeOps()
	if err != nil || ops[0].(*fsm.Consume).FamilyHold != 0 || ops[1].(*fsm.Issue).Record.ID != "b" {
		t.Fatalf("downgraded ops %+v, %v: want the consume without FamilyHold, the issue as it was", ops, err)
	}
	plain := encode(t, clientBatch(t, newIssue("b", "access", time.Hour, 0)))
	if same, err := fsm.Downgrade(plain, 1); err != nil || &same[0] != &plain[0] {
		t.Fatalf("a batch without newer fields downgraded to a copy (%v)", err)
	}
}
