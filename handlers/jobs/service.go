package jobs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// Service handles job commands: users submit and cancel jobs (authorized on
// the project, through the registry); runners claim them and report how
// their attempts ended; reactions lose attempts whose lease expired.
type Service struct {
	projects *registry.Service
	tracking *tracking.Service
	jobs     *handlers.Repository[State]
	now      func() time.Time
}

// NewService builds the job service.
func NewService(store *events.Store, projects *registry.Service, tracking *tracking.Service, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{projects: projects, tracking: tracking, now: now,
		jobs: handlers.NewRepository(store, Evolve, 10000).WithClone(Clone)}
}

// ArtifactRef names a run artifact of the project to unpack before the
// job's program starts.
type ArtifactRef struct {
	RunID string
	Path  string
}

// SubmitInput is a job request as the API decoded it.
type SubmitInput struct {
	Experiment     string // id or name; created when no experiment has that name
	Name           string
	Command        []string
	Params         map[string]string
	Env            map[string]string
	WorkingDir     string
	Artifact       *ArtifactRef
	Image          string
	Resources      events.JobResources
	Timeout        time.Duration
	MaxRetries     int
	RetryOnFailure bool
	// Sweep names the sweep trial the job runs (set by the sweep
	// scheduler, which submits on behalf of the sweep's creator).
	Sweep *events.JobSweepTrial
}

// Submit queues a job in the project ref with a run of its own (SCHEDULED,
// with the job's params, tagged with the job's id) in the experiment it
// names. A retried submission (same Idempotency-Key) answers with the job
// and run the first one made.
func (s *Service) Submit(ctx context.Context, meta events.Meta, p authz.Principal, ref string, in SubmitInput) (State, tracking.RunState, uint64, error) {
	p, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.JobRun)
	if err != nil {
		return State{}, tracking.RunState{}, 0, err
	}
	if err := registry.NotArchived(ps); err != nil {
		return State{}, tracking.RunState{}, 0, err
	}
	c := Submit{JobSubmittedData: events.JobSubmittedData{JobID: handlers.IDFor(meta, "job"), ProjectID: ps.ID, Name: in.Name,
		Command: in.Command, Params: in.Params, Env: in.Env, WorkingDir: in.WorkingDir, Image: in.Image, Resources: in.Resources,
		MaxRetries: in.MaxRetries, RetryOnFailure: in.RetryOnFailure, SubmittedBy: p.UserID, Sweep: in.Sweep}, Timeout: in.Timeout}
	if err := CheckSubmit(&c); err != nil {
		return State{}, tracking.RunState{}, 0, err
	}
	if strings.TrimSpace(in.Experiment) == "" {
		return State{}, tracking.RunState{}, 0, invalid("experiment must name an experiment (its id or name)")
	}
	// The run's own rules for params, checked before anything (an
	// experiment named by the job) is created for a request they refuse.
	params := tracking.SortedParams(c.Params)
	if _, err := tracking.DecideLogParams(tracking.RunState{Created: true, ID: c.RunID}, params); err != nil {
		return State{}, tracking.RunState{}, 0, err
	}
	if in.Artifact != nil {
		if c.Artifact, err = s.artifact(ctx, p, ref, *in.Artifact); err != nil {
			return State{}, tracking.RunState{}, 0, err
		}
	}
	x, err := s.tracking.ExperimentForJob(ctx, meta, p, ref, strings.TrimSpace(in.Experiment))
	if err != nil {
		return State{}, tracking.RunState{}, 0, err
	}
	c.ExperimentID = x.ID
	tags := map[string]string{"maestro.job_id": c.JobID, "mlflow.source.type": "JOB", "mlflow.source.name": sourceName(c.Command[0])}
	if in.Sweep != nil {
		// The trial's run names its sweep: the sweep scheduler follows the
		// objective metric of the runs that carry it.
		tags["maestro.sweep_id"], tags["maestro.sweep_trial"] = in.Sweep.SweepID, strconv.Itoa(in.Sweep.Trial)
	}
	if p.Email != "" {
		tags["mlflow.user"] = p.Email
	}
	run, _, err := s.tracking.CreateRun(ctx, meta, p, ref, x.ID, tracking.CreateRun{Name: c.Name, Status: tracking.StatusScheduled,
		Params: params, Tags: tags})
	if err != nil {
		return State{}, tracking.RunState{}, 0, err
	}
	c.RunID = run.ID
	meta.Now = s.now
	var existing uint64
	j, seq, err := s.jobs.Update(ctx, subject(c.JobID), meta, func(j State, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
		if j.Created || replay {
			existing = v
			return nil, nil, nil // this very command already ran
		}
		changes, err := DecideSubmit(j, c)
		return changes, nil, err
	})
	if err != nil {
		return State{}, tracking.RunState{}, 0, err
	}
	if seq == 0 {
		if j.Spec.RunID != run.ID {
			return State{}, tracking.RunState{}, 0, handlers.Errorf(handlers.Invalid, "idempotency-key-reused", "this Idempotency-Key already submitted a different job")
		}
		seq = existing
	}
	return j, run, seq, nil
}

// sourceName is the program a job runs, as its run's mlflow.source.name
// tag: at most 1,000 bytes of it (a tag value holds 8,000; an argument
// may be 8 KiB).
func sourceName(program string) string {
	if len(program) <= 1000 {
		return program
	}
	cut := 1000
	for cut > 0 && !utf8.RuneStart(program[cut]) {
		cut--
	}
	return program[:cut]
}

// artifact resolves a job's artifact to the blob it names: a .tar.gz,
// .tgz or .zip recorded on a run of the project.
func (s *Service) artifact(ctx context.Context, p authz.Principal, ref string, a ArtifactRef) (*events.JobArtifact, error) {
	lower := strings.ToLower(a.Path)
	if !strings.HasSuffix(lower, ".tar.gz") && !strings.HasSuffix(lower, ".tgz") && !strings.HasSuffix(lower, ".zip") {
		return nil, invalid("artifact.path must name a .tar.gz, .tgz or .zip artifact")
	}
	r, err := s.tracking.Run(ctx, p, ref, a.RunID)
	if err != nil {
		return nil, fmt.Errorf("artifact.run_id: %w", err)
	}
	blob, ok := r.Artifacts[a.Path]
	if !ok {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "run %s has no artifact %q", r.ID, a.Path)
	}
	return &events.JobArtifact{RunID: r.ID, Path: a.Path, Digest: blob.Digest, Size: blob.Size}, nil
}

// Job returns a job of the project ref that p may read.
func (s *Service) Job(ctx context.Context, p authz.Principal, ref, id string) (State, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return State{}, err
	}
	return s.job(ctx, ps.ID, id)
}

func (s *Service) job(ctx context.Context, projectID, id string) (State, error) {
	j, err := s.Load(ctx, id)
	if err != nil {
		return j, err
	}
	if !j.Created || j.Spec.ProjectID != projectID {
		return State{}, handlers.Errorf(handlers.NotFound, "not-found", "job not found")
	}
	return j, nil
}

// Load returns a job's state from the event store (not created: not found
// or an invalid id).
func (s *Service) Load(ctx context.Context, id string) (State, error) {
	if !events.ValidToken(id) {
		return State{}, nil
	}
	j, _, err := s.jobs.Load(ctx, subject(id))
	return j, err
}

// Cancel cancels a job of the project ref: a queued job ends at once, a
// running one is stopped by its runner within seconds.
func (s *Service) Cancel(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string) (State, uint64, error) {
	p, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.JobRun)
	if err != nil {
		return State{}, 0, err
	}
	if _, err := s.job(ctx, ps.ID, id); err != nil {
		return State{}, 0, err
	}
	meta.Now = s.now
	j, seq, err := s.jobs.Update(ctx, subject(id), meta, func(j State, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
		if !replay {
			if _, err := s.projects.CurrentProject(ctx, p, ps.ID, authz.JobRun); err != nil {
				return nil, nil, err
			}
		}
		changes, err := DecideCancel(j, "")
		return changes, nil, err
	})
	if err == nil && seq == 0 {
		_, seq, err = s.jobs.Load(ctx, subject(id))
	}
	return j, seq, err
}

// CancelFor is the platform cancelling a job for a reason of its own (a
// sweep's early stopping: early_stopped), which the job ends with. A job
// that ended already, or does not exist, is left as it is.
func (s *Service) CancelFor(ctx context.Context, meta events.Meta, id, reason string) error {
	if !events.ValidToken(id) {
		return nil
	}
	meta.Now = s.now
	_, _, err := s.jobs.Update(ctx, subject(id), meta, func(j State, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
		if !j.Created || j.Ended() {
			return nil, nil, nil
		}
		changes, err := DecideCancel(j, reason)
		return changes, nil, err
	})
	return err
}

// tokenNamespace derives the ids of attempts' API tokens.
var tokenNamespace = uuid.MustParse("0c6f3e0a-8a51-4d5e-9a0b-5b8f4f7b9d21")

// TokenID is the id of the API token of attempt n of job jobID: derived,
// so the claim can record it before the token is issued.
func TokenID(jobID string, n int) string {
	return uuid.NewSHA1(tokenNamespace, fmt.Appendf(nil, "%s/%d", jobID, n)).String()
}

// Claim starts the next attempt of a queued job on runner runnerID (ErrNotQueued
// when another runner claimed it first, or it was cancelled).
func (s *Service) Claim(ctx context.Context, meta events.Meta, jobID, runnerID, executor string) (State, Attempt, error) {
	if !events.ValidToken(jobID) {
		return State{}, Attempt{}, ErrNotQueued
	}
	meta.Now = s.now
	j, _, err := s.jobs.Update(ctx, subject(jobID), meta, func(j State, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
		changes, err := DecideClaim(j, runnerID, executor, TokenID(jobID, len(j.Attempts)+1))
		return changes, nil, err
	})
	if err != nil {
		return State{}, Attempt{}, err
	}
	a := j.Current()
	if a == nil || a.RunnerID != runnerID {
		return State{}, Attempt{}, ErrNotQueued
	}
	return j, *a, nil
}

// EndAttempt records how an attempt ended (ErrNotCurrent when it is not
// the job's running attempt any more).
func (s *Service) EndAttempt(ctx context.Context, meta events.Meta, jobID string, c EndAttempt) (State, uint64, error) {
	meta.Now = s.now
	return s.jobs.Update(ctx, subject(jobID), meta, func(j State, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
		changes, err := DecideEndAttempt(j, c)
		return changes, nil, err
	})
}
