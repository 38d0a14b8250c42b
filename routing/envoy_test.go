package routing

import (
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

func exportConfig(t testing.TB) ExportConfig {
	return ExportConfig{
		LocalDC: "a", PrimaryDC: "b", StickTTL: 10 * time.Second,
		Upstreams: map[string]*url.URL{"a": mustURL(t, "http://10.0.0.1:8080"), "b": mustURL(t, "http://10.1.0.1:8080")},
	}
}

// TestEnvoyExport: the generated configuration validates, survives its
// YAML and JSON encodings, and routes every request of the table to the
// cluster the built-in router picks, with the same response headers.
func TestEnvoyExport(t *testing.T) {
	rc, err := ExportEnvoy(exportConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.ValidateAll(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	y, err := EnvoyYAML(rc, "test")
	if err != nil {
		t.Fatal(err)
	}
	fromYAML := parseEnvoyYAML(t, y)
	if !proto.Equal(rc, fromYAML) {
		t.Fatalf("the YAML does not decode to the same configuration:\n%s", y)
	}
	j, err := EnvoyJSON(rc)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(j, fromJSON); err != nil || !proto.Equal(rc, fromJSON) {
		t.Fatalf("the JSON does not decode to the same configuration: %v", err)
	}
	if err := fromYAML.Validate(); err != nil {
		t.Fatalf("decoded YAML: Validate: %v", err)
	}

	for _, c := range routeTable {
		t.Run(c.name, func(t *testing.T) {
			route := envoyMatch(t, fromYAML, c)
			if route == nil {
				t.Fatalf("no route matched %s %s", c.method, c.target)
			}
			wantCluster := EnvoyCluster("a")
			if c.primary() {
				wantCluster = EnvoyCluster("b")
			}
			if got := route.GetRoute().GetCluster(); got != wantCluster {
				t.Errorf("%s %s: route %q to %s, want %s", c.method, c.target, route.GetName(), got, wantCluster)
			}
			added := map[string][]string{}
			for _, h := range route.GetResponseHeadersToAdd() {
				k := h.GetHeader().GetKey()
				added[k] = append(added[k], h.GetHeader().GetValue())
				if k == "set-cookie" && h.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
					t.Errorf("set-cookie would replace the application's cookies: %v", h.GetAppendAction())
				}
			}
			if got := strings.Join(added["x-tokenstore-route"], ","); got != c.want {
				t.Errorf("x-tokenstore-route %q, want %q", got, c.want)
			}
			want := ""
			if c.sticks() {
				want = StickCookie(DefaultRules().Cookie, 10*time.Second, c.secure)
			}
			if got := strings.Join(added["set-cookie"], ","); got != want {
				t.Errorf("set-cookie %q, want %q", got, want)
			}
		})
	}
}

// TestEnvoyRegexSize: every pattern compiles and stays under Envoy's
// default RE2 program size limit.
func TestEnvoyRegexSize(t *testing.T) {
	rc, err := ExportEnvoy(exportConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	res := EnvoyRegexes(rc)
	if len(res) < 10 {
		t.Fatalf("only %d patterns", len(res))
	}
	for _, re := range res {
		n, err := EstimateRE2ProgramSize(re)
		if err != nil || n > EnvoyMaxProgramSize {
			t.Errorf("%q: size %d, %v", re, n, err)
		}
	}
	if w := EnvoyRegexWarnings(rc); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
	// Values measured with RE2 itself (RE2::ProgramSize): the estimate
	// must not be below them by more than a little.
	for re, real := range map[string]int{
		EncodedRegex("/w/index.php/Special:OAuth/authenticate"):   61,
		CookieRegex(&CookieMatch{Name: "UseDC", Value: "master"}): 44,
	} {
		n, _ := EstimateRE2ProgramSize(re)
		if n < real-3 {
			t.Errorf("estimate %d for %q, RE2 says %d", n, re, real)
		}
	}
	// A long title is reported.
	long, err := ParseRules([]byte("titles: {article_paths: [/wiki/], names: [" + strings.Repeat("Special:A/", 12) + "x]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := exportConfig(t)
	cfg.Rules = long
	rc, err = ExportEnvoy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if w := EnvoyRegexWarnings(rc); len(w) == 0 {
		t.Error("no warning for a pattern over the limit")
	}
}

// TestEncodedRegexIsDecodeCompare: the pattern form agrees with the
// decoding compare the router and the Lua script use.
func TestEncodedRegexIsDecodeCompare(t *testing.T) {
	want := "/w/index.php/Special:OAuth/token_1"
	re := regexp.MustCompile("^(?:" + EncodedRegex(want) + ")$")
	for _, in := range []string{
		want, "%2Fw/index%2ephp/Special%3AOAuth%2ftoken%5F1", "/w/index.php/Special:OAuth/token%5f1",
		"/w/index.php/%53pecial:OAuth/token_1", "/w/index.php/Special%253AOAuth/token_1", "/w/index.php/Special:OAuth/token_",
		"/w/index.php/Special:OAuth/token_1/", "%zz", "/w/index.php/Special:OAuth/token_%31", "/w/index%2Ephp/Special%3aOAuth/token_1",
	} {
		if a, b := re.MatchString(in), decodeURL(in) == want; a != b {
			t.Errorf("%q: pattern %v, decode-compare %v", in, a, b)
		}
	}
}

func parseEnvoyYAML(t *testing.T, b []byte) *routev3.RouteConfiguration {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	rc := &routev3.RouteConfiguration{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(j, rc); err != nil {
		t.Fatalf("YAML to RouteConfiguration: %v", err)
	}
	return rc
}

// envoyMatch applies Envoy's route selection, for the matchers the export
// uses, to one request: the first virtual host whose domains match, then
// its first route whose path, headers and query parameters all match.
// Header values are the request's fields joined with ",", pseudo-headers
// :method and :path included; regexes match whole; the query is parsed
// without decoding and a parameter's first value is the one matched.
func envoyMatch(t *testing.T, rc *routev3.RouteConfiguration, c routeCase) *routev3.Route {
	t.Helper()
	headers := map[string][]string{":method": {c.method}, ":path": {c.target}, ":authority": {"en.wikipedia.org"}}
	for _, h := range c.header {
		k := strings.ToLower(h[0])
		headers[k] = append(headers[k], h[1])
	}
	path, query, _ := strings.Cut(c.target, "?")
	for _, vh := range rc.GetVirtualHosts() {
		if !contains(vh.GetDomains(), "*") && !contains(vh.GetDomains(), "en.wikipedia.org") {
			continue
		}
		for _, r := range vh.GetRoutes() {
			if routeMatches(t, r.GetMatch(), path, query, headers) {
				return r
			}
		}
		return nil
	}
	return nil
}

func routeMatches(t *testing.T, m *routev3.RouteMatch, path, query string, headers map[string][]string) bool {
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if !strings.HasPrefix(path, ps.Prefix) {
			return false
		}
	case *routev3.RouteMatch_Path:
		if path != ps.Path {
			return false
		}
	case *routev3.RouteMatch_SafeRegex:
		if !fullMatch(t, ps.SafeRegex.GetRegex(), path) {
			return false
		}
	default:
		t.Fatalf("path specifier %T not evaluated", ps)
	}
	for _, h := range m.GetHeaders() {
		vs, present := headers[h.GetName()]
		v := strings.Join(vs, ",")
		if !present && !h.GetTreatMissingHeaderAsEmpty() {
			if !h.GetInvertMatch() {
				return false
			}
			continue
		}
		ok := stringMatches(t, h.GetStringMatch(), v)
		if h.GetHeaderMatchSpecifier() == nil {
			ok = present
		}
		if ok == h.GetInvertMatch() {
			return false
		}
	}
	for _, q := range m.GetQueryParameters() {
		v, ok := envoyFirstParam(query, q.GetName())
		if !ok || !stringMatches(t, q.GetStringMatch(), v) {
			return false
		}
	}
	if m.GetCaseSensitive() != nil || len(m.GetCookies()) > 0 || m.GetRuntimeFraction() != nil {
		t.Fatalf("matcher fields not evaluated: %v", m)
	}
	return true
}

func stringMatches(t *testing.T, s *matcherv3.StringMatcher, v string) bool {
	switch p := s.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		if s.GetIgnoreCase() {
			return strings.EqualFold(p.Exact, v)
		}
		return p.Exact == v
	case *matcherv3.StringMatcher_Prefix:
		if s.GetIgnoreCase() {
			return len(v) >= len(p.Prefix) && strings.EqualFold(v[:len(p.Prefix)], p.Prefix)
		}
		return strings.HasPrefix(v, p.Prefix)
	case *matcherv3.StringMatcher_SafeRegex:
		if s.GetIgnoreCase() {
			t.Fatal("ignore_case with a regex: Envoy ignores it")
		}
		return fullMatch(t, p.SafeRegex.GetRegex(), v)
	}
	t.Fatalf("string matcher %T not evaluated", s.GetMatchPattern())
	return false
}

// envoyFirstParam is Envoy's query_parameters lookup: the raw value of
// the first parameter whose raw name is name.
func envoyFirstParam(rawQuery, name string) (string, bool) {
	for _, part := range strings.Split(rawQuery, "&") {
		if k, v, _ := strings.Cut(part, "="); k == name && part != "" {
			return v, true
		}
	}
	return "", false
}

var regexCache = map[string]*regexp.Regexp{}

func fullMatch(t *testing.T, re, s string) bool {
	r, ok := regexCache[re]
	if !ok {
		var err error
		if r, err = regexp.Compile("^(?:" + re + ")$"); err != nil {
			t.Fatalf("pattern %q: %v", re, err)
		}
		regexCache[re] = r
	}
	return r.MatchString(s)
}

func TestEnvoyExportRejects(t *testing.T) {
	cfg := exportConfig(t)
	cfg.PrimaryDC = "c"
	if _, err := ExportEnvoy(cfg); err == nil || !strings.Contains(err.Error(), "no upstream for DC c") {
		t.Errorf("primary without upstream: %v", err)
	}
	cfg = exportConfig(t)
	cfg.StickTTL = 0
	rc, err := ExportEnvoy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		for _, h := range r.GetResponseHeadersToAdd() {
			if h.GetHeader().GetKey() == "set-cookie" {
				t.Fatalf("stick TTL 0 still sets a cookie on %s", r.GetName())
			}
		}
		if strings.Contains(r.GetName(), "(https)") {
			t.Fatalf("https twin without a cookie to make Secure: %s", r.GetName())
		}
	}
}

// TestLastParamRegexIsLastParam: the :path pattern agrees with the
// router's lastParam on every query built from names and values near the
// title parameter's.
func TestLastParamRegexIsLastParam(t *testing.T) {
	const title = "Special:OAuth/token"
	re := regexp.MustCompile(`\A(?:` + LastParamRegex("title", EncodedRegex(title)) + `)\z`)
	parts := []string{"title=" + title, "title=Special%3AOAuth%2Ftoken", "title=Main_Page", "title", "title=",
		"titles=" + title, "xtitle=" + title, "titl=" + title, "t", "", "=x", "title.x=1", "title=" + title + "2", "a=b=c"}
	var queries []string
	for _, a := range parts {
		for _, b := range parts {
			queries = append(queries, a+"&"+b)
			for _, c := range parts {
				queries = append(queries, a+"&"+b+"&"+c)
			}
		}
		queries = append(queries, a)
	}
	for _, q := range queries {
		v, ok := lastParam(q, "title")
		want := ok && decodeURL(v) == title
		if got := re.MatchString("/w/index.php?" + q); got != want {
			t.Errorf("query %q: pattern says %v, lastParam %q, %v", q, got, v, ok)
		}
	}
	if re.MatchString("/w/index.php") || re.MatchString("/w/index.php?") {
		t.Error("a path without a title matches")
	}
}

// TestEnvoyExportStripsClientHeaders: the exported configuration has the
// header_mutation filter remove every client-sent x-tokenstore-* request
// header, in any case, and nothing else.
func TestEnvoyExportStripsClientHeaders(t *testing.T) {
	rc, err := ExportEnvoy(exportConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	y, err := EnvoyYAML(rc, "test")
	if err != nil {
		t.Fatal(err)
	}
	a := parseEnvoyYAML(t, y).GetTypedPerFilterConfig()[EnvoyHeaderMutationFilter]
	if a == nil {
		t.Fatalf("no %s configuration in:\n%s", EnvoyHeaderMutationFilter, y)
	}
	var m headermutationv3.HeaderMutationPerRoute
	if err := a.UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	removed := func(name string) bool {
		for _, mu := range m.GetMutations().GetRequestMutations() {
			if mu.GetRemove() != "" && strings.EqualFold(mu.GetRemove(), name) {
				return true
			}
			if km := mu.GetRemoveOnMatch().GetKeyMatcher(); km != nil && stringMatches(t, km, strings.ToLower(name)) {
				return true
			}
		}
		return false
	}
	for _, h := range []string{"X-Tokenstore-Subject", "X-Tokenstore-Client-Id", "X-Tokenstore-Rlc", "X-Tokenstore-Token-Id", "x-tokenstore-anything"} {
		if !removed(h) {
			t.Errorf("a client-sent %s reaches the upstream", h)
		}
	}
	for _, h := range []string{"authorization", "cookie", "x-forwarded-for", "x-tokenstoreless"} {
		if removed(h) {
			t.Errorf("%s is removed", h)
		}
	}
	if len(m.GetMutations().GetResponseMutations()) != 0 || len(rc.GetRequestHeadersToRemove()) != 0 {
		t.Errorf("want only request mutations on the filter; got %v, request_headers_to_remove %v", &m, rc.GetRequestHeadersToRemove())
	}
}
