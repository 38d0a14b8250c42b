package fsm

import (
	"io"
	"testing"
	"time"
)

// RevokedFamily returns the remembered revocation of family at now
// (Unix nanoseconds), or nil.
func (m *Machine) RevokedFamily(family string, now int64) *RevokedFamily {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.families.revoked(family, now)
}

// WriteSnapshot writes the current state to w as the snapshot stream Raft
// persists.
func (m *Machine) WriteSnapshot(w io.Writer) error {
	snap, err := m.RaftFSM().Snapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	return snap.(*snapshot).write(w)
}

// NewColliding returns a Machine whose hashes of subjects and families,
// and keys of digests, keep one bit, so that nearly every two subjects
// (families, digests) share one: the indexes must answer exactly as they
// do without collisions. A restore keeps the masks.
func NewColliding() *Machine {
	m := New()
	m.colliding = true
	m.st = m.newState()
	return m
}

// SetMaxWriterHold sets how long an apply holds the writer lock before it
// lets readers in, until the test ends.
func SetMaxWriterHold(t testing.TB, d time.Duration) {
	old := maxWriterHold
	maxWriterHold = d
	t.Cleanup(func() { maxWriterHold = old })
}

// GCBucket is the expiry index's bucket of a GC time: DueForGC lists the
// records of an earlier bucket before those of a later one, in no
// particular order within one.
func GCBucket(at int64) int64 { return gcBucketOf(at) }

// ArenaBytes returns the bytes the state's records take in its arena
// (their size classes) and the bytes the arena has mapped.
func (m *Machine) ArenaBytes() (records, mapped int64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.ar.bytesInUse()
}

// TakeSnapshot takes a snapshot as Raft does: write streams it (as
// Persist does) and release releases it.
func (m *Machine) TakeSnapshot() (write func(io.Writer) error, release func(), err error) {
	snap, err := m.RaftFSM().Snapshot()
	if err != nil {
		return nil, nil, err
	}
	return snap.(*snapshot).write, snap.Release, nil
}

// ArenaPending returns how many records the arena keeps freed for an
// open snapshot.
func (m *Machine) ArenaPending() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.st.ar.pending)
}

// CorruptRecord overwrites the size in the header of the record with id,
// as a stray write into the arena would.
func (m *Machine) CorruptRecord(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.st.storedID(id)
	if h == noHandle {
		return false
	}
	b := m.st.ar.bytesAt(h, 4)
	b[0], b[1], b[2], b[3] = 0xff, 0xff, 0xff, 0x7f
	return true
}

// ErrMidEntry is what Snapshot and Restore answer while an entry applies.
var ErrMidEntry = errMidEntry

// WriteSnapshotV1 writes the state as WriteSnapshot does, but in version
// 1 of the stream whatever the log's version.
func (m *Machine) WriteSnapshotV1(w io.Writer) error {
	snap, err := m.RaftFSM().Snapshot()
	if err != nil {
		return err
	}
	defer snap.Release()
	snap.(*snapshot).stored = false
	return snap.(*snapshot).write(w)
}
