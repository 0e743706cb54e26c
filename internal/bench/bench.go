// Package bench is Maestro's load harness: it starts real components (a
// private Postgres, embedded NATS with JetStream, whole platforms) and
// measures the hot paths — appends with and without fsync, command to
// read-model visibility, projection rebuilds, the HTTP API, training jobs'
// dispatch — printing one markdown table (CONVENTIONS.md "Benchmarks",
// ARCHITECTURE.md rule 9).
// The cmd/maestro-bench program runs it; `make bench` runs that.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
)

// Scenarios are the measurement groups, in run order.
var Scenarios = []string{"serve", "tracking", "append", "visible", "http", "registry", "jobs", "rebuild", "audit", "artifacts", "webhooks"}

// Config sizes the run. The defaults finish in a few minutes on 2 cores.
type Config struct {
	Appends       int // sequential appends per setting (and per kind)
	Concurrency   int // concurrent writers in the throughput row
	Visible       int // append→visible round trips per setting
	RebuildEvents int // events in the stream for the rebuild
	FillWorkers   int // concurrent writers filling the stream
	HTTPClients   int
	HTTPLogins    int
	HTTPMe        int
	ArtifactMiB   int64    // size of the artifact uploaded and downloaded
	ArtifactS3    bool     // also through S3 (gofakes3 in this process)
	Only          []string // scenarios to run; empty = all
	WebhookEvents int      // events the webhooks scenario offers at 1,000/s
	// MaestroBin is the binary the serve scenario runs; empty builds
	// ./cmd/maestro of this module (pass an older build to compare).
	MaestroBin string
	// Phase is how long each load phase of the serve scenario runs.
	Phase time.Duration
	// ProfileDir, when set, receives the server's CPU and allocation
	// profiles of each serve phase (from its MAESTRO_DEBUG_ADDR listener).
	ProfileDir string
	Log        io.Writer
}

// DefaultConfig is what `make bench` runs.
func DefaultConfig() Config {
	return Config{Appends: 5000, Concurrency: 16, Visible: 1000, RebuildEvents: 100_000, FillWorkers: 8,
		HTTPClients: 8, HTTPLogins: 2000, HTTPMe: 10_000, ArtifactMiB: 1024, WebhookEvents: 20_000, Phase: 10 * time.Second, Log: os.Stderr}
}

type runner struct {
	cfg  Config
	env  *env
	rows []Row
	bin  string // the maestro binary of the serve scenarios, once built
}

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Log != nil {
		fmt.Fprintf(r.cfg.Log, "maestro-bench: "+format+"\n", args...)
	}
}

func (r *runner) add(row Row) { r.rows = append(r.rows, row) }

func (r *runner) want(s string) bool { return len(r.cfg.Only) == 0 || slices.Contains(r.cfg.Only, s) }

// Run executes the scenarios and writes the report (markdown) to out.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	for _, s := range cfg.Only {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(Scenarios, ", "))
		}
	}
	r := &runner{cfg: cfg}
	began := time.Now()
	loadBefore := loadAvg()
	hwm := memstat.ResetPeakRSS()

	var err error
	if r.env, err = newEnv(ctx, r.logf); err != nil {
		return err
	}
	defer r.env.close()

	step := func(name string, f func() error) error {
		if !r.want(name) {
			return nil
		}
		t := time.Now()
		r.logf("%s: running", name)
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		r.logf("%s: done in %s", name, time.Since(t).Round(time.Millisecond))
		return nil
	}
	runErr := func() error {
		// First, on a quiet machine: the goals of the command path.
		if err := step("serve", func() error { return r.benchServe(ctx) }); err != nil {
			return err
		}
		if err := step("tracking", func() error { return r.benchTracking(ctx) }); err != nil {
			return err
		}
		if err := step("append", func() error { return r.benchAppend(ctx) }); err != nil {
			return err
		}
		if r.want("visible") || r.want("http") {
			// Sync on serves the API too: it is the production default.
			var plats [2]*platform.Platform
			defer func() {
				stopPlatform(plats[1])
				stopPlatform(plats[0])
			}()
			if plats[0], err = r.env.startPlatform(ctx, true, true, true); err != nil {
				return err
			}
			if r.want("visible") {
				if plats[1], err = r.env.startPlatform(ctx, false, false, true); err != nil {
					return err
				}
			}
			if err := step("visible", func() error { return r.benchVisible(ctx, plats) }); err != nil {
				return err
			}
			if err := step("http", func() error { return r.benchHTTP(ctx, plats[0], true) }); err != nil {
				return err
			}
		}
		if err := step("registry", func() error { return r.benchRegistry(ctx) }); err != nil {
			return err
		}
		if err := step("jobs", func() error { return r.benchJobs(ctx) }); err != nil {
			return err
		}
		if err := step("rebuild", func() error { return r.benchRebuild(ctx) }); err != nil {
			return err
		}
		if err := step("audit", func() error { return r.benchAudit(ctx) }); err != nil {
			return err
		}
		if err := step("artifacts", func() error { return r.benchArtifacts(ctx) }); err != nil {
			return err
		}
		return step("webhooks", func() error { return r.benchWebhooks(ctx) })
	}()

	host, _ := os.Hostname()
	fmt.Fprintf(out, "## maestro-bench — %s\n\n", began.UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "%s, %d CPUs (GOMAXPROCS %d), %s %s/%s, host %s; load average before %s, after %s; wall %s.\n\n",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, host,
		loadBefore, loadAvg(), time.Since(began).Round(time.Second))
	WriteTable(out, r.rows)
	fmt.Fprintln(out)
	fmt.Fprintln(out, "p50/p95/p99 are per op (nearest rank). Sequential rows: throughput = n / sum of latencies; concurrent rows: n / wall.")
	fmt.Fprintln(out, "allocs/op and bytes/op are process-wide (runtime.MemStats), so they include the in-process NATS server and, for platform rows, runners and pgx.")
	if hwm {
		fmt.Fprintln(out, "peak RSS is VmHWM, reset (clear_refs 5) at the start of each scenario.")
	} else {
		fmt.Fprintln(out, "peak RSS is VmHWM since process start (clear_refs unavailable).")
	}
	fmt.Fprintln(out, "fsync on/off = embedded nats-server SyncAlways (rule 9); Postgres runs with its defaults (fsync, synchronous_commit on).")
	return runErr
}
