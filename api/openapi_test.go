package api_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/openapigen"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// The committed openapi.json is what go generate makes of openapi.yaml.
func TestOpenAPIJSONIsGenerated(t *testing.T) {
	src, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want, err := openapigen.JSON(src)
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	got, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("openapi.json is not generated from the current openapi.yaml: run go generate ./api")
	}
	if !bytes.Equal(api.OpenAPI(), want) {
		t.Fatal("the embedded description is not openapi.json")
	}
	if _, err := servedDescription(); err != nil {
		t.Fatalf("the description does not load and validate: %v", err)
	}
}

func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	r := e.do(t, http.MethodGet, "/v1/openapi.json", "")
	wantJSON(t, r, http.StatusOK, nil)
	if !bytes.Equal(r.Body, api.OpenAPI()) {
		t.Errorf("GET /v1/openapi.json is not the embedded description")
	}
}

// The merge keys and anchors of the YAML are expanded, written keys win.
func TestOpenAPIGenMerge(t *testing.T) {
	got, err := openapigen.JSON([]byte("a: &x {k: 1, m: [2, 'true']}\nb: {<<: *x, k: 3, n: null}\nc: *x\n"))
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, got); err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{"k":1,"m":[2,"true"]},"b":{"k":3,"m":[2,"true"],"n":null},"c":{"k":1,"m":[2,"true"]}}`; compact.String() != want {
		t.Errorf("got %s, want %s", compact.String(), want)
	}
	for _, bad := range []string{"a: {k: 1, k: 2}\n", "a: &x [1]\nb: {<<: *x}\n", "a: [1\n", "a: 1\n---\nb: 2\n"} {
		if _, err := openapigen.JSON([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

// sourceRoutes returns the patterns the api package registers with
// s.handle and s.open, read from its source (every file, so routes added
// anywhere count), and whether it serves the authorization prefix.
func sourceRoutes(t *testing.T) (patterns []string, authz bool) {
	t.Helper()
	fset, files := api.PackageSource(t)
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "handle", "open":
				lit, ok := call.Args[0].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Errorf("%s: a route registered with a pattern that is no literal", fset.Position(call.Pos()))
					return true
				}
				p, _ := strconv.Unquote(lit.Value)
				if p != "/" {
					patterns = append(patterns, p)
				}
			case "withKey":
				if b, ok := call.Args[0].(*ast.BinaryExpr); ok {
					if id, ok := b.X.(*ast.Ident); ok && id.Name == "AuthzPrefix" {
						authz = true
					}
				}
			}
			return true
		})
	}
	return patterns, authz
}

// Every route the server registers is in the description, and every
// operation of the description is a route.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	d, err := servedDescription()
	if err != nil {
		t.Fatal(err)
	}
	patterns, authz := sourceRoutes(t)
	if len(patterns) < 10 || !authz {
		t.Fatalf("found %d routes (authz %v) in the source; the parse is broken", len(patterns), authz)
	}
	routes := map[string]bool{}
	for _, p := range patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			t.Errorf("route %q has no method", p)
			continue
		}
		routes[method+" "+path] = true
		item := d.doc.Paths.Find(path)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("route %s is not in the description", p)
		}
	}
	authzPath := api.AuthzPrefix + "{path}"
	for path, item := range d.doc.Paths.Map() {
		for method := range item.Operations() {
			if path == authzPath {
				continue
			}
			if !routes[method+" "+path] {
				t.Errorf("the description has %s %s, which the server does not route", method, path)
			}
		}
	}
	item := d.doc.Paths.Find(authzPath)
	if item == nil {
		t.Fatalf("the description lacks %s", authzPath)
	}
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace} {
		if item.GetOperation(m) == nil {
			t.Errorf("%s %s is not described", m, authzPath)
		}
	}
}

// wireCodes returns the values of the Code constants of package wire.
func wireCodes(t *testing.T) []string {
	t.Helper()
	return wireConsts(t, "Code")
}

// wireConsts returns the values of the string constants of package wire
// whose names start with prefix.
func wireConsts(t *testing.T, prefix string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("wire", "wire.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, decl := range f.Decls {
		g, ok := decl.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, prefix) || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					codes = append(codes, v)
				}
			}
		}
	}
	return codes
}

// Every error code of wire is in the description's ErrorCode, with a
// status whose answers carry it, and the description has no other code.
func TestOpenAPIHasEveryErrorCode(t *testing.T) {
	d, err := servedDescription()
	if err != nil {
		t.Fatal(err)
	}
	codes := wireCodes(t)
	if !slices.Contains(codes, wire.CodeTokenReused) || !slices.Contains(codes, wire.CodeNonceStoreUnavailable) {
		t.Fatalf("wire codes %v: the parse is broken", codes)
	}
	var all []string
	for _, v := range d.doc.Components.Schemas["ErrorCode"].Value.Enum {
		all = append(all, v.(string))
	}
	// The codes each status's answers may carry.
	byStatus := map[string][]string{}
	for name, ref := range d.doc.Components.Schemas {
		status, ok := strings.CutPrefix(name, "Error")
		if !ok || len(status) < 3 || status[0] < '1' || status[0] > '5' {
			continue
		}
		code := ref.Value.Properties["error"].Value.Properties["code"].Value
		for _, v := range code.Enum {
			byStatus[v.(string)] = append(byStatus[v.(string)], status[:3])
			if !slices.Contains(all, v.(string)) {
				t.Errorf("schema %s names code %v, which is not in ErrorCode", name, v)
			}
		}
	}
	for _, c := range codes {
		if !slices.Contains(all, c) {
			t.Errorf("wire code %q is not in the description's ErrorCode", c)
		}
		if len(byStatus[c]) == 0 {
			t.Errorf("wire code %q is in no status's error schema", c)
		}
	}
	for _, c := range all {
		if !slices.Contains(codes, c) {
			t.Errorf("the description's code %q is no wire code", c)
		}
	}
}

// Every header of package wire is in the description: as a response
// header, or as the key of the authorization route's security scheme.
func TestOpenAPIHasEveryHeader(t *testing.T) {
	d, err := servedDescription()
	if err != nil {
		t.Fatal(err)
	}
	described := map[string]bool{}
	for _, item := range d.doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, resp := range op.Responses.Map() {
				for name := range resp.Value.Headers {
					described[http.CanonicalHeaderKey(name)] = true
				}
			}
		}
	}
	for _, s := range d.doc.Components.SecuritySchemes {
		if s.Value.Type == "apiKey" && s.Value.In == "header" {
			described[http.CanonicalHeaderKey(s.Value.Name)] = true
		}
	}
	headers := wireConsts(t, "Header")
	if len(headers) < 9 {
		t.Fatalf("wire headers %v: the parse is broken", headers)
	}
	for _, h := range headers {
		if !described[http.CanonicalHeaderKey(h)] {
			t.Errorf("wire header %s is not in the description", h)
		}
	}
}

// The check is real: an answer that does not match the description fails
// it, and so does a real node's answer checked against a description
// that says something else.
func TestOpenAPICheckCatchesDrift(t *testing.T) {
	good, err := servedDescription()
	if err != nil {
		t.Fatal(err)
	}
	// A fake server whose answers break the description in one way each.
	answers := map[string]struct {
		status int
		header map[string]string
		body   string
	}{
		"/v1/tokens/lookup": {200, nil, `{"id":"x","kind":"access","status":"active"}`}, // fields missing
		"/v1/tokens/consume": {200, nil, `{"id":"x","kind":"access","status":"fine","subject":"","client_id":"","scopes":[],"family":"",` +
			`"rlc":"","max_uses":0,"uses_left":0,"created_at":"2026-01-01T00:00:00Z","expires_at":null,"last_used_at":null,"ip":"","user_agent":"","title":""}`}, // unknown status
		"/v1/tokens/revoke": {418, nil, `{"error":{"code":"internal","message":"teapot"}}`},   // undocumented status
		"/v1/tokens/rotate": {410, nil, `{"error":{"code":"token_reused","message":"used"}}`}, // a 410 without its token
		"/v1/nonces":        {409, nil, `{"error":{"code":"token_exists","message":"wrong code for the status"}}`},
		"/v1/introspect":    {200, nil, `{"active":false,"sub":"user:1"}`},                // an inactive answer that says more
		"/v1/batch":         {503, nil, `{"error":{"code":"unavailable","message":"x"}}`}, // no Retry-After
	}
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			http.Error(w, "no", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Tokenstore-Index", "7")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(a.status)
		w.Write([]byte(a.body))
	}))
	defer fake.Close()
	hc := &http.Client{Transport: &checkedTransport{base: http.DefaultTransport, desc: func() (*description, error) { return good, nil }}}
	bodies := map[string]string{
		"/v1/tokens/lookup":  `{"token":"whatever-token"}`,
		"/v1/tokens/consume": `{"token":"whatever-token"}`,
		"/v1/tokens/revoke":  `{"token":"whatever-token"}`,
		"/v1/tokens/rotate":  `{"token":"whatever-token"}`,
		"/v1/nonces":         `{"scope":"s","nonce":"n","timestamp":1}`,
		"/v1/batch":          `{"ops":[{"op":"revoke","token":"whatever-token"}]}`,
	}
	for path := range answers {
		var resp *http.Response
		var err error
		if path == "/v1/introspect" {
			resp, err = hc.Post(fake.URL+path, "application/x-www-form-urlencoded", strings.NewReader("token=x"))
		} else {
			resp, err = hc.Post(fake.URL+path, "application/json", strings.NewReader(bodies[path]))
		}
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: an answer against the description passed the check", path)
		} else {
			t.Logf("%s: %v", path, err)
		}
		if err != nil && !strings.Contains(err.Error(), "OpenAPI") {
			t.Errorf("%s: %v, want the check's error", path, err)
		}
	}
	// An unknown path answered 200 fails too.
	if resp, err := hc.Get(fake.URL + "/v1/elsewhere"); err == nil {
		resp.Body.Close()
		t.Errorf("an unknown path answered 418 passed the check")
	}

	// A real node against broken descriptions.
	n := testcluster.Start(t, testcluster.Options{})
	post := func(d *description, path, body string) ([]byte, error) {
		hc := &http.Client{Transport: &checkedTransport{base: http.DefaultTransport, desc: func() (*description, error) { return d, nil }}}
		resp, err := hc.Post(n.API.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	const issueBody = `{"kind":"access","subject":"drift"}`
	b, err := post(good, "/v1/tokens", issueBody)
	if err != nil {
		t.Fatalf("a good answer failed the check: %v", err)
	}
	var out wire.IssueResponse
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	lookupBody := mustJSON(t, wire.LookupRequest{Token: out.Token})
	if _, err := post(good, "/v1/tokens/lookup", lookupBody); err != nil {
		t.Fatalf("a good answer failed the check: %v", err)
	}
	// A request the description refuses and the server refuses with a
	// documented 4xx passes: so are the tests' deliberately bad requests
	// checked.
	if _, err := post(good, "/v1/tokens", `{"kind":"access","colour":"red"}`); err != nil {
		t.Errorf("a bad request answered 400 failed the check: %v", err)
	}
	for _, c := range []struct {
		what       string
		path, body string
		breakIt    func(paths, schemas map[string]any)
	}{
		{"an issue answered 201, described as 200", "/v1/tokens", issueBody, func(paths, _ map[string]any) {
			r := paths["/v1/tokens"].(map[string]any)["post"].(map[string]any)["responses"].(map[string]any)
			r["200"] = r["201"]
			delete(r, "201")
		}},
		{"a record with a field the description lacks", "/v1/tokens/lookup", lookupBody, func(_, schemas map[string]any) {
			rec := schemas["Record"].(map[string]any)
			delete(rec["properties"].(map[string]any), "rlc")
			rec["required"] = slices.DeleteFunc(rec["required"].([]any), func(v any) bool { return v == "rlc" })
		}},
		{"a request the description refuses and the server takes", "/v1/tokens/lookup", lookupBody, func(_, schemas map[string]any) {
			req := schemas["LookupRequest"].(map[string]any)
			req["required"] = append(req["required"].([]any), "ip")
		}},
		{"an answer without a header the description requires", "/v1/tokens/lookup", lookupBody, func(paths, _ map[string]any) {
			r := paths["/v1/tokens/lookup"].(map[string]any)["post"].(map[string]any)["responses"].(map[string]any)
			r["200"].(map[string]any)["headers"].(map[string]any)["X-Tokenstore-Nowhere"] = map[string]any{
				"required": true, "schema": map[string]any{"type": "string"}}
		}},
	} {
		var doc map[string]any
		if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
			t.Fatal(err)
		}
		c.breakIt(doc["paths"].(map[string]any), doc["components"].(map[string]any)["schemas"].(map[string]any))
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		broken, err := loadDescription(b)
		if err != nil {
			t.Fatalf("%s: the broken description must still be a valid one: %v", c.what, err)
		}
		_, err = post(broken, c.path, c.body)
		if err == nil {
			t.Errorf("%s passed the check", c.what)
		} else {
			t.Logf("%s: %v", c.what, err)
		}
		if err != nil && !strings.Contains(err.Error(), "OpenAPI") {
			t.Errorf("%s: %v, want the check's error", c.what, err)
		}
	}
}

// The daemon links neither the description's YAML source tools nor an
// OpenAPI library: those are for go generate and the tests.
func TestOpenAPIStaysOutOfTheDaemon(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command(gobin, "list", "-deps", "github.com/tokenstore/tokenstore/cmd/tokenstore").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "kin-openapi") || strings.Contains(dep, "openapigen") || strings.HasPrefix(dep, "go.yaml.in/") ||
			strings.Contains(dep, "jsonschema") || strings.Contains(dep, "gorilla/mux") {
			t.Errorf("cmd/tokenstore links %s", dep)
		}
	}
}

// The routes no other api test calls over HTTP, through the checked
// client: the cluster status, snapshots, and an action's path read as an
// id.
func TestOpenAPIOperatorRoutes(t *testing.T) {
	t.Parallel()
	e := startEnv(t, testcluster.Options{})
	var st wire.ClusterResponse
	wantJSON(t, e.do(t, http.MethodGet, "/v1/cluster", ""), http.StatusOK, &st)
	if len(st.Nodes) != 1 || st.Leader == "" {
		t.Errorf("cluster status %+v, want one node, the leader", st)
	}
	e.issue(t, wire.IssueRequest{Kind: "access", Subject: "snap"})
	var snap wire.SnapshotResponse
	wantJSON(t, e.do(t, http.MethodPost, "/v1/operator/snapshot", ""), http.StatusOK, &snap)
	if snap.Index == 0 {
		t.Errorf("snapshot %+v, want its index", snap)
	}
	// Again, with nothing applied since: a 409 or another snapshot, as
	// the store decides; either answer is checked.
	if r := e.do(t, http.MethodPost, "/v1/operator/snapshot", ""); r.Status != http.StatusOK {
		wantError(t, r, http.StatusConflict, wire.CodeNothingToSnapshot)
	}
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		r := e.do(t, m, "/v1/tokens/lookup", "")
		wantError(t, r, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed)
		if r.Header.Get("Allow") != http.MethodPost {
			t.Errorf("%s: Allow %q, want POST", r, r.Header.Get("Allow"))
		}
	}
	wantError(t, e.do(t, http.MethodPut, "/v1/tokens", "{}"), http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed)
	wantError(t, e.do(t, http.MethodGet, "/v1/nothing-here", ""), http.StatusNotFound, wire.CodeRouteNotFound)
	if r := e.do(t, http.MethodHead, "/healthz", ""); r.Status != http.StatusOK {
		t.Errorf("%s: want 200", r)
	}
}
