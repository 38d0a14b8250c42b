package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
)

// introspect is RFC 7662 token introspection: a form with token= (and an
// optional token_type_hint, which the store does not need). Anything that
// is not a valid token now answers exactly {"active":false}: unknown,
// expired, revoked, consumed or malformed alike, so a resource server
// learns nothing more than that. A replica too stale to answer says 503
// replica_stale, never active:true.
func (s *Server) introspect(w http.ResponseWriter, r *http.Request) *Error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return errorf(http.StatusUnsupportedMediaType, wire.CodeInvalidField,
			"Introspection takes a form (Content-Type: application/x-www-form-urlencoded) with token=.")
	}
	if err := r.ParseForm(); err != nil {
		if strings.Contains(err.Error(), "too large") {
			return tooLarge()
		}
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "The form cannot be parsed.")
	}
	presented := r.PostForm.Get("token")
	if presented == "" {
		return errorf(http.StatusBadRequest, wire.CodeMissingField, "Form field \"token\" is required.")
	}
	w.Header().Set("Cache-Control", "no-store")
	inactive := wire.IntrospectResponse{}
	hash, e := s.secretHash(presented)
	if e != nil { // malformed: inactive, like any other invalid token
		writeJSON(w, http.StatusOK, inactive)
		return nil
	}
	s.contactHeaders(w)
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	defer cancel()
	rec, _, err := s.cfg.Node.ReadRecord(ctx, hash, cluster.Local, 0, 0)
	if err != nil {
		return nodeError(err)
	}
	now := s.now()
	if rec == nil || rec.Status(now) != fsm.StatusActive {
		writeJSON(w, http.StatusOK, inactive)
		return nil
	}
	s.touch(rec, hash, now, "", "")
	out := wire.IntrospectResponse{Active: true, Subject: rec.Subject, ClientID: rec.ClientID,
		Scope: strings.Join(rec.Scopes, " "), TokenType: rec.Kind, RLC: rec.RLC, ID: rec.ID,
		IssuedAt: time.Unix(0, rec.CreatedAt).Unix()}
	if rec.ExpiresAt != 0 {
		out.ExpiresAt = time.Unix(0, rec.ExpiresAt).Unix()
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
