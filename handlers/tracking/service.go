package tracking

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Service handles tracking commands: authorize on the project (through the
// registry, the one owner of membership), load the aggregate, decide,
// append with its version.
type Service struct {
	store       *events.Store
	projects    *registry.Service
	experiments *handlers.Repository[ExperimentState]
	runs        *handlers.Repository[RunState]
	names       *handlers.Repository[ReservationState]
	now         func() time.Time
	// metrics is MAESTRO_METRICS (events.OpenMetricsStore); nil refuses
	// metric logging.
	metrics *events.Store
}

// WithMetrics sets the metrics store (MAESTRO_METRICS).
func (s *Service) WithMetrics(store *events.Store) *Service {
	s.metrics = store
	return s
}

// NewService builds the tracking service.
func NewService(store *events.Store, projects *registry.Service, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{
		store:       store,
		projects:    projects,
		experiments: handlers.NewRepository(store, EvolveExperiment, 10000).WithClone(CloneExperiment),
		runs:        handlers.NewRepository(store, EvolveRun, 10000).WithClone(CloneRun),
		names:       handlers.NewRepository(store, EvolveReservation, 10000),
		now:         now,
	}
}

// CreateExperiment creates an experiment in the project ref.
func (s *Service) CreateExperiment(ctx context.Context, meta events.Meta, p authz.Principal, ref string, c CreateExperiment) (ExperimentState, uint64, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.TrackingWrite)
	if err != nil {
		return ExperimentState{}, 0, err
	}
	if err := registry.NotArchived(ps); err != nil {
		return ExperimentState{}, 0, err
	}
	c.ExperimentID = handlers.IDFor(meta, "experiment")
	c.ProjectID = ps.ID
	meta.Now = s.now
	nameSubj := experimentNameSubject(ps.ID, c.Name)
	var existing uint64
	x, seq, err := s.experiments.Update(ctx, events.Subject(events.AggExperiment, c.ExperimentID), meta,
		func(x ExperimentState, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if x.Created || replay {
				existing = v
				return nil, nil, nil // this very command already ran
			}
			res, rv, err := s.names.Load(ctx, nameSubj)
			if err != nil {
				return nil, nil, err
			}
			changes, err := DecideCreateExperiment(res, c)
			return changes, map[string]uint64{nameSubj: rv}, err
		})
	if err != nil || seq != 0 {
		return x, seq, err
	}
	if x.ProjectID != ps.ID || x.Name != c.Name {
		return ExperimentState{}, 0, handlers.Errorf(handlers.Invalid, "idempotency-key-reused",
			"this Idempotency-Key already created a different experiment")
	}
	return x, existing, nil
}

// Experiment returns an experiment of the project ref that p may read.
func (s *Service) Experiment(ctx context.Context, p authz.Principal, ref, id string) (ExperimentState, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return ExperimentState{}, err
	}
	return s.experiment(ctx, ps.ID, id)
}

func (s *Service) experiment(ctx context.Context, projectID, id string) (ExperimentState, error) {
	if !events.ValidToken(id) {
		return ExperimentState{}, handlers.Errorf(handlers.NotFound, "not-found", "experiment not found")
	}
	x, _, err := s.experiments.Load(ctx, events.Subject(events.AggExperiment, id))
	if err != nil {
		return x, err
	}
	if !x.Created || x.ProjectID != projectID {
		return ExperimentState{}, handlers.Errorf(handlers.NotFound, "not-found", "experiment not found")
	}
	return x, nil
}

// updateExperiment authorizes a tracking write in the project ref and runs
// decide on the experiment's current state (replay: see handlers.Decide).
// Every experiment command goes through it; versions may add reservation
// subjects' expected versions.
func (s *Service) updateExperiment(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string,
	decide func(x ExperimentState, replay bool) ([]handlers.Change, map[string]uint64, error)) (ExperimentState, uint64, error) {
	return update(ctx, s, meta, p, ref, s.experiments, events.Subject(events.AggExperiment, id),
		func(projectID string) error { _, err := s.experiment(ctx, projectID, id); return err }, decide)
}

// update is every experiment and run command: authorize a tracking write
// in the project ref, check the aggregate is the project's (exists), and
// decide on its current state, re-checking the project right before (the
// command may have waited its turn while an owner removed the caller or
// archived the project).
func update[S any](ctx context.Context, s *Service, meta events.Meta, p authz.Principal, ref string, repo *handlers.Repository[S],
	subject string, exists func(projectID string) error, decide func(S, bool) ([]handlers.Change, map[string]uint64, error)) (S, uint64, error) {
	var zero S
	p, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.TrackingWrite)
	if err != nil {
		return zero, 0, err
	}
	if err := exists(ps.ID); err != nil {
		return zero, 0, err
	}
	meta.Now = s.now
	return repo.Update(ctx, subject, meta, func(cur S, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
		if !replay {
			proj, err := s.projects.CurrentProject(ctx, p, ps.ID, authz.TrackingWrite)
			if err != nil {
				return nil, nil, err
			}
			if err := registry.NotArchived(proj); err != nil {
				return nil, nil, err
			}
		}
		return decide(cur, replay)
	})
}

// UpdateExperiment renames an experiment and/or sets its tags, as one
// command. A retry of a rename whose first attempt was stored decides
// again as that attempt did, when the new name was free (its reservation
// is the attempt's own now).
func (s *Service) UpdateExperiment(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string, c UpdateExperiment) (ExperimentState, uint64, error) {
	return s.updateExperiment(ctx, meta, p, ref, id, func(x ExperimentState, replay bool) ([]handlers.Change, map[string]uint64, error) {
		if c.Name == nil || *c.Name == x.Name {
			ch, err := DecideUpdateExperiment(x, ReservationState{}, c)
			return ch, nil, err
		}
		newSubj, oldSubj := experimentNameSubject(x.ProjectID, *c.Name), experimentNameSubject(x.ProjectID, x.Name)
		var res ReservationState
		var rv, ov uint64
		if !replay {
			var err error
			if res, rv, err = s.names.Load(ctx, newSubj); err != nil {
				return nil, nil, err
			}
			if _, ov, err = s.names.Load(ctx, oldSubj); err != nil {
				return nil, nil, err
			}
		}
		ch, err := DecideUpdateExperiment(x, res, c)
		return ch, map[string]uint64{newSubj: rv, oldSubj: ov}, err
	})
}

// RenameExperiment renames an experiment (names are unique per project).
func (s *Service) RenameExperiment(ctx context.Context, meta events.Meta, p authz.Principal, ref, id, name string) (ExperimentState, uint64, error) {
	return s.UpdateExperiment(ctx, meta, p, ref, id, UpdateExperiment{Name: &name})
}

// plain adapts a decider without other subjects to update.
func plain[S any](decide func(S) ([]handlers.Change, error)) func(S, bool) ([]handlers.Change, map[string]uint64, error) {
	return func(x S, _ bool) ([]handlers.Change, map[string]uint64, error) {
		ch, err := decide(x)
		return ch, nil, err
	}
}

// SetExperimentTags sets tags on an experiment.
func (s *Service) SetExperimentTags(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string, tags map[string]string) (ExperimentState, uint64, error) {
	return s.UpdateExperiment(ctx, meta, p, ref, id, UpdateExperiment{Tags: tags})
}

// DeleteExperimentTag removes an experiment's tag.
func (s *Service) DeleteExperimentTag(ctx context.Context, meta events.Meta, p authz.Principal, ref, id, key string) (ExperimentState, uint64, error) {
	return s.updateExperiment(ctx, meta, p, ref, id, plain(func(x ExperimentState) ([]handlers.Change, error) {
		return DecideDeleteExperimentTag(x, key)
	}))
}

// DeleteExperiment deletes (del) or restores an experiment.
func (s *Service) DeleteExperiment(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string, del bool) (ExperimentState, uint64, error) {
	return s.updateExperiment(ctx, meta, p, ref, id, plain(func(x ExperimentState) ([]handlers.Change, error) {
		return DecideDeleteExperiment(x, del)
	}))
}

// CreateRun starts a run in an experiment of the project ref.
func (s *Service) CreateRun(ctx context.Context, meta events.Meta, p authz.Principal, ref, experimentID string, c CreateRun) (RunState, uint64, error) {
	p, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.TrackingWrite)
	if err != nil {
		return RunState{}, 0, err
	}
	if err := registry.NotArchived(ps); err != nil {
		return RunState{}, 0, err
	}
	if _, err := s.experiment(ctx, ps.ID, experimentID); err != nil {
		return RunState{}, 0, err
	}
	c.RunID = handlers.IDFor(meta, "run")
	c.UserID = p.UserID
	meta.Now = s.now
	var existing uint64
	r, seq, err := s.runs.Update(ctx, events.Subject(events.AggRun, c.RunID), meta,
		func(r RunState, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if r.Created || replay {
				existing = v
				return nil, nil, nil // this very command already ran
			}
			// The project and the experiment as they are now: archived
			// projects and deleted experiments take no runs.
			proj, err := s.projects.CurrentProject(ctx, p, ps.ID, authz.TrackingWrite)
			if err != nil {
				return nil, nil, err
			}
			if err := registry.NotArchived(proj); err != nil {
				return nil, nil, err
			}
			x, err := s.experiment(ctx, ps.ID, experimentID)
			if err != nil {
				return nil, nil, err
			}
			c.Now = s.now().UnixMilli()
			changes, err := DecideCreateRun(x, r, c)
			return changes, nil, err
		})
	if err != nil || seq != 0 {
		return r, seq, err
	}
	if r.ExperimentID != experimentID {
		return RunState{}, 0, handlers.Errorf(handlers.Invalid, "idempotency-key-reused", "this Idempotency-Key already created a different run")
	}
	return r, existing, nil
}

// Run returns a run of the project ref that p may read.
func (s *Service) Run(ctx context.Context, p authz.Principal, ref, runID string) (RunState, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return RunState{}, err
	}
	return s.run(ctx, ps.ID, runID)
}

func (s *Service) run(ctx context.Context, projectID, runID string) (RunState, error) {
	if !events.ValidToken(runID) {
		return RunState{}, handlers.Errorf(handlers.NotFound, "not-found", "run not found")
	}
	r, _, err := s.runs.Load(ctx, events.Subject(events.AggRun, runID))
	if err != nil {
		return r, err
	}
	if !r.Created || r.ProjectID != projectID {
		return RunState{}, handlers.Errorf(handlers.NotFound, "not-found", "run not found")
	}
	return r, nil
}

// RunTags are a run's tags, on the run's own events (none when the run
// does not exist): the sweep scheduler finds a trial's sweep by them. The
// map is the cached state's: callers must not change it.
func (s *Service) RunTags(ctx context.Context, runID string) (map[string]string, error) {
	if !events.ValidToken(runID) {
		return nil, nil
	}
	r, _, err := s.runs.Load(ctx, events.Subject(events.AggRun, runID))
	return r.Tags, err
}

// RunInProject tells whether runID is a run of project projectID (deleted
// or not), on the run's own events: the registry's RunLookup, which the
// platform wires in so that a model version can name the run it came from.
func (s *Service) RunInProject(ctx context.Context, projectID, runID string) (bool, error) {
	_, err := s.run(ctx, projectID, runID)
	if e, ok := handlers.AsError(err); ok && e.Kind == handlers.NotFound {
		return false, nil
	}
	return err == nil, err
}

// AuthorizeArtifactWrite checks, before an upload is streamed, that p may
// record artifacts of the run: a tracking write in a project that is not
// archived, on a run of it that is not deleted, in an experiment that is
// not deleted (writableRun).
func (s *Service) AuthorizeArtifactWrite(ctx context.Context, p authz.Principal, ref, runID string) error {
	_, err := s.writableRun(ctx, p, ref, runID)
	return err
}

// writableRun authorizes a tracking write in the project ref (not
// archived) and returns the run, which must be active in an active
// experiment: the checks of a run write that is not decided in the run's
// turn (an upload before its bytes are read, metric points).
func (s *Service) writableRun(ctx context.Context, p authz.Principal, ref, runID string) (RunState, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.TrackingWrite)
	if err != nil {
		return RunState{}, err
	}
	if err := registry.NotArchived(ps); err != nil {
		return RunState{}, err
	}
	r, err := s.run(ctx, ps.ID, runID)
	if err != nil {
		return RunState{}, err
	}
	if err := activeRun(r); err != nil {
		return RunState{}, err
	}
	return r, s.liveExperiment(ctx, r)
}

// liveExperiment refuses a write to a run whose experiment is deleted,
// decided on the experiment's events. MLflow deletes an experiment's runs
// with it (and restores them with it); Maestro keeps each run's own
// lifecycle and treats the runs of a deleted experiment as deleted for
// writes until the experiment is restored.
func (s *Service) liveExperiment(ctx context.Context, r RunState) error {
	x, _, err := s.experiments.Load(ctx, events.Subject(events.AggExperiment, r.ExperimentID))
	if err != nil {
		return err
	}
	if x.Deleted {
		return handlers.Errorf(handlers.Conflict, "experiment-deleted", "the run's experiment %s is deleted; restore it first", x.ID)
	}
	return nil
}

// RecordArtifact records a stored blob as the run's artifact at a.Path;
// replaced says the path held one already (these bytes, or others now
// replaced).
func (s *Service) RecordArtifact(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, a registry.Artifact) (r RunState, replaced bool, seq uint64, err error) {
	r, seq, err = s.UpdateRunFunc(ctx, meta, p, ref, runID, func(r RunState) ([]handlers.Change, error) {
		_, replaced = r.Artifacts[a.Path]
		return DecideRecordRunArtifact(r, a)
	})
	return r, replaced, seq, err
}

// UpdateRunFunc authorizes a tracking write in the project ref and runs
// decide on the run's current state, in an experiment that is not deleted;
// every run command decided on the run goes through it (a delete through
// updateRun, without the experiment check).
func (s *Service) UpdateRunFunc(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string,
	decide func(RunState) ([]handlers.Change, error)) (RunState, uint64, error) {
	return s.updateRun(ctx, meta, p, ref, runID, true, decide)
}

// updateRun is UpdateRunFunc; live says the run's experiment must be
// active (liveExperiment), which every run command but a delete requires:
// deleting a run of a deleted experiment changes nothing it could use.
func (s *Service) updateRun(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, live bool,
	decide func(RunState) ([]handlers.Change, error)) (RunState, uint64, error) {
	return update(ctx, s, meta, p, ref, s.runs, events.Subject(events.AggRun, runID),
		func(projectID string) error { _, err := s.run(ctx, projectID, runID); return err },
		func(r RunState, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if live && !replay && r.Created {
				if err := s.liveExperiment(ctx, r); err != nil {
					return nil, nil, err
				}
			}
			ch, err := decide(r)
			return ch, nil, err
		})
}

// UpdateRun changes a run's status, end time or name.
func (s *Service) UpdateRun(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, c UpdateRun) (RunState, uint64, error) {
	return s.UpdateRunFunc(ctx, meta, p, ref, runID, func(r RunState) ([]handlers.Change, error) { return DecideUpdateRun(r, c) })
}

// DeleteRun deletes (del) or restores a run.
func (s *Service) DeleteRun(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, del bool) (RunState, uint64, error) {
	return s.updateRun(ctx, meta, p, ref, runID, !del, func(r RunState) ([]handlers.Change, error) { return DecideDeleteRun(r, del) })
}

// LogParams logs params on a run (write-once per key).
func (s *Service) LogParams(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, params []events.Param) (RunState, uint64, error) {
	return s.UpdateRunFunc(ctx, meta, p, ref, runID, func(r RunState) ([]handlers.Change, error) { return DecideLogParams(r, params) })
}

// SetRunTags sets tags on a run.
func (s *Service) SetRunTags(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, tags map[string]string) (RunState, uint64, error) {
	return s.UpdateRunFunc(ctx, meta, p, ref, runID, func(r RunState) ([]handlers.Change, error) { return DecideSetRunTags(r, tags) })
}

// DeleteRunTag removes a run's tag.
func (s *Service) DeleteRunTag(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID, key string) (RunState, uint64, error) {
	return s.UpdateRunFunc(ctx, meta, p, ref, runID, func(r RunState) ([]handlers.Change, error) { return DecideDeleteRunTag(r, key) })
}

// LogMetrics logs metric points on a run: decided on the run's aggregate
// (active, in the project, its experiment active), appended to the run's
// subject of the metrics stream and acknowledged once durable. seq is the
// metrics stream's.
func (s *Service) LogMetrics(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, metrics []Metric) (uint64, error) {
	if s.metrics == nil {
		return 0, errors.New("tracking: no metrics store")
	}
	r, err := s.writableRun(ctx, p, ref, runID)
	if err != nil {
		return 0, err
	}
	changes, err := DecideLogMetrics(r, metrics)
	if err != nil {
		return 0, err
	}
	return s.appendMetrics(ctx, meta, r.ID, changes)
}

// appendMetrics appends decided points (DecideLogMetrics) to the run's
// subject of the metrics stream.
func (s *Service) appendMetrics(ctx context.Context, meta events.Meta, runID string, changes []handlers.Change) (uint64, error) {
	subj := events.MetricsSubject(runID)
	if !meta.PriorAttempt.IsZero() && meta.Derived() {
		// A retry of a request whose first attempt died: its points may be
		// stored already, beyond the duplicate window; answer with them.
		stored, err := s.metrics.FindStored(ctx, handlers.DerivedIDs(meta, subj), []string{subj}, meta.PriorAttempt.Add(-time.Minute))
		if err != nil {
			return 0, err
		}
		if len(stored) > 0 {
			return stored[len(stored)-1].Sequence, nil
		}
	}
	meta.Time = s.now()
	// No expected version: points do not decide anything, and a retry
	// with the same Idempotency-Key is dropped by the duplicate window.
	seq, _, err := handlers.CommitStored(ctx, s.metrics, meta, nil, changes)
	return seq, err
}

// LatestMetrics is the latest value of each metric of a run, folded from
// the run's subject of the metrics stream (events.LaterPoint: what the
// read model's latest_metrics holds, but decided on the events, as the
// write side must): what a promotion gate over a version's source run
// sees. An unknown run has none.
func (s *Service) LatestMetrics(ctx context.Context, runID string) (map[string]float64, error) {
	latest := map[string]events.MetricPoint{}
	err := s.scanMetrics(ctx, runID, func(key string, p events.MetricPoint) {
		if l, ok := latest[key]; !ok || events.LaterPoint(p, l) {
			latest[key] = p
		}
	})
	out := make(map[string]float64, len(latest))
	for key, p := range latest {
		out[key] = float64(p.Value)
	}
	return out, err
}

// MaxMetricSteps bounds the steps MetricSteps holds (the first ones
// logged): a program may log millions.
const MaxMetricSteps = 100_000

// MetricSteps is a run's series of metric key, one point per step (the
// latest logged at it, events.LaterPoint), by ascending step, folded from
// the run's metric events: what a sweep's trial ends with. Steps first
// logged after MaxMetricSteps others are left out.
func (s *Service) MetricSteps(ctx context.Context, runID, key string) ([]events.MetricPoint, error) {
	byStep := map[int64]events.MetricPoint{}
	err := s.scanMetrics(ctx, runID, func(k string, p events.MetricPoint) {
		l, ok := byStep[p.Step]
		if k == key && (ok || len(byStep) < MaxMetricSteps) && (!ok || events.LaterPoint(p, l)) {
			byStep[p.Step] = p
		}
	})
	out := slices.SortedFunc(maps.Values(byStep), func(a, b events.MetricPoint) int { return cmp.Compare(a.Step, b.Step) })
	return out, err
}

// scanMetrics calls point for every metric point of a run, in stream
// order (an unknown run has none).
func (s *Service) scanMetrics(ctx context.Context, runID string, point func(key string, p events.MetricPoint)) error {
	if s.metrics == nil {
		return errors.New("tracking: no metrics store")
	}
	id, err := uuid.Parse(runID)
	if err != nil {
		return nil
	}
	// A run that logs one point per request has an event per step: read
	// them in batches (Scan), one batch in memory at a time.
	err = s.metrics.Scan(ctx, events.MetricsSubject(id.String()), 0, func(e events.Envelope) (bool, error) {
		if e.Type != events.MetricsLogged {
			return true, nil
		}
		d, err := events.DecodeMetricsLogged(e.Data)
		if err != nil {
			return false, fmt.Errorf("metrics of run %s (seq %d): %w", runID, e.Sequence, err)
		}
		for key, points := range d.Metrics {
			for _, p := range points {
				point(key, p)
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("load metrics of run %s: %w", runID, err)
	}
	return nil
}
