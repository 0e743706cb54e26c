package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/filter"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/projections"
)

// The MLflow REST 2.0 façade: MLflow's paths, request and response shapes
// and error codes over the same services, commands, events, read models and
// authorization policy as Maestro's own API. docs/MLFLOW_REFERENCE.md
// records what MLflow's server and clients do, with sources; the comments
// here say where Maestro follows it and where it deliberately does not.
//
// Each project's tracking URI is /mlflow/{project}: MLflow clients append
// /api/2.0/mlflow/<rpc>, the MLflow UI /ajax-api/2.0/mlflow/<rpc>. A
// project-scoped API token may also call the bare /api/2.0/mlflow/<rpc>
// paths, its project implied. Every RPC is a row of the route table under
// each prefix, so the security tests and the authorization matrix see every
// concrete path.
var mlflowPrefixes = []string{"/mlflow/{project}/api/2.0", "/mlflow/{project}/ajax-api/2.0", "/api/2.0"}

// mlflowPath matches the paths the façade owns, for the answers the router
// gives before any route is found (no such RPC, wrong method).
var mlflowPath = regexp.MustCompile(`^(/mlflow/[^/]+)?/(api|ajax-api)/2\.0/`)

// mlflowRPC is one MLflow RPC: its method and path after the prefix
// ("/mlflow/runs/create"), whether it changes anything (an Idempotency-Key
// is honoured; MLflow clients send none, so it is mostly for Maestro's own
// tools) and what its answer waits for.
type mlflowRPC struct {
	method, path string
	command      bool
	await        []string
	maxBody      int64
	timeout      time.Duration
	handle       routeHandler
}

// mlflowRoutes expands every RPC under every prefix.
func (s *Server) mlflowRoutes() []Route {
	var rpcs []mlflowRPC
	rpcs = append(rpcs, s.mlflowTrackingRPCs()...)
	rpcs = append(rpcs, s.mlflowRegistryRPCs()...)
	rpcs = append(rpcs, s.mlflowArtifactRPCs()...)
	var out []Route
	for _, rpc := range rpcs {
		for _, prefix := range mlflowPrefixes {
			out = append(out, Route{Method: rpc.method, Pattern: prefix + rpc.path, Command: rpc.command,
				Await: rpc.await, MaxBody: rpc.maxBody, Timeout: rpc.timeout, MLflow: true, handle: rpc.handle})
		}
	}
	return out
}

// ---- errors ----

// MLflowError is MLflow's error body.
type MLflowError struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

// mlflowStatus is MLflow's HTTP status per error code (databricks.proto's
// mapping in mlflow/exceptions.py). Maestro uses only these codes.
var mlflowStatus = map[string]int{
	"INVALID_PARAMETER_VALUE": http.StatusBadRequest,
	"BAD_REQUEST":             http.StatusBadRequest,
	"RESOURCE_ALREADY_EXISTS": http.StatusBadRequest,
	"UNAUTHENTICATED":         http.StatusUnauthorized,
	"PERMISSION_DENIED":       http.StatusForbidden,
	"RESOURCE_DOES_NOT_EXIST": http.StatusNotFound,
	"ENDPOINT_NOT_FOUND":      http.StatusNotFound,
	"RESOURCE_CONFLICT":       http.StatusConflict,
	"REQUEST_LIMIT_EXCEEDED":  http.StatusTooManyRequests,
	"INTERNAL_ERROR":          http.StatusInternalServerError,
	"TEMPORARILY_UNAVAILABLE": http.StatusServiceUnavailable,
}

// mlflowCodes maps Maestro's problem types to MLflow error codes. A
// deterministic refusal never gets a status MLflow clients retry (500,
// 503, 429): MLflow's own INVALID_STATE is a 500 that stalls a Python
// client for minutes, so a write to a deleted run or experiment is
// INVALID_PARAMETER_VALUE, as MLflow answers most of those anyway.
var mlflowCodes = map[string]string{
	"validation-failed":          "INVALID_PARAMETER_VALUE",
	"malformed-json":             "INVALID_PARAMETER_VALUE",
	"weak-password":              "INVALID_PARAMETER_VALUE",
	"invalid-idempotency-key":    "INVALID_PARAMETER_VALUE",
	"invalid-page-token":         "INVALID_PARAMETER_VALUE",
	"param-overwrite":            "INVALID_PARAMETER_VALUE",
	"invalid-explanation":        "INVALID_PARAMETER_VALUE",
	"experiment-deleted":         "INVALID_PARAMETER_VALUE",
	"run-deleted":                "INVALID_PARAMETER_VALUE",
	"project-archived":           "INVALID_PARAMETER_VALUE",
	"unsupported-media-type":     "INVALID_PARAMETER_VALUE",
	"payload-too-large":          "INVALID_PARAMETER_VALUE",
	"idempotency-key-reused":     "INVALID_PARAMETER_VALUE",
	"digest-mismatch":            "INVALID_PARAMETER_VALUE",
	"range-not-satisfiable":      "INVALID_PARAMETER_VALUE",
	"unauthenticated":            "UNAUTHENTICATED",
	"invalid-token":              "UNAUTHENTICATED",
	"invalid-credentials":        "UNAUTHENTICATED",
	"forbidden":                  "PERMISSION_DENIED",
	"registration-closed":        "PERMISSION_DENIED",
	"approval-required":          "PERMISSION_DENIED",
	"separation-of-duties":       "PERMISSION_DENIED",
	"not-found":                  "RESOURCE_DOES_NOT_EXIST",
	"no-explanation":             "RESOURCE_DOES_NOT_EXIST",
	"method-not-allowed":         "ENDPOINT_NOT_FOUND",
	"experiment-exists":          "RESOURCE_ALREADY_EXISTS",
	"run-exists":                 "RESOURCE_ALREADY_EXISTS",
	"model-exists":               "RESOURCE_ALREADY_EXISTS",
	"project-exists":             "RESOURCE_ALREADY_EXISTS",
	"email-taken":                "RESOURCE_ALREADY_EXISTS",
	"user-exists":                "RESOURCE_ALREADY_EXISTS",
	"token-exists":               "RESOURCE_ALREADY_EXISTS",
	"self-modification":          "RESOURCE_CONFLICT",
	"last-owner":                 "RESOURCE_CONFLICT",
	"production-occupied":        "RESOURCE_CONFLICT",
	"no-policy":                  "RESOURCE_CONFLICT",
	"already-promoted":           "RESOURCE_CONFLICT",
	"already-approved":           "RESOURCE_CONFLICT",
	"promotion-closed":           "RESOURCE_CONFLICT",
	"promotion-expired":          "RESOURCE_CONFLICT",
	"artifact-limit":             "RESOURCE_CONFLICT",
	"job-ended":                  "RESOURCE_CONFLICT",
	"sweep-ended":                "RESOURCE_CONFLICT",
	"webhook-disabled":           "RESOURCE_CONFLICT",
	"webhook-target-forbidden":   "INVALID_PARAMETER_VALUE",
	"webhook-host-unresolved":    "INVALID_PARAMETER_VALUE",
	"webhook-limit":              "RESOURCE_CONFLICT",
	"concurrent-modification":    "RESOURCE_CONFLICT",
	"request-in-progress":        "RESOURCE_CONFLICT",
	"precondition-failed":        "RESOURCE_CONFLICT",
	"too-many-attempts":          "REQUEST_LIMIT_EXCEEDED",
	"too-many-streams":           "REQUEST_LIMIT_EXCEEDED",
	"internal":                   "INTERNAL_ERROR",
	"projection-lagging":         "TEMPORARILY_UNAVAILABLE",
	"revocation-pending":         "TEMPORARILY_UNAVAILABLE",
	"history-too-long":           "TEMPORARILY_UNAVAILABLE",
	"unavailable":                "TEMPORARILY_UNAVAILABLE",
	"artifact-store-unavailable": "TEMPORARILY_UNAVAILABLE",
	"insufficient-storage":       "TEMPORARILY_UNAVAILABLE",
}

// mlflowProblem is an error with MLflow's code (and the Maestro problem
// type closest to it, should it ever render as a problem).
func mlflowProblem(code, message string) error {
	pt := "validation-failed"
	switch code {
	case "RESOURCE_DOES_NOT_EXIST", "ENDPOINT_NOT_FOUND":
		pt = "not-found"
	case "PERMISSION_DENIED":
		pt = "forbidden"
	}
	return &problemError{code: pt, detail: message, mlflow: code}
}

// missingParam is MLflow's refusal of a request without a required field.
func missingParam(name string) error {
	return mlflowProblem("INVALID_PARAMETER_VALUE", "Missing value for required parameter '"+name+"'. "+
		"See the API docs for more information about request parameters.")
}

// mlflowRequired is MLflow's refusal of a request without the field name.
func mlflowRequired(name, value string) error {
	if value == "" {
		return missingParam(name)
	}
	return nil
}

// mlflowMissing gives the service's refusal of a missing experiment or run
// MLflow's message (what names the kind: "experiment" or "run").
func mlflowMissing(err error, what string, missing error) error {
	if e, ok := handlers.AsError(err); ok && e.Kind == handlers.NotFound && e.Detail == what+" not found" {
		return missing
	}
	return err
}

// mlflowSearchError maps a search's refusals to MLflow's.
func mlflowSearchError(err error) error {
	var fe *filter.Error
	switch {
	case errors.As(err, &fe):
		return mlflowProblem("INVALID_PARAMETER_VALUE", fe.Error())
	case errors.Is(err, projections.ErrInvalidSearch):
		return mlflowProblem("INVALID_PARAMETER_VALUE", err.Error())
	}
	return pageError(err)
}

// isMLflow says whether the request is on an MLflow route: its errors are
// MLflow's error body, not problem+json.
func isMLflow(r *http.Request) bool {
	on, _ := r.Context().Value(ctxMLflow).(bool)
	return on
}

// writeMLflowError writes pe as MLflow's {error_code, message}.
func writeMLflowError(w http.ResponseWriter, r *http.Request, pe *problemError) {
	code := pe.mlflow
	if code == "" {
		code = mlflowCodes[pe.code]
	}
	status, ok := mlflowStatus[code]
	if !ok {
		code, status = "INTERNAL_ERROR", http.StatusInternalServerError
	}
	msg := pe.detail
	if msg == "" {
		msg = problemCatalog[pe.code].Title
	}
	setRetryAfter(w, pe, status)
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="maestro"`)
	}
	w.Header().Set("Maestro-Request-Id", requestID(r.Context()))
	writeJSON(w, status, MLflowError{ErrorCode: code, Message: msg})
}

// ---- the project of a request ----

// mlflowProject is the project an MLflow request addresses: {project} of
// the tracking URI, or the project a scoped API token is bound to on the
// bare /api/2.0 paths.
func mlflowProject(c *call) (string, error) {
	if ref := c.param("project"); ref != "" {
		return ref, nil
	}
	if c.who.Project != "" {
		return c.who.Project, nil
	}
	return "", mlflowProblem("BAD_REQUEST", "the /api/2.0/mlflow paths need an API token scoped to a project; "+
		"otherwise use the project's tracking URI, http://HOST/mlflow/{project}")
}

// mlflowReadable is readableProjectRef of the request's project.
func (s *Server) mlflowReadable(c *call) (projections.Project, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return projections.Project{}, err
	}
	return s.readableProjectRef(c.r, ref)
}

// ---- requests ----

// mlflowHandler adapts an MLflow RPC: decode the request as MLflow's server
// does (mlflowDecode), check it, run do, answer 200 with its result (MLflow
// clients accept no other success status).
func mlflowHandler[Req, Resp any](s *Server, do func(c *call, req Req) (Resp, error)) routeHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		req, err := mlflowRequest[Req](r)
		if err != nil {
			return err
		}
		resp, err := do(newCall(w, r), req)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
}

// mlflowRequest decodes an MLflow request (mlflowDecode) and checks it
// (its validate, if it has one): what mlflowHandler does before the RPC.
func mlflowRequest[Req any](r *http.Request) (Req, error) {
	var req Req
	if err := mlflowDecode(r, &req); err != nil {
		return req, err
	}
	var err error
	if v, ok := any(&req).(validator); ok {
		err = v.validate() // it may normalise req: read req after it
	}
	return req, err
}

// settle is read-your-writes for an MLflow command (rule 5): it reports seq
// in header and waits, bounded, until the route's projections (or names)
// have applied it. The answer stays 200 when the wait runs out, since
// MLflow clients treat anything else as failure; the change is durable, and
// Maestro-Consistency: pending says the read models lag.
func (s *Server) settle(c *call, header string, seq uint64, names ...string) {
	if seq == 0 {
		return
	}
	c.w.Header().Set(header, strconv.FormatUint(seq, 10))
	if len(names) == 0 {
		names = awaitNames(c.r)
	}
	if !s.waitApplied(c.ctx, seq, names...) {
		c.w.Header().Set("Maestro-Consistency", "pending")
	}
}

// mlflowDecode reads an MLflow request into v as MLflow's server does: GET
// parameters from the query string (repeated fields from every
// occurrence), other methods from a JSON body, where a missing body is {}
// and unknown fields are ignored (clients send extras such as run_uuid).
// POST and PUT must say Content-Type: application/json.
func mlflowDecode(r *http.Request, v any) error {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return decodeMLflowQuery(r.URL.Query(), v)
	}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		ct := r.Header.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return mlflowProblem("INVALID_PARAMETER_VALUE", "Bad Request. Content-Type must be one of [application/json]. Got '"+ct+"'.")
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return mlflowProblem("BAD_REQUEST", "cannot read the request body")
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	if body[0] == '"' {
		// Legacy clients send the JSON object as a JSON string.
		var inner string
		if err := json.Unmarshal(body, &inner); err != nil {
			return mlflowProblem("INVALID_PARAMETER_VALUE", "the request body is not valid JSON")
		}
		body = []byte(inner)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return mlflowProblem("INVALID_PARAMETER_VALUE", mlflowJSONError(err))
	}
	return nil
}

func mlflowJSONError(err error) string {
	var te *json.UnmarshalTypeError
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		return "Invalid value " + fe.value + " supplied: it must be " + fe.want +
			". See the API docs for more information about request parameters."
	case errors.As(err, &te):
		return "Invalid value for parameter '" + te.Field + "' supplied: Hint: Value was of type '" + te.Value +
			"'. See the API docs for more information about request parameters."
	}
	return "the request body is not valid JSON: " + jsonErrorDetail(err)
}

// decodeMLflowQuery fills v (a pointer to a struct) from query parameters:
// each field by its JSON name, a slice field from every occurrence, any
// other from the first. Values arrive as JSON strings, which the ml* field
// types accept for numbers, booleans and enums, as MLflow's parser does.
func decodeMLflowQuery(q url.Values, v any) error {
	obj := map[string]any{}
	collectQuery(q, reflect.TypeOf(v).Elem(), obj)
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return mlflowProblem("INVALID_PARAMETER_VALUE", mlflowJSONError(err))
	}
	return nil
}

func collectQuery(q url.Values, t reflect.Type, obj map[string]any) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			collectQuery(q, f.Type, obj)
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		vals, ok := q[name]
		if name == "" || name == "-" || !ok || len(vals) == 0 {
			continue
		}
		if f.Type.Kind() == reflect.Slice {
			obj[name] = vals
		} else {
			obj[name] = vals[0]
		}
	}
}

// fieldError is a field value that MLflow's parser would refuse
// (encoding/json passes an Unmarshaler's error on without the field name).
type fieldError struct{ value, want string }

func (e *fieldError) Error() string { return e.value + ": want " + e.want }

// mlScalar is a JSON scalar as MLflow's parser (protobuf's JSON mapping)
// reads it: a string's contents (quoted), or a number's or literal's text.
// null is a field left unset (set false): protobuf's parser clears a field
// given as null, and encoding/json expects an Unmarshaler to take null as
// a no-op.
func mlScalar(b []byte) (s string, quoted, set bool, err error) {
	if string(b) == "null" {
		return "", false, false, nil
	}
	if len(b) > 0 && b[0] == '"' {
		err = json.Unmarshal(b, &s)
		return s, true, err == nil, err
	}
	return string(b), false, true, nil
}

// mlInt64 is an int64 field: a decimal string (protobuf's JSON mapping;
// GET parameters are strings), or a JSON number that is an integer, also
// in float form (1e3, 5.0: Python's json reads them as floats, which
// protobuf accepts as integers). 1.5, and the string "1e3", are refused.
type mlInt64 int64

// UnmarshalJSON implements json.Unmarshaler.
func (n *mlInt64) UnmarshalJSON(b []byte) error {
	s, quoted, set, err := mlScalar(b)
	if err != nil || !set {
		return err
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil && !quoted {
		// An integral JSON number in float form, within int64's range
		// (±2^63: float64 holds both bounds exactly).
		if f, ferr := strconv.ParseFloat(s, 64); ferr == nil && f == math.Trunc(f) && f >= math.MinInt64 && f < math.MaxInt64 {
			v, err = int64(f), nil
		}
	}
	if err != nil {
		return &fieldError{value: string(b), want: "an integer"}
	}
	*n = mlInt64(v)
	return nil
}

// mlStringOrInteger reads a JSON string, or an integer kept as its
// digits: ids (experiment_id, which clients may send as a number) and
// enums (by name or number).
func mlStringOrInteger(b []byte, want string) (string, bool, error) {
	s, quoted, set, err := mlScalar(b)
	if err != nil || !set || quoted {
		return s, set, err
	}
	if _, err := strconv.ParseInt(s, 10, 64); err != nil {
		return "", false, &fieldError{value: string(b), want: want}
	}
	return s, true, nil
}

// mlID is an id MLflow clients may send as a number (experiment_id).
type mlID string

// UnmarshalJSON implements json.Unmarshaler.
func (id *mlID) UnmarshalJSON(b []byte) error {
	s, set, err := mlStringOrInteger(b, "a string")
	if set {
		*id = mlID(s)
	}
	return err
}

// mlBool is a bool field; GET parameters carry "true" or "false" (any case).
type mlBool bool

// UnmarshalJSON implements json.Unmarshaler.
func (v *mlBool) UnmarshalJSON(b []byte) error {
	s, _, set, err := mlScalar(b)
	if err != nil || !set {
		return err
	}
	switch strings.ToLower(s) {
	case "true":
		*v = true
	case "false":
		*v = false
	default:
		return &fieldError{value: string(b), want: "true or false"}
	}
	return nil
}

// mlDouble is a metric value: a JSON number, a numeric string, or "NaN",
// "Infinity", "-Infinity" (events.MetricValue). JSON null is read as NaN,
// unlike MLflow (which refuses it as a missing value): the npm client
// encodes NaN with JSON.stringify, which writes null, and a lost point is
// worse than a deviation nobody relies on. A field that is absent is still
// missing (set stays false).
type mlDouble struct {
	value events.MetricValue
	set   bool
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *mlDouble) UnmarshalJSON(b []byte) error {
	d.set = true
	if string(b) == "null" {
		d.value = events.MetricValue(math.NaN())
		return nil
	}
	if err := d.value.UnmarshalJSON(b); err != nil {
		return &fieldError{value: string(b), want: "a number, \"NaN\", \"Infinity\" or \"-Infinity\""}
	}
	return nil
}

// mlflowDouble is a metric value as MLflow's SQL store reads it back: NaN
// as "NaN", but ±Inf as ±1.7976931348623157e308 (it stores infinities as
// the largest double), so clients that compare against it see what they
// would from MLflow.
func mlflowDouble(v events.MetricValue) events.MetricValue {
	switch f := float64(v); {
	case math.IsInf(f, 1):
		return events.MetricValue(math.MaxFloat64)
	case math.IsInf(f, -1):
		return events.MetricValue(-math.MaxFloat64)
	}
	return v
}

// mlEnum is an enum field: its name, or its number (1-based, as in the
// proto) as a JSON number or string.
type mlEnum string

// UnmarshalJSON implements json.Unmarshaler.
func (e *mlEnum) UnmarshalJSON(b []byte) error {
	s, set, err := mlStringOrInteger(b, "an enum name or number")
	if set {
		*e = mlEnum(s)
	}
	return err
}

// of resolves the enum against names (in proto order, numbered from 1);
// def is the value of an absent field. field names it in the error.
func (e mlEnum) of(field string, names []string, def string) (string, error) {
	if e == "" {
		return def, nil
	}
	for i, n := range names {
		if string(e) == n || string(e) == strconv.Itoa(i+1) {
			return n, nil
		}
	}
	return "", mlflowProblem("INVALID_PARAMETER_VALUE", "Invalid value "+strconv.Quote(string(e))+" for parameter '"+field+
		"' supplied: it must be one of "+strings.Join(names, ", ")+".")
}

// ---- tags and params (tracking's and the registry's) ----

// mlflowKV is a tag or param: {key, value}.
type mlflowKV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func mlflowKVs(m map[string]string) []mlflowKV {
	out := make([]mlflowKV, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, mlflowKV{Key: k, Value: m[k]})
	}
	return out
}

// mlflowTagIn is a tag or param in a request (mlflowKV's shape); the key
// is required (mlflowKeys).
type mlflowTagIn = mlflowKV

// mlflowKeys refuses a tag or param without a key (list names the field).
func mlflowKeys(list string, tags []mlflowTagIn) error {
	for i, t := range tags {
		if t.Key == "" {
			return missingParam(list + "[" + strconv.Itoa(i) + "].key")
		}
	}
	return nil
}

// mlflowTagMap checks the keys of tags (mlflowKeys) and maps them, the
// last value of a key winning, as MLflow applies them.
func mlflowTagMap(list string, tags []mlflowTagIn) (map[string]string, error) {
	if err := mlflowKeys(list, tags); err != nil || tags == nil {
		return nil, err
	}
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[t.Key] = t.Value
	}
	return m, nil
}
