package gooauth2

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"strings"
	"time"

	"github.com/go-oauth2/oauth2/v4"
	"github.com/go-oauth2/oauth2/v4/models"

	"github.com/tokenstore/tokenstore/api/wire"
)

// recordData is a record's data: what a TokenInfo holds besides the
// token strings and what the record itself keeps (client, user, scope,
// times). Nothing in it is a secret: a PKCE challenge is sent in the
// authorization request's URL (and with S256 it is a digest).
type recordData struct {
	RedirectURI     string        `json:"redirect_uri,omitempty"`
	Challenge       string        `json:"code_challenge,omitempty"`
	ChallengeMethod string        `json:"code_challenge_method,omitempty"`
	AccessExp       time.Duration `json:"access_expires_in,omitempty"` // of the access tokens a code or refresh token yields
	Extension       url.Values    `json:"extension,omitempty"`
}

func encodeData(d recordData) (json.RawMessage, error) {
	if d.RedirectURI == "" && d.Challenge == "" && d.ChallengeMethod == "" && d.AccessExp == 0 && len(d.Extension) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("gooauth2: encode data: %w", err)
	}
	return b, nil
}

func decodeData(b json.RawMessage) (recordData, error) {
	var d recordData
	if len(b) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("gooauth2: decode a record's data: %w", err)
	}
	return d, nil
}

// extension is info's extension without ExtensionFamily, which the
// record's family holds.
func extension(info oauth2.TokenInfo) url.Values {
	e, ok := info.(oauth2.ExtendableTokenInfo)
	if !ok || len(e.GetExtension()) == 0 {
		return nil
	}
	ext := maps.Clone(e.GetExtension())
	delete(ext, ExtensionFamily)
	if len(ext) == 0 {
		return nil
	}
	return ext
}

// info is the TokenInfo of rec without its token strings and times,
// with the family in the extension.
func (s *TokenStore) info(rec *wire.Record, d recordData, family string) *models.Token {
	ti := models.NewToken()
	ti.ClientID, ti.UserID, ti.RedirectURI = rec.ClientID, rec.Subject, d.RedirectURI
	ti.Scope = strings.Join(rec.Scopes, " ")
	for k, v := range d.Extension {
		ti.Extension[k] = v
	}
	if family != "" {
		ti.Extension.Set(ExtensionFamily, family)
	}
	return ti
}

// refreshed is the TokenInfo GetByRefresh answers. go-oauth2's refresh
// passes this very value, with the new tokens set, to Create, which so
// knows the grant and the refresh token it replaces.
type refreshed struct {
	*models.Token
	grant *grant
}

// grant is the grant a refresh continues.
type grant struct {
	family  string
	refresh string // the refresh token presented, in memory only
}

// familyOf returns the family the tokens of info go into and, for a
// refresh, the grant it continues.
func familyOf(info oauth2.TokenInfo) (string, *grant) {
	if r, ok := info.(*refreshed); ok && r.grant != nil {
		return r.grant.family, r.grant
	}
	if e, ok := info.(oauth2.ExtendableTokenInfo); ok {
		return e.GetExtension().Get(ExtensionFamily), nil
	}
	return "", nil
}
