package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The API's Prometheus metrics (docs/ARCHITECTURE.md "Metrics and
// health" lists them). Every label value comes from a bounded set: the
// route table's patterns (never a raw path), HTTP methods, status codes,
// outcome and scope names. No label carries a user, project, job or run id.

// httpMethods are the methods a request is labelled with as they are;
// anything else a client invents is "other" (an unmatched request's
// method is the client's string).
var httpMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

// apiMetrics are the collectors the API updates.
type apiMetrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	commands      *prometheus.CounterVec
	replays       prometheus.Counter
	loginFailures prometheus.Counter
	throttled     *prometheus.CounterVec
	artifactBytes *prometheus.CounterVec
}

// throttleScopes are the values of maestro_throttled_total's scope label.
var throttleScopes = []string{"login", "registration", "log_follows", "other"}

// newAPIMetrics registers the API's collectors with reg; a nil reg gets a
// private registry nobody serves (tests and processes without metrics).
func newAPIMetrics(reg prometheus.Registerer) *apiMetrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &apiMetrics{
		requests: registered(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "maestro_http_requests_total",
			Help: "HTTP requests answered, by route pattern (\"unmatched\" for none), method and status code.",
		}, []string{"route", "method", "code"})),
		duration: registered(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "maestro_http_request_duration_seconds",
			Help: "Time to answer an HTTP request, by route pattern and method; streamed responses (log follows) are left out.",
			// 1 ms to ~16 s: commands wait for projections (up to 2 s),
			// artifact transfers are the long tail.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"route", "method"})),
		commands: registered(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "maestro_commands_total",
			Help: "Commands run (Route.Command routes, idempotent replays excluded), by command (method and route pattern) and outcome.",
		}, []string{"command", "outcome"})),
		replays: registered(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "maestro_idempotency_replays_total",
			Help: "Commands answered from a stored outcome (a retry with the same Idempotency-Key).",
		})),
		loginFailures: registered(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "maestro_login_failures_total",
			Help: "Logins refused for a wrong e-mail or password.",
		})),
		throttled: registered(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "maestro_throttled_total",
			Help: "Requests refused with 429, by scope (login, registration, log_follows, other).",
		}, []string{"scope"})),
		artifactBytes: registered(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "maestro_artifact_bytes_total",
			Help: "Artifact bytes transferred: in (upload bodies read) and out (download bodies written).",
		}, []string{"direction"})),
	}
	// Series that exist from the start, so rate() and alerts see a zero
	// rather than nothing.
	for _, s := range throttleScopes {
		m.throttled.WithLabelValues(s)
	}
	m.artifactBytes.WithLabelValues("in")
	m.artifactBytes.WithLabelValues("out")
	return m
}

// registered registers c with reg, or returns the equal collector
// registered already (two servers on one registry share their counters).
func registered[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("api: register metrics: " + err.Error())
	}
	return c
}

// observeRequest counts one answered request. streamed responses (server-
// sent events, open for as long as the client follows) are counted but not
// timed: their duration is the client's patience, not the server's latency.
func (m *apiMetrics) observeRequest(route, method string, status int, took time.Duration, streamed bool) {
	if route == "" {
		route = "unmatched"
	}
	if !httpMethods[method] {
		method = "other"
	}
	if status == 0 {
		status = http.StatusOK // net/http's answer to a handler that wrote nothing
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	if !streamed {
		m.duration.WithLabelValues(route, method).Observe(took.Seconds())
	}
}

// observeOutcome records what a route's handler returned (err nil or its
// problem pe): the command outcome of a command route, a login failure,
// a throttle.
func (m *apiMetrics) observeOutcome(rt Route, pe *problemError) {
	if rt.Command {
		m.commands.WithLabelValues(rt.Method+" "+rt.Pattern, outcome(pe)).Inc()
	}
	if pe == nil {
		return
	}
	switch pe.code {
	case "invalid-credentials":
		m.loginFailures.Inc()
	case "too-many-attempts", "too-many-streams":
		m.throttled.WithLabelValues(throttleScope(rt, pe)).Inc()
	}
}

// outcome names a command's result by the status its problem maps to (the
// one mapping of typed errors to HTTP, toProblem and problemCatalog).
func outcome(pe *problemError) string {
	if pe == nil {
		return "ok"
	}
	switch problemCatalog[pe.code].Status {
	case 400, 413, 415, 416, 422:
		return "invalid"
	case 401:
		return "unauthenticated"
	case 403:
		return "forbidden"
	case 404:
		return "not_found"
	case 409, 412:
		return "conflict"
	case 429:
		return "throttled"
	case 503:
		return "unavailable"
	default:
		return "error"
	}
}

// throttleScope is which budget refused a request.
func throttleScope(rt Route, pe *problemError) string {
	switch {
	case pe.code == "too-many-streams":
		return "log_follows"
	case rt.Pattern == "/api/v1/auth/login":
		return "login"
	case rt.Pattern == "/api/v1/auth/register":
		return "registration"
	default:
		return "other"
	}
}

// addArtifactBytes counts n bytes of artifact content moving in or out.
func (m *apiMetrics) addArtifactBytes(direction string, n int64) {
	if n > 0 {
		m.artifactBytes.WithLabelValues(direction).Add(float64(n))
	}
}
