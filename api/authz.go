package api

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// AuthzPrefix is the path_prefix to give Envoy's HTTP external
// authorization service: Envoy appends the original request's path, so
// every path under AuthzPrefix+"/" is a check, taken as it comes (never
// cleaned into a redirect, which Envoy would take for a denial).
const AuthzPrefix = "/v1/authz/envoy"

// AuthzConfig configures Envoy external authorization.
type AuthzConfig struct {
	// Cookie is the name of the session cookie; default "tks_session".
	Cookie string
	// DefaultRLC is the rate-limit class of a request whose credentials
	// name none; default "default".
	DefaultRLC string
	// BearerKinds and CookieKinds are the kinds accepted in
	// Authorization: Bearer and in the session cookie; defaults: access
	// and developer; access and remember.
	BearerKinds, CookieKinds []string
	// TrustedProxies is how many proxies in front of the node append to
	// X-Forwarded-For (Envoy with use_remote_address counts as one): the
	// recorded last-use IP is the entry the outermost of them appended,
	// the TrustedProxies-th from the right. 0 records no IP; nil means 1.
	TrustedProxies *int
}

func (c *AuthzConfig) setDefaults() {
	c.Cookie = cmp.Or(c.Cookie, "tks_session")
	c.DefaultRLC = cmp.Or(c.DefaultRLC, "default")
	if c.BearerKinds == nil {
		c.BearerKinds = []string{token.KindAccess, token.KindDeveloper}
	}
	if c.CookieKinds == nil {
		c.CookieKinds = []string{token.KindAccess, token.KindRemember}
	}
	if c.TrustedProxies == nil {
		one := 1
		c.TrustedProxies = &one
	}
}

// authzEnvoy is an Envoy HTTP external authorization service. Envoy sends
// the original request's method, path and headers; a 200 lets it through
// with the subject and rate-limit class as headers for the upstream, a
// 401 stops it. The credentials are a bearer token and a session cookie:
// when both are present they must name the same subject, and the bearer
// token's rate-limit class wins over the cookie's. A 200 always carries
// all four identity headers (empty only for a token without a client
// id), so each overrides a client-sent header of its name upstream.
func (s *Server) authzEnvoy(w http.ResponseWriter, r *http.Request) *Error {
	s.contactHeaders(w)
	cfg := &s.cfg.Authz
	bearer, hasBearer := bearerToken(r.Header.Get("Authorization"))
	var session string
	if c, err := r.Cookie(cfg.Cookie); err == nil && c.Value != "" {
		session = c.Value
	}
	if !hasBearer && session == "" {
		return denied(wire.CodeCredentialMissing, "A bearer token or a session cookie is required.")
	}
	ip := clientIP(r.Header.Values("X-Forwarded-For"), *cfg.TrustedProxies)
	ua := r.Header.Get("User-Agent")
	if checkText("user_agent", ua, maxUA) != nil {
		ua = "" // the end user's header: recorded only when it is one the API takes
	}
	var recs []*fsm.Record // the bearer token's first
	for _, c := range []struct {
		presented, what string
		kinds           []string
	}{{bearer, "bearer token", cfg.BearerKinds}, {session, "session cookie", cfg.CookieKinds}} {
		if c.presented == "" {
			continue
		}
		rec, e := s.credential(r.Context(), c.presented, c.what, c.kinds, ip, ua)
		if e != nil {
			return e
		}
		recs = append(recs, rec)
	}
	if len(recs) == 2 && recs[0].Subject != recs[1].Subject {
		s.log.Warn("authz: bearer token and session cookie name different subjects",
			"bearer_id", recs[0].ID, "cookie_id", recs[1].ID, "path", strings.TrimPrefix(r.URL.Path, AuthzPrefix))
		return denied(wire.CodeCredentialConflict, "The bearer token and the session cookie belong to different users.")
	}
	rlc := cfg.DefaultRLC
	for i := len(recs) - 1; i >= 0; i-- {
		rlc = cmp.Or(recs[i].RLC, rlc)
	}
	h := w.Header()
	h.Set(wire.HeaderSubject, recs[0].Subject)
	h.Set(wire.HeaderRLC, rlc)
	h.Set(wire.HeaderClientID, recs[0].ClientID)
	h.Set(wire.HeaderTokenID, recs[0].ID)
	w.WriteHeader(http.StatusOK)
	return nil
}

// credential checks one presented token for authorization: it must be
// active now, on the local replica, and of one of kinds.
func (s *Server) credential(ctx context.Context, presented, what string, kinds []string, ip, ua string) (*fsm.Record, *Error) {
	hash, e := s.secretHash(presented)
	if e != nil {
		return nil, denied(wire.CodeCredentialInvalid, "The "+what+" is malformed.")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	rec, _, err := s.cfg.Node.ReadRecord(ctx, hash, cluster.Local, 0, 0)
	if err != nil {
		return nil, nodeError(err)
	}
	now := s.now()
	switch {
	case rec == nil:
		return nil, denied(wire.CodeCredentialInvalid, "The "+what+" is not known.")
	case rec.Status(now) != fsm.StatusActive:
		return nil, denied(wire.CodeCredentialInvalid, "The "+what+" is "+string(rec.Status(now))+".")
	case !slices.Contains(kinds, rec.Kind):
		return nil, denied(wire.CodeCredentialInvalid, "A "+rec.Kind+" token cannot be used as a "+what+".")
	case rec.Subject == "":
		// A token issued without a subject names nobody: an upstream
		// would read an empty subject as whatever it defaults to.
		return nil, denied(wire.CodeCredentialInvalid, "The "+what+" has no subject; it is no identity.")
	}
	s.touch(rec, hash, now, ip, ua)
	return rec, nil
}

func denied(code, msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: code, Message: msg, Challenge: `Bearer realm="tokenstore", error="invalid_token"`}
}

// bearerToken returns the credentials of an Authorization: Bearer header
// (the scheme is case-insensitive, RFC 7235).
func bearerToken(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

// clientIP is the address the outermost of trusted proxies appended to
// X-Forwarded-For (its fields taken in order, as one list): the
// trusted-th entry from the right. Entries left of it are whatever the
// client sent. No address when there are fewer entries, or that one is
// not an IP address.
func clientIP(fields []string, trusted int) string {
	if trusted <= 0 {
		return ""
	}
	var entries []string
	for _, f := range fields {
		entries = append(entries, strings.Split(f, ",")...)
	}
	if len(entries) < trusted {
		return ""
	}
	ip := strings.Trim(entries[len(entries)-trusted], " \t")
	if checkClient(ip, "") != nil {
		return ""
	}
	return ip
}
