package peers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFloor drives the floor with tokenstore's Target, as bench peers
// does: the client must decode every answer, and the floor must answer
// what it cannot decode as a node would refuse it.
func TestFloor(t *testing.T) {
	srv := httptest.NewServer(FloorHandler())
	defer srv.Close()
	ctx := context.Background()
	f := newFloor(&Server{Addrs: []string{strings.TrimPrefix(srv.URL, "http://")}}, 2)
	defer f.Close()
	tok, err := f.Issue(ctx, "")
	if err != nil || !strings.HasPrefix(tok, "tks_") {
		t.Fatalf("Issue = %q, %v; want a tks_ token", tok, err)
	}
	if err := f.Consume(ctx, tok); err != nil {
		t.Errorf("Consume: %v", err)
	}
	if err := f.Lookup(ctx, tok); err != nil {
		t.Errorf("Lookup: %v", err)
	}
	if err := f.Nonce(ctx, "n-1"); err != nil {
		t.Errorf("Nonce: %v", err)
	}
	if n := len(floorAnswer); n < 200 || n > 300 {
		t.Errorf("the answer is %d bytes, want about 250", n)
	}

	for _, c := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"issue", http.MethodPost, "/v1/tokens", `{"kind":"oauth2_code","subject":"bench"}`, http.StatusOK},
		{"cut short", http.MethodPost, "/v1/tokens", `{"kind":"oauth2_`, http.StatusBadRequest},
		{"wrong type", http.MethodPost, "/v1/tokens/consume", `{"token":5}`, http.StatusBadRequest},
		{"empty", http.MethodPost, "/v1/nonces", ``, http.StatusBadRequest},
		{"not POST", http.MethodGet, "/v1/tokens/lookup", ``, http.StatusMethodNotAllowed},
		{"unknown path", http.MethodPost, "/v1/tokens/rotate", `{}`, http.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s %s %q: %d, want %d", c.method, c.path, c.body, resp.StatusCode, c.want)
			}
		})
	}
}
