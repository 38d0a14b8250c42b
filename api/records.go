package api

import (
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/fsm"
)

// wireTime converts a Unix-nanosecond leader time to the wire (UTC), nil
// for unset.
func wireTime(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

// toWire shows a record as of time now, without its secret (it has none).
func toWire(r *fsm.Record, now int64) wire.Record {
	scopes := r.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return wire.Record{
		ID:            r.ID,
		Kind:          r.Kind,
		Status:        string(r.Status(now)),
		Subject:       r.Subject,
		ClientID:      r.ClientID,
		Scopes:        scopes,
		Family:        r.Family,
		Data:          r.Data,
		RLC:           r.RLC,
		MaxUses:       r.MaxUses,
		UsesLeft:      r.UsesLeft,
		CreatedAt:     time.Unix(0, r.CreatedAt).UTC(),
		ExpiresAt:     wireTime(r.ExpiresAt),
		LastUsedAt:    wireTime(r.LastUsedAt),
		IP:            r.IP,
		UserAgent:     r.UserAgent,
		Title:         r.Title,
		Generator:     r.Generator,
		InvalidatedAt: wireTime(r.InvalidatedAt),
		Reason:        r.Reason,
	}
}
