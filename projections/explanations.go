package projections

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// ExplainedVersion is where a model version's explanation document is
// recorded: its own artifact at the path, or else (Source "run") its
// source run's — a version carries its run's explanation by reference.
type ExplainedVersion struct {
	Version  int
	RunID    string
	Source   string // "version" or "run"
	Artifact ArtifactEntry
}

// explainedVersionSQL finds versions of model $1 with an artifact at $3,
// of their own or of their source run (a run of project $4), newest first;
// the caller adds the version condition on $2. run_id is text (a version
// may name no run): only a canonical UUID is cast.
const explainedVersionSQL = `SELECT v.version, v.run_id, CASE WHEN ma.digest IS NOT NULL THEN 'version' ELSE 'run' END,
	COALESCE(ma.path, ra.path), COALESCE(ma.digest, ra.digest), COALESCE(ma.size, ra.size),
	COALESCE(ma.content_type, ra.content_type), COALESCE(ma.recorded_at, ra.recorded_at)
	FROM model_versions v
	LEFT JOIN model_artifacts ma ON ma.model_id = v.model_id AND ma.version = v.version AND ma.path = $3
	LEFT JOIN run_artifacts ra ON ma.digest IS NULL AND ra.path = $3 AND ra.run_id =
		(CASE WHEN v.run_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN v.run_id::uuid END)
		AND EXISTS (SELECT 1 FROM runs r WHERE r.id = ra.run_id AND r.project_id = $4)
	WHERE v.model_id = $1 AND (ma.digest IS NOT NULL OR ra.digest IS NOT NULL) AND `

// VersionExplanation is where version's artifact at path is recorded (its
// own, else its source run's), or ErrNotFound.
func (q *Queries) VersionExplanation(ctx context.Context, projectID, modelID string, version int, path string) (ExplainedVersion, error) {
	return scanExplained(q.pool.QueryRow(ctx, explainedVersionSQL+`v.version = $2`, modelID, version, path, projectID))
}

// PreviousVersionExplanation is VersionExplanation of the nearest live
// (not deleted) version below version that has one, or ErrNotFound.
func (q *Queries) PreviousVersionExplanation(ctx context.Context, projectID, modelID string, version int, path string) (ExplainedVersion, error) {
	return scanExplained(q.pool.QueryRow(ctx, explainedVersionSQL+`v.version < $2 AND NOT v.deleted ORDER BY v.version DESC LIMIT 1`,
		modelID, version, path, projectID))
}

func scanExplained(row pgx.Row) (ExplainedVersion, error) {
	var x ExplainedVersion
	a := &x.Artifact
	err := row.Scan(&x.Version, &x.RunID, &x.Source, &a.Path, &a.Digest, &a.Size, &a.ContentType, &a.RecordedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return x, ErrNotFound
	}
	return x, err
}
