package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
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

// openLogStore opens the log store in dataDir: the one the directory
// holds, else want, else the WAL. A directory that holds one store is
// never opened as the other: the node would start on an empty log and
// forget its term and vote.
func openLogStore(dataDir, want string, logger hclog.Logger) (logStore, string, error) {
	if err := CheckLogStore(want); err != nil {
		return nil, "", err
	}
	boltPath, walPath := filepath.Join(dataDir, boltFile), filepath.Join(dataDir, walDir)
	hasBolt, err := exists(boltPath)
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
	case hasWAL:
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
	if err := os.MkdirAll(walPath, 0o700); err != nil {
		return nil, "", fmt.Errorf("open raft log %s: %w", walPath, err)
	}
	meta := &metadb.BoltMetaDB{}
	st, err := wal.Open(walPath, wal.WithLogger(logger), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, "", fmt.Errorf("open raft log %s: %w", walPath, err)
	}
	return &walStore{st, meta}, kind, nil
}

// walStore closes the WAL's metadata file with it: WAL.Close leaves it
// open, and its lock would keep the node from opening the log again in
// this process.
type walStore struct {
	*wal.WAL
	meta *metadb.BoltMetaDB
}

func (s *walStore) Close() error {
	return errors.Join(s.WAL.Close(), s.meta.Close())
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
