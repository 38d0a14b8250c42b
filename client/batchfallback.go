package client

import (
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

// AsOp returns err, if it is an *Error, as the error of op i of a batch:
// for a caller that sent its ops in more than one request.
func AsOp(err error, i int) error {
	var ce *Error
	if !errors.As(err, &ce) {
		return err
	}
	e := *ce
	e.Op = i
	return &e
}
