// Package api is Maestro's HTTP ingress: authentication, authorization,
// decoding and validation in front of the command handlers, and queries that
// read the Postgres projections. It is deliberately thin: it never decides.
package api

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/maestro-ml/maestro/api/web"
	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/handlers/approvals"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/sweeps"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/handlers/webhooks"
	"github.com/maestro-ml/maestro/projections"
)

// Deps is what the API needs from the rest of the platform.
type Deps struct {
	Identity *identity.Service
	Registry *registry.Service
	Tracking *tracking.Service
	// Jobs submits and cancels training jobs.
	Jobs *jobs.Service
	// Sweeps creates and stops hyper-parameter sweeps.
	Sweeps *sweeps.Service
	// Approvals handles promotion requests under approval policies.
	Approvals *approvals.Service
	// Webhooks manages webhook subscriptions.
	Webhooks *webhooks.Service
	// JobLogs is the JetStream of the job log stream (runner.ReadLogs).
	JobLogs jetstream.JetStream
	// Metrics serves the Prometheus metrics at /metrics (nil: not served).
	Metrics http.Handler
	// MetricsToken, when set, is a bearer token that may read /metrics
	// (a scraper's credential; admins may read it with their own).
	MetricsToken string
	Blobs        artifacts.Store
	// ArtifactMaxBytes bounds one artifact upload (default 5 GiB).
	ArtifactMaxBytes int64
	Queries          *projections.Queries
	Waiter           *projections.Waiter
	Tokens           *auth.Tokens
	Keys             *auth.KeySet
	Idempotency      jetstream.KeyValue
	Logger           *slog.Logger
	// StreamLastSeq is the event stream's last sequence.
	StreamLastSeq func(ctx context.Context) (uint64, error)
	// Heads is the last sequence of every stream projections follow.
	Heads func(ctx context.Context) (projections.Heads, error)
	// Ready is the dependencies GET /readyz probes, one check each
	// (Postgres, NATS, the artifact store, the projections).
	Ready []ReadyCheck
	// Registerer takes the API's Prometheus collectors (api/metrics.go);
	// nil registers them with a private registry nobody serves.
	Registerer prometheus.Registerer
	// VerifyAudit runs projections.VerifyAudit on the platform's stream
	// and database (the admin UI's "Verify now"; nil: not offered).
	VerifyAudit func(ctx context.Context) (*projections.AuditVerifyResult, error)
	// TrustedProxies is MAESTRO_TRUSTED_PROXIES: peers whose
	// X-Forwarded-For is believed (api/proxies.go); empty: none.
	TrustedProxies []netip.Prefix
	// RegistrationOpen allows POST /auth/register.
	RegistrationOpen bool
	// WaitTimeout bounds the read-your-writes wait (default 2s).
	WaitTimeout time.Duration
	// MaxBodyBytes bounds request bodies (default 64 KiB).
	MaxBodyBytes int64
	// RequestTimeout is the deadline of a request's context, and so of its
	// Postgres and NATS I/O (default 30s; Route.Timeout overrides it).
	RequestTimeout time.Duration
	// Now is the clock API token expiry is checked with (default time.Now).
	Now func() time.Time
	// SoleInstance says this is the only API process on its event store
	// (`maestro serve`, which holds the data dir's lock): a pending
	// idempotency record of another boot was then left by a crash and is
	// taken over at once instead of after 30 s.
	SoleInstance bool
}

// Route is one entry of the route table. The table drives the router, the
// generated security tests and the OpenAPI coverage check.
type Route struct {
	Method  string
	Pattern string
	// Public routes need no token; everything else does (deny by default).
	Public bool
	// Command routes honour Idempotency-Key and read-your-writes.
	Command bool
	// Await names the projections a command's response and the next
	// natural read need (rule 5): respondCommand waits for these only, so
	// a slow projection elsewhere (audit) does not hold up the answer.
	// Empty waits for every projection.
	Await []string
	// MaxBody overrides the default request body limit (artifact uploads).
	MaxBody int64
	// Timeout overrides Deps.RequestTimeout (artifact transfers).
	Timeout time.Duration
	// MLflow routes are the MLflow REST façade (api/mlflow.go): their
	// errors are MLflow's {error_code, message}, not problem+json.
	MLflow bool
	// ScrapeToken routes also admit Deps.MetricsToken as a bearer token
	// (api/metrics_route.go), besides the credentials every route takes.
	ScrapeToken bool
	handle      func(w http.ResponseWriter, r *http.Request) error
}

// Server is the HTTP handler of the API.
type Server struct {
	deps   Deps
	routes []Route
	mux    chi.Router
	idem   *idempotencyState
	m      *apiMetrics
	// explanations keeps parsed explanation.json documents by digest.
	explanations explain.Cache
	// streams ends the log follows in progress on shutdown (EndStreams).
	streams streamSet
	// ready is GET /readyz's last result and the probes still running.
	ready readiness
	// The web UI (api/ui.go): its routes, templates, CSRF key and the
	// cross-origin check of its forms.
	uiRoutes    []UIRoute
	ui          *web.Renderer
	csrfKey     []byte
	crossOrigin *http.CrossOriginProtection
	// admin is the admin dashboard's memory (api/ui_admin.go).
	admin uiAdminState
}

// New builds the API server.
func New(d Deps) *Server {
	if d.WaitTimeout <= 0 {
		d.WaitTimeout = 2 * time.Second
	}
	if d.ArtifactMaxBytes <= 0 {
		d.ArtifactMaxBytes = 5 << 30
	}
	if d.MaxBodyBytes <= 0 {
		d.MaxBodyBytes = 64 << 10
	}
	if d.RequestTimeout <= 0 {
		d.RequestTimeout = 30 * time.Second
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	ui, err := web.New()
	if err != nil {
		panic(err) // the embedded templates: a programming error the tests find
	}
	s := &Server{deps: d, idem: newIdempotencyState(), m: newAPIMetrics(d.Registerer),
		ui: ui, csrfKey: csrfKeyFrom(d.Keys), crossOrigin: http.NewCrossOriginProtection()}
	s.routes = s.table()
	s.uiRoutes = s.uiTable()
	s.mux = s.router()
	return s
}

// Routes returns the route table.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) table() []Route {
	return append([]Route{
		{Method: "GET", Pattern: "/healthz", Public: true, handle: s.healthz},
		{Method: "GET", Pattern: "/readyz", Public: true, handle: s.readyz},
		{Method: "GET", Pattern: "/.well-known/jwks.json", Public: true, handle: s.jwks},
		{Method: "GET", Pattern: "/api/v1/openapi.json", Public: true, handle: serveOpenAPI},
		{Method: "GET", Pattern: "/api/v1/asyncapi.json", Public: true, handle: serveAsyncAPI},
		{Method: "GET", Pattern: "/api/v1/auth/health", Public: true, handle: s.healthz},
		{Method: "POST", Pattern: "/api/v1/auth/register", Public: true, Command: true, Await: identityViews, handle: s.register},
		{Method: "POST", Pattern: "/api/v1/auth/login", Public: true, Command: true, Await: identityViews, handle: s.login},
		{Method: "POST", Pattern: "/api/v1/auth/refresh", Public: true, Command: true, Await: identityViews, handle: s.refresh},
		{Method: "POST", Pattern: "/api/v1/auth/logout", Command: true, Await: identityViews, handle: s.logout},
		{Method: "GET", Pattern: "/api/v1/auth/me", handle: s.me},
		{Method: "GET", Pattern: "/api/v1/users", handle: s.listUsers},
		{Method: "GET", Pattern: "/api/v1/users/{id}", handle: s.getUser},
		{Method: "PATCH", Pattern: "/api/v1/users/{id}", Command: true, Await: identityViews, handle: s.patchUser},
		{Method: "GET", Pattern: "/api/v1/audit", handle: s.listAudit},
		{Method: "GET", Pattern: "/api/v1/audit/keys", Public: true, handle: s.auditKeys},
		{Method: "GET", Pattern: "/api/v1/audit/export", Timeout: auditExportTimeout, handle: s.exportAudit},
		{Method: "GET", Pattern: "/api/v1/projections", handle: s.projectionStatus},
	}, slices.Concat(s.tokenRoutes(), awaiting(s.registryRoutes(), registryViews), awaiting(s.artifactRoutes(), registryViews),
		awaiting(s.trackingRoutes(), trackingViews), awaiting(s.runArtifactRoutes(), trackingViews), awaiting(s.mlflowRoutes(), trackingViews),
		awaiting(s.jobRoutes(), jobViews), awaiting(s.promotionRoutes(), promotionViews), s.metricsRoutes(), awaiting(s.webhookRoutes(), webhookViews),
		s.explanationRoutes(), awaiting(s.sweepRoutes(), sweepViews))...)
}

func (s *Server) router() chi.Router {
	m := chi.NewRouter()
	m.Use(s.requestLog, s.recoverer, securityHeaders)
	m.NotFound(func(w http.ResponseWriter, r *http.Request) {
		if mlflowPath.MatchString(r.URL.Path) {
			r = r.WithContext(context.WithValue(r.Context(), ctxMLflow, true))
			writeProblem(w, r, &problemError{code: "not-found", detail: "no such endpoint: " + r.Method + " " + r.URL.Path, mlflow: "ENDPOINT_NOT_FOUND"})
			return
		}
		if wantsPage(r) {
			// A browser on a page that does not exist: the UI's 404 page.
			s.uiPageProblem(w, r, &problemError{code: "not-found", detail: "there is no page at " + r.URL.Path})
			return
		}
		writeProblem(w, r, &problemError{code: "not-found", detail: "no such route"})
	})
	m.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		// RFC 9110: a 405 names the methods the resource does support.
		var allowed []string
		seen := map[string]bool{}
		methods := make([]string, 0, len(s.routes)+len(s.uiRoutes))
		for _, rt := range s.routes {
			methods = append(methods, rt.Method)
		}
		for _, rt := range s.uiRoutes {
			methods = append(methods, rt.Method)
		}
		for _, method := range methods {
			if !seen[method] && m.Match(chi.NewRouteContext(), method, r.URL.Path) {
				seen[method] = true
				allowed = append(allowed, method)
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		if wantsPage(r) {
			// A browser visiting a form's address (the address bar after a
			// refused form, /signin after a failed sign-in): a page.
			s.uiPageProblem(w, r, &problemError{code: "method-not-allowed", detail: "this address takes a form, not a visit"})
			return
		}
		if mlflowPath.MatchString(r.URL.Path) {
			// MLflow's Python client falls back to another method only on
			// ENDPOINT_NOT_FOUND (get-latest-versions: POST, then GET).
			r = r.WithContext(context.WithValue(r.Context(), ctxMLflow, true))
		}
		writeProblem(w, r, &problemError{code: "method-not-allowed", detail: r.Method + " is not supported here"})
	})
	for _, rt := range s.routes {
		h := s.endpoint(rt)
		m.Method(rt.Method, rt.Pattern, h)
	}
	for _, rt := range s.uiRoutes {
		m.Method(rt.Method, rt.Pattern, s.uiEndpoint(rt))
	}
	return m
}

// problemFor is the one mapping of a request's error to its problem:
// toProblem, then what the error alone does not say — the request outlived
// its deadline, the client went away, or a dependency is down (a
// retryable 503 with Retry-After, logged as a warning, not a 500 with an
// "unexpected error" that hides what is down). Any other error is logged
// and is a 500.
func (s *Server) problemFor(r *http.Request, err error) *problemError {
	pe, known := toProblem(err)
	if known {
		return pe
	}
	ctx := r.Context()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		// A pool wait, a slow fold: a retryable 503, not an internal error.
		return &problemError{code: "unavailable", detail: "the request did not finish within its deadline", retryAfter: time.Second}
	case errors.Is(ctx.Err(), context.Canceled):
		return &problemError{code: "unavailable", detail: "the request was cancelled"}
	case dependencyDown(err):
		s.deps.Logger.WarnContext(ctx, "dependency unavailable", "request_id", requestID(ctx), "err", err)
		return &problemError{code: "unavailable", detail: "a dependency of the platform is unreachable; retry shortly", retryAfter: 2 * time.Second}
	}
	s.deps.Logger.ErrorContext(ctx, "request failed", "request_id", requestID(ctx), "err", err)
	return pe
}

// endpoint wraps a route's handler with the per-route middleware: body
// limit, authentication unless public, idempotency for commands, and the
// one place errors become problem responses.
func (s *Server) endpoint(rt Route) http.Handler {
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := rt.handle(w, r)
		switch {
		case err == nil:
			s.m.observeOutcome(rt, nil)
		case errors.Is(r.Context().Err(), context.Canceled):
			// The client went away: no outcome to count, nobody to answer.
			writeProblem(w, r, s.problemFor(r, err))
		default:
			pe := s.problemFor(r, err)
			s.m.observeOutcome(rt, pe)
			writeProblem(w, r, pe)
		}
	})
	if rt.Command {
		h = s.idempotent(h)
	}
	if !rt.Public {
		authed := s.authenticate(h)
		if rt.ScrapeToken {
			authed = s.acceptScrapeToken(h, authed)
		}
		h = authed
	}
	limit := s.deps.MaxBodyBytes
	if rt.MaxBody > 0 {
		limit = rt.MaxBody
	}
	// Every request's I/O has a deadline: http.Server's WriteTimeout does
	// not stop a running handler, and a client that stays connected would
	// otherwise hold a pool connection or a NATS request for ever.
	timeout := s.deps.RequestTimeout
	if rt.Timeout > 0 {
		timeout = rt.Timeout
	}
	await := slices.Clone(rt.Await)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if len(await) > 0 {
			// respondCommand reads the route's Await from here (awaitNames).
			ctx = context.WithValue(ctx, ctxAwait, await)
		}
		if rt.MLflow {
			ctx = context.WithValue(ctx, ctxMLflow, true)
		}
		if rt.Command {
			// The event store notes what the command stored (waitApplied).
			ctx, _ = events.WithReceipt(ctx)
		}
		r = r.WithContext(ctx)
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h.ServeHTTP(w, r)
	})
}

type ctxKey int

const (
	ctxRequestID ctxKey = iota
	ctxPrincipal
	ctxIdempotency
	ctxLogPrincipal
	ctxAwait
	ctxMLflow
	ctxClientIP
	ctxStreamed
	ctxMultipart
)

// markStreamed tells requestLog the response is a stream (a log follow,
// open for as long as the job runs): its duration is no request latency.
func markStreamed(r *http.Request) {
	if streamed, ok := r.Context().Value(ctxStreamed).(*bool); ok {
		*streamed = true
	}
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxRequestID).(string)
	return id
}

func principal(ctx context.Context) (authz.Principal, bool) {
	p, ok := ctx.Value(ctxPrincipal).(authz.Principal)
	return p, ok
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (artifact
// transfers extend their deadlines through it).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// requestLog assigns a request id, works out the client address (behind
// trusted proxies, from X-Forwarded-For: resolveClientIP), writes one log
// line per request (id, client, principal, route, status, duration; never
// headers or bodies) and counts the request in the HTTP metrics: the one
// place every route, matched or not, passes through.
func (s *Server) requestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var b [12]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		w.Header().Set("X-Request-Id", id)
		who := new(string)
		ip := resolveClientIP(s.deps.TrustedProxies, r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
		ctx := context.WithValue(context.WithValue(r.Context(), ctxRequestID, id), ctxLogPrincipal, who)
		streamed := new(bool)
		ctx = context.WithValue(context.WithValue(ctx, ctxClientIP, ip), ctxStreamed, streamed)
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(ctx))
		took := time.Since(start)
		route := chi.RouteContext(ctx).RoutePattern()
		s.m.observeRequest(route, r.Method, rec.status, took, *streamed)
		s.deps.Logger.LogAttrs(ctx, slog.LevelInfo, "request",
			slog.String("request_id", id), slog.String("client", ip), slog.String("principal", *who),
			slog.String("method", r.Method), slog.String("route", route),
			slog.Int("status", rec.status), slog.Float64("duration_ms", float64(took.Microseconds())/1000))
	})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.deps.Logger.ErrorContext(r.Context(), "panic", "request_id", requestID(r.Context()), "panic", v)
				writeProblem(w, r, &problemError{code: "internal", detail: "an unexpected error occurred"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

const maxTokenLen = 4096

// authenticate requires a valid credential: an access token (a JWT) whose
// session is live and whose user is active, or an API token (mae_…) that is
// live and whose owner is active, sent as Bearer or, for MLflow clients, as
// the password of HTTP Basic (any user name). Both checks read projections
// (through the read caches, which the projections' notifications empty
// before the checkpoint that logout, revocation and deactivation wait for):
// a revoked credential fails on this instance as soon as the revoking
// request has returned, and on other API instances as soon as the
// notification reaches them (milliseconds; see docs/ARCHITECTURE.md "Read
// caches").
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deny := func(detail string) {
			writeProblem(w, r, &problemError{code: "unauthenticated", detail: detail})
		}
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		var p authz.Principal
		var err error
		switch {
		case cred == "" || len(cred) > maxTokenLen:
			deny("send an access token or an API token as Authorization: Bearer <token>")
			return
		case strings.EqualFold(scheme, "Basic"):
			// MLflow clients send MLFLOW_TRACKING_USERNAME/PASSWORD this
			// way; the password must be an API token (passwords are for
			// the login endpoint only, where they are throttled).
			raw, derr := base64.StdEncoding.DecodeString(cred)
			_, secret, ok := strings.Cut(string(raw), ":")
			if derr != nil || !ok || !auth.LooksLikeAPIToken(secret) {
				deny("HTTP Basic needs an API token (mae_…) as the password")
				return
			}
			p, err = s.tokenPrincipal(r, secret)
		case !strings.EqualFold(scheme, "Bearer"):
			deny("send an access token or an API token as Authorization: Bearer <token>")
			return
		case strings.HasPrefix(cred, auth.APITokenPrefix):
			if !auth.LooksLikeAPIToken(cred) {
				deny("the API token is invalid, expired or revoked")
				return
			}
			p, err = s.tokenPrincipal(r, cred)
		default:
			p, err = s.sessionPrincipal(r, cred)
		}
		if err != nil {
			writeProblem(w, r, s.problemFor(r, err))
			return
		}
		if who, ok := r.Context().Value(ctxLogPrincipal).(*string); ok {
			*who = "user:" + p.UserID
			if p.TokenID != "" {
				*who += "/token:" + p.TokenID
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxPrincipal, p)))
	})
}

func unauthenticated(detail string) error {
	return &problemError{code: "unauthenticated", detail: detail}
}

// sessionPrincipal checks an access token and its session.
func (s *Server) sessionPrincipal(r *http.Request, token string) (authz.Principal, error) {
	claims, err := s.deps.Tokens.Verify(token, auth.TokenAccess)
	if err != nil {
		return authz.Principal{}, unauthenticated("the access token is invalid or expired")
	}
	return s.liveSession(r, claims)
}

// liveSession is the principal of a verified token's session (an access
// token's or the web UI's): the session must be live and its user active.
func (s *Server) liveSession(r *http.Request, claims auth.Claims) (authz.Principal, error) {
	sp, err := s.deps.Queries.Session(r.Context(), claims.SessionID)
	if errors.Is(err, projections.ErrNotFound) {
		// A token minted by a login answered with Prefer: respond-async can
		// arrive before the sessions projection has it; the event store
		// is the truth, so ask it rather than refuse a valid session.
		sp, err = s.sessionFromEvents(r.Context(), claims.SessionID)
	}
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		return authz.Principal{}, &problemError{code: "unavailable", detail: "cannot check the session right now"}
	}
	if err != nil || sp.Revoked || !sp.Active || sp.UserID != claims.Subject {
		return authz.Principal{}, unauthenticated("the session has ended")
	}
	return authz.Principal{UserID: sp.UserID, SessionID: claims.SessionID, Email: sp.Email, Role: authz.Role(sp.Role)}, nil
}

// tokenPrincipal checks an API token (looked up by the hash of its secret)
// and its owner, and has its use recorded when it comes from a new address
// or first in a while (identity.DecideTokenUse): the recording is part of
// the request, so a use the audit trail cannot show is refused (503).
func (s *Server) tokenPrincipal(r *http.Request, secret string) (authz.Principal, error) {
	hash := auth.HashAPIToken(secret)
	tp, err := s.deps.Queries.TokenByHash(r.Context(), hash)
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		return authz.Principal{}, &problemError{code: "unavailable", detail: "cannot check the API token right now"}
	}
	now := s.deps.Now()
	if err != nil || !auth.SameHash(tp.Hash, hash) || tp.Revoked || !tp.Active ||
		(!tp.ExpiresAt.IsZero() && !now.Before(tp.ExpiresAt)) {
		return authz.Principal{}, unauthenticated("the API token is invalid, expired or revoked")
	}
	ip := clientIP(r)
	if !slices.Contains(tp.Addresses, ip) || now.Sub(tp.LastUsed) >= identity.TokenUseInterval {
		if err := s.deps.Identity.NoteTokenUse(r.Context(), tp.TokenID, ip); err != nil {
			s.deps.Logger.ErrorContext(r.Context(), "record API token use", "request_id", requestID(r.Context()), "token_id", tp.TokenID, "err", err)
			return authz.Principal{}, &problemError{code: "unavailable", detail: "cannot record the API token's use right now", retryAfter: time.Second}
		}
	}
	return authz.Principal{UserID: tp.UserID, Email: tp.Email, Role: authz.Role(tp.Role), TokenID: tp.TokenID,
		Project: tp.ProjectID, Ceiling: authz.ProjectRole(tp.Ceiling)}, nil
}

// meta is the who-and-why of a command from this request.
func meta(r *http.Request) events.Meta {
	m := events.Meta{Actor: events.Actor{Kind: events.ActorAnonymous}, CorrelationID: requestID(r.Context())}
	if p, ok := principal(r.Context()); ok {
		m.Actor = events.Actor{Kind: events.ActorUser, ID: p.UserID}
	}
	withIdempotency(r.Context(), &m)
	return m
}

// respondCommand finishes a command: it reports the stream sequence and,
// unless the client prefers async, waits (bounded) until the projections
// the next natural read needs (its route's Await) have applied it (rule 5).
// A wait that times out answers 202: the change is durable but not yet
// visible.
func (s *Server) respondCommand(w http.ResponseWriter, r *http.Request, status int, seq uint64, body any) {
	s.respondSequence(w, r, status, "Maestro-Sequence", seq, body)
}

// respondSequence is respondCommand for a sequence of any stream, reported
// in header (the metrics stream's is Maestro-Metrics-Sequence: min_sequence
// and Maestro-Sequence are the event stream's).
func (s *Server) respondSequence(w http.ResponseWriter, r *http.Request, status int, header string, seq uint64, body any) {
	if s.awaitSequence(w, r, header, seq) {
		status = http.StatusAccepted
	}
	if body == nil {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, body)
}

// awaitSequence is respondSequence's read-your-writes: it reports seq (if
// any) in header and, unless the client prefers async, waits until names
// (the route's projections when none are given) have applied it. It says
// whether the answer is 202: async, or a wait that ran out
// (Maestro-Consistency: pending).
func (s *Server) awaitSequence(w http.ResponseWriter, r *http.Request, header string, seq uint64, names ...string) bool {
	if seq == 0 {
		return false
	}
	w.Header().Set(header, strconv.FormatUint(seq, 10))
	if preferAsync(r) {
		w.Header().Set("Preference-Applied", "respond-async")
		return true
	}
	if len(names) == 0 {
		names = awaitNames(r)
	}
	if !s.waitApplied(r.Context(), seq, names...) {
		w.Header().Set("Maestro-Consistency", "pending")
		return true
	}
	return false
}

func preferAsync(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "respond-async") {
				return true
			}
		}
	}
	return false
}

func projectionNames() []string {
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name())
	}
	return names
}

// promptProjections is every projection that does not linger
// (projections.Lingering): what a read with a minimum sequence waits for,
// unless it reads a lingering one itself (the audit trail).
func promptProjections() []string {
	var names []string
	for _, p := range projections.All() {
		if _, ok := p.(projections.Lingering); !ok {
			names = append(names, p.Name())
		}
	}
	return names
}

// The projections each route family's commands wait for (Route.Await):
// identity answers are read back from users and the authenticator checks
// sessions; registry answers from projects (membership) and models. Audit
// gates nothing: a command never reads the audit trail back.
var (
	identityViews = []string{projections.Users{}.Name(), projections.Sessions{}.Name()}
	registryViews = []string{projections.Projects{}.Name(), projections.Models{}.Name()}
)

// awaiting gives routes that name no projections the family's default.
func awaiting(routes []Route, names []string) []Route {
	for i := range routes {
		if len(routes[i].Await) == 0 {
			routes[i].Await = names
		}
	}
	return routes
}

// awaitNames is the projections the request's command waits for: its
// route's Await, or every projection.
func awaitNames(r *http.Request) []string {
	if names, ok := r.Context().Value(ctxAwait).([]string); ok {
		return names
	}
	return projectionNames()
}

// waitApplied waits, bounded by WaitTimeout, until the named projections
// have applied seq, and reports whether they did. For a command whose
// receipt names the event types it stored, only the named projections that
// handle one of them are waited for: the others have nothing of the
// command's to apply, and pass over its events lazily (RunnerConfig.Pass).
func (s *Server) waitApplied(ctx context.Context, seq uint64, names ...string) bool {
	wait := s.deps.Waiter.WaitRead
	if rc, ok := events.ReceiptFrom(ctx); ok {
		if types := rc.Types(); len(types) > 0 {
			names = projections.Handling(names, types)
			// Each of them applies one of the command's events itself (a
			// projection that skips the last one may still pass over it
			// for up to RunnerConfig.Pass: latency, not staleness).
			wait = s.deps.Waiter.Wait
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.deps.WaitTimeout)
	defer cancel()
	return wait(ctx, seq, names...)
}

// awaitMinSequence honours a query's minimum sequences: the event
// stream's (header Maestro-Min-Sequence or ?min_sequence=) and the metrics
// stream's (Maestro-Min-Metrics-Sequence or ?min_metrics_sequence=, which
// the metrics logging answers report). The read waits, bounded, until the
// projections have applied them, so a client can read its own earlier
// write. For the event stream it waits for every projection that does not
// linger, and for names too (a read of a lingering projection names it);
// for the metrics stream, for the metrics projection.
func (s *Server) awaitMinSequence(r *http.Request, names ...string) error {
	err := s.awaitStream(r, "Maestro-Min-Sequence", "min_sequence", "event", append(promptProjections(), names...),
		func(ctx context.Context) (uint64, error) { return s.deps.StreamLastSeq(ctx) })
	if err != nil {
		return err
	}
	return s.awaitStream(r, "Maestro-Min-Metrics-Sequence", "min_metrics_sequence", "metrics", []string{projections.Metrics{}.Name()},
		func(ctx context.Context) (uint64, error) {
			h, err := s.deps.Heads(ctx)
			return h.Metrics, err
		})
}

// awaitStream is awaitMinSequence of one stream: its header and query
// parameter, the projections that follow it, and its last sequence.
func (s *Server) awaitStream(r *http.Request, header, param, stream string, names []string, last func(context.Context) (uint64, error)) error {
	v := r.Header.Get(header)
	if q := r.URL.Query().Get(param); q != "" {
		v = q
	}
	if v == "" {
		return nil
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return problem("validation-failed", param+" must be a non-negative integer")
	}
	// A sequence the stream has not reached yet was never returned to
	// anyone: refuse it rather than park the request for the whole wait.
	// Only above the last sequence: a just-returned sequence may be the last.
	if !s.deps.Waiter.Reached(seq, names...) && s.deps.StreamLastSeq != nil && s.deps.Heads != nil {
		head, err := last(r.Context())
		if err != nil {
			return fmt.Errorf("%s: %w", param, err)
		}
		if seq > head {
			return problem("validation-failed", param+" "+v+" is beyond the "+stream+" stream's last sequence "+strconv.FormatUint(head, 10))
		}
	}
	if !s.waitApplied(r.Context(), seq, names...) {
		return &problemError{code: "projection-lagging", detail: "the read model has not reached " + stream + " sequence " + v, retryAfter: time.Second}
	}
	return nil
}

func (s *Server) sessionFromEvents(ctx context.Context, sessionID string) (projections.SessionPrincipal, error) {
	if !events.ValidToken(sessionID) {
		return projections.SessionPrincipal{}, projections.ErrNotFound
	}
	sess, u, err := s.deps.Identity.Session(ctx, sessionID)
	if err != nil {
		return projections.SessionPrincipal{}, err
	}
	if !sess.Started || !u.Registered {
		return projections.SessionPrincipal{}, projections.ErrNotFound
	}
	return projections.SessionPrincipal{UserID: u.ID, Email: u.Email, Role: string(u.Role), Active: u.Active,
		Revoked: sess.Revoked || !sess.StartedAt.After(u.DeactivatedAt)}, nil
}
