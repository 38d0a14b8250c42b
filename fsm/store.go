package fsm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Store is the replicated token state of one node. Raft drives it through
// RaftFSM; everything else only reads.
type Store struct {
	mu      sync.RWMutex // Apply and Restore write; reads share
	st      *state
	lastNow int64 // latest leader time applied

	applied  atomic.Uint64
	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced on every applied entry
}

// CountKey groups records for the per-kind gauges.
type CountKey struct {
	Kind  string
	State State
}

// New returns an empty store.
func New() *Store {
	return &Store{st: newState(), notify: make(chan struct{})}
}

// RaftFSM returns the raft.FSM view of the store, keeping Apply, Snapshot
// and Restore out of the store's own methods.
func (s *Store) RaftFSM() raft.FSM { return (*raftFSM)(s) }

type raftFSM Store

// Apply applies one log entry. It returns a Result.
func (f *raftFSM) Apply(l *raft.Log) any { return (*Store)(f).Apply(l.Index, l.Data) }

// StoreConfiguration notes a committed membership change, so that the
// applied index covers every entry Raft hands to the state machine and a
// read waiting for a commit index that is a configuration entry finishes.
func (f *raftFSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	(*Store)(f).setApplied(index)
}

// Apply applies an encoded command at log index. Exposed for tests that
// drive the state machine without Raft; in a node only Raft calls it.
func (s *Store) Apply(index uint64, data []byte) Result {
	c, err := decodeEntry(data)
	if errors.Is(err, errUnknownSkippable) {
		s.setApplied(index)
		return Result{}
	}
	if err != nil {
		panic(fmt.Sprintf("fsm: entry at index %d: %v", index, err))
	}
	res := s.applyLocked(c, index)
	s.setApplied(index)
	return res
}

func (s *Store) applyLocked(c applier, index uint64) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := &applyTx{st: s.st, now: s.lastNow, index: index}
	res := c.apply(tx)
	s.lastNow = tx.now
	return res
}

func (s *Store) setApplied(index uint64) {
	s.applied.Store(index)
	s.notifyMu.Lock()
	close(s.notify)
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
}

// AppliedIndex is the log index of the last entry applied here.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// WaitApplied blocks until the store has applied index, or ctx ends.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	for {
		s.notifyMu.Lock()
		ch := s.notify
		s.notifyMu.Unlock()
		if s.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Counts returns the number of records by kind and state (expired records
// not yet collected count as active).
func (s *Store) Counts() map[CountKey]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[CountKey]int64, len(s.st.counts))
	for k, n := range s.st.counts {
		out[k] = n
	}
	return out
}

// ByHash returns the record with the digest h, or nil. Records are shared
// and must not be modified.
func (s *Store) ByHash(h string) *Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.byHash[h]
}

// ByID returns the record with the public id, or nil.
func (s *Store) ByID(id string) *Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.st.getID(id)
}

// ListBySubject returns up to limit records of subject that are active at
// now, in id order, starting after the id "after" (a page cursor), and
// the cursor of the next page ("" at the end). Kind filters when set.
func (s *Store) ListBySubject(subject, kind, after string, limit int, now int64) ([]*Record, string) {
	if limit < 1 {
		return nil, ""
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Record
	next := ""
	// "after\x00" sorts just past "after": the page starts after the cursor.
	from := &Record{Subject: subject}
	if after != "" {
		from.ID = after + "\x00"
	}
	s.st.bySubject.AscendGreaterOrEqual(from, func(r *Record) bool {
		if r.Subject != subject {
			return false
		}
		if r.Status(now) != StatusActive || (kind != "" && r.Kind != kind) {
			return true
		}
		if len(out) == limit {
			next = out[len(out)-1].ID
			return false
		}
		out = append(out, r)
		return true
	})
	return out, next
}

// DueForGC returns the ids of up to limit records whose GC time is at or
// before before, oldest first.
func (s *Store) DueForGC(before int64, limit int) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids []string
	s.st.byGC.Ascend(func(r *Record) bool {
		if r.GCAt() > before || len(ids) == limit {
			return false
		}
		ids = append(ids, r.ID)
		return true
	})
	return ids
}
