package fsm_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// fuzzState is a store with a few tokens of each shape: live, consumed
// with reuse detection, rotated.
func fuzzState(t testing.TB) *harness {
	h := newHarness(t)
	h.issue(t2031, newIssue("live", "access", time.Hour, 0))
	code := newIssue("code", "oauth2_code", time.Hour, 1)
	code.Record.DetectReuse, code.Record.Family = true, "fam"
	h.issue(t2031, code)
	h.ok(t2031, &fsm.Consume{Hash: secretHash("code")})
	return h
}

// FuzzApply applies any entry, alone and inside a batch, to a store with
// state: nothing panics, a bad entry changes nothing, and the state still
// snapshots and restores to the same records.
func FuzzApply(f *testing.F) {
	issue := encode(f, newIssue("new", "access", time.Hour, 0))
	f.Add([]byte{0x63}) // the one-byte probe of the node port
	f.Add(encode(f, &fsm.Issue{Record: fsm.Record{ID: "forged", Kind: "developer", Hash: "x", Subject: "user:admin\x00\x1b[31m", Generator: "nobody"}}))
	f.Add(issue)
	f.Add(encode(f, &fsm.Consume{Hash: secretHash("code")}))
	f.Add(encode(f, &fsm.Rotate{Hash: secretHash("code"), Kind: "oauth2_code", Next: fsm.Record{ID: "n", Hash: "n"}}))
	f.Add(encode(f, &fsm.Expire{Before: ns(t2031.Add(time.Hour)), IDs: []string{"live", "code"}}))
	f.Add(encode(f, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{issue, {0x63}}}))
	f.Add(encode(f, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{issue}, Reqs: []string{"a", "b"}}))
	f.Add([]byte{byte(fsm.IgnoreUnknown) | 0x63})
	consume := encode(f, &fsm.Consume{Hash: secretHash("new")})
	f.Add(encode(f, &fsm.ClientBatch{Ops: [][]byte{issue, consume}}))
	f.Add(encode(f, &fsm.ClientBatch{Ops: [][]byte{issue, consume, consume}}))
	f.Add(encode(f, &fsm.ClientBatch{Ops: [][]byte{issue, issue}}))
	f.Add(encode(f, &fsm.ClientBatch{Ops: [][]byte{issue, encode(f, &fsm.ClientBatch{Ops: [][]byte{issue}})}}))
	f.Add(encode(f, &fsm.RevokeFamilyKind{Family: "fam", Kind: "access"}))
	// Family revocations in a batch, undone by a later op and not.
	revokeFam := encode(f, &fsm.RevokeFamily{Family: "fam", Reason: "r", FamilyHold: int64(time.Hour)})
	revokeKind := encode(f, &fsm.RevokeFamilyKind{Family: "fam", Kind: "oauth2_code"})
	f.Add(encode(f, &fsm.ClientBatch{Ops: [][]byte{revokeKind, revokeFam, issue}}))
	f.Add(encode(f, &fsm.ClientBatch{Ops: [][]byte{revokeFam, issue, issue}}))
	f.Add(encode(f, &fsm.ClientBatch{Ops: [][]byte{revokeFam, encode(f, &fsm.Consume{Hash: secretHash("code")})}}))
	f.Fuzz(func(t *testing.T, entry []byte) {
		h := fuzzState(t)
		before := recordFrames(t, h.s)
		h.index++
		res := h.s.Apply(h.index, entry)
		if _, halted := h.s.Halted(); halted {
			return // an entry of a later release: nothing of it applied
		}
		if errors.Is(res.Err, fsm.ErrBadEntry) && !bytes.Equal(recordFrames(t, h.s), before) {
			t.Fatal("a bad entry changed the state")
		}
		// A client batch that fails leaves nothing, unless it detected a
		// reuse, whose revocation stands.
		if len(entry) > 0 && fsm.Type(entry[0]) == fsm.TypeClientBatch && res.Err != nil && !errors.Is(res.Err, fsm.ErrReused) &&
			!bytes.Equal(recordFrames(t, h.s), before) {
			t.Fatalf("a client batch failing at op %d (%v) changed the state", res.Op, res.Err)
		}
		h.index++
		h.s.Apply(h.index, encode(t, &fsm.Batch{Now: ns(t2031.Add(time.Minute)), Entries: [][]byte{entry, entry}, Reqs: []string{"x", ""}}))
		if _, halted := h.s.Halted(); halted {
			return
		}
		snap := snapshotBytes(t, h.s)
		r := fsm.New()
		if err := r.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatalf("restore of a snapshot taken after the entry: %v", err)
		}
		if !bytes.Equal(recordFrames(t, r), recordFrames(t, h.s)) {
			t.Fatal("the restored records differ")
		}
	})
}

// FuzzRestore restores any stream: nothing panics, and a stream it takes
// snapshots again to a stream that restores to the same records.
func FuzzRestore(f *testing.F) {
	h := fuzzState(f)
	h.s.Apply(h.index+1, encode(f, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{encode(f, newIssue("req", "access", time.Hour, 0))}, Reqs: []string{"req-1"}}))
	snap := snapshotBytes(f, h.s)
	f.Add(snap)
	f.Add(snap[:len(snap)/2])
	// The same state past the fence: version 2 of the stream, its
	// request naming its record.
	h.s.Apply(h.index+2, encode(f, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{encode(f, &fsm.Fence{Version: fsm.Version})}}))
	stored := snapshotBytes(f, h.s)
	if stored[6] != 2 {
		f.Fatalf("snapshot version %d past the fence", stored[6])
	}
	f.Add(stored)
	f.Add(stored[:len(stored)*2/3])
	f.Add([]byte("TKSNAP\x01"))
	f.Add([]byte("TKSNAP\x02"))
	f.Add([]byte{0x63})
	f.Fuzz(func(t *testing.T, stream []byte) {
		s := fsm.New()
		if err := s.Restore(bytes.NewReader(stream)); err != nil {
			return
		}
		again := fsm.New()
		if err := again.Restore(bytes.NewReader(snapshotBytes(t, s))); err != nil {
			t.Fatalf("restore of a snapshot of a restored state: %v", err)
		}
		if !bytes.Equal(recordFrames(t, again), recordFrames(t, s)) {
			t.Fatal("records changed over a second snapshot")
		}
		// The restored state takes commands.
		s.Apply(1, encode(t, &fsm.Batch{Now: ns(t2031), Entries: [][]byte{
			encode(t, &fsm.RevokeFamily{Family: "fam"}), encode(t, &fsm.Expire{Before: ns(t2031.Add(24 * time.Hour)), IDs: []string{"live", "code"}})}}))
	})
}
