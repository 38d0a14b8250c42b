// Package gooauth2 stores the tokens of a go-oauth2/oauth2 v4 server in
// tokenstore: NewTokenStore returns an oauth2.TokenStore for
// manage.Manager.MapTokenStorage.
//
// Every string go-oauth2 generates (code, access and refresh token) is
// brought to tokenstore as an issue request's "token", which the store
// keeps only as a digest. A TokenInfo is rebuilt from the presented
// string and the record: client id, user id (the subject), scope (the
// scopes), times (created_at, expires_at), and a record's data, which
// holds the redirect URI, the PKCE challenge and its method, the access
// lifetime a grant asked for and the extension. No field stored holds a
// code, access or refresh token.
//
// What each method maps to:
//
//   - Create with a code (the authorize step): POST /v1/tokens of the code
//     kind (WithKinds; DefaultCodeKind). The code starts a grant family
//     named by its id.
//   - Create with an access and a refresh token: one POST /v1/batch of two
//     issue ops, access kind and refresh kind, into the grant's family:
//     the code's (go-oauth2 copies the code's extension, where GetByCode
//     puts ExtensionFamily), the refresh token's on a refresh, a new one
//     for the other grants. On a refresh, first POST
//     /v1/families/{family}/revoke with the access kind: the access token
//     the refresh replaces stops working. 410 family_revoked (the grant
//     was revoked meanwhile) answers errors.ErrInvalidGrant.
//   - GetByCode: POST /v1/tokens/lookup at leader consistency, so a code
//     issued through one node is read through any other. 404, 401
//     token_malformed, 410 token_expired and token_revoked, and a token of
//     another kind answer (nil, nil). 410 token_consumed is a replayed
//     code: the family's access and refresh tokens are revoked (family
//     revoke by kind) and the answer is errors.ErrInvalidGrant.
//   - RemoveByCode: POST /v1/tokens/consume with the code kind: atomic, so
//     of concurrent exchanges of one code exactly one goes on to Create.
//     The others (410 token_consumed) are replays as in GetByCode.
//     Anything else that keeps the code from being consumed answers
//     errors.ErrInvalidAuthorizeCode.
//   - GetByAccess: lookup (local by default, WithAccessConsistency);
//     missing, expired, revoked or of another kind: (nil, nil).
//   - RemoveByAccess: POST /v1/tokens/revoke; a token the store does not
//     know is no error.
//   - GetByRefresh: lookup at leader consistency. The TokenInfo's access
//     token is not the access string (never stored) but a marker naming
//     the family, which RemoveByAccess resolves: Create revoked that
//     access token already. 410 token_consumed is a replay: the refresh
//     token is consumed again, which tokenstore answers 410 token_reused
//     and revokes the family for good (RFC 9700 §4.14); the answer is
//     errors.ErrInvalidGrant.
//   - RemoveByRefresh: POST /v1/tokens/consume with the refresh kind. Of
//     concurrent refreshes with one token, the first consume wins; every
//     other answers 410 token_reused, the family (both new pairs) is
//     revoked, and the answer is errors.ErrInvalidGrant. A refresh token
//     revoked meanwhile answers errors.ErrInvalidGrant too, after the
//     family's access and refresh tokens (the pair just created) are
//     revoked.
//
// Any other error of tokenstore (503 no_leader, a network error) is
// returned wrapped, and go-oauth2 answers server_error.
package gooauth2
