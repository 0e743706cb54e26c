package tracking

import (
	"context"

	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// RecordedArtifact is the artifact at path of run runID of project
// projectID as the run's events record it (ok false: none, or no such run
// in the project), for decisions over a version's source run (a promotion
// gate reading the explanation the version carries). The caller has
// authorized the project already.
func (s *Service) RecordedArtifact(ctx context.Context, projectID, runID, path string) (a registry.Artifact, ok bool, err error) {
	r, err := s.run(ctx, projectID, runID)
	if e, isErr := handlers.AsError(err); isErr && e.Kind == handlers.NotFound {
		return registry.Artifact{}, false, nil
	}
	if err != nil {
		return registry.Artifact{}, false, err
	}
	a, ok = r.Artifacts[path]
	return a, ok, nil
}
