package projections

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Experiment is an experiment as the API shows it.
type Experiment struct {
	ID               string            `json:"id"`
	ProjectID        string            `json:"project_id"`
	Name             string            `json:"name"`
	ArtifactLocation string            `json:"artifact_location"`
	LifecycleStage   string            `json:"lifecycle_stage"` // "active" or "deleted"
	Tags             map[string]string `json:"tags"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
}

// View selects live, deleted or all experiments and runs (MLflow's ViewType).
type View string

// Views.
const (
	ViewActive  View = "active"
	ViewDeleted View = "deleted"
	ViewAll     View = "all"
)

// viewSQL is the condition on a deleted column for v.
func viewSQL(v View) string {
	switch v {
	case ViewDeleted:
		return "deleted"
	case ViewAll:
		return "true"
	}
	return "NOT deleted"
}

// LifecycleStage is MLflow's lifecycle_stage of an experiment or run.
func LifecycleStage(deleted bool) string {
	if deleted {
		return "deleted"
	}
	return "active"
}

const experimentCols = "id, project_id, name, artifact_location, deleted, tags, created_at, updated_at"

func scanExperiment(row pgx.Row, extra ...any) (Experiment, error) {
	var x Experiment
	var deleted bool
	var tags []byte
	err := row.Scan(append([]any{&x.ID, &x.ProjectID, &x.Name, &x.ArtifactLocation, &deleted, &tags, &x.CreatedAt, &x.UpdatedAt}, extra...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return x, ErrNotFound
	}
	if err != nil {
		return x, err
	}
	x.LifecycleStage = LifecycleStage(deleted)
	return x, json.Unmarshal(tags, &x.Tags)
}

// Experiment returns an experiment of the project by id.
func (q *Queries) Experiment(ctx context.Context, projectID, id string) (Experiment, error) {
	if !isUUID(id) {
		return Experiment{}, ErrNotFound
	}
	return scanExperiment(q.pool.QueryRow(ctx, "SELECT "+experimentCols+" FROM experiments WHERE project_id = $1 AND id = $2", projectID, id))
}

// ExperimentByName returns an experiment of the project by its exact name.
func (q *Queries) ExperimentByName(ctx context.Context, projectID, name string) (Experiment, error) {
	return scanExperiment(q.pool.QueryRow(ctx, "SELECT "+experimentCols+" FROM experiments WHERE project_id = $1 AND name = $2", projectID, name))
}

// ListExperiments pages a project's experiments in creation order.
func (q *Queries) ListExperiments(ctx context.Context, projectID string, view View, pageToken string, limit int) (Page[Experiment], error) {
	c, err := decodeCursor(pageToken, seqCursor)
	if err != nil {
		return Page[Experiment]{}, err
	}
	rows, err := q.pool.Query(ctx, "SELECT "+experimentCols+", created_seq FROM experiments WHERE project_id = $1 AND created_seq > $2 AND "+
		viewSQL(view)+" ORDER BY created_seq LIMIT $3", projectID, c.Seq, limit+1)
	if err != nil {
		return Page[Experiment]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (Experiment, cursor, error) {
		var seq int64
		x, err := scanExperiment(r, &seq)
		return x, cursor{Seq: seq}, err
	})
}

// Run is a run as the API shows it, with its params and tags. Times are
// milliseconds since the epoch, as clients send them.
type Run struct {
	ID             string            `json:"id"`
	ExperimentID   string            `json:"experiment_id"`
	ProjectID      string            `json:"project_id"`
	Name           string            `json:"name"`
	UserID         string            `json:"user_id"`
	Status         string            `json:"status"`
	StartTime      int64             `json:"start_time"`
	EndTime        *int64            `json:"end_time,omitempty"`
	LifecycleStage string            `json:"lifecycle_stage"`
	Params         map[string]string `json:"params"`
	Tags           map[string]string `json:"tags"`
	// Metrics is the latest point of each metric (read answers only; a
	// command's answer, from the write side, has none).
	Metrics map[string]LatestMetric `json:"metrics,omitempty"`
	// ArtifactURI is where the run's artifacts are served (RunArtifactsURI).
	ArtifactURI string `json:"artifact_uri"`
	// ModelVersions are the live model versions registered from the run
	// (lineage; read answers only, like Metrics), by model name and number.
	ModelVersions []RunModelVersion `json:"model_versions,omitempty"`
	// Inputs are the datasets the run used, in the order logged (read
	// answers only, like Metrics).
	Inputs []events.DatasetInput `json:"inputs,omitempty"`
}

// RunModelVersion is a model version made from a run: the model's name
// and the version's number.
type RunModelVersion struct {
	Model   string `json:"model"`
	Version int    `json:"version"`
}

// LatestMetric is a run's latest point of one metric (latest_metrics).
type LatestMetric struct {
	Value     events.MetricValue `json:"value"`
	Step      int64              `json:"step"`
	Timestamp int64              `json:"timestamp"`
}

// runCols are a run's columns (runColumns without a table alias).
var runCols = runColumns("")

// runColumns are a run's columns, each qualified by alias ("r." or ""):
// its lifecycle reads deleted when the run or its experiment is deleted
// (MLflow deletes an experiment's runs with it).
func runColumns(alias string) string {
	return strings.NewReplacer("@", alias).Replace("@id, @experiment_id, @project_id, @name, @user_id, @status, @start_time, @end_time, " +
		"(@deleted OR @experiment_deleted)")
}

// runDeleted is whether a run reads as deleted.
const runDeleted = "(deleted OR experiment_deleted)"

// runViewSQL is the condition of view v on runs.
func runViewSQL(v View) string {
	switch v {
	case ViewDeleted:
		return runDeleted
	case ViewAll:
		return "true"
	}
	return "NOT " + runDeleted
}

func scanRun(row pgx.Row) (Run, error) {
	var r Run
	var deleted bool
	err := row.Scan(&r.ID, &r.ExperimentID, &r.ProjectID, &r.Name, &r.UserID, &r.Status, &r.StartTime, &r.EndTime, &deleted)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, ErrNotFound
	}
	r.LifecycleStage = LifecycleStage(deleted)
	r.Params, r.Tags = map[string]string{}, map[string]string{}
	r.ArtifactURI = RunArtifactsURI(r.ProjectID, r.ID)
	return r, err
}

// Run returns a run of the project with its params and tags.
func (q *Queries) Run(ctx context.Context, projectID, id string) (Run, error) {
	if !isUUID(id) {
		return Run{}, ErrNotFound
	}
	r, err := scanRun(q.pool.QueryRow(ctx, "SELECT "+runCols+" FROM runs WHERE project_id = $1 AND id = $2", projectID, id))
	if err != nil {
		return r, err
	}
	runs := []Run{r}
	err = q.runDetails(ctx, runs)
	return runs[0], err
}

// runDetails fills the params, tags, latest metrics, model versions and
// dataset inputs of runs in five queries.
func (q *Queries) runDetails(ctx context.Context, runs []Run) error {
	if len(runs) == 0 {
		return nil
	}
	ids := make([]string, len(runs))
	at := make(map[string]int, len(runs))
	for i, r := range runs {
		ids[i], at[r.ID] = r.ID, i
	}
	for _, t := range []struct {
		table string
		into  func(*Run) map[string]string
	}{{"run_params", func(r *Run) map[string]string { return r.Params }}, {"run_tags", func(r *Run) map[string]string { return r.Tags }}} {
		rows, err := q.pool.Query(ctx, "SELECT run_id, key, value FROM "+t.table+" WHERE run_id = ANY($1::uuid[])", ids)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id, k, v string
			if err := rows.Scan(&id, &k, &v); err != nil {
				rows.Close()
				return err
			}
			t.into(&runs[at[id]])[k] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if err := q.runModelVersions(ctx, runs, ids, at); err != nil {
		return err
	}
	if err := q.runInputs(ctx, runs, ids, at); err != nil {
		return err
	}
	rows, err := q.pool.Query(ctx, "SELECT run_id, key, value, step, ts FROM latest_metrics WHERE run_id = ANY($1::uuid[])", ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, k string
		var m LatestMetric
		var v float64
		if err := rows.Scan(&id, &k, &v, &m.Step, &m.Timestamp); err != nil {
			return err
		}
		m.Value = events.MetricValue(v)
		r := &runs[at[id]]
		if r.Metrics == nil {
			r.Metrics = map[string]LatestMetric{}
		}
		r.Metrics[k] = m
	}
	return rows.Err()
}

// ListRuns pages an experiment's runs, newest start first.
func (q *Queries) ListRuns(ctx context.Context, projectID, experimentID string, view View, pageToken string, limit int) (Page[Run], error) {
	c, err := decodeCursor(pageToken, seqIDCursor)
	if err != nil {
		return Page[Run]{}, err
	}
	after := "true"
	args := []any{projectID, experimentID, limit + 1}
	if pageToken != "" {
		after = "(start_time, id) < ($4, $5::uuid)"
		args = append(args, c.Seq, c.ID)
	}
	rows, err := q.pool.Query(ctx, "SELECT "+runCols+" FROM runs WHERE project_id = $1 AND experiment_id = $2 AND "+runViewSQL(view)+
		" AND "+after+" ORDER BY start_time DESC, id DESC LIMIT $3", args...)
	if err != nil {
		return Page[Run]{}, err
	}
	page := Page[Run]{Items: []Run{}}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			rows.Close()
			return page, err
		}
		if len(page.Items) == limit {
			last := page.Items[limit-1]
			page.NextPageToken = encodeCursor(cursor{Seq: last.StartTime, ID: last.ID})
			break
		}
		page.Items = append(page.Items, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return page, err
	}
	return page, q.runDetails(ctx, page.Items)
}

// runModelVersionsSQL lists the live versions naming the runs $1 (ids as
// text) with their models' names. Both tables are reached through an
// index: the condition that run_id is not empty repeats the predicate of
// the partial index model_versions_run (a generic plan of run_id = ANY($1)
// alone cannot use it, since nothing proves the array holds no empty
// string), and r.id = ANY($1) lets the runs be read by primary key
// (r.id::text = v.run_id alone made every run read scan the whole runs
// table). TestRunLineageUsesIndexes checks the plan.
const runModelVersionsSQL = `SELECT v.run_id, m.name, v.version FROM model_versions v JOIN models m ON m.id = v.model_id
	JOIN runs r ON r.id::text = v.run_id AND r.project_id = m.project_id
	WHERE v.run_id = ANY($1::text[]) AND v.run_id <> '' AND r.id = ANY($1::uuid[]) AND NOT v.deleted AND NOT m.deleted
	ORDER BY m.name_lower, m.name, v.version`

// runModelVersions fills the lineage of runs (ids, at: their ids and
// indexes): the versions registered from each, through the registry's read
// model (the version event carries run_id), so a rebuild of the models
// projection reproduces it. Deleted versions, and the versions of deleted
// models, disappear from every read, here too; a version names a run of
// its own project (the write side checks it), and only those are listed.
func (q *Queries) runModelVersions(ctx context.Context, runs []Run, ids []string, at map[string]int) error {
	rows, err := q.pool.Query(ctx, runModelVersionsSQL, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var mv RunModelVersion
		if err := rows.Scan(&id, &mv.Model, &mv.Version); err != nil {
			return err
		}
		r := &runs[at[id]]
		r.ModelVersions = append(r.ModelVersions, mv)
	}
	return rows.Err()
}

// runInputs fills the dataset inputs of runs (ids, at: their ids and
// indexes), in the order they were logged.
func (q *Queries) runInputs(ctx context.Context, runs []Run, ids []string, at map[string]int) error {
	rows, err := q.pool.Query(ctx, `SELECT run_id, name, digest, source_type, source, schema, profile, tags FROM run_inputs
		WHERE run_id = ANY($1::uuid[]) ORDER BY seq, position`, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var in events.DatasetInput
		if err := rows.Scan(&id, &in.Name, &in.Digest, &in.SourceType, &in.Source, &in.Schema, &in.Profile, &in.Tags); err != nil {
			return err
		}
		r := &runs[at[id]]
		r.Inputs = append(r.Inputs, in)
	}
	return rows.Err()
}
