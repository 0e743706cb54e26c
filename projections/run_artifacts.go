package projections

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// Run artifacts (table run_artifacts, projection Runs) and the queries that
// read them, the model versions' artifacts too: every artifact list is one
// path-ordered page of the same rows (artifactPage).

// RunArtifactsURI is where Maestro's API serves a run's artifacts: the
// run's artifact_uri (a path on the API's own origin, which the server
// cannot name; the MLflow façade gives MLflow's form instead).
func RunArtifactsURI(projectID, runID string) string {
	return "/api/v1/projects/" + projectID + "/runs/" + runID + "/artifacts"
}

// artifactPage reads one page of an artifact list. query selects (sort
// key, path, is_dir, digest, size, content_type, recorded_at) in sort-key
// order; its $1 is the cursor (the last key of the previous page, "" for
// the first) and $2 the row limit, which is limit+1 (the extra row says
// there is a next page); args are $3 on.
func (q *Queries) artifactPage(ctx context.Context, pageToken string, limit int, query string, args ...any) (Page[ArtifactEntry], error) {
	c, err := decodeCursor(pageToken, keyCursor)
	if err != nil {
		return Page[ArtifactEntry]{}, err
	}
	rows, err := q.pool.Query(ctx, query, append([]any{c.Key, limit + 1}, args...)...)
	if err != nil {
		return Page[ArtifactEntry]{}, err
	}
	defer rows.Close()
	page := Page[ArtifactEntry]{Items: []ArtifactEntry{}}
	var last string
	for rows.Next() {
		var a ArtifactEntry
		var key string
		if err := rows.Scan(&key, &a.Path, &a.IsDir, &a.Digest, &a.Size, &a.ContentType, &a.RecordedAt); err != nil {
			return page, err
		}
		if len(page.Items) == limit {
			page.NextPageToken = encodeCursor(cursor{Key: last})
			break
		}
		page.Items = append(page.Items, a)
		last = key
	}
	return page, rows.Err()
}

// scanArtifact reads one artifact (path, digest, size, content_type,
// recorded_at).
func scanArtifact(row pgx.Row) (ArtifactEntry, error) {
	var a ArtifactEntry
	err := row.Scan(&a.Path, &a.Digest, &a.Size, &a.ContentType, &a.RecordedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	return a, err
}

// RunInProject reports whether id is a run (deleted or not) of the
// project: the check of an artifact read, which needs nothing else of the
// run (Run also reads its params, tags, metrics, lineage and inputs).
func (q *Queries) RunInProject(ctx context.Context, projectID, id string) (bool, error) {
	if !isUUID(id) || !isUUID(projectID) {
		return false, nil
	}
	var found bool
	err := q.pool.QueryRow(ctx, `SELECT `+runOfProject("$1", "$2"), id, projectID).Scan(&found)
	return found, err
}

// runOfProject keeps a run's artifacts to a run of the project the caller
// named: run and project are the placeholders of their ids.
func runOfProject(run, project string) string {
	return `EXISTS (SELECT 1 FROM runs r WHERE r.id = ` + run + ` AND r.project_id = ` + project + `)`
}

// ListRunArtifacts pages every file of a run of the project in path order
// (bytewise), as ListArtifacts does a version's. A run of another project
// has none.
func (q *Queries) ListRunArtifacts(ctx context.Context, projectID, runID, pageToken string, limit int) (Page[ArtifactEntry], error) {
	if !isUUID(runID) || !isUUID(projectID) {
		return Page[ArtifactEntry]{Items: []ArtifactEntry{}}, nil
	}
	return q.artifactPage(ctx, pageToken, limit, `SELECT path, path, false, digest, size, content_type, recorded_at FROM run_artifacts
		WHERE run_id = $3 AND path > $1 AND `+runOfProject("$3", "$4")+` ORDER BY path LIMIT $2`, runID, projectID)
}

// RunArtifactDirPage pages one directory level of a run's artifacts, as
// MLflow lists them: dir's children ("" is the run's root), files with
// their record, and directories (IsDir, Path only, RecordedAt the latest
// record inside) made up from the paths of the files below them. Paths are
// run-relative ("dir/child"). Entries come in the order of their names
// (bytewise; a directory sorts as its name followed by "/"), so a file and
// a directory of the same name are two entries. A dir that is a file, or
// holds nothing, lists nothing.
func (q *Queries) RunArtifactDirPage(ctx context.Context, projectID, runID, dir, pageToken string, limit int) (Page[ArtifactEntry], error) {
	if !isUUID(runID) || !isUUID(projectID) {
		return Page[ArtifactEntry]{Items: []ArtifactEntry{}}, nil
	}
	return q.artifactDirPage(ctx, `SELECT path, digest, size, content_type, recorded_at FROM run_artifacts
		WHERE run_id = $4 AND `+runOfProject("$4", "$5"), dir, pageToken, limit, runID, projectID)
}

// VersionArtifactDirPage is RunArtifactDirPage of a model version's
// artifacts (the MLflow artifact proxy lists them as a directory tree).
func (q *Queries) VersionArtifactDirPage(ctx context.Context, modelID string, version int, dir, pageToken string, limit int) (Page[ArtifactEntry], error) {
	return q.artifactDirPage(ctx, `SELECT path, digest, size, content_type, recorded_at FROM model_artifacts
		WHERE model_id = $4 AND version = $5`, dir, pageToken, limit, modelID, version)
}

// artifactDirPage pages one directory level (dir, "" for the root) of the
// artifacts that files selects (path, digest, size, content_type,
// recorded_at; its parameters are args, from $4 on).
func (q *Queries) artifactDirPage(ctx context.Context, files, dir, pageToken string, limit int, args ...any) (Page[ArtifactEntry], error) {
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	// child is the first segment of a path below prefix, is_dir whether
	// more segments follow; substr counts characters, as char_length does.
	return q.artifactPage(ctx, pageToken, limit, `SELECT key, path, is_dir, digest, size, content_type, recorded_at FROM (
		SELECT (child || CASE WHEN is_dir THEN '/' ELSE '' END) COLLATE "C" AS key, $3 || child AS path, is_dir,
			CASE WHEN is_dir THEN '' ELSE max(digest) END AS digest, CASE WHEN is_dir THEN 0 ELSE max(size) END AS size,
			CASE WHEN is_dir THEN '' ELSE max(content_type) END AS content_type, max(recorded_at) AS recorded_at
		FROM (SELECT split_part(rest, '/', 1) AS child, strpos(rest, '/') > 0 AS is_dir, digest, size, content_type, recorded_at
			FROM (SELECT substr(path, char_length($3) + 1) AS rest, digest, size, content_type, recorded_at
				FROM (`+files+`) files WHERE starts_with(path, $3)) below) entries
		GROUP BY child, is_dir) listed
		WHERE key > $1 ORDER BY key LIMIT $2`, append([]any{prefix}, args...)...)
}

// artifactDirBatch is the page size a whole directory is read in.
const artifactDirBatch = 1000

// RunArtifactDir is a whole directory level of a run's artifacts
// (RunArtifactDirPage without paging; a run holds at most
// tracking.MaxArtifactsPerRun files, so a directory is bounded too): what
// MLflow's artifacts/list answers, entry by entry.
func (q *Queries) RunArtifactDir(ctx context.Context, projectID, runID, dir string) ([]ArtifactEntry, error) {
	return wholeDir(func(token string) (Page[ArtifactEntry], error) {
		return q.RunArtifactDirPage(ctx, projectID, runID, dir, token, artifactDirBatch)
	})
}

// VersionArtifactDir is a whole directory level of a version's artifacts.
func (q *Queries) VersionArtifactDir(ctx context.Context, modelID string, version int, dir string) ([]ArtifactEntry, error) {
	return wholeDir(func(token string) (Page[ArtifactEntry], error) {
		return q.VersionArtifactDirPage(ctx, modelID, version, dir, token, artifactDirBatch)
	})
}

func wholeDir(page func(token string) (Page[ArtifactEntry], error)) ([]ArtifactEntry, error) {
	var out []ArtifactEntry
	token := ""
	for {
		p, err := page(token)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Items...)
		if token = p.NextPageToken; token == "" {
			return out, nil
		}
	}
}

// RunArtifact returns the file at path of a run of the project.
func (q *Queries) RunArtifact(ctx context.Context, projectID, runID, path string) (ArtifactEntry, error) {
	if !isUUID(runID) || !isUUID(projectID) {
		return ArtifactEntry{}, ErrNotFound
	}
	return scanArtifact(q.pool.QueryRow(ctx, `SELECT path, digest, size, content_type, recorded_at FROM run_artifacts
		WHERE run_id = $1 AND path = $2 AND `+runOfProject("$1", "$3"), runID, path, projectID))
}
