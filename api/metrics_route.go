package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/maestro-ml/maestro/authz"
)

// GET /metrics serves the platform's Prometheus metrics (Deps.Metrics).
// It is an authenticated route like any other (deny by default): a
// Prometheus server scrapes it with the scrape token (Deps.MetricsToken,
// sent as Authorization: Bearer <token>), and an admin may read it with
// their own credential (a login session or an API token without a project
// scope or a role ceiling: authz.ReadProjSys, the admins' read of the
// platform's own state). Every other caller is refused: 401 without a
// valid credential, 403 with one that is not an admin's. A process without
// metrics (Deps.Metrics nil) answers 404 to the callers that may read them.

// scraperKey marks (in a request's context) a request authenticated by
// the scrape token.
type scraperKey struct{}

func (s *Server) metricsRoutes() []Route {
	return []Route{{Method: "GET", Pattern: "/metrics", ScrapeToken: true, handle: s.serveMetrics}}
}

// acceptScrapeToken serves a request that carries the scrape token with
// next, marked as the scraper's, and any other with authed (the ordinary
// authenticator).
func (s *Server) acceptScrapeToken(next, authed http.Handler) http.Handler {
	if s.deps.MetricsToken == "" {
		return authed
	}
	isScraper := scrapeTokenCheck(s.deps.MetricsToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isScraper(r) {
			authed.ServeHTTP(w, r)
			return
		}
		if who, ok := r.Context().Value(ctxLogPrincipal).(*string); ok {
			*who = "metrics-scraper"
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scraperKey{}, true)))
	})
}

// scrapeTokenCheck reports whether a request carries token as its bearer
// token. The token is compared through SHA-256 digests of equal length, so
// the comparison takes the same time whatever the sent token's length or
// content.
func scrapeTokenCheck(token string) func(r *http.Request) bool {
	want := sha256.Sum256([]byte(token))
	return func(r *http.Request) bool {
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || cred == "" || len(cred) > maxTokenLen {
			return false
		}
		got := sha256.Sum256([]byte(cred))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
}

// MetricsOnly is the handler of MAESTRO_METRICS_ADDR, the listener of a
// process without the API role (a worker, a runner): GET /metrics with the
// scrape token serves metrics, a request without it is 401, any other
// path 404. There are no users here to authenticate, so the scrape token is
// the only credential, and it must be set (token "" refuses everything).
func MetricsOnly(metrics http.Handler, token string) http.Handler {
	isScraper := scrapeTokenCheck(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/metrics":
			http.NotFound(w, r)
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		case token == "" || !isScraper(r):
			w.Header().Set("WWW-Authenticate", `Bearer realm="maestro-metrics"`)
			http.Error(w, "send the scrape token as Authorization: Bearer <token>", http.StatusUnauthorized)
		default:
			metrics.ServeHTTP(w, r)
		}
	})
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) error {
	if scraper, _ := r.Context().Value(scraperKey{}).(bool); !scraper {
		if _, err := s.requireAdmin(r, authz.ReadProjSys); err != nil {
			return problem("forbidden", "the metrics are for admins and the metrics scraper")
		}
	}
	if s.deps.Metrics == nil {
		return problem("not-found", "this process serves no metrics")
	}
	s.deps.Metrics.ServeHTTP(w, r)
	return nil
}
