package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
	// aliased: runner is this package's scenario runner
	jobrunner "github.com/maestro-ml/maestro/runner"
)

// Sizes of the jobs scenario (issue 9). All jobs run `true`, so every
// number is the platform's cost of a job, not the program's.
const (
	jobsSlots      = 4   // the runner's slots (the default)
	jobsBurst      = 100 // no-op jobs queued before a runner starts
	jobsClients    = 8   // concurrent submitters of those jobs
	jobsSequential = 50  // no-op jobs one after another on an idle runner
	jobsExecRuns   = 200 // runs of each baseline: exec by hand, the executor alone
	jobsExecWarm   = 10  // unmeasured runs before each baseline
	// jobsSettle is the pause after a sequential job has ended before the
	// next is submitted: the reactions to its end (run finished, token
	// revoked) are then done, so the runner and the worker are idle.
	jobsSettle = 100 * time.Millisecond
	// jobsWait bounds the wait for any one job to end.
	jobsWait = 2 * time.Minute
)

// jobsCommand is the no-op job (found on the runner's PATH).
var jobsCommand = []string{"true"}

// benchJob is the part of GET .../jobs/{id} the scenario reads. The times
// are the events' (the server's clock): submitted_at is the submission's,
// an attempt's started_at its claim (before the program is started) and
// ended_at the recorded end (after its log was kept as a run artifact).
type benchJob struct {
	ID          string     `json:"id"`
	State       string     `json:"state"`
	Reason      string     `json:"reason"`
	SubmittedAt time.Time  `json:"submitted_at"`
	EndedAt     *time.Time `json:"ended_at"`
	Attempts    []struct {
		Number    int       `json:"number"`
		StartedAt time.Time `json:"started_at"`
	} `json:"attempts"`
}

func (j benchJob) ended() bool { return j.State != events.JobQueued && j.State != events.JobRunning }

// started is when attempt 1 was claimed (false if it never was).
func (j benchJob) started() (time.Time, bool) {
	for _, a := range j.Attempts {
		if a.Number == 1 {
			return a.StartedAt, true
		}
	}
	return time.Time{}, false
}

// from is when a job could first be started: its submission, or since
// (when a runner first existed) if that is later.
func (j benchJob) from(since time.Time) time.Time {
	if since.After(j.SubmittedAt) {
		return since
	}
	return j.SubmittedAt
}

// queueToStart is from(since) → the claim of attempt 1 (0 if none started).
func (j benchJob) queueToStart(since time.Time) time.Duration {
	if at, ok := j.started(); ok {
		return at.Sub(j.from(since))
	}
	return 0
}

// endToEnd is from(since) → the job's recorded end (0 if it has not ended).
func (j benchJob) endToEnd(since time.Time) time.Duration {
	if j.EndedAt == nil {
		return 0
	}
	return j.EndedAt.Sub(j.from(since))
}

// jobsSummary is what a set of ended jobs says, counted from since (the
// zero time: from each job's submission): each job's queue → start and
// → end, and the span from the first submission (or since, if later) to
// the last end.
type jobsSummary struct {
	queue, total Samples
	span         time.Duration
}

func summarize(jobs []benchJob, since time.Time) jobsSummary {
	var s jobsSummary
	var first, last time.Time
	for _, j := range jobs {
		s.queue.Add(j.queueToStart(since))
		s.total.Add(j.endToEnd(since))
		if at := j.from(since); first.IsZero() || at.Before(first) {
			first = at
		}
		if j.EndedAt != nil && j.EndedAt.After(last) {
			last = *j.EndedAt
		}
	}
	if !first.IsZero() && last.After(first) {
		s.span = last.Sub(first)
	}
	return s
}

// mean of the samples (0 when empty).
func mean(s *Samples) time.Duration {
	if s.Len() == 0 {
		return 0
	}
	return s.Sum() / time.Duration(s.Len())
}

// jobsBench is a member who owns a project on one of the jobs scenario's
// platforms.
type jobsBench struct {
	r    *runner
	c    *regClient
	jobs string // the project's jobs path
}

// benchJobs measures training jobs of no-op programs: the per-job cost of
// running a process by hand and through the local executor alone (before
// any platform starts, on a quiet process); then, on a platform with no
// runner, jobsBurst jobs submitted and all queued before a runner of
// jobsSlots slots starts, the queue → start latency and the time the
// runner takes to drain them; then, on a platform with its own runner,
// dispatch latency and end-to-end time of jobsSequential jobs submitted
// one at a time to an idle runner.
func (r *runner) benchJobs(ctx context.Context) error {
	direct, err := jobsExecBaseline(ctx)
	if err != nil {
		return err
	}
	executor, err := r.jobsExecutorBaseline(ctx)
	if err != nil {
		return err
	}
	if err := r.jobsQueued(ctx); err != nil {
		return err
	}
	return r.jobsIdle(ctx, direct, executor)
}

// newJobsBench registers a member on p and creates the project the jobs
// go to.
func (r *runner) newJobsBench(ctx context.Context, p *platform.Platform) (*jobsBench, error) {
	c, _, err := registryUser(ctx, p, jobsClients, "jobs-bench@example.com")
	if err != nil {
		return nil, err
	}
	var proj struct {
		Slug string `json:"slug"`
	}
	if err := c.must(ctx, 201, "POST", "/api/v1/projects", map[string]any{"name": "Jobs Bench"}, &proj); err != nil {
		c.hc.CloseIdleConnections()
		return nil, err
	}
	return &jobsBench{r: r, c: c, jobs: "/api/v1/projects/" + proj.Slug + "/jobs"}, nil
}

// jobsQueued is the queue → start and drain measurement: the platform
// (API and worker) runs no runner and lets other processes reach its
// NATS; jobsBurst jobs are submitted and each read back queued; then a
// runner-only platform starts in this process on the first one's NATS,
// Postgres and artifact directory (as a runner process of a scaled-out
// deployment does), and every latency counts from the moment it exists.
func (r *runner) jobsQueued(ctx context.Context) error {
	var cfg platform.Config
	p, err := r.env.startPlatform(ctx, true, true, true, func(c *platform.Config) {
		c.Runner = false
		c.NATSListen = "127.0.0.1:0"
		c.Jobs.Slots = jobsSlots
	}, func(c *platform.Config) { cfg = *c })
	if err != nil {
		return err
	}
	defer stopPlatform(p)
	b, err := r.newJobsBench(ctx, p)
	if err != nil {
		return err
	}
	defer b.c.hc.CloseIdleConnections()
	// One unmeasured job, cancelled while queued, creates the experiment
	// the others name (and warms the submission path).
	if err := b.warmCancelled(ctx); err != nil {
		return err
	}

	memstat.ResetPeakRSS()
	ids, err := b.burst(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := b.awaitQueued(ctx, id); err != nil {
			return err
		}
	}

	rcfg, err := r.runnerOnly(p, cfg)
	if err != nil {
		return err
	}
	var meter allocMeter
	meter.start()
	called := time.Now()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	rp, err := platform.Start(sctx, rcfg)
	cancel()
	if err != nil {
		return fmt.Errorf("runner-only platform: %w", err)
	}
	t0 := time.Now()
	defer stopPlatform(rp) // before p (deferred earlier)
	jobs := make([]benchJob, len(ids))
	for i, id := range ids {
		// Polled in submission order: while one is awaited the rest run.
		if jobs[i], err = b.await(ctx, id, 50*time.Millisecond); err != nil {
			return err
		}
	}
	meter.stop(len(ids))
	rss := memstat.PeakRSS()
	early := 0
	for _, j := range jobs {
		at, _ := j.started()
		if at.Before(called) {
			return fmt.Errorf("job %s started at %s, before the runner was started (%s): the queue was not %d deep", j.ID, at, called, jobsBurst)
		}
		if at.Before(t0) {
			early++
		}
	}
	s := summarize(jobs, t0)
	note := fmt.Sprintf("max %s; attempt 1 started_at − max(submitted_at, t0), t0 = the runner-only platform's Start returned (it took %s); all %d read back queued before it started, so this is mostly waiting behind the jobs ahead",
		fmtDur(s.queue.Quantile(1)), fmtDur(t0.Sub(called)), jobsBurst)
	if early > 0 {
		note += fmt.Sprintf("; %d claimed while Start was returning (negative, counted as is)", early)
	}
	b.r.add(Row{Name: fmt.Sprintf("jobs queue→start (%d queued, %d slots)", jobsBurst, jobsSlots), Fsync: "on", N: jobsBurst, Total: s.span,
		Lat: &s.queue, Allocs: -1, Bytes: -1, PeakRSS: rss, Note: note})
	al, by := meter.perOp()
	b.r.add(Row{Name: fmt.Sprintf("jobs drain of %d queued (1 runner, %d slots)", jobsBurst, jobsSlots), Fsync: "on", N: jobsBurst, Total: s.span,
		Lat: &s.total, Rate: float64(jobsBurst) / s.span.Seconds(), Unit: "jobs/s", Allocs: al, Bytes: by, PeakRSS: rss,
		Note: fmt.Sprintf("wall = last ended_at − t0, throughput = %d / wall; latencies are each job's t0 → ended_at (max %s); runner-only platform in this process on the API's NATS (TCP), Postgres and artifact dir; allocs over runner start + run + polling every 50 ms",
			jobsBurst, fmtDur(s.total.Quantile(1)))})
	return nil
}

// runnerOnly is the configuration of a platform that is only a runner of
// jobsSlots slots, on the NATS, Postgres and artifact directory of p
// (started with cfg, listening for NATS clients), as platform's tests
// build it.
func (r *runner) runnerOnly(p *platform.Platform, cfg platform.Config) (platform.Config, error) {
	pw, err := os.ReadFile(filepath.Join(cfg.DataDir, "nats.password"))
	if err != nil {
		return platform.Config{}, err
	}
	dir, err := r.env.tempDir("runner-")
	if err != nil {
		return platform.Config{}, err
	}
	rc := platform.DefaultConfig()
	rc.DataDir = dir
	rc.HTTPAddr = "127.0.0.1:0"
	rc.NATSListen = ""
	rc.Argon2 = fastArgon2
	rc.DatabaseURL = cfg.DatabaseURL
	rc.NATSURL, rc.NATSUser, rc.NATSPassword, rc.NATSReplicas = p.NATSClientURL(), "maestro", strings.TrimSpace(string(pw)), 1
	rc.ArtifactDir = filepath.Join(cfg.DataDir, "artifacts")
	rc.API, rc.Worker, rc.Runner = false, false, true
	rc.Jobs = cfg.Jobs
	rc.Jobs.Slots = jobsSlots
	rc.Jobs.RunnerID, rc.Jobs.PublicURL = "bench-runner", p.URL()
	return rc, nil
}

// jobsIdle is the idle-runner measurement, on a platform with its own
// runner of jobsSlots slots (API, worker and runner in this process, as
// `maestro serve` runs them).
func (r *runner) jobsIdle(ctx context.Context, direct, executor *Samples) error {
	p, err := r.env.startPlatform(ctx, true, true, true, func(c *platform.Config) {
		c.Runner = true
		c.Jobs.Slots = jobsSlots
	})
	if err != nil {
		return err
	}
	defer stopPlatform(p)
	b, err := r.newJobsBench(ctx, p)
	if err != nil {
		return err
	}
	defer b.c.hc.CloseIdleConnections()
	// One unmeasured job creates the experiment the others name and runs
	// the runner's first attempt (its first exec, log stream, lease).
	if id, _, err := b.submit(ctx); err != nil {
		return err
	} else if _, err := b.await(ctx, id, 50*time.Millisecond); err != nil {
		return err
	}
	return b.sequential(ctx, direct, executor)
}

// submit queues a no-op job and returns its id and the answer's status
// (201, or 202 when the read-your-writes wait ran out: it is queued).
func (b *jobsBench) submit(ctx context.Context) (string, int, error) {
	var out struct {
		Job struct {
			ID string `json:"id"`
		} `json:"job"`
	}
	code, body, err := b.c.do(ctx, "POST", b.jobs, map[string]any{"experiment": "bench", "command": jobsCommand, "timeout": "60s"})
	if err != nil {
		return "", code, err
	}
	if code != http.StatusCreated && code != http.StatusAccepted {
		return "", code, fmt.Errorf("POST %s: %d %.300s", b.jobs, code, body)
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Job.ID == "" {
		return "", code, fmt.Errorf("POST %s: no job id in %.300s", b.jobs, body)
	}
	return out.Job.ID, code, nil
}

// await polls GET .../jobs/{id} every poll until the job has ended, and
// fails unless it succeeded in one attempt (a no-op job that did not has
// measured something else). A 404 is a job a 202 answered for that the
// projection has not reached yet.
func (b *jobsBench) await(ctx context.Context, id string, poll time.Duration) (benchJob, error) {
	deadline := time.Now().Add(jobsWait)
	for {
		code, body, err := b.c.do(ctx, "GET", b.jobs+"/"+id, nil)
		if err != nil {
			return benchJob{}, err
		}
		var j benchJob
		switch code {
		case http.StatusOK:
			if err := json.Unmarshal(body, &j); err != nil {
				return benchJob{}, fmt.Errorf("GET job %s: %w", id, err)
			}
			if j.ended() {
				if j.State != events.JobSucceeded || len(j.Attempts) != 1 {
					return j, fmt.Errorf("job %s ended %s (%s) after %d attempts, want succeeded in one", id, j.State, j.Reason, len(j.Attempts))
				}
				return j, nil
			}
		case http.StatusNotFound:
		default:
			return benchJob{}, fmt.Errorf("GET job %s: %d %.300s", id, code, body)
		}
		if time.Now().After(deadline) {
			return j, fmt.Errorf("job %s: not ended after %s (state %q): %w", id, jobsWait, j.State, errTimeout)
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// burst submits jobsBurst jobs from jobsClients clients as fast as they
// are answered (no runner takes them) and reports the POSTs; it returns
// the jobs' ids.
func (b *jobsBench) burst(ctx context.Context) ([]string, error) {
	ids := make([]string, jobsBurst)
	var next atomic.Int64
	var accepted atomic.Int64
	post, wall, bad, err := load(ctx, jobsClients, jobsBurst, func(int) (int, error) {
		id, code, err := b.submit(ctx)
		if err != nil {
			return code, err
		}
		ids[next.Add(1)-1] = id
		if code == http.StatusAccepted {
			accepted.Add(1)
		}
		return http.StatusOK, nil
	})
	if err != nil {
		return nil, err
	}
	if bad > 0 {
		return nil, fmt.Errorf("POST %s: %d of %d submissions failed", b.jobs, bad, jobsBurst)
	}
	al, by := post.alloc.perOp()
	note := "201 once the job and its run are readable; no runner yet, so allocs = client + server + worker"
	if n := accepted.Load(); n > 0 {
		note += fmt.Sprintf("; %d answered 202 (the read-your-writes wait ran out)", n)
	}
	b.r.add(Row{Name: fmt.Sprintf("jobs HTTP POST .../jobs, %d clients (burst of %d)", jobsClients, jobsBurst), Fsync: "on", N: jobsBurst, Total: wall,
		Lat: &post.s, Rate: float64(jobsBurst) / wall.Seconds(), Unit: "req/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(), Note: note})
	return ids, nil
}

// warmCancelled submits one job and cancels it while it is queued.
func (b *jobsBench) warmCancelled(ctx context.Context) error {
	id, _, err := b.submit(ctx)
	if err != nil {
		return err
	}
	if err := b.awaitQueued(ctx, id); err != nil {
		return err
	}
	code, body, err := b.c.do(ctx, "POST", b.jobs+"/"+id+":cancel", nil)
	if err != nil {
		return err
	}
	var j benchJob
	if code != http.StatusOK && code != http.StatusAccepted {
		return fmt.Errorf("cancel job %s: %d %.300s", id, code, body)
	}
	if err := json.Unmarshal(body, &j); err != nil {
		return fmt.Errorf("cancel job %s: %w", id, err)
	}
	if j.State != events.JobCancelled {
		return fmt.Errorf("job %s: %s after cancel while queued, want %s", id, j.State, events.JobCancelled)
	}
	return nil
}

// awaitQueued polls GET .../jobs/{id} until the job is readable (a 202
// answered for it before the projection had it) and fails unless it is
// queued.
func (b *jobsBench) awaitQueued(ctx context.Context, id string) error {
	deadline := time.Now().Add(jobsWait)
	for {
		code, body, err := b.c.do(ctx, "GET", b.jobs+"/"+id, nil)
		if err != nil {
			return err
		}
		switch code {
		case http.StatusOK:
			var j benchJob
			if err := json.Unmarshal(body, &j); err != nil {
				return fmt.Errorf("GET job %s: %w", id, err)
			}
			if j.State != events.JobQueued {
				return fmt.Errorf("job %s is %s, want %s (no runner has started)", id, j.State, events.JobQueued)
			}
			return nil
		case http.StatusNotFound:
		default:
			return fmt.Errorf("GET job %s: %d %.300s", id, code, body)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %s: not readable after %s: %w", id, jobsWait, errTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sequential submits jobsSequential jobs one at a time, each once the one
// before has ended (and jobsSettle has passed), and reports dispatch
// latency on an idle runner and the end-to-end time against the two
// baselines measured before the platform started.
func (b *jobsBench) sequential(ctx context.Context, direct, executor *Samples) error {
	memstat.ResetPeakRSS()
	jobs := make([]benchJob, 0, jobsSequential)
	for range jobsSequential {
		id, _, err := b.submit(ctx)
		if err != nil {
			return err
		}
		// A tight poll: it only delays the next submission, not the
		// measured (server) times.
		j, err := b.await(ctx, id, 10*time.Millisecond)
		if err != nil {
			return err
		}
		jobs = append(jobs, j)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jobsSettle):
		}
	}
	rss := memstat.PeakRSS()
	s := summarize(jobs, time.Time{})
	b.r.add(Row{Name: "jobs dispatch latency (idle runner)", Fsync: "on", N: jobsSequential, Total: s.queue.Sum(), Lat: &s.queue,
		Allocs: -1, Bytes: -1, PeakRSS: rss,
		Note: fmt.Sprintf("max %s; attempt 1 started_at − submitted_at, each job submitted %s after the one before ended", fmtDur(s.queue.Quantile(1)), jobsSettle)})

	a, bb, c := mean(direct), mean(executor), mean(&s.total)
	b.r.add(Row{Name: "jobs overhead vs exec: (a) exec.Command(\"true\").Run()", N: direct.Len(), Total: direct.Sum(), Lat: direct,
		Rate: float64(direct.Len()) / direct.Sum().Seconds(), Unit: "runs/s", Allocs: -1, Bytes: -1,
		Note: fmt.Sprintf("mean %s; by hand, in this process before the platform started", fmtDur(a))})
	b.r.add(Row{Name: "jobs overhead vs exec: (b) runner.Local Start + Wait of true", N: executor.Len(), Total: executor.Sum(), Lat: executor,
		Rate: float64(executor.Len()) / executor.Sum().Seconds(), Unit: "runs/s", Allocs: -1, Bytes: -1,
		Note: fmt.Sprintf("mean %s; b − a = %s; the executor alone (fresh work dir, process group, output pipes, no-op sink)", fmtDur(bb), fmtSigned(bb-a))})
	b.r.add(Row{Name: "jobs overhead vs exec: (c) platform job, submitted → ended (idle runner)", Fsync: "on", N: jobsSequential, Total: s.total.Sum(),
		Lat: &s.total, Allocs: -1, Bytes: -1, PeakRSS: rss,
		Note: fmt.Sprintf("mean %s; c − a = %s; the sequential jobs above: claim, lease, token, exec, log kept as a run artifact, end recorded "+
			"(no rate: the reactions to each end run after ended_at; see the drain row)", fmtDur(c), fmtSigned(c-a))})
	return nil
}

// jobsExecBaseline is (a): running `true` by hand, jobsExecRuns times.
func jobsExecBaseline(ctx context.Context) (*Samples, error) {
	return timeRuns(ctx, func() error { return exec.Command(jobsCommand[0], jobsCommand[1:]...).Run() })
}

// jobsExecutorBaseline is (b): the local executor alone starting `true`
// and waiting for it, as the runner does but with no platform around it.
func (r *runner) jobsExecutorBaseline(ctx context.Context) (*Samples, error) {
	dir, err := r.env.tempDir("jobs-executor-")
	if err != nil {
		return nil, err
	}
	local := jobrunner.NewLocal(jobrunner.LocalConfig{WorkDir: dir})
	n := 0
	return timeRuns(ctx, func() error {
		n++
		h, err := local.Start(ctx, jobrunner.Spec{JobID: "bench", Attempt: n, Command: jobsCommand}, func(jobrunner.Line) {})
		if err != nil {
			return err
		}
		if res := h.Wait(); res.Err != nil || res.ExitCode != 0 {
			return fmt.Errorf("executor: true ended with exit code %d: %v", res.ExitCode, res.Err)
		}
		return nil
	})
}

// timeRuns times jobsExecRuns calls of run after jobsExecWarm unmeasured ones.
func timeRuns(ctx context.Context, run func() error) (*Samples, error) {
	var s Samples
	for i := range jobsExecWarm + jobsExecRuns {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := run(); err != nil {
			return nil, err
		}
		if i >= jobsExecWarm {
			s.Add(time.Since(t0))
		}
	}
	return &s, nil
}

// fmtSigned is fmtDur with a sign (an overhead may come out negative).
func fmtSigned(d time.Duration) string {
	if d < 0 {
		return "−" + fmtDur(-d)
	}
	return "+" + fmtDur(d)
}
