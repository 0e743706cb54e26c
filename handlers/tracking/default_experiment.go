package tracking

import (
	"context"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// DefaultExperimentName names the experiment MLflow clients know as "0":
// MLflow's server creates it at start, and a client that sets no
// experiment starts its runs there. Maestro has one per project, created
// by the first run that needs it.
const DefaultExperimentName = "Default"

// ExperimentNamed returns the experiment of the project ref named name
// (deleted or not), found through the name's reservation: the write side's
// answer, for commands that name an experiment by its name.
func (s *Service) ExperimentNamed(ctx context.Context, p authz.Principal, ref, name string) (ExperimentState, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return ExperimentState{}, err
	}
	x, found, err := s.experimentNamed(ctx, ps.ID, name)
	if err == nil && !found {
		err = handlers.Errorf(handlers.NotFound, "not-found", "experiment not found")
	}
	return x, err
}

func (s *Service) experimentNamed(ctx context.Context, projectID, name string) (ExperimentState, bool, error) {
	res, _, err := s.names.Load(ctx, experimentNameSubject(projectID, name))
	if err != nil || !res.Taken {
		return ExperimentState{}, false, err
	}
	x, err := s.experiment(ctx, projectID, res.OwnerID)
	if e, ok := handlers.AsError(err); ok && e.Kind == handlers.NotFound {
		// Reserved by an experiment whose creation is not stored: the
		// reservation and the creation are one atomic batch, so this
		// cannot be, but an absent experiment is not a found one.
		return ExperimentState{}, false, nil
	}
	return x, err == nil, err
}

// DefaultExperiment returns the project's experiment named Default,
// creating it (a tracking write) when the name is free. Two requests that
// race to create it both end with the same experiment: the one whose
// creation loses to the other's reservation finds the name taken and uses
// the winner's. A deleted Default is returned as it is (its runs are then
// refused, as MLflow refuses runs in a deleted experiment "0").
func (s *Service) DefaultExperiment(ctx context.Context, meta events.Meta, p authz.Principal, ref string) (ExperimentState, uint64, error) {
	_, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.TrackingWrite)
	if err != nil {
		return ExperimentState{}, 0, err
	}
	for range 3 {
		x, found, err := s.experimentNamed(ctx, ps.ID, DefaultExperimentName)
		if err != nil || found {
			return x, 0, err
		}
		x, seq, err := s.CreateExperiment(ctx, meta, p, ref, CreateExperiment{Name: DefaultExperimentName})
		if e, ok := handlers.AsError(err); ok && e.Code == "experiment-exists" {
			continue // created concurrently: use it
		}
		return x, seq, err
	}
	return ExperimentState{}, 0, handlers.Errorf(handlers.Conflict, "concurrent-modification", "the Default experiment kept changing concurrently; retry the request")
}
