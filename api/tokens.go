package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// Field limits. The state is replicated to every node, so every field is
// bounded.
const (
	maxShort   = 256 // subject, client_id, family, title, reason
	maxRLC     = 64
	maxUA      = 512
	maxScopes  = 64
	maxScope   = 128
	maxData    = 8 << 10
	maxListLen = 1000
	defListLen = 100
)

// maxTTL bounds every TTL, also of kinds without a max (see token.MaxTTL).
const maxTTL = token.MaxTTL

func (s *Server) now() int64 { return s.cfg.Now().UnixNano() }

// apply checks a command (the checks a leader also runs on a forwarded
// one, CommandChecker) and proposes it.
func (s *Server) apply(ctx context.Context, w http.ResponseWriter, c fsm.Command) (fsm.Result, *Error) {
	res, _, e := s.applyIndex(ctx, w, c)
	return res, e
}

// applyIndex is apply that also returns the log index of the write.
func (s *Server) applyIndex(ctx context.Context, w http.ResponseWriter, c fsm.Command) (fsm.Result, uint64, *Error) {
	if e := checkCommand(s.cfg.Policy, s.cfg.RotationGrace, c); e != nil {
		return fsm.Result{}, 0, e
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	res, index, err := s.cfg.Node.Apply(ctx, c)
	if err != nil {
		return res, 0, nodeError(err)
	}
	setIndex(w.Header(), index)
	return res, index, nil
}

// setIndex sets the index header to index, in the slice wrap made for it
// when there is one.
func setIndex(h http.Header, index uint64) {
	if v := h[headerIndex]; len(v) == 1 {
		v[0] = strconv.FormatUint(index, 10)
		return
	}
	h[headerIndex] = []string{strconv.FormatUint(index, 10)}
}

// secretHash checks a presented token and returns its digest. A string
// with the vendor prefix that fails its checksum is refused here, before
// any read of the node.
func (s *Server) secretHash(presented string) (string, *Error) {
	if presented == "" {
		return "", errorf(http.StatusBadRequest, wire.CodeMissingField, "Field \"token\" is required.")
	}
	if _, err := s.cfg.Format.Parse(presented); err != nil {
		return "", errorf(http.StatusUnauthorized, wire.CodeTokenMalformed, "This is not a valid token (bad format or checksum).")
	}
	return s.cfg.Hasher.Sum(presented), nil
}

func (s *Server) issue(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.IssueRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return e
	}
	cmd, secret, e := s.issueCommand(&req, caller(r))
	if e != nil {
		return e
	}
	res, e := s.apply(r.Context(), w, cmd)
	if e != nil {
		return e
	}
	out, e := s.issueAnswer(res, secret)
	if e != nil {
		return e
	}
	writeIssued(w, http.StatusCreated, &out)
	return nil
}

// issueAnswer is the answer of an applied issue whose secret is secret.
func (s *Server) issueAnswer(res fsm.Result, secret string) (wire.IssueResponse, *Error) {
	if res.Err != nil {
		return wire.IssueResponse{}, recordError(res.Err, res.Record)
	}
	rec := res.Record
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("issued", "kind", rec.Kind, "id", rec.ID, "hash", token.LogPrefix(rec.Hash))
	}
	return issued(rec, secret), nil
}

func issued(rec *fsm.Record, secret string) wire.IssueResponse {
	return wire.IssueResponse{Token: secret, ID: rec.ID, Kind: rec.Kind, ExpiresAt: wireTime(rec.ExpiresAt),
		Index: rec.CreateIndex, Family: rec.Family}
}

// parseTTL reads a requested TTL, a Go duration string ("" for the kind's
// default: 0). The policy bounds it when the command is checked.
func parseTTL(text string) (time.Duration, *Error) {
	if text == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(text)
	if err != nil || d <= 0 {
		return 0, errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"ttl\" must be a positive duration such as \"90s\", \"10m\" or \"8760h\".")
	}
	return d, nil
}

// mint returns a new secret of kind and a public id.
func (s *Server) mint(kind string) (secret, id string, e *Error) {
	secret, err := s.cfg.Format.Mint(kind)
	if err == nil {
		id, err = token.NewID()
	}
	if err != nil {
		return "", "", errorf(http.StatusInternalServerError, wire.CodeInternal, "minting failed")
	}
	return secret, id, nil
}

// issueCommand builds the command of an issue request, minting a secret
// unless the caller brought one; apply checks it against the policy.
func (s *Server) issueCommand(req *wire.IssueRequest, generator string) (*fsm.Issue, string, *Error) {
	if req.Kind == "" {
		return nil, "", errorf(http.StatusBadRequest, wire.CodeMissingField, "Field \"kind\" is required.")
	}
	if e := checkKindName(s.cfg.Policy, req.Kind, false); e != nil {
		return nil, "", e
	}
	ttl, e := parseTTL(req.TTL)
	if e != nil {
		return nil, "", e
	}
	secret, id, e := s.mint(req.Kind)
	if e != nil {
		return nil, "", e
	}
	if req.Token != "" {
		secret = req.Token
		if s.cfg.Format.Reserved(secret) {
			return nil, "", errorf(http.StatusBadRequest, wire.CodePrefixReserved,
				"A brought token may not start with %q; that prefix is for tokens minted here.", s.cfg.Format.Vendor()+"_")
		}
		if err := token.CheckBrought(secret); err != nil {
			return nil, "", errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"token\": %s.", err)
		}
	}
	data := []byte(req.Data)
	if string(data) == "null" {
		data = nil
	}
	return &fsm.Issue{TTL: int64(ttl), Record: fsm.Record{
		ID: id, Hash: s.cfg.Hasher.Sum(secret), Kind: req.Kind, Subject: req.Subject, ClientID: req.ClientID,
		Scopes: req.Scopes, Family: req.Family, Data: data, RLC: req.RLC, MaxUses: req.MaxUses,
		IP: req.IP, UserAgent: req.UserAgent, Title: req.Title, Generator: generator,
	}}, secret, nil
}

func checkScopes(scopes []string) *Error {
	if len(scopes) > maxScopes {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"scopes\": at most %d scopes.", maxScopes)
	}
	for _, sc := range scopes {
		if sc == "" {
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"scopes\": a scope must not be empty.")
		}
		if e := checkText("scopes", sc, maxScope); e != nil {
			return e
		}
	}
	return nil
}

// checkText bounds a string field and keeps out of the state what would
// corrupt index keys and logs or make two strings look alike: control
// characters (C0, DEL, C1), bidirectional formatting and zero-width
// characters. Text is otherwise kept and compared byte for byte.
func checkText(name, v string, max int) *Error {
	if len(v) > max {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field %q exceeds %d bytes.", name, max)
	}
	if !utf8.ValidString(v) {
		return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field %q must be valid UTF-8.", name)
	}
	for _, c := range v {
		switch {
		case unicode.IsControl(c), c == '\u2028', c == '\u2029':
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field %q must not contain control characters (U+%04X).", name, c)
		case isBidiControl(c):
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field %q must not contain bidirectional formatting characters (U+%04X).", name, c)
		case isZeroWidth(c):
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field %q must not contain zero-width characters (U+%04X).", name, c)
		case unicode.Is(unicode.Cf, c), isInvisible(c):
			// Other format characters (soft hyphen, tag characters that
			// smuggle ASCII, deprecated formatting, annotation marks) and
			// blank fillers hide what a text says.
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field %q must not contain invisible characters (U+%04X).", name, c)
		}
	}
	return nil
}

// isBidiControl reports the marks, embeddings, overrides and isolates of
// Unicode's bidirectional algorithm (UAX #9), which reorder how text shows.
func isBidiControl(c rune) bool {
	return c == '\u061c' || c == '\u200e' || c == '\u200f' || ('\u202a' <= c && c <= '\u202e') || ('\u2066' <= c && c <= '\u2069')
}

// isZeroWidth reports characters that show as nothing: zero-width space,
// (non-)joiners, word joiner and invisible operators, the Mongolian vowel
// separator and the byte order mark.
func isZeroWidth(c rune) bool {
	return ('\u200b' <= c && c <= '\u200d') || ('\u2060' <= c && c <= '\u2064') || c == '\u180e' || c == '\ufeff'
}

// isInvisible reports the Hangul fillers: letters that show as blank.
// (Variation selectors stay: emoji need them.)
func isInvisible(c rune) bool {
	return c == '\u115f' || c == '\u1160' || c == '\u3164' || c == '\uffa0'
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.LookupRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return e
	}
	hash, e := s.secretHash(req.Token)
	if e != nil {
		return e
	}
	c, e := consistency(req.Consistency)
	if e != nil {
		return e
	}
	if e := checkClient(req.IP, req.UserAgent); e != nil {
		return e
	}
	s.contactHeaders(w)
	ctx := r.Context()
	if c != cluster.Local || req.MinIndex > 0 {
		// Only a read that may wait or ask the leader needs the bound.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.WriteTimeout)
		defer cancel()
	}
	rec, index, err := s.cfg.Node.ReadRecord(ctx, hash, c, req.MinIndex, s.cfg.MinIndexWait)
	if err != nil {
		return nodeError(err)
	}
	w.Header()[headerIndex] = []string{strconv.FormatUint(index, 10)}
	if rec == nil {
		return recordError(fsm.ErrNotFound, nil)
	}
	// The reader's clock decides expiry: a record past its expiry is never
	// served as valid, whether or not GC has run.
	now := s.now()
	if err := fsm.StatusErr(rec.Status(now)); err != nil {
		return recordErrorData(err, rec, req.WithData, now)
	}
	s.touch(rec, hash, now, req.IP, req.UserAgent)
	out := toWire(rec, now)
	writeRecord(w, http.StatusOK, &out)
	return nil
}

// touch notes a read for the token's last-used time, if its kind keeps one.
func (s *Server) touch(rec *fsm.Record, hash string, now int64, ip, ua string) {
	if k, ok := s.cfg.Policy.Kinds[rec.Kind]; ok && k.UpdateLastUsed {
		s.cfg.Node.Touch(hash, time.Unix(0, now), ip, ua)
	}
}

// checkClient validates the optional ip and user_agent of a read.
func checkClient(ip, ua string) *Error {
	if ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"ip\" must be an IPv4 or IPv6 address.")
		}
	}
	return checkText("user_agent", ua, maxUA)
}

// consistency parses a read's consistency level; local is the default.
func consistency(level string) (cluster.Consistency, *Error) {
	switch level {
	case "", wire.ConsistencyLocal:
		return cluster.Local, nil
	case wire.ConsistencyLeader:
		return cluster.Linearizable, nil
	}
	return 0, errorf(http.StatusBadRequest, wire.CodeInvalidField, "Field \"consistency\" must be %q or %q.", wire.ConsistencyLocal, wire.ConsistencyLeader)
}

func (s *Server) consume(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.ConsumeRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return e
	}
	cmd, e := s.consumeCommand(&req)
	if e != nil {
		return e
	}
	res, e := s.apply(r.Context(), w, cmd)
	if e != nil {
		return e
	}
	out, e := s.consumeAnswer(res, req.WithData)
	if e != nil {
		return e
	}
	writeRecord(w, http.StatusOK, &out)
	return nil
}

func (s *Server) consumeCommand(req *wire.ConsumeRequest) (*fsm.Consume, *Error) {
	hash, e := s.secretHash(req.Token)
	if e != nil {
		return nil, e
	}
	return &fsm.Consume{Hash: hash, Kind: req.Kind, ClientID: req.ClientID}, nil
}

// consumeAnswer is the answer of an applied consume.
func (s *Server) consumeAnswer(res fsm.Result, withData bool) (wire.Record, *Error) {
	if res.Err != nil {
		s.logReuse(res)
		return wire.Record{}, recordErrorData(res.Err, res.Record, withData, s.now())
	}
	return toWire(res.Record, res.Record.LastUsedAt), nil
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.RevokeRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return e
	}
	cmd, e := s.revokeCommand(&req)
	if e != nil {
		return e
	}
	return s.revokeOne(w, r, cmd)
}

func (s *Server) revokeCommand(req *wire.RevokeRequest) (*fsm.Revoke, *Error) {
	hash, e := s.secretHash(req.Token)
	if e != nil {
		return nil, e
	}
	return &fsm.Revoke{Hash: hash, Reason: req.Reason}, nil
}

func (s *Server) revokeByID(w http.ResponseWriter, r *http.Request) *Error {
	if tokenActions[r.PathValue("id")] {
		return actionMethod(w, r)
	}
	return s.revokeOne(w, r, &fsm.Revoke{ID: r.PathValue("id"), Reason: r.URL.Query().Get("reason")})
}

func (s *Server) revokeOne(w http.ResponseWriter, r *http.Request, c *fsm.Revoke) *Error {
	if e := checkText("reason", c.Reason, maxShort); e != nil {
		return e
	}
	res, e := s.apply(r.Context(), w, c)
	if e != nil {
		return e
	}
	out, e := s.revokeAnswer(res, c.Reason)
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokeAnswer is the answer of an applied revocation.
func (s *Server) revokeAnswer(res fsm.Result, reason string) (wire.Record, *Error) {
	if res.Err != nil {
		return wire.Record{}, recordError(res.Err, res.Record)
	}
	s.log.Info("revoked", "kind", res.Record.Kind, "id", res.Record.ID, "hash", token.LogPrefix(res.Record.Hash), "reason", reason)
	return toWire(res.Record, s.now()), nil
}

// tokenActions are the paths under /v1/tokens/ that are actions, not ids
// (ids are minted base62 and never spell one); other methods get 405.
var tokenActions = map[string]bool{"lookup": true, "consume": true, "revoke": true, "rotate": true}

func actionMethod(w http.ResponseWriter, r *http.Request) *Error {
	w.Header().Set("Allow", http.MethodPost)
	return errorf(http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed, "%s %s is not allowed; use POST.", r.Method, r.URL.Path)
}

func (s *Server) getByID(w http.ResponseWriter, r *http.Request) *Error {
	if tokenActions[r.PathValue("id")] {
		return actionMethod(w, r)
	}
	s.contactHeaders(w)
	rec, err := s.cfg.Node.ByID(r.PathValue("id"))
	if err != nil {
		return nodeError(err)
	}
	if rec == nil {
		return recordError(fsm.ErrNotFound, nil)
	}
	out := toWire(rec, s.now())
	if rec.State != fsm.Active {
		out.Data = nil // a used code's data is for whoever presents it again (with_data), not for inspection
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) *Error {
	q := r.URL.Query()
	subject, kind, cursor := q.Get("subject"), q.Get("kind"), q.Get("cursor")
	if subject == "" {
		return errorf(http.StatusBadRequest, wire.CodeMissingField, "Query parameter \"subject\" is required.")
	}
	if e := checkText("subject", subject, maxShort); e != nil {
		return e
	}
	if e := checkText("cursor", cursor, maxShort); e != nil {
		return e
	}
	if _, known := s.cfg.Policy.Kinds[kind]; kind != "" && !known {
		return errorf(http.StatusBadRequest, wire.CodeUnknownKind, "Unknown kind %q.", kind)
	}
	limit := defListLen
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLen {
			return errorf(http.StatusBadRequest, wire.CodeInvalidField, "Query parameter \"limit\" must be 1 to %d.", maxListLen)
		}
		limit = n
	}
	now := s.now()
	s.contactHeaders(w)
	recs, next, err := s.cfg.Node.ListBySubject(subject, kind, cursor, limit, now)
	if err != nil {
		return nodeError(err)
	}
	out := wire.ListResponse{Tokens: make([]wire.Record, len(recs)), NextCursor: next}
	for i, rec := range recs {
		out.Tokens[i] = toWire(rec, now)
		out.Tokens[i].Data = nil // a listing is for screens, not for the payload
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeSubject(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.BulkRevokeRequest
	if e := decodeJSON(w, r, &req, true); e != nil {
		return e
	}
	subject := r.PathValue("subject")
	if e := checkText("subject", subject, maxShort); e != nil {
		return e
	}
	if _, known := s.cfg.Policy.Kinds[req.Kind]; req.Kind != "" && !known {
		return errorf(http.StatusBadRequest, wire.CodeUnknownKind, "Unknown kind %q.", req.Kind)
	}
	return s.revokeMany(w, r, &fsm.RevokeSubject{Subject: subject, Kind: req.Kind, Reason: req.Reason}, req.Reason)
}

func (s *Server) revokeFamily(w http.ResponseWriter, r *http.Request) *Error {
	var req wire.BulkRevokeRequest
	if e := decodeJSON(w, r, &req, true); e != nil {
		return e
	}
	c, e := s.revokeFamilyCommand(r.PathValue("family"), req)
	if e != nil {
		return e
	}
	return s.revokeMany(w, r, c, req.Reason)
}

// revokeFamilyCommand is the command of a family revocation: of the
// family's tokens of one kind, leaving the family open, or, without a
// kind, of the family for good.
func (s *Server) revokeFamilyCommand(family string, req wire.BulkRevokeRequest) (fsm.Command, *Error) {
	if e := checkRequired("family", family, maxShort); e != nil {
		return nil, e
	}
	if req.Kind != "" {
		if e := checkKindName(s.cfg.Policy, req.Kind, false); e != nil {
			return nil, e
		}
	}
	if e := checkText("reason", req.Reason, maxShort); e != nil {
		return nil, e
	}
	if req.Kind != "" {
		// The family's tokens of one kind; the family stays open.
		return &fsm.RevokeFamilyKind{Family: family, Kind: req.Kind, Reason: req.Reason}, nil
	}
	return &fsm.RevokeFamily{Family: family, Reason: req.Reason}, nil
}

func (s *Server) revokeMany(w http.ResponseWriter, r *http.Request, c fsm.Command, reason string) *Error {
	if e := checkText("reason", reason, maxShort); e != nil {
		return e
	}
	res, e := s.apply(r.Context(), w, c)
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, wire.BulkRevokeResponse{Revoked: res.Count})
	return nil
}
