package api_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/token"
)

// Text fields refuse control, bidirectional formatting and zero-width
// characters, on the API and in the checks a leader runs on forwarded
// writes; other text is kept byte for byte.
func TestTextFieldsRefuseInvisibleCharacters(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	bad := []struct{ name, char string }{
		{"a C1 control", "\u0085"}, {"a C1 CSI", "\u009b"}, {"a right-to-left override", "\u202e"},
		{"a left-to-right embedding", "\u202a"}, {"a first-strong isolate", "\u2068"}, {"a right-to-left mark", "\u200f"},
		{"an Arabic letter mark", "\u061c"}, {"a zero-width space", "\u200b"}, {"a zero-width joiner", "\u200d"},
		{"a soft hyphen", "\u00ad"}, {"a tag character", "\U000e0041"}, {"a Hangul filler", "\u3164"},
		{"a word joiner", "\u2060"}, {"a byte order mark", "\ufeff"}, {"a line separator", "\u2028"},
	}
	fields := []struct {
		name string
		set  func(r *wire.IssueRequest, v string)
	}{
		{"subject", func(r *wire.IssueRequest, v string) { r.Subject = v }},
		{"title", func(r *wire.IssueRequest, v string) { r.Title = v }},
		{"client_id", func(r *wire.IssueRequest, v string) { r.ClientID = v }},
		{"family", func(r *wire.IssueRequest, v string) { r.Family = v }},
		{"rlc", func(r *wire.IssueRequest, v string) { r.RLC = v }},
		{"user_agent", func(r *wire.IssueRequest, v string) { r.UserAgent = v }},
		{"scopes", func(r *wire.IssueRequest, v string) { r.Scopes = []string{v} }},
	}
	check := api.CommandChecker(token.DefaultPolicy(), 0)
	for _, c := range bad {
		for _, f := range fields {
			req := wire.IssueRequest{Kind: "access", Subject: "user:text"}
			f.set(&req, "user:42"+c.char+"x")
			r := e.do(t, http.MethodPost, "/v1/tokens", mustJSON(t, req))
			if body := wantError(t, r, http.StatusBadRequest, wire.CodeInvalidField); !strings.Contains(body.Message, `"`+f.name+`"`) {
				t.Errorf("%s in %s: message %q does not name the field", c.name, f.name, body.Message)
			}
		}
		forwarded := &fsm.Issue{Record: fsm.Record{ID: "x", Hash: strings.Repeat("h", 32), Kind: "access", Subject: "user:42" + c.char}}
		if err := check(forwarded); err == nil {
			t.Errorf("a forwarded issue with %s in its subject: checked, want refused", c.name)
		}
		if err := check(&fsm.RevokeSubject{Subject: "user:42", Reason: "gone" + c.char}); err == nil {
			t.Errorf("a forwarded revocation with %s in its reason: checked, want refused", c.name)
		}
		q := url.Values{"subject": {"user:42" + c.char}}
		wantError(t, e.do(t, http.MethodGet, "/v1/tokens?"+q.Encode(), ""), http.StatusBadRequest, wire.CodeInvalidField)
	}
	if recs, _ := e.listAll(t, "user:text", "", 10); len(recs) != 0 {
		t.Errorf("user:text holds %d tokens after refused issues, want none", len(recs))
	}
	for _, ok := range []string{"José", "用户:42", "Ärzte 🔑", "user:é", "שלום"} {
		out := e.issue(t, wire.IssueRequest{Kind: "access", Subject: ok, Title: ok})
		if rec := e.record(t, out.Token); rec.Subject != ok || rec.Title != ok {
			t.Errorf("issued subject and title %q, stored %q and %q", ok, rec.Subject, rec.Title)
		}
	}
}

// Subjects are compared byte for byte: no case folding, no Unicode
// normalisation. Listing and revoking one never reaches another.
func TestSubjectsAreComparedByteExact(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	ctx := context.Background()
	subjects := []string{"user:\u00e9", "user:e\u0301", "User:\u00e9", "user:\u00c9", "user:\u00e9 "}
	ids := map[string]string{}
	for _, s := range subjects {
		ids[s] = e.issue(t, wire.IssueRequest{Kind: "access", Subject: s}).ID
	}
	for _, s := range subjects {
		recs, _ := e.listAll(t, s, "", 10)
		if len(recs) != 1 || recs[0].ID != ids[s] || recs[0].Subject != s {
			t.Errorf("list %q = %+v, want only its own token %s", s, recs, ids[s])
		}
	}
	n, err := e.n.Client.RevokeSubject(ctx, subjects[0], "", "logout")
	if err != nil || n != 1 {
		t.Fatalf("revoke subject %q = %d, %v; want 1 revoked", subjects[0], n, err)
	}
	for _, s := range subjects[1:] {
		if recs, _ := e.listAll(t, s, "", 10); len(recs) != 1 {
			t.Errorf("after revoking %q, %q lists %d tokens, want its one", subjects[0], s, len(recs))
		}
	}
}
