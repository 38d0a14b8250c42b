// Package wire holds the JSON shapes of the v1 HTTP API and its stable
// error codes. It has no dependencies beyond the standard library, so the
// server and the Go client share one definition of the contract.
package wire

import (
	"encoding/json"
	"time"
)

// Response headers.
const (
	HeaderIndex = "X-Tokenstore-Index" // Raft index the answer reflects
	HeaderDC    = "X-Tokenstore-DC"    // datacenter of the node that answered
	// Local reads also tell how fresh the replica is, as Consul does:
	// milliseconds since the node last heard from a leader (0 on the
	// leader), and whether it knows a leader ("true" or "false").
	HeaderLastContact = "X-Tokenstore-Last-Contact"
	HeaderKnownLeader = "X-Tokenstore-Known-Leader"
	// HeaderAPIKey carries the caller's API key where Authorization is
	// the end user's (Envoy external authorization).
	HeaderAPIKey = "X-Tokenstore-Key"
	// What Envoy external authorization answers about an allowed request.
	HeaderSubject  = "X-Tokenstore-Subject"
	HeaderRLC      = "X-Tokenstore-Rlc"
	HeaderClientID = "X-Tokenstore-Client-Id"
	HeaderTokenID  = "X-Tokenstore-Token-Id"
)

// Read consistency levels for lookups.
const (
	ConsistencyLocal  = "local"  // this node's replica (default)
	ConsistencyLeader = "leader" // linearizable: the leader confirms it leads
)

// Stable error codes. Clients match on these, never on messages.
const (
	CodeInvalidJSON    = "invalid_json"
	CodeUnknownField   = "unknown_field"
	CodeMissingField   = "missing_field"
	CodeInvalidField   = "invalid_field"
	CodeBodyTooLarge   = "body_too_large"
	CodeUnknownKind    = "unknown_kind"
	CodeTTLTooLong     = "ttl_too_long"
	CodeInvalidMaxUses = "invalid_max_uses"
	CodePrefixReserved = "token_prefix_reserved"
	CodeTokenMalformed = "token_malformed"
	CodeTokenNotFound  = "token_not_found"
	CodeTokenExpired   = "token_expired"
	CodeTokenRevoked   = "token_revoked"
	CodeTokenConsumed  = "token_consumed"
	CodeTokenExists    = "token_exists"
	CodeKindMismatch   = "kind_mismatch"
	CodeClientMismatch = "client_mismatch"
	CodeTokenReused    = "token_reused"
	CodeFamilyRevoked  = "family_revoked"
	CodeInvalidScope   = "invalid_scope"
	// Envoy external authorization denials.
	CodeCredentialMissing  = "credential_missing"
	CodeCredentialInvalid  = "credential_invalid"
	CodeCredentialConflict = "credential_conflict"
	CodeUnauthorized       = "unauthorized"
	CodeRouteNotFound      = "route_not_found"
	CodeNoLeader           = "no_leader"
	CodeOutcomeUnknown     = "write_outcome_unknown"
	CodeReplicaBehind      = "replica_behind"
	CodeReplicaHalted      = "replica_halted"
	CodeReplicaStale       = "replica_stale"
	CodeWriteRefused       = "write_refused"
	CodeUpgrading          = "cluster_upgrading"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeNothingToSnapshot  = "nothing_to_snapshot"

	CodeNonceReplayed         = "nonce_replayed"
	CodeTimestampOutOfWindow  = "timestamp_out_of_window"
	CodeNonceStoreUnavailable = "nonce_store_unavailable"
)

// Error is the body of every error response.
type Error struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody describes one error.
type ErrorBody struct {
	Code    string     `json:"code"`
	Message string     `json:"message"`
	At      *time.Time `json:"at,omitempty"`
	// Token names the token a 410 is about (never its secret), so that an
	// OAuth server can revoke what it issued from a used code.
	Token *ErrorToken `json:"token,omitempty"`
	// Op is the 0-based index of the op of a batch that failed; absent
	// for any other error, the batch's own (bad JSON, no ops, too many)
	// included.
	Op *int `json:"op,omitempty"`
}

// ErrorToken is the token a 410 is about, with a record's wire names. Data
// is there only when the request asked for it ("with_data") and the token
// has not passed its own expiry.
type ErrorToken struct {
	ID            string          `json:"id"`
	Kind          string          `json:"kind"`
	Subject       string          `json:"subject"`
	ClientID      string          `json:"client_id"`
	Family        string          `json:"family"`
	Scopes        []string        `json:"scopes"`
	CreatedAt     *time.Time      `json:"created_at"`
	ExpiresAt     *time.Time      `json:"expires_at"`
	InvalidatedAt *time.Time      `json:"invalidated_at,omitempty"`
	Reason        string          `json:"reason,omitempty"`
	Data          json.RawMessage `json:"data,omitempty"`
}

// Record is a token as the API shows it: never the secret.
type Record struct {
	ID            string          `json:"id"`
	Kind          string          `json:"kind"`
	Status        string          `json:"status"`
	Subject       string          `json:"subject"`
	ClientID      string          `json:"client_id"`
	Scopes        []string        `json:"scopes"`
	Family        string          `json:"family"`
	Data          json.RawMessage `json:"data,omitempty"`
	RLC           string          `json:"rlc"`
	MaxUses       int64           `json:"max_uses"`
	UsesLeft      int64           `json:"uses_left"`
	CreatedAt     time.Time       `json:"created_at"`
	ExpiresAt     *time.Time      `json:"expires_at"`
	LastUsedAt    *time.Time      `json:"last_used_at"`
	IP            string          `json:"ip"`
	UserAgent     string          `json:"user_agent"`
	Title         string          `json:"title"`
	Generator     string          `json:"generator,omitempty"`
	InvalidatedAt *time.Time      `json:"invalidated_at,omitempty"`
	Reason        string          `json:"reason,omitempty"`
}

// IssueRequest is the body of POST /v1/tokens.
type IssueRequest struct {
	Kind      string          `json:"kind"`
	Subject   string          `json:"subject,omitempty"`
	ClientID  string          `json:"client_id,omitempty"`
	Scopes    []string        `json:"scopes,omitempty"`
	TTL       string          `json:"ttl,omitempty"` // Go duration; empty = the kind's default
	MaxUses   int64           `json:"max_uses,omitempty"`
	Family    string          `json:"family,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	RLC       string          `json:"rlc,omitempty"`
	IP        string          `json:"ip,omitempty"`
	UserAgent string          `json:"user_agent,omitempty"`
	Title     string          `json:"title,omitempty"`
	Token     string          `json:"token,omitempty"` // bring your own secret
}

// IssueResponse answers POST /v1/tokens.
type IssueResponse struct {
	Token     string     `json:"token"`
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	ExpiresAt *time.Time `json:"expires_at"`
	Index     uint64     `json:"index"`
	// Family is the grant family; a code or refresh token issued without
	// one starts a family named by its id.
	Family string `json:"family,omitempty"`
}

// RotateRequest is the body of POST /v1/tokens/rotate: the refresh token
// to rotate, and optionally an access token to issue with its successor.
type RotateRequest struct {
	Token     string         `json:"token"`
	ClientID  string         `json:"client_id,omitempty"` // when set, must be the grant's
	TTL       string         `json:"ttl,omitempty"`       // of the successor; default: the kind's
	Access    *AccessRequest `json:"access,omitempty"`
	IP        string         `json:"ip,omitempty"`
	UserAgent string         `json:"user_agent,omitempty"`
}

// AccessRequest asks a rotation for an access token in the same family.
type AccessRequest struct {
	TTL    string   `json:"ttl,omitempty"`
	Scopes []string `json:"scopes,omitempty"` // a subset of the grant's; default: all of them
}

// RotateResponse answers a rotation: the successor refresh token, and the
// access token when one was asked for.
type RotateResponse struct {
	IssueResponse
	Access *IssueResponse `json:"access,omitempty"`
}

// LookupRequest is the body of POST /v1/tokens/lookup.
type LookupRequest struct {
	Token       string `json:"token"`
	Consistency string `json:"consistency,omitempty"`
	MinIndex    uint64 `json:"min_index,omitempty"`
	// IP and UserAgent, when given, are recorded with the token's last use
	// (kinds whose policy updates last_used).
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	// WithData asks a 410 to carry the token's data in error.token.
	WithData bool `json:"with_data,omitempty"`
}

// ConsumeRequest is the body of POST /v1/tokens/consume.
type ConsumeRequest struct {
	Token    string `json:"token"`
	Kind     string `json:"kind,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	// WithData asks a 410 (a used code: token_reused) to carry the
	// token's data in error.token, so a server can rebuild its request.
	WithData bool `json:"with_data,omitempty"`
}

// RevokeRequest is the body of POST /v1/tokens/revoke.
type RevokeRequest struct {
	Token  string `json:"token"`
	Reason string `json:"reason,omitempty"`
}

// BulkRevokeRequest is the body of the subject and family revocations.
// With Kind, a family revocation revokes the family's tokens of that kind
// only and leaves the family open; without, the family is revoked for
// good.
type BulkRevokeRequest struct {
	Kind   string `json:"kind,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// BulkRevokeResponse counts what a bulk revocation invalidated.
type BulkRevokeResponse struct {
	Revoked int `json:"revoked"`
}

// ListResponse is one page of a subject's tokens. It may hold fewer
// tokens than the limit asked, none even, with a NextCursor: the listing
// ends only when NextCursor is empty.
type ListResponse struct {
	Tokens     []Record `json:"tokens"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// NonceRequest is the body of POST /v1/nonces.
type NonceRequest struct {
	Scope     string `json:"scope"`     // e.g. the OAuth consumer key
	Nonce     string `json:"nonce"`     // oauth_nonce
	Timestamp int64  `json:"timestamp"` // oauth_timestamp, Unix seconds
}

// NonceResponse answers a fresh nonce.
type NonceResponse struct {
	Fresh bool `json:"fresh"`
}

// SnapshotResponse is the body of POST /v1/operator/snapshot.
type SnapshotResponse struct {
	Index  uint64 `json:"index"`   // the last log index the snapshot holds
	Bytes  int64  `json:"bytes"`   // its size on disk
	TookMS int64  `json:"took_ms"` // from the request until it was on disk
}

// ClusterResponse is the body of GET /v1/cluster.
type ClusterResponse struct {
	Leader    string `json:"leader"`     // node id; "" while there is none
	PrimaryDC string `json:"primary_dc"` // the leader's DC
	// PreferredPrimaryDC is where leadership moves when it can (--primary-dc).
	PreferredPrimaryDC string        `json:"preferred_primary_dc,omitempty"`
	Nodes              []ClusterNode `json:"nodes"`
}

// ClusterNode is one server of the Raft configuration.
type ClusterNode struct {
	ID           string `json:"id"`
	DC           string `json:"dc"`
	Role         string `json:"role"` // leader, voter or nonvoter
	APIAddr      string `json:"api_addr"`
	RaftAddr     string `json:"raft_addr"`
	AppliedIndex uint64 `json:"applied_index"`
	Lag          uint64 `json:"lag"`
	Healthy      bool   `json:"healthy"`
}

// IntrospectResponse is the RFC 7662 answer of POST /v1/introspect. An
// inactive token is exactly {"active":false}.
type IntrospectResponse struct {
	Active    bool   `json:"active"`
	Subject   string `json:"sub,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	Scope     string `json:"scope,omitempty"`      // space-separated
	ExpiresAt int64  `json:"exp,omitempty"`        // Unix seconds; absent: never
	IssuedAt  int64  `json:"iat,omitempty"`        // Unix seconds
	TokenType string `json:"token_type,omitempty"` // the token's kind
	RLC       string `json:"rlc,omitempty"`
	ID        string `json:"jti,omitempty"` // the public id
}
