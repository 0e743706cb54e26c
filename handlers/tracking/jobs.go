package tracking

import (
	"context"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// What training jobs (handlers/jobs and their reactions) ask of tracking:
// the experiment a job names, and the run that follows the job's state.

// ExperimentForJob resolves the experiment a job names in the project ref
// (already authorized by the caller for a job submission): its id, or its
// name, creating an experiment of that name when none exists (never one
// named like an id: that is a missing experiment). A name another
// submission creates at the same moment is found, not refused.
func (s *Service) ExperimentForJob(ctx context.Context, meta events.Meta, p authz.Principal, ref, idOrName string) (ExperimentState, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.TrackingWrite)
	if err != nil {
		return ExperimentState{}, err
	}
	_, perr := uuid.Parse(idOrName)
	byID := perr == nil
	if byID {
		if x, err := s.experiment(ctx, ps.ID, idOrName); err == nil {
			return x, activeExperiment(x)
		}
	}
	for range 2 {
		res, _, err := s.names.Load(ctx, experimentNameSubject(ps.ID, idOrName))
		if err != nil {
			return ExperimentState{}, err
		}
		if res.Taken {
			x, err := s.experiment(ctx, ps.ID, res.OwnerID)
			if err != nil {
				return x, err
			}
			return x, activeExperiment(x)
		}
		if byID {
			// An id that is no experiment of the project is a mistake, not
			// the name of a new experiment.
			return ExperimentState{}, handlers.Errorf(handlers.NotFound, "not-found", "experiment %s not found", idOrName)
		}
		x, _, err := s.CreateExperiment(ctx, meta, p, ref, CreateExperiment{Name: idOrName})
		if e, ok := handlers.AsError(err); ok && e.Code == "experiment-exists" {
			continue // created by someone else meanwhile: look it up again
		}
		return x, err
	}
	return ExperimentState{}, handlers.Errorf(handlers.Conflict, "concurrent-modification", "the experiment %q kept changing; retry", idOrName)
}

// FollowJob sets the status (and end time) of a job's run as its job
// moves on: the reaction to the job's events, acting for the platform. A
// run deleted meanwhile, or already in that status, is left as it is.
func (s *Service) FollowJob(ctx context.Context, meta events.Meta, runID, status string, endTime *int64) error {
	if !events.ValidToken(runID) {
		return nil
	}
	meta.Now = s.now
	_, _, err := s.runs.Update(ctx, events.Subject(events.AggRun, runID), meta,
		func(r RunState, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
			if !r.Created || r.Deleted || (r.Status == status && (endTime == nil || r.EndTime != nil)) {
				return nil, nil, nil
			}
			c := UpdateRun{Status: status}
			if r.EndTime == nil {
				c.EndTime = endTime
			}
			changes, err := DecideUpdateRun(r, c)
			return changes, nil, err
		})
	return err
}

// RecordJobArtifact records a blob a job's runner stored (the attempt's
// log) as an artifact of the job's run, acting for the platform.
func (s *Service) RecordJobArtifact(ctx context.Context, meta events.Meta, runID string, a registry.Artifact) error {
	if !events.ValidToken(runID) {
		return handlers.Errorf(handlers.NotFound, "not-found", "run not found")
	}
	meta.Now = s.now
	_, _, err := s.runs.Update(ctx, events.Subject(events.AggRun, runID), meta,
		func(r RunState, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
			if r.Deleted {
				return nil, nil, nil
			}
			changes, err := DecideRecordRunArtifact(r, a)
			return changes, nil, err
		})
	return err
}
