package fsm_test

import (
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

func TestTouchRecordsLastUse(t *testing.T) {
	h := newHarness(t)
	h.issue(t0, newIssue("a", "access", time.Hour, 0))
	h.issue(t0, newIssue("b", "access", time.Hour, 0))
	h.issue(t0, newIssue("gone", "access", time.Hour, 0))
	h.ok(t0, &fsm.Revoke{ID: "gone"})

	use := func(id string, at time.Time, ip, ua string) fsm.Use {
		return fsm.Use{Hash: secretHash(id), At: ns(at), IP: ip, UserAgent: ua}
	}
	now := t0.Add(time.Minute)
	res := h.ok(now, &fsm.Touch{Uses: []fsm.Use{
		use("a", t0.Add(30*time.Second), "198.51.100.7", "laptop"),
		use("b", t0.Add(time.Hour), "", ""), // a reader's clock ahead of the log
		use("gone", t0.Add(30*time.Second), "", ""),
		use("unknown", t0.Add(30*time.Second), "", ""),
	}})
	if res.Count != 2 {
		t.Fatalf("touch: want 2 records updated (not the revoked or unknown one), got %d", res.Count)
	}
	a, b := h.s.ByID("a"), h.s.ByID("b")
	if a.LastUsedAt != ns(t0.Add(30*time.Second)) || a.IP != "198.51.100.7" || a.UserAgent != "laptop" {
		t.Fatalf("a after touch: last used %d from %q %q, want %d from 198.51.100.7 laptop", a.LastUsedAt, a.IP, a.UserAgent, ns(t0.Add(30*time.Second)))
	}
	if b.LastUsedAt != ns(now) {
		t.Fatalf("b: a use dated after the log time must be capped at it: got %d, want %d", b.LastUsedAt, ns(now))
	}
	if g := h.s.ByID("gone"); g.LastUsedAt != 0 || g.State != fsm.Revoked {
		t.Fatalf("a revoked token's tombstone was touched: %+v", g)
	}
	// An older use (a slow node's buffer) never moves last_used back.
	if res := h.ok(now, &fsm.Touch{Uses: []fsm.Use{use("a", t0.Add(10*time.Second), "203.0.113.1", "")}}); res.Count != 0 {
		t.Fatalf("an older use: want nothing updated, got %d", res.Count)
	}
	if a := h.s.ByID("a"); a.LastUsedAt != ns(t0.Add(30*time.Second)) || a.IP != "198.51.100.7" {
		t.Fatalf("an older use changed the record: %+v", a)
	}
}
