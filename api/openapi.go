package api

import (
	_ "embed"
	"net/http"
)

//go:generate go run openapi_gen.go

// openapiJSON is the OpenAPI description of this API, generated from
// openapi.yaml; the tests check that it is current.
//
//go:embed openapi.json
var openapiJSON []byte

// OpenAPI returns the OpenAPI description the server serves at
// GET /v1/openapi.json.
func OpenAPI() []byte { return append([]byte(nil), openapiJSON...) }

// openapi serves the description.
func (s *Server) openapi(w http.ResponseWriter, r *http.Request) *Error {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	w.Write(openapiJSON)
	return nil
}
