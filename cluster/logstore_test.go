package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
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

// TestWALDirectoryRefusesAnEarlierVersion: an earlier version opens
// raft.db as its bbolt log whatever else the directory holds; in a WAL
// directory that file is a marker bbolt refuses, so a rolled-back node
// fails to start instead of starting on an empty log.
func TestWALDirectoryRefusesAnEarlierVersion(t *testing.T) {
	dir := t.TempDir()
	st, _, err := openLogStore(dir, "", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	b, err := os.ReadFile(filepath.Join(dir, boltFile))
	if err != nil || string(b) != walMarker {
		t.Fatalf("raft.db of a WAL directory: %q, %v; want the marker", b, err)
	}
	if old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFile),
		BoltOptions: &bbolt.Options{Timeout: time.Second}}); err == nil {
		old.Close()
		t.Fatal("bbolt opened the WAL's marker as a log")
	}
	if fi, err := os.Stat(filepath.Join(dir, walDir)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the WAL directory: %v, %v; want mode 0700", fi, err)
	}
}

// TestWALKeepsItsLogAfterATailTruncation: a follower drops the end of its
// log that a new leader overwrites; the log it keeps must read back after
// a restart, and Raft must start on it.
func TestWALKeepsItsLogAfterATailTruncation(t *testing.T) {
	dir := t.TempDir()
	st, _, err := openLogStore(dir, LogStoreWAL, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	logs := func(from, to, term uint64) []*raft.Log {
		var l []*raft.Log
		for i := from; i <= to; i++ {
			l = append(l, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte{byte(i)}})
		}
		return l
	}
	if err := st.StoreLogs(logs(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	if err := st.StoreLogs(logs(8, 12, 2)); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, _, err = openLogStore(dir, "", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := uint64(1); i <= 12; i++ {
		var l raft.Log
		want := uint64(1)
		if i >= 8 {
			want = 2
		}
		if err := st.GetLog(i, &l); err != nil || l.Term != want || l.Data[0] != byte(i) {
			t.Fatalf("entry %d after the restart: %+v, %v; want term %d", i, l, err, want)
		}
	}
	if err := st.StoreLogs(logs(13, 13, 2)); err != nil {
		t.Fatalf("append after the restart: %v", err)
	}
}
