package fsm_test

import (
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// A family's first record (its id is the family's name) is kept out of
// the family indexes; these are the answers it must still be in.

func wantRecord(t *testing.T, h *harness, id string, state fsm.State, holdUntil int64) {
	t.Helper()
	r := h.s.ByID(id)
	if r == nil || r.State != state || r.HoldUntil != holdUntil {
		t.Fatalf("%s: %+v, want state %v, held until %d", id, r, state, holdUntil)
	}
}

// A family of one code: revoking the family revokes it, and remembers the
// family; revoking its kind revokes it too.
func TestRevokeFamilyOfOneCode(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	now := t0.Add(time.Minute)
	if res := h.ok(now, &fsm.RevokeFamily{Family: "ac1", Reason: "logout", FamilyHold: hold}); res.Count != 1 {
		t.Fatalf("revoke of a family of one: count %d, want 1", res.Count)
	}
	wantRecord(t, h, "ac1", fsm.Revoked, 0)
	if h.s.RevokedFamily("ac1", ns(now)) == nil {
		t.Fatal("the revoked family is not remembered")
	}
	wantErr(t, "issue into it", h.do(now, refresh("rt1", "ac1", time.Hour)), fsm.ErrFamilyRevoked)

	h = newHarness(t)
	h.issue(t0, code("ac1"))
	if res := h.ok(now, &fsm.RevokeFamilyKind{Family: "ac1", Kind: "oauth2_code"}); res.Count != 1 {
		t.Fatalf("revoke of a family's codes: count %d, want 1", res.Count)
	}
	wantRecord(t, h, "ac1", fsm.Revoked, 0)
}

// A reuse detected in a family whose code was never exchanged revokes the
// code with the rest.
func TestReuseRevokesTheActiveFirstRecord(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	h.issue(t0, refresh("rt1", "ac1", 24*time.Hour))
	now := t0.Add(time.Minute)
	h.ok(now, rotation("rt1", "rt2", false))
	res := h.do(now, rotation("rt1", "rt3", false))
	wantErr(t, "second rotation", res, fsm.ErrReused)
	if res.Count != 2 {
		t.Fatalf("reuse revoked %d, want 2 (the code and rt2)", res.Count)
	}
	wantRecord(t, h, "ac1", fsm.Revoked, 0)
	wantRecord(t, h, "rt2", fsm.Revoked, 0)
}

// A consumed token is held while its family's first record can be used:
// an active code, then one expired by log time but not yet by the
// expiry's cut-off; once that passes, it is collected.
func TestTombstoneHeldByTheFirstRecord(t *testing.T) {
	h := newHarness(t)
	ac := h.issue(t0, code("ac1")) // 4 h
	h.issue(t0, refresh("rt1", "ac1", time.Hour))
	h.ok(t0, &fsm.Consume{Hash: secretHash("rt1")})
	later := t0.Add(2 * time.Hour)
	if res := h.ok(later, &fsm.Expire{Before: ns(later), IDs: []string{"rt1"}}); res.Count != 0 {
		t.Fatalf("expiry collected %d, want the tombstone held", res.Count)
	}
	wantRecord(t, h, "rt1", fsm.Consumed, ac.ExpiresAt)

	h = newHarness(t)
	ac = h.issue(t0, code("ac1"))
	h.issue(t0, refresh("rt1", "ac1", 30*time.Minute))
	h.ok(t0, &fsm.Consume{Hash: secretHash("rt1")})
	// At 5 h the code has expired, but not by the cut-off of 3 h 50 m.
	now, before := t0.Add(5*time.Hour), ac.ExpiresAt-int64(10*time.Minute)
	if res := h.ok(now, &fsm.Expire{Before: before, IDs: []string{"rt1"}}); res.Count != 0 {
		t.Fatalf("expiry before the code's end collected %d, want the tombstone held", res.Count)
	}
	wantRecord(t, h, "rt1", fsm.Consumed, ac.ExpiresAt)
	if res := h.ok(now, &fsm.Expire{Before: ns(now), IDs: []string{"rt1"}}); res.Count != 1 {
		t.Fatalf("expiry after the code's end collected %d, want 1", res.Count)
	}
}

// The code's own tombstone, held for its family, is released when the
// family is revoked; once it is collected, the family's other records
// still answer for it.
func TestFamilyWhoseFirstRecordIsConsumedThenCollected(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	h.ok(t0, &fsm.Consume{Hash: secretHash("ac1")})
	rt := h.issue(t0, refresh("rt1", "ac1", 24*time.Hour))
	after := t0.Add(5 * time.Hour)
	h.issue(after, inFamily("at1", "access", "ac1"))
	h.ok(after, &fsm.Expire{Before: ns(after), IDs: []string{"ac1"}})
	wantRecord(t, h, "ac1", fsm.Consumed, rt.ExpiresAt)

	// The kind's revocation leaves the family open and the code held.
	if res := h.ok(after, &fsm.RevokeFamilyKind{Family: "ac1", Kind: "access"}); res.Count != 1 {
		t.Fatalf("revoke of the family's access tokens: count %d, want 1", res.Count)
	}
	wantRecord(t, h, "ac1", fsm.Consumed, rt.ExpiresAt)
	res := h.do(after, &fsm.Consume{Hash: secretHash("ac1"), FamilyHold: hold})
	wantErr(t, "reuse of the held code", res, fsm.ErrReused)
	if res.Count != 1 {
		t.Fatalf("reuse revoked %d, want 1 (rt1)", res.Count)
	}
	wantRecord(t, h, "ac1", fsm.Consumed, 0)
	if res := h.ok(after, &fsm.Expire{Before: ns(after), IDs: []string{"ac1"}}); res.Count != 1 {
		t.Fatalf("expiry of the released code collected %d, want 1", res.Count)
	}

	// Collected: a family of a refresh token and its successor.
	h = newHarness(t)
	h.issue(t0, code("ac1"))
	h.ok(t0, &fsm.Revoke{ID: "ac1"})
	h.ok(after, &fsm.Expire{Before: ns(after), IDs: []string{"ac1"}})
	if h.s.ByID("ac1") != nil {
		t.Fatal("the revoked code was not collected")
	}
	h.issue(after, refresh("rt1", "ac1", time.Hour))
	h.ok(after, rotation("rt1", "rt2", false))
	late := after.Add(2 * time.Hour)
	if res := h.ok(late, &fsm.Expire{Before: ns(late), IDs: []string{"rt1"}}); res.Count != 0 {
		t.Fatalf("expiry collected %d, want rt1 held for rt2", res.Count)
	}
	res = h.do(late, rotation("rt1", "rt3", false))
	wantErr(t, "reuse", res, fsm.ErrReused)
	if res.Count != 1 {
		t.Fatalf("reuse revoked %d, want 1 (rt2)", res.Count)
	}
}

// A client names the family of what it issues: a record whose id is the
// name of a family, but whose own family is another, is not that family's.
func TestRecordNamedLikeAnotherFamily(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, inFamily("x1", "access", "g"))
	h.issue(t0, newIssue("x2", "access", time.Hour, 0)) // no family
	for _, f := range []string{"x1", "x2"} {
		h.issue(t0, refresh(f+"-rt", f, 30*time.Minute))
		h.ok(t0, &fsm.Consume{Hash: secretHash(f + "-rt")})
	}
	now := t0.Add(40 * time.Minute)
	if res := h.ok(now, &fsm.Expire{Before: ns(now), IDs: []string{"x1-rt", "x2-rt"}}); res.Count != 2 {
		t.Fatalf("expiry collected %d, want both tombstones (no token of their families is active)", res.Count)
	}
	h.issue(now, inFamily("y1", "access", "x1"))
	if res := h.ok(now, &fsm.RevokeFamily{Family: "x1", FamilyHold: hold}); res.Count != 1 {
		t.Fatalf("revoke of family x1: count %d, want 1 (y1)", res.Count)
	}
	wantRecord(t, h, "x1", fsm.Active, 0)
	wantRecord(t, h, "y1", fsm.Revoked, 0)
	if res := h.ok(now, &fsm.RevokeFamily{Family: "x2", FamilyHold: hold}); res.Count != 0 || h.s.RevokedFamily("x2", ns(now)) != nil {
		t.Fatalf("revoke of family x2, which holds nothing: count %d, remembered %v", res.Count, h.s.RevokedFamily("x2", ns(now)))
	}
	wantRecord(t, h, "x2", fsm.Active, 0)
}

// A client batch undone puts a family of one back as it was: its code
// issued and then undone is in no answer, and its revocation undone
// leaves it active and the family open.
func TestClientBatchUndoOfAFamilyOfOne(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	unknown := &fsm.Consume{Hash: secretHash("nobody")}
	res := h.do(t0, clientBatch(t, &fsm.RevokeFamily{Family: "ac1", FamilyHold: hold}, unknown))
	wantErr(t, "batch", res, fsm.ErrNotFound)
	wantRecord(t, h, "ac1", fsm.Active, 0)
	res = h.do(t0, clientBatch(t, code("ac2"), unknown))
	wantErr(t, "batch", res, fsm.ErrNotFound)
	if res := h.ok(t0, &fsm.RevokeFamily{Family: "ac2", FamilyHold: hold}); res.Count != 0 || h.s.RevokedFamily("ac2", ns(t0)) != nil {
		t.Fatalf("revoke of an undone code's family: count %d", res.Count)
	}
	if res := h.ok(t0, &fsm.RevokeFamily{Family: "ac1", FamilyHold: hold}); res.Count != 1 {
		t.Fatalf("revoke of family ac1 after the undo: count %d, want 1", res.Count)
	}
}

// Restored from a snapshot (the bulk load), a family of one answers as
// before.
func TestRestoredFamilyOfOne(t *testing.T) {
	for _, s := range []*fsm.Machine{fsm.New(), fsm.NewColliding()} {
		h := &harness{t: t, s: s}
		for _, id := range []string{"ac1", "ac2", "ac3"} {
			h.issue(t0, code(id))
		}
		h.issue(t0, refresh("rt2", "ac2", time.Hour))
		h.ok(t0, &fsm.Consume{Hash: secretHash("rt2")})
		r := &harness{t: t, s: restored(t, h.snapshot()), index: h.index}
		now := t0.Add(2 * time.Hour)
		if res := r.ok(now, &fsm.RevokeFamily{Family: "ac1", FamilyHold: hold}); res.Count != 1 {
			t.Fatalf("restored: revoke of a family of one: count %d, want 1", res.Count)
		}
		if res := r.ok(now, &fsm.Expire{Before: ns(now), IDs: []string{"rt2"}}); res.Count != 0 {
			t.Fatalf("restored: expiry collected %d, want rt2 held for ac2", res.Count)
		}
		wantRecord(t, r, "ac3", fsm.Active, 0)
	}
}
