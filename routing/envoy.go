package routing

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"
)

// EnvoyRouteName is the name of the exported RouteConfiguration and of
// its one virtual host.
const EnvoyRouteName = "tokenstore_route"

// EnvoyHeaderMutationFilter is the name the HTTP connection manager must
// give its header_mutation filter, placed before ext_authz, for the
// exported configuration to strip client-sent x-tokenstore-* headers.
const EnvoyHeaderMutationFilter = "envoy.filters.http.header_mutation"

// ClientHeaderPrefix is the prefix of the headers only the token store
// and its proxies may set: an edge removes client-sent ones.
const ClientHeaderPrefix = "x-tokenstore-"

// EnvoyCluster is the Envoy cluster a DC's upstream must be defined as.
func EnvoyCluster(dc string) string { return "dc_" + dc }

// ExportEnvoy builds an Envoy v3 RouteConfiguration from the rules: one
// virtual host for every domain whose routes, first match wins, send to
// cluster dc_<primary DC> the requests the built-in router sends there,
// and every other request to dc_<local DC>. Matching is the rules':
//
//   - paths and titles use RE2 patterns in which each character other
//     than an ASCII letter or digit may also be percent-encoded (Envoy
//     does not decode the path); each pattern stays small enough for
//     Envoy's default re2.max_program_size.error_level (100);
//   - the title parameter is a pattern on :path for its last occurrence,
//     as PHP reads a repeated name (Envoy's query_parameters matcher
//     would take the first);
//   - the cookie is a pattern on the cookie header, the non-write promise
//     an inverted, case-insensitive match with a missing header taken as
//     empty.
//
// Routes that write also add the stick cookie (response_headers_to_add);
// each has a twin for x-forwarded-proto https that adds it Secure. Every
// route names the serving DC and the decision in x-tokenstore-served-dc
// and x-tokenstore-route. Requests lose every client-sent x-tokenstore-*
// header through the header_mutation filter's per-route configuration
// (EnvoyHeaderMutationFilter): that filter runs before ext_authz, whose
// identity headers would be stripped too by the route configuration's
// own request_headers_to_remove. The result passes Validate().
func ExportEnvoy(cfg ExportConfig) (*routev3.RouteConfiguration, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := cfg.Rules
	var routes []*routev3.Route
	primary := EnvoyCluster(cfg.PrimaryDC)
	// add appends a route to the primary DC; sticky routes get an https
	// twin first.
	add := func(name, reason string, m *routev3.RouteMatch) {
		sticky := cfg.sticks() && Sticks(reason)
		if sticky {
			sm := cloneMatch(m)
			sm.Headers = append(sm.Headers, &routev3.HeaderMatcher{
				Name:                 "x-forwarded-proto",
				HeaderMatchSpecifier: stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "https"}, IgnoreCase: true}),
			})
			routes = append(routes, envoyRoute(name+" (https)", sm, primary, cfg.PrimaryDC, "primary/"+reason,
				StickCookie(r.Cookie, cfg.StickTTL, true)))
		}
		stick := ""
		if sticky {
			stick = StickCookie(r.Cookie, cfg.StickTTL, false)
		}
		routes = append(routes, envoyRoute(name, m, primary, cfg.PrimaryDC, "primary/"+reason, stick))
	}

	if len(r.Methods) > 0 {
		m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		var method *matcherv3.StringMatcher
		if len(r.Methods) == 1 {
			method = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: r.Methods[0]}}
		} else {
			q := make([]string, len(r.Methods))
			for i, s := range r.Methods {
				q[i] = regexp.QuoteMeta(s)
			}
			method = safeRegex(strings.Join(q, "|"))
		}
		m.Headers = append(m.Headers, &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: stringMatch(method)})
		if p := r.NonWritePromise; p != nil {
			m.Headers = append(m.Headers, &routev3.HeaderMatcher{
				Name:                      strings.ToLower(p.Header),
				HeaderMatchSpecifier:      stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p.Value}, IgnoreCase: true}),
				InvertMatch:               true,
				TreatMissingHeaderAsEmpty: true,
			})
		}
		add("primary/method: "+strings.Join(r.Methods, ","), ReasonMethod, m)
	}
	pathRoute := func(shown, pattern string) {
		add("primary/path: "+shown, ReasonPath, &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: pattern}}})
	}
	for _, p := range r.Paths.Exact {
		pathRoute(p, EncodedRegex(p))
	}
	for _, p := range r.Paths.Prefix {
		pathRoute(p+"*", EncodedRegex(p)+".*")
	}
	for _, ap := range r.Titles.ArticlePaths {
		for _, t := range r.Titles.Names {
			pathRoute(ap+t, EncodedRegex(ap+t))
		}
	}
	for _, s := range r.Titles.Scripts {
		for _, t := range r.Titles.Names {
			add("primary/path: "+s+"?"+r.Titles.Param+"="+t, ReasonPath, &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: EncodedRegex(s)}},
				Headers: []*routev3.HeaderMatcher{{
					Name:                 ":path",
					HeaderMatchSpecifier: stringMatch(safeRegex(LastParamRegex(r.Titles.Param, EncodedRegex(t)))),
				}},
			})
		}
	}
	if c := r.Cookie; c != nil {
		add("primary/cookie: "+c.Pair(), ReasonCookie, &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{
				Name:                 "cookie",
				HeaderMatchSpecifier: stringMatch(safeRegex(CookieRegex(c))),
			}},
		})
	}
	routes = append(routes, envoyRoute("local", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		EnvoyCluster(cfg.LocalDC), cfg.LocalDC, "local", ""))

	strip, err := stripClientHeaders()
	if err != nil {
		return nil, err
	}
	rc := &routev3.RouteConfiguration{
		Name:                 EnvoyRouteName,
		TypedPerFilterConfig: map[string]*anypb.Any{EnvoyHeaderMutationFilter: strip},
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    EnvoyRouteName,
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("export envoy: generated configuration does not validate: %w", err)
	}
	return rc, nil
}

// stripClientHeaders is the header_mutation per-route configuration that
// removes every request header named ClientHeaderPrefix+"…".
func stripClientHeaders() (*anypb.Any, error) {
	m := &headermutationv3.HeaderMutationPerRoute{Mutations: &headermutationv3.Mutations{
		RequestMutations: []*mutationv3.HeaderMutation{{Action: &mutationv3.HeaderMutation_RemoveOnMatch_{
			RemoveOnMatch: &mutationv3.HeaderMutation_RemoveOnMatch{KeyMatcher: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: ClientHeaderPrefix}, IgnoreCase: true}},
		}}},
	}}
	if err := m.ValidateAll(); err != nil {
		return nil, fmt.Errorf("export envoy: header mutation: %w", err)
	}
	a, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("export envoy: header mutation: %w", err)
	}
	return a, nil
}

func envoyRoute(name string, m *routev3.RouteMatch, cluster, dc, route, stick string) *routev3.Route {
	hdrs := []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: strings.ToLower(HeaderServedDC), Value: dc}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
		{Header: &corev3.HeaderValue{Key: strings.ToLower(HeaderRoute), Value: route}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD},
	}
	if stick != "" {
		hdrs = append(hdrs, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: "set-cookie", Value: stick}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return &routev3.Route{
		Name:  name,
		Match: m,
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		}},
		ResponseHeadersToAdd: hdrs,
	}
}

func cloneMatch(m *routev3.RouteMatch) *routev3.RouteMatch {
	c := &routev3.RouteMatch{PathSpecifier: m.PathSpecifier, QueryParameters: m.QueryParameters}
	c.Headers = append([]*routev3.HeaderMatcher(nil), m.Headers...)
	return c
}

func stringMatch(m *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
	return &routev3.HeaderMatcher_StringMatch{StringMatch: m}
}

func safeRegex(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// EncodedRegex is an RE2 pattern (matched whole, as Envoy does) for s as
// sent in a URL: each character other than an ASCII letter or digit may
// also be percent-encoded, in either hex case. It is the pattern form of
// comparing decodeURL(sent) with s.
func EncodedRegex(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) {
			b.WriteByte(c)
			continue
		}
		hex := fmt.Sprintf("%02X", c)
		b.WriteString("(?:" + regexp.QuoteMeta(string(c)) + "|%" + hexDigit(hex[0]) + hexDigit(hex[1]) + ")")
	}
	return b.String()
}

// LastParamRegex is an RE2 pattern (matched whole) for a :path whose last
// query parameter of raw name name has a raw value matching value, which
// must not match "&". A parameter "name" without "=" counts as one with
// an empty value, as in PHP.
func LastParamRegex(name, value string) string {
	return `[^?]*\?(?:[^&]*&)*` + regexp.QuoteMeta(name) + `=` + value + `(?:&` + notParamRegex(name) + `)*`
}

// notParamRegex is an RE2 pattern for one query parameter (no "&") that
// is neither name nor name=…: RE2 has no negative look-ahead, so each
// way of leaving the name is spelled out, nested.
func notParamRegex(name string) string {
	// After all of name, anything but "=" continues a longer name.
	re := regexp.QuoteMeta(name[len(name)-1:]) + `[^&=][^&]*`
	for i := len(name) - 1; i >= 0; i-- {
		alt := `[^&` + regexp.QuoteMeta(name[i:i+1]) + `][^&]*`
		if i == len(name)-1 {
			re = `(?:` + alt + `|` + re + `)?`
		} else {
			re = `(?:` + alt + `|` + regexp.QuoteMeta(name[i:i+1]) + re + `)?`
		}
	}
	return re
}

func hexDigit(d byte) string {
	if d >= 'A' {
		return "[" + string(d) + string(d+'a'-'A') + "]"
	}
	return string(d)
}

// CookieRegex is an RE2 pattern for a cookie header holding the pair:
// pairs separated by ";" or "," with optional spaces or tabs around.
func CookieRegex(c *CookieMatch) string {
	return `(?:.*[;,])?[ \t]*` + regexp.QuoteMeta(c.Pair()) + `[ \t]*(?:[;,].*)?`
}

// EnvoyJSON encodes a route configuration as Envoy reads it (proto field
// names).
func EnvoyJSON(rc *routev3.RouteConfiguration) ([]byte, error) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}.Marshal(rc)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// EnvoyYAML encodes a route configuration as YAML (the JSON form in block
// style), under a comment naming the clusters it expects.
func EnvoyYAML(rc *routev3.RouteConfiguration, comment string) ([]byte, error) {
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rc)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(j, &doc); err != nil {
		return nil, err
	}
	blockStyle(&doc)
	doc.HeadComment = comment
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// blockStyle drops the flow style and quoting that decoding JSON gave the
// nodes; the encoder quotes what needs it (strings that would read as
// another type keep their !!str tag).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// EnvoyMaxProgramSize is Envoy's default re2.max_program_size.error_level:
// a larger pattern makes Envoy reject the configuration.
const EnvoyMaxProgramSize = 100

// EstimateRE2ProgramSize approximates the RE2 program size Envoy checks:
// Go's compiled program (the same construction for literals, classes and
// alternations) plus the UTF-8 byte ranges RE2 needs for each "any
// character". Checked against RE2 itself: 61 for the longest default
// title pattern (estimate 65), 44 for the cookie pattern (estimate 44).
func EstimateRE2ProgramSize(pattern string) (int, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0, err
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return 0, err
	}
	n := len(prog.Inst)
	for _, in := range prog.Inst {
		if in.Op == syntax.InstRuneAnyNotNL || in.Op == syntax.InstRuneAny {
			n += 9
		}
	}
	return n, nil
}

// EnvoyRegexes returns every RE2 pattern of a route configuration.
func EnvoyRegexes(rc *routev3.RouteConfiguration) []string {
	var out []string
	str := func(m *matcherv3.StringMatcher) {
		if re := m.GetSafeRegex(); re != nil {
			out = append(out, re.GetRegex())
		}
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			m := r.GetMatch()
			if re := m.GetSafeRegex(); re != nil {
				out = append(out, re.GetRegex())
			}
			for _, h := range m.GetHeaders() {
				str(h.GetStringMatch())
			}
			for _, q := range m.GetQueryParameters() {
				str(q.GetStringMatch())
			}
		}
	}
	return out
}

// EnvoyRegexWarnings names the patterns likely too large for Envoy's
// default program size limit (long titles or paths in the rules).
func EnvoyRegexWarnings(rc *routev3.RouteConfiguration) []string {
	var w []string
	for _, re := range EnvoyRegexes(rc) {
		if n, err := EstimateRE2ProgramSize(re); err != nil || n > EnvoyMaxProgramSize {
			w = append(w, fmt.Sprintf("pattern %q: RE2 program size about %d, over Envoy's default limit %d (raise the runtime key re2.max_program_size.error_level)", re, n, EnvoyMaxProgramSize))
		}
	}
	return w
}
