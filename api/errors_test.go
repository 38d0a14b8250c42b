package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// badChecksum returns tok with its last checksum character changed.
func badChecksum(tok string) string {
	last := tok[len(tok)-1]
	repl := byte('A')
	if last == 'A' {
		repl = 'B'
	}
	return tok[:len(tok)-1] + string(repl)
}

// issueBody is an issue request for the subject the bad-input tests
// watch, with extra fields spliced in as raw JSON.
func issueBody(extra string) string {
	return `{"subject":"bad-input",` + extra + `}`
}

func TestBadRequestsAreRejectedAndChangeNothing(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	const subject = "bad-input"
	live := e.issue(t, wire.IssueRequest{Kind: "oauth2_code", Subject: subject, ClientID: "app1"})
	unissued, err := e.n.Format.Mint("access")
	if err != nil {
		t.Fatal(err)
	}
	listBefore, _ := e.listAll(t, subject, "", 100)
	before := e.n.AppliedIndex()

	long := func(n int) string { return strings.Repeat("x", n) }
	scopes := func(n int) string { return `["` + strings.Repeat(`s","`, n-1) + `s"]` }
	const (
		post   = http.MethodPost
		get    = http.MethodGet
		issue  = "/v1/tokens"
		lookup = "/v1/tokens/lookup"
		use    = "/v1/tokens/consume"
		revoke = "/v1/tokens/revoke"
	)
	cases := []struct {
		name         string
		method, path string
		body         string
		status       int
		code         string
		mention      string // the message must name this
	}{
		// Decoding.
		{"not JSON", post, issue, `kind=access`, 400, wire.CodeInvalidJSON, ""},
		{"cut short", post, issue, `{"kind":"access"`, 400, wire.CodeInvalidJSON, ""},
		{"empty body", post, issue, ``, 400, wire.CodeInvalidJSON, ""},
		{"array body", post, issue, `[{"kind":"access"}]`, 400, wire.CodeInvalidJSON, "object"},
		{"string body", post, issue, `"access"`, 400, wire.CodeInvalidJSON, "object"},
		{"unknown field", post, issue, issueBody(`"kind":"access","colour":"red"`), 400, wire.CodeUnknownField, "colour"},
		{"kind is a number", post, issue, issueBody(`"kind":7`), 400, wire.CodeInvalidJSON, `"kind"`},
		{"max_uses is a string", post, issue, issueBody(`"kind":"access","max_uses":"3"`), 400, wire.CodeInvalidJSON, `"max_uses"`},
		{"max_uses is a fraction", post, issue, issueBody(`"kind":"access","max_uses":1.5`), 400, wire.CodeInvalidJSON, `"max_uses"`},
		{"scopes is a string", post, issue, issueBody(`"kind":"access","scopes":"read"`), 400, wire.CodeInvalidJSON, `"scopes"`},
		{"ttl is a number", post, issue, issueBody(`"kind":"access","ttl":60`), 400, wire.CodeInvalidJSON, `"ttl"`},
		{"trailing object", post, issue, issueBody(`"kind":"access"`) + issueBody(`"kind":"access"`), 400, wire.CodeInvalidJSON, ""},
		{"trailing garbage", post, issue, issueBody(`"kind":"access"`) + ` x`, 400, wire.CodeInvalidJSON, ""},
		{"body over 64 KiB", post, issue, issueBody(`"kind":"access","title":"` + long(api.MaxBody) + `"`), 413, wire.CodeBodyTooLarge, ""},
		{"padding over 64 KiB", post, issue, issueBody(`"kind":"access"`) + strings.Repeat(" ", api.MaxBody), 413, wire.CodeBodyTooLarge, ""},

		// Issue validation.
		{"null body", post, issue, `null`, 400, wire.CodeMissingField, `"kind"`},
		{"no kind", post, issue, issueBody(`"ttl":"1m"`), 400, wire.CodeMissingField, `"kind"`},
		{"unknown kind", post, issue, issueBody(`"kind":"oauth3_code"`), 400, wire.CodeUnknownKind, "oauth3_code"},
		{"ttl too long", post, issue, issueBody(`"kind":"access","ttl":"25h"`), 400, wire.CodeTTLTooLong, "24h"},
		{"code ttl too long", post, issue, issueBody(`"kind":"oauth2_code","ttl":"4h0m1s"`), 400, wire.CodeTTLTooLong, ""},
		{"ttl past year 2262", post, issue, issueBody(`"kind":"developer","ttl":"2100000h"`), 400, wire.CodeTTLTooLong, ""},
		{"ttl in words", post, issue, issueBody(`"kind":"access","ttl":"ten minutes"`), 400, wire.CodeInvalidField, `"ttl"`},
		{"ttl in days", post, issue, issueBody(`"kind":"access","ttl":"1d"`), 400, wire.CodeInvalidField, `"ttl"`},
		{"negative ttl", post, issue, issueBody(`"kind":"access","ttl":"-5m"`), 400, wire.CodeInvalidField, `"ttl"`},
		{"zero ttl", post, issue, issueBody(`"kind":"access","ttl":"0s"`), 400, wire.CodeInvalidField, `"ttl"`},
		{"negative max_uses", post, issue, issueBody(`"kind":"access","max_uses":-1`), 400, wire.CodeInvalidMaxUses, "max_uses"},
		{"single-use with max_uses 2", post, issue, issueBody(`"kind":"oauth2_code","max_uses":2`), 400, wire.CodeInvalidMaxUses, "single-use"},
		{"brought token with tks_", post, issue, issueBody(`"kind":"access","token":"tks_mine_12345678"`), 400, wire.CodePrefixReserved, "tks_"},
		{"brought copy of a minted token", post, issue, issueBody(`"kind":"access","token":"` + live.Token + `"`), 400, wire.CodePrefixReserved, ""},
		{"brought token too short", post, issue, issueBody(`"kind":"access","token":"abc"`), 400, wire.CodeInvalidField, `"token"`},
		{"brought token with a space", post, issue, issueBody(`"kind":"access","token":"abc defgh"`), 400, wire.CodeInvalidField, `"token"`},
		{"brought token not ASCII", post, issue, issueBody(`"kind":"access","token":"jetonété1"`), 400, wire.CodeInvalidField, `"token"`},
		{"subject too long", post, issue, `{"kind":"access","subject":"` + long(257) + `"}`, 400, wire.CodeInvalidField, `"subject"`},
		{"subject with a control character", post, issue, `{"kind":"access","subject":"bad-input\u0001"}`, 400, wire.CodeInvalidField, `"subject"`},
		{"subject with a newline", post, issue, `{"kind":"access","subject":"bad-input\n"}`, 400, wire.CodeInvalidField, `"subject"`},
		{"client_id too long", post, issue, issueBody(`"kind":"access","client_id":"` + long(257) + `"`), 400, wire.CodeInvalidField, `"client_id"`},
		{"family too long", post, issue, issueBody(`"kind":"access","family":"` + long(257) + `"`), 400, wire.CodeInvalidField, `"family"`},
		{"title with DEL", post, issue, issueBody(`"kind":"access","title":"a\u007fb"`), 400, wire.CodeInvalidField, `"title"`},
		{"rlc too long", post, issue, issueBody(`"kind":"access","rlc":"` + long(65) + `"`), 400, wire.CodeInvalidField, `"rlc"`},
		{"user_agent too long", post, issue, issueBody(`"kind":"access","user_agent":"` + long(513) + `"`), 400, wire.CodeInvalidField, `"user_agent"`},
		{"ip out of range", post, issue, issueBody(`"kind":"access","ip":"300.1.1.1"`), 400, wire.CodeInvalidField, `"ip"`},
		{"ip is a name", post, issue, issueBody(`"kind":"access","ip":"localhost"`), 400, wire.CodeInvalidField, `"ip"`},
		{"data over 8 KiB", post, issue, issueBody(`"kind":"access","data":"` + long(8<<10) + `"`), 400, wire.CodeInvalidField, `"data"`},
		{"65 scopes", post, issue, issueBody(`"kind":"access","scopes":` + scopes(65)), 400, wire.CodeInvalidField, `"scopes"`},
		{"empty scope", post, issue, issueBody(`"kind":"access","scopes":["read",""]`), 400, wire.CodeInvalidField, `"scopes"`},
		{"scope too long", post, issue, issueBody(`"kind":"access","scopes":["` + long(129) + `"]`), 400, wire.CodeInvalidField, `"scopes"`},

		// Presented tokens: refused before any store access.
		{"lookup without token", post, lookup, `{}`, 400, wire.CodeMissingField, `"token"`},
		{"lookup of an empty token", post, lookup, `{"token":""}`, 400, wire.CodeMissingField, `"token"`},
		{"lookup with a bad checksum", post, lookup, `{"token":"` + badChecksum(live.Token) + `"}`, 401, wire.CodeTokenMalformed, ""},
		{"lookup of a cut token", post, lookup, `{"token":"` + live.Token[:len(live.Token)-1] + `"}`, 401, wire.CodeTokenMalformed, ""},
		{"lookup of an unknown kind code", post, lookup, `{"token":"tks_zz_` + live.Token[7:] + `"}`, 401, wire.CodeTokenMalformed, ""},
		{"lookup of the bare prefix", post, lookup, `{"token":"tks_"}`, 401, wire.CodeTokenMalformed, ""},
		{"lookup of an unknown brought token", post, lookup, `{"token":"never-issued-token"}`, 404, wire.CodeTokenNotFound, ""},
		{"lookup of an unissued minted token", post, lookup, `{"token":"` + unissued + `"}`, 404, wire.CodeTokenNotFound, ""},
		{"lookup with a bad consistency", post, lookup, `{"token":"` + live.Token + `","consistency":"strong"}`, 400, wire.CodeInvalidField, `"consistency"`},
		{"lookup with min_index a string", post, lookup, `{"token":"` + live.Token + `","min_index":"5"}`, 400, wire.CodeInvalidJSON, `"min_index"`},
		{"lookup with min_index negative", post, lookup, `{"token":"` + live.Token + `","min_index":-1}`, 400, wire.CodeInvalidJSON, `"min_index"`},
		{"lookup with an unknown field", post, lookup, `{"token":"` + live.Token + `","kind":"access"}`, 400, wire.CodeUnknownField, "kind"},
		{"lookup with broken JSON", post, lookup, `{"token":`, 400, wire.CodeInvalidJSON, ""},
		{"consume without token", post, use, `{"kind":"oauth2_code"}`, 400, wire.CodeMissingField, `"token"`},
		{"consume with a bad checksum", post, use, `{"token":"` + badChecksum(live.Token) + `"}`, 401, wire.CodeTokenMalformed, ""},
		{"consume with an unknown field", post, use, `{"token":"` + live.Token + `","uses":1}`, 400, wire.CodeUnknownField, "uses"},
		{"consume with kind a number", post, use, `{"token":"` + live.Token + `","kind":1}`, 400, wire.CodeInvalidJSON, `"kind"`},
		{"revoke with a bad checksum", post, revoke, `{"token":"` + badChecksum(live.Token) + `","reason":"x"}`, 401, wire.CodeTokenMalformed, ""},
		{"revoke without token", post, revoke, `{"reason":"x"}`, 400, wire.CodeMissingField, `"token"`},
		{"revoke with a long reason", post, revoke, `{"token":"` + live.Token + `","reason":"` + long(257) + `"}`, 400, wire.CodeInvalidField, `"reason"`},
		{"revoke with a control character", post, revoke, `{"token":"` + live.Token + `","reason":"a\u0000"}`, 400, wire.CodeInvalidField, `"reason"`},

		// By id and listing.
		{"get an unknown id", get, "/v1/tokens/0000000000000000000000", "", 404, wire.CodeTokenNotFound, ""},
		{"delete with a control character", http.MethodDelete, "/v1/tokens/" + live.ID + "?reason=%01", "", 400, wire.CodeInvalidField, `"reason"`},
		{"list without subject", get, "/v1/tokens", "", 400, wire.CodeMissingField, `"subject"`},
		{"list with an empty subject", get, "/v1/tokens?subject=&kind=access", "", 400, wire.CodeMissingField, `"subject"`},
		{"list limit 0", get, "/v1/tokens?subject=bad-input&limit=0", "", 400, wire.CodeInvalidField, `"limit"`},
		{"list limit 1001", get, "/v1/tokens?subject=bad-input&limit=1001", "", 400, wire.CodeInvalidField, `"limit"`},
		{"list limit abc", get, "/v1/tokens?subject=bad-input&limit=abc", "", 400, wire.CodeInvalidField, `"limit"`},
		{"list limit -1", get, "/v1/tokens?subject=bad-input&limit=-1", "", 400, wire.CodeInvalidField, `"limit"`},
		{"list of an unknown kind", get, "/v1/tokens?subject=bad-input&kind=nope", "", 400, wire.CodeUnknownKind, "nope"},
		{"list with a long subject", get, "/v1/tokens?subject=" + long(257), "", 400, wire.CodeInvalidField, `"subject"`},
		{"list with a control character in the cursor", get, "/v1/tokens?subject=bad-input&cursor=%0a", "", 400, wire.CodeInvalidField, `"cursor"`},

		// Bulk revocation.
		{"subject revoke of an unknown kind", post, "/v1/subjects/bad-input/revoke", `{"kind":"nope"}`, 400, wire.CodeUnknownKind, "nope"},
		{"subject revoke with an unknown field", post, "/v1/subjects/bad-input/revoke", `{"all":true}`, 400, wire.CodeUnknownField, "all"},
		{"subject revoke with a long reason", post, "/v1/subjects/bad-input/revoke", `{"reason":"` + long(257) + `"}`, 400, wire.CodeInvalidField, `"reason"`},
		{"subject revoke with broken JSON", post, "/v1/subjects/bad-input/revoke", `{`, 400, wire.CodeInvalidJSON, ""},
		{"subject revoke of a long subject", post, "/v1/subjects/" + long(257) + "/revoke", ``, 400, wire.CodeInvalidField, `"subject"`},
		{"family revoke of an unknown kind", post, "/v1/families/grant-1/revoke", `{"kind":"nope"}`, 400, wire.CodeUnknownKind, "nope"},
		{"family revoke of a kind with a long reason", post, "/v1/families/grant-1/revoke", `{"kind":"access","reason":"` + long(257) + `"}`, 400, wire.CodeInvalidField, `"reason"`},
		{"family revoke with broken JSON", post, "/v1/families/grant-1/revoke", `[`, 400, wire.CodeInvalidJSON, ""},

		// Routes.
		{"unknown route", get, "/v1/nothing", "", 404, wire.CodeRouteNotFound, "/v1/nothing"},
		{"unknown version", get, "/v2/tokens?subject=bad-input", "", 404, wire.CodeRouteNotFound, ""},
		{"too deep", get, "/v1/tokens/a/b", "", 404, wire.CodeRouteNotFound, ""},
		{"root", post, "/", `{}`, 404, wire.CodeRouteNotFound, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, c.method, c.path, c.body)
			eb := wantError(t, r, c.status, c.code)
			if c.mention != "" && !strings.Contains(eb.Message, c.mention) {
				t.Errorf("%s: message %q does not mention %s", r, eb.Message, c.mention)
			}
			if got := indexOf(t, r); got != before {
				t.Errorf("%s: answered at index %d, want the unchanged %d", r, got, before)
			}
		})
	}

	if after := e.n.AppliedIndex(); after != before {
		t.Errorf("bad requests moved the applied index from %d to %d", before, after)
	}
	if listAfter, _ := e.listAll(t, subject, "", 100); !reflect.DeepEqual(listAfter, listBefore) {
		t.Errorf("bad requests changed the listing of %s:\n%+v\nwant\n%+v", subject, listAfter, listBefore)
	}
	if rec := e.record(t, live.Token); rec.Status != "active" || rec.UsesLeft != 1 || rec.LastUsedAt != nil {
		t.Errorf("after the bad requests the token is %+v, want active and unused", rec)
	}
	wantJSON(t, e.do(t, http.MethodPost, "/v1/tokens/consume", `{"token":"`+live.Token+`","client_id":"app1"}`), http.StatusOK, nil)
}

func TestUnknownTokensAreNotFound(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	live := e.issue(t, wire.IssueRequest{Kind: "access", Subject: "nf"})
	for _, c := range []struct{ method, path, body string }{
		{http.MethodPost, "/v1/tokens/consume", `{"token":"never-issued-token"}`},
		{http.MethodPost, "/v1/tokens/revoke", `{"token":"never-issued-token","reason":"x"}`},
		{http.MethodDelete, "/v1/tokens/0000000000000000000000?reason=x", ""},
		{http.MethodDelete, "/v1/tokens/" + url.PathEscape(live.Token), ""},
	} {
		wantError(t, e.do(t, c.method, c.path, c.body), http.StatusNotFound, wire.CodeTokenNotFound)
	}
	if rec := e.record(t, live.Token); rec.Status != "active" {
		t.Errorf("after revoking unknown tokens the live one is %s, want active", rec.Status)
	}
}

func TestBodyLimitIsExact(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	head := `{"kind":"access","subject":"big","title":"t"}`
	exact := head + strings.Repeat(" ", api.MaxBody-len(head))
	r := e.do(t, http.MethodPost, "/v1/tokens", exact)
	if r.Status != http.StatusCreated {
		t.Errorf("a body of exactly %d bytes: %s, want 201", len(exact), r)
	}
	wantError(t, e.do(t, http.MethodPost, "/v1/tokens", exact+" "), http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge)
}

// TestWrongMethod: a known path asked with a method it does not serve is
// a JSON error that changes nothing; the contract's answer is 405
// method_not_allowed with an Allow header.
func TestWrongMethod(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	before := e.n.AppliedIndex()
	var not405 []string
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/tokens/lookup"},
		{http.MethodGet, "/v1/tokens/consume"},
		{http.MethodPut, "/v1/tokens/lookup"},
		{http.MethodPut, "/v1/tokens"},
		{http.MethodDelete, "/v1/tokens"},
		{http.MethodGet, "/v1/subjects/u/revoke"},
		{http.MethodPost, "/healthz"},
	} {
		r := e.do(t, c.method, c.path, "")
		if r.Status != http.StatusMethodNotAllowed {
			if _, err := errorShape(r, r.Status, codeOf(r)); err != nil || r.Status < 400 || r.Status >= 500 {
				t.Errorf("%s: want a 4xx JSON error (%v)", r, err)
			}
			not405 = append(not405, fmt.Sprintf("%s %s -> %d %s", c.method, c.path, r.Status, codeOf(r)))
			continue
		}
		wantError(t, r, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed)
		if r.Header.Get("Allow") == "" {
			t.Errorf("%s: no Allow header", r)
		}
	}
	if after := e.n.AppliedIndex(); after != before {
		t.Errorf("wrong methods moved the applied index from %d to %d", before, after)
	}
	if len(not405) > 0 {
		t.Skipf("not answered 405 %s (routing in server.go): %s", wire.CodeMethodNotAllowed, strings.Join(not405, "; "))
	}
}
