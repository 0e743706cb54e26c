package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/flows"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// Config configures a runner.
type Config struct {
	// ID names the runner in claims (default: host name and a random suffix).
	ID string
	// Slots is how many attempts it runs at once (default 4).
	Slots int
	// Executor runs attempts (default: Local).
	Executor Executor
	// Lease is how long a claim holds without a heartbeat (default 15s);
	// heartbeats come every Lease/3.
	Lease time.Duration
	// Grace is the time between SIGTERM and SIGKILL (default 10s).
	Grace time.Duration
	// TrackingURL is the base URL of Maestro's API as the job's program
	// reaches it: MLFLOW_TRACKING_URI is TrackingURL/mlflow/<project id>.
	TrackingURL string
	// LogLimit bounds the log bytes kept of one attempt (default 10 MiB).
	LogLimit int64
	// WorkDir holds attempts' directories (default: the OS temp dir).
	WorkDir string
	// Secrets resolves secret://NAME env values (default: none resolve).
	Secrets Secrets
	Logger  *slog.Logger
	Now     func() time.Time
}

// Secrets resolves the secret NAME a job of project projectID names
// with secret://NAME.
type Secrets func(projectID, name string) (string, bool)

// DirSecrets resolves secret://NAME from the file dir/<project id>/NAME:
// secrets stay on the machines that run jobs, never enter the event
// stream, and a project's jobs reach only that project's secrets.
func DirSecrets(dir string) Secrets {
	return func(projectID, name string) (string, bool) {
		if dir == "" || !events.ValidToken(projectID) || name == "." || name == ".." || strings.ContainsAny(name, "/\\") {
			return "", false
		}
		b, err := os.ReadFile(filepath.Join(dir, projectID, name))
		if err != nil {
			return "", false
		}
		return strings.TrimRight(string(b), "\r\n"), true
	}
}

// Deps are the services a runner acts through.
type Deps struct {
	Jobs     *jobs.Service
	Identity *identity.Service
	Tracking *tracking.Service
	Blobs    artifacts.Store
	// Leases is the KV bucket heartbeats renew (OpenLeases).
	Leases jetstream.KeyValue
	// Logs is the JetStream the log stream is on.
	Logs    jetstream.JetStream
	Metrics *Metrics
	// Runners is the bucket the runner announces itself in (OpenRunners);
	// nil: it does not.
	Runners jetstream.KeyValue
}

// Runner claims queued jobs and runs their attempts.
type Runner struct {
	cfg   Config
	deps  Deps
	slots chan struct{}
	log   *slog.Logger

	mu      sync.Mutex
	running map[string]*attempt // by LeaseKey: job and attempt
	closed  bool                // no attempt starts any more
	wg      sync.WaitGroup
	ctx     context.Context // ends when the runner shuts down
	stop    context.CancelFunc
}

// New builds a runner.
func New(cfg Config, deps Deps) *Runner {
	if cfg.ID == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		cfg.ID = fmt.Sprintf("%s-%s", host, hex.EncodeToString(b))
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 4
	}
	if cfg.Executor == nil {
		cfg.Executor = NewLocal(LocalConfig{WorkDir: cfg.WorkDir})
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 15 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.LogLimit <= 0 {
		cfg.LogLimit = 10 << 20
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = os.TempDir()
	}
	if cfg.Secrets == nil {
		cfg.Secrets = func(string, string) (string, bool) { return "", false }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &Runner{cfg: cfg, deps: deps, slots: make(chan struct{}, cfg.Slots), log: cfg.Logger.With("runner", cfg.ID),
		running: map[string]*attempt{}, ctx: ctx, stop: stop}
	deps.Metrics.slots(cfg.ID, cfg.Slots)
	deps.Metrics.busy(cfg.ID, func() float64 { return float64(len(r.slots)) })
	return r
}

// ID is the runner's id.
func (r *Runner) ID() string { return r.cfg.ID }

// Register adds the runner's dispatch reaction to router: every runner
// shares one durable consumer of job events and claims the queued job an
// event announces when it has a free slot.
func (r *Runner) Register(router *flows.Router) error {
	if r.deps.Runners != nil {
		r.wg.Go(func() { r.announce(r.deps.Runners) })
	}
	return router.Handle(flows.Consumer{Name: "job-dispatch", Subjects: []string{events.Subject(events.AggJob, ">")},
		// A queued job may wait for a slot for hours: no delivery bound.
		MaxDeliver: -1, MaxAckPending: 10000, NakDelay: 250 * time.Millisecond}, r.dispatch)
}

// slotWait is how long a dispatch waits for a free slot before it hands
// the job back to the queue (another runner may be free).
const slotWait = 10 * time.Second

// dispatch claims the job a JobSubmitted or JobRequeued event queued.
func (r *Runner) dispatch(ctx context.Context, e events.Envelope) error {
	if e.Type != events.JobSubmitted && e.Type != events.JobRequeued {
		return nil
	}
	_, jobID := events.AggregateOf(e.Subject)
	wait, cancel := context.WithTimeout(ctx, slotWait)
	defer cancel()
	select {
	case r.slots <- struct{}{}:
	case <-r.ctx.Done():
		flows.Later(ctx)
		return nil
	case <-wait.Done():
		flows.Later(ctx) // full: let the queue offer it again
		return nil
	}
	if r.ctx.Err() != nil { // shutting down: another runner takes it
		<-r.slots
		flows.Later(ctx)
		return nil
	}
	meta := flows.Meta("job-dispatch/"+r.cfg.ID, e)
	meta.IdempotencyKey = "" // a claim is decided on the job's state: a second one is refused, not a duplicate
	j, a, err := r.deps.Jobs.Claim(ctx, meta, jobID, r.cfg.ID, r.cfg.Executor.Name())
	if errors.Is(err, jobs.ErrNotQueued) {
		// Claimed by another runner, or cancelled — or by this one, in an
		// earlier delivery whose append was stored but whose answer was
		// lost: that attempt is this runner's to run.
		if j, err = r.deps.Jobs.Load(ctx, jobID); err != nil {
			<-r.slots
			flows.Later(ctx) // look again when the store answers
			return nil
		}
		if cur := j.Current(); cur != nil && cur.RunnerID == r.cfg.ID && !r.isRunning(jobID, cur.Number) {
			a = *cur
		}
		if a.Number == 0 {
			<-r.slots
			return nil
		}
	}
	if err != nil {
		<-r.slots
		// The store is unreachable or the job kept changing: never
		// poison a queued job; ask for the event again.
		r.log.Warn("claim job", "job_id", jobID, "err", err)
		flows.Later(ctx)
		return nil
	}
	ctl := &attempt{}
	r.mu.Lock()
	if r.closed {
		// Claimed as the runner closed: the attempt is recorded lost at
		// once (and retried elsewhere) rather than started.
		r.mu.Unlock()
		<-r.slots
		r.abandon(j, a, "the runner shut down before the attempt started")
		return nil
	}
	key := LeaseKey(jobID, a.Number)
	r.running[key] = ctl // before the next delivery is handled
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() { <-r.slots }()
		defer func() {
			r.mu.Lock()
			if r.running[key] == ctl {
				delete(r.running, key)
			}
			r.mu.Unlock()
		}()
		r.run(j, a, ctl)
	}()
	return nil
}

// isRunning reports whether this runner runs attempt n of job jobID.
func (r *Runner) isRunning(jobID string, n int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.running[LeaseKey(jobID, n)]
	return ok
}

// abandon records an attempt this runner claimed but will not run as lost.
func (r *Runner) abandon(j jobs.State, a jobs.Attempt, reason string) {
	meta := events.Meta{Actor: events.Actor{Kind: events.ActorSystem, ID: "runner/" + r.cfg.ID}, CorrelationID: j.ID()}
	if _, _, err := r.deps.Jobs.EndAttempt(context.Background(), meta, j.ID(), jobs.EndAttempt{Attempt: a.Number,
		Outcome: events.OutcomeLost, Reason: reason}); err != nil && !errors.Is(err, jobs.ErrNotCurrent) {
		r.log.Error("record an abandoned attempt", "job_id", j.ID(), "err", err)
	}
}

// attempt is one running attempt's control.
type attempt struct {
	once    sync.Once
	outcome string // set before the program is stopped
	reason  string
	mu      sync.Mutex
}

func (a *attempt) stopFor(outcome, reason string, h Handle) {
	a.once.Do(func() {
		a.mu.Lock()
		a.outcome, a.reason = outcome, reason
		a.mu.Unlock()
		if h != nil {
			h.Stop()
		}
	})
}

func (a *attempt) stoppedFor() (string, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.outcome, a.reason
}

// run runs one claimed attempt to its end and records it.
func (r *Runner) run(j jobs.State, a jobs.Attempt, ctl *attempt) {
	ctx := context.Background()
	log := r.log.With("job_id", j.ID(), "attempt", a.Number)
	meta := events.Meta{Actor: events.Actor{Kind: events.ActorSystem, ID: "runner/" + r.cfg.ID}, CorrelationID: j.ID()}
	// The lease is kept from the claim until the end is recorded: while
	// the artifact unpacks, the program runs and the end is retried.
	r.heartbeat(ctx, j, a)
	stopBeats := r.keepLease(j, a)
	defer func() {
		stopBeats()
		_ = r.deps.Leases.Delete(ctx, LeaseKey(j.ID(), a.Number))
	}()
	end := r.attempt(ctx, j, a, ctl, meta, log)
	if outcome, _ := ctl.stoppedFor(); outcome == events.OutcomeLost && r.ctx.Err() == nil {
		// The job moved on without this attempt (its lease lapsed): the
		// end is not this runner's to record.
		return
	}
	r.recordEnd(ctx, j, end, meta, log)
}

// recordEnd records how the attempt ended, retrying with backoff while the
// store does not answer (the lease is kept meanwhile): a three-day run must
// not be lost, and run again, for one timeout.
func (r *Runner) recordEnd(ctx context.Context, j jobs.State, end jobs.EndAttempt, meta events.Meta, log *slog.Logger) {
	pause := 250 * time.Millisecond
	for try := 1; ; try++ {
		_, _, err := r.deps.Jobs.EndAttempt(ctx, meta, j.ID(), end)
		if err == nil || errors.Is(err, jobs.ErrNotCurrent) {
			return
		}
		if e, ok := handlers.AsError(err); ok && e.Kind != handlers.Conflict && e.Kind != handlers.Unavailable {
			log.Error("record the end of an attempt", "err", err)
			return // a refusal, not an outage: retrying changes nothing
		}
		if try >= 40 { // ~8 minutes
			log.Error("record the end of an attempt: giving up; the lease will lapse and the job be retried", "err", err)
			return
		}
		log.Warn("record the end of an attempt: retrying", "err", err, "try", try)
		time.Sleep(pause)
		pause = min(2*pause, 15*time.Second)
	}
}

// keepLease renews the attempt's lease every lease/3 until the returned
// function is called. It only writes the attempt's own key: what the job
// does meanwhile is watch's concern.
func (r *Runner) keepLease(j jobs.State, a jobs.Attempt) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		beat := time.NewTicker(r.cfg.Lease / 3)
		defer beat.Stop()
		for {
			select {
			case <-done:
				return
			case <-beat.C:
				r.heartbeat(context.Background(), j, a)
			}
		}
	}()
	return func() { close(done); <-finished }
}

// attempt prepares, starts, watches and ends the program of an attempt.
func (r *Runner) attempt(ctx context.Context, j jobs.State, a jobs.Attempt, ctl *attempt, meta events.Meta, log *slog.Logger) jobs.EndAttempt {
	fail := func(reason string) jobs.EndAttempt {
		log.Warn("attempt failed to start", "reason", reason)
		return jobs.EndAttempt{Attempt: a.Number, Outcome: events.OutcomeFailed, Reason: reason}
	}
	dir, err := os.MkdirTemp(r.cfg.WorkDir, "maestro-job-"+j.ID()+"-"+strconv.Itoa(a.Number)+"-")
	if err != nil {
		return fail("could not create the attempt's directory: " + err.Error())
	}
	defer os.RemoveAll(dir)
	env, secrets, err := r.environment(ctx, j, a, meta)
	if err != nil {
		return fail(err.Error())
	}
	workDir := dir
	local := r.cfg.Executor.Name() == "local"
	switch {
	case !local && j.Spec.Artifact != nil:
		return fail("the " + r.cfg.Executor.Name() + " executor does not unpack artifacts: put the code in the job's image")
	case !local && !filepath.IsAbs(j.Spec.WorkingDir) && j.Spec.WorkingDir != "":
		return fail("the " + r.cfg.Executor.Name() + " executor needs an absolute working_dir (a directory of the image)")
	case !local:
		workDir = j.Spec.WorkingDir // the image's own directory when empty
	case j.Spec.WorkingDir == "":
	case filepath.IsAbs(j.Spec.WorkingDir):
		workDir = j.Spec.WorkingDir
	default:
		workDir = filepath.Join(dir, j.Spec.WorkingDir)
	}
	if j.Spec.Artifact != nil {
		if err := r.unpack(ctx, *j.Spec.Artifact, dir); err != nil {
			return fail(err.Error())
		}
	}
	logFile, err := os.CreateTemp(r.cfg.WorkDir, "maestro-log-*")
	if err != nil {
		return fail("could not create the attempt's log file: " + err.Error())
	}
	logPath := logFile.Name()
	defer os.Remove(logPath)
	lw := NewLogWriter(r.deps.Logs, j.ID(), a.Number, r.cfg.LogLimit, secrets, logFile)
	spec := Spec{JobID: j.ID(), ProjectID: j.Spec.ProjectID, RunID: j.Spec.RunID, Name: j.Spec.Name, Attempt: a.Number,
		Command: j.Spec.Command, Env: env, WorkingDir: workDir, Image: j.Spec.Image,
		Resources: Resources{CPU: j.Spec.Resources.CPU, Memory: j.Spec.Resources.Memory}, Grace: r.cfg.Grace, Timeout: j.Timeout()}
	h, err := r.cfg.Executor.Start(ctx, spec, lw.Sink)
	if err != nil {
		lw.Sink(Line{Time: r.cfg.Now(), Stream: Stderr, Text: "[maestro] could not start: " + err.Error()})
		_ = lw.Close()
		r.keepLog(ctx, j, a, logPath, meta, log)
		return fail("could not start: " + err.Error())
	}
	log.Info("attempt started", "executor", r.cfg.Executor.Name())
	done := make(chan Result, 1)
	go func() { done <- h.Wait() }()
	res := r.watch(j, a, ctl, h, done)
	if err := lw.Close(); err != nil {
		log.Warn("job log", "err", err)
	}
	r.deps.Metrics.logDrops(lw.Dropped())
	r.keepLog(ctx, j, a, logPath, meta, log)
	end := jobs.EndAttempt{Attempt: a.Number}
	if res.Err == nil {
		code := res.ExitCode
		end.ExitCode = &code
	}
	outcome, reason := ctl.stoppedFor()
	switch {
	case outcome != "":
		end.Outcome, end.Reason = outcome, reason
	case res.Err != nil:
		end.Outcome, end.Reason = events.OutcomeFailed, res.Err.Error()
	case res.ExitCode == 0:
		end.Outcome = events.OutcomeSucceeded
	case res.Signal != "":
		end.Outcome, end.Reason = events.OutcomeFailed, "killed by "+res.Signal
	default:
		end.Outcome, end.Reason = events.OutcomeFailed, fmt.Sprintf("exit code %d", res.ExitCode)
	}
	log.Info("attempt ended", "outcome", end.Outcome, "reason", end.Reason)
	return end
}

// watch waits for the program (keepLease renews the lease meanwhile), and
// stops it when the job is cancelled, it times out, the job moved on
// without it (its lease was lost) or the runner shuts down.
func (r *Runner) watch(j jobs.State, a jobs.Attempt, ctl *attempt, h Handle, done <-chan Result) Result {
	timeout := time.NewTimer(j.Timeout())
	defer timeout.Stop()
	// At most a second: a cancellation (a person's, or a sweep's early
	// stop, which saves compute only if it lands) stops the program
	// within it; a check is one lookup of the job's last event.
	check := time.NewTicker(min(r.cfg.Lease/3, time.Second))
	defer check.Stop()
	closing := r.ctx.Done()
	for {
		select {
		case res := <-done:
			return res
		case <-timeout.C:
			ctl.stopFor(events.OutcomeTimedOut, "timeout", h) // the job's timeout_seconds says after how long
		case <-closing:
			closing = nil // once: a closed channel is always ready
			ctl.stopFor(events.OutcomeLost, "the runner shut down", h)
		case <-check.C:
			// A cancellation, or the job gone on without this attempt
			// (its lease lapsed), stops the program.
			lctx, cancel := context.WithTimeout(context.Background(), r.cfg.Lease/3)
			cur, err := r.deps.Jobs.Load(lctx, j.ID())
			cancel()
			if err != nil {
				continue
			}
			if c := cur.Current(); c == nil || c.Number != a.Number {
				ctl.stopFor(events.OutcomeLost, "the lease was lost", h)
			} else if cur.CancelRequested {
				ctl.stopFor(events.OutcomeCancelled, "cancelled", h)
			}
		}
	}
}

// heartbeat renews the attempt's lease.
func (r *Runner) heartbeat(ctx context.Context, j jobs.State, a jobs.Attempt) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Lease/3)
	defer cancel()
	v, _ := json.Marshal(Lease{Runner: r.cfg.ID, LeaseMS: r.cfg.Lease.Milliseconds()})
	if _, err := r.deps.Leases.Put(ctx, LeaseKey(j.ID(), a.Number), v); err != nil {
		r.log.Warn("renew lease", "job_id", j.ID(), "err", err)
	}
}

// Lease is what a heartbeat writes to an attempt's key: who holds it, for
// how long after this write.
type Lease struct {
	Runner  string `json:"runner"`
	LeaseMS int64  `json:"lease_ms"`
}

// LeaseKey is the KV key of the lease of attempt n of job jobID: one key
// per attempt, so a runner that lost its lease cannot renew or delete the
// next attempt's.
func LeaseKey(jobID string, n int) string { return jobID + "." + strconv.Itoa(n) }

// environment is the attempt's environment: the job's env with its
// secrets resolved, MAESTRO_PARAM_* and the tracking variables with a
// token of the attempt's own. secrets are the values to redact from logs.
func (r *Runner) environment(ctx context.Context, j jobs.State, a jobs.Attempt, meta events.Meta) (map[string]string, []string, error) {
	env := map[string]string{}
	var secrets []string
	for _, k := range slices.Sorted(maps.Keys(j.Spec.Env)) {
		v := j.Spec.Env[k]
		if ref, ok := strings.CutPrefix(v, jobs.SecretScheme); ok {
			s, found := r.cfg.Secrets(j.Spec.ProjectID, ref)
			if !found {
				return nil, nil, fmt.Errorf("secret %q (env %s) is not available to the project on runner %s", ref, k, r.cfg.ID)
			}
			v = s
			secrets = append(secrets, s)
		}
		env[k] = v
	}
	for k, v := range j.Spec.Params {
		env[jobs.ParamVar(k)] = v
	}
	expires := r.cfg.Now().Add(j.Timeout() + r.cfg.Grace + 5*time.Minute)
	token, err := r.deps.Identity.IssueJobToken(ctx, meta, j.Spec.SubmittedBy, j.Spec.ProjectID, a.TokenID,
		fmt.Sprintf("job %s attempt %d", j.ID(), a.Number), expires)
	if err != nil {
		if e, ok := handlers.AsError(err); ok && e.Kind == handlers.NotFound {
			return nil, nil, errors.New("the job's submitter is no longer an active user")
		}
		return nil, nil, fmt.Errorf("could not issue the attempt's tracking token: %w", err)
	}
	secrets = append(secrets, token)
	// A token issued after the attempt was lost (the runner was cut off
	// right after its claim) would outlive it: the revocation that the
	// attempt's end triggers found no token then.
	if cur, err := r.deps.Jobs.Load(ctx, j.ID()); err != nil || cur.Current() == nil || cur.Current().Number != a.Number {
		_ = r.deps.Identity.RevokeJobToken(ctx, meta, a.TokenID)
		return nil, nil, errors.New("the attempt was lost before it started")
	}
	uri := strings.TrimRight(r.cfg.TrackingURL, "/") + "/mlflow/" + j.Spec.ProjectID
	for k, v := range map[string]string{
		"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": j.Spec.RunID, "MLFLOW_EXPERIMENT_ID": j.Spec.ExperimentID, "MLFLOW_TRACKING_TOKEN": token,
		"MAESTRO_TRACKING_URI": uri, "MAESTRO_RUN_ID": j.Spec.RunID, "MAESTRO_EXPERIMENT_ID": j.Spec.ExperimentID, "MAESTRO_TOKEN": token,
		"MAESTRO_JOB_ID": j.ID(), "MAESTRO_PROJECT_ID": j.Spec.ProjectID, "MAESTRO_ATTEMPT": strconv.Itoa(a.Number),
		"MAESTRO_API_URL": strings.TrimRight(r.cfg.TrackingURL, "/"),
	} {
		env[k] = v
	}
	return env, secrets, nil
}

// unpack unpacks the job's artifact into dir.
func (r *Runner) unpack(ctx context.Context, a events.JobArtifact, dir string) error {
	if r.deps.Blobs == nil {
		return errors.New("this runner has no artifact store to fetch the job's artifact from")
	}
	d, err := artifacts.ParseDigest(a.Digest)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	b, err := r.deps.Blobs.Open(ctx, d)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	defer b.Close()
	if err := Unpack(b, a.Path, dir, UnpackLimits{}); err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	return nil
}

// keepLog stores the attempt's log as the run artifact
// logs/attempt-<n>.log.
func (r *Runner) keepLog(ctx context.Context, j jobs.State, a jobs.Attempt, path string, meta events.Meta, log *slog.Logger) {
	if r.deps.Blobs == nil {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		log.Warn("keep job log", "err", err)
		return
	}
	defer f.Close()
	d, n, err := r.deps.Blobs.Put(ctx, f, -1, "")
	if err == nil {
		err = r.deps.Tracking.RecordJobArtifact(ctx, meta, j.Spec.RunID, registry.Artifact{
			Path: fmt.Sprintf("logs/attempt-%d.log", a.Number), Digest: d.String(), Size: n, ContentType: "text/plain; charset=utf-8"})
	}
	if err != nil {
		log.Warn("keep job log", "err", err)
	}
}

// Close stops the runner: running attempts are stopped (SIGTERM, then
// SIGKILL after the grace period) and recorded as lost, so their jobs are
// retried elsewhere when retries are left.
func (r *Runner) Close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.stop()
	r.wg.Wait()
}

// OpenLeases opens the KV bucket of attempts' leases: a key per running
// job, renewed by its runner's heartbeats (runner id and attempt).
func OpenLeases(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: LeaseBucket,
		Description: "Maestro job leases, renewed by runner heartbeats", History: 1, TTL: 24 * time.Hour,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, events.ExplainReplicasError("KV_"+LeaseBucket, replicas, fmt.Errorf("lease bucket: %w", err))
	}
	return kv, nil
}

// LeaseBucket is the KV bucket of leases.
const LeaseBucket = "MAESTRO_LEASES"
