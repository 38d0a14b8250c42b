package cluster

import (
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// writeBehind is how much of a snapshot is handed to the disk at a time.
const writeBehind = 8 << 20

// snapshotStore is Raft's file snapshot store, its snapshots written out
// to disk as they are written rather than all at once when they are
// closed. A snapshot of a million tokens is some 200 MB: left to the
// page cache, it is written back in one burst (by the kernel, or by the
// sink's fsync), and every fsync of the Raft log in that time waits
// behind it, stalling writes for a few hundred milliseconds. Here each
// 8 MiB written is handed to the disk at once and the one before is
// waited for, so no more than 16 MiB of it is ever dirty, and its pages
// are dropped from the page cache once on disk (a snapshot is read back
// only by a restore).
//
// The sink's file is opened a second time by its path in the store, the
// layout of Raft's FileSnapshotStore (snapshots/<id>.tmp/state.bin while
// it is written); where that fails, the snapshot is written as before.
type snapshotStore struct {
	*raft.FileSnapshotStore
	dir string
	log hclog.Logger
}

func newSnapshotStore(dataDir string, retain int, log hclog.Logger) (*snapshotStore, error) {
	s, err := raft.NewFileSnapshotStoreWithLogger(dataDir, retain, log)
	if err != nil {
		return nil, err
	}
	return &snapshotStore{FileSnapshotStore: s, dir: filepath.Join(dataDir, "snapshots"), log: log}, nil
}

func (s *snapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.dir, sink.ID()+".tmp", "state.bin"), os.O_WRONLY, 0)
	if err != nil {
		s.log.Warn("snapshot written without write-behind", "id", sink.ID(), "error", err)
		return sink, nil
	}
	return &writeBehindSink{SnapshotSink: sink, f: f, log: s.log}, nil
}

// writeBehindSink counts what goes through the sink and has the disk
// write it behind.
type writeBehindSink struct {
	raft.SnapshotSink
	f       *os.File // nil once write-behind failed: the sink's fsync does it all
	log     hclog.Logger
	written int64 // bytes handed to the sink
	started int64 // bytes handed to the disk
}

var _ io.Writer = (*writeBehindSink)(nil)

func (s *writeBehindSink) Write(p []byte) (int, error) {
	n, err := s.SnapshotSink.Write(p)
	s.written += int64(n)
	// The sink buffers a little of what it was given: a range is
	// started once it is well behind what was written.
	for s.f != nil && s.written-s.started >= 2*writeBehind {
		if werr := writeOut(s.f, s.started, writeBehind); werr != nil {
			// The data is in the file all the same, and the sink's
			// close syncs it: only the smoothing is lost.
			s.log.Warn("snapshot write-behind stopped", "id", s.ID(), "error", werr)
			s.closeFile()
			break
		}
		s.started += writeBehind
	}
	return n, err
}

func (s *writeBehindSink) closeFile() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

func (s *writeBehindSink) Close() error {
	s.closeFile()
	return s.SnapshotSink.Close()
}

func (s *writeBehindSink) Cancel() error {
	s.closeFile()
	return s.SnapshotSink.Cancel()
}
