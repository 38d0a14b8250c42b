// Package fositestore keeps the state of an ory/fosite OAuth 2.0 and
// OpenID Connect server in tokenstore.
//
// New returns a *Store that implements oauth2.CoreStorage,
// oauth2.TokenRevocationStorage, pkce.PKCERequestStorage,
// openid.OpenIDConnectRequestStorage and storage.Transactional of
// github.com/ory/fosite (v0.49), and fosite.Storage by handing client
// look-ups to the fosite.ClientManager it is given.
//
// What the store keeps. fosite hands the storage the signature of a code,
// access or refresh token (the HMAC half, which fosite itself treats as the
// key of the token) and for OpenID Connect the whole code. The store gives
// each to tokenstore as a brought token string, so only its digest
// reaches a node's disk. A record's data is the fosite request as JSON
// (request id, time, client id, scopes, audiences, the sanitized form
// without any secret parameter, the session), never a token, code,
// verifier or client secret; its title says what it is. Every record of a
// grant is in the family named by fosite's request id, which fosite keeps
// from the authorization request through every refresh.
//
// How each method maps onto tokenstore (kinds of the built-in policy; see
// WithKinds):
//
//	CreateAuthorizeCodeSession      issue oauth2_code, token = signature
//	GetAuthorizeCodeSession         lookup at leader consistency, with_data
//	InvalidateAuthorizeCodeSession  consume, kind oauth2_code
//	CreateAccessTokenSession        issue access
//	GetAccessTokenSession           lookup
//	DeleteAccessTokenSession        revoke
//	CreateRefreshTokenSession       issue oauth2_refresh
//	GetRefreshTokenSession          lookup, with_data
//	DeleteRefreshTokenSession       revoke
//	RotateRefreshToken              revoke_family of the access tokens (kind
//	                                access, the family stays open), then
//	                                consume the refresh token
//	RevokeRefreshToken              revoke the family for good
//	RevokeAccessToken               revoke the family for good
//	Create/GetPKCERequestSession               issue/lookup oauth2_code, token = "pkce:" + signature (Delete keeps it: see there)
//	Create/Get/DeleteOpenIDConnectSession      issue/lookup/revoke oauth2_code, token = "oidc:" + code
//	BeginTX, Commit, Rollback       the issues, consumes and RotateRefreshToken's
//	                                revocation made with the context BeginTX
//	                                returned go out as one POST /v1/batch at
//	                                Commit; Rollback drops them
//
// Errors keep fosite's contracts. A lookup answered 404 token_not_found or
// 410 token_expired is fosite.ErrNotFound. A used code (410
// token_consumed, token_reused, token_revoked, family_revoked) returns
// its stored request, rebuilt from the 410's error.token and the
// tombstone's data, with fosite.ErrInvalidatedAuthorizeCode; a used or
// revoked refresh token returns its request with fosite.ErrInactiveToken,
// as does a revoked access token. Once a token is past its own expiry,
// or revoked, its data is gone: the request returned then holds what the
// 410 names (request id, client, scopes), which is what fosite needs to
// revoke the grant. At Commit, an op that fails is the error of that
// method: a consume of a used code wraps fosite.ErrInvalidatedAuthorizeCode,
// of a used refresh token fosite.ErrInactiveToken, an issue into a revoked
// family fosite.ErrInactiveToken; the tokenstore error stays in the chain
// (errors.Is(err, client.ErrTokenReused)).
//
// A token endpoint passes its errors through TokenEndpointError: fosite
// answers the losers of a race for one code server_error, and for one
// refresh token invalid_request; it answers them invalid_grant.
//
// fosite's refresh flow calls RotateRefreshToken inside its transaction:
// the revocation of the grant's access tokens, the consume of the old
// refresh token and the issues of its successors go out as one batch, so
// a refresh applies whole or not at all (a failure leaves the old refresh
// and access tokens as they were). During a rolling upgrade, while the
// cluster cannot take a family revocation in a batch (503
// cluster_upgrading until the log's version fence; 400 invalid_field at
// that op from a node of an earlier release), Commit sends the revocation
// alone, then the rest as the batch: not atomic until the fence. Other revocations (Delete*, Revoke*)
// never wait for Commit: taking away access early is never unsafe.
package fositestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	"github.com/ory/fosite/storage"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// MaxData is the largest data a tokenstore record holds (the API's limit,
// the same for every kind). A request whose JSON is larger is refused with
// ErrRequestTooLarge; it is never cut.
const MaxData = 8 << 10

// Errors of the store itself.
var (
	// ErrRequestTooLarge means a fosite request does not fit in a
	// record's data (MaxData bytes as JSON).
	ErrRequestTooLarge = errors.New("fositestore: the request does not fit in a token's data")
	// ErrNoTransaction means Commit or Rollback got a context that
	// BeginTX did not return.
	ErrNoTransaction = errors.New("fositestore: no transaction in the context")
)

var (
	_ oauth2.CoreStorage                 = (*Store)(nil)
	_ oauth2.TokenRevocationStorage      = (*Store)(nil)
	_ pkce.PKCERequestStorage            = (*Store)(nil)
	_ openid.OpenIDConnectRequestStorage = (*Store)(nil)
	_ storage.Transactional              = (*Store)(nil)
	_ fosite.Storage                     = (*Store)(nil)
)

// Kinds are the tokenstore kinds the store issues. Code, Access and
// Refresh must be three kinds: a lookup answers only tokens of the kind
// it asks for.
type Kinds struct {
	Code    string // authorization codes: single-use, detects reuse
	Access  string // access tokens
	Refresh string // refresh tokens: single-use, detects reuse
	// Session holds the PKCE and OpenID Connect requests of a code; they
	// are read and revoked, never consumed.
	Session string
}

// DefaultKinds are the kinds of tokenstore's built-in policy.
var DefaultKinds = Kinds{Code: "oauth2_code", Access: "access", Refresh: "oauth2_refresh", Session: "oauth2_code"}

// Option configures a Store.
type Option func(*Store)

// WithKinds sets the kinds the store issues (policy kinds of the nodes).
func WithKinds(k Kinds) Option { return func(s *Store) { s.kinds = k } }

// WithSession sets how the store makes a session to decode a stored one
// into when fosite passes none (revocation); default: an empty
// *openid.DefaultSession.
func WithSession(f func() fosite.Session) Option { return func(s *Store) { s.newSession = f } }

// WithConsistency sets the consistency of lookups. The default,
// wire.ConsistencyLeader, makes every read see every write before it, on
// any node: the authorize and token endpoints may talk to different nodes
// and data centers. wire.ConsistencyLocal reads the node's replica.
func WithConsistency(c string) Option { return func(s *Store) { s.consistency = c } }

// Store is fosite's storage on tokenstore. It is safe for concurrent use.
type Store struct {
	fosite.ClientManager
	c           *client.Client
	kinds       Kinds
	newSession  func() fosite.Session
	consistency string
}

// New returns a store that keeps tokens through c and finds clients in
// clients.
func New(c *client.Client, clients fosite.ClientManager, opts ...Option) *Store {
	s := &Store{ClientManager: clients, c: c, kinds: DefaultKinds,
		newSession:  func() fosite.Session { return &openid.DefaultSession{} },
		consistency: wire.ConsistencyLeader}
	for _, o := range opts {
		o(s)
	}
	return s
}

// what is what a record is for: it names the fosite error a failure maps to.
type what int

const (
	code what = iota
	access
	refresh
	pkceSession
	oidcSession
)

var titles = [...]string{code: "fosite authorization code", access: "fosite access token",
	refresh: "fosite refresh token", pkceSession: "fosite PKCE request", oidcSession: "fosite OpenID Connect request"}

func (s *Store) kind(w what) string {
	switch w {
	case code:
		return s.kinds.Code
	case access:
		return s.kinds.Access
	case refresh:
		return s.kinds.Refresh
	}
	return s.kinds.Session
}

// lifespan is the fosite token type whose expiry a record takes.
func lifespan(w what) fosite.TokenType {
	switch w {
	case access:
		return fosite.AccessToken
	case refresh:
		return fosite.RefreshToken
	}
	return fosite.AuthorizeCode
}

// secretKey is the token string tokenstore gets for a key fosite uses:
// the PKCE and OpenID Connect requests of a code have keys of their own,
// apart from the code's.
func secretKey(w what, key string) string {
	switch w {
	case pkceSession:
		return "pkce:" + key
	case oidcSession:
		return "oidc:" + key
	}
	return key
}

// Transactions.

type txKey struct{}

type tx struct {
	mu    sync.Mutex
	ops   []wire.BatchOp
	whats []what
	done  bool
}

func txOf(ctx context.Context) *tx {
	t, _ := ctx.Value(txKey{}).(*tx)
	return t
}

// BeginTX starts a transaction: the issues and consumes made with the
// returned context are sent as one batch at Commit. A context that holds a
// transaction already keeps it.
func (s *Store) BeginTX(ctx context.Context) (context.Context, error) {
	if t := txOf(ctx); t != nil && !t.finished() {
		return ctx, nil
	}
	return context.WithValue(ctx, txKey{}, &tx{}), nil
}

func (t *tx) finished() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.done
}

// Commit sends the transaction's writes as one batch: all of them apply,
// or none.
func (s *Store) Commit(ctx context.Context) error {
	t := txOf(ctx)
	if t == nil {
		return ErrNoTransaction
	}
	t.mu.Lock()
	ops, whats, done := t.ops, t.whats, t.done
	t.ops, t.whats, t.done = nil, nil, true
	t.mu.Unlock()
	if done {
		return fmt.Errorf("fositestore: commit of a finished transaction: %w", ErrNoTransaction)
	}
	if len(ops) == 0 {
		return nil
	}
	// A cluster being upgraded takes the access tokens' revocation of a
	// refresh alone first (BatchInSteps): not atomic until it can.
	return batchError(ops, whats, s.c.BatchInSteps(ctx, ops...))
}

// batchError is the error of a transaction's batch: the failing op's
// error, by opError.
func batchError(ops []wire.BatchOp, whats []what, err error) error {
	if err == nil {
		return nil
	}
	var ce *client.Error
	if errors.As(err, &ce) && ce.Op >= 0 && ce.Op < len(ops) {
		return opError(ops[ce.Op].Op, whats[ce.Op], err)
	}
	return fmt.Errorf("fositestore: batch of %d ops: %w", len(ops), err)
}

// Rollback drops the transaction's writes.
func (s *Store) Rollback(ctx context.Context) error {
	t := txOf(ctx)
	if t == nil {
		return ErrNoTransaction
	}
	t.mu.Lock()
	t.ops, t.whats, t.done = nil, nil, true
	t.mu.Unlock()
	return nil
}

// write sends op now, or queues it in the context's transaction.
func (s *Store) write(ctx context.Context, w what, op wire.BatchOp) error {
	if t := txOf(ctx); t != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.done {
			if len(t.ops) == wire.MaxBatchOps {
				return fmt.Errorf("fositestore: a transaction holds at most %d writes", wire.MaxBatchOps)
			}
			t.ops, t.whats = append(t.ops, op), append(t.whats, w)
			return nil
		}
	}
	var err error
	switch op.Op {
	case wire.OpIssue:
		_, err = s.c.Issue(ctx, *op.Issue)
	case wire.OpConsume:
		_, err = s.c.Consume(ctx, *op.Consume)
	case wire.OpRevokeFamily:
		_, err = s.c.RevokeFamilyKind(ctx, op.RevokeFamily.Family, op.RevokeFamily.Kind, op.RevokeFamily.Reason)
	default:
		return fmt.Errorf("fositestore: unexpected op %q", op.Op)
	}
	if err != nil {
		return opError(op.Op, w, err)
	}
	return nil
}

// opError maps the failure of a write to fosite's error for it, keeping
// tokenstore's in the chain.
func opError(op string, w what, err error) error {
	switch {
	case op == wire.OpConsume && w == code && invalidated(err):
		return fmt.Errorf("fositestore: authorization code: %w: %w", fosite.ErrInvalidatedAuthorizeCode, err)
	case op == wire.OpConsume && invalidated(err):
		return fmt.Errorf("fositestore: %s: %w: %w", titles[w], fosite.ErrInactiveToken, err)
	case op == wire.OpConsume && gone(err):
		return fmt.Errorf("fositestore: %s: %w: %w", titles[w], fosite.ErrNotFound, err)
	case op == wire.OpIssue && errors.Is(err, client.ErrFamilyRevoked):
		return fmt.Errorf("fositestore: %s: the grant was revoked: %w: %w", titles[w], fosite.ErrInactiveToken, err)
	case op == wire.OpRevokeFamily:
		return fmt.Errorf("fositestore: revoke the %ss of the grant: %w", titles[w], err)
	}
	return fmt.Errorf("fositestore: %s %s: %w", op, titles[w], err)
}

// invalidated reports a token used, revoked or in a revoked grant.
func invalidated(err error) bool {
	return errors.Is(err, client.ErrTokenConsumed) || errors.Is(err, client.ErrTokenReused) ||
		errors.Is(err, client.ErrTokenRevoked) || errors.Is(err, client.ErrFamilyRevoked)
}

// gone reports a token unknown or past its expiry.
func gone(err error) bool {
	return errors.Is(err, client.ErrTokenNotFound) || errors.Is(err, client.ErrTokenExpired) ||
		errors.Is(err, client.ErrTokenMalformed)
}

// Writes.

func (s *Store) create(ctx context.Context, w what, key string, req fosite.Requester) error {
	data, err := encodeRequest(req)
	if err != nil {
		return err
	}
	in := wire.IssueRequest{Kind: s.kind(w), Token: secretKey(w, key), Family: req.GetID(),
		Scopes: []string(req.GetGrantedScopes()), Data: data, Title: titles[w]}
	if c := req.GetClient(); c != nil {
		in.ClientID = c.GetID()
	}
	if sess := req.GetSession(); sess != nil {
		in.Subject = sess.GetSubject()
		if exp := sess.GetExpiresAt(lifespan(w)); !exp.IsZero() {
			in.TTL = ttl(exp).String()
		}
	}
	return s.write(ctx, w, client.IssueOp(in))
}

// ttl is the time until exp in whole seconds, rounded up, at least one.
func ttl(exp time.Time) time.Duration {
	d := time.Until(exp)
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}

// revoke revokes a token by its key now; a token already unknown or
// invalid is no error (fosite deletes what may be gone).
func (s *Store) revoke(ctx context.Context, w what, key, reason string) error {
	_, err := s.c.Revoke(ctx, secretKey(w, key), reason)
	if err != nil && !gone(err) && !invalidated(err) {
		return fmt.Errorf("fositestore: revoke %s: %w", titles[w], err)
	}
	return nil
}

// revokeFamily revokes the grant of request id for good.
func (s *Store) revokeFamily(ctx context.Context, requestID, reason string) error {
	if requestID == "" {
		return fmt.Errorf("fositestore: revoke a grant without a request id: %w", fosite.ErrNotFound)
	}
	if _, err := s.c.RevokeFamily(ctx, requestID, reason); err != nil {
		return fmt.Errorf("fositestore: revoke grant %s: %w", requestID, err)
	}
	return nil
}

// CreateAuthorizeCodeSession stores the authorization request of a code.
func (s *Store) CreateAuthorizeCodeSession(ctx context.Context, signature string, req fosite.Requester) error {
	return s.create(ctx, code, signature, req)
}

// InvalidateAuthorizeCodeSession uses the code up, atomically: one
// exchange of a code wins, whatever the concurrency; a code used before
// answers fosite.ErrInvalidatedAuthorizeCode and, since the code kind
// detects reuse, revokes the grant.
func (s *Store) InvalidateAuthorizeCodeSession(ctx context.Context, signature string) error {
	return s.write(ctx, code, client.ConsumeOp(wire.ConsumeRequest{Token: signature, Kind: s.kinds.Code}))
}

// CreateAccessTokenSession stores the request of an access token.
func (s *Store) CreateAccessTokenSession(ctx context.Context, signature string, req fosite.Requester) error {
	return s.create(ctx, access, signature, req)
}

// DeleteAccessTokenSession revokes an access token.
func (s *Store) DeleteAccessTokenSession(ctx context.Context, signature string) error {
	return s.revoke(ctx, access, signature, "deleted")
}

// CreateRefreshTokenSession stores the request of a refresh token. The
// access token's signature is not kept: the grant's access tokens are
// found by their family (RotateRefreshToken).
func (s *Store) CreateRefreshTokenSession(ctx context.Context, signature, _ string, req fosite.Requester) error {
	return s.create(ctx, refresh, signature, req)
}

// DeleteRefreshTokenSession revokes a refresh token.
func (s *Store) DeleteRefreshTokenSession(ctx context.Context, signature string) error {
	return s.revoke(ctx, refresh, signature, "deleted")
}

// RotateRefreshToken revokes the grant's access tokens, leaving the grant
// open for the successors fosite issues next under the same request id,
// and uses the refresh token up. In fosite's transaction both go out in
// its batch, with the successors: a refresh is one atomic write, which
// applies whole or not at all. Of concurrent refreshes with one token one
// wins, and a token used before revokes the grant.
func (s *Store) RotateRefreshToken(ctx context.Context, requestID, signature string) error {
	if requestID == "" {
		return fmt.Errorf("fositestore: rotate a refresh token without a request id: %w", fosite.ErrNotFound)
	}
	revoke := client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: requestID, Kind: s.kinds.Access, Reason: "refreshed"})
	if err := s.write(ctx, access, revoke); err != nil {
		return err
	}
	return s.write(ctx, refresh, client.ConsumeOp(wire.ConsumeRequest{Token: signature, Kind: s.kinds.Refresh}))
}

// RevokeRefreshToken revokes the grant of request id for good: its
// refresh and access tokens, and anything issued into it later (RFC 7009).
func (s *Store) RevokeRefreshToken(ctx context.Context, requestID string) error {
	return s.revokeFamily(ctx, requestID, "refresh token revoked")
}

// RevokeAccessToken revokes the grant of request id for good, as
// RevokeRefreshToken (RFC 7009 lets a server revoke the grant of an
// access token; fosite calls both in every flow that revokes).
func (s *Store) RevokeAccessToken(ctx context.Context, requestID string) error {
	return s.revokeFamily(ctx, requestID, "access token revoked")
}

// CreatePKCERequestSession stores the PKCE request of a code.
func (s *Store) CreatePKCERequestSession(ctx context.Context, signature string, req fosite.Requester) error {
	return s.create(ctx, pkceSession, signature, req)
}

// DeletePKCERequestSession keeps the PKCE request of a code: it is only
// reached through its code, which is single use, and it expires with it.
// fosite asks for the deletion before it checks the verifier, so deleting
// it there would let one exchange with a wrong verifier strip the code of
// its challenge, and a second exchange without a verifier succeed where
// PKCE is not enforced.
func (s *Store) DeletePKCERequestSession(ctx context.Context, signature string) error {
	return nil
}

// CreateOpenIDConnectSession stores the OpenID Connect request of a code.
func (s *Store) CreateOpenIDConnectSession(ctx context.Context, authorizeCode string, req fosite.Requester) error {
	return s.create(ctx, oidcSession, authorizeCode, req)
}

// DeleteOpenIDConnectSession revokes the OpenID Connect request of a code.
func (s *Store) DeleteOpenIDConnectSession(ctx context.Context, authorizeCode string) error {
	return s.revoke(ctx, oidcSession, authorizeCode, "deleted")
}

// Reads.

// GetAuthorizeCodeSession returns the authorization request of a code,
// with fosite.ErrInvalidatedAuthorizeCode for a code used or revoked.
func (s *Store) GetAuthorizeCodeSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	return s.get(ctx, code, signature, session)
}

// GetAccessTokenSession returns the request of an access token.
func (s *Store) GetAccessTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	return s.get(ctx, access, signature, session)
}

// GetRefreshTokenSession returns the request of a refresh token, with
// fosite.ErrInactiveToken for one used or revoked.
func (s *Store) GetRefreshTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	return s.get(ctx, refresh, signature, session)
}

// GetPKCERequestSession returns the PKCE request of a code.
func (s *Store) GetPKCERequestSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	return s.get(ctx, pkceSession, signature, session)
}

// GetOpenIDConnectSession returns the OpenID Connect request of a code;
// openid.ErrNoSessionFound if there is none (any more).
func (s *Store) GetOpenIDConnectSession(ctx context.Context, authorizeCode string, req fosite.Requester) (fosite.Requester, error) {
	var sess fosite.Session
	if req != nil {
		sess = req.GetSession()
	}
	return s.get(ctx, oidcSession, authorizeCode, sess)
}

func (s *Store) get(ctx context.Context, w what, key string, session fosite.Session) (fosite.Requester, error) {
	rec, _, err := s.c.Lookup(ctx, secretKey(w, key), client.LookupOptions{Consistency: s.consistency, WithData: true})
	if err == nil && rec.Kind != s.kind(w) || err != nil && client.TokenOf(err) != nil && client.TokenOf(err).Kind != s.kind(w) {
		// The key of another kind of token (a code presented as an
		// access token): not one of these.
		return nil, fmt.Errorf("fositestore: %s: a token of another kind: %w", titles[w], fosite.ErrNotFound)
	}
	if err == nil {
		return s.decode(ctx, rec.Data, rec.Family, rec.ClientID, rec.Scopes, session)
	}
	switch {
	case gone(err):
		return nil, fmt.Errorf("fositestore: %s: %w: %w", titles[w], fosite.ErrNotFound, err)
	case invalidated(err) && (w == pkceSession || w == oidcSession):
		return nil, fmt.Errorf("fositestore: %s: %w: %w", titles[w], fosite.ErrNotFound, err)
	case invalidated(err):
		tok := client.TokenOf(err)
		if tok == nil {
			return nil, fmt.Errorf("fositestore: %s: %w", titles[w], err)
		}
		req, derr := s.decode(ctx, tok.Data, tok.Family, tok.ClientID, tok.Scopes, session)
		if derr != nil {
			return nil, derr
		}
		if w == code {
			return req, fmt.Errorf("fositestore: %s: %w: %w", titles[w], fosite.ErrInvalidatedAuthorizeCode, err)
		}
		return req, fmt.Errorf("fositestore: %s: %w: %w", titles[w], fosite.ErrInactiveToken, err)
	}
	return nil, fmt.Errorf("fositestore: lookup %s: %w", titles[w], err)
}

// Requests as data.

// stored is a fosite request as a record's data.
type stored struct {
	ID                string          `json:"id"`
	RequestedAt       time.Time       `json:"requested_at"`
	ClientID          string          `json:"client_id"`
	RequestedScope    []string        `json:"requested_scope,omitempty"`
	GrantedScope      []string        `json:"granted_scope,omitempty"`
	RequestedAudience []string        `json:"requested_audience,omitempty"`
	GrantedAudience   []string        `json:"granted_audience,omitempty"`
	Form              url.Values      `json:"form,omitempty"`
	Session           json.RawMessage `json:"session,omitempty"`
}

// secretParams are request parameters a record's data never holds, what
// fosite's sanitation keeps included.
var secretParams = []string{"code", "code_verifier", "refresh_token", "access_token", "client_secret",
	"client_assertion", "assertion", "password", "token", "device_code", "subject_token", "actor_token"}

func encodeRequest(req fosite.Requester) (json.RawMessage, error) {
	st := stored{ID: req.GetID(), RequestedAt: req.GetRequestedAt().UTC(),
		RequestedScope: req.GetRequestedScopes(), GrantedScope: req.GetGrantedScopes(),
		RequestedAudience: req.GetRequestedAudience(), GrantedAudience: req.GetGrantedAudience()}
	if st.ID == "" {
		return nil, errors.New("fositestore: a request without an id")
	}
	if c := req.GetClient(); c != nil {
		st.ClientID = c.GetID()
	}
	if f := req.GetRequestForm(); len(f) > 0 {
		st.Form = url.Values{}
		for k, v := range f {
			st.Form[k] = v
		}
		for _, k := range secretParams {
			delete(st.Form, k)
		}
	}
	if sess := req.GetSession(); sess != nil {
		b, err := json.Marshal(sess)
		if err != nil {
			return nil, fmt.Errorf("fositestore: encode session: %w", err)
		}
		st.Session = b
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("fositestore: encode request: %w", err)
	}
	if len(b) > MaxData {
		return nil, fmt.Errorf("%w: %d bytes of JSON, at most %d", ErrRequestTooLarge, len(b), MaxData)
	}
	return b, nil
}

// decode rebuilds a request from a record's data; without data (a token
// revoked, or past its own expiry) from what the record names: the
// request id (its family), the client and the scopes.
func (s *Store) decode(ctx context.Context, data json.RawMessage, family, clientID string, scopes []string,
	session fosite.Session) (fosite.Requester, error) {
	if session == nil {
		session = s.newSession()
	}
	r := &fosite.Request{ID: family, RequestedScope: fosite.Arguments{}, GrantedScope: scopes,
		Form: url.Values{}, Session: session, RequestedAudience: fosite.Arguments{}, GrantedAudience: fosite.Arguments{}}
	if len(data) > 0 {
		var st stored
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, fmt.Errorf("fositestore: decode request: %w", err)
		}
		if len(st.Session) > 0 {
			if err := json.Unmarshal(st.Session, session); err != nil {
				return nil, fmt.Errorf("fositestore: decode session: %w", err)
			}
		}
		r.ID, r.RequestedAt, clientID = st.ID, st.RequestedAt, st.ClientID
		r.RequestedScope, r.GrantedScope = st.RequestedScope, st.GrantedScope
		r.RequestedAudience, r.GrantedAudience = st.RequestedAudience, st.GrantedAudience
		if st.Form != nil {
			r.Form = st.Form
		}
		c, err := s.GetClient(ctx, clientID)
		if err != nil {
			return nil, fmt.Errorf("fositestore: client %q of a stored request: %w", clientID, err)
		}
		r.Client = c
		return r, nil
	}
	// A request rebuilt for fosite to revoke its grant: the client need
	// not exist any more.
	if c, err := s.GetClient(ctx, clientID); err == nil {
		r.Client = c
	} else {
		r.Client = &fosite.DefaultClient{ID: clientID}
	}
	return r, nil
}

// TokenEndpointError is the error a token endpoint writes for an error of
// fosite's NewAccessRequest or NewAccessResponse:
//
//	resp, err := provider.NewAccessResponse(ctx, ar)
//	if err != nil {
//		provider.WriteAccessError(ctx, w, ar, fositestore.TokenEndpointError(err))
//	}
//
// fosite's authorization code handler answers any storage error of the
// exchange's transaction as server_error (500), so the exchanges of one
// code that lose a race to it, which find the code used only at Commit,
// would get a 500; its refresh handler answers a refresh token found used
// at Commit invalid_request ("retry"), though a retry can only fail. This
// answers both invalid_grant (RFC 6749 §5.2), as fosite answers a code or
// refresh token found used before, and leaves every other error as it is.
func TokenEndpointError(err error) error {
	if err == nil {
		return nil
	}
	rfc := fosite.ErrorToRFC6749Error(err)
	if rfc.ErrorField != fosite.ErrServerError.ErrorField && rfc.ErrorField != fosite.ErrInvalidRequest.ErrorField {
		return err
	}
	var ce *client.Error
	if !errors.As(err, &ce) || !invalidated(ce) && !gone(ce) {
		return err // not a token this store found used, revoked or gone
	}
	hint := "The refresh token was already used, or its grant revoked."
	if errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		hint = "The authorization code has already been used."
	}
	return fosite.ErrInvalidGrant.WithWrap(err).WithHint(hint).WithDebug(err.Error())
}
