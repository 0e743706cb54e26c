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
// authenticator). The token is compared through SHA-256 digests of equal
// length, so the comparison takes the same time whatever the sent token's
// length or content.
func (s *Server) acceptScrapeToken(next, authed http.Handler) http.Handler {
	if s.deps.MetricsToken == "" {
		return authed
	}
	want := sha256.Sum256([]byte(s.deps.MetricsToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || cred == "" || len(cred) > maxTokenLen {
			authed.ServeHTTP(w, r)
			return
		}
		got := sha256.Sum256([]byte(cred))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			authed.ServeHTTP(w, r)
			return
		}
		if who, ok := r.Context().Value(ctxLogPrincipal).(*string); ok {
			*who = "metrics-scraper"
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scraperKey{}, true)))
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
