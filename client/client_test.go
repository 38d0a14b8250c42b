package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// A 410 comes back as an error that matches its code and carries the
// token it names, data and all.
func TestGoneErrorCarriesToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGone)
		w.Write([]byte(`{"error":{"code":"token_reused","message":"This token was already used.","at":"2026-11-22T10:04:05Z",
			"token":{"id":"8kq2","kind":"oauth2_code","subject":"user:42","client_id":"app1","family":"8kq2","scopes":["read"],
			"created_at":"2026-11-22T10:00:00Z","expires_at":"2026-11-22T14:00:00Z","invalidated_at":"2026-11-22T10:04:05Z",
			"reason":"consumed","data":{"redirect_uri":"https://app1.example/cb"}}}}`))
	}))
	defer srv.Close()
	_, err := client.New(srv.URL).Consume(context.Background(), wire.ConsumeRequest{Token: "x", WithData: true})
	if !errors.Is(err, client.ErrTokenReused) {
		t.Fatalf("Consume error %v, want ErrTokenReused", err)
	}
	tok := client.TokenOf(err)
	if tok == nil || tok.ID != "8kq2" || tok.Family != "8kq2" || tok.Kind != "oauth2_code" || tok.InvalidatedAt == nil ||
		string(tok.Data) != `{"redirect_uri":"https://app1.example/cb"}` {
		t.Fatalf("TokenOf(err) = %+v, want the code with its family and data", tok)
	}
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Token != tok {
		t.Fatalf("errors.As to *client.Error: %v, token %+v", ce, ce.Token)
	}
	if client.TokenOf(errors.New("other")) != nil {
		t.Fatal("TokenOf of a non-API error is not nil")
	}
}
