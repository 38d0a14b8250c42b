package fositestore_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ory/fosite"
	"github.com/ory/fosite/token/jwt"
	"golang.org/x/oauth2"
)

// The authorization code grant with PKCE S256: the code is written
// through node 0 and exchanged through node 1; the access token works at
// fosite's introspection (node 2) and carries the grant.
func TestAuthorizationCodePKCE(t *testing.T) {
	e := newEnv(t)
	conf := e.config("/token")
	conf.Scopes = []string{"offline", "read"}
	code, verifier := e.authorize(conf)
	tok, err := e.exchange(conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" || tok.TokenType != "Bearer" && tok.TokenType != "bearer" {
		t.Fatalf("token answer %+v", tok)
	}
	got := e.introspect(tok.AccessToken)
	if !got.Active || got.Subject != subject || got.ClientID != clientID || got.Scope != "offline read" {
		t.Fatalf("introspection of the access token: %+v", got)
	}
	if r := e.introspect(tok.RefreshToken); !r.Active || r.Subject != subject {
		t.Fatalf("introspection of the refresh token: %+v", r)
	}
	if e.introspect("ory_at_not-a-token.nor-a-signature").Active {
		t.Fatal("an unknown token is active")
	}
}

// A wrong PKCE verifier is refused (and fosite drops the PKCE request, so
// the code cannot be exchanged after).
func TestPKCEWrongVerifier(t *testing.T) {
	e := newEnv(t)
	code, _ := e.authorize(e.conf)
	_, err := e.exchange(e.conf, code, oauth2.GenerateVerifier())
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
}

// A code bound to a PKCE challenge keeps it after an exchange with a
// wrong verifier: where PKCE is not enforced, a second exchange without a
// verifier must not get tokens either (fosite deletes the PKCE request
// before it checks the verifier; the store keeps it).
func TestPKCEKeptAfterAWrongVerifier(t *testing.T) {
	e := newEnv(t, func(c *fosite.Config) { c.EnforcePKCE = false })
	code, verifier := e.authorize(e.conf)
	_, err := e.exchange(e.conf, code, oauth2.GenerateVerifier())
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	tok, err := e.conf.Exchange(e.ctx(), code)
	if err == nil {
		t.Fatalf("a code bound to a challenge was exchanged without a verifier: %v", tok)
	}
	if _, err := e.exchange(e.conf, code, verifier); err != nil {
		t.Fatalf("the right verifier after a wrong one: %v", err)
	}
}

// OpenID Connect: the token answer of an openid code holds an ID token
// signed with the server's key, for the user, with the nonce of the
// authorization request and the access token's hash.
func TestOpenIDConnect(t *testing.T) {
	e := newEnv(t)
	code, verifier := e.authorize(e.conf)
	tok, err := e.exchange(e.conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatal("no id_token in the token answer")
	}
	idt, err := jwt.Parse(raw, func(*jwt.Token) (interface{}, error) { return &e.key.PublicKey, nil })
	if err != nil {
		t.Fatalf("id_token: %v", err)
	}
	c := idt.Claims
	if c["sub"] != subject || c["iss"] != "https://issuer.example" || c["name"] != "Ada Lovelace" {
		t.Fatalf("id_token claims %v", c)
	}
	if n, _ := c["nonce"].(string); !strings.HasPrefix(n, "nonce-state-") {
		t.Fatalf("id_token nonce %v", c["nonce"])
	}
	if h, _ := c["at_hash"].(string); h == "" {
		t.Fatalf("id_token without at_hash: %v", c)
	}

	// A refresh of an openid grant gets a new ID token too.
	next, err := e.refresh(e.conf, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	raw2, _ := next.Extra("id_token").(string)
	if raw2 == "" || raw2 == raw {
		t.Fatal("the refresh answered no new id_token")
	}
	idt2, err := jwt.Parse(raw2, func(*jwt.Token) (interface{}, error) { return &e.key.PublicKey, nil })
	if err != nil || idt2.Claims["sub"] != subject {
		t.Fatalf("refreshed id_token: %v %v", err, idt2)
	}
}

// Refresh rotation: the new pair works, the old access token stops
// working, and the old refresh token presented again is reuse: invalid
// grant, and the whole grant, the new pair too, is revoked (RFC 9700).
func TestRefreshRotation(t *testing.T) {
	e := newEnv(t)
	code, verifier := e.authorize(e.conf)
	first, err := e.exchange(e.conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.refresh(e.config("/token2"), first.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken || second.RefreshToken == first.RefreshToken || second.RefreshToken == "" {
		t.Fatal("the refresh answered the old tokens")
	}
	e.wantActive(second.AccessToken, true)
	e.wantActive(first.AccessToken, false)
	e.wantActive(first.RefreshToken, false)

	third, err := e.refresh(e.conf, second.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	e.wantActive(third.AccessToken, true)

	_, err = e.refresh(e.conf, first.RefreshToken)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	e.wantActive(third.AccessToken, false)
	e.wantActive(third.RefreshToken, false)
	_, err = e.refresh(e.conf, third.RefreshToken)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
}

// RFC 7009: revoking the refresh token revokes the grant, its access
// token too; revoking an access token revokes its grant as well.
func TestRevocation(t *testing.T) {
	e := newEnv(t)
	code, verifier := e.authorize(e.conf)
	tok, err := e.exchange(e.conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if s := e.revoke(tok.RefreshToken, "refresh_token"); s != http.StatusOK {
		t.Fatalf("revoke: %d", s)
	}
	e.wantActive(tok.AccessToken, false)
	_, err = e.refresh(e.conf, tok.RefreshToken)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
	// Revoking again, or an unknown token, is no error (RFC 7009 §2.2).
	if s := e.revoke(tok.RefreshToken, "refresh_token"); s != http.StatusOK {
		t.Fatalf("revoke again: %d", s)
	}
	if s := e.revoke("ory_rt_unknown.unknown", ""); s != http.StatusOK {
		t.Fatalf("revoke an unknown token: %d", s)
	}

	code, verifier = e.authorize(e.conf)
	tok, err = e.exchange(e.conf, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if s := e.revoke(tok.AccessToken, "access_token"); s != http.StatusOK {
		t.Fatalf("revoke: %d", s)
	}
	e.wantActive(tok.AccessToken, false)
	_, err = e.refresh(e.conf, tok.RefreshToken)
	wantOAuthError(t, err, http.StatusBadRequest, "invalid_grant")
}
