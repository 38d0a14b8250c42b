package fsm_test

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// inlineProfile is an issue whose kind, client, title and user agent are
// too long for the shared profile table: the record holds them itself, in
// the arena.
func inlineProfile(id, kind, ua string, data []byte) *fsm.Issue {
	return with(newIssue(id, kind, time.Hour, 0), func(r *fsm.Record) { r.UserAgent, r.Data = ua, data })
}

// The counts of records whose kind is in the arena: a record revoked
// (its old version freed) and its slot reused by another record leave the
// counts as they are.
func TestCountsOfInlineKindsOutliveTheirRecords(t *testing.T) {
	ua := strings.Repeat("u", 2000)
	h := newHarness(t)
	h.issue(t0, inlineProfile("idA00000", "access", ua, nil))
	h.issue(t0, inlineProfile("idB00000", "access", ua, nil))
	h.ok(t0, &fsm.Revoke{ID: "idB00000"})
	h.issue(t0, inlineProfile("idC00000", "refrsh", ua, nil)) // in B's old slot
	countsEqual(t, "counts", h.s.Counts(), map[fsm.CountKey]int64{
		{Kind: "access", State: fsm.Active}: 1, {Kind: "access", State: fsm.Revoked}: 1, {Kind: "refrsh", State: fsm.Active}: 1})

	// A record over 64 KiB has a mapping of its own, unmapped when freed.
	big := make([]byte, 70<<10)
	h = newHarness(t)
	h.issue(t0, inlineProfile("idA00000", "access", ua, big))
	h.issue(t0, inlineProfile("idB00000", "access", ua, big))
	h.ok(t0, &fsm.Revoke{ID: "idB00000"})
	h.issue(t0, inlineProfile("idC00000", "access", ua, nil))
	countsEqual(t, "counts with records of their own mappings", h.s.Counts(), map[fsm.CountKey]int64{
		{Kind: "access", State: fsm.Active}: 2, {Kind: "access", State: fsm.Revoked}: 1})

	// The counts a restore builds.
	h = newHarness(t)
	h.issue(t0, inlineProfile("idA00000", "access", ua, nil))
	h.issue(t0, inlineProfile("idB00000", "access", ua, nil))
	r := &harness{t: t, s: restored(t, h.snapshot()), index: 100}
	r.ok(t0, &fsm.Revoke{ID: "idB00000"})
	r.ok(t0, &fsm.Revoke{ID: "idA00000"})
	r.issue(t0, inlineProfile("idC0000000000000000000", "access", ua[:len(ua)-14], nil))
	r.issue(t0, inlineProfile("idD0000000000000000000", "access", ua[:len(ua)-14], nil))
	countsEqual(t, "counts after a restore", r.s.Counts(), map[fsm.CountKey]int64{
		{Kind: "access", State: fsm.Active}: 2, {Kind: "access", State: fsm.Revoked}: 2})
}

// A snapshot written in another goroutine while the writer maps and
// unmaps records of their own mappings streams the state it was taken of.
func TestSnapshotWrittenWhileMappingsComeAndGo(t *testing.T) {
	h := newHarness(t)
	big := func(i int) *fsm.Issue {
		return with(newIssue(fmt.Sprintf("big%05d", i), "access", time.Hour, 0), func(r *fsm.Record) { r.Data = make([]byte, 70<<10+i) })
	}
	for i := range 200 {
		h.issue(t0, big(i))
	}
	for round := range 3 {
		write, release, err := h.s.TakeSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		want := snapshotBytes(t, h.s)
		done := make(chan []byte)
		go func() {
			var buf bytes.Buffer
			if err := write(&buf); err != nil {
				t.Error(err)
			}
			done <- buf.Bytes()
		}()
		for i := range 200 {
			h.ok(t0, &fsm.Revoke{ID: fmt.Sprintf("big%05d", 1000*round+i)})
			h.issue(t0, big(1000*(round+1)+i))
		}
		got := <-done
		release()
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d: the snapshot written beside the writer is not the state it was taken of", round)
		}
	}
}

// A restore swaps the state while a snapshot of the old one is open: the
// old snapshot still streams the old state, after collections, and its
// release (twice, as Raft may) frees into the old arena only.
func TestSnapshotOfAStateRestoredOver(t *testing.T) {
	h := newHarness(t)
	for i := range 300 {
		h.issue(t0, with(newIssue(fmt.Sprintf("old%05d", i), "access", time.Hour, 0), func(r *fsm.Record) {
			r.Data = make([]byte, 1+(i%3)*(70<<10))
		}))
	}
	write, release, err := h.s.TakeSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := snapshotBytes(t, h.s)
	for i := range 300 {
		h.ok(t0, &fsm.Revoke{ID: fmt.Sprintf("old%05d", i)})
	}
	other := newHarness(t)
	other.issue(t0, newIssue("new", "access", time.Hour, 0))
	if err := h.s.Restore(bytes.NewReader(other.snapshot())); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		t.Fatal(err)
	}
	release()
	release()
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatal("the old state's snapshot streams something else after the restore")
	}
	runtime.GC()
	if h.s.ByID("new") == nil || h.s.ByID("old00000") != nil {
		t.Fatal("the restored state is not the snapshot restored")
	}
}
