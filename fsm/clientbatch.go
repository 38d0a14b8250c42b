package fsm

import (
	"errors"
	"fmt"
)

// MaxBatchOps bounds the ops of a ClientBatch.
const MaxBatchOps = 16

// ClientBatch is a client's batch of writes (POST /v1/batch): issues,
// consumes, revocations, rotations and family revocations (RevokeFamily,
// RevokeFamilyKind: Version 3), applied in order in one log entry,
// all or nothing. Each op sees the effects of the ops before it. If an op
// fails, nothing of the batch stays and the Result is the failing op's,
// with Op its index; except that a reuse an op detects revokes the
// family as a single consume or rotation would, and that revocation
// stands.
//
// It is not the coalescing Batch: it is a client write like any other,
// riding as one entry of a Batch, under one request id.
type ClientBatch struct {
	Ops [][]byte `codec:"o"` // each an encoded Issue, Consume, Revoke, Rotate, RevokeFamily or RevokeFamilyKind
}

// Type implements Command.
func (*ClientBatch) Type() Type { return TypeClientBatch }

// batchOps are the command types a ClientBatch may hold. Everything they
// change goes through applyTx.put or the revoked families, which the
// journal undoes: a type added here must change nothing else.
//
// A type added here is a change of Version: a replica of an earlier one
// refuses the batch (ErrBadEntry) where this one applies it, so the leader
// proposes such a batch only after the log's fence of the version that
// added the type (opVersion, Downgrade).
var batchOps = map[Type]bool{TypeIssue: true, TypeConsume: true, TypeRevoke: true, TypeRotate: true,
	TypeRevokeFamily: true, TypeRevokeFamilyKind: true}

// opVersion is the Version that let a batch hold an op of type t.
func opVersion(t Type) int {
	if t == TypeRevokeFamily || t == TypeRevokeFamilyKind {
		return 3
	}
	return 1
}

// NewClientBatch encodes ops, each an *Issue, *Consume, *Revoke, *Rotate,
// *RevokeFamily or *RevokeFamilyKind, into one ClientBatch.
func NewClientBatch(ops ...Command) (*ClientBatch, error) {
	c := &ClientBatch{Ops: make([][]byte, len(ops))}
	for i, op := range ops {
		if op == nil || !batchOps[op.Type()] {
			return nil, fmt.Errorf("batch op %d: %T cannot be in a batch", i, op)
		}
		b, err := Encode(op)
		if err != nil {
			return nil, fmt.Errorf("batch op %d: %w", i, err)
		}
		c.Ops[i] = b
	}
	return c, nil
}

// ErrBatchShape is why DecodeOps refuses a batch.
var ErrBatchShape = errors.New("malformed batch")

// DecodeOps returns the ops of c, decoded; an error naming the first
// that does not decode or is of a type a batch cannot hold, or if c
// holds no op or more than MaxBatchOps. The error is an *OpError
// wrapping ErrBatchShape.
func (c *ClientBatch) DecodeOps() ([]Command, error) {
	ops, at, err := c.decodeOps()
	if err != nil {
		return nil, &OpError{Op: at, Err: err}
	}
	out := make([]Command, len(ops))
	for i, op := range ops {
		out[i] = op
	}
	return out, nil
}

// OpError is an error about one op of a batch (Op -1: the batch as a
// whole).
type OpError struct {
	Op  int
	Err error
}

func (e *OpError) Error() string {
	if e.Op < 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("batch op %d: %v", e.Op, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// unknownOp returns the type of the first op of c that this release does
// not know, if any. Such an op is one a later release added to what a
// batch may hold; applying the batch without it, or refusing it, would
// part this replica from those that apply it, so the machine halts on it
// as on an unknown entry (flagged ignorable or not: an op of an all or
// nothing batch cannot be skipped).
func (c *ClientBatch) unknownOp() (Type, bool) {
	for _, e := range c.Ops {
		if len(e) > 0 && registry[Type(e[0])] == nil {
			return Type(e[0]), true
		}
	}
	return 0, false
}

func (c *ClientBatch) decodeOps() ([]applier, int, error) {
	if len(c.Ops) == 0 || len(c.Ops) > MaxBatchOps {
		return nil, -1, fmt.Errorf("%w: %d ops, 1 to %d", ErrBatchShape, len(c.Ops), MaxBatchOps)
	}
	ops := make([]applier, len(c.Ops))
	for i, e := range c.Ops {
		op, err := decodeEntry(e)
		if err != nil {
			return nil, i, fmt.Errorf("%w: %v", ErrBatchShape, err)
		}
		if !batchOps[op.Type()] {
			// A Batch or a ClientBatch inside one among them.
			return nil, i, fmt.Errorf("%w: a command of type %d cannot be in a batch", ErrBatchShape, op.Type())
		}
		ops[i] = op
	}
	return ops, -1, nil
}

func (c *ClientBatch) apply(tx *applyTx) Result {
	ops, at, err := c.decodeOps()
	if err != nil {
		return Result{Err: ErrBadEntry, Op: at}
	}
	j := &journal{families: tx.st.families.clone()}
	tx.journal = j
	tx.st.hold()
	undone := false
	defer func() { tx.journal = nil; tx.st.unhold(undone) }()
	results := make([]Result, len(ops))
	for i, op := range ops {
		res := op.apply(tx)
		if res.Err == nil {
			results[i] = res
			continue
		}
		tx.journal = nil
		tx.st.holding = false // the undo frees what the batch stored
		j.undo(tx.st)
		undone = true
		if j.reuse != nil && errors.Is(res.Err, ErrReused) {
			// The reuse stands as it would alone: its family is revoked
			// in the state as it was before the batch.
			res = reused(tx, j.reuse.rec, j.reuse.hold)
			if res.Record == nil {
				// The token was issued and used in this batch: outside
				// it, it never was, nor was its family. The answer names
				// it as the batch saw it.
				res.Record = j.reuse.rec
			}
		}
		res.Op = i
		return res
	}
	return Result{Ops: results}
}

// journal is what a ClientBatch's ops changed, so that it can be undone:
// the record each put replaced (nil for none), in order, and the revoked
// families as they were.
type journal struct {
	puts     []undoPut
	families families
	// reuse is the last reuse an op detected.
	reuse *reuseHit
}

type undoPut struct {
	id   string
	prev handle // held by the state until the batch ends
}

type reuseHit struct {
	rec  *Record
	hold int64
}

// undo restores st as it was before the first put: every put undone, the
// last first.
func (j *journal) undo(st *state) {
	for i := len(j.puts) - 1; i >= 0; i-- {
		u := j.puts[i]
		if u.prev == noHandle {
			st.delete(&Record{ID: u.id})
		} else {
			st.putStored(u.prev)
		}
	}
	st.families = j.families
	st.puts = [2]handle{}
}
