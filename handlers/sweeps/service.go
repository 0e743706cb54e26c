package sweeps

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/tuning"
)

// Limits on a sweep's request (rule 10).
const (
	MaxTrials      = 1000
	MaxParallelism = 100
	MaxNameLen     = 200
	MaxMetricLen   = 250
	// MaxSeed keeps a seed exact in every JSON reader (2^53 - 1).
	MaxSeed = 1<<53 - 1
	// MaxPartBytes bounds the space and the trial template as encoded in
	// the sweep's created event (the stream takes messages of 1 MiB).
	MaxPartBytes = 256 << 10
)

// Service handles sweep commands: users create and stop sweeps (authorized
// on the project, as job submissions are); the scheduler records trials.
type Service struct {
	projects *registry.Service
	tracking *tracking.Service
	jobs     *jobs.Service
	sweeps   *handlers.Repository[State]
	now      func() time.Time
	// trialRuns caches which runs are trials (the metrics reaction).
	trialRuns runs
}

// NewService builds the sweep service.
func NewService(store *events.Store, projects *registry.Service, tracking *tracking.Service, jobs *jobs.Service, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{projects: projects, tracking: tracking, jobs: jobs, now: now,
		sweeps: handlers.NewRepository(store, Evolve, 1000).WithClone(Clone)}
}

// TrialInput is the job every trial runs, as the API decoded it.
type TrialInput struct {
	Command    []string
	Env        map[string]string
	Params     map[string]string
	Timeout    time.Duration
	MaxRetries int
}

// CreateInput is a sweep request as the API decoded it.
type CreateInput struct {
	Experiment    string // id or name; created when no experiment has that name (as jobs do)
	Name          string
	Objective     events.SweepObjective
	Space         map[string]events.SweepParam
	Algorithm     string
	EarlyStopping *events.SweepEarlyStopping
	MaxTrials     int
	Parallelism   int
	Seed          *uint64
	Trial         TrialInput
}

// Check validates and canonicalises a sweep request into its created
// event's data (ids, project, experiment and seed are the caller's): every
// bound of rule 10; a bad space is a 400 naming the field.
func Check(in CreateInput) (events.SweepCreatedData, error) {
	d := events.SweepCreatedData{Name: strings.TrimSpace(in.Name), Objective: in.Objective, Space: in.Space,
		Algorithm: in.Algorithm, EarlyStopping: in.EarlyStopping, MaxTrials: in.MaxTrials, Parallelism: in.Parallelism}
	if d.Name == "" || len(d.Name) > MaxNameLen || !handlers.PlainText(d.Name) || strings.ContainsAny(d.Name, "\r\n\t") {
		return d, invalid("name: a sweep needs a name of 1 to %d characters on one line", MaxNameLen)
	}
	m := strings.TrimSpace(d.Objective.Metric)
	if m == "" || len(m) > MaxMetricLen || !handlers.PlainText(m) || strings.ContainsAny(m, "\r\n\t") {
		return d, invalid("objective.metric: name the metric to optimize (1 to %d characters), as the trials log it", MaxMetricLen)
	}
	d.Objective.Metric = m
	if d.Objective.Direction != tuning.Minimize && d.Objective.Direction != tuning.Maximize {
		return d, invalid("objective.direction: must be minimize or maximize")
	}
	switch d.Algorithm {
	case tuning.Grid, tuning.Random, tuning.Bayesian:
	default:
		return d, invalid("algorithm: must be grid, random or bayesian")
	}
	if err := tuning.ValidateSpace(space(d.Space), d.Algorithm); err != nil {
		return d, invalid("%s", err.Error())
	}
	if d.EarlyStopping != nil {
		if err := tuning.ValidatePruner(pruner(*d.EarlyStopping)); err != nil {
			return d, invalid("%s", err.Error())
		}
	}
	if d.Algorithm == tuning.Grid && d.MaxTrials == 0 {
		d.MaxTrials = min(tuning.GridSize(space(d.Space)), MaxTrials)
	}
	if d.MaxTrials < 1 || d.MaxTrials > MaxTrials {
		return d, invalid("max_trials: must be between 1 and %d", MaxTrials)
	}
	if d.Parallelism == 0 {
		d.Parallelism = 1
	}
	if d.Parallelism < 1 || d.Parallelism > MaxParallelism {
		return d, invalid("parallelism: must be between 1 and %d", MaxParallelism)
	}
	if in.Seed != nil && *in.Seed > MaxSeed {
		return d, invalid("seed: must be between 0 and %d", uint64(MaxSeed))
	}
	// The trial's job, checked by the jobs' own rules with every param it
	// will get (the sampled ones hold a placeholder value).
	params := maps.Clone(in.Trial.Params)
	if params == nil {
		params = map[string]string{}
	}
	for name := range d.Space {
		if _, fixed := params[name]; fixed {
			return d, invalid("trial.params.%s: %s is in the space; a param is either sampled or fixed", name, name)
		}
		params[name] = "0"
	}
	// Every param a trial's run will log, by the run's own rules (keys,
	// plain-text values within their bound), checked now: a value that
	// passed here would otherwise be stored with the sweep and refused at
	// every trial's submission.
	if _, err := tracking.DecideLogParams(tracking.RunState{Created: true}, tracking.SortedParams(params)); err != nil {
		return d, invalid("trial.params: %s", detail(err))
	}
	for name, p := range d.Space {
		for _, v := range p.Values {
			if _, err := tracking.DecideLogParams(tracking.RunState{Created: true}, []events.Param{{Key: name, Value: v}}); err != nil {
				return d, invalid("space.%s.values: %s", name, detail(err))
			}
		}
	}
	c := jobs.Submit{JobSubmittedData: events.JobSubmittedData{Command: in.Trial.Command, Params: params, Env: in.Trial.Env,
		MaxRetries: in.Trial.MaxRetries}, Timeout: in.Trial.Timeout}
	if err := jobs.CheckSubmit(&c); err != nil {
		return d, invalid("trial: %s", detail(err))
	}
	d.Trial = events.SweepTrialSpec{Command: c.Command, Env: c.Env, Params: in.Trial.Params, TimeoutMS: c.TimeoutMS, MaxRetries: c.MaxRetries}
	// Each within its bounds, the parts could still make an event beyond
	// the stream's message size: bound them as encoded.
	for field, part := range map[string]any{"space": d.Space, "trial": d.Trial} {
		if b, err := json.Marshal(part); err != nil || len(b) > MaxPartBytes {
			return d, invalid("%s: at most %d bytes as JSON", field, MaxPartBytes)
		}
	}
	return d, nil
}

// detail is a refusal's text without its code.
func detail(err error) string {
	if e, ok := handlers.AsError(err); ok {
		return e.Detail
	}
	return err.Error()
}

// Create starts a sweep in the project ref: the scheduler starts its first
// trials as soon as it is appended. A sweep without a seed gets one derived
// from its id, recorded, so its suggestions can be reproduced.
func (s *Service) Create(ctx context.Context, meta events.Meta, p authz.Principal, ref string, in CreateInput) (State, uint64, error) {
	p, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.JobRun)
	if err != nil {
		return State{}, 0, err
	}
	if err := registry.NotArchived(ps); err != nil {
		return State{}, 0, err
	}
	d, err := Check(in)
	if err != nil {
		return State{}, 0, err
	}
	if strings.TrimSpace(in.Experiment) == "" {
		return State{}, 0, invalid("experiment: name the experiment the trials' runs go to (its id or name)")
	}
	x, err := s.tracking.ExperimentForJob(ctx, meta, p, ref, strings.TrimSpace(in.Experiment))
	if err != nil {
		return State{}, 0, err
	}
	// The trials run on the creator's authority, and on the API token's
	// when one made the sweep: revoking it (or its expiry) stops them.
	d.SweepID, d.ProjectID, d.ExperimentID, d.CreatedBy, d.TokenID = handlers.IDFor(meta, "sweep"), ps.ID, x.ID, p.UserID, p.TokenID
	if in.Seed != nil {
		d.Seed = *in.Seed
	} else {
		sum := sha256.Sum256([]byte(d.SweepID))
		d.Seed = binary.BigEndian.Uint64(sum[:8]) & MaxSeed
	}
	meta.Now = s.now
	var existing uint64
	st, seq, err := s.sweeps.Update(ctx, subject(d.SweepID), meta, func(st State, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
		if st.Created || replay {
			existing = v
			return nil, nil, nil // this very command already ran
		}
		changes, err := DecideCreate(st, d)
		return changes, nil, err
	})
	if err != nil {
		return State{}, 0, err
	}
	if seq == 0 {
		seq = existing
	}
	return st, seq, nil
}

// Sweep returns a sweep of the project ref that p may read, from its events.
func (s *Service) Sweep(ctx context.Context, p authz.Principal, ref, id string) (State, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return State{}, err
	}
	return s.sweep(ctx, ps.ID, id)
}

func (s *Service) sweep(ctx context.Context, projectID, id string) (State, error) {
	st, err := s.Load(ctx, id)
	if err != nil {
		return st, err
	}
	if !st.Created || st.Spec.ProjectID != projectID {
		return State{}, errNotFound
	}
	return st, nil
}

// Load returns a sweep's state from the event store (not created: not
// found or an invalid id).
func (s *Service) Load(ctx context.Context, id string) (State, error) {
	if !events.ValidToken(id) {
		return State{}, nil
	}
	st, _, err := s.sweeps.Load(ctx, subject(id))
	return st, err
}

// Stop asks a sweep of the project ref to stop: no new trial starts, and
// the scheduler cancels the running ones; the sweep ends stopped once they
// have ended.
func (s *Service) Stop(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string) (State, uint64, error) {
	p, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.JobRun)
	if err != nil {
		return State{}, 0, err
	}
	if _, err := s.sweep(ctx, ps.ID, id); err != nil {
		return State{}, 0, err
	}
	meta.Now = s.now
	st, seq, err := s.sweeps.Update(ctx, subject(id), meta, func(st State, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
		changes, err := DecideStop(st, "stopped by "+cmp.Or(p.Email, p.UserID))
		return changes, nil, err
	})
	if err == nil && seq == 0 {
		_, seq, err = s.sweeps.Load(ctx, subject(id))
	}
	return st, seq, err
}

// update appends what decide decides on sweep id's state, as the command
// meta describes.
func (s *Service) update(ctx context.Context, meta events.Meta, id string, decide func(State) ([]handlers.Change, error)) (State, error) {
	meta.Now = s.now
	st, _, err := s.sweeps.Update(ctx, subject(id), meta, func(st State, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
		if !st.Created {
			return nil, nil, errNotFound
		}
		changes, err := decide(st)
		return changes, nil, err
	})
	return st, err
}

// refused reports whether err is a refusal of the command itself (not
// found, forbidden, unauthenticated, invalid, a conflict with the state of
// things such as a deleted experiment or an archived project), which no
// retry changes, rather than an outage, a throttle or a concurrent
// modification (the next attempt may pass).
func refused(err error) bool {
	var e *handlers.Error
	if !errors.As(err, &e) {
		return false
	}
	switch {
	case e.Kind == handlers.Throttled, e.Kind == handlers.Unavailable:
		return false
	case e.Kind == handlers.Conflict && e.Code == "concurrent-modification":
		return false
	}
	return true
}
