// Package fsm is the deterministic state machine behind the Raft log: token
// records, their indexes, the commands that change them and the snapshots
// that carry them.
//
// It never reads the clock. Every log entry carries the leader's time, and
// expiry, consume and garbage collection decide by that time alone, so every
// replica that applies the same log ends in the same state.
package fsm

import (
	"time"
)

// State is the lifecycle state of a record.
type State uint8

// Record states. An invalidated record (consumed or revoked) is a
// tombstone: it keeps only what is needed to explain itself and to detect
// reuse, until its original expiry.
const (
	Active   State = 0
	Consumed State = 1
	Revoked  State = 2
)

// Status is what a record means to a reader at a given time.
type Status string

// Statuses as shown on the wire.
const (
	StatusActive   Status = "active"
	StatusExpired  Status = "expired"
	StatusConsumed Status = "consumed"
	StatusRevoked  Status = "revoked"
)

// NeverExpiringTombstone is how long the tombstone of a token without
// expiry is kept after it was invalidated.
const NeverExpiringTombstone = 30 * 24 * time.Hour

// Record is one token. Times are Unix nanoseconds of leader time; 0 means
// unset (for ExpiresAt: never). Hash is the raw digest of the secret; the
// secret itself is never here.
//
// The state keeps records compact (stored); Machine hands out a Record
// per read, whose strings, scopes, data and rotation are shared with the
// state and must not be modified.
type Record struct {
	ID            string   `codec:"i"`
	Hash          string   `codec:"h"`
	Kind          string   `codec:"k"`
	Subject       string   `codec:"s,omitempty"`
	ClientID      string   `codec:"c,omitempty"`
	Scopes        []string `codec:"sc,omitempty"`
	Family        string   `codec:"f,omitempty"`
	Data          []byte   `codec:"d,omitempty"`
	RLC           string   `codec:"r,omitempty"`
	MaxUses       int64    `codec:"mu,omitempty"`
	UsesLeft      int64    `codec:"ul,omitempty"`
	CreatedAt     int64    `codec:"ca"`
	ExpiresAt     int64    `codec:"ea,omitempty"`
	LastUsedAt    int64    `codec:"lu,omitempty"`
	IP            string   `codec:"ip,omitempty"`
	UserAgent     string   `codec:"ua,omitempty"`
	Title         string   `codec:"t,omitempty"`
	Generator     string   `codec:"g,omitempty"`
	State         State    `codec:"st,omitempty"`
	InvalidatedAt int64    `codec:"ia,omitempty"`
	Reason        string   `codec:"re,omitempty"`
	CreateIndex   uint64   `codec:"ci"`
	ModifyIndex   uint64   `codec:"mi"`

	// DetectReuse marks a single-use token whose second presentation is
	// an attack (an authorization code, a refresh token): it revokes the
	// whole family. Its tombstone is held while the family can be used.
	DetectReuse bool `codec:"dr,omitempty"`
	// HoldUntil keeps a tombstone past its expiry, while its family has
	// tokens that can still be used; 0 for none.
	HoldUntil int64 `codec:"hu,omitempty"`
	// Rotated is set on the tombstone of a rotated refresh token.
	Rotated *Rotation `codec:"ro,omitempty"`
}

// Rotation is what a rotated refresh token's tombstone remembers: the
// tokens that replaced it and, within the grace period, their secrets
// sealed under a key that only the rotated token's secret yields, so a
// retried rotation can be answered the same without a secret on disk.
type Rotation struct {
	Successor  string `codec:"s"`
	Access     string `codec:"a,omitempty"`
	GraceUntil int64  `codec:"g,omitempty"`
	Sealed     []byte `codec:"x,omitempty"`
}

// Status returns the record's status at time now (Unix nanoseconds). An
// invalidated record answers its invalidation before its expiry.
func (r *Record) Status(now int64) Status { return statusOf(r.State, r.ExpiresAt, now) }

func statusOf(st State, expiresAt, now int64) Status {
	switch {
	case st == Consumed:
		return StatusConsumed
	case st == Revoked:
		return StatusRevoked
	case expiresAt != 0 && now >= expiresAt:
		return StatusExpired
	}
	return StatusActive
}

// GCAt is when the record may be garbage collected: its expiry, or for the
// tombstone of a never-expiring token, NeverExpiringTombstone after it was
// invalidated; later if the tombstone is held. 0 means never.
func (r *Record) GCAt() int64 {
	at := r.ExpiresAt
	if at == 0 && r.State != Active {
		at = r.InvalidatedAt + int64(NeverExpiringTombstone)
	}
	return max(at, r.HoldUntil)
}

// reuseTombstone tells whether r is the tombstone of a consumed token whose
// reuse must revoke its family.
func (r *Record) reuseTombstone() bool {
	return r.State == Consumed && r.DetectReuse && r.Family != ""
}

// holdsSealed tells whether r is a rotated tombstone that still holds its
// sealed successor.
func (r *Record) holdsSealed() bool { return r.Rotated != nil && len(r.Rotated.Sealed) > 0 }

// invalidate turns a copy of r into a tombstone. A consumed token keeps
// its data until its own expiry, so that whoever presents it again can be
// told what it was issued for (an OAuth server rebuilds its stored request
// from it); a revoked one keeps none.
func (r *Record) invalidate(state State, now int64, reason string, index uint64) *Record {
	t := *r
	t.State = state
	t.InvalidatedAt = now
	t.Reason = reason
	if state != Consumed {
		t.Data = nil
	}
	t.UsesLeft = 0
	t.ModifyIndex = index
	return &t
}

// held returns a copy of the tombstone r kept past its expiry for its
// family, until until. It keeps only what explains it and detects reuse:
// its ids, family, kind and times, never its data.
func (r *Record) held(until int64, index uint64) *Record {
	t := *r
	t.HoldUntil, t.ModifyIndex = until, index
	t.Data, t.Scopes, t.IP, t.UserAgent, t.Title, t.RLC, t.Generator = nil, nil, "", "", "", "", ""
	if t.Rotated != nil {
		ro := *t.Rotated
		ro.Sealed = nil
		t.Rotated = &ro
	}
	return &t
}
