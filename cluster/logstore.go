package cluster

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
)

// The Raft log and stable store of a node, by Config.LogStore.
//
// LogStoreWAL is hashicorp/raft-wal: append-only segment files and one
// fsync per append, truncated by deleting whole segments; Consul's log
// store. LogStoreBolt is raft-boltdb/v2: a bbolt B-tree, two fdatasyncs
// and a copy-on-write page rewrite per append (BENCHMARKS.md, "The Raft
// log store"). A new data directory gets the WAL; one that holds a bbolt
// log keeps it, since neither store reads the other's files.
const (
	LogStoreWAL  = "wal"
	LogStoreBolt = "boltdb"
)

const (
	boltFile = "raft.db"
	walDir   = "raft-wal"
)

// logStore is what Raft keeps on disk besides snapshots: its log, and the
// term and vote it must never forget.
type logStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// CheckLogStore validates a Config.LogStore value.
func CheckLogStore(s string) error {
	switch s {
	case "", LogStoreWAL, LogStoreBolt:
		return nil
	}
	return fmt.Errorf("unknown raft log store %q: want %s or %s", s, LogStoreWAL, LogStoreBolt)
}

// walMarker is what a WAL data directory keeps in raft.db, where an
// earlier version looks for its bbolt log: bbolt refuses to open it, so
// such a version, started on this directory after a rollback, fails
// instead of starting on an empty log that forgot its term and vote.
const walMarker = "tokenstore: this data directory's Raft log is in raft-wal/ (hashicorp/raft-wal); this version cannot read it\n"

// openLogStore opens the log store in dataDir: the one the directory
// holds, else want, else the WAL. A directory that holds one store is
// never opened as the other: the node would start on an empty log and
// forget its term and vote.
func openLogStore(dataDir, want string, logger hclog.Logger) (logStore, string, error) {
	if err := CheckLogStore(want); err != nil {
		return nil, "", err
	}
	boltPath, walPath := filepath.Join(dataDir, boltFile), filepath.Join(dataDir, walDir)
	marked, hasBolt, err := boltFileKind(boltPath)
	if err != nil {
		return nil, "", err
	}
	hasWAL, err := exists(walPath)
	if err != nil {
		return nil, "", err
	}
	kind := want
	switch {
	case hasBolt && hasWAL:
		return nil, "", fmt.Errorf("data directory %s holds two raft logs, %s and %s/: keep one", dataDir, boltFile, walDir)
	case hasBolt:
		kind = LogStoreBolt
	case hasWAL || marked:
		kind = LogStoreWAL
	case kind == "":
		kind = LogStoreWAL
	}
	if want != "" && want != kind {
		return nil, "", fmt.Errorf("data directory %s holds a %s raft log; it cannot be opened as %s", dataDir, kind, want)
	}
	if kind == LogStoreBolt {
		st, err := raftboltdb.New(raftboltdb.Options{Path: boltPath})
		if err != nil {
			return nil, "", fmt.Errorf("open raft log %s: %w", boltPath, err)
		}
		return st, kind, nil
	}
	if !marked {
		if err := writeMarker(boltPath); err != nil {
			return nil, "", fmt.Errorf("open raft log %s: %w", walPath, err)
		}
	}
	// The segments are created 0644: the directory keeps others out,
	// whatever mode it had.
	if err := os.MkdirAll(walPath, 0o700); err != nil {
		return nil, "", fmt.Errorf("open raft log %s: %w", walPath, err)
	}
	if err := os.Chmod(walPath, 0o700); err != nil {
		return nil, "", fmt.Errorf("open raft log %s: %w", walPath, err)
	}
	st, err := wal.Open(walPath, wal.WithLogger(logger))
	if err != nil {
		return nil, "", fmt.Errorf("open raft log %s: %w", walPath, err)
	}
	return st, kind, nil
}

// boltFileKind tells whether path is the WAL's marker, or a bbolt log.
func boltFileKind(path string) (marker, bolt bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	buf := make([]byte, len(walMarker))
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, false, err
	}
	if string(buf[:n]) == walMarker {
		return true, false, nil
	}
	return false, true, nil
}

// writeMarker writes the WAL's marker at path, durably: into a temporary
// file, synced, renamed, and the directory synced.
func writeMarker(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(walMarker)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
