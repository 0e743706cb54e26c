package platform

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/handlers/approvals"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// versionExplanation is approvals.Explanations: a version's own
// explanation.json, else its source run's (a version carries its run's
// explanation by reference; registration copies nothing), found in the
// event-sourced state (the model's and the run's events) and read from the
// content-addressed blob store — never from a read model (rule 2).
func (p *Platform) versionExplanation(ctx context.Context, projectID string, ver registry.VersionState) (*approvals.VersionExplanation, error) {
	a, ok := ver.Artifacts[explain.FileName]
	source := approvals.SourceVersion
	if !ok && ver.RunID != "" {
		var err error
		if a, ok, err = p.Tracking.RecordedArtifact(ctx, projectID, ver.RunID, explain.FileName); err != nil {
			return nil, fmt.Errorf("the source run's artifacts: %w", err)
		}
		source = approvals.SourceRun
	}
	if !ok {
		return nil, nil
	}
	if p.Blobs == nil {
		return nil, errors.New("no artifact store to read explanation.json from")
	}
	x := &approvals.VersionExplanation{Source: source, Digest: a.Digest}
	doc, err := p.explanations.Read(a.Digest, func() (io.ReadCloser, error) {
		blob, err := p.Blobs.Open(ctx, artifacts.Digest(a.Digest))
		if err != nil {
			return nil, fmt.Errorf("open explanation.json (%s): %w", a.Digest, err)
		}
		return blob, nil
	})
	var invalid *explain.Error
	switch {
	case errors.As(err, &invalid):
		x.Problem = invalid.Error()
	case err != nil:
		return nil, err
	default:
		x.Doc = &doc
	}
	return x, nil
}
