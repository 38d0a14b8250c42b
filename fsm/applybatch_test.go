package fsm_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/fsm"
)

// replayLog is a log as a restarted node replays it: batches of issues
// and revocations, with a configuration change, an entry that does not
// decode, a batch with one, an ignorable unknown type and, when halt is
// set, an unknown type that halts the machine, and entries after it.
func replayLog(t *testing.T, halt bool) []*raft.Log {
	var logs []*raft.Log
	add := func(typ raft.LogType, data []byte) {
		logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: typ, Data: data})
	}
	at := t2031
	for i := 0; i < 40; i++ {
		at = at.Add(time.Second)
		var cmds []fsm.Command
		for j := 0; j < 5; j++ {
			cmds = append(cmds, with(newIssue(fmt.Sprintf("t-%02d-%d", i, j), "access", time.Hour, 0), func(r *fsm.Record) {
				r.Subject = fmt.Sprint("user:", j)
			}))
		}
		if i > 0 {
			cmds = append(cmds, &fsm.Revoke{ID: fmt.Sprintf("t-%02d-0", i-1), Reason: "replaced"})
		}
		add(raft.LogCommand, batchEntry(t, at, cmds...))
		switch i {
		case 5:
			add(raft.LogConfiguration, nil)
		case 10:
			add(raft.LogCommand, []byte{byte(fsm.TypeIssue), 0xc1}) // does not decode
		case 15:
			add(raft.LogCommand, encode(t, &fsm.Batch{Now: ns(at), Entries: [][]byte{{byte(fsm.TypeIssue), 0xc1},
				encode(t, newIssue(fmt.Sprintf("b-%d", i), "access", time.Hour, 0))}}))
		case 20:
			add(raft.LogCommand, []byte{byte(fsm.IgnoreUnknown) | 0x55, 0x80})
		case 30:
			if halt {
				add(raft.LogCommand, []byte{0x7f, 0x80})
			}
		}
	}
	return logs
}

// TestApplyBatchAppliesAsApply: Raft's batches of committed entries, of
// any size, leave the machine as the same entries applied one by one, and
// answer each entry as Apply does.
func TestApplyBatchAppliesAsApply(t *testing.T) {
	for _, halt := range []bool{false, true} {
		logs := replayLog(t, halt)
		one := fsm.New()
		var want []any
		for _, l := range logs {
			switch l.Type {
			case raft.LogCommand:
				want = append(want, one.RaftFSM().Apply(l))
			case raft.LogConfiguration:
				one.RaftFSM().(raft.ConfigurationStore).StoreConfiguration(l.Index, raft.Configuration{})
				want = append(want, nil)
			}
		}
		for _, size := range []int{1, 2, 7, 64} {
			t.Run(fmt.Sprintf("halt=%v/batches of %d", halt, size), func(t *testing.T) {
				m := fsm.New()
				bf, ok := m.RaftFSM().(raft.BatchingFSM)
				if !ok {
					t.Fatal("the state machine is not a raft.BatchingFSM")
				}
				var got []any
				for i := 0; i < len(logs); i += size {
					got = append(got, bf.ApplyBatch(logs[i:min(i+size, len(logs))])...)
				}
				if len(got) != len(want) {
					t.Fatalf("%d responses, want %d", len(got), len(want))
				}
				for i := range want {
					if !reflect.DeepEqual(got[i], want[i]) {
						t.Errorf("entry %d answered %+v, one by one %+v", logs[i].Index, got[i], want[i])
					}
				}
				if m.AppliedIndex() != one.AppliedIndex() {
					t.Errorf("applied index %d, one by one %d", m.AppliedIndex(), one.AppliedIndex())
				}
				gh, gHalted := m.Halted()
				wh, wHalted := one.Halted()
				if gHalted != halt || gh != wh || wHalted != halt {
					t.Errorf("halted %v at %+v, one by one %v at %+v", gHalted, gh, wHalted, wh)
				}
				for _, r := range fsm.RejectReasons {
					if m.Rejected(r) != one.Rejected(r) {
						t.Errorf("Rejected(%s) = %d, one by one %d", r, m.Rejected(r), one.Rejected(r))
					}
				}
				countsEqual(t, "ApplyBatch", m.Counts(), one.Counts())
				for i := 0; i < 40; i++ {
					for j := 0; j < 5; j++ {
						id := fmt.Sprintf("t-%02d-%d", i, j)
						if g, w := m.ByID(id), one.ByID(id); !reflect.DeepEqual(g, w) {
							t.Fatalf("record %s: %+v, one by one %+v", id, g, w)
						}
					}
				}
				if !halt {
					if g, w := snapshotBytes(t, m), snapshotBytes(t, one); string(g) != string(w) {
						t.Errorf("snapshot of %d bytes, one by one %d", len(g), len(w))
					}
				}
			})
		}
	}
}

// BenchmarkReplay applies a log of -snapshot-records access tokens issued
// in batches of 22 (what a node's log holds under the bench's issues) to
// a new machine: one entry at a time through Apply, and in Raft's batches
// of 64 entries through ApplyBatch, as a restarted node replays its log.
func BenchmarkReplay(b *testing.B) {
	n := *snapshotRecords
	ua := "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126"
	var logs []*raft.Log
	const per = 22
	for i := 0; i < n; i += per {
		cmds := make([]fsm.Command, 0, per)
		for j := i; j < min(i+per, n); j++ {
			id := fmt.Sprintf("%016x%06d", uint64(j)*0x9e3779b97f4a7c15, j)
			cmds = append(cmds, with(newIssue(id, "access", time.Hour, 0), func(r *fsm.Record) {
				r.Subject, r.ClientID, r.Title = fmt.Sprint("user:", j%100_000), "web", "Chrome on Li"
				r.IP, r.UserAgent = fmt.Sprintf("10.%d.%d.%d", j>>16&255, j>>8&255, j&255), ua
			}))
		}
		logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: batchEntry(b, t2031, cmds...)})
	}
	for _, mode := range []string{"apply", "applybatch"} {
		b.Run(mode, func(b *testing.B) {
			defer reportCPU(b, n)()
			for b.Loop() {
				b.StopTimer()
				m := fsm.New()
				f := m.RaftFSM()
				b.StartTimer()
				if mode == "apply" {
					for _, l := range logs {
						f.Apply(l)
					}
				} else {
					bf := f.(raft.BatchingFSM)
					for i := 0; i < len(logs); i += 64 {
						bf.ApplyBatch(logs[i:min(i+64, len(logs))])
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}

// What Raft keeps of a response after its proposer took the Result holds
// no record: the leader's log cache keeps the responses of its recent
// entries.
func TestResponseTakenOnce(t *testing.T) {
	m := fsm.New()
	data, err := fsm.Encode(&fsm.Issue{Record: fsm.Record{ID: "a", Hash: strings.Repeat("h", 32), Kind: "access"}})
	if err != nil {
		t.Fatal(err)
	}
	resp := m.RaftFSM().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
	r, ok := fsm.TakeResult(resp)
	if !ok || r.Err != nil || r.Record == nil || r.Record.ID != "a" {
		t.Fatalf("first take: %+v, %v; want the issued record", r, ok)
	}
	if again, ok := fsm.TakeResult(resp); !ok || !reflect.DeepEqual(again, fsm.Result{}) {
		t.Fatalf("second take: %+v, %v; want an empty Result", again, ok)
	}
	if _, ok := fsm.TakeResult(fsm.Result{}); ok {
		t.Fatal("a value that is not a response was taken as one")
	}
}
