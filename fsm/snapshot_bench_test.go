package fsm_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// snapshotMachine is a state machine holding n access tokens, as a node holds them.
func snapshotMachine(b *testing.B, n int) *fsm.Machine {
	h := newHarness(b)
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

// BenchmarkSnapshot measures writing and restoring a snapshot, per record.
func BenchmarkSnapshot(b *testing.B) {
	const n = 100_000
	s := snapshotMachine(b, n)
	var snap bytes.Buffer
	if err := s.WriteSnapshot(&snap); err != nil {
		b.Fatal(err)
	}
	b.Run("write", func(b *testing.B) {
		for b.Loop() {
			if err := s.WriteSnapshot(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
	})
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			if err := fsm.New().Restore(bytes.NewReader(snap.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
	})
}
