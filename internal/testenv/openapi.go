package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/maestro-ml/maestro/api"
)

// The OpenAPI document (api/openapi.json) is loaded and validated once per
// test binary; every exchange Env.Do makes is then checked against it.
//
// kin-openapi v0.153.0 handles OpenAPI 3.1: (*openapi3.T).Validate applies
// the 3.1 rules and openapi3filter validates schemas of 3.1 documents with
// its JSON Schema 2020-12 validator (const, type arrays, $ref siblings).
// The document still avoids a few constructs, see api/openapi_test.go.
var oas struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// OpenAPI returns the parsed and validated OpenAPI document and a router
// over its operations.
func OpenAPI() (*openapi3.T, routers.Router, error) {
	oas.once.Do(func() {
		ctx := context.Background()
		loader := openapi3.NewLoader()
		loader.Context = ctx
		doc, err := loader.LoadFromData(api.OpenAPIDocument)
		if err != nil {
			oas.err = fmt.Errorf("load api/openapi.json: %w", err)
			return
		}
		if err := doc.Validate(ctx, openapi3.EnableExamplesValidation(), openapi3.EnableSchemaDefaultsValidation()); err != nil {
			oas.err = fmt.Errorf("api/openapi.json is not a valid OpenAPI document: %w", err)
			return
		}
		if !doc.IsOpenAPI31OrLater() {
			oas.err = fmt.Errorf("api/openapi.json is OpenAPI %s, want 3.1", doc.OpenAPI)
			return
		}
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			oas.err = fmt.Errorf("route api/openapi.json: %w", err)
			return
		}
		oas.doc, oas.router = doc, router
	})
	return oas.doc, oas.router, oas.err
}

// uuidFormat asserts "format": "uuid" (kin-openapi leaves it unchecked by
// default); scoped to our validation rather than registered globally.
var uuidFormat = openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)

func openAPIOptions() *openapi3filter.Options {
	return &openapi3filter.Options{
		// An undocumented status is a mismatch, not something to skip.
		IncludeResponseStatus: true,
		// Validation is about shapes: the server decides whether a token is
		// good; the document only says a bearer token (or HTTP Basic) must
		// be sent.
		AuthenticationFunc: credentialPresent,
		// Never rewrite the (already sent) request with defaults.
		SkipSettingDefaults: true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidator("uuid", uuidFormat),
		},
	}
}

func credentialPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if in.SecurityScheme == nil || in.SecurityScheme.Type != "http" {
		return fmt.Errorf("unexpected security scheme %q", in.SecuritySchemeName)
	}
	want := in.SecurityScheme.Scheme
	if !strings.EqualFold(want, "bearer") && !strings.EqualFold(want, "basic") {
		return fmt.Errorf("unexpected security scheme %q", in.SecuritySchemeName)
	}
	scheme, cred, ok := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, want) || cred == "" {
		return fmt.Errorf("no Authorization: %s credential", want)
	}
	return nil
}

// FindRoute finds the document's operation for a request, as
// ValidateExchange does (see findRoute for chi's trailing wildcard).
func FindRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	_, router, err := OpenAPI()
	if err != nil {
		return nil, nil, err
	}
	_, route, params, err := findRoute(router, req)
	return route, params, err
}

// findRoute is router.FindRoute that also understands chi's trailing
// wildcard. A route pattern ending in "/*" (the artifact routes) is the
// path parameter {path} in the document (api.SpecPath), and kin-openapi's
// router, like any OpenAPI router, matches a path parameter against one
// segment only. So a request whose wildcard spans several segments
// (".../artifacts/a/b/c.bin") matches no operation on the first try; it is
// tried again with those segments folded into one ("/" escaped as %2F,
// which the router's encoded-path matching keeps as one segment) against
// the document paths ending in "/{path}". The request returned is the one
// that matched (for validating its parameters). Should a path still match
// nothing, ValidateExchange skips it, as it does any undocumented path.
func findRoute(router routers.Router, req *http.Request) (*http.Request, *routers.Route, map[string]string, error) {
	route, params, err := router.FindRoute(req)
	if !errors.Is(err, routers.ErrPathNotFound) {
		return req, route, params, err
	}
	doc, _, _ := OpenAPI()
	parts := strings.Split(req.URL.EscapedPath(), "/")
	for _, p := range doc.Paths.InMatchingOrder() {
		if !strings.HasSuffix(p, "/{"+api.ArtifactPathParam+"}") {
			continue
		}
		n := strings.Count(p, "/") // index of the {path} segment
		if len(parts) <= n+1 {
			continue
		}
		folded := strings.Join(parts[:n], "/") + "/" + strings.Join(parts[n:], "%2F")
		r := req.Clone(req.Context())
		r.Body, r.GetBody = req.Body, req.GetBody
		r.URL.RawPath = folded
		if unescaped, uerr := url.PathUnescape(folded); uerr == nil {
			r.URL.Path = unescaped
		}
		if route, params, ferr := router.FindRoute(r); ferr == nil && route.Path == p {
			return r, route, params, nil
		} else if errors.Is(ferr, routers.ErrMethodNotAllowed) {
			return r, nil, nil, ferr
		}
	}
	return req, nil, nil, err
}

// ValidateExchange checks one request and the response it got against the
// OpenAPI document:
//   - a request that matches no operation (unknown path or method) is not
//     checked: the document cannot describe it;
//   - the response must be documented for the operation (status, headers,
//     content type and body);
//   - a request the document rejects (a test sending bad input on purpose)
//     must have been rejected by the server with a 4xx; a 2xx or 5xx means
//     the server and the document disagree about what is valid.
func ValidateExchange(req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) error {
	_, router, err := OpenAPI()
	if err != nil {
		return err
	}
	r := req.Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
	r, route, params, err := findRoute(router, r)
	if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find operation: %w", err)
	}
	opts := openAPIOptions()
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}
	reqErr := openapi3filter.ValidateRequest(context.Background(), in)

	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: opts}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("response (operation %s) does not match the document: %w", route.Operation.OperationID, err)
	}
	if reqErr != nil && (status < 400 || status > 499) {
		return fmt.Errorf("the document rejects the request (%v) but the server answered %d", reqErr, status)
	}
	return nil
}

// CheckOpenAPI is the Observe that Start installs: it fails the test when
// an exchange does not conform to the OpenAPI document. A test that sets its
// own Observe should call this one too.
func (e *Env) CheckOpenAPI(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) {
	e.T.Helper()
	if err := ValidateExchange(req, reqBody, resp.StatusCode, resp.Header, respBody); err != nil {
		e.T.Errorf("OpenAPI conformance: %s %s → %d: %v", req.Method, req.URL.RequestURI(), resp.StatusCode, err)
	}
}

// JSON Lines (the audit export, application/x-ndjson): kin-openapi has no
// decoder for it. The document describes the body as a string; this one
// also requires every line to be a JSON object.
func init() {
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if len(line) == 0 || line[0] != '{' || !json.Valid(line) {
				return nil, fmt.Errorf("line %d is not a JSON object", i+1)
			}
		}
		return string(b), nil
	})
}
