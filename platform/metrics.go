package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/projections"
)

// The platform's own Prometheus metrics, besides the API's (api/metrics.go)
// and the runner's (runner.NewMetrics); docs/ARCHITECTURE.md "Metrics and
// health" lists them all.

// scrapeTimeout bounds the Postgres and NATS reads a scrape or a readiness
// probe makes: a scrape while Postgres is down answers at once, without the
// series that need it, instead of timing out whole.
const scrapeTimeout = 2 * time.Second

// registerMetrics registers the event store's, the command retries' and
// the projections' collectors with p.metrics, and has the event store
// report its appends. It runs before anything appends (ObserveAppends is
// not synchronised).
func (p *Platform) registerMetrics() {
	appendSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "maestro_event_append_duration_seconds",
		Help: "Time to append a command's events to MAESTRO_EVENTS (one publish or one atomic batch), conflicts and failures included.",
		// 0.25 ms to ~0.5 s: an fsync'ed append on the embedded server is
		// about a millisecond; a replicated one a few.
		Buckets: prometheus.ExponentialBuckets(0.00025, 2, 12),
	})
	conflicts := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "maestro_event_append_conflicts_total",
		Help: "Appends refused because the aggregate changed since it was read (expected version did not hold).",
	})
	p.Store.ObserveAppends(func(took time.Duration, err error) {
		appendSeconds.Observe(took.Seconds())
		if errors.Is(err, events.ErrConflict) {
			conflicts.Inc()
		}
	})
	retries := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "maestro_command_retries_total",
		Help: "Command attempts run again after a conflict (reload, decide, append), in this process.",
	}, func() float64 { return float64(handlers.Retries()) })
	p.metrics.MustRegister(appendSeconds, conflicts, retries, &projectionCollector{p: p,
		lag: prometheus.NewDesc("maestro_projection_lag_events",
			"Events a projection's checkpoint is behind the head of the stream it follows.", []string{"projection", "stream"}, nil),
		quarantined: prometheus.NewDesc("maestro_projection_quarantined_events",
			"Events a projection skipped because it cannot store them (see GET /api/v1/projections).", []string{"projection"}, nil),
	})
}

// projectionCollector reads every projection's checkpoint and quarantine
// count at scrape time (projections.Statuses), bounded by scrapeTimeout.
// When NATS or Postgres does not answer it reports an invalid metric: the
// handler (promhttp.ContinueOnError) still serves every other series.
type projectionCollector struct {
	p                *Platform
	lag, quarantined *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *projectionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.quarantined
}

// Collect implements prometheus.Collector.
func (c *projectionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	sts, err := c.p.projectionStatuses(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.lag, err)
		return
	}
	for _, s := range sts {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(s.Lag), s.Name, s.Stream)
		ch <- prometheus.MustNewConstMetric(c.quarantined, prometheus.GaugeValue, float64(s.Quarantined), s.Name)
	}
}

// projectionStatuses is every projection's status against the streams'
// current heads.
func (p *Platform) projectionStatuses(ctx context.Context) ([]projections.Status, error) {
	heads, err := p.Heads(ctx)
	if err != nil {
		return nil, fmt.Errorf("projection status: stream heads: %w", err)
	}
	sts, err := p.Queries.Statuses(ctx, heads)
	if err != nil {
		return nil, fmt.Errorf("projection status: %w", err)
	}
	return sts, nil
}

// readyChecks are the dependencies GET /readyz probes (api.ReadyCheck).
// Each answers a status only, never the error: the route is public.
func (p *Platform) readyChecks() []api.ReadyCheck {
	watch := newLagWatch(time.Now)
	checks := []api.ReadyCheck{
		{Name: "postgres", Probe: func(ctx context.Context) api.CheckResult {
			return okUnless(p.Pool.Ping(ctx))
		}},
		{Name: "nats", Probe: func(ctx context.Context) api.CheckResult {
			// Connected, and the event stream answers (a JetStream whose
			// meta leader is gone leaves the connection up).
			if !p.nc.IsConnected() {
				return api.CheckResult{Status: "unreachable"}
			}
			_, err := p.Store.LastSequence(ctx)
			return okUnless(err)
		}},
		{Name: "projections", Probe: func(ctx context.Context) api.CheckResult {
			sts, err := p.projectionStatuses(ctx)
			if err != nil {
				// Postgres or NATS is down, and its own check says so.
				return api.CheckResult{Status: "unreachable"}
			}
			return watch.judge(sts)
		}},
	}
	if p.Blobs != nil {
		checks = append(checks, api.ReadyCheck{Name: "artifacts", Probe: func(ctx context.Context) api.CheckResult {
			return okUnless(probeBlobs(ctx, p.Blobs))
		}})
	}
	return checks
}

// errProbed stops probeBlobs' walk at the first blob.
var errProbed = errors.New("probed")

// probeBlobs checks the artifact store answers a listing: the filesystem
// store's blob directory is there and readable, the S3 bucket lists. It
// stops at the first blob: one LIST request, or a few directory reads (up
// to the 256 fan-out directories of an empty filesystem store); /readyz
// runs it at most once a second.
func probeBlobs(ctx context.Context, s artifacts.Store) error {
	err := s.Walk(ctx, func(artifacts.Digest, int64, time.Time) error { return errProbed })
	if errors.Is(err, errProbed) {
		return nil
	}
	return err
}

func okUnless(err error) api.CheckResult {
	if err != nil {
		return api.CheckResult{Status: "unreachable"}
	}
	return api.CheckResult{Status: "ok"}
}

// The readiness rule for projections: a projection more than readyMaxLag
// events behind its stream whose checkpoint has not moved for
// readyStuckFor is "stuck" (its reads are stale; alert on it); far behind
// but moving (a rebuild, a burst) or with quarantined events is
// "degraded". Both still answer 200: a projection behind is behind for
// every API instance, and taking them all out of the load balancer would
// turn stale reads into an outage of writes too.
const (
	readyMaxLag   = 10_000
	readyStuckFor = time.Minute
)

// lagWatch remembers, per projection, the checkpoint it last saw far
// behind and since when, so "not moving" is judged on this process's own
// clock (never the database's).
type lagWatch struct {
	now  func() time.Time
	mu   sync.Mutex
	seen map[string]lagSeen
}

type lagSeen struct {
	seq   uint64
	since time.Time
}

func newLagWatch(now func() time.Time) *lagWatch {
	return &lagWatch{now: now, seen: map[string]lagSeen{}}
}

// judge is the projections check's result for the statuses read now.
func (w *lagWatch) judge(sts []projections.Status) api.CheckResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	res := api.CheckResult{Status: "ok", Lag: map[string]uint64{}}
	for _, s := range sts {
		res.Lag[s.Name] = s.Lag
		if s.Quarantined > 0 {
			if res.Quarantined == nil {
				res.Quarantined = map[string]int64{}
			}
			res.Quarantined[s.Name] = s.Quarantined
		}
		// The clock starts when a projection is found far behind at a
		// checkpoint: one idle for hours before a burst is not stuck.
		seen, ok := w.seen[s.Name]
		if !ok || seen.seq != s.LastSeq || s.Lag <= readyMaxLag {
			seen = lagSeen{seq: s.LastSeq, since: now}
			w.seen[s.Name] = seen
		}
		switch {
		case s.Lag > readyMaxLag && now.Sub(seen.since) >= readyStuckFor:
			res.Status = "stuck"
		case (s.Lag > readyMaxLag || s.Quarantined > 0) && res.Status == "ok":
			res.Status = "degraded"
		}
	}
	return res
}

// serveMetricsAddr opens MAESTRO_METRICS_ADDR, where a worker or a runner
// serves its metrics (api.MetricsOnly). Deny by default: without a scrape
// token the listener is refused, not opened to everyone. A process with
// the API role serves /metrics on the API already.
func (p *Platform) serveMetricsAddr() error {
	if p.cfg.MetricsAddr == "" {
		return nil
	}
	if p.cfg.API {
		return errors.New("MAESTRO_METRICS_ADDR is for processes without the API role (worker, runner): the API serves /metrics itself")
	}
	if p.cfg.MetricsToken == "" {
		return errors.New("MAESTRO_METRICS_ADDR needs MAESTRO_METRICS_TOKEN: the listener serves the scrape token only")
	}
	ln, err := net.Listen("tcp", p.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (MAESTRO_METRICS_ADDR): %w", p.cfg.MetricsAddr, err)
	}
	p.metricsListener = ln
	p.metricsSrv = &http.Server{
		Handler:           api.MetricsOnly(p.metricsHandler(), p.cfg.MetricsToken),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	p.goRun(func() {
		if err := p.metricsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("metrics server", "err", err)
		}
	})
	return nil
}

// MetricsURL is the base URL of the MAESTRO_METRICS_ADDR listener ("" when off).
func (p *Platform) MetricsURL() string {
	if p.metricsListener == nil {
		return ""
	}
	return "http://" + p.metricsListener.Addr().String()
}
