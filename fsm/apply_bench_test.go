package fsm_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomID is an id shaped like the API's: 22 random base62 characters.
func randomID(rng *rand.Rand) string {
	b := make([]byte, 22)
	for i := range b {
		b[i] = base62[rng.IntN(len(base62))]
	}
	return string(b)
}

// sessionIssue is what an application server issues: an access token with
// a subject, a client, a title, an IP and a user agent, in a request of its
// own (request id set).
func sessionIssue(rng *rand.Rand, i int) *fsm.Issue {
	id := randomID(rng)
	return with(newIssue(id, "access", time.Hour, 0), func(r *fsm.Record) {
		r.Subject, r.ClientID, r.Title = fmt.Sprint("user:", i%50_000), "app1", "Firefox on X"
		r.IP, r.UserAgent = "192.0.2.10", "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"
	})
}

// benchEntries encodes cmds as log entries of per commands each, with a
// request id per command, as a leader's coalescer writes them.
func benchEntries(b *testing.B, now time.Time, per int, cmds []fsm.Command, reqPrefix string) [][]byte {
	var out [][]byte
	for i := 0; i < len(cmds); i += per {
		part := cmds[i:min(i+per, len(cmds))]
		bt := &fsm.Batch{Now: ns(now), Entries: make([][]byte, len(part)), Reqs: make([]string, len(part))}
		for j, c := range part {
			bt.Entries[j] = encode(b, c)
			bt.Reqs[j] = fmt.Sprintf("%s%x", reqPrefix, i+j)
		}
		out = append(out, encode(b, bt))
	}
	return out
}

// codeIssue is what the bench's issue workload sends: an authorization
// code, single use and with reuse detection, that starts a family of its
// own (its family is its id), for one shared subject.
func codeIssue(rng *rand.Rand, _ int) *fsm.Issue {
	return with(newIssue(randomID(rng), "oauth2_code", 4*time.Hour, 1), func(r *fsm.Record) {
		r.Subject, r.DetectReuse = "bench", true
	})
}

var applyLive = flag.Int("apply-live", 1600*64, "live tokens in the state of BenchmarkApply")

// BenchmarkApply measures applying client writes, as every replica does,
// on a state that already holds live tokens: per command, including the
// decode of its log entry. Guards the state machine's per-command cost.
// "batch" is client batches of a consume and an issue (an exchange), per
// op. "code" and "code-consume" are issue and consume of authorization
// codes (codeIssue), on a state that holds live codes. -apply-live sets
// how many live tokens the state holds first.
func BenchmarkApply(b *testing.B) {
	const per = 64
	live := *applyLive
	for _, op := range []string{"issue", "consume", "batch", "code", "code-consume"} {
		b.Run(op, func(b *testing.B) {
			mint := sessionIssue
			if strings.HasPrefix(op, "code") {
				mint = codeIssue
			}
			rng := rand.New(rand.NewPCG(1, 2))
			h := newHarness(b)
			// Filled in parts, so that no more than a part's commands and
			// entries are held at once.
			for at := 0; at < live; at += 64 * per {
				pre := make([]fsm.Command, min(64*per, live-at))
				for i := range pre {
					pre[i] = mint(rng, at+i)
				}
				for i, e := range benchEntries(b, t0, per, pre, fmt.Sprintf("pre%x-", at)) {
					h.applyRaw(e, min(per, len(pre)-i*per))
				}
			}
			// Each round applies fresh commands: issues of new tokens, or
			// consumes of tokens issued for it (untimed).
			const round = 64 * per
			var entries [][]byte
			n := 0
			// The process's CPU time while the timer runs: under a busy
			// machine, wall time counts the waits for a core too.
			var cpu time.Duration
			cpuFrom := cpuTime()
			for b.Loop() {
				if n%round == 0 {
					b.StopTimer()
					cpu += cpuTime() - cpuFrom
					cmds := make([]fsm.Command, round)
					for i := range cmds {
						cmds[i] = mint(rng, n+i)
					}
					if op != "issue" && op != "code" {
						for _, e := range benchEntries(b, t0.Add(time.Second), per, cmds, fmt.Sprintf("i%d-", n)) {
							h.applyRaw(e, per)
						}
						for i, c := range cmds {
							cmds[i] = &fsm.Consume{Hash: c.(*fsm.Issue).Record.Hash}
						}
					}
					if op == "batch" {
						// Two ops a batch: per log entry, half as many batches.
						for i := 0; i < round; i += 2 {
							cb, err := fsm.NewClientBatch(cmds[i], sessionIssue(rng, n+round+i))
							if err != nil {
								b.Fatal(err)
							}
							cmds[i/2] = cb
						}
						cmds = cmds[:round/2]
						entries = benchEntries(b, t0.Add(time.Second), per/2, cmds, fmt.Sprintf("r%d-", n))
						cpuFrom = cpuTime()
						b.StartTimer()
						h.index++
						h.s.Apply(h.index, entries[(n%round)/per])
						n += per
						continue
					}
					entries = benchEntries(b, t0.Add(time.Second), per, cmds, fmt.Sprintf("r%d-", n))
					cpuFrom = cpuTime()
					b.StartTimer()
				}
				h.index++
				h.s.Apply(h.index, entries[(n%round)/per])
				n += per
			}
			cpu += cpuTime() - cpuFrom
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/cmd")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/cmd")
		})
	}
}

// BenchmarkHeapPerCode reports the live Go heap an authorization code
// (codeIssue) costs the state, its records being in the arena outside
// the heap: -apply-live codes, in entries of 64 with a request id each.
func BenchmarkHeapPerCode(b *testing.B) {
	n := *applyLive
	for b.Loop() {
		rng := rand.New(rand.NewPCG(1, 2))
		before := liveHeap()
		h := newHarness(b)
		for at := 0; at < n; at += 64 * 64 {
			pre := make([]fsm.Command, min(64*64, n-at))
			for i := range pre {
				pre[i] = codeIssue(rng, at+i)
			}
			for i, e := range benchEntries(b, t0, 64, pre, fmt.Sprintf("pre%x-", at)) {
				h.applyRaw(e, min(64, len(pre)-i*64))
			}
		}
		after := liveHeap()
		runtime.KeepAlive(h)
		b.ReportMetric(float64(after-before)/float64(n), "heap-bytes/code")
	}
}
