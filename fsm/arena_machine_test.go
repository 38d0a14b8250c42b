package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// arenaIssue is an issue of a record with every kind of field the arena
// lays out, chosen by i.
func arenaIssue(i int) *fsm.Issue {
	id := fmt.Sprintf("%016x%06d", uint64(i)*0x9e3779b97f4a7c15, i)
	return with(newIssue(id, []string{"access", "oauth2_refresh", "session"}[i%3], time.Hour, int64(i%3)), func(r *fsm.Record) {
		r.Subject, r.ClientID, r.Title = fmt.Sprint("user:", i%50), "web", "Chrome on Li"
		r.IP, r.UserAgent = fmt.Sprintf("10.0.%d.%d", i>>8&255, i&255), "Mozilla/5.0 (X11; Linux x86_64)"
		if i%4 == 0 {
			r.Data = []byte(strings.Repeat("d", i%300))
		}
		if i%5 == 0 {
			r.Scopes, r.Family, r.RLC = []string{"read", "write"}, fmt.Sprint("fam", i%7), "gold"
		}
	})
}

// applyWithReqs applies cmds as one Batch at now, each under a request
// id, so that remembered outcomes share the records stored.
func applyWithReqs(t testing.TB, h *harness, now time.Time, tag string, cmds ...fsm.Command) []fsm.Result {
	t.Helper()
	b := &fsm.Batch{Now: ns(now)}
	for i, c := range cmds {
		b.Entries = append(b.Entries, encode(t, c))
		b.Reqs = append(b.Reqs, fmt.Sprintf("%s-%d", tag, i))
	}
	return h.applyRaw(encode(t, b), len(cmds))
}

// A snapshot taken, then every record rewritten (touched, consumed or
// revoked, remembered under request ids that are then forgotten) and
// deleted, and new records written over the space that freed, streams the
// state as it was when it was taken: the arena kept what it reads.
func TestSnapshotAfterEveryRecordRewrittenAndDeleted(t *testing.T) {
	h := newHarness(t)
	const n = 3000
	var ids, hashes []string
	for i := 0; i < n; i += 100 {
		var cmds []fsm.Command
		for j := i; j < i+100; j++ {
			c := arenaIssue(j)
			ids, hashes = append(ids, c.Record.ID), append(hashes, c.Record.Hash)
			cmds = append(cmds, c)
		}
		applyWithReqs(t, h, t0, fmt.Sprint("issue", i), cmds...)
	}
	want := h.snapshot()
	write, release, err := h.s.TakeSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(time.Minute) // the issues' request ids are forgotten from here on
	var touches []fsm.Use
	for i, hash := range hashes {
		touches = append(touches, fsm.Use{Hash: hash, At: ns(now), IP: fmt.Sprint("10.9.9.", i%200)})
	}
	h.ok(now, &fsm.Touch{Uses: touches})
	var cmds []fsm.Command
	for i, hash := range hashes {
		if i%2 == 0 {
			cmds = append(cmds, &fsm.Consume{Hash: hash})
		} else {
			cmds = append(cmds, &fsm.Revoke{Hash: hash, Reason: "rewritten"})
		}
	}
	applyWithReqs(t, h, now, "rewrite", cmds...)
	late := t0.Add(48 * time.Hour)
	for len(h.s.DueForGC(ns(late), 1)) > 0 {
		h.ok(late, &fsm.Expire{Before: ns(late), IDs: h.s.DueForGC(ns(late), 500)})
		late = late.Add(time.Minute)
	}
	if c := h.s.Counts(); len(c) != 0 {
		t.Fatalf("records left after every one was deleted: %v", c)
	}
	for i := range n {
		h.issue(late, arenaIssue(n+i)) // into the space the old records would have freed
	}
	if h.s.ArenaPending() == 0 {
		t.Fatal("no free waits for the open snapshot")
	}
	var got bytes.Buffer
	if err := write(&got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("the snapshot streamed %d bytes unlike the %d of the state when it was taken", got.Len(), len(want))
	}
	release()
	if p := h.s.ArenaPending(); p != 0 {
		t.Fatalf("%d frees still wait once the snapshot is released", p)
	}
	r := restored(t, got.Bytes())
	for i, id := range ids {
		if rec := r.ByID(id); rec == nil || rec.Hash != hashes[i] || rec.ModifyIndex == 0 {
			t.Fatalf("record %s restored from the snapshot as %+v", id, rec)
		}
	}
}

// Readers, a writer and snapshots being written and restored at once, as
// on a node: under -race, and every record any of them reads is whole.
func TestArenaConcurrentReadersWriterSnapshot(t *testing.T) {
	fsm.SetMaxWriterHold(t, 0) // readers between every command of a batch
	h := newHarness(t)
	const rounds, per = 40, 50
	done := make(chan struct{})
	var wg sync.WaitGroup
	check := func(who string, r *fsm.Record) {
		if r == nil {
			return
		}
		if r.Hash != hashOf("secret-"+r.ID) || !strings.HasPrefix(r.Subject, "user:") || r.ClientID != "web" {
			t.Errorf("%s read a record that is not whole: %+v", who, r)
		}
	}
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				c := arenaIssue((i*7 + w) % (rounds * per))
				check("a reader by digest", h.s.ByHash(c.Record.Hash))
				check("a reader by id", h.s.ByID(c.Record.ID))
				rs, _ := h.s.ListBySubject(c.Record.Subject, "", "", 20, ns(t0))
				for _, r := range rs {
					check("a reader by subject", r)
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			write, release, err := h.s.TakeSnapshot()
			if errors.Is(err, fsm.ErrMidEntry) {
				continue // in a pause of the writer's: Raft never asks there
			}
			if err != nil {
				t.Error(err)
				return
			}
			var buf bytes.Buffer
			err = write(&buf)
			release()
			if err != nil {
				t.Error(err)
				return
			}
			r := fsm.New()
			if err := r.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				t.Errorf("restore of a snapshot written beside the writer: %v", err)
				return
			}
			for i := 0; i < rounds*per; i += 97 {
				check("a restored snapshot", r.ByID(arenaIssue(i).Record.ID))
			}
		}
	})
	now := t0
	for round := range rounds {
		var cmds []fsm.Command
		for j := range per {
			cmds = append(cmds, arenaIssue(round*per+j))
		}
		applyWithReqs(t, h, now, fmt.Sprint("r", round), cmds...)
		cmds = cmds[:0]
		for j := range round * per / 3 {
			c := arenaIssue(j * 3)
			cmds = append(cmds, &fsm.Touch{Uses: []fsm.Use{{Hash: c.Record.Hash, At: ns(now)}}}, &fsm.Consume{Hash: c.Record.Hash})
		}
		if len(cmds) > 0 {
			applyWithReqs(t, h, now, fmt.Sprint("u", round), cmds...)
		}
		now = now.Add(10 * time.Second)
		if due := h.s.DueForGC(ns(now.Add(2*time.Hour)), 100); len(due) > 0 && round%5 == 4 {
			h.ok(now.Add(2*time.Hour), &fsm.Expire{Before: ns(now.Add(2 * time.Hour)), IDs: due})
		}
	}
	close(done)
	wg.Wait()
}

// A record whose bytes in the arena no longer read back halts the
// machine, for the writer and for a reader alike, instead of taking the
// node down or reading out of range.
func TestCorruptRecordHalts(t *testing.T) {
	h := newHarness(t)
	c := arenaIssue(1)
	h.issue(t0, c)
	if !h.s.CorruptRecord(c.Record.ID) {
		t.Fatal("no record to corrupt")
	}
	if r := h.s.ByHash(c.Record.Hash); r != nil {
		t.Fatalf("a reader got %+v from a corrupt record", r)
	}
	if _, halted := h.s.Halted(); !halted {
		t.Fatal("a reader met a corrupt record and the machine did not halt")
	}
	h2 := newHarness(t)
	h2.issue(t0, c)
	h2.s.CorruptRecord(c.Record.ID)
	h2.index++
	res := h2.s.Apply(h2.index, batchEntry(t, t0, &fsm.Consume{Hash: c.Record.Hash}))
	halt, halted := h2.s.Halted()
	if !halted || res.Err != fsm.ErrHalted || !strings.Contains(halt.Reason, "corrupt") {
		t.Fatalf("apply over a corrupt record: %+v, halt %+v (%v)", res, halt, halted)
	}
	if err := h2.s.WriteSnapshot(new(bytes.Buffer)); err == nil {
		t.Fatal("a halted machine wrote a snapshot")
	}
}
