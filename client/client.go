// Package client is the Go client of the token store's v1 HTTP API, for
// application servers. Every API error code has a typed error value, so
// callers write errors.Is(err, client.ErrTokenConsumed).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
)

// Client talks to one token store node (any node: writes are forwarded).
type Client struct {
	base string
	key  string
	hc   *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey sends key as the bearer credential.
func WithAPIKey(key string) Option { return func(c *Client) { c.key = key } }

// WithHTTPClient uses hc for requests (timeouts, TLS, pooling).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for the node at addr ("http://127.0.0.1:7400"; a
// bare host:port means http).
func New(addr string, opts ...Option) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	c := &Client{base: strings.TrimRight(addr, "/"), hc: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Error is an error answered by the API.
type Error struct {
	Status     int
	Code       string
	Message    string
	At         *time.Time    // the date the error is about (expiry, revocation), if any
	RetryAfter time.Duration // from Retry-After on 503s
	// Token is the token a 410 is about (never its secret): what an OAuth
	// server revokes after a used code, with Data when asked for
	// (ConsumeRequest.WithData). Get it with TokenOf.
	Token *wire.ErrorToken
	// Op is the index of the op of a batch that failed (Batch); -1 for
	// an error of the batch as a whole, and for any other call's.
	Op int
}

// TokenOf returns the token an API error names (a 410), or nil:
//
//	if tok := client.TokenOf(err); tok != nil && errors.Is(err, client.ErrTokenReused) {
//		revokeWhatWasIssuedFrom(tok.Family, tok.Data)
//	}
func TokenOf(err error) *wire.ErrorToken {
	var e *Error
	if errors.As(err, &e) {
		return e.Token
	}
	return nil
}

// Error returns the answer's status, code and message.
func (e *Error) Error() string {
	return fmt.Sprintf("tokenstore: %d %s: %s", e.Status, e.Code, e.Message)
}

// Is matches errors by code: errors.Is(err, client.ErrTokenExpired).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Errors by code, for errors.Is.
var (
	ErrInvalidJSON    = &Error{Code: wire.CodeInvalidJSON}
	ErrUnknownField   = &Error{Code: wire.CodeUnknownField}
	ErrMissingField   = &Error{Code: wire.CodeMissingField}
	ErrInvalidField   = &Error{Code: wire.CodeInvalidField}
	ErrBodyTooLarge   = &Error{Code: wire.CodeBodyTooLarge}
	ErrUnknownKind    = &Error{Code: wire.CodeUnknownKind}
	ErrTTLTooLong     = &Error{Code: wire.CodeTTLTooLong}
	ErrInvalidMaxUses = &Error{Code: wire.CodeInvalidMaxUses}
	ErrPrefixReserved = &Error{Code: wire.CodePrefixReserved}
	ErrTokenMalformed = &Error{Code: wire.CodeTokenMalformed}
	ErrTokenNotFound  = &Error{Code: wire.CodeTokenNotFound}
	ErrTokenExpired   = &Error{Code: wire.CodeTokenExpired}
	ErrTokenRevoked   = &Error{Code: wire.CodeTokenRevoked}
	ErrTokenConsumed  = &Error{Code: wire.CodeTokenConsumed}
	ErrTokenExists    = &Error{Code: wire.CodeTokenExists}
	ErrKindMismatch   = &Error{Code: wire.CodeKindMismatch}
	ErrClientMismatch = &Error{Code: wire.CodeClientMismatch}
	ErrTokenReused    = &Error{Code: wire.CodeTokenReused}
	ErrFamilyRevoked  = &Error{Code: wire.CodeFamilyRevoked}
	ErrInvalidScope   = &Error{Code: wire.CodeInvalidScope}
	ErrUnauthorized   = &Error{Code: wire.CodeUnauthorized}
	ErrRouteNotFound  = &Error{Code: wire.CodeRouteNotFound}
	ErrNoLeader       = &Error{Code: wire.CodeNoLeader}
	ErrOutcomeUnknown = &Error{Code: wire.CodeOutcomeUnknown}
	ErrReplicaBehind  = &Error{Code: wire.CodeReplicaBehind}
	ErrReplicaStale   = &Error{Code: wire.CodeReplicaStale}
	ErrUnavailable    = &Error{Code: wire.CodeUnavailable}
	ErrInternal       = &Error{Code: wire.CodeInternal}

	ErrMethodNotAllowed      = &Error{Code: wire.CodeMethodNotAllowed}
	ErrNonceReplayed         = &Error{Code: wire.CodeNonceReplayed}
	ErrTimestampOutOfWindow  = &Error{Code: wire.CodeTimestampOutOfWindow}
	ErrNonceStoreUnavailable = &Error{Code: wire.CodeNonceStoreUnavailable}
)

// Meta is what every response tells besides its body.
type Meta struct {
	Index uint64 // X-Tokenstore-Index: the Raft index the answer reflects
	DC    string // X-Tokenstore-DC
	// Local reads also tell how fresh the replica is: how long ago it
	// last heard from a leader (X-Tokenstore-Last-Contact, 0 on the
	// leader) and whether it knows one (X-Tokenstore-Known-Leader).
	LastContact time.Duration
	KnownLeader bool
}

// Issue creates a token and returns its secret (shown only this once).
func (c *Client) Issue(ctx context.Context, req wire.IssueRequest) (*wire.IssueResponse, error) {
	var out wire.IssueResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return &out, err
}

// LookupOptions set the consistency of a lookup.
type LookupOptions struct {
	Consistency string // wire.ConsistencyLocal (default) or wire.ConsistencyLeader
	MinIndex    uint64 // read-your-writes: wait until the replica applied this index
	// IP and UserAgent of the end user, recorded with the last use.
	IP, UserAgent string
	// WithData asks a 410 to carry the token's data (Error.Token.Data),
	// as long as the token has not passed its own expiry.
	WithData bool
}

// Lookup reads a token without consuming it.
func (c *Client) Lookup(ctx context.Context, token string, o LookupOptions) (*wire.Record, Meta, error) {
	var out wire.Record
	m, err := c.do(ctx, http.MethodPost, "/v1/tokens/lookup",
		wire.LookupRequest{Token: token, Consistency: o.Consistency, MinIndex: o.MinIndex, IP: o.IP, UserAgent: o.UserAgent,
			WithData: o.WithData}, &out)
	return &out, m, err
}

// Consume uses a token once (atomically, exactly once); the last use
// invalidates it. Kind and ClientID in req, when set, must match.
func (c *Client) Consume(ctx context.Context, req wire.ConsumeRequest) (*wire.Record, error) {
	var out wire.Record
	_, err := c.do(ctx, http.MethodPost, "/v1/tokens/consume", req, &out)
	return &out, err
}

// Revoke invalidates a token by its secret.
func (c *Client) Revoke(ctx context.Context, token, reason string) (*wire.Record, error) {
	var out wire.Record
	_, err := c.do(ctx, http.MethodPost, "/v1/tokens/revoke", wire.RevokeRequest{Token: token, Reason: reason}, &out)
	return &out, err
}

// Get inspects a token by its public id.
func (c *Client) Get(ctx context.Context, id string) (*wire.Record, error) {
	var out wire.Record
	_, err := c.do(ctx, http.MethodGet, "/v1/tokens/"+url.PathEscape(id), nil, &out)
	return &out, err
}

// RevokeID invalidates a token by its public id.
func (c *Client) RevokeID(ctx context.Context, id, reason string) (*wire.Record, error) {
	var out wire.Record
	p := "/v1/tokens/" + url.PathEscape(id)
	if reason != "" {
		p += "?reason=" + url.QueryEscape(reason)
	}
	_, err := c.do(ctx, http.MethodDelete, p, nil, &out)
	return &out, err
}

// ListOptions page through a subject's tokens.
type ListOptions struct {
	Kind   string
	Limit  int
	Cursor string
}

// List returns one page of a subject's active tokens (no secrets, no data).
// A page examines a bounded number of records, so it may hold fewer than
// o.Limit tokens, none even, and still a NextCursor: page on until
// NextCursor is empty. Subjects are compared byte for byte.
func (c *Client) List(ctx context.Context, subject string, o ListOptions) (*wire.ListResponse, error) {
	q := url.Values{"subject": {subject}}
	if o.Kind != "" {
		q.Set("kind", o.Kind)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	var out wire.ListResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/tokens?"+q.Encode(), nil, &out)
	return &out, err
}

// RevokeSubject invalidates every active token of subject (of kind, if
// set): "log out everywhere". It returns how many were revoked.
func (c *Client) RevokeSubject(ctx context.Context, subject, kind, reason string) (int, error) {
	var out wire.BulkRevokeResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/subjects/"+url.PathEscape(subject)+"/revoke",
		wire.BulkRevokeRequest{Kind: kind, Reason: reason}, &out)
	return out.Revoked, err
}

// Rotate rotates a refresh token: it is consumed and its successor (and
// the access token, if req.Access asks for one) issued in the same grant
// family. Presenting a refresh token that was already rotated returns
// ErrTokenReused, and the whole family is revoked, except for a retry
// within the server's rotation grace, which returns the same successor.
func (c *Client) Rotate(ctx context.Context, req wire.RotateRequest) (*wire.RotateResponse, error) {
	var out wire.RotateResponse
	if _, err := c.do(ctx, http.MethodPost, "/v1/tokens/rotate", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeFamily invalidates every active token of a grant family, and the
// family for good: nothing can be issued or rotated into it after.
func (c *Client) RevokeFamily(ctx context.Context, family, reason string) (int, error) {
	return c.RevokeFamilyKind(ctx, family, "", reason)
}

// RevokeFamilyKind invalidates the active tokens of kind in a grant
// family and leaves the family open: tokens can still be issued and
// rotated into it. An empty kind is RevokeFamily. It returns how many
// were revoked.
func (c *Client) RevokeFamilyKind(ctx context.Context, family, kind, reason string) (int, error) {
	var out wire.BulkRevokeResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/families/"+url.PathEscape(family)+"/revoke",
		wire.BulkRevokeRequest{Kind: kind, Reason: reason}, &out)
	return out.Revoked, err
}

// Batch applies up to wire.MaxBatchOps ops (IssueOp, ConsumeOp, RevokeOp,
// RotateOp, RevokeFamilyOp) in order, all or nothing, in one write. Each
// op sees the effects of those before it. On success the response holds
// every op's answer, in order (Results[i].Issue, .Record, .Rotate or
// .Revoked, by the op). If
// an op fails, nothing of the batch is applied and the error is that op's
// *Error with Op its index; but a consumed code or refresh token presented
// again still revokes its family (ErrTokenReused), as alone.
func (c *Client) Batch(ctx context.Context, ops ...wire.BatchOp) (*wire.BatchResponse, error) {
	var raw struct {
		Index   uint64            `json:"index"`
		Results []json.RawMessage `json:"results"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/batch", wire.BatchRequest{Ops: ops}, &raw); err != nil {
		return nil, err
	}
	if len(raw.Results) != len(ops) {
		return nil, fmt.Errorf("tokenstore: a batch of %d ops answered %d results", len(ops), len(raw.Results))
	}
	out := &wire.BatchResponse{Index: raw.Index, Results: make([]wire.BatchResult, len(ops))}
	for i, b := range raw.Results {
		if err := out.Results[i].Decode(ops[i].Op, b); err != nil {
			return nil, fmt.Errorf("tokenstore: decode batch result %d: %w", i, err)
		}
	}
	return out, nil
}

// IssueOp is an issue in a batch.
func IssueOp(req wire.IssueRequest) wire.BatchOp { return wire.BatchOp{Op: wire.OpIssue, Issue: &req} }

// ConsumeOp is a consume in a batch.
func ConsumeOp(req wire.ConsumeRequest) wire.BatchOp {
	return wire.BatchOp{Op: wire.OpConsume, Consume: &req}
}

// RevokeOp is a revocation by secret in a batch.
func RevokeOp(req wire.RevokeRequest) wire.BatchOp {
	return wire.BatchOp{Op: wire.OpRevoke, Revoke: &req}
}

// RotateOp is a refresh-token rotation in a batch.
func RotateOp(req wire.RotateRequest) wire.BatchOp {
	return wire.BatchOp{Op: wire.OpRotate, Rotate: &req}
}

// RevokeFamilyOp is a family revocation in a batch: with req.Kind, of the
// family's active tokens of that kind, the family left open
// (RevokeFamilyKind); without, of the family for good (RevokeFamily). Its
// result is Results[i].Revoked.
func RevokeFamilyOp(req wire.RevokeFamilyRequest) wire.BatchOp {
	return wire.BatchOp{Op: wire.OpRevokeFamily, RevokeFamily: &req}
}

// CheckNonce records an OAuth 1.0 nonce of scope sent at timestamp (Unix
// seconds). It returns nil the first time; ErrNonceReplayed after that,
// ErrTimestampOutOfWindow for a timestamp too far from now, and
// ErrNonceStoreUnavailable when the nonce store cannot answer.
func (c *Client) CheckNonce(ctx context.Context, scope, nonce string, timestamp int64) error {
	var out wire.NonceResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/nonces", wire.NonceRequest{Scope: scope, Nonce: nonce, Timestamp: timestamp}, &out)
	if err == nil && !out.Fresh {
		return fmt.Errorf("tokenstore: nonce answer without fresh=true")
	}
	return err
}

// Introspect asks about a token the RFC 7662 way (a form with token=). An
// unknown, expired, revoked, consumed or malformed token is no error: the
// answer is Active false.
func (c *Client) Introspect(ctx context.Context, token string) (*wire.IntrospectResponse, error) {
	var out wire.IntrospectResponse
	form := url.Values{"token": {token}}.Encode()
	_, err := c.send(ctx, http.MethodPost, "/v1/introspect", "application/x-www-form-urlencoded", strings.NewReader(form), &out)
	return &out, err
}

// Cluster describes the cluster: its nodes with DC, role, health and
// applied index, the leader and the primary DC.
func (c *Client) Cluster(ctx context.Context) (*wire.ClusterResponse, error) {
	var out wire.ClusterResponse
	_, err := c.do(ctx, http.MethodGet, "/v1/cluster", nil, &out)
	return &out, err
}

// Snapshot asks the node for a Raft snapshot of its state now and waits
// until it is on disk (POST /v1/operator/snapshot). A node that applied
// nothing since its last snapshot answers 409 nothing_to_snapshot.
func (c *Client) Snapshot(ctx context.Context) (*wire.SnapshotResponse, error) {
	var out wire.SnapshotResponse
	_, err := c.do(ctx, http.MethodPost, "/v1/operator/snapshot", nil, &out)
	return &out, err
}

// Ready returns nil when the node answers /readyz with 200.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil)
	return err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) (Meta, error) {
	if in == nil {
		return c.send(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return Meta{}, err
	}
	return c.send(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

// send makes one request with a body of contentType and decodes a JSON
// answer into out, or the error shape into an *Error.
func (c *Client) send(ctx context.Context, method, path, contentType string, body io.Reader, out any) (Meta, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return Meta{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Meta{}, err
	}
	defer resp.Body.Close()
	m := Meta{DC: resp.Header.Get(wire.HeaderDC)}
	m.Index, _ = strconv.ParseUint(resp.Header.Get(wire.HeaderIndex), 10, 64)
	if ms, err := strconv.ParseInt(resp.Header.Get(wire.HeaderLastContact), 10, 64); err == nil {
		m.LastContact = time.Duration(ms) * time.Millisecond
	}
	m.KnownLeader = resp.Header.Get(wire.HeaderKnownLeader) == "true"
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return m, err
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode, Op: -1}
		var we wire.Error
		if json.Unmarshal(b, &we) == nil && we.Error.Code != "" {
			e.Code, e.Message, e.At, e.Token = we.Error.Code, we.Error.Message, we.Error.At, we.Error.Token
			if we.Error.Op != nil {
				e.Op = *we.Error.Op
			}
		} else {
			e.Code, e.Message = wire.CodeInternal, strings.TrimSpace(string(b))
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return m, e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return m, fmt.Errorf("tokenstore: decode %s %s response: %w", method, path, err)
		}
	}
	return m, nil
}
