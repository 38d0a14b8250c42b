package cluster

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

const (
	// writeBehind is how much of a snapshot is handed to the disk at a
	// time.
	writeBehind = 8 << 20
	// sinkBuffered is more than the file sink keeps in its buffer (4 KiB):
	// a range is started once the sink has been handed this much past
	// its end, so that all of it is in the file.
	sinkBuffered = 64 << 10
)

// snapshotStore is Raft's file snapshot store, its snapshots written out
// to disk as they are written rather than all at once when they are
// closed. A snapshot of a million tokens is some 240 MB: left to the
// page cache, it is written back in one burst (by the kernel, or by the
// sink's fsync), and every fsync of the Raft log in that time waits
// behind it, stalling writes for a few hundred milliseconds. Here each
// 8 MiB written is handed to the disk once it is in the file, and the
// 8 MiB before it is waited for, so little more than 16 MiB of it is
// ever dirty; what is on disk is dropped from the page cache (a snapshot
// is read back only by a restore). The sink's close still syncs it all.
//
// The sink's file is opened a second time by its path in the store, the
// layout of Raft's FileSnapshotStore (snapshots/<id>.tmp/state.bin while
// it is written); where that fails, and off Linux, the snapshot is
// written as before.
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
	if err != nil || !writeBehindOn {
		return sink, err
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
	f       *os.File // nil once write-behind is off: the sink's fsync does it all
	log     hclog.Logger
	written int64 // bytes handed to the sink
	started int64 // bytes handed to the disk
}

var _ raft.SnapshotSink = (*writeBehindSink)(nil)

func (s *writeBehindSink) Write(p []byte) (int, error) {
	n, err := s.SnapshotSink.Write(p)
	s.written += int64(n)
	for err == nil && s.f != nil && s.written-s.started >= writeBehind+sinkBuffered {
		if werr := writeOut(s.f, s.started, writeBehind); werr != nil {
			if !writeOutUnsupported(werr) {
				// A write the disk failed: the snapshot is not kept.
				return n, fmt.Errorf("snapshot %s: %w", s.ID(), werr)
			}
			// The file system does not write ranges on their own: the
			// sink's close syncs it all, as without write-behind.
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
