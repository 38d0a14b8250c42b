package api_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// The leader's checks of a forwarded command recompute what the policy
// decides instead of taking it from the command, keep only the fields a
// caller sets, and are idempotent.
func TestCommandCheckerRecomputesPolicy(t *testing.T) {
	check := api.CommandChecker(token.DefaultPolicy(), time.Minute)
	hash := strings.Repeat("h", 32)
	forged := &fsm.Issue{TTL: 0, Record: fsm.Record{ID: "c1", Hash: hash, Kind: "oauth2_code", Subject: "user:1",
		MaxUses: 0, DetectReuse: false, ExpiresAt: 1, CreatedAt: 2, UsesLeft: 9, State: fsm.Revoked, HoldUntil: 3,
		Rotated: &fsm.Rotation{Successor: "x"}, CreateIndex: 4}}
	if err := check(forged); err != nil {
		t.Fatal(err)
	}
	want := &fsm.Issue{TTL: int64(4 * time.Hour), Record: fsm.Record{ID: "c1", Hash: hash, Kind: "oauth2_code",
		Subject: "user:1", MaxUses: 1, DetectReuse: true}}
	if !reflect.DeepEqual(forged, want) {
		t.Fatalf("checked issue:\n got %+v\nwant %+v", forged, want)
	}
	again := *forged
	if err := check(&again); err != nil || !reflect.DeepEqual(&again, want) {
		t.Fatalf("checking again: %v, %+v", err, again)
	}

	rot := &fsm.Rotate{Hash: hash, Kind: "oauth2_refresh", Next: fsm.Record{ID: "n", Hash: hash, Subject: "user:evil", Data: []byte(`{}`)},
		Access: &fsm.Issue{Record: fsm.Record{ID: "a", Hash: strings.Repeat("a", 32), Kind: "access", Data: []byte(`{"x":1}`), DetectReuse: true, MaxUses: 0}}}
	if err := check(rot); err != nil {
		t.Fatal(err)
	}
	long := &fsm.Rotate{Hash: hash, Kind: "oauth2_refresh", Next: fsm.Record{ID: "n", Hash: hash}, Grace: int64(time.Hour), Sealed: []byte{1}}
	if err := check(long); err != nil || long.Grace != int64(time.Minute) {
		t.Fatalf("a grace past this node's: %v, grace %s; want it bounded to 1m", err, time.Duration(long.Grace))
	}
	if off := api.CommandChecker(token.DefaultPolicy(), 0); off(long) != nil || long.Grace != 0 || long.Sealed != nil {
		t.Fatalf("a grace where this node has none: grace %d, sealed %v; want neither", long.Grace, long.Sealed)
	}
	if rot.Next.Subject != "" || rot.Next.Data != nil || rot.Access.Record.Data != nil || rot.Access.Record.DetectReuse ||
		rot.TTL != int64(365*24*time.Hour) || rot.Access.TTL != int64(time.Hour) {
		t.Fatalf("checked rotation kept fields the API never sets, or not the policy's TTLs: %+v, access %+v", rot, rot.Access)
	}

	touch := &fsm.Touch{Uses: []fsm.Use{{Hash: hash, At: 1, UserAgent: "ok"}, {Hash: hash, At: 2, UserAgent: "bad\x7f"}, {Hash: "short", At: 3}}}
	if err := check(touch); err != nil || len(touch.Uses) != 1 || touch.Uses[0].At != 1 {
		t.Fatalf("last uses with bad ones: %v, kept %+v; want only the good one kept", err, touch.Uses)
	}

	for _, tt := range []struct {
		name string
		c    fsm.Command
		code string
	}{
		{"a never-expiring code", &fsm.Issue{TTL: -1, Record: fsm.Record{ID: "x", Hash: hash, Kind: "oauth2_code"}}, "invalid_field"},
		{"a TTL past the kind's max", &fsm.Issue{TTL: int64(48 * time.Hour), Record: fsm.Record{ID: "x", Hash: hash, Kind: "access"}}, "ttl_too_long"},
		{"a single-use kind used twice", &fsm.Issue{Record: fsm.Record{ID: "x", Hash: hash, Kind: "oauth2_code", MaxUses: 2}}, "invalid_max_uses"},
		{"an unknown kind", &fsm.Issue{Record: fsm.Record{ID: "x", Hash: hash, Kind: "root"}}, "unknown_kind"},
		{"control characters", &fsm.Issue{Record: fsm.Record{ID: "x", Hash: hash, Kind: "developer", Subject: "user:admin\x00\x1b[31m"}}, "invalid_field"},
		{"a generator with control characters", &fsm.Issue{Record: fsm.Record{ID: "x", Hash: hash, Kind: "access", Generator: "\x1b"}}, "invalid_field"},
		{"data that is not JSON", &fsm.Issue{Record: fsm.Record{ID: "x", Hash: hash, Kind: "access", Data: []byte("{")}}, "invalid_field"},
		{"a short digest", &fsm.Consume{Hash: "abc"}, "invalid_field"},
		{"no id", &fsm.Issue{Record: fsm.Record{Hash: hash, Kind: "access"}}, "missing_field"},
		{"an access token rotated", &fsm.Rotate{Hash: hash, Kind: "access", Next: fsm.Record{ID: "n", Hash: hash}}, "invalid_field"},
		{"a grace without the successor sealed", &fsm.Rotate{Hash: hash, Kind: "oauth2_refresh", Next: fsm.Record{ID: "n", Hash: hash}, Grace: int64(time.Minute)}, "invalid_field"},
		{"a revocation naming nothing", &fsm.Revoke{}, "invalid_field"},
		{"an access token asking for no scope", &fsm.Rotate{Hash: hash, Kind: "oauth2_refresh", Next: fsm.Record{ID: "n", Hash: hash},
			Access: &fsm.Issue{Record: fsm.Record{ID: "a", Hash: hash, Kind: "access", Scopes: []string{}}}}, "invalid_scope"},
		{"a batch", &fsm.Batch{}, "invalid_field"},
	} {
		err := check(tt.c)
		var e *api.Error
		if !errors.As(err, &e) || e.Code != tt.code {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
}
