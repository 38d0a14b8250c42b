//go:build linux

package fsm

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func pageRecord(i int) *Record {
	return &Record{ID: fmt.Sprintf("id-%08d", i), Hash: fmt.Sprintf("%032d", i), Kind: "access",
		Subject: fmt.Sprint("user:", i%100), IP: "10.0.0.1", CreatedAt: int64(i), ModifyIndex: uint64(i)}
}

// resident reports whether the page of the arena that h's record starts
// in takes memory (mincore).
func resident(t *testing.T, a *arena, h handle) bool {
	t.Helper()
	b := a.chunks()[h>>32].b
	p := int(uint32(h)) / pageSize * pageSize
	vec := make([]byte, 1)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[p])), uintptr(pageSize), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	return vec[0]&1 != 0
}

// Pages no record has bytes in any more go back to the kernel; a page
// one record still holds does not; and the freed space is reused after
// its pages came back, the records written there reading back as
// written.
func TestArenaReturnsEmptyPages(t *testing.T) {
	st := newState()
	a := st.ar
	const n = 20_000
	hs := make([]handle, n)
	for i := range hs {
		hs[i] = st.compact(pageRecord(i))
	}
	if got := a.bytesReturned(); got != 0 {
		t.Fatalf("%d bytes returned before any free", got)
	}
	// Every record but each 1000th: the pages those hold stay.
	for i, h := range hs {
		if i%1000 != 0 {
			a.free(h)
		}
	}
	returned := a.bytesReturned()
	used, _ := a.bytesInUse()
	if returned == 0 || returned%int64(pageSize) != 0 {
		t.Fatalf("%d bytes returned after %d of %d records were freed", returned, n-n/1000, n)
	}
	if live := int64(n - n/1000); returned < live*int64(classSize[classOf(len(a.get(hs[0])))])/2 {
		t.Fatalf("%d bytes returned of the %d records freed (%d bytes in use)", returned, live, used)
	}
	for i, h := range hs {
		if i%1000 == 0 {
			if !resident(t, a, h) {
				t.Fatalf("the page of live record %d was returned", i)
			}
			if got, want := st.record(h), pageRecord(i); !reflect.DeepEqual(got, want) {
				t.Fatalf("live record %d reads back as %+v, want %+v", i, got, want)
			}
		}
	}
	if resident(t, a, hs[n/2+1]) && resident(t, a, hs[n/2+200]) {
		t.Fatal("the pages of freed records in the middle of the arena still take memory")
	}
	// The same records again: they take the freed space, pages returned
	// or not, and read back.
	freed := map[handle]bool{}
	for i, h := range hs {
		if i%1000 != 0 {
			freed[h] = true
		}
	}
	for i := range hs {
		if i%1000 == 0 {
			continue
		}
		h := st.compact(pageRecord(i))
		if !freed[h] {
			t.Fatalf("record %d at %#x, not in freed space", i, h)
		}
		delete(freed, h)
		hs[i] = h
	}
	if got := a.bytesReturned(); got != 0 {
		t.Fatalf("%d bytes still counted as returned with every freed slot reused", got)
	}
	for i, h := range hs {
		if got, want := st.record(h), pageRecord(i); !reflect.DeepEqual(got, want) {
			t.Fatalf("record %d reads back as %+v after reuse, want %+v", i, got, want)
		}
	}
	if after, _ := a.bytesInUse(); after != used+int64(n-n/1000)*int64(classSize[classOf(len(a.get(hs[1])))]) {
		t.Fatalf("%d bytes in use after reuse, %d before it", after, used)
	}
}

// Records a snapshot may read keep their pages until it is released,
// and read back whole meanwhile.
func TestArenaSnapshotKeepsPages(t *testing.T) {
	st := newState()
	a := st.ar
	const n = 5_000
	hs := make([]handle, n)
	for i := range hs {
		hs[i] = st.compact(pageRecord(i))
	}
	g := a.openSnapshot()
	for _, h := range hs {
		a.free(h)
	}
	if got := a.bytesReturned(); got != 0 {
		t.Fatalf("%d bytes returned with a snapshot open", got)
	}
	for i, h := range hs {
		if got, want := st.record(h), pageRecord(i); !reflect.DeepEqual(got, want) {
			t.Fatalf("record %d reads back as %+v under the snapshot, want %+v", i, got, want)
		}
	}
	a.closeSnapshot(g)
	if got := a.bytesReturned(); got == 0 {
		t.Fatal("no page returned once the snapshot was released")
	}
	if resident(t, a, hs[n/2]) {
		t.Fatal("a page of freed records still takes memory after the snapshot was released")
	}
}

// A record larger than a page spans pages it holds alone: they go back
// when it is freed, and its size class takes them again.
func TestArenaReturnsPagesOfALargerRecord(t *testing.T) {
	st := newState()
	a := st.ar
	r := pageRecord(1)
	r.Data = []byte(strings.Repeat("d", 3*pageSize))
	h1 := st.compact(r)
	h2 := st.compact(pageRecord(2)) // after it, so its last page is shared
	a.free(h1)
	if got := a.bytesReturned(); got < 2*int64(pageSize) {
		t.Fatalf("%d bytes returned after a record of %d bytes was freed", got, len(a.get(h2))+len(r.Data))
	}
	if got, want := st.record(h2), pageRecord(2); !reflect.DeepEqual(got, want) {
		t.Fatalf("the record after it reads back as %+v, want %+v", got, want)
	}
	if h3 := st.compact(r); h3 != h1 {
		t.Fatalf("the same record again at %#x, not at the freed %#x", h3, h1)
	}
	if got := a.bytesReturned(); got != 0 {
		t.Fatalf("%d bytes counted as returned after the pages were reused", got)
	}
	if got := st.record(h1); !reflect.DeepEqual(got, r) {
		t.Fatal("the record written over returned pages does not read back")
	}
}

// BenchmarkArenaFree writes -arena-records records of the session shape
// and frees them: in the order they were written (as tokens issued
// together expire together), in a random order, or half of them at
// random; it reports what went back to the kernel per record freed, the
// CPU time per free, and the process's RSS (statm) before and after the
// frees.
func BenchmarkArenaFree(b *testing.B) {
	n := *arenaRecords
	for _, order := range []string{"written", "random", "half-random"} {
		b.Run(order, func(b *testing.B) {
			for b.Loop() {
				st := newState()
				hs := make([]handle, n)
				for i := range hs {
					r := pageRecord(i)
					r.ClientID, r.Title, r.UserAgent = "web", "Chrome on Li", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126"
					hs[i] = st.compact(r)
				}
				free := hs
				switch order {
				case "random":
					rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
				case "half-random":
					rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
					free = free[:n/2]
				}
				before := rss(b)
				start := cpuTime(b)
				for _, h := range free {
					st.ar.free(h)
				}
				b.ReportMetric(float64(cpuTime(b)-start)/float64(len(free)), "free-cpu-ns/record")
				after := rss(b)
				b.ReportMetric(float64(st.ar.bytesReturned())/float64(len(free)), "returned-bytes/freed")
				b.ReportMetric(float64(before)/(1<<20), "rss-before-MiB")
				b.ReportMetric(float64(after)/(1<<20), "rss-after-MiB")
				runtime.KeepAlive(st)
			}
		})
	}
}

var arenaRecords = flag.Int("arena-records", 1_000_000, "records BenchmarkArenaFree writes and frees")

// rss is the process's resident set in bytes.
func rss(b *testing.B) int64 {
	s, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Fatal(err)
	}
	var size, res int64
	if _, err := fmt.Sscan(string(s), &size, &res); err != nil {
		b.Fatal(err)
	}
	return res * int64(pageSize)
}

// cpuTime is the process's CPU time in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
