package fsm

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Business outcomes of commands. They are returned in Result.Err, never as
// Raft errors: the log entry applied, the answer is "no".
var (
	// ErrNotFound means no record has that hash or id.
	ErrNotFound = errors.New("token not found")
	// ErrExists means a record with that hash (or id) already exists.
	ErrExists = errors.New("token exists")
	// ErrExpired means the record's expiry has passed.
	ErrExpired = errors.New("token expired")
	// ErrConsumed means the record's last use was consumed.
	ErrConsumed = errors.New("token consumed")
	// ErrRevoked means the record was revoked.
	ErrRevoked = errors.New("token revoked")
	// ErrKindMismatch means consume named a kind the token is not.
	ErrKindMismatch = errors.New("token kind mismatch")
	// ErrClientMismatch means consume named a client the token was not
	// issued to.
	ErrClientMismatch = errors.New("token client mismatch")
	// ErrReused means a consumed authorization code or refresh token was
	// presented again; its family has been revoked.
	ErrReused = errors.New("token reused")
	// ErrFamilyRevoked refuses an issue or rotation into a family that was
	// revoked for good; Result.Family says when and why.
	ErrFamilyRevoked = errors.New("family revoked")
	// ErrScope means a rotation asked for scopes the grant does not have.
	ErrScope = errors.New("scope not granted")
	// ErrBadEntry means the log entry (or batch entry) does not decode, or
	// is a batch inside a batch; it changed nothing, on every replica.
	ErrBadEntry = errors.New("log entry cannot be applied")
	// ErrHalted means this replica met an entry of a type it does not know
	// and stopped applying there; it needs a newer version (Machine.Halted).
	ErrHalted = errors.New("state machine halted")
)

// StatusErr maps a non-active status to its error (nil for active).
func StatusErr(s Status) error {
	switch s {
	case StatusExpired:
		return ErrExpired
	case StatusConsumed:
		return ErrConsumed
	case StatusRevoked:
		return ErrRevoked
	}
	return nil
}

// Result is the response value of one applied command.
type Result struct {
	// Record is the affected record as the caller should see it, or for a
	// failure that concerns a known token (expired, consumed, revoked), its
	// tombstone, so the caller can explain when and why.
	Record *Record
	// Count is the number of records affected by a bulk command, or
	// revoked by a detected reuse.
	Count int
	// Access is the access token a rotation issued with the successor.
	Access *Record
	// Sealed is set when a retried rotation is answered within its grace
	// period: the successor's (and access token's) secrets, sealed.
	Sealed []byte
	// Family is the revocation an ErrFamilyRevoked answer is about.
	Family *RevokedFamily
	// Err is the business outcome; nil on success.
	Err error
	// Batch holds the results of a Batch's entries, in order.
	Batch []Result
	// Ops holds the results of a ClientBatch's ops, in order, when every
	// op succeeded.
	Ops []Result
	// Op is the index of the op of a ClientBatch that failed (Err is its
	// error, the rest its result), -1 when the batch as a whole was
	// refused.
	Op int
}

// applyTx is the context of one log entry being applied.
type applyTx struct {
	st    *state
	now   int64  // leader time of the entry
	index uint64 // log index of the entry
	// journal, when set, notes what puts replace: a ClientBatch's ops
	// are undone when one fails.
	journal *journal
	// lock is the writer's lock, which pause may let go of for a moment;
	// held is when it was last taken.
	lock *sync.RWMutex
	held time.Time
}

// maxWriterHold is how long an entry's apply holds the writer lock before
// it lets waiting readers in (pause).
var maxWriterHold = 250 * time.Microsecond

// pause lets the readers waiting for the lock in, if the entry has held it
// for maxWriterHold. Apply calls it where the state is whole: between the
// commands of a batch and between the tokens of a GC or last-use command,
// never inside one command otherwise (nor inside a ClientBatch, whose ops
// are all or nothing). A reader can so see a prefix of an entry's
// commands, as if they had been entries of their own; AppliedIndex moves
// once the whole entry is applied.
func (tx *applyTx) pause() {
	if tx.lock == nil || tx.journal != nil {
		return
	}
	if now := time.Now(); now.Sub(tx.held) >= maxWriterHold {
		tx.lock.Unlock()
		tx.lock.Lock()
		tx.held = time.Now()
	}
}

func (tx *applyTx) byHash(h string) *Record { return tx.st.getHash(h) }

func (tx *applyTx) byID(id string) *Record {
	if id == "" {
		return nil
	}
	return tx.st.getID(id)
}

func (tx *applyTx) put(old, r *Record) {
	if tx.journal != nil {
		tx.journal.puts = append(tx.journal.puts, undoPut{id: r.ID, prev: tx.st.storedID(r.ID)})
	}
	tx.st.put(old, r)
}

func (c *Fence) apply(tx *applyTx) Result {
	tx.st.logVersion = max(tx.st.logVersion, c.Version)
	return Result{}
}

// apply is never reached: Machine.Apply applies a batch itself, entry by
// entry, and a batch inside a batch is refused as a bad entry.
func (b *Batch) apply(*applyTx) Result { return Result{Err: ErrBadEntry} }

// putNew is put of a record whose id may be taken (false: nothing changed).
func (tx *applyTx) putNew(r *Record) bool {
	if !tx.st.putNew(r) {
		return false
	}
	if tx.journal != nil {
		tx.journal.puts = append(tx.journal.puts, undoPut{id: r.ID, prev: noHandle})
	}
	return true
}

func (c *Issue) apply(tx *applyTx) Result {
	if tx.st.byHash.get(c.Record.Hash) != noHandle {
		return Result{Err: ErrExists}
	}
	// The command is its own, decoded for this apply: its record is
	// stored as it is, not copied.
	r := &c.Record
	r.CreatedAt = tx.now
	if c.TTL > 0 {
		r.ExpiresAt = tx.now + c.TTL
	}
	r.UsesLeft = r.MaxUses
	r.State = Active
	r.InvalidatedAt, r.Reason, r.LastUsedAt, r.HoldUntil, r.Rotated = 0, "", 0, 0, nil
	if r.DetectReuse && r.Family == "" {
		r.Family = r.ID // a grant starts a family of its own
	}
	// An id already stored is refused first (storedID, not tx.byID: an
	// empty id is taken like any other once used); putNew looks for it as
	// it stores the record.
	if f := tx.st.families.revoked(r.Family, tx.now); f != nil {
		if tx.st.storedID(r.ID) != noHandle {
			return Result{Err: ErrExists}
		}
		// The refused token, as it would have been, names what the
		// answer is about; nothing is stored.
		r.Data, r.State, r.InvalidatedAt, r.Reason = nil, Revoked, f.At, f.Reason
		return Result{Record: r, Family: f, Err: ErrFamilyRevoked}
	}
	r.CreateIndex, r.ModifyIndex = tx.index, tx.index
	if !tx.putNew(r) {
		return Result{Err: ErrExists}
	}
	return Result{Record: r}
}

func (c *Consume) apply(tx *applyTx) Result {
	r := tx.byHash(c.Hash)
	if r == nil {
		return Result{Err: ErrNotFound}
	}
	if r.reuseTombstone() {
		return reused(tx, r, c.FamilyHold)
	}
	if err := StatusErr(r.Status(tx.now)); err != nil {
		return Result{Record: r, Err: err}
	}
	if c.Kind != "" && c.Kind != r.Kind {
		return Result{Err: ErrKindMismatch}
	}
	if c.ClientID != "" && c.ClientID != r.ClientID {
		return Result{Err: ErrClientMismatch}
	}
	// r is a copy of its own (byHash): it becomes the used record.
	r.LastUsedAt = tx.now
	r.ModifyIndex = tx.index
	if r.MaxUses > 0 {
		r.UsesLeft--
	}
	if r.MaxUses > 0 && r.UsesLeft <= 0 {
		// The caller gets the record, consumed, with its data; the state
		// keeps only the tombstone.
		tomb := r.invalidate(Consumed, tx.now, "consumed", tx.index)
		tx.put(r, tomb)
		r.State, r.InvalidatedAt, r.Reason = tomb.State, tomb.InvalidatedAt, tomb.Reason
	} else {
		tx.put(r, r)
	}
	return Result{Record: r}
}

func (c *Revoke) apply(tx *applyTx) Result {
	r := tx.byHash(c.Hash)
	if r == nil {
		r = tx.byID(c.ID)
	}
	if r == nil {
		return Result{Err: ErrNotFound}
	}
	if r.State != Active {
		return Result{Record: r} // already invalid: revoking again changes nothing
	}
	t := r.invalidate(Revoked, tx.now, c.Reason, tx.index)
	tx.put(r, t)
	return Result{Record: t}
}

func (c *RevokeSubject) apply(tx *applyTx) Result {
	return revokeAll(tx, tx.st.ofSubject(c.Subject), c.Kind, c.Reason)
}

func (c *RevokeFamily) apply(tx *applyTx) Result {
	return revokeFamily(tx, c.Family, c.Reason, c.FamilyHold)
}

// apply revokes the family's active tokens of the kind only: the family is
// not remembered as revoked, and its tombstones stay held for reuse
// detection, since its other tokens can still be used.
func (c *RevokeFamilyKind) apply(tx *applyTx) Result {
	if c.Kind == "" {
		return Result{Err: ErrBadEntry}
	}
	return revokeAll(tx, tx.st.ofFamily(c.Family), c.Kind, c.Reason)
}

// revokeFamily revokes every active token of family and, for hold, keeps
// anything from being issued into it. Nothing of it can be used any more,
// so its tombstones held for reuse detection are released to their own
// expiry.
func revokeFamily(tx *applyTx, family, reason string, hold int64) Result {
	rs := tx.st.ofFamily(family)
	if len(rs) > 0 {
		// A name nothing was issued into is not remembered: the memory of
		// revoked families grows with grants, not with requests.
		tx.st.families.remember(family, tx.now, reason, hold)
	}
	res := revokeAll(tx, rs, "", reason)
	for _, r := range rs {
		if r.HoldUntil != 0 {
			released := *r
			released.HoldUntil, released.ModifyIndex = 0, tx.index
			tx.put(r, &released)
		}
	}
	return res
}

func revokeAll(tx *applyTx, rs []*Record, kind, reason string) Result {
	n := 0
	for _, r := range rs {
		if r.Status(tx.now) != StatusActive || (kind != "" && r.Kind != kind) {
			continue
		}
		tx.put(r, r.invalidate(Revoked, tx.now, reason, tx.index))
		n++
	}
	return Result{Count: n}
}

func (c *Rotate) apply(tx *applyTx) Result {
	r := tx.byHash(c.Hash)
	if r == nil {
		return Result{Err: ErrNotFound}
	}
	var mismatch error
	switch {
	case r.Kind != c.Kind:
		mismatch = ErrKindMismatch
	case c.ClientID != "" && c.ClientID != r.ClientID:
		mismatch = ErrClientMismatch
	}
	if r.State == Consumed {
		// A retry within the grace period gets the same successor, as long
		// as nobody has used that one yet. Anything else presenting a used
		// code or refresh token is reuse, whatever it asked for.
		if ro := r.Rotated; ro != nil && tx.now < ro.GraceUntil && mismatch == nil {
			if next := tx.byID(ro.Successor); next != nil && next.Status(tx.now) == StatusActive {
				return Result{Record: next, Access: tx.byID(ro.Access), Sealed: ro.Sealed}
			}
		}
		if r.reuseTombstone() {
			return reused(tx, r, c.FamilyHold)
		}
	}
	if mismatch != nil {
		return Result{Err: mismatch}
	}
	if err := StatusErr(r.Status(tx.now)); err != nil {
		return Result{Record: r, Err: err}
	}
	family := r.Family
	if family == "" {
		family = r.ID
	}
	if f := tx.st.families.revoked(family, tx.now); f != nil {
		// The presented token, as of its family's revocation.
		t := *r
		t.Data, t.InvalidatedAt, t.Reason = nil, f.At, f.Reason
		return Result{Record: &t, Family: f, Err: ErrFamilyRevoked}
	}
	next := *r
	next.ID, next.Hash, next.Family, next.Generator = c.Next.ID, c.Next.Hash, family, c.Next.Generator
	next.IP, next.UserAgent = cmp.Or(c.Next.IP, r.IP), cmp.Or(c.Next.UserAgent, r.UserAgent)
	issues := []*Issue{{Record: next, TTL: c.TTL}}
	if c.Access != nil {
		a := c.Access.Record
		if a.Scopes == nil {
			a.Scopes = r.Scopes
		} else if !subset(a.Scopes, r.Scopes) {
			return Result{Err: ErrScope}
		}
		a.Subject, a.ClientID, a.Family, a.RLC, a.Title = r.Subject, r.ClientID, family, r.RLC, r.Title
		a.IP, a.UserAgent = next.IP, next.UserAgent
		issues = append(issues, &Issue{Record: a, TTL: c.Access.TTL})
		if a.ID == next.ID || a.Hash == next.Hash {
			return Result{Err: ErrExists}
		}
	}
	for _, is := range issues {
		if tx.st.byHash.get(is.Record.Hash) != noHandle || tx.st.storedID(is.Record.ID) != noHandle {
			return Result{Err: ErrExists}
		}
	}
	// Nothing can fail from here on.
	tomb := r.invalidate(Consumed, tx.now, "rotated", tx.index)
	tomb.Family = family
	tomb.Rotated = &Rotation{Successor: next.ID}
	if c.Access != nil {
		tomb.Rotated.Access = c.Access.Record.ID
	}
	if c.Grace > 0 {
		tomb.Rotated.GraceUntil, tomb.Rotated.Sealed = tx.now+c.Grace, c.Sealed
	}
	tx.put(r, tomb)
	res := issues[0].apply(tx)
	if len(issues) > 1 {
		res.Access = issues[1].apply(tx).Record
	}
	return res
}

// subset tells whether every scope of a is in b.
func subset(a, b []string) bool {
	for _, s := range a {
		if !slices.Contains(b, s) {
			return false
		}
	}
	return true
}

// reused answers the second presentation of a consumed code or refresh
// token: every active token of its family is revoked, with the reason.
func reused(tx *applyTx, r *Record, hold int64) Result {
	if tx.journal != nil {
		tx.journal.reuse = &reuseHit{rec: r, hold: hold}
	}
	reason := fmt.Sprintf("reuse of consumed %s %s detected", r.Kind, r.ID)
	n := revokeFamily(tx, r.Family, reason, hold).Count
	return Result{Record: tx.byID(r.ID), Count: n, Err: ErrReused}
}

func (c *Expire) apply(tx *applyTx) Result {
	before := min(c.Before, tx.now) // never collect what is not yet due by log time
	n := 0
	for _, id := range c.IDs {
		r := tx.byID(id)
		if r == nil {
			continue
		}
		if gc := r.GCAt(); gc == 0 || gc > before {
			continue
		}
		// A consumed code or refresh token is remembered while its family
		// can be used, so that its reuse is still detected.
		if r.reuseTombstone() {
			if until := tx.st.familyUntil(r.Family); until > before {
				tx.put(r, r.held(until, tx.index))
				continue
			}
		}
		tx.st.delete(r)
		n++
		tx.pause()
	}
	return Result{Count: n}
}

func (c *Touch) apply(tx *applyTx) Result {
	n := 0
	for _, u := range c.Uses {
		r := tx.byHash(u.Hash)
		at := min(u.At, tx.now) // a reader's clock ahead of the log's does not date a use in the future
		if r == nil || r.Status(tx.now) != StatusActive || at <= r.LastUsedAt {
			continue
		}
		used := *r
		used.LastUsedAt, used.ModifyIndex = at, tx.index
		if u.IP != "" {
			used.IP = u.IP
		}
		if u.UserAgent != "" {
			used.UserAgent = u.UserAgent
		}
		tx.put(r, &used)
		n++
		tx.pause()
	}
	return Result{Count: n}
}
