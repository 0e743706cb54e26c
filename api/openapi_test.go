package api_test

// The OpenAPI document (openapi.json) against the code: it must be a valid
// OpenAPI 3.1 document, list exactly the routes of the route table, and
// describe every response the walk below provokes. testenv validates every
// exchange of every integration test against it as well (Env.CheckOpenAPI).
//
// kin-openapi v0.153.0 and OpenAPI 3.1: loading and Validate apply the 3.1
// rules, and openapi3filter validates request and response schemas of 3.1
// documents with its JSON Schema 2020-12 validator, so const, $ref siblings
// and type arrays all work. What the document avoids, and why:
//   - "nullable": not a 3.1 keyword (kin-openapi still decodes it but the
//     2020-12 validator ignores it). No field of ours is nullable; a future
//     one should use "type": ["T", "null"].
//   - "servers": gorillamux matches the host and base path of each server,
//     and the API is served from whatever address it listens on, so the
//     document keeps the 3.1 default ("/").
//   - "format": "email" is left off request schemas: kin-openapi's email
//     regexp is not the server's rule (net/mail after trimming and
//     lower-casing); "uuid" is asserted by testenv with a document-scoped
//     validator, as kin-openapi does not check it by default.
//   - 405 cannot be attached to an operation (it is the answer for a method
//     that has none); the document describes it in info.description.
//   - webhooks, pathItems components and $dynamicRef: not needed, not tried.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, _, err := testenv.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

type operation struct {
	method, path string
	op           *openapi3.Operation
}

func operations(doc *openapi3.T) []operation {
	var out []operation
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			out = append(out, operation{method, path, op})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].path+" "+out[i].method < out[j].path+" "+out[j].method
	})
	return out
}

func hasParam(op *openapi3.Operation, in, name string) *openapi3.Parameter {
	for _, p := range op.Parameters {
		if p.Value != nil && p.Value.In == in && strings.EqualFold(p.Value.Name, name) {
			return p.Value
		}
	}
	return nil
}

// (a) The document loads, is valid OpenAPI 3.1, and keeps its own rules.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	var raw map[string]any
	if err := json.Unmarshal(api.OpenAPIDocument, &raw); err != nil {
		t.Fatal(err)
	}
	bearer := doc.Components.SecuritySchemes["bearerAuth"]
	if bearer == nil || bearer.Value.Type != "http" || bearer.Value.Scheme != "bearer" || bearer.Value.BearerFormat != "JWT" {
		t.Fatalf("bearerAuth = %+v", bearer)
	}
	basic := doc.Components.SecuritySchemes["basicAuth"]
	if basic == nil || basic.Value.Type != "http" || basic.Value.Scheme != "basic" {
		t.Fatalf("basicAuth = %+v", basic)
	}
	// Either credential, each alone (alternatives, not both at once).
	if len(doc.Security) != 2 || len(doc.Security[0]) != 1 || doc.Security[0]["bearerAuth"] == nil ||
		len(doc.Security[1]) != 1 || doc.Security[1]["basicAuth"] == nil {
		t.Fatalf("global security = %v, want bearerAuth or basicAuth", doc.Security)
	}
	problem := doc.Components.Schemas["Problem"].Value
	for _, f := range []string{"type", "title", "status", "detail", "instance", "request_id"} {
		if problem.Properties[f] == nil {
			t.Errorf("Problem has no %s", f)
		}
	}
	ids := map[string]bool{}
	for _, o := range operations(doc) {
		name := o.method + " " + o.path
		if o.op.OperationID == "" || o.op.Summary == "" {
			t.Errorf("%s: operationId and summary are required", name)
		}
		if ids[o.op.OperationID] {
			t.Errorf("%s: duplicate operationId %s", name, o.op.OperationID)
		}
		ids[o.op.OperationID] = true
		if o.op.Responses.Status(500) == nil {
			t.Errorf("%s: no 500 response", name)
		}
		if o.op.Security == nil && o.op.Responses.Status(401) == nil {
			t.Errorf("%s: authenticated but no 401 response", name)
		}
		for code, r := range o.op.Responses.Map() {
			if n, _ := strconv.Atoi(code); n >= 400 && r.Value.Content.Get("application/problem+json") == nil {
				t.Errorf("%s %s: an error response must be application/problem+json", name, code)
			}
			if r.Value.Headers["X-Request-Id"] == nil {
				t.Errorf("%s %s: X-Request-Id not documented", name, code)
			}
		}
		if hasParam(o.op, "query", "page_token") != nil {
			mr := hasParam(o.op, "query", "max_results")
			if mr == nil || mr.Schema.Value.Max == nil || *mr.Schema.Value.Max != api.MaxPageSize {
				t.Errorf("%s: a list needs max_results with maximum %d", name, api.MaxPageSize)
			}
		}
		if rb := o.op.RequestBody; rb != nil && isByteStream(rb.Value) {
			// An artifact upload: any bytes of any media type, streamed.
			for _, code := range []int{400, 413} {
				if o.op.Responses.Status(code) == nil {
					t.Errorf("%s: takes a body but documents no %d", name, code)
				}
			}
		} else if rb != nil {
			for _, code := range []int{400, 413, 415} {
				if o.op.Responses.Status(code) == nil {
					t.Errorf("%s: takes a body but documents no %d", name, code)
				}
			}
			mt := rb.Value.Content.Get("application/json")
			if mt == nil || len(rb.Value.Content) != 1 {
				t.Errorf("%s: the body must be application/json only", name)
				continue
			}
			checkBounded(t, name+" body", mt.Schema, true)
		}
		for _, p := range o.op.Parameters {
			checkBounded(t, name+" "+p.Value.Name, p.Value.Schema, false)
		}
	}
}

// isByteStream reports whether a request body is opaque bytes: one "*/*"
// media type without a schema (nothing to decode, bounded by the size
// limit rather than by a schema).
func isByteStream(rb *openapi3.RequestBody) bool {
	mt, ok := rb.Content["*/*"]
	return ok && len(rb.Content) == 1 && mt.Schema == nil
}

// checkBounded enforces the HTTP API conventions on input schemas: objects
// are closed, strings and arrays bounded.
func checkBounded(t *testing.T, where string, ref *openapi3.SchemaRef, closed bool) {
	t.Helper()
	s := ref.Value
	switch {
	case s.Type.Is("object") && s.AdditionalProperties.Schema != nil:
		// A map (tags, metrics): bounded in entries, keys and values.
		if s.MaxProps == nil || s.PropertyNames == nil {
			t.Errorf("%s: a map needs maxProperties and propertyNames", where)
		} else {
			checkBounded(t, where+"{key}", s.PropertyNames, closed)
		}
		checkBounded(t, where+"{value}", s.AdditionalProperties.Schema, closed)
	case s.Type.Is("object"):
		if closed && (s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has) {
			t.Errorf("%s: request objects need additionalProperties: false", where)
		}
		for name, p := range s.Properties {
			checkBounded(t, where+"."+name, p, closed)
		}
	case s.Type.Is("string"):
		if s.MaxLength == nil && len(s.Enum) == 0 && s.Const == nil && s.Format != "date-time" {
			t.Errorf("%s: unbounded string", where)
		}
	case s.Type.Is("array"):
		if s.MaxItems == nil {
			t.Errorf("%s: unbounded array", where)
		}
		checkBounded(t, where+"[]", s.Items, closed)
	}
}

// (b) The route table and the document list the same operations, and agree
// on which are public and which are commands. A pattern's trailing chi
// wildcard "/*" is the path parameter {path} in the document (api.SpecPath).
func TestOpenAPICoversRouteTable(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	e := testenv.Start(t, testenv.Config(t))
	inTable := map[string]api.Route{}
	for _, r := range e.P.API.Routes() {
		if r.MLflow {
			continue // MLflow's API, described by MLflow's protos (docs/MLFLOW_REFERENCE.md)
		}
		spec := api.SpecPath(r.Pattern)
		key := r.Method + " " + spec
		inTable[key] = r
		item := doc.Paths.Value(spec)
		var op *openapi3.Operation
		if item != nil {
			op = item.GetOperation(r.Method)
		}
		if op == nil {
			t.Errorf("route %s is not in api/openapi.json", key)
			continue
		}
		if strings.HasSuffix(r.Pattern, "/*") && hasParam(op, "path", api.ArtifactPathParam) == nil {
			t.Errorf("%s: the wildcard is not documented as the path parameter %q", key, api.ArtifactPathParam)
		}
		if public := op.Security != nil && len(*op.Security) == 0; public != r.Public {
			t.Errorf("%s: public in the route table = %v, but security in the document = %v", key, r.Public, op.Security)
		}
		if hasKey := hasParam(op, "header", "Idempotency-Key") != nil; hasKey != r.Command {
			t.Errorf("%s: command = %v, but Idempotency-Key documented = %v", key, r.Command, hasKey)
		}
	}
	for _, o := range operations(doc) {
		if _, ok := inTable[o.method+" "+o.path]; !ok {
			t.Errorf("api/openapi.json documents %s %s (%s), which is not in the route table", o.method, o.path, o.op.OperationID)
		}
	}
}

// (d) The binary serves exactly the embedded document.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	r := e.Do("GET", "/api/v1/openapi.json", "", nil)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	if !bytes.Equal(r.Body, api.OpenAPIDocument) {
		t.Fatal("served document differs from the embedded one")
	}
}

// The validator has teeth: it rejects responses the document does not allow.
func TestOpenAPIValidatorRejectsMismatches(t *testing.T) {
	t.Parallel()
	get := func(path, token string) *http.Request {
		req, err := http.NewRequest("GET", "http://127.0.0.1:1"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return req
	}
	h := func(kv ...string) http.Header {
		out := http.Header{"X-Request-Id": {"0123456789abcdef01234567"}}
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	ct := "application/json"
	user := `{"id":"0192b3c4-5d6e-7f80-9123-456789abcdef","email":"a@example.com","name":"A","role":"viewer","active":true,"kind":"user",` +
		`"created_at":"2025-01-02T03:04:05Z","updated_at":"2025-01-02T03:04:05Z"}`
	cases := []struct {
		name   string
		req    *http.Request
		status int
		header http.Header
		body   string
		ok     bool
	}{
		{"good", get("/api/v1/auth/me", "t"), 200, h("Content-Type", ct), user, true},
		{"unknown path is skipped", get("/nope", ""), 404, h(), "whatever", true},
		{"extra field", get("/api/v1/auth/me", "t"), 200, h("Content-Type", ct), strings.Replace(user, `"active"`, `"extra":1,"active"`, 1), false},
		{"bad role", get("/api/v1/auth/me", "t"), 200, h("Content-Type", ct), strings.Replace(user, "viewer", "root", 1), false},
		{"bad uuid", get("/api/v1/auth/me", "t"), 200, h("Content-Type", ct), strings.Replace(user, "0192b3c4", "0192b3cZ", 1), false},
		{"undocumented status", get("/api/v1/auth/me", "t"), 418, h("Content-Type", ct), user, false},
		{"problem as json", get("/api/v1/auth/me", "t"), 401, h("Content-Type", ct, "WWW-Authenticate", `Bearer realm="maestro"`),
			`{"type":"urn:maestro:problem:unauthenticated","title":"x","status":401,"detail":"d","instance":"/","request_id":"0123456789abcdef01234567"}`, false},
		{"wrong problem type for status", get("/api/v1/auth/me", "t"), 401, h("Content-Type", "application/problem+json", "WWW-Authenticate", `Bearer realm="maestro"`),
			`{"type":"urn:maestro:problem:forbidden","title":"x","status":401,"detail":"d","instance":"/","request_id":"0123456789abcdef01234567"}`, false},
		{"missing required header", get("/api/v1/auth/me", "t"), 401, h("Content-Type", "application/problem+json"),
			`{"type":"urn:maestro:problem:unauthenticated","title":"x","status":401,"detail":"d","instance":"/","request_id":"0123456789abcdef01234567"}`, false},
		{"accepted a request the document rejects", get("/api/v1/users?max_results=500", "t"), 200, h("Content-Type", ct), `{"items":[]}`, false},
		{"accepted a request without a token", get("/api/v1/users", ""), 200, h("Content-Type", ct), `{"items":[]}`, false},
	}
	for _, c := range cases {
		err := testenv.ValidateExchange(c.req, nil, c.status, c.header, []byte(c.body))
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok = %v", c.name, err, c.ok)
		}
	}
}

// exercised records which (operation, status) pairs the walk provoked.
type exercised struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (x *exercised) observe(e *testenv.Env) {
	e.Observe = func(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) {
		e.T.Helper()
		e.CheckOpenAPI(req, reqBody, resp, respBody)
		if route, _, err := testenv.FindRoute(req); err == nil {
			x.mu.Lock()
			x.seen[route.Operation.OperationID+" "+strconv.Itoa(resp.StatusCode)] = true
			x.mu.Unlock()
		}
	}
}

// (c) A walk over every route's success and main error responses; each
// exchange is validated by testenv against the document.
func TestOpenAPIConformance(t *testing.T) {
	t.Parallel()
	x := &exercised{seen: map[string]bool{}}
	e := testenv.Start(t, testenv.Config(t))
	x.observe(e)

	expect := func(r testenv.Response, status int, what string) testenv.Response {
		t.Helper()
		if r.Status != status {
			t.Fatalf("%s: got %d %s, want %d", what, r.Status, r.Body, status)
		}
		return r
	}
	problemType := func(r testenv.Response, code string) {
		t.Helper()
		var p api.Problem
		r.JSON(t, &p)
		if p.Type != api.ProblemTypePrefix+code {
			t.Fatalf("problem type = %q, want %s", p.Type, code)
		}
	}
	const (
		register = "/api/v1/auth/register"
		login    = "/api/v1/auth/login"
		refresh  = "/api/v1/auth/refresh"
		logout   = "/api/v1/auth/logout"
		me       = "/api/v1/auth/me"
	)
	pw := testenv.Password

	// Public probes and metadata.
	for _, p := range []string{"/healthz", "/readyz", "/.well-known/jwks.json", "/api/v1/openapi.json", "/api/v1/asyncapi.json", "/api/v1/auth/health"} {
		expect(e.Do("GET", p, "", nil), 200, p)
	}

	// Register.
	admin := e.Admin("root@example.com")
	u := e.Register("ada@example.com")
	expect(e.Do("POST", register, "", map[string]string{"email": "ada@example.com", "password": pw, "name": "Ada"}), 409, "register taken")
	problemType(expect(e.Do("POST", register, "", map[string]string{"email": "short@example.com", "password": "short", "name": "S"}), 400, "weak password"), "weak-password")
	problemType(expect(e.Do("POST", register, "", map[string]string{"email": "not an email", "password": pw, "name": "S"}), 400, "bad email"), "validation-failed")
	problemType(expect(e.Do("POST", register, "", map[string]string{"email": "x@example.com", "password": pw, "name": "S", "role": "admin"}), 400, "unknown field"), "malformed-json")
	problemType(expect(e.Do("POST", register, "", []byte(`{"email":"x@example.com"} {}`)), 400, "trailing data"), "malformed-json")
	problemType(expect(e.Do("POST", register, "", []byte(`email=x`), "Content-Type", "application/x-www-form-urlencoded"), 415, "form body"), "unsupported-media-type")
	problemType(expect(e.Do("POST", register, "", bytes.Repeat([]byte(" "), 65<<10)), 413, "huge body"), "payload-too-large")
	problemType(expect(e.Do("POST", register, "", map[string]string{"email": "k@example.com", "password": pw, "name": "K"}, "Idempotency-Key", "bad key"), 400, "bad key"), "invalid-idempotency-key")
	kbody := map[string]string{"email": "k@example.com", "password": pw, "name": "K"}
	first := expect(e.Do("POST", register, "", kbody, "Idempotency-Key", "reg-1"), 201, "register with key")
	replay := expect(e.Do("POST", register, "", kbody, "Idempotency-Key", "reg-1"), 201, "register replay")
	if replay.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(first.Body, replay.Body) {
		t.Fatalf("replay: %v %s", replay.Header, replay.Body)
	}
	expect(e.Do("POST", logout, admin.AccessToken, nil, "Idempotency-Key", "logout-1"), 204, "logout with key")
	admin = e.Login("root@example.com", pw)
	async := expect(e.Do("POST", register, "", map[string]string{"email": "async@example.com", "password": pw, "name": "A"}, "Prefer", "respond-async"), 202, "register async")
	seq := async.Header.Get("Maestro-Sequence")

	// Login, refresh, logout.
	tok := e.Login("ada@example.com", pw)
	expect(e.Do("POST", login, "", map[string]string{"email": "ada@example.com", "password": "wrong password!"}), 401, "bad password")
	expect(e.Do("POST", login, "", map[string]string{"email": "ada@example.com", "password": pw}, "Prefer", "respond-async"), 202, "login async")
	expect(e.Do("POST", login, "", []byte(`{"email":`)), 400, "login bad json")
	expect(e.Do("POST", login, "", []byte(`{}`), "Content-Type", "text/plain"), 415, "login text")
	r := expect(e.Do("POST", refresh, "", map[string]string{"refresh_token": tok.RefreshToken}), 200, "refresh")
	var tok2 testenv.Tokens
	r.JSON(t, &tok2)
	expect(e.Do("POST", refresh, "", map[string]string{"refresh_token": "nope"}), 401, "refresh bad token")
	expect(e.Do("POST", refresh, "", map[string]string{"refresh_token": ""}), 401, "refresh empty token")
	expect(e.Do("POST", refresh, "", map[string]string{"refresh_token": strings.Repeat("x", 5000)}), 401, "refresh long token")
	r = expect(e.Do("POST", refresh, "", map[string]string{"refresh_token": tok2.RefreshToken}, "Prefer", "respond-async"), 202, "refresh async")
	var tok3 testenv.Tokens
	r.JSON(t, &tok3)
	expect(e.Do("POST", refresh, "", map[string]string{"refresh_token": tok3.RefreshToken}, "Content-Type", "text/plain"), 415, "refresh text")
	expect(e.Do("POST", logout, "", nil), 401, "logout without token")
	expect(e.Do("POST", logout, "garbage", nil), 401, "logout bad token")
	expect(e.Do("POST", logout, tok3.AccessToken, nil), 204, "logout")
	expect(e.Do("GET", me, tok3.AccessToken, nil), 401, "me after logout")

	// Me and read-your-writes.
	tok = e.Login("ada@example.com", pw)
	expect(e.Do("GET", me, tok.AccessToken, nil), 200, "me")
	expect(e.Do("GET", me+"?min_sequence="+seq, tok.AccessToken, nil), 200, "me min_sequence")
	expect(e.Do("GET", me, tok.AccessToken, nil, "Maestro-Min-Sequence", seq), 200, "me Maestro-Min-Sequence")
	expect(e.Do("GET", me+"?min_sequence=-1", tok.AccessToken, nil), 400, "me bad min_sequence")
	// Beyond the stream's end is a 400; a real lag's 503 is validated in
	// TestMinSequenceLagging (through the same OpenAPI check).
	problemType(expect(e.Do("GET", me+"?min_sequence=999999999", tok.AccessToken, nil), 400, "me min_sequence beyond the stream"), "validation-failed")

	// Users.
	_, member := e.UserWithRole(admin.AccessToken, "mem@example.com", "member")
	r = expect(e.Do("GET", "/api/v1/users?max_results=1", admin.AccessToken, nil), 200, "list users")
	var page struct {
		Items         []testenv.User `json:"items"`
		NextPageToken string         `json:"next_page_token"`
	}
	r.JSON(t, &page)
	if page.NextPageToken == "" {
		t.Fatal("no next_page_token")
	}
	expect(e.Do("GET", "/api/v1/users?max_results=200&page_token="+url.QueryEscape(page.NextPageToken), admin.AccessToken, nil), 200, "list users page 2")
	expect(e.Do("GET", "/api/v1/users?max_results=201", admin.AccessToken, nil), 400, "max_results too big")
	expect(e.Do("GET", "/api/v1/users?max_results=0", admin.AccessToken, nil), 400, "max_results zero")
	problemType(expect(e.Do("GET", "/api/v1/users?page_token=!!", admin.AccessToken, nil), 400, "bad page token"), "invalid-page-token")
	expect(e.Do("GET", "/api/v1/users", member.AccessToken, nil), 403, "list users as member")
	expect(e.Do("GET", "/api/v1/users", "", nil), 401, "list users anonymous")
	expect(e.Do("GET", "/api/v1/users/"+u.ID, admin.AccessToken, nil), 200, "get user")
	expect(e.Do("GET", "/api/v1/users/"+u.ID+"?min_sequence=x", admin.AccessToken, nil), 400, "get user bad min_sequence")
	expect(e.Do("GET", "/api/v1/users/00000000-0000-4000-8000-000000000000", admin.AccessToken, nil), 404, "get missing user")
	expect(e.Do("GET", "/api/v1/users/not-a-uuid", admin.AccessToken, nil), 404, "get malformed id")
	expect(e.Do("GET", "/api/v1/users/"+u.ID, member.AccessToken, nil), 403, "get user as member")
	userPath := "/api/v1/users/" + u.ID
	expect(e.Do("PATCH", userPath, admin.AccessToken, map[string]any{"role": "member"}), 200, "patch role")
	expect(e.Do("PATCH", userPath, admin.AccessToken, map[string]any{"active": false}, "Prefer", "respond-async"), 200, "patch async (ignored: security command)")
	expect(e.Do("PATCH", userPath, admin.AccessToken, map[string]any{"active": true}, "Idempotency-Key", "p-1"), 200, "patch with key")
	// (An anonymous caller's key is scoped by body, so reuse needs a caller.)
	problemType(expect(e.Do("PATCH", userPath, admin.AccessToken, map[string]any{"active": false}, "Idempotency-Key", "p-1"), 422, "key reused"), "idempotency-key-reused")
	expect(e.Do("PATCH", userPath, admin.AccessToken, map[string]any{}), 400, "empty patch")
	expect(e.Do("PATCH", userPath, admin.AccessToken, map[string]any{"role": "root"}), 400, "bad role")
	expect(e.Do("PATCH", userPath, admin.AccessToken, []byte(`{"role":"member"}`), "Content-Type", "text/plain"), 415, "patch text")
	expect(e.Do("PATCH", userPath, admin.AccessToken, bytes.Repeat([]byte(" "), 65<<10)), 413, "patch huge")
	expect(e.Do("PATCH", "/api/v1/users/00000000-0000-4000-8000-000000000000", admin.AccessToken, map[string]any{"active": false}), 404, "patch missing user")
	var adminUser testenv.User
	expect(e.Do("GET", me, admin.AccessToken, nil), 200, "admin me").JSON(t, &adminUser)
	problemType(expect(e.Do("PATCH", "/api/v1/users/"+adminUser.ID, admin.AccessToken, map[string]any{"role": "viewer"}), 409, "self demotion"), "self-modification")
	expect(e.Do("PATCH", userPath, member.AccessToken, map[string]any{"role": "admin"}), 403, "patch as member")
	expect(e.Do("PATCH", userPath, "", map[string]any{"role": "admin"}), 401, "patch anonymous")

	// Audit.
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	r = expect(e.Do("GET", "/api/v1/audit?max_results=2", admin.AccessToken, nil), 200, "audit")
	var audit struct {
		Items         []map[string]any `json:"items"`
		NextPageToken string           `json:"next_page_token"`
	}
	r.JSON(t, &audit)
	if len(audit.Items) != 2 || audit.NextPageToken == "" {
		t.Fatalf("audit page: %s", r.Body)
	}
	expect(e.Do("GET", "/api/v1/audit?page_token="+url.QueryEscape(audit.NextPageToken), admin.AccessToken, nil), 200, "audit page 2")
	q := url.Values{"actor": {"user:" + adminUser.ID}, "type": {fmt.Sprint(audit.Items[0]["type"])}, "subject": {fmt.Sprint(audit.Items[0]["subject"])},
		"since": {since}, "until": {until}, "max_results": {"200"}}
	expect(e.Do("GET", "/api/v1/audit?"+q.Encode(), admin.AccessToken, nil), 200, "audit filtered")
	expect(e.Do("GET", "/api/v1/audit?since=yesterday", admin.AccessToken, nil), 400, "audit bad since")
	expect(e.Do("GET", "/api/v1/audit?actor="+strings.Repeat("a", 300), admin.AccessToken, nil), 400, "audit long actor")
	expect(e.Do("GET", "/api/v1/audit?page_token=%7B%7D", admin.AccessToken, nil), 400, "audit bad page token")
	expect(e.Do("GET", "/api/v1/audit", member.AccessToken, nil), 403, "audit as member")
	expect(e.Do("GET", "/api/v1/audit", "", nil), 401, "audit anonymous")

	// Projections.
	expect(e.Do("GET", "/api/v1/projections", admin.AccessToken, nil), 200, "projections")
	expect(e.Do("GET", "/api/v1/projections", member.AccessToken, nil), 403, "projections as member")
	expect(e.Do("GET", "/api/v1/projections", "", nil), 401, "projections anonymous")

	// Throttling, last: repeated failures lock the account (429).
	e.Register("locked@example.com")
	throttled := false
	for i := 0; i < 12 && !throttled; i++ {
		r := e.Do("POST", login, "", map[string]string{"email": "locked@example.com", "password": "wrong password!"})
		throttled = r.Status == http.StatusTooManyRequests
	}
	if !throttled {
		t.Fatal("repeated failed logins were never throttled")
	}

	// Registration closed (another platform).
	cfg := testenv.Config(t)
	cfg.RegistrationOpen = false
	closed := testenv.Start(t, cfg)
	x.observe(closed)
	problemType(expect(closed.Do("POST", register, "", map[string]string{"email": "z@example.com", "password": pw, "name": "Z"}), 403, "registration closed"), "registration-closed")

	// A sequence the stream has but the read models have not applied: 503
	// projection-lagging (another platform, with no worker applying events).
	lagCfg := testenv.Config(t)
	lagCfg.Worker = false
	lagging := testenv.Start(t, lagCfg)
	x.observe(lagging)
	preferAsync := []string{"Prefer", "respond-async"}
	expect(lagging.Do("POST", register, "", map[string]string{"email": "lag@example.com", "password": pw, "name": "Lag"}, preferAsync...), 202, "register, no worker")
	lr := expect(lagging.Do("POST", login, "", map[string]string{"email": "lag@example.com", "password": pw}, preferAsync...), 202, "login, no worker")
	var lagTok testenv.Tokens
	lr.JSON(t, &lagTok)
	lagSeq := lr.Header.Get("Maestro-Sequence")
	problemType(expect(lagging.Do("GET", me, lagTok.AccessToken, nil, "Maestro-Min-Sequence", lagSeq), 503, "me lagging"), "projection-lagging")
	problemType(expect(lagging.Do("GET", "/api/v1/projects/any", lagTok.AccessToken, nil, "Maestro-Min-Sequence", lagSeq), 503, "project lagging"), "projection-lagging")

	// Every operation's success and main errors were exercised.
	want := map[string][]int{
		"getHealthz": {200}, "getReadyz": {200}, "getJWKS": {200}, "getOpenAPIDocument": {200}, "getAsyncAPIDocument": {200}, "getAuthHealth": {200},
		"register":            {201, 202, 400, 403, 409, 413, 415},
		"login":               {200, 202, 400, 401, 415, 429},
		"refresh":             {200, 202, 401, 415},
		"logout":              {204, 401},
		"getMe":               {200, 400, 401, 503},
		"listUsers":           {200, 400, 401, 403},
		"getUser":             {200, 400, 403, 404},
		"updateUser":          {200, 400, 401, 403, 404, 409, 413, 415, 422},
		"listAuditEntries":    {200, 400, 401, 403},
		"getProjectionStatus": {200, 401, 403},
	}
	maps.Copy(want, walkRegistry(t, e, admin.AccessToken))     // registry_test.go
	maps.Copy(want, walkArtifacts(t, e, admin.AccessToken))    // artifacts_test.go
	maps.Copy(want, walkTokens(t, e, admin.AccessToken))       // token_test.go
	maps.Copy(want, walkTracking(t, e, admin.AccessToken))     // tracking_walk_test.go
	maps.Copy(want, walkRunArtifacts(t, e, admin.AccessToken)) // run_artifacts_test.go
	maps.Copy(want, walkRunSearch(t, e, admin.AccessToken))    // run_search_test.go
	maps.Copy(want, walkJobs(t, e, admin.AccessToken))         // jobs_test.go
	maps.Copy(want, walkPromotions(t, e, admin.AccessToken))   // below
	maps.Copy(want, walkAudit(t, e, admin.AccessToken))        // audit_test.go
	maps.Copy(want, walkWebhooks(t, e, admin.AccessToken))     // webhooks_test.go
	maps.Copy(want, walkExplanations(t, e, admin.AccessToken)) // explanations_test.go
	maps.Copy(want, walkSweeps(t, e, admin.AccessToken))       // sweeps_test.go
	doc := loadOpenAPI(t)
	for _, o := range operations(doc) {
		codes, ok := want[o.op.OperationID]
		if !ok {
			t.Errorf("the walk does not cover %s (%s %s)", o.op.OperationID, o.method, o.path)
		}
		for _, c := range codes {
			if o.op.Responses.Status(c) == nil {
				t.Errorf("%s: the walk expects %d, which is not documented", o.op.OperationID, c)
			}
			if !x.seen[o.op.OperationID+" "+strconv.Itoa(c)] {
				t.Errorf("%s %d was not exercised", o.op.OperationID, c)
			}
		}
	}
}

// Responses no operation can describe (404 for an unknown path, 405 for an
// unsupported method) are still problems, as info.description says, and a
// 405 names the allowed methods (RFC 9110 section 15.5.6: Allow is a MUST).
func TestOpenAPIUnroutedResponses(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@example.com")
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/api/v1/nope", 404, ""},
		{"GET", "/api/v1/users/", 404, ""},
		{"DELETE", "/api/v1/users/00000000-0000-4000-8000-000000000000", 405, "GET, PATCH"},
		{"POST", "/healthz", 405, "GET"},
		{"PUT", "/api/v1/auth/login", 405, "POST"},
	} {
		name := c.method + " " + c.path
		r := e.Do(c.method, c.path, admin.AccessToken, nil)
		if r.Status != c.status {
			t.Errorf("%s: %d %s, want %d", name, r.Status, r.Body, c.status)
			continue
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s: Content-Type %q", name, ct)
			continue
		}
		var v map[string]any
		if err := json.Unmarshal(r.Body, &v); err != nil {
			t.Fatal(err)
		}
		if err := doc.Components.Schemas["Problem"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			t.Errorf("%s: not a Problem: %v", name, err)
		}
		if v["status"] != float64(c.status) || !slices.Contains(doc.Components.Schemas["ProblemType"].Value.Enum, v["type"]) {
			t.Errorf("%s: problem %v", name, v)
		}
		if c.allow != "" {
			var got []string
			for _, m := range strings.Split(r.Header.Get("Allow"), ",") {
				if m = strings.TrimSpace(m); m != "" {
					got = append(got, m)
				}
			}
			sort.Strings(got)
			if strings.Join(got, ", ") != c.allow {
				t.Errorf("%s: Allow = %q, want %q", name, r.Header.Get("Allow"), c.allow)
			}
		}
	}
}

// walkPromotions exercises the governed-promotion routes (policies,
// promotion requests and their decisions, overrides) and the
// approval-required refusals of the pointer-moving registry routes, and
// returns the statuses it provoked per operation. A request past its
// expiry (409 promotion-expired) is not provoked: the shortest TTL is a
// minute.
func walkPromotions(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	async := []string{"Prefer", "respond-async"}
	const missingID = "00000000-0000-4000-8000-000000000000"

	owner := regUser(e, admin, "promo-owner@example.com", "member")
	editor := regUser(e, admin, "promo-editor@example.com", "viewer")
	approver := regUser(e, admin, "promo-approver@example.com", "viewer")
	approver2 := regUser(e, admin, "promo-approver2@example.com", "viewer")
	viewer := regUser(e, admin, "promo-viewer@example.com", "viewer")
	outsider := regUser(e, admin, "promo-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, owner.Token, map[string]any{"name": "Promotion Walk"}))
	pp := projectsPath + "/" + proj.Slug
	for _, m := range []struct {
		who  regClient
		role string
	}{{editor, "editor"}, {approver, "approver"}, {approver2, "approver"}, {viewer, "viewer"}} {
		call(t, e, 200, "PUT", pp+"/members/"+m.who.ID, owner.Token, map[string]any{"role": m.role})
	}
	m := pp + "/models/scorer"
	call(t, e, 201, "POST", pp+"/models", editor.Token, map[string]any{"name": "Scorer"})
	for _, auc := range []float64{0.95, 0.5, 0.97} {
		call(t, e, 201, "POST", m+"/versions", editor.Token, map[string]any{"metrics": map[string]float64{"auc": auc}})
	}
	// Set before its policy: a governed alias to refuse moving later.
	call(t, e, 200, "PUT", m+"/aliases/champion", approver.Token, map[string]any{"version": 1})

	// An archived project with a policy: its policy commands answer 409.
	arch := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, owner.Token, map[string]any{"name": "Promotion Archived"}))
	ap := projectsPath + "/" + arch.Slug
	call(t, e, 200, "POST", ap+"/policies", owner.Token, map[string]any{"target": "staging"})
	call(t, e, 200, "DELETE", ap, owner.Token, nil)

	// Policies: set.
	pols := pp + "/policies"
	pol := func(target string) string { return pols + "/" + target }
	r := call(t, e, 200, "POST", pols, owner.Token, map[string]any{"target": "production", "gate": "metrics.auc >= 0.9", "request_ttl": "72h"})
	if got := asJSON[api.PolicyBody](t, r); got.RequiredApprovals != 1 || got.RequestTTL != "72h" || !slices.Equal(got.ApproverRoles, []string{"approver", "owner"}) ||
		got.SeparationOfDuties == nil || !*got.SeparationOfDuties {
		t.Fatalf("set policy: %s", r.Body)
	}
	champSeq := call(t, e, 202, "POST", pols, owner.Token, map[string]any{"target": "@champion"}, async...).Header.Get("Maestro-Sequence")
	callProblem(t, e, 400, "validation-failed", "POST", pols, owner.Token, map[string]any{"target": "prod"})
	callProblem(t, e, 400, "validation-failed", "POST", pols, owner.Token, map[string]any{"target": "staging", "gate": "params.x = 'y'"})
	callProblem(t, e, 400, "malformed-json", "POST", pols, owner.Token, map[string]any{"target": "staging", "approvers": 2})
	callProblem(t, e, 403, "forbidden", "POST", pols, editor.Token, map[string]any{"target": "staging"})
	callProblem(t, e, 404, "not-found", "POST", pols, outsider.Token, map[string]any{"target": "staging"})
	callProblem(t, e, 409, "project-archived", "POST", ap+"/policies", owner.Token, map[string]any{"target": "production"})
	add("setPolicy", 200, 202, 400, 403, 404, 409)
	add("setPolicy", commandErrors(t, e, owner.Token, "POST", pols, projectsPath+"/nope/policies", map[string]any{"target": "staging"}, "pol-set")...)

	r = call(t, e, 200, "PUT", pol("staging"), owner.Token, map[string]any{"required_approvals": 2, "approver_roles": []string{"approver"}, "separation_of_duties": true})
	if got := asJSON[api.PolicyBody](t, r); got.Target != "staging" || got.RequiredApprovals != 2 || got.RequestTTL != "168h" {
		t.Fatalf("put policy: %s", r.Body)
	}
	call(t, e, 202, "PUT", pol("@challenger"), owner.Token, map[string]any{"approver_users": []string{approver.ID}}, async...)
	callProblem(t, e, 400, "validation-failed", "PUT", pol("staging"), owner.Token, map[string]any{"target": "production"})
	callProblem(t, e, 400, "validation-failed", "PUT", pol("staging"), owner.Token, map[string]any{"request_ttl": "soon"})
	callProblem(t, e, 403, "forbidden", "PUT", pol("staging"), editor.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "PUT", pol("staging"), outsider.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "PUT", pol("qa"), owner.Token, map[string]any{})
	callProblem(t, e, 409, "project-archived", "PUT", ap+"/policies/staging", owner.Token, map[string]any{})
	add("putPolicy", 200, 202, 400, 403, 404, 409)
	add("putPolicy", commandErrors(t, e, owner.Token, "PUT", pol("staging"), projectsPath+"/nope/policies/staging", map[string]any{"required_approvals": 2}, "pol-put")...)

	// Policies: read.
	r = call(t, e, 200, "GET", pols+"?min_sequence="+champSeq, viewer.Token, nil)
	if got := asJSON[api.PolicyList](t, r); len(got.Policies) < 3 {
		t.Fatalf("policies: %s", r.Body)
	}
	callProblem(t, e, 400, "validation-failed", "GET", pols+"?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", pols, "", nil)
	callProblem(t, e, 404, "not-found", "GET", pols, outsider.Token, nil)
	add("listPolicies", 200, 400, 401, 404)
	call(t, e, 200, "GET", pol("production"), viewer.Token, nil)
	call(t, e, 200, "GET", pol("%40champion"), viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", pol("production")+"?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", pol("production"), "", nil)
	callProblem(t, e, 404, "not-found", "GET", pol("@nobody"), viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", pol("qa"), viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", pol("production"), outsider.Token, nil)
	add("getPolicy", 200, 400, 401, 404)

	// Policies: lift.
	call(t, e, 204, "DELETE", pol("@challenger"), owner.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", pol("@challenger"), owner.Token, nil)
	call(t, e, 200, "PUT", pol("@challenger"), owner.Token, map[string]any{})
	call(t, e, 202, "DELETE", pol("@challenger"), owner.Token, nil, async...)
	callProblem(t, e, 403, "forbidden", "DELETE", pol("production"), editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", pol("production"), outsider.Token, nil)
	callProblem(t, e, 409, "project-archived", "DELETE", ap+"/policies/staging", owner.Token, nil)
	add("deletePolicy", 202, 204, 403, 404, 409)
	add("deletePolicy", commandErrors(t, e, owner.Token, "DELETE", pol("production"), projectsPath+"/nope/policies/production", nil, "pol-del")...)

	// The pointer-moving registry routes refuse a governed move.
	call(t, e, 200, "GET", pol("@champion"), viewer.Token, nil, "Maestro-Min-Sequence", champSeq)
	callProblem(t, e, 403, "approval-required", "POST", m+"/versions/1:transition", approver.Token, map[string]any{"stage": "production"})
	callProblem(t, e, 403, "approval-required", "PUT", m+"/aliases/champion", approver.Token, map[string]any{"version": 3})
	callProblem(t, e, 403, "approval-required", "DELETE", m+"/aliases/champion", approver.Token, nil)
	callProblem(t, e, 403, "approval-required", "DELETE", m+"/versions/1", approver.Token, nil)
	callProblem(t, e, 403, "approval-required", "DELETE", m, approver.Token, nil)
	call(t, e, 200, "PUT", m+"/aliases/ungoverned", approver.Token, map[string]any{"version": 2})

	// Promotion requests.
	promos := pp + "/promotions"
	promo := func(id, verb string) string {
		if verb != "" {
			return promos + "/" + id + ":" + verb
		}
		return promos + "/" + id
	}
	var lastSeq string // of the last request made
	requestAs := func(who regClient, status int, v int, target string, headers ...string) api.PromotionResponse {
		t.Helper()
		r := call(t, e, status, "POST", promos, who.Token, map[string]any{"model": "Scorer", "version": v, "target": target, "comment": "ship it"}, headers...)
		got := asJSON[api.PromotionResponse](t, r)
		if r.Header.Get("Location") != promo(got.ID, "") {
			t.Fatalf("request promotion: Location %q for %s", r.Header.Get("Location"), r.Body)
		}
		lastSeq = r.Header.Get("Maestro-Sequence")
		return got
	}
	request := func(status int, v int, target string, headers ...string) api.PromotionResponse {
		t.Helper()
		return requestAs(editor, status, v, target, headers...)
	}
	toProd := request(201, 1, "production")
	if toProd.State != "pending" || !toProd.Gate.Passed || float64(toProd.Gate.Metrics["auc"]) != 0.95 || toProd.AuthorID != editor.ID || toProd.RequiredApprovals != 1 {
		t.Fatalf("requested: %+v", toProd)
	}
	gated := request(201, 2, "production")
	if gated.State != "rejected" || gated.Gate.Passed || gated.Reason == "" {
		t.Fatalf("a request failing its gate: %+v", gated)
	}
	toStaging := request(202, 3, "staging", async...)
	stagingSeq := lastSeq
	callProblem(t, e, 400, "validation-failed", "POST", promos, editor.Token, map[string]any{"model": "Scorer", "version": 1, "target": "prod"})
	callProblem(t, e, 400, "validation-failed", "POST", promos, editor.Token, map[string]any{"model": "Scorer", "version": 0, "target": "production"})
	callProblem(t, e, 400, "malformed-json", "POST", promos, editor.Token, map[string]any{"model": "Scorer", "version": 1, "target": "production", "urgent": true})
	callProblem(t, e, 403, "forbidden", "POST", promos, viewer.Token, map[string]any{"model": "Scorer", "version": 1, "target": "production"})
	callProblem(t, e, 404, "not-found", "POST", promos, outsider.Token, map[string]any{"model": "Scorer", "version": 1, "target": "production"})
	callProblem(t, e, 404, "not-found", "POST", promos, editor.Token, map[string]any{"model": "nope", "version": 1, "target": "production"})
	callProblem(t, e, 404, "not-found", "POST", promos, editor.Token, map[string]any{"model": "Scorer", "version": 9, "target": "production"})
	callProblem(t, e, 409, "no-policy", "POST", promos, editor.Token, map[string]any{"model": "Scorer", "version": 1, "target": "@other"})
	callProblem(t, e, 409, "already-promoted", "POST", promos, editor.Token, map[string]any{"model": "Scorer", "version": 1, "target": "@champion"})
	add("requestPromotion", 201, 202, 400, 403, 404, 409)
	add("requestPromotion", commandErrors(t, e, editor.Token, "POST", promos, projectsPath+"/nope/promotions",
		map[string]any{"model": "Scorer", "version": 1, "target": "production"}, "promo-req")...)

	// Read them.
	pg := asJSON[api.PromotionPage](t, call(t, e, 200, "GET", promos+"?max_results=1&min_sequence="+stagingSeq, viewer.Token, nil))
	if len(pg.Items) != 1 || pg.NextPageToken == "" {
		t.Fatalf("promotions page 1: %+v", pg)
	}
	call(t, e, 200, "GET", promos+"?max_results=200&page_token="+url.QueryEscape(pg.NextPageToken), viewer.Token, nil)
	call(t, e, 200, "GET", promos+"?state=rejected&mine=true", editor.Token, nil)
	inbox := asJSON[api.PromotionPage](t, call(t, e, 200, "GET", promos+"?awaiting_me=true", approver.Token, nil))
	if !slices.ContainsFunc(inbox.Items, func(p api.PromotionResponse) bool { return p.ID == toProd.ID }) {
		t.Fatalf("the approver's inbox lacks %s: %+v", toProd.ID, inbox.Items)
	}
	callProblem(t, e, 400, "validation-failed", "GET", promos+"?state=stuck", viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", promos+"?mine=yes", viewer.Token, nil)
	callProblem(t, e, 400, "invalid-page-token", "GET", promos+"?page_token=nope", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", promos, "", nil)
	callProblem(t, e, 404, "not-found", "GET", promos, outsider.Token, nil)
	add("listPromotions", 200, 400, 401, 404)
	call(t, e, 200, "GET", promo(gated.ID, ""), viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", promo(toProd.ID, "")+"?min_sequence=x", viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", promo(toProd.ID, ""), "", nil)
	callProblem(t, e, 404, "not-found", "GET", promo(missingID, ""), viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", promo("not-a-uuid", ""), viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", promo(toProd.ID, ""), outsider.Token, nil)
	add("getPromotion", 200, 400, 401, 404)

	// Approve: neither an editor nor a viewer may under the default roles,
	// nor an approver who requested it; another approver's approval
	// completes the request, and the flow moves the version.
	own := requestAs(approver, 201, 3, "production")
	callProblem(t, e, 403, "separation-of-duties", "POST", promo(own.ID, "approve"), approver.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "POST", promo(toProd.ID, "approve"), editor.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "POST", promo(toProd.ID, "approve"), viewer.Token, map[string]any{})
	callProblem(t, e, 400, "malformed-json", "POST", promo(toProd.ID, "approve"), approver.Token, map[string]any{"vote": "yes"})
	callProblem(t, e, 400, "validation-failed", "POST", promo(toProd.ID, "approve"), approver.Token, map[string]any{"comment": "bad\u0000comment"})
	if got := asJSON[api.PromotionResponse](t, call(t, e, 200, "POST", promo(toProd.ID, "approve"), approver.Token, map[string]any{"comment": "lgtm"})); got.State != "approved" || len(got.Approvals) != 1 {
		t.Fatalf("approved: %+v", got)
	}
	callProblem(t, e, 409, "promotion-closed", "POST", promo(toProd.ID, "approve"), approver2.Token, map[string]any{})
	callProblem(t, e, 409, "promotion-closed", "POST", promo(gated.ID, "approve"), approver.Token, map[string]any{})
	// Two approvals for staging: the first leaves it pending, a second by
	// the same approver is refused.
	if got := asJSON[api.PromotionResponse](t, call(t, e, 200, "POST", promo(toStaging.ID, "approve"), approver.Token, map[string]any{})); got.State != "pending" {
		t.Fatalf("one of two approvals: %+v", got)
	}
	callProblem(t, e, 409, "already-approved", "POST", promo(toStaging.ID, "approve"), approver.Token, map[string]any{})
	call(t, e, 202, "POST", promo(toStaging.ID, "approve"), approver2.Token, map[string]any{"comment": "second"}, async...)
	callProblem(t, e, 404, "not-found", "POST", promo(missingID, "approve"), approver.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", promo(toProd.ID, "approve"), outsider.Token, map[string]any{})
	add("approvePromotion", 200, 202, 400, 403, 404, 409)
	add("approvePromotion", commandErrors(t, e, approver.Token, "POST", promo(toProd.ID, "approve"), promo(missingID, "approve"), map[string]any{}, "promo-approve")...)
	for _, c := range []struct{ id, state string }{{toProd.ID, "completed"}, {toStaging.ID, "completed"}} {
		eventually(t, 30*time.Second, "promotion "+c.id+" is carried out", func() error {
			if got := asJSON[api.PromotionResponse](t, call(t, e, 200, "GET", promo(c.id, ""), viewer.Token, nil)); got.State != c.state {
				return fmt.Errorf("state %s (%s)", got.State, got.Reason)
			}
			return nil
		})
	}
	if v := asJSON[api.VersionResponse](t, call(t, e, 200, "GET", m+"/versions/1", viewer.Token, nil)); v.Stage != "staging" && v.Stage != "production" {
		t.Fatalf("version 1 after its promotions: stage %s", v.Stage)
	}

	// Reject (the approver's own request: another approver may).
	toReject := own
	callProblem(t, e, 403, "separation-of-duties", "POST", promo(toReject.ID, "reject"), approver.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "POST", promo(toReject.ID, "reject"), viewer.Token, map[string]any{})
	callProblem(t, e, 400, "malformed-json", "POST", promo(toReject.ID, "reject"), approver2.Token, []byte(`{"comment":`))
	if got := asJSON[api.PromotionResponse](t, call(t, e, 200, "POST", promo(toReject.ID, "reject"), approver2.Token, map[string]any{"comment": "not now"})); got.State != "rejected" {
		t.Fatalf("rejected: %+v", got)
	}
	callProblem(t, e, 409, "promotion-closed", "POST", promo(toReject.ID, "reject"), approver.Token, map[string]any{})
	call(t, e, 202, "POST", promo(request(201, 3, "@champion").ID, "reject"), approver.Token, map[string]any{}, async...)
	callProblem(t, e, 404, "not-found", "POST", promo(missingID, "reject"), approver.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", promo(toReject.ID, "reject"), outsider.Token, map[string]any{})
	add("rejectPromotion", 200, 202, 400, 403, 404, 409)
	add("rejectPromotion", commandErrors(t, e, approver.Token, "POST", promo(toReject.ID, "reject"), promo(missingID, "reject"), map[string]any{}, "promo-reject")...)

	// Cancel: the requester only.
	toCancel := request(201, 3, "production")
	callProblem(t, e, 403, "forbidden", "POST", promo(toCancel.ID, "cancel"), approver.Token, map[string]any{})
	callProblem(t, e, 400, "malformed-json", "POST", promo(toCancel.ID, "cancel"), editor.Token, map[string]any{"why": "x"})
	if got := asJSON[api.PromotionResponse](t, call(t, e, 200, "POST", promo(toCancel.ID, "cancel"), editor.Token, map[string]any{"comment": "changed my mind"})); got.State != "cancelled" {
		t.Fatalf("cancelled: %+v", got)
	}
	callProblem(t, e, 409, "promotion-closed", "POST", promo(toCancel.ID, "cancel"), editor.Token, map[string]any{})
	call(t, e, 202, "POST", promo(request(201, 3, "@champion").ID, "cancel"), editor.Token, map[string]any{}, async...)
	callProblem(t, e, 404, "not-found", "POST", promo(missingID, "cancel"), editor.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", promo(toCancel.ID, "cancel"), outsider.Token, map[string]any{})
	add("cancelPromotion", 200, 202, 400, 403, 404, 409)
	add("cancelPromotion", commandErrors(t, e, editor.Token, "POST", promo(toCancel.ID, "cancel"), promo(missingID, "cancel"), map[string]any{}, "promo-cancel")...)

	// Override: a global admin with a session, with a reason.
	override := promos + ":override"
	ob := func(v int, target, reason string) map[string]any {
		return map[string]any{"model": "Scorer", "version": v, "target": target, "reason": reason}
	}
	if v := asJSON[api.VersionResponse](t, call(t, e, 200, "POST", override, admin, ob(3, "production", "hotfix"))); v.Version != 3 || v.Stage != "production" {
		t.Fatalf("overridden: %+v", v)
	}
	call(t, e, 202, "POST", override, admin, ob(3, "@champion", "hotfix"), async...)
	callProblem(t, e, 400, "validation-failed", "POST", override, admin, ob(3, "production", "  "))
	callProblem(t, e, 400, "validation-failed", "POST", override, admin, ob(3, "prod", "hotfix"))
	callProblem(t, e, 400, "malformed-json", "POST", override, admin, map[string]any{"model": "Scorer", "version": 3, "target": "production", "reason": "x", "force": true})
	callProblem(t, e, 403, "forbidden", "POST", override, owner.Token, ob(3, "production", "hotfix"))
	callProblem(t, e, 404, "not-found", "POST", override, admin, map[string]any{"model": "nope", "version": 1, "target": "production", "reason": "hotfix"})
	callProblem(t, e, 409, "no-policy", "POST", override, admin, ob(2, "@other", "hotfix"))
	add("overridePromotion", 200, 202, 400, 403, 404, 409)
	add("overridePromotion", commandErrors(t, e, admin, "POST", override, projectsPath+"/nope/promotions:override", ob(3, "production", "hotfix"), "promo-override")...)
	return want
}
