package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/nonce"
)

// NonceChecker records OAuth 1.0 replay nonces with add() semantics; it
// answers with the nonce package's sentinel errors.
type NonceChecker interface {
	Check(scope, nonce string, timestamp int64) error
	// Window is the accepted clock skew, and how long a nonce is kept.
	Window() time.Duration
}

func (s *Server) checkNonce(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.NonceRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return e
	}
	for _, f := range []struct{ name, value string }{{"scope", req.Scope}, {"nonce", req.Nonce}} {
		if f.value == "" {
			return errorf(http.StatusBadRequest, wire.CodeMissingField, "Field %q is required.", f.name)
		}
	}
	if req.Timestamp == 0 {
		return errorf(http.StatusBadRequest, wire.CodeMissingField, "Field \"timestamp\" (Unix seconds) is required.")
	}
	err := s.cfg.Nonces.Check(req.Scope, req.Nonce, req.Timestamp)
	switch {
	case err == nil:
		writeJSON(w, http.StatusCreated, wire.NonceResponse{Fresh: true})
		return nil
	case errors.Is(err, nonce.ErrReplayed):
		return errorf(http.StatusConflict, wire.CodeNonceReplayed, "This nonce was already used within the last %s.", s.cfg.Nonces.Window())
	case errors.Is(err, nonce.ErrOutOfWindow):
		return errorf(http.StatusBadRequest, wire.CodeTimestampOutOfWindow,
			"Field \"timestamp\" must be within %s of the server's clock.", s.cfg.Nonces.Window())
	case errors.Is(err, nonce.ErrInvalid):
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Fields \"scope\" and \"nonce\" must be 1 to %d bytes of UTF-8.", nonce.MaxLen)
	case errors.Is(err, nonce.ErrUnavailable):
		s.log.Warn("nonce store unavailable", "err", err)
		return unavailable(wire.CodeNonceStoreUnavailable, "The nonce store cannot answer right now; retry shortly.")
	}
	return errorf(http.StatusInternalServerError, wire.CodeInternal, "internal error")
}
