package fsm_test

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// t0 is a leader time far from the test machine's clock: the state machine
// must never look at the clock, only at command time.
var t0 = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

// ns is t as the Unix nanoseconds the state machine works in.
func ns(t time.Time) int64 { return t.UnixNano() }

// hashOf stands in for token.Hasher: the raw SHA-256 digest of s.
func hashOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return string(h[:])
}

// harness drives one Machine the way Raft does: every entry is a Batch,
// applied at the next log index.
type harness struct {
	t     testing.TB
	s     *fsm.Machine
	index uint64
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return &harness{t: t, s: fsm.New()}
}

// encode encodes c or fails the test.
func encode(t testing.TB, c fsm.Command) []byte {
	t.Helper()
	b, err := fsm.Encode(c)
	if err != nil {
		t.Fatalf("Encode(%T): unexpected error %v", c, err)
	}
	return b
}

// batchEntry encodes cmds as one Batch at leader time now.
func batchEntry(t testing.TB, now time.Time, cmds ...fsm.Command) []byte {
	t.Helper()
	b := &fsm.Batch{Now: ns(now), Entries: make([][]byte, len(cmds))}
	for i, c := range cmds {
		b.Entries[i] = encode(t, c)
	}
	return encode(t, b)
}

// batch applies cmds as one Batch at leader time now at the next index
// and returns the result of each command.
func (h *harness) batch(now time.Time, cmds ...fsm.Command) []fsm.Result {
	h.t.Helper()
	return h.applyRaw(batchEntry(h.t, now, cmds...), len(cmds))
}

// applyRaw applies an encoded Batch entry at the next index and checks it
// answered one result per entry.
func (h *harness) applyRaw(entry []byte, entries int) []fsm.Result {
	h.t.Helper()
	h.index++
	res := h.s.Apply(h.index, entry)
	if res.Err != nil || res.Record != nil || res.Count != 0 {
		h.t.Fatalf("Apply(%d) of a batch: top-level result %+v, want only per-entry results", h.index, res)
	}
	if len(res.Batch) != entries {
		h.t.Fatalf("Apply(%d): %d batch results, want %d", h.index, len(res.Batch), entries)
	}
	if got := h.s.AppliedIndex(); got != h.index {
		h.t.Fatalf("AppliedIndex() = %d after applying index %d", got, h.index)
	}
	return res.Batch
}

// do applies one command in its own batch at now and returns its result.
func (h *harness) do(now time.Time, c fsm.Command) fsm.Result {
	h.t.Helper()
	return h.batch(now, c)[0]
}

// ok applies c at now and fails the test unless it succeeded.
func (h *harness) ok(now time.Time, c fsm.Command) fsm.Result {
	h.t.Helper()
	res := h.do(now, c)
	if res.Err != nil {
		h.t.Fatalf("%T %+v at %s: unexpected error %v", c, c, now.Format(time.RFC3339), res.Err)
	}
	return res
}

// issue issues cmd at now and returns the stored record.
func (h *harness) issue(now time.Time, cmd *fsm.Issue) *fsm.Record {
	h.t.Helper()
	res := h.ok(now, cmd)
	if res.Record == nil || res.Record.ID != cmd.Record.ID {
		h.t.Fatalf("Issue %q: result record %+v, want the new record", cmd.Record.ID, res.Record)
	}
	return res.Record
}

// snapshot returns the snapshot stream of the store.
func (h *harness) snapshot() []byte { h.t.Helper(); return snapshotBytes(h.t, h.s) }

func snapshotBytes(t testing.TB, s *fsm.Machine) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatalf("WriteSnapshot: unexpected error %v", err)
	}
	return buf.Bytes()
}

// restored returns a fresh store restored from snap.
func restored(t testing.TB, snap []byte) *fsm.Machine {
	t.Helper()
	s := fsm.New()
	if err := s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("Restore: unexpected error %v", err)
	}
	return s
}

// newIssue returns an Issue of a record whose secret is "secret-"+id.
func newIssue(id, kind string, ttl time.Duration, maxUses int64) *fsm.Issue {
	return &fsm.Issue{
		Record: fsm.Record{ID: id, Hash: hashOf("secret-" + id), Kind: kind, MaxUses: maxUses},
		TTL:    int64(ttl),
	}
}

// with applies changes to an Issue's record and returns it, for one-line
// fixtures: with(newIssue(...), func(r *fsm.Record) { r.Subject = "u" }).
func with(c *fsm.Issue, f func(r *fsm.Record)) *fsm.Issue {
	f(&c.Record)
	return c
}

// secretHash is the hash newIssue gives id's record.
func secretHash(id string) string { return hashOf("secret-" + id) }

// mustPanic runs f and returns the panic value as a string; it fails the
// test if f returns normally.
func mustPanic(t testing.TB, what string, f func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatalf("%s: returned normally, want a panic", what)
		}
		msg = fmt.Sprint(r)
	}()
	f()
	return ""
}

// wantErr fails unless res.Err is want (nil for success).
func wantErr(t testing.TB, what string, res fsm.Result, want error) {
	t.Helper()
	if res.Err != want {
		t.Fatalf("%s: error %v, want %v (result %+v)", what, res.Err, want, res)
	}
}

// countsEqual fails unless two count maps are equal.
func countsEqual(t testing.TB, what string, got, want map[fsm.CountKey]int64) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: Counts() = %v, want %v", what, fmtCounts(got), fmtCounts(want))
	}
}

func fmtCounts(c map[fsm.CountKey]int64) string {
	var parts []string
	for k, n := range c {
		parts = append(parts, fmt.Sprintf("{%s,%d}:%d", k.Kind, k.State, n))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, " ") + "}"
}

// ids returns the ids of rs.
func ids(rs []*fsm.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// checkConsistent cross-checks the store's indexes through its read API,
// given every id that was ever issued (or tried) and the time now: byID
// and byHash agree, the counts match the records, the GC index lists
// exactly the records that will be collected (checkDue, at every GC time
// held and with several limits), and each subject's listing is exactly
// its active records.
func checkConsistent(t testing.TB, s *fsm.Machine, allIDs []string, now int64) {
	t.Helper()
	counts := map[fsm.CountKey]int64{}
	gc := map[string]int64{}        // id -> GC time, of the records that will be collected
	active := map[string][]string{} // subject -> ids
	seen := map[string]bool{}
	for _, id := range allIDs {
		if seen[id] {
			continue
		}
		seen[id] = true
		r := s.ByID(id)
		if r == nil {
			continue
		}
		if r.ID != id {
			t.Fatalf("ByID(%q) returned record %q", id, r.ID)
		}
		if h := s.ByHash(r.Hash); !reflect.DeepEqual(h, r) {
			t.Fatalf("ByHash of record %q's hash = %+v, want the record ByID returns %+v", id, h, r)
		}
		counts[fsm.CountKey{Kind: r.Kind, State: r.State}]++
		if at := r.GCAt(); at != 0 {
			gc[r.ID] = at
		}
		if r.Subject != "" {
			list := active[r.Subject] // the key exists even with no active record
			if r.Status(now) == fsm.StatusActive {
				list = append(list, r.ID)
			}
			active[r.Subject] = list
		}
	}
	countsEqual(t, "records found by id", s.Counts(), counts)

	ats := make([]int64, 0, len(gc))
	for _, at := range gc {
		ats = append(ats, at)
	}
	sort.Slice(ats, func(i, j int) bool { return ats[i] < ats[j] })
	befores := []int64{1<<63 - 1, 0}
	for i, at := range ats {
		// At most 16 cut-offs, spread over the GC times held: at each,
		// and just before it.
		if len(ats) <= 16 || i%(len(ats)/16) == 0 {
			befores = append(befores, at, at-1)
		}
	}
	for _, before := range befores {
		for _, limit := range []int{1, 3, len(gc) + 1} {
			checkDue(t, s, gc, before, limit)
		}
	}
	for subject, want := range active {
		sort.Strings(want)
		got, next := s.ListBySubject(subject, "", "", len(allIDs)+1, now)
		if !equalStrings(ids(got), want) || next != "" {
			t.Fatalf("ListBySubject(%q) = %v, cursor %q; want %v, no cursor", subject, ids(got), next, want)
		}
	}
}

// checkDue checks DueForGC(before, limit) against gc, the GC time of every
// record that will be collected: it lists min(limit, due) records, each
// once, each due by before; in bucket order (fsm.GCBucket of their GC
// times), and with every due record of a bucket before the last one
// listed; when fewer than limit, every due record.
func checkDue(t testing.TB, s *fsm.Machine, gc map[string]int64, before int64, limit int) {
	t.Helper()
	got := s.DueForGC(before, limit)
	var due []string
	for id, at := range gc {
		if at <= before {
			due = append(due, id)
		}
	}
	if len(got) != min(limit, len(due)) {
		t.Fatalf("DueForGC(%d, %d) = %v: %d records, want %d of the %d due %v", before, limit, got, len(got), min(limit, len(due)), len(due), gcOrder(due, gc))
	}
	listed := map[string]bool{}
	last := int64(-1 << 63)
	for _, id := range got {
		at, ok := gc[id]
		switch {
		case listed[id]:
			t.Fatalf("DueForGC(%d, %d) = %v: %q twice", before, limit, got, id)
		case !ok:
			t.Fatalf("DueForGC(%d, %d) = %v: %q will not be collected", before, limit, got, id)
		case at > before:
			t.Fatalf("DueForGC(%d, %d) = %v: %q is due at %d, after the cut-off", before, limit, got, id, at)
		case fsm.GCBucket(at) < last:
			t.Fatalf("DueForGC(%d, %d) = %v: %q (GC at %d) after a record of a later bucket", before, limit, got, id, at)
		}
		listed[id], last = true, fsm.GCBucket(at)
	}
	for _, id := range due {
		if !listed[id] && (len(got) < limit || fsm.GCBucket(gc[id]) < last) {
			t.Fatalf("DueForGC(%d, %d) = %v: %q (GC at %d) is due and missing", before, limit, got, id, gc[id])
		}
	}
}

// gcOrder returns ids in the order of the buckets of their GC times, in
// id order within one: DueForGC's list made comparable.
func gcOrder(ids []string, gc map[string]int64) []string {
	out := slices.Clone(ids)
	slices.SortStableFunc(out, func(a, b string) int {
		if c := cmp.Compare(fsm.GCBucket(gc[a]), fsm.GCBucket(gc[b])); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return out
}

// dueOrder is DueForGC(before, limit) of s made comparable (gcOrder),
// having checked that it lists its records in bucket order.
func dueOrder(t testing.TB, s *fsm.Machine, before int64, limit int) []string {
	t.Helper()
	got := s.DueForGC(before, limit)
	gc := map[string]int64{}
	last := int64(-1 << 63)
	for _, id := range got {
		r := s.ByID(id)
		if r == nil {
			t.Fatalf("DueForGC(%d, %d) = %v: %q is not stored", before, limit, got, id)
		}
		if b := fsm.GCBucket(r.GCAt()); b < last {
			t.Fatalf("DueForGC(%d, %d) = %v: %q after a record of a later bucket", before, limit, got, id)
		} else {
			last = b
		}
		gc[id] = r.GCAt()
	}
	return gcOrder(got, gc)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
