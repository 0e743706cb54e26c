package runner

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus metrics of jobs: queue depth (read from the
// jobs read model at scrape time, so it never drifts), wait and run times
// and outcomes (observed by the job reactions from the events, once per
// process running them), runner slots and dropped log lines. A nil
// *Metrics observes nothing.
type Metrics struct {
	reg      *prometheus.Registry
	wait     prometheus.Histogram
	attempt  *prometheus.HistogramVec
	attempts *prometheus.CounterVec
	ended    *prometheus.CounterVec
	dropped  prometheus.Counter
}

// NewMetrics registers the job metrics on reg; counts, when set, reports
// the number of jobs in each state.
func NewMetrics(reg *prometheus.Registry, counts func(ctx context.Context) (map[string]int64, error)) *Metrics {
	// Training runs for minutes to hours: 1 s … ~9 h.
	long := prometheus.ExponentialBuckets(1, 2, 16)
	m := &Metrics{
		reg: reg,
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "maestro_job_wait_seconds",
			Help: "Time from a job being queued (or requeued) to an attempt starting.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 20)}),
		attempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "maestro_job_attempt_seconds",
			Help: "Run time of job attempts, by outcome.", Buckets: long}, []string{"outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maestro_job_attempts_total",
			Help: "Job attempts ended, by outcome (succeeded, failed, cancelled, timed_out, lost)."}, []string{"outcome"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "maestro_jobs_ended_total",
			Help: "Jobs ended, by final state."}, []string{"state"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "maestro_job_log_lines_dropped_total",
			Help: "Log lines of jobs dropped (over the per-job limit, or faster than they could be shipped)."}),
	}
	reg.MustRegister(m.wait, m.attempt, m.attempts, m.ended, m.dropped)
	if counts != nil {
		reg.MustRegister(jobCounts{desc: prometheus.NewDesc("maestro_jobs", "Jobs by state (queued is the queue depth).", []string{"state"}, nil), counts: counts})
	}
	return m
}

// jobCounts reads the number of jobs per state at scrape time.
type jobCounts struct {
	desc   *prometheus.Desc
	counts func(ctx context.Context) (map[string]int64, error)
}

func (c jobCounts) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c jobCounts) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.counts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, s := range []string{"queued", "running", "succeeded", "failed", "cancelled", "timed_out"} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[s]), s)
	}
}

func (m *Metrics) waited(d time.Duration) {
	if m != nil && d >= 0 {
		m.wait.Observe(d.Seconds())
	}
}

func (m *Metrics) attemptEnded(outcome string, d time.Duration) {
	if m != nil {
		m.attempts.WithLabelValues(outcome).Inc()
		if d >= 0 {
			m.attempt.WithLabelValues(outcome).Observe(d.Seconds())
		}
	}
}

func (m *Metrics) jobEnded(state string) {
	if m != nil {
		m.ended.WithLabelValues(state).Inc()
	}
}

func (m *Metrics) logDrops(n int64) {
	if m != nil && n > 0 {
		m.dropped.Add(float64(n))
	}
}

// slots registers a runner's slot gauges.
func (m *Metrics) slots(runnerID string, n int) {
	if m == nil {
		return
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "maestro_runner_slots", Help: "Slots of a runner (attempts it runs at once).",
		ConstLabels: prometheus.Labels{"runner": runnerID}})
	g.Set(float64(n))
	_ = m.reg.Register(g)
}

// busy registers a runner's busy-slot gauge.
func (m *Metrics) busy(runnerID string, f func() float64) {
	if m == nil {
		return
	}
	_ = m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "maestro_runner_slots_busy",
		Help: "Slots of a runner running an attempt now.", ConstLabels: prometheus.Labels{"runner": runnerID}}, f))
}
