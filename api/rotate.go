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
	cmd, minted, e := s.rotateCommand(&req, caller(r))
	if e != nil {
		return e
	}
	res, e := s.apply(r.Context(), w, cmd)
	if e != nil {
		return e
	}
	out, e := s.rotateAnswer(res, req.Token, minted)
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// rotateMint is what a rotation minted: the successor's id, and its
// secret and the access token's.
type rotateMint struct {
	id      string
	secrets []string
}

// rotateCommand builds the command of a rotation request, minting the
// successor (and access token) and sealing their secrets for the grace
// period; apply checks it against the policy.
func (s *Server) rotateCommand(req *wire.RotateRequest, gen string) (*fsm.Rotate, rotateMint, *Error) {
	hash, e := s.secretHash(req.Token)
	if e != nil {
		return nil, rotateMint{}, e
	}
	ttl, e := parseTTL(req.TTL)
	if e != nil {
		return nil, rotateMint{}, e
	}
	secret, id, e := s.mint(token.KindOAuth2Refresh)
	if e != nil {
		return nil, rotateMint{}, e
	}
	cmd := &fsm.Rotate{Hash: hash, Kind: token.KindOAuth2Refresh, ClientID: req.ClientID, TTL: int64(ttl),
		Next: fsm.Record{ID: id, Hash: s.cfg.Hasher.Sum(secret), IP: req.IP, UserAgent: req.UserAgent, Generator: gen}}
	secrets := []string{secret}
	if a := req.Access; a != nil {
		ttl, e := parseTTL(a.TTL)
		if e != nil {
			return nil, rotateMint{}, e
		}
		secret, id, e := s.mint(token.KindAccess)
		if e != nil {
			return nil, rotateMint{}, e
		}
		cmd.Access = &fsm.Issue{TTL: int64(ttl), Record: fsm.Record{ID: id, Hash: s.cfg.Hasher.Sum(secret),
			Kind: token.KindAccess, Scopes: a.Scopes, Generator: gen}}
		secrets = append(secrets, secret)
	}
	if s.cfg.RotationGrace > 0 {
		sealed, err := s.cfg.Hasher.Seal(req.Token, secrets...)
		if err != nil {
			return nil, rotateMint{}, errorf(http.StatusInternalServerError, wire.CodeInternal, "sealing failed")
		}
		cmd.Grace, cmd.Sealed = int64(s.cfg.RotationGrace), sealed
	}
	return cmd, rotateMint{id: id, secrets: secrets}, nil
}

// rotateAnswer is the answer of an applied rotation of the refresh token
// presented.
func (s *Server) rotateAnswer(res fsm.Result, presented string, minted rotateMint) (wire.RotateResponse, *Error) {
	if res.Err != nil {
		s.logReuse(res)
		return wire.RotateResponse{}, recordError(res.Err, res.Record)
	}
	secrets := minted.secrets
	if res.Record.ID != minted.id {
		// A retry within the grace period: the successor it already got,
		// whose secrets only the presented token opens.
		opened, err := s.cfg.Hasher.Open(presented, res.Sealed)
		if err != nil || res.Access != nil && len(opened) < 2 {
			return wire.RotateResponse{}, errorf(http.StatusInternalServerError, wire.CodeInternal, "the successor of this token cannot be recovered")
		}
		secrets = opened
		s.log.Info("rotation retried within grace", "id", res.Record.ID, "family", res.Record.Family)
	}
	out := wire.RotateResponse{IssueResponse: issued(res.Record, secrets[0])}
	if res.Access != nil {
		a := issued(res.Access, secrets[1])
		out.Access = &a
	}
	return out, nil
}

// logReuse reports a detected reuse: someone holds a token that was
// already used, and the grant has been revoked.
func (s *Server) logReuse(res fsm.Result) {
	if errors.Is(res.Err, fsm.ErrReused) && res.Record != nil {
		s.metrics.reuse.WithLabelValues(res.Record.Kind).Inc()
		s.log.Warn("reuse of a consumed token: family revoked", "kind", res.Record.Kind, "id", res.Record.ID,
			"family", res.Record.Family, "revoked", res.Count)
	}
}
