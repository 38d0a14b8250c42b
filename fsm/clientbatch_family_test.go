package fsm_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// familySetup is a grant whose code was exchanged and collected (its
// tombstone held for the family), with a rotated refresh token and access
// tokens, and a second family of access tokens.
func familySetup(h *harness) []string {
	h.issue(t0, code("ac1"))
	h.ok(t0, &fsm.Consume{Hash: secretHash("ac1")})
	h.issue(t0, refresh("rt1", "ac1", 24*time.Hour))
	after := t0.Add(5 * time.Hour)
	h.ok(after, &fsm.Expire{Before: ns(after), IDs: []string{"ac1"}})
	if r := h.s.ByID("ac1"); r == nil || r.HoldUntil == 0 {
		h.t.Fatalf("code tombstone %+v, want it held", r)
	}
	h.ok(after, rotation("rt1", "rt2", true))
	h.issue(after, inFamily("at1", "access", "ac1"))
	h.issue(after, inFamily("other", "access", "fam2"))
	h.issue(after, inFamily("other2", "oauth2_refresh", "fam2"))
	return []string{"ac1", "rt1", "rt2", "rt2-at", "at1", "other", "other2", "new", "dup"}
}

// A family revocation in a batch does what it does alone: the same
// answer, records, indexes, counts, revoked families and snapshot bytes.
func TestBatchFamilyRevocationMatchesAlone(t *testing.T) {
	now := t0.Add(5*time.Hour + time.Minute)
	for name, op := range map[string]fsm.Command{
		"for good": &fsm.RevokeFamily{Family: "ac1", Reason: "logout", FamilyHold: hold},
		"by kind":  &fsm.RevokeFamilyKind{Family: "ac1", Kind: "access", Reason: "rotated"},
		"unknown":  &fsm.RevokeFamily{Family: "nobody", FamilyHold: hold},
	} {
		t.Run(name, func(t *testing.T) {
			alone, batched := newHarness(t), newHarness(t)
			ids := familySetup(alone)
			familySetup(batched)
			want := alone.ok(now, op)
			res := batched.ok(now, clientBatch(t, op))
			if len(res.Ops) != 1 || !reflect.DeepEqual(res.Ops[0], want) {
				t.Fatalf("batched %+v, alone %+v", res.Ops, want)
			}
			if name != "unknown" && want.Count == 0 {
				t.Fatal("the revocation revoked nothing: the test tests nothing")
			}
			for _, id := range ids {
				if got, want := batched.s.ByID(id), alone.s.ByID(id); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: batched %+v, alone %+v", id, got, want)
				}
			}
			countsEqual(t, "batched", batched.s.Counts(), alone.s.Counts())
			checkConsistent(t, batched.s, ids, ns(now))
			if batched.s.RevokedFamilies() != alone.s.RevokedFamilies() {
				t.Errorf("revoked families: batched %d, alone %d", batched.s.RevokedFamilies(), alone.s.RevokedFamilies())
			}
			if !bytes.Equal(batched.snapshot(), alone.snapshot()) {
				t.Error("snapshots differ")
			}
		})
	}
}

// A family revocation undone by a later op's failure leaves nothing
// behind: the family's tokens active, the held tombstone held, the family
// open, and the other family's tokens of the kind active, as on a node
// that applied an empty entry.
func TestBatchFamilyRevocationUndone(t *testing.T) {
	failing, control := newHarness(t), newHarness(t)
	ids := familySetup(failing)
	familySetup(control)
	now := t0.Add(5*time.Hour + time.Minute)
	res := failing.do(now, clientBatch(t,
		&fsm.RevokeFamily{Family: "ac1", Reason: "logout", FamilyHold: hold},
		&fsm.RevokeFamilyKind{Family: "fam2", Kind: "access", Reason: "rotated"},
		inFamily("new", "access", "fam2"),
		with(newIssue("dup", "access", time.Hour, 0), func(r *fsm.Record) { r.Hash = secretHash("other") }),
	))
	wantErr(t, "batch with a taken hash", res, fsm.ErrExists)
	if res.Op != 3 {
		t.Fatalf("batch result %+v: want op 3's failure", res)
	}
	control.applyRaw(encode(t, &fsm.Batch{Now: ns(now), Entries: [][]byte{}}), 0)
	for _, id := range ids {
		if got, want := failing.s.ByID(id), control.s.ByID(id); !reflect.DeepEqual(got, want) {
			t.Errorf("%s after the failed batch: %+v, want %+v", id, got, want)
		}
	}
	if r := failing.s.ByID("ac1"); r == nil || r.HoldUntil == 0 {
		t.Errorf("code tombstone %+v, want it still held", r)
	}
	countsEqual(t, "after the failed batch", failing.s.Counts(), control.s.Counts())
	checkConsistent(t, failing.s, ids, ns(now))
	if n := failing.s.RevokedFamilies(); n != 0 {
		t.Errorf("%d revoked families, want none", n)
	}
	if !bytes.Equal(failing.snapshot(), control.snapshot()) {
		t.Error("snapshots differ")
	}
	// The family index is as it was: the same revocations alone revoke
	// the same tokens on both, and the family takes new tokens until then.
	failing.issue(now, inFamily("later", "access", "ac1"))
	control.issue(now, inFamily("later", "access", "ac1"))
	for _, h := range []*harness{failing, control} {
		if got := h.ok(now, &fsm.RevokeFamilyKind{Family: "fam2", Kind: "access"}).Count; got != 1 {
			t.Errorf("revoking fam2's access tokens after: %d, want 1", got)
		}
		if got := h.ok(now, &fsm.RevokeFamily{Family: "ac1", FamilyHold: hold}).Count; got != 4 {
			t.Errorf("revoking ac1 after: %d, want rt2, rt2-at, at1, later", got)
		}
	}
	if !bytes.Equal(failing.snapshot(), control.snapshot()) {
		t.Error("snapshots differ after the same revocations")
	}
}

// Ops after a family revocation see it: an issue into a family revoked
// for good fails the batch, which undoes the revocation; one into a
// family whose tokens of a kind were revoked succeeds.
func TestBatchOpsSeeFamilyRevocation(t *testing.T) {
	h := newHarness(t)
	ids := familySetup(h)
	now := t0.Add(5*time.Hour + time.Minute)
	res := h.do(now, clientBatch(t,
		&fsm.RevokeFamily{Family: "ac1", Reason: "logout", FamilyHold: hold},
		inFamily("new", "access", "ac1"),
	))
	wantErr(t, "issue into the family the batch revoked", res, fsm.ErrFamilyRevoked)
	if res.Op != 1 || res.Family == nil || res.Family.Reason != "logout" {
		t.Fatalf("result %+v: want op 1, naming the revocation", res)
	}
	if h.s.RevokedFamilies() != 0 || h.s.ByID("rt2").State != fsm.Active {
		t.Fatal("the failed batch's revocation stayed")
	}
	// fosite's rotation: revoke the grant's access tokens, rotate.
	res = h.ok(now, clientBatch(t,
		&fsm.RevokeFamilyKind{Family: "ac1", Kind: "access", Reason: "rotated"},
		rotation("rt2", "rt3", true),
	))
	if res.Ops[0].Count != 2 || res.Ops[1].Record.ID != "rt3" {
		t.Fatalf("rotation batch: %+v", res.Ops)
	}
	for id, want := range map[string]fsm.State{"rt2-at": fsm.Revoked, "at1": fsm.Revoked, "rt3-at": fsm.Active, "rt3": fsm.Active, "rt2": fsm.Consumed} {
		if r := h.s.ByID(id); r.State != want {
			t.Errorf("%s: state %d, want %d", id, r.State, want)
		}
	}
	checkConsistent(t, h.s, append(ids, "rt3", "rt3-at"), ns(now))
}

// A batch holding a family revocation needs Version 3 on every replica:
// Downgrade to an older version refuses it, and keeps the other batches.
func TestDowngradeBatchWithFamilyRevocation(t *testing.T) {
	for _, op := range []fsm.Command{
		&fsm.RevokeFamily{Family: "f", FamilyHold: hold},
		&fsm.RevokeFamilyKind{Family: "f", Kind: "access"},
	} {
		entry := encode(t, clientBatch(t, newIssue("b", "access", time.Hour, 0), op))
		for _, v := range []int{1, 2} {
			if _, err := fsm.Downgrade(entry, v); !errors.Is(err, fsm.ErrNeedsVersion) {
				t.Errorf("Downgrade(%T in a batch, %d): %v, want ErrNeedsVersion", op, v, err)
			}
		}
		if same, err := fsm.Downgrade(entry, 3); err != nil || &same[0] != &entry[0] {
			t.Errorf("Downgrade(%T in a batch, 3): %v", op, err)
		}
		// Alone, as before.
		if _, err := fsm.Downgrade(encode(t, op), 1); err != nil {
			t.Errorf("Downgrade(%T alone, 1): %v", op, err)
		}
	}
	// A consume's FamilyHold is of version 2: kept for a log at 2.
	entry := encode(t, clientBatch(t, &fsm.Consume{Hash: secretHash("a"), FamilyHold: hold}))
	if same, err := fsm.Downgrade(entry, 2); err != nil || &same[0] != &entry[0] {
		t.Errorf("Downgrade of a batch with a FamilyHold to 2: %v, changed %v", err, &same[0] != &entry[0])
	}
}
