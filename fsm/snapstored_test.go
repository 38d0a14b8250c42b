package fsm_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// fencedState is populate's state past the fence of this version, so that
// it snapshots in version 2 of the stream, with remembered requests of
// every shape: an issue and a consume whose records are the state's own,
// an issue whose record changed since, and a client batch.
func fencedState(t testing.TB) (*harness, [][]byte) {
	t.Helper()
	h := newHarness(t)
	h.ok(t0, &fsm.Fence{Version: fsm.Version})
	populate(h, t0)
	at := t0.Add(6 * time.Minute)
	later := func(id string) *fsm.Issue {
		return with(newIssue(id, "access", time.Hour, 0), func(r *fsm.Record) {
			r.Subject, r.ClientID, r.Title, r.UserAgent = "user:9", "app9", "phone", "ua/9"
		})
	}
	cb, err := fsm.NewClientBatch(later("q-batch-1"), later("q-batch-2"))
	if err != nil {
		t.Fatal(err)
	}
	entries := [][]byte{
		encode(t, later("q-issued")),
		encode(t, later("q-changed")),
		encode(t, &fsm.Consume{Hash: secretHash("a-active")}),
		encode(t, cb),
	}
	h.applyRaw(encode(t, &fsm.Batch{Now: ns(at), Entries: entries, Reqs: []string{"r1", "r2", "r3", "r4"}}), len(entries))
	h.ok(at.Add(time.Second), &fsm.Revoke{ID: "q-changed", Reason: "admin"})
	return h, entries
}

func frameTypes(t testing.TB, snap []byte) []byte {
	t.Helper()
	_, frames := splitSnapshot(t, snap)
	var types []byte
	for _, f := range frames {
		types = append(types, f[0])
	}
	return types
}

func writeV1(t testing.TB, s *fsm.Machine) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshotV1(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A state past the fence snapshots its records as stored, its requests'
// records by reference, and restores to the same state: the same version
// 1 stream, the same version 2 stream, and the same answers.
func TestStoredSnapshotRestoresTheSameState(t *testing.T) {
	h, entries := fencedState(t)
	snap := h.snapshot()
	if snap[6] != 2 {
		t.Fatalf("snapshot version %d past the fence, want 2", snap[6])
	}
	types := frameTypes(t, snap)
	if slices.Contains(types, 2) || !slices.Contains(types, 5) || !slices.Contains(types, 6) {
		t.Fatalf("frame types %v, want profile (5) and stored (6) frames and no record (2) frames", types)
	}
	v1 := writeV1(t, h.s)
	if v1[6] != 1 {
		t.Fatalf("WriteSnapshotV1 wrote version %d", v1[6])
	}
	if len(snap) >= len(v1) {
		t.Fatalf("version 2 stream of %d bytes, version 1 of %d", len(snap), len(v1))
	}
	// The remembered issue and consume name their records; the issue
	// whose record was revoked since carries its own, and the client
	// batch its results.
	if n := bytes.Count(snap, []byte("\xa2rn")); n != 2 {
		t.Fatalf("%d request frames name a record frame, want 2", n)
	}
	r := restored(t, snap)
	if got := writeV1(t, r); !bytes.Equal(got, v1) {
		t.Fatalf("version 1 stream of the restored state differs: %d bytes, want %d", len(got), len(v1))
	}
	if got := snapshotBytes(t, r); !bytes.Equal(got, snap) {
		t.Fatalf("version 2 stream of the restored state differs: %d bytes, want %d", len(got), len(snap))
	}
	checkSameState(t, r, h.s, []string{"a-active", "b-consumed", "q-issued", "q-changed", "q-batch-1", "q-batch-2"}, ns(t0.Add(7*time.Minute)))
	// A retry of each remembered request is answered as the first time,
	// by both.
	retry := func(s *fsm.Machine) []fsm.Result {
		hh := &harness{t: h.t, s: s, index: h.index}
		return hh.applyRaw(encode(t, &fsm.Batch{Now: ns(t0.Add(6*time.Minute + 10*time.Second)), Entries: entries,
			Reqs: []string{"r1", "r2", "r3", "r4"}}), len(entries))
	}
	want, got := retry(h.s), retry(r)
	for i := range want {
		if want[i].Err != nil || want[i].Record == nil && want[i].Ops == nil {
			t.Fatalf("retry %d answered %+v: not the remembered outcome", i, want[i])
		}
		if g, w := resultString(got[i]), resultString(want[i]); g != w {
			t.Fatalf("retry %d after restore = %s, want %s", i, g, w)
		}
	}
}

// A restored request holds the record it names: once the state lets the
// record go (revoked), the retry still answers it, and once the request
// is forgotten too, the record is freed once, and the state goes on.
func TestStoredSnapshotRequestsHoldTheirRecords(t *testing.T) {
	h, entries := fencedState(t)
	r := &harness{t: t, s: restored(t, h.snapshot()), index: h.index}
	at := t0.Add(6*time.Minute + 2*time.Second)
	r.ok(at, &fsm.Revoke{ID: "q-issued", Reason: "admin"})
	res := r.applyRaw(encode(t, &fsm.Batch{Now: ns(at), Entries: entries[:1], Reqs: []string{"r1"}}), 1)
	if res[0].Err != nil || res[0].Record == nil || res[0].Record.ID != "q-issued" || res[0].Record.State != fsm.Active {
		t.Fatalf("retry of r1 after the revoke = %+v, want the issued record as it was", res[0])
	}
	// Past the window: the requests are forgotten and their records freed.
	late := at.Add(fsm.RequestWindow + time.Minute)
	r.ok(late, newIssue("after-the-window", "access", time.Hour, 0))
	if _, halted := r.s.Halted(); halted {
		t.Fatal("the restored state halted once its requests were forgotten")
	}
	if got := restored(t, r.snapshot()); got.ByID("after-the-window") == nil || got.ByID("q-issued") == nil {
		t.Fatal("the state after the window does not snapshot and restore")
	}
}

// A record named by more remembered requests than its holders byte
// counts (127) is shared by as many and copied for the rest, on the node
// that applied them and on one restored from its snapshot; every retry
// answers the same on both, and the window lets them all go.
func TestStoredSnapshotRecordOfManyRequests(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.Fence{Version: fsm.Version})
	h.issue(t0, newIssue("once", "oauth2_code", time.Hour, 1))
	h.ok(t0, &fsm.Consume{Hash: secretHash("once")})
	const n = 200
	at := t0.Add(time.Second)
	consume := encode(t, &fsm.Consume{Hash: secretHash("once")})
	entries, reqs := make([][]byte, n), make([]string, n)
	for i := range n {
		entries[i], reqs[i] = consume, fmt.Sprint("again-", i)
	}
	first := h.applyRaw(encode(t, &fsm.Batch{Now: ns(at), Entries: entries, Reqs: reqs}), n)
	if first[n-1].Record == nil {
		t.Fatalf("a consume of a consumed token answered %+v, want its record", first[n-1])
	}
	snap := h.snapshot()
	// The writer shared it with 127 of them and copied it for the rest,
	// which carry their copies.
	if refs := bytes.Count(snap, []byte("\xa2rn")); refs != 127 {
		t.Fatalf("%d request frames name the record, want 127", refs)
	}
	// A stream may name it more often: a restore shares it as far as it
	// counts and copies it for the rest.
	head, frames := splitSnapshot(t, snap)
	var named []byte
	for _, f := range frames {
		if f[0] != 3 {
			named = append(named, f...)
		}
	}
	for i := range n {
		id := fmt.Sprint("named-", i)
		body := append(append([]byte("\x83\xa1a\x01\xa1i"), byte(0xa0|len(id))), id...)
		named = append(named, frame(3, append(body, "\xa2rn\x01"...))...)
	}
	m := restored(t, cat(head, named))
	mh := &harness{t: t, s: m, index: h.index}
	res := mh.applyRaw(encode(t, &fsm.Batch{Now: ns(at.Add(time.Second)), Entries: entries[:1], Reqs: []string{"named-199"}}), 1)
	if res[0].Record == nil || res[0].Record.ID != "once" {
		t.Fatalf("retry of a request that named the record = %+v", res[0])
	}
	mh.ok(at.Add(fsm.RequestWindow+time.Minute), newIssue("later", "access", time.Hour, 0))
	if _, halted := m.Halted(); halted {
		t.Fatal("the state halted once the requests naming the record were forgotten")
	}
	r := &harness{t: t, s: restored(t, snap), index: h.index}
	for _, s := range []*harness{h, r} {
		again := s.applyRaw(encode(t, &fsm.Batch{Now: ns(at.Add(time.Second)), Entries: entries, Reqs: reqs}), n)
		for i := range again {
			if g, w := resultString(again[i]), resultString(first[i]); g != w {
				t.Fatalf("retry %d = %s, want %s", i, g, w)
			}
		}
		s.ok(at.Add(fsm.RequestWindow+time.Minute), newIssue(fmt.Sprint("later-", s == r), "access", time.Hour, 0))
		if _, halted := s.s.Halted(); halted {
			t.Fatal("the state halted once the requests were forgotten")
		}
	}
}

// A version 2 stream carries the profiles its records name, not every
// profile the writer's table ever held.
func TestStoredSnapshotLeavesOutUnnamedProfiles(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.Fence{Version: fsm.Version})
	var ids []string
	for i := range 50 {
		id := fmt.Sprintf("ua-%02d", i)
		h.issue(t0, with(newIssue(id, "access", time.Minute, 0), func(r *fsm.Record) { r.UserAgent = "agent " + id }))
		ids = append(ids, id)
	}
	h.ok(t0.Add(time.Hour), &fsm.Expire{Before: ns(t0.Add(time.Hour)), IDs: ids[1:]})
	if got := h.s.ByID(ids[1]); got != nil {
		t.Fatalf("%s not collected: %+v", ids[1], got)
	}
	types := frameTypes(t, h.snapshot())
	if n := bytes.Count(types, []byte{5}); n != 1 {
		t.Fatalf("%d profile frames for one record, want 1 (frame types %v)", n, types)
	}
}

// Each version of the stream has its own record frames.
func TestRestoreRefusesFramesOfTheOtherVersion(t *testing.T) {
	h, _ := fencedState(t)
	head2, frames2 := splitSnapshot(t, h.snapshot())
	head1, frames1 := splitSnapshot(t, writeV1(t, h.s))
	for _, tt := range []struct {
		name   string
		stream []byte
	}{
		{"stored record frames in version 1", cat(head1, frames2[0], frames2[1], frames2[2])},
		{"record frames in version 2", cat(head2, frames1[0], frames1[1])},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := fsm.New().Restore(bytes.NewReader(tt.stream)); err == nil || !strings.Contains(err.Error(), "in a stream of version") {
				t.Fatalf("Restore = %v, want a refusal of the frame type", err)
			}
		})
	}
}

// resultString is what a test compares of two results.
func resultString(r fsm.Result) string {
	var b strings.Builder
	b.WriteString(errString(r.Err))
	if r.Record != nil {
		fmt.Fprintf(&b, " %s %d", r.Record.ID, r.Record.State)
	}
	for _, op := range r.Ops {
		b.WriteString(" [" + resultString(op) + "]")
	}
	return b.String()
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// Version 2 streams that restore must refuse, leaving the store as it was.
func TestRestoreRejectsBadStoredStreams(t *testing.T) {
	h, _ := fencedState(t)
	head, frames := splitSnapshot(t, h.snapshot())
	var meta, profile, stored []byte
	for _, f := range frames {
		switch {
		case f[0] == 1 && meta == nil:
			meta = f
		case f[0] == 5 && profile == nil:
			profile = f
		case f[0] == 6 && stored == nil:
			stored = f
		}
	}
	recBody := stored[lenPrefix(stored):]
	changed := func(at int, v byte) []byte { b := slices.Clone(recBody); b[at] = v; return frame(6, b) }
	valid := cat(head, meta, profile, stored)
	for _, tt := range []struct {
		name   string
		stream []byte
		want   string
	}{
		{"stored record before its profile", cat(head, meta, stored), "profile 0 of 0"},
		{"duplicate profile", cat(valid, profile), "profile frame 1"},
		{"garbage profile", cat(head, meta, frame(5, []byte{9})), "profile field 0"},
		{"short stored record", cat(head, meta, profile, frame(6, recBody[:20])), "stored record of 20 bytes"},
		{"stored record of another size", cat(head, meta, profile, frame(6, append(slices.Clone(recBody), 0))), "says"},
		{"stored record of an unknown state", cat(head, meta, profile, changed(4, 7)), "state 7"},
		{"stored record of unknown flags", cat(head, meta, profile, changed(5, 0x40)), "flags"},
		{"stored record with holders", cat(head, meta, profile, changed(7, 1)), "holders"},
		{"stored record with a bad length list", cat(head, meta, profile, changed(6, 255)), "stored record"},
		{"request naming a record frame past the last", cat(valid, frame(3, []byte("\x83\xa1a\x01\xa1i\xa1q\xa2rn\x02"))), "names record frame 2 of 1"},
		{"duplicate stored record", cat(valid, stored), "duplicate record"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := restored(t, h.snapshot())
			before := snapshotBytes(t, s)
			err := s.Restore(bytes.NewReader(tt.stream))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore = %v, want an error containing %q", err, tt.want)
			}
			if got := snapshotBytes(t, s); !bytes.Equal(got, before) {
				t.Fatal("failed Restore changed the store")
			}
		})
	}
	// The streams above are only meaningful if their valid prefix restores,
	// with a request that names its record.
	ok := cat(valid, frame(3, []byte("\x83\xa1a\x01\xa1i\xa1q\xa2rn\x01")))
	if s := restored(t, ok); s.ByID("a-active") == nil {
		t.Fatal("restoring header, meta, a profile, one stored record and a request lost the record")
	}
}

// lenPrefix is where a frame's body starts: after its type and length.
func lenPrefix(f []byte) int {
	for i := 1; i < len(f); i++ {
		if f[i] < 0x80 {
			return i + 1
		}
	}
	return len(f)
}

// Requests that hold records in many of the arena's chunks, and records
// larger than a chunk's carving that have a mapping of their own, name
// every one of them by its place, and restore to the same stream.
func TestStoredSnapshotNamesRecordsAcrossChunks(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.Fence{Version: fsm.Version})
	const batches, per = 20, 100
	var ids []string
	for b := range batches {
		var entries [][]byte
		var reqs []string
		for i := range per {
			id := fmt.Sprintf("c-%02d-%03d", b, i)
			is := with(newIssue(id, "access", time.Hour, 0), func(r *fsm.Record) {
				r.Subject, r.Title = fmt.Sprintf("user:%d", i), strings.Repeat("t", 40)
				if i == 0 {
					r.Data = []byte(strings.Repeat("d", 100<<10)) // a mapping of its own
				}
			})
			entries, reqs, ids = append(entries, encode(t, is)), append(reqs, "req-"+id), append(ids, id)
		}
		h.applyRaw(encode(t, &fsm.Batch{Now: ns(t0.Add(time.Duration(b) * time.Second)), Entries: entries, Reqs: reqs}), len(entries))
	}
	snap := h.snapshot()
	if n := bytes.Count(snap, []byte("\xa2rn")); n != batches*per {
		t.Fatalf("%d request frames name a record frame, want %d", n, batches*per)
	}
	r := restored(t, snap)
	if got := snapshotBytes(t, r); !bytes.Equal(got, snap) {
		t.Fatalf("version 2 stream of the restored state differs: %d bytes, want %d", len(got), len(snap))
	}
	checkSameState(t, r, h.s, ids, ns(t0.Add(time.Minute)))
}

// A record too large for a frame fails the snapshot, wherever it is in
// the walk: the records after it are not written as if it were there.
func TestStoredSnapshotFailsOnARecordPastTheFrameBound(t *testing.T) {
	h := newHarness(t)
	h.ok(t0, &fsm.Fence{Version: fsm.Version})
	var entries [][]byte
	var reqs []string
	for _, id := range []string{"a", "b", "c"} {
		is := newIssue(id, "access", time.Hour, 0)
		if id == "a" {
			is.Record.Data = []byte(strings.Repeat("d", 1100<<10))
		}
		entries, reqs = append(entries, encode(t, is)), append(reqs, "r"+id)
	}
	h.applyRaw(encode(t, &fsm.Batch{Now: ns(t0), Entries: entries, Reqs: reqs}), len(entries))
	var buf bytes.Buffer
	if err := h.s.WriteSnapshot(&buf); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("WriteSnapshot of a state with a record past the frame bound = %v (%d bytes written), want it to fail", err, buf.Len())
	}
}
