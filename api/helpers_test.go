package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/token"
)

// reply is one HTTP exchange with a node, body read in full.
type reply struct {
	Method, Path string
	Status       int
	Header       http.Header
	Body         []byte
}

func (r reply) String() string {
	return fmt.Sprintf("%s %s -> %d %s", r.Method, r.Path, r.Status, bytes.TrimSpace(r.Body))
}

// newHTTPClient returns a client that keeps enough idle connections for
// the concurrency tests, so they measure the store and not TCP set-up.
// It checks every request and answer against the OpenAPI description.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 128
	tr.MaxIdleConnsPerHost = 128
	return &http.Client{Transport: checked(tr), Timeout: 30 * time.Second}
}

// checkedClient is http.DefaultClient checking every request and answer
// against the OpenAPI description.
var checkedClient = &http.Client{Transport: checked(http.DefaultTransport)}

// exchange sends one request and reads the whole answer. It does not
// need a *testing.T, so goroutines can call it.
func exchange(hc *http.Client, method, base, path, key string, body []byte) (reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return reply{Method: method, Path: path, Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// commonHeaders checks what every response must carry: a numeric
// X-Tokenstore-Index and X-Tokenstore-DC: dc1.
func commonHeaders(r reply) error {
	idx := r.Header.Get(wire.HeaderIndex)
	if _, err := strconv.ParseUint(idx, 10, 64); err != nil {
		return fmt.Errorf("%s: header %s = %q, want a decimal index", r, wire.HeaderIndex, idx)
	}
	if dc := r.Header.Get(wire.HeaderDC); dc != "dc1" {
		return fmt.Errorf("%s: header %s = %q, want %q", r, wire.HeaderDC, dc, "dc1")
	}
	return nil
}

// errorShape checks that r is an error answer of status and code with the
// one error shape {"error":{"code","message","at"?}} and a JSON content
// type, and returns its body.
func errorShape(r reply, status int, code string) (wire.ErrorBody, error) {
	if r.Status != status {
		return wire.ErrorBody{}, fmt.Errorf("%s: want status %d %s", r, status, code)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return wire.ErrorBody{}, fmt.Errorf("%s: Content-Type %q, want application/json", r, ct)
	}
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &outer); err != nil {
		return wire.ErrorBody{}, fmt.Errorf("%s: body is not a JSON object: %v", r, err)
	}
	if len(outer) != 1 || outer["error"] == nil {
		return wire.ErrorBody{}, fmt.Errorf("%s: want exactly the key \"error\" at the top level", r)
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal(outer["error"], &inner); err != nil {
		return wire.ErrorBody{}, fmt.Errorf("%s: \"error\" is not an object: %v", r, err)
	}
	for k := range inner {
		if k != "code" && k != "message" && k != "at" && (k != "token" || status != http.StatusGone) {
			return wire.ErrorBody{}, fmt.Errorf("%s: unexpected key %q in \"error\", want only code, message, at (and token in a 410)", r, k)
		}
	}
	var e wire.Error
	if err := json.Unmarshal(r.Body, &e); err != nil {
		return wire.ErrorBody{}, fmt.Errorf("%s: error body does not decode: %v", r, err)
	}
	// Every 410 names the token it is about.
	if tok := e.Error.Token; status == http.StatusGone && (tok == nil || tok.ID == "" || tok.Kind == "" || tok.Scopes == nil || tok.CreatedAt == nil) {
		return e.Error, fmt.Errorf("%s: a 410 without error.token naming its id, kind, scopes and created_at", r)
	}
	if e.Error.Code != code {
		return e.Error, fmt.Errorf("%s: code %q, want %q", r, e.Error.Code, code)
	}
	if e.Error.Message == "" {
		return e.Error, fmt.Errorf("%s: empty message", r)
	}
	return e.Error, nil
}

// env is a running node and the HTTP client the tests talk to it with.
type env struct {
	n   *testcluster.Node
	hc  *http.Client
	key string // API key sent as Bearer, if any
}

// startEnv starts a node for one test; it stops when the test ends.
func startEnv(t *testing.T, o testcluster.Options) *env {
	t.Helper()
	return &env{n: testcluster.Start(t, o), hc: newHTTPClient()}
}

// do sends a raw request and checks the headers every response carries.
func (e *env) do(t *testing.T, method, path, body string) reply {
	t.Helper()
	var b []byte
	if body != "" || method == http.MethodPost {
		b = []byte(body)
	}
	r, err := exchange(e.hc, method, e.n.API.URL, path, e.key, b)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if err := commonHeaders(r); err != nil {
		t.Error(err)
	}
	return r
}

// indexOf returns the X-Tokenstore-Index of r.
func indexOf(t *testing.T, r reply) uint64 {
	t.Helper()
	i, err := strconv.ParseUint(r.Header.Get(wire.HeaderIndex), 10, 64)
	if err != nil {
		t.Fatalf("%s: %s not numeric: %v", r, wire.HeaderIndex, err)
	}
	return i
}

// wantError fails the test unless r is the error status and code.
func wantError(t *testing.T, r reply, status int, code string) wire.ErrorBody {
	t.Helper()
	e, err := errorShape(r, status, code)
	if err != nil {
		t.Error(err)
	}
	return e
}

// wantJSON fails the test unless r has status and decodes into out.
func wantJSON(t *testing.T, r reply, status int, out any) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want status %d", r, status)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", r, ct)
	}
	if out != nil {
		reflect.ValueOf(out).Elem().SetZero() // no field left over from an earlier answer
		if err := json.Unmarshal(r.Body, out); err != nil {
			t.Fatalf("%s: decode into %T: %v", r, out, err)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// issue issues a token through the raw API and expects 201.
func (e *env) issue(t *testing.T, req wire.IssueRequest) wire.IssueResponse {
	t.Helper()
	var out wire.IssueResponse
	wantJSON(t, e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, req)), http.StatusCreated, &out)
	if out.Token == "" || out.ID == "" {
		t.Fatalf("issue %+v: answer %+v lacks token or id", req, out)
	}
	return out
}

func (e *env) lookup(t *testing.T, tok string) reply {
	t.Helper()
	return e.do(t, http.MethodPost, "/v1/tokens/lookup", mustJSON(t, wire.LookupRequest{Token: tok}))
}

// record looks a token up and expects 200.
func (e *env) record(t *testing.T, tok string) wire.Record {
	t.Helper()
	var rec wire.Record
	wantJSON(t, e.lookup(t, tok), http.StatusOK, &rec)
	return rec
}

// listAll pages through a subject's tokens, limit at a time, and returns
// them in order with the number of pages.
func (e *env) listAll(t *testing.T, subject, kind string, limit int) ([]wire.Record, int) {
	t.Helper()
	var all []wire.Record
	cursor := ""
	for pages := 1; pages <= 100; pages++ {
		q := url.Values{"subject": {subject}, "limit": {strconv.Itoa(limit)}}
		if kind != "" {
			q.Set("kind", kind)
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		r := e.do(t, http.MethodGet, "/v1/tokens?"+q.Encode(), "")
		var page wire.ListResponse
		wantJSON(t, r, http.StatusOK, &page)
		if len(page.Tokens) > limit {
			t.Fatalf("%s: %d tokens on a page of limit %d", r, len(page.Tokens), limit)
		}
		if bytes.Contains(r.Body, []byte(`"data"`)) {
			t.Errorf("%s: a listing must not carry the data field", r)
		}
		all = append(all, page.Tokens...)
		if page.NextCursor == "" {
			return all, pages
		}
		cursor = page.NextCursor
	}
	t.Fatalf("list %s: no end after 100 pages", subject)
	return nil, 0
}

// noSecret fails the test if body shows the secret or its digest in any
// usual encoding (hidden), its log prefix, or a field that could hold them.
func noSecret(t *testing.T, what string, body []byte, secret string, h token.Hasher) {
	t.Helper()
	hidden(t, what, body, secret, h)
	if prefix := token.LogPrefix(h.Sum(secret)); bytes.Contains(body, []byte(prefix)) {
		t.Errorf("%s: body contains the hex digest prefix: %s", what, body)
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) == nil {
		for _, k := range []string{"token", "secret", "hash"} {
			if _, ok := fields[k]; ok {
				t.Errorf("%s: body has a %q field: %s", what, k, body)
			}
		}
	}
}

// hidden fails the test if b shows secret, a good part of it, or its
// digest in any usual encoding.
func hidden(t *testing.T, what string, b []byte, secret string, h token.Hasher) {
	t.Helper()
	digest := h.Sum(secret)
	for name, s := range map[string]string{
		"secret":            secret,
		"secret body":       secret[len(secret)/3:],
		"raw digest":        digest,
		"hex digest":        hex.EncodeToString([]byte(digest)),
		"base64 digest":     base64.StdEncoding.EncodeToString([]byte(digest)),
		"raw base64 digest": base64.RawURLEncoding.EncodeToString([]byte(digest)),
	} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s shows the %s of %s…", what, name, secret[:10])
		}
	}
}

// codeOf returns the error code in r's body, or "" if it has none.
func codeOf(r reply) string {
	var e wire.Error
	if json.Unmarshal(r.Body, &e) != nil {
		return ""
	}
	return e.Error.Code
}
