package api

import (
	_ "embed"
	"net/http"
)

// OpenAPIDocument is the OpenAPI 3.1 description of this API, served at
// /api/v1/openapi.json and checked against real responses in the tests.
//
//go:embed openapi.json
var OpenAPIDocument []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(OpenAPIDocument)
	return nil
}
