package routing

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestDecideTable(t *testing.T) {
	rules := DefaultRules()
	for _, c := range routeTable {
		t.Run(c.name, func(t *testing.T) {
			primary, reason := rules.Decide(c.rawRequest(t))
			got := "local"
			if primary {
				got = "primary/" + reason
			} else if reason != ReasonNone {
				t.Errorf("local decision with reason %q, want %q", reason, ReasonNone)
			}
			if got != c.want {
				t.Errorf("%s %s %v: decided %q, want %q", c.method, c.target, c.header, got, c.want)
			}
		})
	}
}

// TestDecideTableCovers keeps the table honest: every reason and both
// title forms appear, with and without encoding.
func TestDecideTableCovers(t *testing.T) {
	count := map[string]int{}
	for _, c := range routeTable {
		count[c.want]++
		if strings.Contains(c.target, "%") && c.want == "primary/path" {
			count["encoded"]++
		}
		if strings.HasPrefix(c.target, "/w/index.php?") && c.want == "primary/path" {
			count["query form"]++
		}
		if strings.HasPrefix(c.target, "/wiki/Special") && c.want == "primary/path" {
			count["article form"]++
		}
		if c.secure {
			count["secure"]++
		}
	}
	for _, k := range []string{"primary/path", "primary/method", "primary/cookie", "local", "encoded", "query form", "article form", "secure"} {
		if count[k] < 2 {
			t.Errorf("the table has %d cases of %s, want at least 2", count[k], k)
		}
	}
}

func TestDefaultRulesEmbedded(t *testing.T) {
	r := DefaultRules()
	if len(r.Titles.Names) != 4 || len(r.Paths.Exact) != 2 || r.Cookie.Pair() != "UseDC=master" ||
		r.NonWritePromise.Header != "Promise-Non-Write-API-Action" || strings.Join(r.Methods, ",") != "POST" {
		t.Fatalf("built-in rules: %+v", r)
	}
	// Marshalled and parsed again: the same decisions.
	b, err := MarshalRules(r)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseRules(b)
	if err != nil {
		t.Fatalf("marshalled rules do not parse: %v\n%s", err, b)
	}
	for _, c := range routeTable {
		p1, r1 := r.Decide(c.rawRequest(t))
		p2, r2 := again.Decide(c.rawRequest(t))
		if p1 != p2 || r1 != r2 {
			t.Errorf("%s: %v/%s before marshalling, %v/%s after", c.name, p1, r1, p2, r2)
		}
	}
	if !bytes.Contains(DefaultRulesYAML(), []byte("# Reason \"cookie\"")) {
		t.Error("DefaultRulesYAML lost its comments")
	}
}

func TestCustomRules(t *testing.T) {
	r, err := ParseRules([]byte(`
methods: [POST, PUT, DELETE]
paths:
  prefix: [/api/v2/auth/]
  exact: [/login]
cookie: {name: pin, value: primary}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, target, cookie, want string
	}{
		{"PUT", "/w/rest.php/v1/page/Sandbox", "", "primary/method"},
		{"DELETE", "/x", "", "primary/method"},
		{"PATCH", "/x", "", "local"},
		{"POST", "/x", "", "primary/method"}, // no promise header configured: every POST
		{"GET", "/api/v2/auth/token?x=1", "", "primary/path"},
		{"GET", "/api/v2/auth%2Ftoken", "", "primary/path"},
		{"GET", "/api/v2/auth", "", "local"},
		{"GET", "/login", "", "primary/path"},
		{"GET", "/wiki/Special:OAuth/authorize", "", "local"}, // no titles
		{"GET", "/", "pin=primary", "primary/cookie"},
		{"GET", "/", "UseDC=master", "local"},
	} {
		req, _ := http.NewRequest(c.method, "http://h"+c.target, nil)
		if c.cookie != "" {
			req.Header.Set("Cookie", c.cookie)
		}
		p, reason := r.Decide(req)
		got := "local"
		if p {
			got = "primary/" + reason
		}
		if got != c.want {
			t.Errorf("%s %s cookie %q: %s, want %s", c.method, c.target, c.cookie, got, c.want)
		}
	}
}

func TestParseRulesRejects(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"empty", ``, "empty"},
		{"unknown field", "methods: [POST]\nmethod: [GET]\n", "field method not found"},
		{"unknown nested field", "cookie: {name: a, value: b, path: /}\n", "field path not found"},
		{"two documents", "methods: [POST]\n---\nmethods: [PUT]\n", "one YAML document"},
		{"bad method", "methods: [\"PO ST\"]\n", "not an HTTP method"},
		{"path without slash", "paths: {exact: [wiki/x]}\n", "must start with /"},
		{"percent in path", "paths: {exact: [/a%20b]}\n", "only visible ASCII"},
		{"space in title", "titles: {article_paths: [/wiki/], names: [Special:Foo bar]}\n", "only visible ASCII"},
		{"query in title", "titles: {article_paths: [/wiki/], names: [\"A?b\"]}\n", "only visible ASCII"},
		{"article path without trailing slash", "titles: {article_paths: [/wiki], names: [A]}\n", "must end with /"},
		{"script with trailing slash", "titles: {scripts: [/w/index.php/], param: title, names: [A]}\n", "must not end with /"},
		{"script without param", "titles: {scripts: [/w/index.php], names: [A]}\n", "param: required"},
		{"titles without forms", "titles: {names: [A]}\n", "article_paths or titles.scripts"},
		{"cookie value with semicolon", "cookie: {name: UseDC, value: \"a;b\"}\n", "not a plain cookie value"},
		{"cookie with percent", "cookie: {name: UseDC, value: \"a%b\"}\n", "no %"},
		{"promise with comma", "non_write_promise: {header: P, value: \"a,b\"}\n", "without commas"},
		{"non-ASCII title", "titles: {article_paths: [/wiki/], names: [Служебная:OAuth]}\n", "only visible ASCII"},
	} {
		_, err := ParseRules([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestDecodeURL(t *testing.T) {
	for in, want := range map[string]string{
		"/wiki/Main_Page":                    "/wiki/Main_Page",
		"/wiki/Special%3AOAuth%2Fauthorize":  "/wiki/Special:OAuth/authorize",
		"/wiki/Special%3aOAuth%2fauthorize":  "/wiki/Special:OAuth/authorize",
		"/wiki/%53pecial":                    "/wiki/%53pecial", // letters stay encoded
		"/wiki/%31":                          "/wiki/%31",       // digits too
		"%253A":                              "%3A",             // one pass
		"%zz%3":                              "%zz%3",           // malformed escapes stay
		"%E2%82%AC":                          "\xe2\x82\xac",
		"a%2":                                "a%2",
		"%25%3A":                             "%:",
		"/w/index.php/Special%3AOAuth/token": "/w/index.php/Special:OAuth/token",
	} {
		if got := decodeURL(in); got != want {
			t.Errorf("decodeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLastParam(t *testing.T) {
	for _, c := range []struct {
		q, v string
		ok   bool
	}{
		{"title=A&x=1", "A", true},
		{"x=1&title=B", "B", true},
		{"title=A&title=B", "B", true},
		{"title=A&x=1&title=B&y=2", "B", true},
		{"title=A&title", "", true},
		{"title=A&title=", "", true},
		{"title=A&titles=B&xtitle=C&title.=D", "A", true},
		{"titles=A", "", false},
		{"x=1&&title", "", true},
		{"a=b=c&title=x=y", "x=y", true},
		{"", "", false},
	} {
		v, ok := lastParam(c.q, "title")
		if v != c.v || ok != c.ok {
			t.Errorf("lastParam(%q) = %q, %v; want %q, %v", c.q, v, ok, c.v, c.ok)
		}
	}
}

func TestHasCookie(t *testing.T) {
	for _, c := range []struct {
		fields []string
		want   bool
	}{
		{[]string{"UseDC=master"}, true},
		{[]string{" a=1 ;\tUseDC=master\t; b=2"}, true},
		{[]string{"a=1,UseDC=master"}, true}, // repeated fields joined by a proxy
		{[]string{"a=1", "UseDC=master"}, true},
		{[]string{"UseDC=master2"}, false},
		{[]string{"UseDC = master"}, false},
		{[]string{"XUseDC=master"}, false},
		{nil, false},
	} {
		if got := hasCookie(c.fields, "UseDC=master"); got != c.want {
			t.Errorf("hasCookie(%q) = %v, want %v", c.fields, got, c.want)
		}
	}
}

func TestRulesYAMLKnownFieldsMatchStruct(t *testing.T) {
	// Every key of the built-in YAML is a field of Rules (KnownFields
	// would reject it otherwise) and decoding loses nothing.
	var generic map[string]any
	if err := yaml.Unmarshal(DefaultRulesYAML(), &generic); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"methods", "non_write_promise", "paths", "titles", "cookie"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("built-in rules lack %s", k)
		}
	}
}
