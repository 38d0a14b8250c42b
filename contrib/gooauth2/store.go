package gooauth2

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-oauth2/oauth2/v4"
	oautherrors "github.com/go-oauth2/oauth2/v4/errors"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// The kinds used unless WithKinds says otherwise: the built-in ones.
const (
	DefaultCodeKind    = "oauth2_code"
	DefaultAccessKind  = "access"
	DefaultRefreshKind = "oauth2_refresh"
)

// ExtensionFamily is the extension key under which GetByCode and
// GetByRefresh name the grant family (a public id). go-oauth2 copies a
// code's extension into the TokenInfo of the tokens it yields, which is
// how Create finds the code to consume in its batch: an
// ExtractExtensionHandler that replaces the extension must keep this key.
// Without it Create cannot tell the exchange from a grant without a code:
// it issues the tokens into a new family and the code is not consumed.
const ExtensionFamily = "tokenstore_family"

// refreshedPrefix starts the access "token" of a TokenInfo read by
// GetByRefresh: go-oauth2 removes the access token a refresh replaces by
// that string, and the real one is never stored.
const refreshedPrefix = "tokenstore-family-access:"

// The reasons recorded with what a replay revokes.
const (
	codeReplayReason    = "authorization code replayed"
	refreshReplayReason = "refresh token replayed"
)

// TokenStore is an oauth2.TokenStore on a tokenstore node.
type TokenStore struct {
	c                                 *client.Client
	codeKind, accessKind, refreshKind string
	accessConsistency                 string
	pending                           *pendingCodes
	pendingMax                        int
	// spent holds the codes this process's Creates consumed, for the
	// exchanges that raced them; spentRefresh the refresh tokens, for
	// RemoveByRefresh (by digest). Both forget after spentGrace.
	spent        *pendingCodes
	spentRefresh *recentTokens
	now          func() time.Time
}

var _ oauth2.TokenStore = (*TokenStore)(nil)

// Option configures a TokenStore.
type Option func(*TokenStore)

// WithKinds sets the kinds of codes, access tokens and refresh tokens;
// an empty name keeps the default.
func WithKinds(code, access, refresh string) Option {
	return func(s *TokenStore) {
		s.codeKind = cmp.Or(code, s.codeKind)
		s.accessKind = cmp.Or(access, s.accessKind)
		s.refreshKind = cmp.Or(refresh, s.refreshKind)
	}
}

// WithAccessConsistency sets the consistency of access token lookups
// (bearer validation): wire.ConsistencyLocal, the default, reads the
// node's replica, which may not have applied a token issued through
// another node a moment ago, nor its revocation; wire.ConsistencyLeader
// asks the leader. Codes and refresh tokens are always read at the leader.
func WithAccessConsistency(level string) Option {
	return func(s *TokenStore) { s.accessConsistency = level }
}

// WithPendingCodes bounds the codes the TokenStore remembers between an
// exchange's GetByCode and its Create (DefaultPendingCodes). A code is
// forgotten when it expires, or when n codes were read after it: an
// exchange that takes longer than n other exchanges answers invalid_grant.
// n also bounds the codes and refresh tokens its Creates consumed that it
// remembers for a minute (see RemoveByCode, RemoveByRefresh).
func WithPendingCodes(n int) Option {
	return func(s *TokenStore) { s.pendingMax = n }
}

// NewTokenStore returns a TokenStore that keeps its tokens in the store
// c talks to.
func NewTokenStore(c *client.Client, opts ...Option) *TokenStore {
	s := &TokenStore{
		c: c, codeKind: DefaultCodeKind, accessKind: DefaultAccessKind, refreshKind: DefaultRefreshKind,
		accessConsistency: wire.ConsistencyLocal, now: time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	s.pending = newPendingCodes(s.pendingMax)
	s.spent = newPendingCodes(s.pendingMax)
	s.spentRefresh = newRecentTokens(s.pendingMax, spentGrace)
	return s
}

// Create stores a code, or an access token with its refresh token.
func (s *TokenStore) Create(ctx context.Context, info oauth2.TokenInfo) error {
	if info.GetCode() != "" {
		return s.createCode(ctx, info)
	}
	return s.createTokens(ctx, info)
}

func (s *TokenStore) createCode(ctx context.Context, info oauth2.TokenInfo) error {
	ttl, err := s.ttl(info.GetCodeCreateAt(), info.GetCodeExpiresIn())
	if err != nil {
		return fmt.Errorf("gooauth2: code: %w", err)
	}
	data, err := encodeData(recordData{
		RedirectURI: info.GetRedirectURI(), Challenge: info.GetCodeChallenge(),
		ChallengeMethod: string(info.GetCodeChallengeMethod()), AccessExp: info.GetAccessExpiresIn(),
		Extension: extension(info),
	})
	if err != nil {
		return err
	}
	_, err = s.c.Issue(ctx, wire.IssueRequest{
		Kind: s.codeKind, Token: info.GetCode(), Subject: info.GetUserID(), ClientID: info.GetClientID(),
		Scopes: scopes(info.GetScope()), TTL: ttl, Data: data,
	})
	if err != nil {
		return fmt.Errorf("gooauth2: issue code: %w", err)
	}
	return nil
}

// createTokens issues the access token and the refresh token of info in
// one batch, into the grant's family. For an exchanged code, the batch
// consumes the code first; for a refresh, it revokes the grant's access
// tokens (the one the refresh replaces) and consumes the refresh token
// presented, when a new one replaces it. Nothing applies unless all of it
// does.
func (s *TokenStore) createTokens(ctx context.Context, info oauth2.TokenInfo) error {
	family, prev := familyOf(info)
	var ops []wire.BatchOp
	consumeAt, code, spent := -1, "", false
	switch {
	case prev != nil:
		// The access token this refresh replaces stops working; issued
		// after this op, the new one is not among those revoked.
		ops = append(ops, client.RevokeFamilyOp(wire.RevokeFamilyRequest{Family: family, Kind: s.accessKind, Reason: "refreshed"}))
		if refresh := info.GetRefresh(); refresh != "" && refresh != prev.refresh {
			// Of concurrent refreshes with one token, one batch consumes
			// it; the others detect the reuse, which revokes the family.
			consumeAt = len(ops)
			ops = append(ops, client.ConsumeOp(wire.ConsumeRequest{Token: prev.refresh, Kind: s.refreshKind, ClientID: info.GetClientID()}))
		}
	case family != "":
		// The family is a code's (GetByCode named it): the code that
		// RemoveByCode took.
		// Or, if a Create of this process consumed it a moment ago, the
		// code as it was: this exchange raced that one, and its consume
		// detects the reuse.
		if code = s.pending.taken(family, s.now()); code == "" {
			code, spent = s.spent.taken(family, s.now()), true
		}
		if code == "" {
			return oautherrors.ErrInvalidGrant
		}
		consumeAt = len(ops)
		ops = append(ops, client.ConsumeOp(wire.ConsumeRequest{Token: code, Kind: s.codeKind, ClientID: info.GetClientID()}))
	default:
		var err error
		if family, err = newFamily(); err != nil {
			return err
		}
	}
	issues := len(ops)
	// Without a new refresh token (IsGenerateRefresh off), a refresh
	// keeps the one it was given, which is stored already.
	if refresh := info.GetRefresh(); refresh != "" && (prev == nil || refresh != prev.refresh) {
		ttl, err := s.ttl(info.GetRefreshCreateAt(), info.GetRefreshExpiresIn())
		if err != nil {
			return fmt.Errorf("gooauth2: refresh token: %w", err)
		}
		data, err := encodeData(recordData{
			RedirectURI: info.GetRedirectURI(), AccessExp: info.GetAccessExpiresIn(), Extension: extension(info),
		})
		if err != nil {
			return err
		}
		ops = append(ops, client.IssueOp(wire.IssueRequest{
			Kind: s.refreshKind, Token: refresh, Subject: info.GetUserID(), ClientID: info.GetClientID(),
			Scopes: scopes(info.GetScope()), TTL: ttl, Family: family, Data: data,
		}))
	}
	if access := info.GetAccess(); access != "" {
		ttl, err := s.ttl(info.GetAccessCreateAt(), info.GetAccessExpiresIn())
		if err != nil {
			return fmt.Errorf("gooauth2: access token: %w", err)
		}
		data, err := encodeData(recordData{RedirectURI: info.GetRedirectURI(), Extension: extension(info)})
		if err != nil {
			return err
		}
		ops = append(ops, client.IssueOp(wire.IssueRequest{
			Kind: s.accessKind, Token: access, Subject: info.GetUserID(), ClientID: info.GetClientID(),
			Scopes: scopes(info.GetScope()), TTL: ttl, Family: family, Data: data,
		}))
	}
	if len(ops) == issues {
		return nil // a refresh without new tokens: nothing to write
	}
	err := s.c.BatchInSteps(ctx, ops...)
	var ce *client.Error
	switch {
	case code == "" || spent:
	case err == nil:
		// The code is used up: no other exchange of it can succeed. It
		// is kept a moment for those that raced this one.
		if exp, ok := s.pending.consumed(code, family); ok {
			until := s.now().Add(spentGrace)
			if !exp.IsZero() && exp.Before(until) {
				until = exp
			}
			s.spent.spend(code, family, until, s.now())
		}
	case errors.As(err, &ce) && ce.Code != wire.CodeOutcomeUnknown:
		// The batch definitely did not consume the code: this exchange
		// is over.
		s.pending.done(code, family)
	}
	switch {
	case err == nil:
		if prev != nil && consumeAt >= 0 {
			// go-oauth2 removes the refresh token next: nothing to write.
			s.spentRefresh.add(prev.refresh, s.now())
		}
		return nil
	case consumeAt >= 0 && errors.As(err, &ce) && ce.Op == consumeAt:
		// The code or refresh token was used (a concurrent exchange or
		// refresh won: tokenstore detected the reuse and revoked the
		// family), has expired or been revoked; nothing was issued.
		reason := codeReplayReason
		if prev != nil {
			reason = refreshReplayReason
		}
		if used(err) {
			return s.replayed(ctx, err, reason)
		}
		if gone(err) || errors.Is(err, client.ErrTokenRevoked) || errors.Is(err, client.ErrFamilyRevoked) ||
			errors.Is(err, client.ErrKindMismatch) || errors.Is(err, client.ErrClientMismatch) {
			return oautherrors.ErrInvalidGrant
		}
	case errors.Is(err, client.ErrFamilyRevoked):
		return oautherrors.ErrInvalidGrant
	}
	return fmt.Errorf("gooauth2: issue tokens: %w", err)
}

// RemoveByCode writes nothing: it notes the code, which GetByCode read,
// as taken by this exchange, and Create consumes it in the batch that
// issues the tokens.
func (s *TokenStore) RemoveByCode(ctx context.Context, code string) error {
	if code == "" || !s.pending.take(code, s.now()) && !s.spent.take(code, s.now()) {
		return oautherrors.ErrInvalidAuthorizeCode
	}
	return nil
}

// RemoveByAccess revokes an access token.
func (s *TokenStore) RemoveByAccess(ctx context.Context, access string) error {
	if access == "" || strings.HasPrefix(access, refreshedPrefix) {
		return nil // revoked by the refresh's Create
	}
	if _, err := s.c.Revoke(ctx, access, "removed"); err != nil && !gone(err) {
		return fmt.Errorf("gooauth2: revoke access token: %w", err)
	}
	return nil
}

// RemoveByRefresh revokes a refresh token. After a refresh it writes
// nothing: the refresh's Create consumed the token in its batch, and
// remembers it (by digest) for this call. A revocation would change
// nothing (a consumed token revoked stays as it is) but, failing, would
// fail a refresh whose new tokens are stored, and the client, retrying
// with its old refresh token, would revoke its grant.
func (s *TokenStore) RemoveByRefresh(ctx context.Context, refresh string) error {
	if refresh == "" || s.spentRefresh.forget(refresh, s.now()) {
		return nil
	}
	if _, err := s.c.Revoke(ctx, refresh, "removed"); err != nil && !gone(err) {
		return fmt.Errorf("gooauth2: revoke refresh token: %w", err)
	}
	return nil
}

// replayed makes sure the family of a code or refresh token presented
// again is revoked for good (RFC 6749 §4.1.2, RFC 9700 §4.14), and
// answers invalid grant. err is tokenstore's answer to the token's
// consume: token_reused means tokenstore revoked the family;
// token_consumed (a kind without reuse detection) that the family is
// revoked here.
func (s *TokenStore) replayed(ctx context.Context, err error, reason string) error {
	if tok := client.TokenOf(err); tok != nil && !errors.Is(err, client.ErrTokenReused) {
		if _, err := s.c.RevokeFamily(ctx, cmp.Or(tok.Family, tok.ID), reason+" ("+tok.ID+")"); err != nil {
			return fmt.Errorf("gooauth2: revoke family: %w", err)
		}
	}
	return oautherrors.ErrInvalidGrant
}

// used tells the answers about a token consumed already.
func used(err error) bool {
	return errors.Is(err, client.ErrTokenConsumed) || errors.Is(err, client.ErrTokenReused)
}

// GetByCode reads a code at the leader and notes it for RemoveByCode and
// Create. A used code is a replay: it is consumed again, which revokes
// its grant, and is then missing.
func (s *TokenStore) GetByCode(ctx context.Context, code string) (oauth2.TokenInfo, error) {
	rec, err := s.lookup(ctx, code, s.codeKind, wire.ConsistencyLeader)
	if used(err) {
		if err := s.presentAgain(ctx, code, s.codeKind, codeReplayReason); !errors.Is(err, oautherrors.ErrInvalidGrant) {
			return nil, err
		}
		return nil, nil
	}
	if rec == nil || err != nil {
		return nil, err
	}
	d, err := decodeData(rec.Data)
	if err != nil {
		return nil, err
	}
	family := cmp.Or(rec.Family, rec.ID)
	var expires time.Time
	if rec.ExpiresAt != nil {
		expires = *rec.ExpiresAt
	}
	s.pending.read(code, family, expires, s.now())
	ti := s.info(rec, d, family)
	ti.Code, ti.CodeCreateAt, ti.CodeExpiresIn = code, rec.CreatedAt, lifetime(rec)
	ti.CodeChallenge, ti.CodeChallengeMethod = d.Challenge, d.ChallengeMethod
	ti.AccessExpiresIn = d.AccessExp
	return ti, nil
}

// presentAgain consumes a used token of kind where reuse is detected:
// tokenstore revokes the family, counts and logs the reuse. It answers
// errors.ErrInvalidGrant once the family is revoked.
func (s *TokenStore) presentAgain(ctx context.Context, token, kind, reason string) error {
	_, err := s.c.Consume(ctx, wire.ConsumeRequest{Token: token, Kind: kind})
	if !used(err) {
		return fmt.Errorf("gooauth2: a used %s presented again answered %v", kind, err)
	}
	return s.replayed(ctx, err, reason)
}

// GetByAccess reads an access token at the consistency set by
// WithAccessConsistency.
func (s *TokenStore) GetByAccess(ctx context.Context, access string) (oauth2.TokenInfo, error) {
	if strings.HasPrefix(access, refreshedPrefix) {
		return nil, nil
	}
	rec, err := s.lookup(ctx, access, s.accessKind, s.accessConsistency)
	if rec == nil || err != nil {
		if used(err) {
			return nil, nil
		}
		return nil, err
	}
	d, err := decodeData(rec.Data)
	if err != nil {
		return nil, err
	}
	ti := s.info(rec, d, rec.Family)
	ti.Access, ti.AccessCreateAt, ti.AccessExpiresIn = access, rec.CreatedAt, lifetime(rec)
	return ti, nil
}

// GetByRefresh reads a refresh token at the leader; a used one is a
// replay, and revokes its family.
func (s *TokenStore) GetByRefresh(ctx context.Context, refresh string) (oauth2.TokenInfo, error) {
	rec, err := s.lookup(ctx, refresh, s.refreshKind, wire.ConsistencyLeader)
	if used(err) {
		return nil, s.presentAgain(ctx, refresh, s.refreshKind, refreshReplayReason)
	}
	if rec == nil || err != nil {
		return nil, err
	}
	d, err := decodeData(rec.Data)
	if err != nil {
		return nil, err
	}
	family := cmp.Or(rec.Family, rec.ID)
	ti := s.info(rec, d, family)
	ti.Refresh, ti.RefreshCreateAt, ti.RefreshExpiresIn = refresh, rec.CreatedAt, lifetime(rec)
	ti.Access, ti.AccessExpiresIn = refreshedPrefix+family, d.AccessExp
	return &refreshed{Token: ti, grant: &grant{family: family, refresh: refresh}}, nil
}

// lookup reads token as a record of kind. A token that is not there to
// use (unknown, malformed, expired, revoked, of another kind) is a nil
// record and a nil error; a used one is the *client.Error.
func (s *TokenStore) lookup(ctx context.Context, token, kind, consistency string) (*wire.Record, error) {
	if token == "" {
		return nil, nil
	}
	rec, _, err := s.c.Lookup(ctx, token, client.LookupOptions{Consistency: consistency})
	switch {
	case err == nil && rec.Kind == kind:
		return rec, nil
	case err == nil:
		return nil, nil
	case used(err):
		if tok := client.TokenOf(err); tok != nil && tok.Kind != kind {
			return nil, nil
		}
		return nil, err
	case gone(err):
		return nil, nil
	}
	return nil, fmt.Errorf("gooauth2: look up %s: %w", kind, err)
}

// gone tells the answers about a token that is not there to use.
func gone(err error) bool {
	for _, e := range []error{client.ErrTokenNotFound, client.ErrTokenMalformed, client.ErrTokenExpired,
		client.ErrTokenRevoked, client.ErrFamilyRevoked} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// ttl is the TTL that makes a token issued now expire at createAt +
// expiresIn; "" (the kind's default) for a token that never expires.
func (s *TokenStore) ttl(createAt time.Time, expiresIn time.Duration) (string, error) {
	if expiresIn <= 0 {
		return "", nil
	}
	if createAt.IsZero() {
		createAt = s.now()
	}
	left := createAt.Add(expiresIn).Sub(s.now())
	if left <= 0 {
		return "", errors.New("expired before it was stored")
	}
	return max(left.Round(time.Millisecond), time.Millisecond).String(), nil
}

// lifetime is how long a record lives from its creation; 0: forever.
func lifetime(rec *wire.Record) time.Duration {
	if rec.ExpiresAt == nil {
		return 0
	}
	return rec.ExpiresAt.Sub(rec.CreatedAt)
}

func scopes(scope string) []string { return strings.Fields(scope) }

// newFamily names a grant that did not start with a code.
func newFamily() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("gooauth2: new family: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
