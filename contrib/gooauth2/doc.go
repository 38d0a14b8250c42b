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
//     kind (WithKinds; DefaultCodeKind, the built-in oauth2_code). The
//     code starts a grant family named by its id.
//   - GetByCode: POST /v1/tokens/lookup at leader consistency, so a code
//     issued through one node is read through any other; the code is
//     noted, in memory only, for RemoveByCode and Create. 404, 401
//     token_malformed, 410 token_expired and token_revoked, and a token of
//     another kind answer (nil, nil). 410 token_consumed is a replayed
//     code: it is consumed again (POST /v1/tokens/consume), which
//     oauth2_code answers 410 token_reused after revoking the grant
//     family for good (RFC 6749 §4.1.2), and the answer is (nil, nil), a
//     missing code (go-oauth2 answers invalid_grant).
//   - RemoveByCode writes nothing: it notes the code GetByCode read as
//     taken by this exchange, in a table of the process by the grant's
//     family, bounded (WithPendingCodes). The table forgets a code once a
//     Create's batch consumed it (whatever other exchanges read it), once
//     every exchange that read it had its batch fail, or once it expires;
//     an exchange that fails before Create (a wrong PKCE verifier, a
//     client or redirect URI mismatch) leaves it there until one of
//     those. A consumed code is kept a minute more, taken, in a second
//     table of the same bound, for the exchanges that read it before the
//     winning batch applied: their batch consumes it again, which revokes
//     the grant. A code in neither (not read, or forgotten) answers
//     errors.ErrInvalidAuthorizeCode.
//   - Create with an access and a refresh token: one POST /v1/batch into
//     the grant's family. For an exchanged code (the family is the code's:
//     go-oauth2 copies the code's extension, where GetByCode puts
//     ExtensionFamily), the batch is: consume the code taken for that
//     family (code kind, client_id), issue the refresh token, issue the
//     access token. If the consume fails, nothing is issued: 410
//     token_reused (another exchange consumed it; tokenstore revoked the
//     family), token_consumed (a code kind without reuse detection: the
//     family is revoked here), token_expired, token_revoked,
//     family_revoked, 404, kind_mismatch and client_mismatch answer
//     errors.ErrInvalidGrant, as does a family with no code taken. Of
//     concurrent exchanges of one code exactly one batch consumes it; the
//     other consumes detect the reuse and revoke the grant, the winner's
//     tokens included: RFC 9700 allows it, as the server cannot tell the
//     attacker's exchange from the client's. On a refresh (the family is
//     the refresh token's), the batch is: revoke_family with the access
//     kind (the access token the refresh replaces stops working, the
//     family stays open), consume the refresh token presented (refresh
//     kind, client_id) when a new one replaces it, issue the refresh
//     token, issue the access token; a refresh that fails changes
//     nothing. While the cluster cannot take a family revocation in a
//     batch (a rolling upgrade: 503 cluster_upgrading until the log's
//     version fence, or 400 invalid_field at that op from a node of an
//     earlier release; nothing was applied), the revocation is sent alone
//     (POST /v1/families/{family}/revoke) and the rest as a batch: not
//     atomic then, as a failing batch leaves the access tokens revoked.
//     Of concurrent refreshes with one token exactly one batch
//     consumes it; the others' consumes answer 410 token_reused,
//     tokenstore revokes the family (both new pairs, RFC 9700 §4.14), and
//     the answer is errors.ErrInvalidGrant, as for a refresh token
//     revoked or expired meanwhile. For the other grants, a new family.
//     410 family_revoked (the grant was revoked meanwhile) answers
//     errors.ErrInvalidGrant.
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
//   - RemoveByRefresh: POST /v1/tokens/revoke; a token the store does not
//     know is no error. After a refresh it writes nothing: Create consumed
//     the token and remembers it, by its SHA-256 digest, for a minute (at
//     most WithPendingCodes of them), so that a failure of a write that
//     would change nothing cannot fail a refresh whose tokens are stored
//     (the client would retry with its old refresh token: a reuse, which
//     revokes the grant).
//
// Any other error of tokenstore (503 no_leader, a network error) is
// returned wrapped, and go-oauth2 answers server_error (500).
//
// go-oauth2 answers invalid_grant with status 401; RFC6749Status, set as
// the server's ResponseErrorHandler, makes it 400 (RFC 6749 §5.2).
package gooauth2
