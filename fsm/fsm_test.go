package fsm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/fsm"
)

// t2031 is a leader time in the future of any test machine, as t0 is in its
// past: a state machine that read the clock would get one of them wrong.
var t2031 = time.Date(2031, 7, 8, 9, 10, 11, 0, time.UTC)

func TestExpiryFollowsCommandTime(t *testing.T) {
	const ttl = time.Hour
	for _, start := range []time.Time{t0, t2031} {
		t.Run(start.Format("2006"), func(t *testing.T) {
			h := newHarness(t)
			r := h.issue(start, newIssue("tok", "access", ttl, 0))
			if r.CreatedAt != ns(start) || r.ExpiresAt != ns(start)+int64(ttl) {
				t.Fatalf("issued CreatedAt %d, ExpiresAt %d; want %d and %d (batch time + TTL)",
					r.CreatedAt, r.ExpiresAt, ns(start), ns(start)+int64(ttl))
			}
			last := start.Add(ttl - time.Nanosecond)
			if res := h.ok(last, &fsm.Consume{Hash: secretHash("tok")}); res.Record.LastUsedAt != ns(last) {
				t.Fatalf("Consume 1ns before expiry: LastUsedAt %d, want %d", res.Record.LastUsedAt, ns(last))
			}
			for _, at := range []time.Time{start.Add(ttl), start.Add(ttl + time.Hour)} {
				res := h.do(at, &fsm.Consume{Hash: secretHash("tok")})
				wantErr(t, "Consume at "+at.Sub(start).String()+" after issue", res, fsm.ErrExpired)
				if stored := h.s.ByHash(secretHash("tok")); res.Record == nil || !reflect.DeepEqual(res.Record, stored) {
					t.Fatalf("ErrExpired carried record %+v, want the stored record %+v", res.Record, stored)
				}
			}
		})
	}
}

func TestTimeNeverRunsBackwards(t *testing.T) {
	h := newHarness(t)
	h.issue(t2031, newIssue("short", "access", 5*time.Minute, 0))
	h.issue(t2031.Add(10*time.Minute), newIssue("a", "access", 0, 0))

	// A new leader whose clock is 10 minutes behind: its batch is applied
	// at the state's time, for every command in it.
	res := h.batch(t2031,
		&fsm.Consume{Hash: secretHash("short")},
		newIssue("b", "access", time.Hour, 0),
		&fsm.Expire{Before: ns(t2031.Add(10 * time.Minute)), IDs: []string{"short"}},
	)
	stateNow := ns(t2031.Add(10 * time.Minute))
	wantErr(t, "Consume of a token expired by state time", res[0], fsm.ErrExpired)
	if r := res[1].Record; r == nil || r.CreatedAt != stateNow || r.ExpiresAt != stateNow+int64(time.Hour) {
		t.Fatalf("Issue in a batch with an earlier Now: record %+v, want CreatedAt %d and ExpiresAt %d", r, stateNow, stateNow+int64(time.Hour))
	}
	if res[2].Count != 1 || h.s.ByID("short") != nil {
		t.Fatalf("Expire clamped to state time: count %d, record %+v; want count 1 and the record gone", res[2].Count, h.s.ByID("short"))
	}

	// And time moves on when the clock catches up.
	at := t2031.Add(20 * time.Minute)
	if r := h.issue(at, newIssue("c", "access", 0, 0)); r.CreatedAt != ns(at) {
		t.Fatalf("CreatedAt of a later batch = %d, want %d", r.CreatedAt, ns(at))
	}
}

// wantTombstone fails unless r is a tombstone with these fields and none of
// the data the live record had.
func wantTombstone(t testing.TB, r *fsm.Record, state fsm.State, at time.Time, reason string, index uint64) {
	t.Helper()
	// A consumed token keeps its data until its expiry; a revoked one none.
	if r == nil || r.State != state || r.InvalidatedAt != ns(at) || r.Reason != reason || (state == fsm.Revoked && r.Data != nil) || r.UsesLeft != 0 || r.ModifyIndex != index {
		t.Fatalf("tombstone %+v; want state %d, InvalidatedAt %d, reason %q, no data if revoked, UsesLeft 0, ModifyIndex %d",
			r, state, ns(at), reason, index)
	}
}

func TestConsumedTombstone(t *testing.T) {
	h := newHarness(t)
	data := []byte(`{"redirect":"/x"}`)
	h.issue(t2031, with(newIssue("code", "oauth2_code", 10*time.Minute, 1), func(r *fsm.Record) { r.Data, r.Subject = data, "user:1" }))
	expiry := t2031.Add(10 * time.Minute)

	used := t2031.Add(time.Minute)
	res := h.ok(used, &fsm.Consume{Hash: secretHash("code")})
	if !bytes.Equal(res.Record.Data, data) || res.Record.UsesLeft != 0 {
		t.Fatalf("the consuming caller got %+v, want the data %q and UsesLeft 0", res.Record, data)
	}
	stored := h.s.ByHash(secretHash("code"))
	wantTombstone(t, stored, fsm.Consumed, used, "consumed", h.index)
	if !bytes.Equal(stored.Data, data) {
		t.Fatalf("tombstone data %q, want the token's data %q kept until its expiry", stored.Data, data)
	}
	if stored.ExpiresAt != ns(expiry) || stored.Subject != "user:1" {
		t.Fatalf("tombstone %+v lost its expiry %d or subject", stored, ns(expiry))
	}
	if got, _ := h.s.ListBySubject("user:1", "", "", 10, ns(used)); len(got) != 0 {
		t.Fatalf("ListBySubject after consume = %v, want no active record", ids(got))
	}

	// Until it is collected, the tombstone explains every later attempt.
	for _, at := range []time.Time{used.Add(time.Minute), expiry.Add(-time.Nanosecond), expiry, expiry.Add(time.Hour)} {
		res := h.do(at, &fsm.Consume{Hash: secretHash("code")})
		wantErr(t, "Consume at "+at.Sub(t2031).String(), res, fsm.ErrConsumed)
		if !reflect.DeepEqual(res.Record, stored) || res.Record.InvalidatedAt != ns(used) || res.Record.Reason != "consumed" {
			t.Fatalf("ErrConsumed carried %+v, want the tombstone %+v", res.Record, stored)
		}
	}

	gc := newHarness(t)
	gc.issue(t2031, with(newIssue("code", "oauth2_code", 10*time.Minute, 1), func(r *fsm.Record) { r.Data = data }))
	gc.ok(used, &fsm.Consume{Hash: secretHash("code")})
	if res := gc.do(expiry, &fsm.Expire{Before: ns(expiry) - 1, IDs: []string{"code"}}); res.Count != 0 || gc.s.ByID("code") == nil {
		t.Fatalf("Expire before the tombstone's expiry: count %d, want 0 and the tombstone kept", res.Count)
	}
	if res := gc.do(expiry, &fsm.Expire{Before: ns(expiry), IDs: []string{"code"}}); res.Count != 1 {
		t.Fatalf("Expire at the tombstone's expiry: count %d, want 1", res.Count)
	}
	if r := gc.s.ByID("code"); r != nil {
		t.Fatalf("ByID after Expire = %+v, want nil", r)
	}
	res = gc.do(expiry, &fsm.Consume{Hash: secretHash("code")})
	wantErr(t, "Consume after collection", res, fsm.ErrNotFound)
	if res.Record != nil {
		t.Fatalf("ErrNotFound carried record %+v, want nil", res.Record)
	}
	countsEqual(t, "after collection", gc.s.Counts(), nil)
}

func TestRevokedTombstone(t *testing.T) {
	h := newHarness(t)
	h.issue(t2031, with(newIssue("acc", "access", time.Hour, 0), func(r *fsm.Record) { r.Data = []byte("payload") }))
	at := t2031.Add(time.Minute)
	res := h.ok(at, &fsm.Revoke{Hash: secretHash("acc"), Reason: "logout"})
	wantTombstone(t, res.Record, fsm.Revoked, at, "logout", h.index)
	tomb, index := res.Record, h.index
	if stored := h.s.ByID("acc"); !reflect.DeepEqual(stored, tomb) {
		t.Fatalf("stored after revoke %+v, want the returned tombstone %+v", stored, tomb)
	}

	res = h.do(at.Add(time.Minute), &fsm.Consume{Hash: secretHash("acc")})
	wantErr(t, "Consume of a revoked token", res, fsm.ErrRevoked)
	if !reflect.DeepEqual(res.Record, tomb) || res.Record.Reason != "logout" {
		t.Fatalf("ErrRevoked carried %+v, want the tombstone with reason %q", res.Record, "logout")
	}

	before := recordFrames(t, h.s)
	for _, again := range []*fsm.Revoke{{ID: "acc", Reason: "other"}, {Hash: secretHash("acc"), Reason: ""}} {
		res = h.ok(at.Add(2*time.Minute), again)
		if !reflect.DeepEqual(res.Record, tomb) || res.Record.Reason != "logout" || res.Record.ModifyIndex != index {
			t.Fatalf("Revoke again %+v returned %+v, want the unchanged tombstone %+v", again, res.Record, tomb)
		}
	}
	if !bytes.Equal(recordFrames(t, h.s), before) {
		t.Fatalf("revoking a revoked token changed the stored records")
	}
	wantErr(t, "Revoke of an unknown id", h.do(at, &fsm.Revoke{ID: "nope"}), fsm.ErrNotFound)
}

func TestMultiUseCountsDown(t *testing.T) {
	h := newHarness(t)
	h.issue(t2031, with(newIssue("multi", "access", time.Hour, 3), func(r *fsm.Record) { r.Data = []byte("d") }))
	for i, want := range []int64{2, 1, 0} {
		at := t2031.Add(time.Duration(i+1) * time.Minute)
		res := h.ok(at, &fsm.Consume{Hash: secretHash("multi")})
		if res.Record.UsesLeft != want || string(res.Record.Data) != "d" {
			t.Fatalf("use %d: UsesLeft %d, data %q; want %d and the data", i+1, res.Record.UsesLeft, res.Record.Data, want)
		}
		stored := h.s.ByID("multi")
		if want > 0 && (stored.State != fsm.Active || stored.UsesLeft != want) {
			t.Fatalf("use %d: stored %+v, want active with UsesLeft %d", i+1, stored, want)
		}
		if want == 0 {
			wantTombstone(t, stored, fsm.Consumed, at, "consumed", h.index)
		}
	}
	wantErr(t, "fourth use", h.do(t2031.Add(5*time.Minute), &fsm.Consume{Hash: secretHash("multi")}), fsm.ErrConsumed)
}

func TestExpireCollectsOnlyWhatIsDue(t *testing.T) {
	due := t2031.Add(time.Hour) // "due" expires then; "later" at +3h
	for _, tt := range []struct {
		name     string
		now      time.Time
		before   time.Time
		ids      []string
		wantGone []string
	}{
		{"before in the future is clamped to log time", t2031.Add(30 * time.Minute), t2031.Add(2 * time.Hour), []string{"due"}, nil},
		{"one ns before due by log time", due.Add(-time.Nanosecond), due.Add(5 * time.Hour), []string{"due"}, nil},
		{"exactly due", due, due, []string{"due"}, []string{"due"}},
		{"only due records of the list", t2031.Add(2 * time.Hour), t2031.Add(2 * time.Hour), []string{"due", "later", "forever"}, []string{"due"}},
		{"the leader's cut-off is kept", t2031.Add(5 * time.Hour), due.Add(-time.Nanosecond), []string{"due", "later"}, nil},
		{"never-expiring active record", t2031.Add(5 * time.Hour), time.Unix(0, 1<<63-1), []string{"forever"}, nil},
		{"unknown ids", t2031.Add(5 * time.Hour), t2031.Add(5 * time.Hour), []string{"nope", ""}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.issue(t2031, newIssue("due", "access", time.Hour, 0))
			h.issue(t2031, newIssue("later", "access", 3*time.Hour, 0))
			h.issue(t2031, newIssue("forever", "access", 0, 0))
			all := []string{"due", "later", "forever"}
			prior := liveRecords(h.s, all)

			res := h.do(tt.now, &fsm.Expire{Before: ns(tt.before), IDs: tt.ids})
			if res.Count != len(tt.wantGone) {
				t.Fatalf("Expire count %d, want %d", res.Count, len(tt.wantGone))
			}
			gone := map[string]bool{}
			for _, id := range tt.wantGone {
				gone[id] = true
			}
			for _, id := range all {
				got := h.s.ByID(id)
				switch {
				case gone[id] && (got != nil || h.s.ByHash(secretHash(id)) != nil):
					t.Fatalf("%q still stored after Expire, want it gone", id)
				case !gone[id] && !reflect.DeepEqual(got, prior[id]):
					t.Fatalf("%q after Expire = %+v, want it unchanged %+v", id, got, prior[id])
				}
			}
		})
	}
}

func TestNeverExpiringTombstoneIsCollected(t *testing.T) {
	for _, tt := range []struct {
		name       string
		uses       int64
		invalidate fsm.Command
		wantErr    error
	}{
		{"consumed", 1, &fsm.Consume{Hash: secretHash("tok")}, fsm.ErrConsumed},
		{"revoked", 0, &fsm.Revoke{ID: "tok", Reason: "r"}, fsm.ErrRevoked},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.issue(t2031, newIssue("tok", "developer", 0, tt.uses))
			inv := t2031.Add(time.Minute)
			h.ok(inv, tt.invalidate)
			gcAt := inv.Add(fsm.NeverExpiringTombstone)
			if got := h.s.ByID("tok").GCAt(); got != ns(gcAt) {
				t.Fatalf("GCAt of the tombstone = %d, want invalidation + %s = %d", got, fsm.NeverExpiringTombstone, ns(gcAt))
			}
			if got := h.s.DueForGC(ns(gcAt)-1, 10); len(got) != 0 {
				t.Fatalf("DueForGC(1ns before) = %v, want none", got)
			}
			if got := h.s.DueForGC(ns(gcAt), 10); !equalStrings(got, []string{"tok"}) {
				t.Fatalf("DueForGC(at GC time) = %v, want [tok]", got)
			}
			wantErr(t, "Consume just before collection", h.do(gcAt.Add(-time.Nanosecond), &fsm.Consume{Hash: secretHash("tok")}), tt.wantErr)
			if res := h.do(gcAt.Add(-time.Nanosecond), &fsm.Expire{Before: ns(gcAt), IDs: []string{"tok"}}); res.Count != 0 {
				t.Fatalf("Expire 1ns before GC time by log time: count %d, want 0", res.Count)
			}
			if res := h.do(gcAt, &fsm.Expire{Before: ns(gcAt), IDs: []string{"tok"}}); res.Count != 1 || h.s.ByID("tok") != nil {
				t.Fatalf("Expire at GC time: count %d, record %+v; want 1 and gone", res.Count, h.s.ByID("tok"))
			}
		})
	}
}

func TestBulkRevoke(t *testing.T) {
	setup := func(h *harness) []string {
		h.t.Helper()
		rec := func(id, kind, subject, family string, ttl time.Duration) {
			h.issue(t2031, with(newIssue(id, kind, ttl, 0), func(r *fsm.Record) { r.Subject, r.Family = subject, family }))
		}
		rec("u1-access-1", "access", "user:1", "", time.Hour)
		rec("u1-access-2", "access", "user:1", "fam-1", time.Hour)
		rec("u1-refresh", "oauth2_refresh", "user:1", "fam-1", 0)
		rec("u1-revoked", "access", "user:1", "fam-1", time.Hour)
		rec("u1-expired", "access", "user:1", "fam-1", time.Minute)
		rec("u2-access", "access", "user:2", "fam-1", time.Hour)
		rec("u2-other", "remember", "user:2", "", time.Hour)
		rec("nosubj", "access", "", "fam-2", time.Hour)
		h.ok(t2031, &fsm.Revoke{ID: "u1-revoked", Reason: "earlier"})
		return []string{"u1-access-1", "u1-access-2", "u1-refresh", "u1-revoked", "u1-expired", "u2-access", "u2-other", "nosubj"}
	}
	for _, tt := range []struct {
		name string
		cmd  fsm.Command
		want []string // the records revoked
	}{
		{"subject", &fsm.RevokeSubject{Subject: "user:1", Reason: "logout"}, []string{"u1-access-1", "u1-access-2", "u1-refresh"}},
		{"subject and kind", &fsm.RevokeSubject{Subject: "user:1", Kind: "access", Reason: "logout"}, []string{"u1-access-1", "u1-access-2"}},
		{"subject, kind it has none of", &fsm.RevokeSubject{Subject: "user:1", Kind: "developer", Reason: "logout"}, nil},
		{"other subject", &fsm.RevokeSubject{Subject: "user:2", Reason: "logout"}, []string{"u2-access", "u2-other"}},
		{"unknown subject", &fsm.RevokeSubject{Subject: "user:3", Reason: "logout"}, nil},
		{"empty subject", &fsm.RevokeSubject{Subject: "", Reason: "logout"}, nil},
		{"family", &fsm.RevokeFamily{Family: "fam-1", Reason: "logout"}, []string{"u1-access-2", "u1-refresh", "u2-access"}},
		{"family without subject", &fsm.RevokeFamily{Family: "fam-2", Reason: "logout"}, []string{"nosubj"}},
		{"empty family", &fsm.RevokeFamily{Family: "", Reason: "logout"}, nil},
		{"unknown family", &fsm.RevokeFamily{Family: "fam-3", Reason: "logout"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			all := setup(h)
			prior := liveRecords(h.s, all)
			at := t2031.Add(10 * time.Minute)
			res := h.ok(at, tt.cmd)
			if res.Count != len(tt.want) {
				t.Fatalf("Count = %d, want %d (%v)", res.Count, len(tt.want), tt.want)
			}
			revoked := map[string]bool{}
			for _, id := range tt.want {
				revoked[id] = true
				wantTombstone(t, h.s.ByID(id), fsm.Revoked, at, "logout", h.index)
			}
			for _, id := range all {
				if got := h.s.ByID(id); !revoked[id] && !reflect.DeepEqual(got, prior[id]) {
					t.Fatalf("%q changed to %+v, want it untouched %+v", id, got, prior[id])
				}
			}
		})
	}
}

func TestIssueExistingChangesNothing(t *testing.T) {
	for _, tt := range []struct {
		name, id, hash string
	}{
		{"same hash, other id", "other", secretHash("tok")},
		{"same id, other hash", "tok", hashOf("other")},
		{"same id and hash", "tok", secretHash("tok")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			orig := h.issue(t2031, with(newIssue("tok", "access", time.Hour, 2), func(r *fsm.Record) { r.Subject = "user:1" }))
			before := recordFrames(t, h.s)
			res := h.do(t2031.Add(time.Minute), with(newIssue(tt.id, "developer", 0, 0), func(r *fsm.Record) { r.Hash = tt.hash; r.Subject = "user:2" }))
			wantErr(t, "Issue of a taken "+tt.name, res, fsm.ErrExists)
			if res.Record != nil {
				t.Fatalf("ErrExists carried record %+v, want nil", res.Record)
			}
			if !bytes.Equal(recordFrames(t, h.s), before) {
				t.Fatalf("a refused Issue changed the stored records")
			}
			if !reflect.DeepEqual(h.s.ByID("tok"), orig) || !reflect.DeepEqual(h.s.ByHash(secretHash("tok")), orig) || h.s.ByID("other") != nil || h.s.ByHash(hashOf("other")) != nil {
				t.Fatalf("a refused Issue changed the indexes")
			}
			countsEqual(t, "after a refused Issue", h.s.Counts(), map[fsm.CountKey]int64{{Kind: "access", State: fsm.Active}: 1})
		})
	}
}

// TestIssueExistingUnderSnapshot refuses Issues of a taken id while a
// snapshot is open and being persisted: the refused record, stored for a
// moment and taken out again, reaches neither the snapshot nor the state.
func TestIssueExistingUnderSnapshot(t *testing.T) {
	h := newHarness(t)
	populate(h, t0)
	want := h.snapshot()
	frames := recordFrames(t, h.s)
	snap, err := h.s.RaftFSM().Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: unexpected error %v", err)
	}
	defer snap.Release()
	sink := &memSink{}
	done := make(chan error, 1)
	go func() { done <- snap.Persist(sink) }()
	for i := range 50 {
		res := h.do(t0.Add(time.Minute), with(newIssue("a-active", "developer", time.Hour, 0), func(r *fsm.Record) {
			r.Hash, r.Subject = hashOf(fmt.Sprint("other-", i)), "user:9"
		}))
		wantErr(t, "Issue of a taken id", res, fsm.ErrExists)
	}
	if err := <-done; err != nil {
		t.Fatalf("Persist: unexpected error %v", err)
	}
	if !bytes.Equal(sink.Bytes(), want) {
		t.Fatalf("persisted snapshot (%d bytes) differs from the state at Snapshot time (%d bytes)", sink.Len(), len(want))
	}
	if !bytes.Equal(recordFrames(t, h.s), frames) {
		t.Fatalf("refused Issues changed the stored records")
	}
	for i := range 50 {
		if r := h.s.ByHash(hashOf(fmt.Sprint("other-", i))); r != nil {
			t.Fatalf("a refused Issue is found by its digest: %+v", r)
		}
	}
}

func TestConsumeMismatchDoesNotUse(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    *fsm.Consume
		want error
	}{
		{"wrong kind", &fsm.Consume{Kind: "access"}, fsm.ErrKindMismatch},
		{"wrong client", &fsm.Consume{ClientID: "app2"}, fsm.ErrClientMismatch},
		{"right kind, wrong client", &fsm.Consume{Kind: "oauth2_code", ClientID: "app2"}, fsm.ErrClientMismatch},
		{"wrong kind and client", &fsm.Consume{Kind: "access", ClientID: "app2"}, fsm.ErrKindMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.issue(t2031, with(newIssue("code", "oauth2_code", time.Hour, 2), func(r *fsm.Record) { r.ClientID = "app1" }))
			prior := h.s.ByID("code")
			tt.c.Hash = secretHash("code")
			res := h.do(t2031.Add(time.Minute), tt.c)
			wantErr(t, "Consume "+tt.name, res, tt.want)
			if res.Record != nil {
				t.Fatalf("%v carried record %+v, want nil", tt.want, res.Record)
			}
			if got := h.s.ByID("code"); !reflect.DeepEqual(got, prior) || got.UsesLeft != 2 || got.LastUsedAt != 0 {
				t.Fatalf("after a refused Consume the record is %+v, want it unused %+v", got, prior)
			}
			// The same token with matching fields is usable: the refusal was the mismatch.
			res = h.ok(t2031.Add(2*time.Minute), &fsm.Consume{Hash: secretHash("code"), Kind: "oauth2_code", ClientID: "app1"})
			if res.Record.UsesLeft != 1 {
				t.Fatalf("matching Consume: UsesLeft %d, want 1", res.Record.UsesLeft)
			}
		})
	}
	// A token issued to no client is not any client's.
	h := newHarness(t)
	h.issue(t2031, newIssue("public", "access", time.Hour, 0))
	wantErr(t, "Consume naming a client of a client-less token", h.do(t2031, &fsm.Consume{Hash: secretHash("public"), ClientID: "app1"}), fsm.ErrClientMismatch)
}

// Entries that do not decode are answered, the same on every replica, and
// change nothing; the store goes on applying.
func TestBadEntriesAreAnswered(t *testing.T) {
	enc := func(c fsm.Command) []byte { return encode(t, c) }
	batchOf := func(entries ...[]byte) []byte { return enc(&fsm.Batch{Now: ns(t2031), Entries: entries}) }
	issue := enc(newIssue("tok", "access", time.Hour, 0))
	consume := enc(&fsm.Consume{Hash: secretHash("tok")})
	// The probe of a forwarded write of one unknown-looking byte: 0x63 is
	// no type, so it halts (TestUnknownTypeHalts); as the body of a known
	// type it is garbage.
	for _, tt := range []struct {
		name   string
		entry  []byte
		batch  []error // per-entry answers; nil: a top-level answer
		reason string
	}{
		{"empty entry", []byte{}, nil, fsm.RejectUndecodable},
		{"nil entry", nil, nil, fsm.RejectUndecodable},
		{"issue with a garbage body", []byte{byte(fsm.TypeIssue), 0xc1}, nil, fsm.RejectUndecodable},
		{"issue with a string body", []byte{byte(fsm.TypeIssue), 0xa3, 'a', 'b', 'c'}, nil, fsm.RejectUndecodable},
		{"issue with one byte of body", []byte{byte(fsm.TypeIssue), 0x63}, nil, fsm.RejectUndecodable},
		{"consume without a body", []byte{byte(fsm.TypeConsume)}, nil, fsm.RejectUndecodable},
		{"consume with a truncated body", consume[:len(consume)-1], nil, fsm.RejectUndecodable},
		{"batch with a garbage body", []byte{byte(fsm.TypeBatch), 0xff}, nil, fsm.RejectUndecodable},
		{"batch with a garbage entry", batchOf(issue, []byte{byte(fsm.TypeConsume), 0xc1}), []error{nil, fsm.ErrBadEntry}, fsm.RejectUndecodable},
		{"batch with an empty entry", batchOf(issue, []byte{}), []error{nil, fsm.ErrBadEntry}, fsm.RejectUndecodable},
		{"nested batch", batchOf(issue, batchOf(consume)), []error{nil, fsm.ErrBadEntry}, fsm.RejectNestedBatch},
		{"nested empty batch", batchOf(batchOf()), []error{fsm.ErrBadEntry}, fsm.RejectNestedBatch},
		{"batch with more request ids than entries", enc(&fsm.Batch{Now: ns(t2031), Entries: [][]byte{issue}, Reqs: []string{"x", "y"}}),
			[]error{fsm.ErrBadEntry}, fsm.RejectBadBatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.issue(t2031, newIssue("before", "access", time.Hour, 0))
			h.index++
			res := h.s.Apply(h.index, tt.entry)
			if tt.batch == nil {
				wantErr(t, "Apply("+tt.name+")", res, fsm.ErrBadEntry)
			} else {
				if len(res.Batch) != len(tt.batch) {
					t.Fatalf("Apply(%s): %d batch results, want %d", tt.name, len(res.Batch), len(tt.batch))
				}
				for i, want := range tt.batch {
					wantErr(t, fmt.Sprintf("batch entry %d", i), res.Batch[i], want)
				}
			}
			if got := h.s.AppliedIndex(); got != h.index {
				t.Fatalf("AppliedIndex() = %d after a bad entry at %d, want %d", got, h.index, h.index)
			}
			if got := h.s.Rejected(tt.reason); got != 1 {
				t.Fatalf("Rejected(%q) = %d, want 1", tt.reason, got)
			}
			if _, halted := h.s.Halted(); halted {
				t.Fatal("a bad entry halted the store")
			}
			// The store goes on: the token issued before is intact, and
			// the next entry applies.
			if r := h.s.ByID("before"); r == nil || r.Status(ns(t2031)) != fsm.StatusActive {
				t.Fatalf("the token issued before the bad entry: %+v", r)
			}
			h.issue(t2031.Add(time.Second), newIssue("after", "access", time.Hour, 0))
		})
	}
}

// An entry of a type this build does not know, without the ignore flag,
// may be a newer node's command: the store stops applying there, keeps
// answering, refuses snapshots, and reports where it stopped.
func TestUnknownTypeHalts(t *testing.T) {
	for _, tt := range []struct {
		name  string
		entry func(t *testing.T) []byte
	}{
		{"the one-byte probe 0x63", func(*testing.T) []byte { return []byte{0x63} }},
		{"unknown type 0", func(*testing.T) []byte { return []byte{0x00, 0x80} }},
		{"unknown type in a batch", func(t *testing.T) []byte {
			return encode(t, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{
				encode(t, newIssue("not-applied", "access", time.Hour, 0)), {0x7f, 0x80}}})
		}},
		// An op a later release lets a client batch hold: skipping or
		// refusing it would part this replica from those that apply it.
		{"unknown op in a client batch", func(t *testing.T) []byte {
			cb := &fsm.ClientBatch{Ops: [][]byte{encode(t, newIssue("x", "access", time.Hour, 0)), {0x7f, 0x80}}}
			return encode(t, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{
				encode(t, newIssue("not-applied", "access", time.Hour, 0)), encode(t, cb)}})
		}},
		{"unknown ignorable op in a client batch", func(t *testing.T) []byte {
			cb := &fsm.ClientBatch{Ops: [][]byte{{byte(fsm.IgnoreUnknown | 0x3f), 0x80}}}
			return encode(t, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{
				encode(t, newIssue("not-applied", "access", time.Hour, 0)), encode(t, cb)}})
		}},
		{"unknown op in a client batch of its own", func(t *testing.T) []byte {
			return encode(t, &fsm.ClientBatch{Ops: [][]byte{{0x7f, 0x80}}})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.issue(t2031, newIssue("before", "access", time.Hour, 0))
			var halts []fsm.Halt
			h.s.OnHalt(func(x fsm.Halt) { halts = append(halts, x) })
			applied := h.s.AppliedIndex()
			h.index++
			wantErr(t, "Apply(unknown type)", h.s.Apply(h.index, tt.entry(t)), fsm.ErrHalted)
			halt, halted := h.s.Halted()
			if !halted || halt.Index != h.index {
				t.Fatalf("Halted() = %+v, %v; want halted at %d", halt, halted, h.index)
			}
			if h.s.AppliedIndex() != applied || h.s.ByID("not-applied") != nil {
				t.Fatal("the halting entry was partly applied")
			}
			// Later entries are not applied, and the halt is reported once.
			h.index++
			wantErr(t, "Apply after the halt", h.s.Apply(h.index, batchEntry(t, t2031, newIssue("later", "access", time.Hour, 0))), fsm.ErrHalted)
			if h.s.ByID("later") != nil || len(halts) != 1 || h.s.Rejected(fsm.RejectUnknownType) != 1 {
				t.Fatalf("after the halt: later applied %v, halts reported %d, counted %d; want not applied, 1, 1",
					h.s.ByID("later") != nil, len(halts), h.s.Rejected(fsm.RejectUnknownType))
			}
			if err := h.s.WriteSnapshot(io.Discard); !errors.Is(err, fsm.ErrHalted) {
				t.Fatalf("snapshot of a halted store: %v, want ErrHalted", err)
			}
			if h.s.ByID("before") == nil {
				t.Fatal("a halted store lost what it had applied")
			}
		})
	}
}

// What cannot be answered the same on every replica still panics: an index
// that does not follow the last one applied means the log was rewritten
// under the state machine. Content never does (TestBadEntriesAreAnswered).
func TestIndexRegressionPanics(t *testing.T) {
	h := newHarness(t)
	h.issue(t2031, newIssue("tok", "access", time.Hour, 0))
	msg := mustPanic(t, "Apply at an index already applied", func() {
		h.s.Apply(h.index, batchEntry(t, t2031, newIssue("again", "access", time.Hour, 0)))
	})
	if !strings.Contains(msg, "rewritten") {
		t.Fatalf("panic %q does not say the log was rewritten", msg)
	}
}

func TestIgnorableUnknownIsSkipped(t *testing.T) {
	issueBody := encode(t, newIssue("skipped", "access", 0, 0))[1:]
	for _, tt := range []struct {
		name  string
		entry []byte
	}{
		{"flag alone", []byte{byte(fsm.IgnoreUnknown)}},
		{"flagged unknown with a garbage body", []byte{byte(fsm.IgnoreUnknown) | 0x55, 0xc1, 0xc1}},
		{"0xff", []byte{0xff}},
		// The flag is part of the type number: 0x80|Issue is not Issue.
		{"flagged known number", append([]byte{byte(fsm.IgnoreUnknown | fsm.TypeIssue)}, issueBody...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.issue(t2031, newIssue("tok", "access", time.Hour, 0))
			before := recordFrames(t, h.s)

			h.index++
			if res := h.s.Apply(h.index, tt.entry); !reflect.DeepEqual(res, fsm.Result{}) {
				t.Fatalf("Apply of a skippable entry = %+v, want an empty result", res)
			}
			if got := h.s.AppliedIndex(); got != h.index {
				t.Fatalf("AppliedIndex() = %d after skipping index %d, want %d", got, h.index, h.index)
			}
			if !bytes.Equal(recordFrames(t, h.s), before) || h.s.ByID("skipped") != nil {
				t.Fatalf("a skipped entry changed the state")
			}

			b := &fsm.Batch{Now: ns(t2031), Entries: [][]byte{
				encode(t, newIssue("first", "access", 0, 0)), tt.entry, encode(t, newIssue("last", "access", 0, 0)),
			}}
			res := h.applyRaw(encode(t, b), 3)
			if !reflect.DeepEqual(res[1], fsm.Result{}) {
				t.Fatalf("batch result of the skipped entry = %+v, want empty", res[1])
			}
			if res[0].Err != nil || res[2].Err != nil || h.s.ByID("first") == nil || h.s.ByID("last") == nil {
				t.Fatalf("entries around a skipped one: %+v, %+v; want both issued", res[0], res[2])
			}
			if h.s.ByID("skipped") != nil {
				t.Fatalf("a skipped entry inside a batch was applied")
			}
		})
	}
}

func TestWaitApplied(t *testing.T) {
	// waitCtx bounds a wait that must succeed, so a bug fails instead of hanging.
	waitCtx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("already applied", func(t *testing.T) {
		h := newHarness(t)
		h.issue(t2031, newIssue("a", "access", 0, 0))
		for _, idx := range []uint64{0, 1} {
			if err := h.s.WaitApplied(waitCtx(t), idx); err != nil {
				t.Fatalf("WaitApplied(%d) at index 1 = %v, want nil", idx, err)
			}
		}
	})

	t.Run("returns once applied", func(t *testing.T) {
		h := newHarness(t)
		done := make(chan error, 1)
		go func() { done <- h.s.WaitApplied(waitCtx(t), 3) }()
		h.issue(t2031, newIssue("a", "access", 0, 0))
		h.issue(t2031, newIssue("b", "access", 0, 0))
		select {
		case err := <-done:
			t.Fatalf("WaitApplied(3) returned %v at index 2, want it to wait", err)
		default:
		}
		h.issue(t2031, newIssue("c", "access", 0, 0))
		if err := <-done; err != nil {
			t.Fatalf("WaitApplied(3) after index 3 = %v, want nil", err)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		h := newHarness(t)
		h.issue(t2031, newIssue("a", "access", 0, 0))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := h.s.WaitApplied(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitApplied(2) at index 1 = %v, want %v", err, context.DeadlineExceeded)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := fsm.New().WaitApplied(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitApplied(1) with a cancelled context = %v, want %v", err, context.Canceled)
		}
	})

	t.Run("restore and configuration entries advance it", func(t *testing.T) {
		src := newHarness(t)
		for src.index < 5 {
			src.issue(t2031, newIssue("r"+string(rune('0'+src.index)), "access", 0, 0))
		}
		s := fsm.New()
		done := make(chan error, 1)
		go func() { done <- s.WaitApplied(waitCtx(t), 5) }()
		if err := s.Restore(bytes.NewReader(src.snapshot())); err != nil {
			t.Fatalf("Restore: unexpected error %v", err)
		}
		if err := <-done; err != nil {
			t.Fatalf("WaitApplied(5) after restoring index 5 = %v, want nil", err)
		}
		go func() { done <- s.WaitApplied(waitCtx(t), 6) }()
		cs, ok := s.RaftFSM().(raft.ConfigurationStore)
		if !ok {
			t.Fatalf("RaftFSM() does not implement raft.ConfigurationStore")
		}
		cs.StoreConfiguration(6, raft.Configuration{})
		if err := <-done; err != nil {
			t.Fatalf("WaitApplied(6) after a configuration entry at 6 = %v, want nil", err)
		}
	})
}

// TestIssueEmptyIDTwice: the empty id, once taken, is taken like any other.
// A second record under it must not replace the first in the id index while
// the first stays in the hash index and the counts.
func TestIssueEmptyIDTwice(t *testing.T) {
	h := newHarness(t)
	first := h.do(t2031, with(newIssue("", "access", time.Hour, 0), func(r *fsm.Record) { r.Hash = hashOf("one") }))
	second := h.do(t2031, with(newIssue("", "access", time.Hour, 0), func(r *fsm.Record) { r.Hash = hashOf("two") }))
	if first.Err == nil && second.Err == nil {
		t.Errorf("two Issues with the empty id both succeeded; want the second to fail with %v (or the empty id refused)", fsm.ErrExists)
	}
	checkConsistent(t, h.s, []string{""}, ns(t2031))
}
