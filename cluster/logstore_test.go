package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestLogStoreByDataDir: a new data directory gets the WAL, one that holds
// a store reopens it with its entries, term and vote, and is never opened
// as the other store.
func TestLogStoreByDataDir(t *testing.T) {
	for _, first := range []string{"", LogStoreWAL, LogStoreBolt} {
		t.Run("first="+first, func(t *testing.T) {
			dir := t.TempDir()
			st, kind, err := openLogStore(dir, first, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			want := first
			if want == "" {
				want = LogStoreWAL
			}
			if kind != want {
				t.Fatalf("a new directory opened as %q, want %q", kind, want)
			}
			if err := st.StoreLogs([]*raft.Log{{Index: 1, Term: 3, Data: []byte("a")}, {Index: 2, Term: 3, Data: []byte("b")}}); err != nil {
				t.Fatal(err)
			}
			if err := st.SetUint64([]byte("CurrentTerm"), 3); err != nil {
				t.Fatal(err)
			}
			st.Close()

			other := LogStoreBolt
			if kind == LogStoreBolt {
				other = LogStoreWAL
			}
			if _, _, err := openLogStore(dir, other, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "cannot be opened as "+other) {
				t.Fatalf("a %s directory opened as %s: err %v", kind, other, err)
			}
			for _, again := range []string{"", kind} {
				st, k, err := openLogStore(dir, again, hclog.NewNullLogger())
				if err != nil {
					t.Fatal(err)
				}
				if k != kind {
					t.Fatalf("reopened with %q as %q, want %q", again, k, kind)
				}
				var l raft.Log
				if err := st.GetLog(2, &l); err != nil || string(l.Data) != "b" || l.Term != 3 {
					t.Fatalf("entry 2 after reopening: %+v, %v", l, err)
				}
				if last, err := st.LastIndex(); err != nil || last != 2 {
					t.Fatalf("last index %d, %v; want 2", last, err)
				}
				if term, err := st.GetUint64([]byte("CurrentTerm")); err != nil || term != 3 {
					t.Fatalf("term %d, %v; want 3", term, err)
				}
				st.Close()
			}
		})
	}
}

func TestLogStoreRefusesTwoLogsAndUnknownNames(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, boltFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, walDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := openLogStore(dir, "", hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "two raft logs") {
		t.Fatalf("a directory with both logs: err %v", err)
	}
	if _, _, err := openLogStore(t.TempDir(), "leveldb", hclog.NewNullLogger()); err == nil {
		t.Fatal("an unknown log store was opened")
	}
}
