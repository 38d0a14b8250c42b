package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

const hold = int64(365 * 24 * time.Hour)

// code is the Issue of an authorization code that starts a family of its
// own and detects reuse.
func code(id string) *fsm.Issue {
	return with(newIssue(id, "oauth2_code", 4*time.Hour, 1), func(r *fsm.Record) {
		r.Subject, r.ClientID, r.DetectReuse, r.Data = "user:1", "app1", true, []byte(`{"redirect_uri":"https://app/cb"}`)
	})
}

func inFamily(id, kind, family string) *fsm.Issue {
	return with(newIssue(id, kind, time.Hour, 0), func(r *fsm.Record) { r.Family = family })
}

// The race of many exchanges of one code: the losers' reuse detection
// applies before the winner issues into the family. The winner's issues
// are refused, and the answer says when and why the family was revoked.
func TestIssueIntoFamilyRevokedByReuse(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	now := t0.Add(time.Minute)
	h.ok(now, &fsm.Consume{Hash: secretHash("ac1")}) // the winner
	res := h.do(now, &fsm.Consume{Hash: secretHash("ac1"), FamilyHold: hold})
	wantErr(t, "second consume", res, fsm.ErrReused)

	later := now.Add(time.Second)
	for _, c := range []*fsm.Issue{refresh("rt1", "ac1", 24*time.Hour), inFamily("at1", "access", "ac1")} {
		res := h.do(later, c)
		wantErr(t, "issue of "+c.Record.ID+" into the family", res, fsm.ErrFamilyRevoked)
		if f := res.Family; f == nil || f.Family != "ac1" || f.At != ns(now) || !strings.Contains(f.Reason, "reuse of consumed oauth2_code ac1") {
			t.Fatalf("issue of %s: family %+v, want ac1 revoked at %d for the reuse", c.Record.ID, f, ns(now))
		}
		if r := res.Record; r == nil || r.ID != c.Record.ID || r.Family != "ac1" || r.Data != nil || r.InvalidatedAt != ns(now) {
			t.Fatalf("issue of %s: record %+v, want the refused token naming its family, without data", c.Record.ID, r)
		}
		if h.s.ByID(c.Record.ID) != nil {
			t.Fatalf("the refused %s was stored", c.Record.ID)
		}
	}
	// Another family is not affected.
	h.ok(later, inFamily("at2", "access", "other"))
}

func TestRotateIntoRevokedFamily(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, refresh("rt1", "", 24*time.Hour))
	// A token issued into the family before it is remembered (an old log
	// entry) is revoked with it; an active one in a family remembered as
	// revoked (restored state) is refused rotation.
	now := t0.Add(time.Minute)
	h.ok(now, &fsm.RevokeFamily{Family: "rt1", Reason: "logout", FamilyHold: hold})
	wantErr(t, "rotation of a revoked token", h.do(now, rotation("rt1", "rt2", false)), fsm.ErrRevoked)
	wantErr(t, "issue after revocation", h.do(now, refresh("rt3", "rt1", time.Hour)), fsm.ErrFamilyRevoked)
	if f := h.s.RevokedFamily("rt1", ns(now)); f == nil || f.Reason != "logout" || f.Until != ns(now)+hold {
		t.Fatalf("RevokedFamily = %+v, want rt1 revoked for logout until %d", f, ns(now)+hold)
	}
}

// Entries written before families were remembered carry no hold: applied
// by this build they do what they always did, so replay does not diverge.
func TestRevokeWithoutHoldRemembersNothing(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	h.ok(t0, &fsm.Consume{Hash: secretHash("ac1")})
	wantErr(t, "reuse", h.do(t0, &fsm.Consume{Hash: secretHash("ac1")}), fsm.ErrReused)
	h.ok(t0, &fsm.RevokeFamily{Family: "f2"})
	h.ok(t0.Add(time.Second), inFamily("at1", "access", "ac1"))
	h.ok(t0.Add(time.Second), inFamily("at2", "access", "f2"))
	if n := h.s.RevokedFamilies(); n != 0 {
		t.Fatalf("%d revoked families remembered, want none", n)
	}
}

func TestRevokedFamilyForgottenAfterHold(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, inFamily("at0", "access", "f1"))
	h.ok(t0, &fsm.RevokeFamily{Family: "f1", Reason: "first", FamilyHold: int64(time.Hour)})
	// Revoked again with a longer hold: the first time and reason stay.
	h.ok(t0.Add(time.Minute), &fsm.RevokeFamily{Family: "f1", Reason: "second", FamilyHold: int64(2 * time.Hour)})
	f := h.s.RevokedFamily("f1", ns(t0))
	if f == nil || f.At != ns(t0) || f.Reason != "first" || f.Until != ns(t0.Add(time.Minute+2*time.Hour)) {
		t.Fatalf("RevokedFamily = %+v, want revoked at %d for %q until 2h after the second", f, ns(t0), "first")
	}
	wantErr(t, "issue within the hold", h.do(t0.Add(2*time.Hour), inFamily("at1", "access", "f1")), fsm.ErrFamilyRevoked)
	h.ok(t0.Add(3*time.Hour), inFamily("at2", "access", "f1"))
	if n := h.s.RevokedFamilies(); n != 0 {
		t.Fatalf("%d revoked families remembered after the hold, want none", n)
	}
}

func TestSnapshotCarriesRevokedFamilies(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, inFamily("at-f1", "access", "f1"))
	h.ok(t0, inFamily("at-f2", "access", "f2"))
	h.ok(t0, &fsm.RevokeFamily{Family: "f1", Reason: "logout", FamilyHold: hold})
	h.ok(t0, &fsm.RevokeFamily{Family: "f2", Reason: "leak", FamilyHold: hold})
	snap := h.snapshot()
	c := &harness{t: t, s: restored(t, snap), index: h.index}
	if n := c.s.RevokedFamilies(); n != 2 {
		t.Fatalf("restored store remembers %d revoked families, want 2", n)
	}
	res := c.do(t0.Add(time.Minute), inFamily("at1", "access", "f2"))
	wantErr(t, "issue into a family revoked before the snapshot", res, fsm.ErrFamilyRevoked)
	if res.Family.Reason != "leak" {
		t.Fatalf("restored family %+v, want reason leak", res.Family)
	}
	// A snapshot without revoked families has no family frame (an older
	// node can restore it); with them, the outcome names the family.
	if o := res.Outcome().Result(); o.Family == nil || !errors.Is(o.Err, fsm.ErrFamilyRevoked) {
		t.Fatalf("outcome round trip = %+v, want the family and ErrFamilyRevoked", o)
	}
}

// A tombstone held past its expiry for its family keeps only its ids and
// family: never the data it kept until its own expiry.
func TestHeldTombstoneDropsData(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, code("ac1"))
	h.ok(t0, &fsm.Consume{Hash: secretHash("ac1")})
	h.issue(t0, refresh("rt1", "ac1", 24*time.Hour))
	if r := h.s.ByID("ac1"); r.Data == nil {
		t.Fatalf("consumed code %+v lost its data before its expiry", r)
	}
	after := t0.Add(5 * time.Hour)
	h.ok(after, &fsm.Expire{Before: ns(after), IDs: []string{"ac1"}})
	r := h.s.ByID("ac1")
	if r == nil || r.HoldUntil == 0 {
		t.Fatalf("code tombstone %+v, want it held for its family", r)
	}
	if r.Data != nil || r.Scopes != nil || r.Title != "" || r.Family != "ac1" || r.Subject != "user:1" || r.ClientID != "app1" {
		t.Fatalf("held tombstone %+v, want its ids and family without data", r)
	}
	wantErr(t, "reuse of the held code", h.do(after, &fsm.Consume{Hash: secretHash("ac1")}), fsm.ErrReused)
}

func TestSealedSuccessorDroppedAfterGrace(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, refresh("rt1", "", 24*time.Hour))
	c := rotation("rt1", "rt2", false)
	c.Grace, c.Sealed = int64(time.Minute), []byte("sealed")
	h.ok(t0, c)
	if r := h.s.ByID("rt1"); len(r.Rotated.Sealed) == 0 {
		t.Fatalf("rotated tombstone %+v lost its sealed successor within the grace", r.Rotated)
	}
	res := h.ok(t0.Add(30*time.Second), rotation("rt1", "rt9", false))
	if res.Record.ID != "rt2" || string(res.Sealed) != "sealed" {
		t.Fatalf("retry within grace: %+v, want rt2 and the sealed secrets", res)
	}
	// Any entry after the grace period ends drops it.
	h.ok(t0.Add(time.Minute), inFamily("x", "access", ""))
	r := h.s.ByID("rt1")
	if r.Rotated == nil || r.Rotated.Sealed != nil || r.Rotated.Successor != "rt2" {
		t.Fatalf("rotated tombstone after grace: %+v, want the successor named and nothing sealed", r.Rotated)
	}
	snap := h.snapshot()
	if strings.Contains(string(snap), "sealed") {
		t.Fatalf("a snapshot after the grace still holds the sealed successor")
	}
}

// TestRevokedFamilyMemory measures what a remembered revoked family costs
// in the state (both indexes, the entry, a 22-byte family name and a
// reuse reason), and bounds it.
func TestRevokedFamilyMemory(t *testing.T) {
	const n = 20_000
	s := fsm.New()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("fam%019d", i)
	}
	reason := "reuse of consumed oauth2_code 0123456789abcdefghijkl detected"
	// Only a family that has tokens is remembered: one each, issued before
	// the count starts (revoking turns it into a tombstone of its size).
	for i, name := range names {
		is := newIssue(name, "access", time.Hour, 0)
		is.Record.Family = name
		s.Apply(uint64(i+1), encode(t, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{encode(t, is)}}))
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i, name := range names {
		b, err := fsm.Encode(&fsm.Batch{Now: ns(t2031), Entries: [][]byte{encode(t, &fsm.RevokeFamily{Family: name, Reason: reason, FamilyHold: hold})}})
		if err != nil {
			t.Fatal(err)
		}
		s.Apply(uint64(n+i+1), b)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := s.RevokedFamilies(); got != n {
		t.Fatalf("%d revoked families, want %d", got, n)
	}
	// The family name and reason strings were decoded from the entries and
	// are held by the state; the names slice above is not counted.
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("memory per revoked family: %.0f bytes (name 22 bytes, reason %d bytes)", per, len(reason))
	if per > 400 {
		t.Errorf("a revoked family costs %.0f bytes, want at most 400", per)
	}
	runtime.KeepAlive(names)
}

// Until every voter runs this version, the leader writes no field an
// older replica would ignore: Downgrade clears them, and only them.
func TestDowngradeClearsNewerFields(t *testing.T) {
	for _, c := range []fsm.Command{
		&fsm.Consume{Hash: "h", FamilyHold: 9},
		&fsm.Rotate{Hash: "h", Kind: "oauth2_refresh", FamilyHold: 9},
		&fsm.RevokeFamily{Family: "f", Reason: "r", FamilyHold: 9},
	} {
		entry := encode(t, c)
		if same, err := fsm.Downgrade(entry, fsm.Version); err != nil || !bytes.Equal(same, entry) {
			t.Fatalf("Downgrade(%T) to this version changed it: %v", c, err)
		}
		old, err := fsm.Downgrade(entry, 1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fsm.Decode(old)
		if err != nil {
			t.Fatal(err)
		}
		var hold int64
		switch g := got.(type) {
		case *fsm.Consume:
			hold = g.FamilyHold
		case *fsm.Rotate:
			hold = g.FamilyHold
		case *fsm.RevokeFamily:
			hold = g.FamilyHold
			if g.Family != "f" || g.Reason != "r" {
				t.Fatalf("Downgrade changed other fields: %+v", g)
			}
		}
		if hold != 0 {
			t.Fatalf("Downgrade(%T) to version 1 kept FamilyHold %d", c, hold)
		}
	}
	issue := encode(t, newIssue("x", "access", time.Hour, 0))
	if same, _ := fsm.Downgrade(issue, 1); !bytes.Equal(same, issue) {
		t.Fatal("Downgrade changed a command without newer fields")
	}
}

// A Fence raises the version the log needs; a fence of a version this
// build does not run halts it, as an unknown type would; snapshots carry
// the version, and a state that needs a newer one is not restored.
func TestFence(t *testing.T) {
	h := newHarness(t)
	if got := h.s.LogVersion(); got != 1 {
		t.Fatalf("LogVersion of a new store = %d, want 1", got)
	}
	h.ok(t2031, &fsm.Fence{Version: fsm.Version})
	if got := h.s.LogVersion(); got != fsm.Version {
		t.Fatalf("LogVersion after the fence = %d, want %d", got, fsm.Version)
	}
	restored := fsm.New()
	if err := restored.Restore(bytes.NewReader(snapshotBytes(t, h.s))); err != nil || restored.LogVersion() != fsm.Version {
		t.Fatalf("restored LogVersion = %d (%v), want %d", restored.LogVersion(), err, fsm.Version)
	}
	h.index++
	res := h.s.Apply(h.index, encode(t, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{encode(t, &fsm.Fence{Version: fsm.Version + 1})}}))
	if !errors.Is(res.Err, fsm.ErrHalted) {
		t.Fatalf("a fence of a newer version: %+v, want ErrHalted", res)
	}
	if halt, ok := h.s.Halted(); !ok || halt.Type != fsm.TypeFence {
		t.Fatalf("Halted() = %+v, %v; want halted at the fence", halt, ok)
	}
}

// A family nothing was issued into is not remembered: the memory of
// revoked families grows with grants, not with revocation requests.
func TestRevokingAnUnknownFamilyRemembersNothing(t *testing.T) {
	h := newHarness(t)
	h.ok(t2031, &fsm.RevokeFamily{Family: "typo", Reason: "r", FamilyHold: hold})
	if got := h.s.RevokedFamilies(); got != 0 {
		t.Fatalf("%d revoked families after revoking one without tokens, want 0", got)
	}
	is := newIssue("x", "access", time.Hour, 0)
	is.Record.Family = "typo"
	h.issue(t2031, is)
}
