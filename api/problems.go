package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/maestro-ml/maestro/handlers"
)

// ProblemTypePrefix starts every problem type URI; clients match on the
// whole type, which never changes once published (like nats-server's
// numbered error codes).
const ProblemTypePrefix = "urn:maestro:problem:"

// problemCatalog declares every problem the API can return, once.
var problemCatalog = map[string]struct {
	Status int
	Title  string
}{
	"validation-failed":          {400, "The request is invalid"},
	"malformed-json":             {400, "The request body is not valid JSON for this operation"},
	"weak-password":              {400, "The password does not meet the password policy"},
	"invalid-idempotency-key":    {400, "The Idempotency-Key header is invalid"},
	"invalid-page-token":         {400, "The page_token is invalid"},
	"unauthenticated":            {401, "Authentication is required"},
	"invalid-token":              {401, "The token is invalid or expired"},
	"invalid-credentials":        {401, "Invalid credentials"},
	"forbidden":                  {403, "Not allowed"},
	"registration-closed":        {403, "Self-registration is disabled"},
	"approval-required":          {403, "An approval policy governs this change; request a promotion"},
	"separation-of-duties":       {403, "You may not approve your own request or version"},
	"not-found":                  {404, "Not found"},
	"no-explanation":             {404, "The model version has no explanation"},
	"method-not-allowed":         {405, "Method not allowed"},
	"email-taken":                {409, "The email address is already registered"},
	"user-exists":                {409, "The user already exists"},
	"self-modification":          {409, "You cannot change this on your own account"},
	"project-exists":             {409, "A project with this name already exists"},
	"model-exists":               {409, "A model with this name already exists in the project"},
	"project-archived":           {409, "The project is archived"},
	"last-owner":                 {409, "A project must keep at least one owner"},
	"production-occupied":        {409, "Another version is in production"},
	"no-policy":                  {409, "No approval policy governs this change"},
	"already-promoted":           {409, "The version is already where the request would move it"},
	"already-approved":           {409, "You have already approved this request"},
	"promotion-closed":           {409, "The promotion request is no longer open"},
	"promotion-expired":          {409, "The promotion request has expired"},
	"experiment-exists":          {409, "An experiment with this name already exists in the project"},
	"experiment-deleted":         {409, "The experiment is deleted"},
	"run-exists":                 {409, "The run already exists"},
	"run-deleted":                {409, "The run is deleted"},
	"param-overwrite":            {400, "A param is written once per run"},
	"invalid-explanation":        {400, "The explanation.json does not match its schema"},
	"token-exists":               {409, "This Idempotency-Key already created an API token"},
	"artifact-limit":             {409, "The version or run holds the most artifacts it may have"},
	"job-ended":                  {409, "The job has already ended"},
	"sweep-ended":                {409, "The sweep has already ended"},
	"webhook-disabled":           {409, "The webhook is disabled"},
	"webhook-target-forbidden":   {422, "The webhook URL's host is an address webhooks may not reach"},
	"webhook-host-unresolved":    {422, "The webhook URL's host does not resolve"},
	"webhook-limit":              {409, "The project, or Maestro for global webhooks, holds the most webhooks it may have"},
	"concurrent-modification":    {409, "The resource changed concurrently"},
	"request-in-progress":        {409, "A request with this Idempotency-Key is still in progress"},
	"precondition-failed":        {412, "A precondition of the request does not hold"},
	"payload-too-large":          {413, "The request body is too large"},
	"unsupported-media-type":     {415, "Content-Type must be application/json"},
	"range-not-satisfiable":      {416, "The requested range cannot be served"},
	"idempotency-key-reused":     {422, "The Idempotency-Key was used with a different request"},
	"digest-mismatch":            {422, "The uploaded bytes do not match Content-Digest"},
	"too-many-attempts":          {429, "Too many attempts"},
	"too-many-streams":           {429, "Too many log follows are open"},
	"internal":                   {500, "Internal server error"},
	"projection-lagging":         {503, "The read model has not caught up yet"},
	"revocation-pending":         {503, "The change is recorded but not yet in force everywhere"},
	"history-too-long":           {503, "The model's history is too long to read in one request; retry to continue"},
	"unavailable":                {503, "Service unavailable"},
	"artifact-store-unavailable": {503, "The artifact store is unavailable"},
	"insufficient-storage":       {507, "The artifact store is out of space"},
}

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// problemError is an error that renders as a specific problem.
type problemError struct {
	code       string
	detail     string
	retryAfter time.Duration
	// mlflow is the MLflow error code an MLflow route answers with, when
	// the problem type alone does not say (see mlflowCodes).
	mlflow string
}

func (e *problemError) Error() string { return e.code + ": " + e.detail }

func problem(code, detail string) error { return &problemError{code: code, detail: detail} }

var kindCodes = map[handlers.Kind]string{
	handlers.Invalid:         "validation-failed",
	handlers.NotFound:        "not-found",
	handlers.Conflict:        "concurrent-modification",
	handlers.Forbidden:       "forbidden",
	handlers.Unauthenticated: "unauthenticated",
	handlers.Throttled:       "too-many-attempts",
	handlers.Unavailable:     "unavailable",
}

// toProblem maps any error to a problem: the one place errors become HTTP.
func toProblem(err error) (*problemError, bool) {
	var pe *problemError
	if errors.As(err, &pe) {
		return pe, true
	}
	if he, ok := handlers.AsError(err); ok {
		code := he.Code
		if _, known := problemCatalog[code]; !known {
			code = kindCodes[he.Kind]
		}
		return &problemError{code: code, detail: he.Detail, retryAfter: he.RetryAfter}, true
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &problemError{code: "payload-too-large", detail: "the body exceeds " + strconv.FormatInt(mbe.Limit, 10) + " bytes"}, true
	}
	return &problemError{code: "internal", detail: "an unexpected error occurred"}, false
}

func writeProblem(w http.ResponseWriter, r *http.Request, pe *problemError) {
	writeProblemWith(w, r, pe, nil)
}

// writeProblemWith is writeProblem with extension members (RFC 9457
// section 3.2): extend gets the problem and returns the body to send
// (nil: the problem as it is). MLflow routes answer MLflow's error body.
func writeProblemWith(w http.ResponseWriter, r *http.Request, pe *problemError, extend func(Problem) any) {
	if isMLflow(r) {
		writeMLflowError(w, r, pe)
		return
	}
	c, ok := problemCatalog[pe.code]
	if !ok {
		c = problemCatalog["internal"]
	}
	setRetryAfter(w, pe, c.Status)
	if c.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="maestro"`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(c.Status)
	var body any = Problem{
		Type: ProblemTypePrefix + pe.code, Title: c.Title, Status: c.Status, Detail: pe.detail,
		Instance: r.URL.Path, RequestID: requestID(r.Context()),
	}
	if extend != nil {
		body = extend(body.(Problem))
	}
	_ = json.NewEncoder(w).Encode(body)
}

// setRetryAfter sends Retry-After (whole seconds, at least one) for a
// problem that says when to retry, and for every 503 whether it says or
// not: a client told the platform is unavailable is always told when to
// come back.
func setRetryAfter(w http.ResponseWriter, pe *problemError, status int) {
	if pe.retryAfter <= 0 && status != http.StatusServiceUnavailable {
		return
	}
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(pe.retryAfter.Seconds()+0.5))))
}
