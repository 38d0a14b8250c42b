package fsm_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// splitSnapshot splits a snapshot stream into its header and raw frames.
func splitSnapshot(t testing.TB, snap []byte) (head []byte, frames [][]byte) {
	t.Helper()
	const headLen = len("TKSNAP") + 1
	if len(snap) < headLen {
		t.Fatalf("snapshot of %d bytes, want at least a %d-byte header", len(snap), headLen)
	}
	head, rest := snap[:headLen], snap[headLen:]
	for len(rest) > 0 {
		n, w := binary.Uvarint(rest[1:])
		if w <= 0 || uint64(len(rest)) < 1+uint64(w)+n {
			t.Fatalf("snapshot frame at byte %d is malformed", len(snap)-len(rest))
		}
		end := 1 + w + int(n)
		frames = append(frames, rest[:end])
		rest = rest[end:]
	}
	return head, frames
}

// recordFrames returns the record frames of s's snapshot: the state without
// the meta frame, which holds the applied index and changes with every entry.
func recordFrames(t testing.TB, s *fsm.Machine) []byte {
	t.Helper()
	_, frames := splitSnapshot(t, snapshotBytes(t, s))
	if len(frames) == 0 || frames[0][0] != 1 {
		t.Fatalf("snapshot does not start with a meta frame")
	}
	return bytes.Join(frames[1:], nil)
}

// frame encodes one snapshot frame by hand.
func frame(typ byte, body []byte) []byte {
	out := append([]byte{typ}, binary.AppendUvarint(nil, uint64(len(body)))...)
	return append(out, body...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// populate issues records in every state at `at` and changes some of them
// 5 minutes later, so the store's time ends at at+5m. It returns their ids.
func populate(h *harness, at time.Time) []string {
	h.t.Helper()
	full := func(subject string) func(r *fsm.Record) {
		return func(r *fsm.Record) {
			r.Subject, r.Family, r.ClientID, r.Scopes = subject, "fam-1", "app1", []string{"read", "write"}
			r.Data, r.RLC, r.IP, r.UserAgent, r.Title, r.Generator = []byte(`{"n":1}`), "gold", "192.0.2.1", "ua/1", "laptop", "gen"
		}
	}
	subject := func(s string) func(r *fsm.Record) { return func(r *fsm.Record) { r.Subject = s } }
	h.issue(at, with(newIssue("a-active", "access", time.Hour, 0), full("user:1")))
	h.issue(at, with(newIssue("b-consumed", "oauth2_code", time.Hour, 1), full("user:1")))
	h.issue(at, with(newIssue("c-revoked", "oauth2_refresh", 2*time.Hour, 0), full("user:2")))
	h.issue(at, with(newIssue("d-multi", "access", time.Hour, 3), full("user:1")))
	h.issue(at, with(newIssue("e-forever", "developer", 0, 0), subject("user:2")))
	h.issue(at, with(newIssue("f-forever-revoked", "developer", 0, 0), subject("user:2")))
	h.issue(at, newIssue("g-bare", "remember", 30*time.Minute, 0))
	h.issue(at, with(newIssue("h-expired", "access", time.Minute, 0), subject("user:1")))
	later := at.Add(5 * time.Minute)
	h.ok(later, &fsm.Consume{Hash: secretHash("b-consumed")})
	h.ok(later, &fsm.Revoke{ID: "c-revoked", Reason: "reuse"})
	h.ok(later, &fsm.Consume{Hash: secretHash("d-multi")})
	h.ok(later, &fsm.Revoke{Hash: secretHash("f-forever-revoked"), Reason: "admin"})
	return []string{"a-active", "b-consumed", "c-revoked", "d-multi", "e-forever", "f-forever-revoked", "g-bare", "h-expired"}
}

// populatedCounts is what populate leaves.
var populatedCounts = map[fsm.CountKey]int64{
	{Kind: "access", State: fsm.Active}:          3,
	{Kind: "oauth2_code", State: fsm.Consumed}:   1,
	{Kind: "oauth2_refresh", State: fsm.Revoked}: 1,
	{Kind: "developer", State: fsm.Active}:       1,
	{Kind: "developer", State: fsm.Revoked}:      1,
	{Kind: "remember", State: fsm.Active}:        1,
}

// pages lists subject (of kind) page by page and returns each page's ids
// followed by its cursor.
func pages(t testing.TB, s *fsm.Machine, subject, kind string, limit int, now int64) [][]string {
	t.Helper()
	var out [][]string
	for after := ""; ; {
		recs, next := s.ListBySubject(subject, kind, after, limit, now)
		out = append(out, append(ids(recs), "next="+next))
		if next == "" || len(out) > 20 {
			return out
		}
		after = next
	}
}

// checkSameState compares everything the read API shows of two stores.
func checkSameState(t testing.TB, got, want *fsm.Machine, allIDs []string, now int64) {
	t.Helper()
	if g, w := snapshotBytes(t, got), snapshotBytes(t, want); !bytes.Equal(g, w) {
		t.Fatalf("snapshot bytes differ: got %d bytes %q, want %d bytes %q", len(g), g, len(w), w)
	}
	countsEqual(t, "restored store", got.Counts(), want.Counts())
	if g, w := got.AppliedIndex(), want.AppliedIndex(); g != w {
		t.Fatalf("AppliedIndex() = %d, want %d", g, w)
	}
	for _, id := range allIDs {
		g, w := got.ByID(id), want.ByID(id)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("ByID(%q) = %+v, want %+v", id, g, w)
		}
		if w != nil && !reflect.DeepEqual(got.ByHash(w.Hash), g) {
			t.Fatalf("ByHash of %q = %+v, want the record ByID returns %+v", id, got.ByHash(w.Hash), g)
		}
	}
	for _, q := range []struct{ subject, kind string }{{"user:1", ""}, {"user:1", "access"}, {"user:2", ""}, {"user:3", ""}} {
		for _, limit := range []int{1, 2, 10} {
			g, w := pages(t, got, q.subject, q.kind, limit, now), pages(t, want, q.subject, q.kind, limit, now)
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("ListBySubject(%q, %q) pages of %d = %v, want %v", q.subject, q.kind, limit, g, w)
			}
		}
	}
	for _, before := range []int64{now, 1<<63 - 1} {
		if g, w := dueOrder(t, got, before, 100), dueOrder(t, want, before, 100); !equalStrings(g, w) {
			t.Fatalf("DueForGC(%d) = %v, want %v", before, g, w)
		}
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	a := newHarness(t)
	all := populate(a, t0)
	now := ns(t0.Add(5 * time.Minute))

	// The fixture must be what the test claims, or the comparison proves little.
	countsEqual(t, "populated store", a.s.Counts(), populatedCounts)
	if r := a.s.ByID("d-multi"); r.UsesLeft != 2 || r.Data == nil {
		t.Fatalf("d-multi after one use = %+v, want UsesLeft 2 and its data", r)
	}
	if got, want := pages(t, a.s, "user:1", "", 1, now), [][]string{{"a-active", "next=a-active"}, {"d-multi", "next="}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ListBySubject(user:1) pages of 1 = %v, want %v", got, want)
	}
	wantGC := []string{"h-expired", "g-bare", "a-active", "b-consumed", "d-multi", "c-revoked", "f-forever-revoked"}
	gcAt := map[string]int64{}
	for i, id := range wantGC {
		gcAt[id] = a.s.ByID(id).GCAt()
		if i > 0 && gcAt[id] < gcAt[wantGC[i-1]] {
			t.Fatalf("fixture: %q is collected before %q", id, wantGC[i-1])
		}
	}
	if got, want := dueOrder(t, a.s, 1<<63-1, 100), gcOrder(wantGC, gcAt); !equalStrings(got, want) {
		t.Fatalf("DueForGC(max) = %v, want %v", got, want)
	}

	t.Run("into a new store", func(t *testing.T) {
		b := restored(t, a.snapshot())
		checkSameState(t, b, a.s, all, now)
		// The restored store keeps the leader time: an older batch is
		// applied at the snapshot's time, as it would have been on a.
		h := &harness{t: t, s: b, index: a.index}
		if r := h.issue(t0, newIssue("late", "access", time.Hour, 0)); r.CreatedAt != now {
			t.Fatalf("CreatedAt of an issue at %d after restore = %d, want the snapshot's time %d", ns(t0), r.CreatedAt, now)
		}
	})

	t.Run("replaces all prior state", func(t *testing.T) {
		x := newHarness(t)
		x.issue(t2031, with(newIssue("x1", "access", time.Hour, 0), func(r *fsm.Record) { r.Subject = "user:1"; r.Family = "fam-1" }))
		x.issue(t2031, with(newIssue("a-active", "developer", 0, 0), func(r *fsm.Record) { r.Hash = hashOf("other") }))
		for x.index < 50 {
			x.issue(t2031, newIssue("x-filler-"+string(rune('A'+x.index)), "remember", 0, 0))
		}
		if err := x.s.Restore(bytes.NewReader(a.snapshot())); err != nil {
			t.Fatalf("Restore: unexpected error %v", err)
		}
		checkSameState(t, x.s, a.s, append(all, "x1"), now)
		if r := x.s.ByID("x1"); r != nil {
			t.Fatalf("ByID(x1) after restore = %+v, want nil: the prior record must be gone", r)
		}
		if r := x.s.ByHash(hashOf("other")); r != nil {
			t.Fatalf("ByHash of the prior a-active's hash = %+v, want nil", r)
		}
		if r := x.s.ByHash(secretHash("x1")); r != nil {
			t.Fatalf("ByHash(x1's hash) after restore = %+v, want nil", r)
		}
		// The prior store's time (2031) is gone too.
		h := &harness{t: t, s: x.s, index: a.index}
		at := t0.Add(6 * time.Minute)
		if r := h.issue(at, newIssue("next", "access", 0, 0)); r.CreatedAt != ns(at) {
			t.Fatalf("CreatedAt after restore = %d, want the batch time %d (the prior store's later time must not survive)", r.CreatedAt, ns(at))
		}
	})

	t.Run("empty snapshot empties the store", func(t *testing.T) {
		s := restored(t, a.snapshot())
		if err := s.Restore(bytes.NewReader([]byte("TKSNAP\x01"))); err != nil {
			t.Fatalf("Restore(header only): unexpected error %v", err)
		}
		countsEqual(t, "after an empty restore", s.Counts(), nil)
		for _, id := range all {
			if r := s.ByID(id); r != nil {
				t.Fatalf("ByID(%q) after an empty restore = %+v, want nil", id, r)
			}
		}
		if got := s.DueForGC(1<<63-1, 100); len(got) != 0 {
			t.Fatalf("DueForGC(max) after an empty restore = %v, want none", got)
		}
	})
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// TestSnapshotIsPointInTime persists a Raft snapshot while entries that
// change its records are applied, and requires the state as of the
// Snapshot call.
func TestSnapshotIsPointInTime(t *testing.T) {
	h := newHarness(t)
	populate(h, t0)
	want := h.snapshot()
	snap, err := h.s.RaftFSM().Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: unexpected error %v", err)
	}
	defer snap.Release()

	sink := &memSink{}
	done := make(chan error, 1)
	go func() { done <- snap.Persist(sink) }()
	later := t0.Add(2 * time.Hour)
	h.ok(later, &fsm.Revoke{ID: "e-forever", Reason: "r"})
	h.ok(later, &fsm.Expire{Before: ns(later), IDs: []string{"a-active", "g-bare", "h-expired"}})
	h.issue(later, newIssue("new", "access", 0, 0))
	if err := <-done; err != nil {
		t.Fatalf("Persist: unexpected error %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v, want closed and not cancelled", sink.closed, sink.cancelled)
	}
	if !bytes.Equal(sink.Bytes(), want) {
		t.Fatalf("persisted snapshot (%d bytes) differs from the state at Snapshot time (%d bytes)", sink.Len(), len(want))
	}
	s := fsm.New()
	if err := s.RaftFSM().Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatalf("raft Restore: unexpected error %v", err)
	}
	if got := snapshotBytes(t, s); !bytes.Equal(got, want) {
		t.Fatalf("snapshot after raft Restore (%d bytes) differs from the persisted one (%d bytes)", len(got), len(want))
	}
}

func TestRestoreRejectsBadStreams(t *testing.T) {
	a := newHarness(t)
	populate(a, t0)
	head, frames := splitSnapshot(t, a.snapshot())
	meta, rec := frames[0], frames[1] // rec is a-active, the first id

	// Frames of records that clash with a-active on only one key.
	b := newHarness(t)
	b.issue(t0, with(newIssue("a-active", "access", 0, 0), func(r *fsm.Record) { r.Hash = hashOf("other") }))
	b.issue(t0, with(newIssue("z-same-hash", "access", 0, 0), func(r *fsm.Record) { r.Hash = secretHash("a-active") }))
	_, bFrames := splitSnapshot(t, b.snapshot())
	sameID, sameHash := bFrames[1], bFrames[2]

	valid := cat(head, meta, rec)
	for _, tt := range []struct {
		name   string
		stream []byte
		want   string
	}{
		{"empty stream", nil, "read header"},
		{"truncated header", []byte("TKSN"), "read header"},
		{"bad magic", cat([]byte("TKSNAQ\x01"), meta, rec), "not a tokenstore snapshot"},
		{"unknown version", cat([]byte("TKSNAP\x03"), meta, rec), "snapshot version 3"},
		{"version 0", cat([]byte("TKSNAP\x00"), meta, rec), "snapshot version 0"},
		{"truncated frame body", valid[:len(valid)-1], "truncated frame"},
		{"frame without length", cat(valid, []byte{2}), "bad frame length"},
		{"frame over the size limit", cat(valid, []byte{2}, binary.AppendUvarint(nil, 1<<20+1)), "bad frame length"},
		{"unknown frame type", cat(valid, frame(9, []byte{0xc0})), "unknown frame type 9"},
		{"garbage record body", cat(valid, frame(2, []byte{0xc1})), "restore:"},
		{"duplicate record", cat(valid, rec), "duplicate record a-active"},
		{"duplicate id, other hash", cat(valid, sameID), "duplicate record a-active"},
		{"duplicate hash, other id", cat(valid, sameHash), "duplicate record z-same-hash"},
		// A meta frame of {"a": 0, "lv": 99, "n": 0}: the refusal must leave
		// the store readable (its lock free).
		{"state of a newer state machine", cat(head, frame(1, []byte("\x83\xa1a\x00\xa2lv\x63\xa1n\x00")), rec), "needs version 99"},
		{"duplicate request id", cat(valid, frame(3, []byte("\x82\xa1a\x01\xa1i\xa1q")), frame(3, []byte("\x82\xa1a\x02\xa1i\xa1q"))), "duplicate request id q"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := restored(t, a.snapshot())
			before, applied := snapshotBytes(t, s), s.AppliedIndex()
			err := s.Restore(bytes.NewReader(tt.stream))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore = %v, want an error containing %q", err, tt.want)
			}
			// A failed restore must leave the store as it was.
			if got := snapshotBytes(t, s); !bytes.Equal(got, before) || s.AppliedIndex() != applied {
				t.Fatalf("failed Restore changed the store: %d snapshot bytes at index %d, want %d bytes at index %d",
					len(got), s.AppliedIndex(), len(before), applied)
			}
		})
	}
	// The hand-made streams are only meaningful if their valid prefix restores.
	if s := restored(t, valid); s.ByID("a-active") == nil {
		t.Fatalf("restoring header, meta and one record lost the record")
	}
}
