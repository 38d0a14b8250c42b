package api

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// MaxRotationGrace bounds --rotation-grace, and the grace a rotation may
// carry.
const MaxRotationGrace = time.Hour

// Bounds of what only nodes propose (last uses, expiry) and of a sealed
// rotation.
const (
	maxID        = 64 // public ids are 22 base62 characters
	maxUsesBatch = 10_000
	maxExpireIDs = 10_000
	maxSealed    = 4 << 10
)

// CommandChecker returns the validation of every command the API
// proposes. The cluster runs the same function on every write a peer
// forwards (cluster.Config.Check), so the two paths cannot drift. It
// recomputes what the policy decides (TTL bounds, uses, single use, reuse
// detection) from p, in place, and refuses what the API would refuse; a
// rotation's grace is bounded by this node's (--rotation-grace). The error
// is an *Error.
func CommandChecker(p *token.Policy, rotationGrace time.Duration) func(fsm.Command) error {
	return func(c fsm.Command) error {
		if e := checkCommand(p, rotationGrace, c); e != nil {
			return e
		}
		return nil
	}
}

func checkCommand(p *token.Policy, rotationGrace time.Duration, c fsm.Command) *Error {
	switch c := c.(type) {
	case *fsm.Issue:
		return checkIssue(p, c)
	case *fsm.Consume:
		c.FamilyHold = familyHold(p)
		return firstError(checkHash(c.Hash), checkKindName(p, c.Kind, true), checkText("client_id", c.ClientID, maxShort))
	case *fsm.Revoke:
		if (c.Hash == "") == (c.ID == "") {
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "A revocation names a token by its secret or by its id.")
		}
		if c.Hash != "" {
			if e := checkHash(c.Hash); e != nil {
				return e
			}
		}
		return firstError(checkText("id", c.ID, maxID), checkText("reason", c.Reason, maxShort))
	case *fsm.RevokeSubject:
		return firstError(checkRequired("subject", c.Subject, maxShort), checkKindName(p, c.Kind, true), checkText("reason", c.Reason, maxShort))
	case *fsm.RevokeFamily:
		c.FamilyHold = familyHold(p)
		return firstError(checkRequired("family", c.Family, maxShort), checkText("reason", c.Reason, maxShort))
	case *fsm.RevokeFamilyKind:
		return firstError(checkRequired("family", c.Family, maxShort), checkKindName(p, c.Kind, false), checkText("reason", c.Reason, maxShort))
	case *fsm.ClientBatch:
		return checkBatch(p, rotationGrace, c)
	case *fsm.Rotate:
		c.FamilyHold = familyHold(p)
		return checkRotate(p, rotationGrace, c)
	case *fsm.Touch:
		if len(c.Uses) > maxUsesBatch {
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "At most %d last uses in one command.", maxUsesBatch)
		}
		// Last uses are informational: one bad use is dropped, not the
		// others with it.
		c.Uses = slices.DeleteFunc(c.Uses, func(u fsm.Use) bool {
			return firstError(checkHash(u.Hash), checkClient(u.IP, u.UserAgent)) != nil
		})
		return nil
	case *fsm.Fence:
		if c.Version < 1 || c.Version > fsm.Version {
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "A fence of version %d; this node runs %d.", c.Version, fsm.Version)
		}
		return nil
	case *fsm.Expire:
		if len(c.IDs) > maxExpireIDs {
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "At most %d ids in one expiry.", maxExpireIDs)
		}
		return nil
	}
	return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Command type %d is not a write.", c.Type())
}

// checkBatch checks every op of a batch as its single call is checked,
// in place: each is decoded, checked and encoded again. An op's error
// names it (Error.Op).
func checkBatch(p *token.Policy, rotationGrace time.Duration, c *fsm.ClientBatch) *Error {
	if e := checkBatchLen(len(c.Ops)); e != nil {
		return e
	}
	ops, err := c.DecodeOps()
	if err != nil {
		e := errorf(http.StatusBadRequest, wire.CodeInvalidField, "%s.", err)
		var oe *fsm.OpError
		if errors.As(err, &oe) && oe.Op >= 0 {
			e.Op = &oe.Op
		}
		return e
	}
	for i, op := range ops {
		if e := checkCommand(p, rotationGrace, op); e != nil {
			e.Op = &i
			return e
		}
		b, err := fsm.Encode(op)
		if err != nil {
			return errorf(http.StatusInternalServerError, wire.CodeInternal, "encoding op %d failed", i)
		}
		c.Ops[i] = b
	}
	return nil
}

// checkBatchLen bounds the ops of a batch.
func checkBatchLen(n int) *Error {
	switch {
	case n == 0:
		return errorf(http.StatusBadRequest, wire.CodeMissingField, "Field \"ops\" is required: 1 to %d ops.", wire.MaxBatchOps)
	case n > wire.MaxBatchOps:
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "A batch holds at most %d ops, not %d.", wire.MaxBatchOps, n)
	}
	return nil
}

// checkIssue checks an issue and rebuilds its record from the fields a
// caller may set, with the policy's TTL, uses and reuse detection.
func checkIssue(p *token.Policy, c *fsm.Issue) *Error {
	r := c.Record
	if r.Kind == "" {
		return errorf(http.StatusBadRequest, wire.CodeMissingField, "Field \"kind\" is required.")
	}
	ttl, uses, e := resolvePolicy(p, r.Kind, time.Duration(c.TTL), r.MaxUses)
	if e != nil {
		return e
	}
	if e := firstError(checkRequired("id", r.ID, maxID), checkHash(r.Hash), checkRecordFields(&r)); e != nil {
		return e
	}
	c.TTL = int64(ttl)
	c.Record = fsm.Record{ID: r.ID, Hash: r.Hash, Kind: r.Kind, Subject: r.Subject, ClientID: r.ClientID,
		Scopes: r.Scopes, Family: r.Family, Data: r.Data, RLC: r.RLC, MaxUses: uses,
		IP: r.IP, UserAgent: r.UserAgent, Title: r.Title, Generator: r.Generator,
		DetectReuse: p.Kinds[r.Kind].DetectReuse}
	return nil
}

// checkRecordFields bounds the caller's fields of a record.
func checkRecordFields(r *fsm.Record) *Error {
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"subject", r.Subject, maxShort}, {"client_id", r.ClientID, maxShort},
		{"family", r.Family, maxShort}, {"title", r.Title, maxShort},
		{"rlc", r.RLC, maxRLC}, {"generator", r.Generator, maxShort},
	} {
		if e := checkText(f.name, f.value, f.max); e != nil {
			return e
		}
	}
	if e := firstError(checkScopes(r.Scopes), checkClient(r.IP, r.UserAgent)); e != nil {
		return e
	}
	if len(r.Data) > maxData {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"data\" exceeds %d bytes.", maxData)
	}
	if len(r.Data) > 0 && !json.Valid(r.Data) {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"data\" must be JSON.")
	}
	return nil
}

// checkRotate checks a rotation as the API builds it: a refresh token
// rotated, optionally with an access token, both with the policy's TTLs,
// the grace at most this node's.
func checkRotate(p *token.Policy, grace time.Duration, c *fsm.Rotate) *Error {
	if c.Kind != token.KindOAuth2Refresh {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Only %s tokens rotate.", token.KindOAuth2Refresh)
	}
	ttl, _, e := resolvePolicy(p, token.KindOAuth2Refresh, time.Duration(c.TTL), 0)
	if e != nil {
		return e
	}
	n := c.Next
	if e := firstError(checkHash(c.Hash), checkText("client_id", c.ClientID, maxShort), checkRequired("id", n.ID, maxID),
		checkHash(n.Hash), checkClient(n.IP, n.UserAgent), checkText("generator", n.Generator, maxShort)); e != nil {
		return e
	}
	if c.Grace < 0 || len(c.Sealed) > maxSealed || (c.Grace == 0) != (len(c.Sealed) == 0) {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "A rotation's grace is 0 or more, with the successor sealed.")
	}
	if c.Grace = min(c.Grace, int64(grace)); c.Grace == 0 {
		c.Sealed = nil
	}
	c.TTL = int64(ttl)
	c.Next = fsm.Record{ID: n.ID, Hash: n.Hash, IP: n.IP, UserAgent: n.UserAgent, Generator: n.Generator}
	if c.Access == nil {
		return nil
	}
	a := c.Access.Record
	if a.Kind != token.KindAccess {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "A rotation issues %s tokens.", token.KindAccess)
	}
	attl, uses, e := resolvePolicy(p, token.KindAccess, time.Duration(c.Access.TTL), a.MaxUses)
	if e != nil {
		return e
	}
	if a.Scopes != nil && len(a.Scopes) == 0 {
		// The log does not tell an empty list from none, and none means
		// the grant's scopes: asking for no scope must not get them all.
		return errorf(http.StatusBadRequest, wire.CodeInvalidScope, "Field \"access.scopes\": name at least one scope, or leave it out for the grant's.")
	}
	if e := firstError(checkRequired("id", a.ID, maxID), checkHash(a.Hash), checkScopes(a.Scopes), checkText("generator", a.Generator, maxShort)); e != nil {
		return e
	}
	c.Access = &fsm.Issue{TTL: int64(attl), Record: fsm.Record{ID: a.ID, Hash: a.Hash, Kind: token.KindAccess, Scopes: a.Scopes,
		MaxUses: uses, DetectReuse: p.Kinds[token.KindAccess].DetectReuse, Generator: a.Generator}}
	return nil
}

// familyHold is how long a revoked family is remembered as revoked: as
// long as any token could have been issued into it, the longest max TTL
// of the kinds that detect reuse (the kinds a family grows from).
func familyHold(p *token.Policy) int64 {
	var hold time.Duration
	for _, k := range p.Kinds {
		if !k.DetectReuse {
			continue
		}
		if k.MaxTTL == 0 || k.MaxTTL > maxTTL {
			return int64(maxTTL) // a kind that never expires: the longest any TTL is
		}
		hold = max(hold, k.MaxTTL)
	}
	return int64(hold)
}

// resolvePolicy applies the policy of kind to a TTL (0 for the default)
// and max uses.
func resolvePolicy(p *token.Policy, kind string, ttl time.Duration, maxUses int64) (time.Duration, int64, *Error) {
	if ttl < 0 {
		return 0, 0, errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"ttl\" must be a positive duration such as \"90s\", \"10m\" or \"8760h\".")
	}
	ttl, uses, err := p.Resolve(kind, ttl, maxUses)
	switch {
	case errors.Is(err, token.ErrUnknownKind):
		return 0, 0, errorf(http.StatusBadRequest, wire.CodeUnknownKind, "Unknown kind %q.", kind)
	case errors.Is(err, token.ErrTTLTooLong):
		return 0, 0, errorf(http.StatusBadRequest, wire.CodeTTLTooLong, "Field \"ttl\": %s.", err)
	case errors.Is(err, token.ErrBadUses):
		return 0, 0, errorf(http.StatusBadRequest, wire.CodeInvalidMaxUses, "Field \"max_uses\": %s.", err)
	case err != nil:
		return 0, 0, errorf(http.StatusBadRequest, wire.CodeInvalidField, "%s", err)
	case ttl > maxTTL:
		return 0, 0, errorf(http.StatusBadRequest, wire.CodeTTLTooLong, "Field \"ttl\": at most %s.", maxTTL)
	}
	return ttl, uses, nil
}

func checkKindName(p *token.Policy, kind string, optional bool) *Error {
	if _, known := p.Kinds[kind]; known || (optional && kind == "") {
		return nil
	}
	return errorf(http.StatusBadRequest, wire.CodeUnknownKind, "Unknown kind %q.", kind)
}

// checkHash checks a secret's digest: every hasher's is 32 bytes.
func checkHash(h string) *Error {
	if len(h) != sha256.Size {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "A token digest is %d bytes, not %d.", sha256.Size, len(h))
	}
	return nil
}

func checkRequired(name, v string, max int) *Error {
	if v == "" {
		return errorf(http.StatusBadRequest, wire.CodeMissingField, "Field %q is required.", name)
	}
	return checkText(name, v, max)
}

func firstError(es ...*Error) *Error {
	for _, e := range es {
		if e != nil {
			return e
		}
	}
	return nil
}
