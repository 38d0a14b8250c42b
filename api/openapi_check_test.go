package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/tokenstore/tokenstore/api"
)

// A description checks the requests the api tests send and the answers
// they get against the OpenAPI description the server serves.
type description struct {
	doc    *openapi3.T
	router routers.Router
}

// loadDescription loads and validates an OpenAPI description in JSON.
func loadDescription(b []byte) (*description, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	// The router matches the servers' hosts; the tests' nodes listen on
	// ports of their own.
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return &description{doc: doc, router: router}, nil
}

var (
	servedOnce sync.Once
	served     *description
	servedErr  error
)

// servedDescription is the description embedded in the server.
func servedDescription() (*description, error) {
	servedOnce.Do(func() { served, servedErr = loadDescription(api.OpenAPI()) })
	return served, servedErr
}

// checkedTransport validates every exchange against a description: a
// request the description allows must get an answer it documents; a
// request it does not allow (a test's deliberately bad one) must get a
// documented 4xx error answer. A failed check is the round trip's error.
type checkedTransport struct {
	base http.RoundTripper
	// desc returns the description; nil: the served one.
	desc func() (*description, error)
}

// checked returns a transport that validates what passes through base.
func checked(base http.RoundTripper) http.RoundTripper {
	return &checkedTransport{base: base, desc: servedDescription}
}

// bearer is the shape of a credential the bearer scheme accepts.
var bearer = regexp.MustCompile(`^[Bb][Ee][Aa][Rr][Ee][Rr] +\S+ *$`)

// authenticate checks the security schemes as far as the description can:
// a node without --api-keys takes requests without a key, so only a key
// sent in the wrong shape fails here (the node then answers 401).
func authenticate(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	h := in.RequestValidationInput.Request.Header
	switch s := in.SecurityScheme; {
	case s.Type == "http" && s.Scheme == "bearer":
		if v, ok := h["Authorization"]; ok && (len(v) != 1 || !bearer.MatchString(v[0])) {
			return errors.New("Authorization is not Bearer <key>")
		}
		return nil
	case s.Type == "apiKey" && s.In == "header":
		if v, ok := h[http.CanonicalHeaderKey(s.Name)]; ok && (len(v) != 1 || v[0] == "") {
			return fmt.Errorf("%s is empty", s.Name)
		}
		return nil
	}
	return fmt.Errorf("security scheme %s %s is not checked", in.SecurityScheme.Type, in.SecuritySchemeName)
}

func (c *checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	d, err := c.desc()
	if err != nil {
		return nil, fmt.Errorf("OpenAPI description: %w", err)
	}
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	probe := req.Clone(req.Context())
	probe.Body = io.NopCloser(bytes.NewReader(body))
	route, params, findErr := d.findRoute(probe)
	var in *openapi3filter.RequestValidationInput
	var reqErr error
	if findErr == nil {
		in = &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: authenticate, MultiError: true}}
		reqErr = openapi3filter.ValidateRequest(req.Context(), in)
	}

	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	what := fmt.Sprintf("%s %s -> %d %s", req.Method, req.URL.RequestURI(), resp.StatusCode, bytes.TrimSpace(answer))

	if findErr != nil {
		// A path or method the description does not have: the one answer
		// it documents for those is 404 route_not_found or 405.
		if err := d.checkNoRoute(findErr, resp, answer); err != nil {
			return nil, fmt.Errorf("OpenAPI: %s: %w", what, err)
		}
		return resp, nil
	}
	if reqErr != nil && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
		return nil, fmt.Errorf("OpenAPI: %s: the description refuses the request (%v), the server answered %d", what, reqErr, resp.StatusCode)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	out.SetBodyBytes(answer)
	if err := openapi3filter.ValidateResponse(req.Context(), out); err != nil {
		return nil, fmt.Errorf("OpenAPI: %s: the answer does not match the description of %s %s: %w", what, route.Method, route.Path, err)
	}
	if err := checkErrorOp(route, resp, answer); err != nil {
		return nil, fmt.Errorf("OpenAPI: %s: %w", what, err)
	}
	return resp, nil
}

// findRoute finds the operation of req; a HEAD's is the GET's. A path under the authorization
// prefix is the original request's, slashes and all: the description's
// {path} takes all of it.
func (d *description) findRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	if !strings.HasPrefix(req.URL.Path, api.AuthzPrefix+"/") {
		route, params, err := d.router.FindRoute(req)
		if req.Method == http.MethodHead && errors.Is(err, routers.ErrMethodNotAllowed) {
			// Every GET route answers HEAD (the description says so).
			get := req.Clone(req.Context())
			get.Method = http.MethodGet
			return d.router.FindRoute(get)
		}
		return route, params, err
	}
	probe := req.Clone(req.Context())
	probe.URL.Path, probe.URL.RawPath = api.AuthzPrefix+"path", ""
	route, params, err := d.router.FindRoute(probe)
	if err == nil {
		params["path"] = strings.TrimPrefix(req.URL.Path, api.AuthzPrefix)
	}
	return route, params, err
}

// checkNoRoute checks the answer to a request the description has no
// operation for.
func (d *description) checkNoRoute(findErr error, resp *http.Response, answer []byte) error {
	var rerr *routers.RouteError
	if !errors.As(findErr, &rerr) {
		return findErr
	}
	status, schema := http.StatusNotFound, "Error404"
	if errors.Is(findErr, routers.ErrMethodNotAllowed) {
		status, schema = http.StatusMethodNotAllowed, "Error405"
		if resp.Header.Get("Allow") == "" {
			return errors.New("a 405 without Allow")
		}
	}
	if resp.StatusCode != status {
		return fmt.Errorf("no operation in the description (%v), and the answer is not %d", findErr, status)
	}
	return d.checkSchema(schema, answer)
}

// checkSchema validates a JSON body against a schema of the components.
func (d *description) checkSchema(name string, body []byte) error {
	ref := d.doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("no schema %s in the description", name)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("the body is not JSON: %w", err)
	}
	return ref.Value.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.MultiErrors())
}

// checkErrorOp checks what the schemas cannot: only a batch's errors name
// an op.
func checkErrorOp(route *routers.Route, resp *http.Response, answer []byte) error {
	if resp.StatusCode < 400 || route.Path == "/v1/batch" {
		return nil
	}
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if json.Unmarshal(answer, &e) == nil && e.Error["op"] != nil {
		return fmt.Errorf("error.op in an answer of %s %s; only /v1/batch names an op", route.Method, route.Path)
	}
	return nil
}
