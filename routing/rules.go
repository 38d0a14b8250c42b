// Package routing is the primary-DC router: an HTTP reverse proxy run in
// each datacenter in front of the application servers that sends the
// requests which write, or read what was just written, to the primary
// datacenter and every other request to the local one. One rule set
// (Rules) drives the proxy and the two exports for proxies operators
// already run: an Apache Traffic Server tslua script and an Envoy route
// configuration.
package routing

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Reasons a request is routed as it is.
const (
	ReasonMethod = "method" // a writing method, without the non-write promise
	ReasonPath   = "path"   // an authorize-flow path or page title
	ReasonCookie = "cookie" // the stick cookie of an earlier write
	ReasonNone   = "none"   // nothing matched: the local DC
)

//go:embed wikimedia.yaml
var wikimediaYAML []byte

// DefaultRulesYAML returns the text of the built-in rules (Wikimedia's),
// comments included.
func DefaultRulesYAML() []byte { return bytes.Clone(wikimediaYAML) }

// DefaultRules returns the built-in rules, parsed by the same code as a
// rules file.
func DefaultRules() *Rules {
	r, err := ParseRules(wikimediaYAML)
	if err != nil {
		panic("routing: the built-in rules do not parse: " + err.Error())
	}
	return r
}

// Rules says which requests go to the primary datacenter. Build it with
// ParseRules, LoadRules or DefaultRules: they validate it. Rules are read
// only after that and are safe for concurrent use.
type Rules struct {
	// Methods are the methods of requests that write (reason "method").
	Methods []string `yaml:"methods"`
	// NonWritePromise, when set, exempts a request with a writing method
	// that carries this header with this value.
	NonWritePromise *HeaderMatch `yaml:"non_write_promise,omitempty"`
	// Paths and Titles are the authorize flow (reason "path").
	Paths  PathRules  `yaml:"paths"`
	Titles TitleRules `yaml:"titles"`
	// Cookie, when set, sends the requests that carry it to the primary
	// DC (reason "cookie"), and is what the router sets after a write.
	Cookie *CookieMatch `yaml:"cookie,omitempty"`

	c *compiled
}

// HeaderMatch is a request header and the value it must have. The value
// is compared ignoring ASCII case, against all of the header's fields
// joined with "," (as RFC 9110 combines them).
type HeaderMatch struct {
	Header string `yaml:"header"`
	Value  string `yaml:"value"`
}

// PathRules match the request path, without the query string.
type PathRules struct {
	Exact  []string `yaml:"exact,omitempty"`
	Prefix []string `yaml:"prefix,omitempty"`
}

// TitleRules match MediaWiki page titles in both URL forms:
// <article path><title> and <script>?<param>=<title>.
type TitleRules struct {
	ArticlePaths []string `yaml:"article_paths,omitempty"`
	Scripts      []string `yaml:"scripts,omitempty"`
	Param        string   `yaml:"param,omitempty"`
	Names        []string `yaml:"names,omitempty"`
}

// CookieMatch is a cookie name and value.
type CookieMatch struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// Pair returns the cookie as it appears in a Cookie header: name=value.
func (c *CookieMatch) Pair() string { return c.Name + "=" + c.Value }

type compiled struct {
	methods    map[string]bool
	promiseKey string // canonical header key
	exact      map[string]bool
	titles     map[string]bool
	scripts    map[string]bool
	cookie     string // name=value
}

// LoadRules reads a YAML rules file.
func LoadRules(path string) (*Rules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	r, err := ParseRules(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseRules parses YAML rules text and validates it. Unknown fields are
// rejected.
func ParseRules(b []byte) (*Rules, error) {
	var r Rules
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("rules: empty document")
		}
		return nil, fmt.Errorf("rules: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("rules: want one YAML document")
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// MarshalRules encodes rules as YAML that ParseRules reads back.
func MarshalRules(r *Rules) ([]byte, error) { return yaml.Marshal(r) }

// Validate checks the rules and prepares them for Decide.
func (r *Rules) Validate() error {
	c := &compiled{methods: map[string]bool{}, exact: map[string]bool{}, titles: map[string]bool{}, scripts: map[string]bool{}}
	for _, m := range r.Methods {
		if !isToken(m) {
			return fmt.Errorf("rules: methods: %q is not an HTTP method", m)
		}
		c.methods[m] = true
	}
	if p := r.NonWritePromise; p != nil {
		if !isToken(p.Header) {
			return fmt.Errorf("rules: non_write_promise.header: %q is not a header name", p.Header)
		}
		if p.Value == "" || !isVisible(p.Value) || strings.Contains(p.Value, ",") {
			return fmt.Errorf("rules: non_write_promise.value: want visible ASCII without commas, got %q", p.Value)
		}
		c.promiseKey = textproto.CanonicalMIMEHeaderKey(p.Header)
	}
	for _, p := range r.Paths.Exact {
		if err := checkURLText("paths.exact", p, true); err != nil {
			return err
		}
		c.exact[p] = true
	}
	for _, p := range r.Paths.Prefix {
		if err := checkURLText("paths.prefix", p, true); err != nil {
			return err
		}
	}
	t := r.Titles
	for _, p := range t.ArticlePaths {
		if err := checkURLText("titles.article_paths", p, true); err != nil {
			return err
		}
		if !strings.HasSuffix(p, "/") {
			return fmt.Errorf("rules: titles.article_paths: %q must end with /", p)
		}
	}
	for _, p := range t.Scripts {
		if err := checkURLText("titles.scripts", p, true); err != nil {
			return err
		}
		if strings.HasSuffix(p, "/") {
			return fmt.Errorf("rules: titles.scripts: %q is a script path, it must not end with /", p)
		}
		c.scripts[p] = true
	}
	if len(t.Scripts) > 0 {
		if t.Param == "" {
			return errors.New("rules: titles.param: required with titles.scripts")
		}
		for i := 0; i < len(t.Param); i++ {
			if !isAlnum(t.Param[i]) && !strings.ContainsRune("_-.", rune(t.Param[i])) {
				return fmt.Errorf("rules: titles.param: %q: want letters, digits, _ - or .", t.Param)
			}
		}
	}
	for _, n := range t.Names {
		if err := checkURLText("titles.names", n, false); err != nil {
			return err
		}
		c.titles[n] = true
	}
	if len(t.Names) > 0 && len(t.ArticlePaths) == 0 && len(t.Scripts) == 0 {
		return errors.New("rules: titles.names: give titles.article_paths or titles.scripts too")
	}
	if ck := r.Cookie; ck != nil {
		if !isToken(ck.Name) {
			return fmt.Errorf("rules: cookie.name: %q is not a cookie name", ck.Name)
		}
		if ck.Value == "" || !isCookieValue(ck.Value) {
			return fmt.Errorf("rules: cookie.value: %q is not a plain cookie value", ck.Value)
		}
		if strings.Contains(ck.Pair(), "%") { // ATS header_rewrite would expand it
			return fmt.Errorf("rules: cookie: %q: no %% in the name or value", ck.Pair())
		}
		c.cookie = ck.Pair()
	}
	r.c = c
	return nil
}

// checkURLText accepts what the three implementations match alike: ASCII
// between ! and ~, without the characters that delimit or encode parts of
// a URL (% ? # & +). Paths start with /.
func checkURLText(field, s string, path bool) error {
	if s == "" {
		return fmt.Errorf("rules: %s: empty entry", field)
	}
	if path && s[0] != '/' {
		return fmt.Errorf("rules: %s: %q must start with /", field, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("%?#&+", c) >= 0 {
			return fmt.Errorf("rules: %s: %q: only visible ASCII without %% ? # & + (write spaces in titles as _)", field, s)
		}
	}
	return nil
}

// Decide says whether req goes to the primary datacenter, and why: the
// first of method, path and cookie that matches, or "none".
func (r *Rules) Decide(req *http.Request) (primary bool, reason string) {
	return r.decide(req.Method, req.URL.EscapedPath(), req.URL.RawQuery, req.Header)
}

func (r *Rules) decide(method, rawPath, rawQuery string, h http.Header) (bool, string) {
	c := r.c
	if c.methods[method] && !r.promised(h) {
		return true, ReasonMethod
	}
	if r.pathMatches(rawPath, rawQuery) {
		return true, ReasonPath
	}
	if c.cookie != "" && hasCookie(h["Cookie"], c.cookie) {
		return true, ReasonCookie
	}
	return false, ReasonNone
}

// Sticks reports whether a request routed for this reason sets the stick
// cookie: it wrote (method) or is a step of the authorize flow (path).
func Sticks(reason string) bool { return reason == ReasonMethod || reason == ReasonPath }

func (r *Rules) promised(h http.Header) bool {
	if r.NonWritePromise == nil {
		return false
	}
	v, ok := joined(h, r.c.promiseKey)
	return ok && asciiEqualFold(v, r.NonWritePromise.Value)
}

func (r *Rules) pathMatches(rawPath, rawQuery string) bool {
	c := r.c
	p := decodeURL(rawPath)
	if c.exact[p] {
		return true
	}
	for _, pre := range r.Paths.Prefix {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	if len(c.titles) == 0 {
		return false
	}
	for _, ap := range r.Titles.ArticlePaths {
		if t, ok := strings.CutPrefix(p, ap); ok && c.titles[t] {
			return true
		}
	}
	if c.scripts[p] {
		if v, ok := lastParam(rawQuery, r.Titles.Param); ok && c.titles[decodeURL(v)] {
			return true
		}
	}
	return false
}

// joined returns a header's fields joined with "," and trimmed of
// spaces and tabs, as Envoy and ATS present a repeated header.
func joined(h http.Header, key string) (string, bool) {
	vs := h[key]
	if len(vs) == 0 {
		return "", false
	}
	if len(vs) == 1 {
		return strings.Trim(vs[0], " \t"), true
	}
	return strings.Trim(strings.Join(vs, ","), " \t"), true
}

// hasCookie reports whether one of the Cookie fields holds the pair
// name=value. Pairs are separated by ";" (and "," where a proxy joined
// repeated Cookie fields); spaces and tabs around a pair are ignored.
func hasCookie(fields []string, pair string) bool {
	for _, f := range fields {
		for f != "" {
			i := strings.IndexAny(f, ";,")
			part := f
			if i >= 0 {
				part, f = f[:i], f[i+1:]
			} else {
				f = ""
			}
			if strings.Trim(part, " \t") == pair {
				return true
			}
		}
	}
	return false
}

// lastParam returns the raw value of the last query parameter whose raw
// name is name ("" for a parameter without "="): PHP keeps the last of a
// repeated name, so that is the title MediaWiki serves.
func lastParam(rawQuery, name string) (value string, found bool) {
	for rawQuery != "" {
		part := rawQuery
		if i := strings.IndexByte(rawQuery, '&'); i >= 0 {
			part, rawQuery = rawQuery[:i], rawQuery[i+1:]
		} else {
			rawQuery = ""
		}
		if k, v, _ := strings.Cut(part, "="); k == name {
			value, found = v, true
		}
	}
	return value, found
}

// decodeURL decodes, in one pass, each %XX whose byte is not an ASCII
// letter or digit; everything else stays as it is (including malformed
// escapes and encoded letters or digits).
func decodeURL(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			if d := unhex(s[i+1])<<4 | unhex(s[i+2]); !isAlnum(d) {
				b.WriteByte(d)
				i += 2
				continue
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 9110 token (method, header name,
// cookie name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return true
}

func isVisible(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// isCookieValue reports whether s is made of RFC 6265 cookie-octets.
func isCookieValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}
