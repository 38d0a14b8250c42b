package fsm_test

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

var snapshotRecords = flag.Int("snapshot-records", 100_000, "records in the state of BenchmarkSnapshot")

// snapshotMachine is a state machine holding n access tokens, as a node holds them.
func snapshotMachine(b *testing.B, n int) *fsm.Machine {
	h := newHarness(b)
	h.ok(t0, &fsm.Fence{Version: fsm.Version})
	const per = 256
	for i := 0; i < n; i += per {
		cmds := make([]fsm.Command, 0, per)
		for j := i; j < min(i+per, n); j++ {
			id := fmt.Sprintf("id-%08d", j)
			cmds = append(cmds, with(newIssue(id, "access", time.Hour, 0), func(r *fsm.Record) {
				r.Subject, r.ClientID, r.Scopes, r.Family, r.RLC = fmt.Sprint("user:", j%5000), "app1", []string{"read"}, "fam", "gold"
			}))
		}
		h.batch(t0, cmds...)
	}
	return h.s
}

// accessMachine is a state machine holding n access tokens as an
// application server writes them: a subject, a client id, a title, an IP
// and a user agent, no family and no data.
func accessMachine(b *testing.B, n int) *fsm.Machine { return accessMachineSpread(b, n, 0) }

// accessMachineSpread is accessMachine with the tokens' expiries spread
// evenly over spread after the first's (an hour after their issue).
func accessMachineSpread(b *testing.B, n int, spread time.Duration) *fsm.Machine {
	return accessMachineReqs(b, n, spread, 0)
}

// accessRequests is accessMachine whose last quarter of issues came with
// request ids, which it remembers: a node's state at 1M under sustained
// issues held 241k remembered requests beside 1M records.
func accessRequests(b *testing.B, n int) *fsm.Machine { return accessMachineReqs(b, n, 0, n/4) }

// accessMachineReqs is accessMachineSpread whose last reqs issues carry
// request ids.
func accessMachineReqs(b *testing.B, n int, spread time.Duration, reqs int) *fsm.Machine {
	h := newHarness(b)
	h.ok(t0, &fsm.Fence{Version: fsm.Version})
	const per = 256
	ua := "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126"
	for i := 0; i < n; i += per {
		cmds := make([]fsm.Command, 0, per)
		for j := i; j < min(i+per, n); j++ {
			// Random-looking ids, as the API mints them: not in issue order.
			id := fmt.Sprintf("%016x%06d", uint64(j)*0x9e3779b97f4a7c15, j)
			ttl := time.Hour + time.Duration(float64(spread)*float64(j)/float64(n))
			cmds = append(cmds, with(newIssue(id, "access", ttl, 0), func(r *fsm.Record) {
				r.Subject, r.ClientID, r.Title = fmt.Sprint("user:", j%100_000), "web", "Chrome on Li"
				r.IP, r.UserAgent = fmt.Sprintf("10.%d.%d.%d", j>>16&255, j>>8&255, j&255), ua
			}))
		}
		if i+len(cmds) <= n-reqs {
			h.batch(t0, cmds...)
			continue
		}
		bt := &fsm.Batch{Now: ns(t0), Entries: make([][]byte, len(cmds)), Reqs: make([]string, len(cmds))}
		for j, c := range cmds {
			bt.Entries[j] = encode(b, c)
			if i+j >= n-reqs {
				bt.Reqs[j] = fmt.Sprintf("req-%08d", i+j)
			}
		}
		h.applyRaw(encode(b, bt), len(cmds))
	}
	return h.s
}

// BenchmarkSnapshot measures writing and restoring a snapshot, per record,
// in version 1 of the stream and, under stored/, in version 2 (the records
// as the state stores them); -snapshot-records sets the size of the state.
// access+reqs is access with a remembered request for each of the last
// quarter of its records.
func BenchmarkSnapshot(b *testing.B) {
	n := *snapshotRecords
	for _, shape := range []struct {
		name  string
		build func(*testing.B, int) *fsm.Machine
	}{{"family", snapshotMachine}, {"access", accessMachine}, {"access+reqs", accessRequests}} {
		s := shape.build(b, n)
		snaps := map[string][]byte{}
		for _, stored := range []bool{false, true} {
			write, name := s.WriteSnapshotV1, shape.name+"/"
			if stored {
				write, name = s.WriteSnapshot, name+"stored/"
			}
			if name == "family/" {
				name = "" // the names the figures in BENCHMARKS.md were taken under
			}
			var snap bytes.Buffer
			if err := write(&snap); err != nil {
				b.Fatal(err)
			}
			snaps[name] = snap.Bytes()
			b.Run(strings.TrimSuffix(name+"write", "/"), func(b *testing.B) {
				defer reportCPU(b, n)()
				for b.Loop() {
					if err := write(io.Discard); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
				b.ReportMetric(float64(snap.Len())/float64(n), "bytes/record")
			})
		}
		// Only the restored state on the heap, as on a node that starts.
		s = nil
		runtime.GC()
		for _, name := range []string{"", shape.name + "/", shape.name + "/stored/"} {
			snap, ok := snaps[name]
			if !ok {
				continue
			}
			b.Run(name+"restore", func(b *testing.B) {
				defer reportCPU(b, n)()
				for b.Loop() {
					if err := fsm.New().Restore(bytes.NewReader(snap)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
			})
		}
	}
}

// reportCPU starts counting the process's CPU time; the function it
// returns reports it per record: on a shared machine a steadier figure
// than the elapsed time, which counts the time other processes ran.
func reportCPU(b *testing.B, n int) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N*n), "cpu-ns/record")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHeapPerToken reports the live heap a state of access tokens
// (accessMachine) holds per token, after a collection, and the bytes its
// records take in the arena, outside the collected heap (in their size
// classes, and mapped);
// -snapshot-records sets how many.
func BenchmarkHeapPerToken(b *testing.B) {
	n := *snapshotRecords
	for b.Loop() {
		before := liveHeap()
		s := accessMachine(b, n)
		after := liveHeap()
		recs, mapped := s.ArenaBytes()
		runtime.KeepAlive(s)
		b.ReportMetric(float64(after-before)/float64(n), "heap-bytes/token")
		b.ReportMetric(float64(recs)/float64(n), "arena-bytes/token")
		b.ReportMetric(float64(mapped)/float64(n), "mapped-bytes/token")
	}
}

// BenchmarkHeapPerTokenSpread is BenchmarkHeapPerToken with the tokens'
// expiries spread over a window: an hour (about 280 tokens a second at
// 1M), 7 days (1.65 a second) and 30 days (one every 2.6 s).
func BenchmarkHeapPerTokenSpread(b *testing.B) {
	n := *snapshotRecords
	for _, spread := range []time.Duration{time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour} {
		b.Run(spread.String(), func(b *testing.B) {
			for b.Loop() {
				before := liveHeap()
				s := accessMachineSpread(b, n, spread)
				after := liveHeap()
				recs, _ := s.ArenaBytes()
				runtime.KeepAlive(s)
				b.ReportMetric(float64(after-before)/float64(n), "heap-bytes/token")
				b.ReportMetric(float64(recs)/float64(n), "arena-bytes/token")
			}
		})
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
