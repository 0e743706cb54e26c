package projections

import (
	"encoding/json"

	"github.com/maestro-ml/maestro/events"
)

// Experiments is the read model of experiments.
type Experiments struct{}

// Name implements Projection.
func (Experiments) Name() string { return "experiments" }

// Tables implements Projection.
func (Experiments) Tables() []string { return []string{"experiments"} }

// Aggregates implements Projection.
func (Experiments) Aggregates() []string { return []string{events.AggExperiment} }

// Handles implements Projection.
func (Experiments) Handles(t string) bool {
	switch t {
	case events.ExperimentCreated, events.ExperimentRenamed, events.ExperimentTagsSet, events.ExperimentTagDeleted,
		events.ExperimentDeleted, events.ExperimentRestored:
		return true
	}
	return false
}

// Queue implements Projection.
func (Experiments) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		seq := int64(e.Sequence)
		switch e.Type {
		case events.ExperimentCreated:
			var d events.ExperimentCreatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			tags, _ := json.Marshal(nonNil(d.Tags))
			b.Queue(`INSERT INTO experiments (id, project_id, name, artifact_location, tags, created_at, updated_at, created_seq, updated_seq)
				VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $7)`, d.ExperimentID, d.ProjectID, d.Name, d.ArtifactLocation, tags, e.Time, seq)
		case events.ExperimentRenamed:
			var d events.ExperimentRenamedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE experiments SET name = $2, updated_at = $3, updated_seq = $4 WHERE id = $1`, d.ExperimentID, d.Name, e.Time, seq)
		case events.ExperimentTagsSet:
			var d events.TagsSetData
			if err := e.Decode(&d); err != nil {
				return err
			}
			tags, _ := json.Marshal(nonNil(d.Tags))
			b.Queue(`UPDATE experiments SET tags = tags || $2::jsonb, updated_at = $3, updated_seq = $4 WHERE id = $1`, d.ID, tags, e.Time, seq)
		case events.ExperimentTagDeleted:
			var d events.TagDeletedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE experiments SET tags = tags - $2::text, updated_at = $3, updated_seq = $4 WHERE id = $1`, d.ID, d.Key, e.Time, seq)
		case events.ExperimentDeleted, events.ExperimentRestored:
			var d events.ExperimentLifecycleData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE experiments SET deleted = $2, updated_at = $3, updated_seq = $4 WHERE id = $1`,
				d.ExperimentID, e.Type == events.ExperimentDeleted, e.Time, seq)
		}
	}
	return nil
}

// Runs is the read model of runs with their params, tags and artifacts
// (metrics have their own stream and tables).
type Runs struct{}

// Name implements Projection.
func (Runs) Name() string { return "runs" }

// Tables implements Projection.
func (Runs) Tables() []string {
	return []string{"runs", "run_params", "run_tags", "run_artifacts", "run_inputs"}
}

// Aggregates implements Projection: runs, and their experiments' deletion.
func (Runs) Aggregates() []string { return []string{events.AggRun, events.AggExperiment} }

// Handles implements Projection.
func (Runs) Handles(t string) bool {
	switch t {
	case events.RunCreated, events.RunUpdated, events.RunDeleted, events.RunRestored, events.RunParamsLogged,
		events.RunTagsSet, events.RunTagDeleted, events.RunArtifactRecorded, events.RunInputsLogged,
		events.ExperimentDeleted, events.ExperimentRestored:
		return true
	}
	return false
}

// Queue implements Projection.
func (Runs) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		seq := int64(e.Sequence)
		switch e.Type {
		case events.RunCreated:
			var d events.RunCreatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`INSERT INTO runs (id, experiment_id, project_id, name, user_id, status, start_time, created_seq, updated_seq)
				VALUES ($1, $2, $3, $4, $5, 'RUNNING', $6, $7, $7)`, d.RunID, d.ExperimentID, d.ProjectID, d.Name, d.UserID, d.StartTime, seq)
			queueTags(b, d.RunID, d.Tags)
		case events.RunUpdated:
			var d events.RunUpdatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE runs SET status = COALESCE(NULLIF($2, ''), status), end_time = COALESCE($3, end_time),
				name = COALESCE($4, name), updated_seq = $5 WHERE id = $1`, d.RunID, d.Status, d.EndTime, d.Name, seq)
		case events.RunDeleted, events.RunRestored:
			var d events.RunLifecycleData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE runs SET deleted = $2, updated_seq = $3 WHERE id = $1`, d.RunID, e.Type == events.RunDeleted, seq)
		case events.ExperimentDeleted, events.ExperimentRestored:
			// Its runs read as deleted while it is (they keep their own
			// deleted flag, which a restore brings back).
			var d events.ExperimentLifecycleData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE runs SET experiment_deleted = $2 WHERE experiment_id = $1`, d.ExperimentID, e.Type == events.ExperimentDeleted)
		case events.RunParamsLogged:
			var d events.RunParamsLoggedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			keys, values := make([]string, len(d.Params)), make([]string, len(d.Params))
			for i, p := range d.Params {
				keys[i], values[i] = p.Key, p.Value
			}
			// Write-once is decided on the run's aggregate; DO NOTHING only
			// keeps a replayed batch from failing.
			b.Queue(`INSERT INTO run_params (run_id, key, value) SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)
				ON CONFLICT (run_id, key) DO NOTHING`, d.RunID, keys, values)
			b.Queue(`UPDATE runs SET updated_seq = $2 WHERE id = $1`, d.RunID, seq)
		case events.RunTagsSet:
			var d events.TagsSetData
			if err := e.Decode(&d); err != nil {
				return err
			}
			queueTags(b, d.ID, d.Tags)
			b.Queue(`UPDATE runs SET updated_seq = $2 WHERE id = $1`, d.ID, seq)
		case events.RunTagDeleted:
			var d events.TagDeletedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`DELETE FROM run_tags WHERE run_id = $1 AND key = $2`, d.ID, d.Key)
			b.Queue(`UPDATE runs SET updated_seq = $2 WHERE id = $1`, d.ID, seq)
		case events.RunArtifactRecorded:
			var d events.RunArtifactRecordedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`INSERT INTO run_artifacts (run_id, path, digest, size, content_type, recorded_at) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (run_id, path) DO UPDATE SET digest = EXCLUDED.digest, size = EXCLUDED.size,
				content_type = EXCLUDED.content_type, recorded_at = EXCLUDED.recorded_at`, d.RunID, d.Path, d.Digest, d.Size, d.ContentType, e.Time)
			b.Queue(`UPDATE runs SET updated_seq = $2 WHERE id = $1`, d.RunID, seq)
		case events.RunInputsLogged:
			var d events.RunInputsLoggedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			for i, in := range d.Inputs {
				tags := in.Tags
				if tags == nil {
					tags = []events.Param{}
				}
				// New to the run is decided on its aggregate; DO NOTHING only
				// keeps a replayed batch from failing.
				b.Queue(`INSERT INTO run_inputs (run_id, name, digest, source_type, source, schema, profile, tags, seq, position)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (run_id, name, digest) DO NOTHING`,
					d.RunID, in.Name, in.Digest, in.SourceType, in.Source, in.Schema, in.Profile, tags, seq, i)
			}
			b.Queue(`UPDATE runs SET updated_seq = $2 WHERE id = $1`, d.RunID, seq)
		}
	}
	return nil
}

// queueTags upserts a run's tags in one statement.
func queueTags(b *Batch, runID string, tags map[string]string) {
	if len(tags) == 0 {
		return
	}
	keys, values := make([]string, 0, len(tags)), make([]string, 0, len(tags))
	for k, v := range tags {
		keys, values = append(keys, k), append(values, v)
	}
	b.Queue(`INSERT INTO run_tags (run_id, key, value) SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS t(k, v)
		ON CONFLICT (run_id, key) DO UPDATE SET value = EXCLUDED.value`, runID, keys, values)
}
