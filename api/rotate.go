package api

import (
	"errors"
	"net/http"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// rotate is refresh-token rotation: the presented refresh token is
// consumed and its successor issued in the same family, with an access
// token if asked, in one log entry. A consumed refresh token presented
// again revokes its family (410 token_reused), unless it is a retry within
// --rotation-grace, which gets the successor it already got.
func (s *Server) rotate(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.RotateRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return e
	}
	hash, e := s.secretHash(req.Token)
	if e != nil {
		return e
	}
	ttl, e := parseTTL(req.TTL)
	if e != nil {
		return e
	}
	secret, id, e := s.mint(token.KindOAuth2Refresh)
	if e != nil {
		return e
	}
	gen := caller(r)
	cmd := &fsm.Rotate{Hash: hash, Kind: token.KindOAuth2Refresh, ClientID: req.ClientID, TTL: int64(ttl),
		Next: fsm.Record{ID: id, Hash: s.cfg.Hasher.Sum(secret), IP: req.IP, UserAgent: req.UserAgent, Generator: gen}}
	secrets := []string{secret}
	if a := req.Access; a != nil {
		ttl, e := parseTTL(a.TTL)
		if e != nil {
			return e
		}
		secret, id, e := s.mint(token.KindAccess)
		if e != nil {
			return e
		}
		cmd.Access = &fsm.Issue{TTL: int64(ttl), Record: fsm.Record{ID: id, Hash: s.cfg.Hasher.Sum(secret),
			Kind: token.KindAccess, Scopes: a.Scopes, Generator: gen}}
		secrets = append(secrets, secret)
	}
	if s.cfg.RotationGrace > 0 {
		sealed, err := s.cfg.Hasher.Seal(req.Token, secrets...)
		if err != nil {
			return errorf(http.StatusInternalServerError, wire.CodeInternal, "sealing failed")
		}
		cmd.Grace, cmd.Sealed = int64(s.cfg.RotationGrace), sealed
	}
	res, e := s.apply(r.Context(), w, cmd)
	if e != nil {
		return e
	}
	if res.Err != nil {
		s.logReuse(res)
		return recordError(res.Err, res.Record)
	}
	if res.Record.ID != id {
		// A retry within the grace period: the successor it already got,
		// whose secrets only the presented token opens.
		opened, err := s.cfg.Hasher.Open(req.Token, res.Sealed)
		if err != nil || res.Access != nil && len(opened) < 2 {
			return errorf(http.StatusInternalServerError, wire.CodeInternal, "the successor of this token cannot be recovered")
		}
		secrets = opened
		s.log.Info("rotation retried within grace", "id", res.Record.ID, "family", res.Record.Family)
	}
	out := wire.RotateResponse{IssueResponse: issued(res.Record, secrets[0])}
	if res.Access != nil {
		a := issued(res.Access, secrets[1])
		out.Access = &a
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// logReuse reports a detected reuse: someone holds a token that was
// already used, and the grant has been revoked.
func (s *Server) logReuse(res fsm.Result) {
	if errors.Is(res.Err, fsm.ErrReused) {
		s.metrics.reuse.WithLabelValues(res.Record.Kind).Inc()
		s.log.Warn("reuse of a consumed token: family revoked", "kind", res.Record.Kind, "id", res.Record.ID,
			"family", res.Record.Family, "revoked", res.Count)
	}
}
