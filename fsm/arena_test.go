package fsm

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Freed space is reused by a record of the same size class, and only by
// one: a record of another class gets space of its own.
func TestArenaReuseAfterFree(t *testing.T) {
	st := newState()
	a := st.ar
	r := &Record{ID: "4jN15fUFUhSf6eiYfEkBEr", Hash: strings.Repeat("h", 32), Kind: "access", Subject: "user:1"}
	h1 := st.compact(r)
	h2 := st.compact(r)
	if h1 == h2 || h1 == noHandle || h2 == noHandle {
		t.Fatalf("two records at %#x and %#x", h1, h2)
	}
	used, _ := a.bytesInUse()
	a.free(h1)
	if after, _ := a.bytesInUse(); after >= used {
		t.Fatalf("%d bytes in use after a free, %d before", after, used)
	}
	if h3 := st.compact(r); h3 != h1 {
		t.Fatalf("a record of the same size at %#x, not at the freed %#x", h3, h1)
	}
	a.free(h2)
	big := *r
	big.Subject = strings.Repeat("s", 300) // another class
	if h4 := st.compact(&big); h4 == h2 {
		t.Fatalf("a record of another size class reused %#x", h2)
	}
	if h5 := st.compact(r); h5 != h2 {
		t.Fatalf("a record of the freed one's class at %#x, not at %#x", h5, h2)
	}
	// A freed record reads as corrupt, never as another record.
	st.ar.free(h2)
	err := func() (err error) {
		defer recoverCorrupt(&err)
		st.ar.get(h2)
		return nil
	}()
	if !errors.As(err, new(errCorrupt)) {
		t.Fatalf("reading a freed record: %v, want the arena's corruption error", err)
	}
}

// Size classes hold what they are asked for, and each is the smallest
// that does.
func TestArenaSizeClasses(t *testing.T) {
	for n := 1; n <= maxSmall; n++ {
		c := classOf(n)
		if c < 0 || c >= numClasses || classSize[c] < uint32(n) || c > 0 && classSize[c-1] >= uint32(n) {
			t.Fatalf("classOf(%d) = %d (size %d)", n, c, classSize[c])
		}
	}
	if classSize[classOf(maxSmall)] != maxSmall {
		t.Fatalf("the largest class is %d bytes, want %d", classSize[classOf(maxSmall)], maxSmall)
	}
}

// The arena grows by chunks of doubling size up to maxChunk, every record
// reads back as written however many chunks it took, and a record larger
// than maxSmall has a mapping of its own, unmapped when it is freed, whose
// slot the next one takes.
func TestArenaChunkGrowth(t *testing.T) {
	st := newState()
	var hs []handle
	var want []*Record
	for i := range 200_000 {
		r := &Record{ID: fmt.Sprintf("id-%08d", i), Hash: fmt.Sprintf("%032d", i), Kind: "access",
			Subject: fmt.Sprint("user:", i%100), CreatedAt: int64(i), ModifyIndex: uint64(i)}
		if i%1000 == 0 {
			r.Data = []byte(strings.Repeat("d", i%5000))
		}
		hs = append(hs, st.compact(r))
		want = append(want, r)
	}
	chunks := st.ar.chunks()
	if len(chunks) < 4 {
		t.Fatalf("%d chunks for 200k records", len(chunks))
	}
	for i := 2; i < len(chunks); i++ {
		if a, b := len(chunks[i-1].b), len(chunks[i].b); b != min(2*a, maxChunk) {
			t.Fatalf("chunk %d of %d bytes after one of %d", i, b, a)
		}
	}
	for i, h := range hs {
		if got := st.record(h); !reflect.DeepEqual(got, want[i]) {
			t.Fatalf("record %d reads back as %+v, want %+v", i, got, want[i])
		}
	}
	_, mapped := st.ar.bytesInUse()
	large := &Record{ID: "large", Data: make([]byte, 3*maxSmall)}
	lh := st.compact(large)
	if uint32(lh) != 0 || !st.ar.chunks()[lh>>32].large {
		t.Fatalf("a record of %d bytes at %#x, not in a mapping of its own", len(large.Data), lh)
	}
	if got := st.record(lh); !reflect.DeepEqual(got, large) {
		t.Fatal("the large record does not read back")
	}
	st.ar.free(lh)
	if _, m := st.ar.bytesInUse(); m != mapped {
		t.Fatalf("%d bytes mapped after the large record was freed, %d before", m, mapped)
	}
	if lh2 := st.compact(large); lh2 != lh {
		t.Fatalf("the next large record at %#x, not in the freed slot %#x", lh2, lh)
	}
}

// A free waits for every snapshot open when it was made, and for no later
// one.
func TestArenaFreesWaitForSnapshots(t *testing.T) {
	st := newState()
	a := st.ar
	r := &Record{ID: "a", Hash: "h"}
	h1, h2 := st.compact(r), st.compact(r)
	g1 := a.openSnapshot()
	a.free(h1) // g1 may read it
	g2 := a.openSnapshot()
	a.free(h2) // g1 and g2 may
	if h := st.compact(r); h == h1 || h == h2 {
		t.Fatalf("space freed under open snapshots reused at %#x", h)
	}
	a.closeSnapshot(g2)
	if len(a.pending) != 2 {
		t.Fatalf("%d frees pending with the first snapshot open, want 2", len(a.pending))
	}
	if st.record(h1).ID != "a" || st.record(h2).ID != "a" {
		t.Fatal("a record freed under an open snapshot does not read back")
	}
	a.closeSnapshot(g1)
	if len(a.pending) != 0 {
		t.Fatalf("%d frees pending with no snapshot open", len(a.pending))
	}
	g3 := a.openSnapshot()
	a.closeSnapshot(g3)
	got := map[handle]bool{st.compact(r): true, st.compact(r): true}
	if !got[h1] || !got[h2] {
		t.Fatalf("after the snapshots, new records at %v, not at the freed %#x and %#x", got, h1, h2)
	}
}

// isFreed reports whether the record at h was freed: it reads corrupt.
func isFreed(st *state, h handle) (freed bool) {
	defer func() {
		if r := recover(); r != nil {
			_, freed = r.(errCorrupt)
		}
	}()
	st.ar.get(h)
	return false
}

// A record a remembered request shares outlives its replacement in the
// state until the request is forgotten, and not longer; a request's own
// record goes with it; a record shared by as many requests as its header
// counts is copied for the next.
func TestRecordHolders(t *testing.T) {
	st := newState()
	r := &Record{ID: "a", Hash: "ha", Kind: "access", ModifyIndex: 1}
	st.put(nil, r)
	h := st.storedID("a")
	st.remember("req-1", 10, Result{Record: r})
	if q := st.request("req-1"); q.rec != h {
		t.Fatalf("the request holds %#x, not the record just stored at %#x", q.rec, h)
	}
	next := *r
	next.ModifyIndex = 2
	st.put(r, &next)
	if isFreed(st, h) || st.record(h).ModifyIndex != 1 {
		t.Fatal("a record a request holds was freed when the state replaced it")
	}
	if got := st.request("req-1").Result(st).Record; got == nil || got.ModifyIndex != 1 {
		t.Fatalf("the remembered outcome reads %+v", got)
	}
	other := &Record{ID: "b", Hash: "hb", Kind: "access"} // not stored: the request's own
	st.remember("req-2", 20, Result{Record: other})
	own := st.request("req-2").rec
	st.forgetRequests(15)
	if !isFreed(st, h) {
		t.Fatal("the replaced record outlived the last request that held it")
	}
	if isFreed(st, own) {
		t.Fatal("a request's own record was freed before the request was forgotten")
	}
	st.forgetRequests(25)
	if !isFreed(st, own) {
		t.Fatal("a request's own record outlived the request")
	}
	cur := st.storedID("a")
	for i := range maxHolders {
		st.remember(fmt.Sprint("many-", i), 30, Result{Record: &next})
		if q := st.request(fmt.Sprint("many-", i)); q.rec != cur {
			t.Fatalf("request %d of %d does not share the record", i, maxHolders)
		}
	}
	st.remember("one-more", 30, Result{Record: &next})
	if q := st.request("one-more"); q.rec == cur || !reflect.DeepEqual(st.record(q.rec), &next) {
		t.Fatalf("the request past %d holders got %#x (the shared record is at %#x)", maxHolders, q.rec, cur)
	}
	st.forgetRequests(31)
	if isFreed(st, cur) || st.record(cur).ModifyIndex != 2 {
		t.Fatal("the state's record was freed when the requests sharing it were forgotten")
	}
}
