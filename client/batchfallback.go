package client

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/tokenstore/tokenstore/api/wire"
)

// FamilyOpRefused tells whether err, from Batch with ops, is the cluster's
// refusal of a revoke_family op inside a batch, which nothing of the batch
// was applied for: a cluster still being upgraded answers 503
// cluster_upgrading, and a node of an earlier release 400 invalid_field
// naming the op. The caller may then send the family revocation alone and
// the rest as a batch, which is not atomic.
func FamilyOpRefused(err error, ops []wire.BatchOp) bool {
	var ce *Error
	if !errors.As(err, &ce) || !slices.ContainsFunc(ops, func(op wire.BatchOp) bool { return op.Op == wire.OpRevokeFamily }) {
		return false
	}
	switch {
	case ce.Code == wire.CodeUpgrading:
		return true
	case ce.Status == http.StatusBadRequest && ce.Code == wire.CodeInvalidField:
		return ce.Op >= 0 && ce.Op < len(ops) && ops[ce.Op].Op == wire.OpRevokeFamily
	}
	return false
}

// asOp returns err, if it is an *Error, as the error of op i of a batch
// whose ops went out in more than one request.
func asOp(err error, i int) error {
	var ce *Error
	if !errors.As(err, &ce) {
		return err
	}
	e := *ce
	e.Op = i
	return &e
}

// BatchInSteps sends ops as one batch, as Batch does. If the cluster
// cannot take a revoke_family op in a batch yet (FamilyOpRefused: nothing
// was applied), it sends the family revocations alone first and the rest
// as one batch, as releases before the op had to: not atomic then, since a
// failing batch leaves the revocations applied. A failing op's error names
// its index in ops either way.
func (c *Client) BatchInSteps(ctx context.Context, ops ...wire.BatchOp) error {
	_, err := c.Batch(ctx, ops...)
	if err == nil || !FamilyOpRefused(err, ops) {
		return err
	}
	var rest []wire.BatchOp
	var at []int // of each op of rest in ops
	for i, op := range ops {
		if op.Op != wire.OpRevokeFamily {
			rest, at = append(rest, op), append(at, i)
			continue
		}
		f := op.RevokeFamily
		if _, err := c.RevokeFamilyKind(ctx, f.Family, f.Kind, f.Reason); err != nil {
			return asOp(err, i)
		}
	}
	if len(rest) == 0 {
		return nil
	}
	_, err = c.Batch(ctx, rest...)
	var ce *Error
	if errors.As(err, &ce) && ce.Op >= 0 && ce.Op < len(at) {
		return asOp(err, at[ce.Op])
	}
	return err
}
