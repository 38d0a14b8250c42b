package cluster

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// BenchmarkLogStoreAppend appends log entries of a batch's size (14 KB,
// about 64 issues) to each Raft log store as a node opens it, and to bbolt
// with NoFreelistSync and the map freelist (Vault's settings), truncating
// the head as snapshots do. cpu-µs/op is the process's user and system
// time per append, fsyncs included. Run it with a fixed count, e.g.
// -benchtime 3000x.
func BenchmarkLogStoreAppend(b *testing.B) {
	for _, bc := range []struct {
		name string
		open func(dir string) (logStore, error)
	}{
		{"wal", func(dir string) (logStore, error) {
			st, _, err := openLogStore(dir, LogStoreWAL, hclog.NewNullLogger())
			return st, err
		}},
		{"boltdb", func(dir string) (logStore, error) {
			st, _, err := openLogStore(dir, LogStoreBolt, hclog.NewNullLogger())
			return st, err
		}},
		{"boltdb-NoFreelistSync", func(dir string) (logStore, error) {
			return raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFile),
				BoltOptions: &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType}})
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st, err := bc.open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			data := make([]byte, 14<<10)
			var before, after syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			b.ReportAllocs()
			i := uint64(0)
			for b.Loop() {
				i++
				if err := st.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: data}}); err != nil {
					b.Fatal(err)
				}
				if i > 2048 && i%64 == 0 {
					first, err := st.FirstIndex()
					if err != nil {
						b.Fatal(err)
					}
					if err := st.DeleteRange(first, i-1024); err != nil {
						b.Fatal(err)
					}
				}
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
			b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/op")
		})
	}
}
