package gooauth2

import (
	"net/http"

	oautherrors "github.com/go-oauth2/oauth2/v4/errors"
)

// RFC6749Status is a server.ResponseErrorHandler that answers the token
// endpoint's errors with the status RFC 6749 §5.2 gives them: 400, and
// 401 for invalid_client. go-oauth2 answers invalid_grant (a replayed,
// expired or unknown code or refresh token), unauthorized_client and
// unsupported_grant_type with 401. Set it with
// srv.SetResponseErrorHandler(gooauth2.RFC6749Status); the authorize
// endpoint redirects its errors, with no status of their own.
func RFC6749Status(re *oautherrors.Response) {
	switch re.Error {
	case oautherrors.ErrInvalidRequest, oautherrors.ErrInvalidGrant, oautherrors.ErrUnauthorizedClient,
		oautherrors.ErrUnsupportedGrantType, oautherrors.ErrInvalidScope:
		re.StatusCode = http.StatusBadRequest
	case oautherrors.ErrInvalidClient:
		re.StatusCode = http.StatusUnauthorized
	}
}
