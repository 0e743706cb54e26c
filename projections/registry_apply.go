package projections

import (
	"encoding/json"
	"strings"

	"github.com/maestro-ml/maestro/events"
)

// Projects is the read model of projects and their members.
type Projects struct{}

// Name implements Projection.
func (Projects) Name() string { return "projects" }

// Tables implements Projection.
func (Projects) Tables() []string { return []string{"projects", "project_members"} }

// Aggregates implements Projection.
func (Projects) Aggregates() []string { return []string{events.AggProject} }

// Handles implements Projection.
func (Projects) Handles(t string) bool {
	switch t {
	case events.ProjectCreated, events.ProjectUpdated, events.ProjectArchived, events.ProjectRestored,
		events.ProjectMemberSet, events.ProjectMemberRemoved:
		return true
	}
	return false
}

// Queue implements Projection.
func (Projects) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		if !(Projects{}).Handles(e.Type) {
			continue
		}
		var head struct {
			ProjectID string `json:"project_id"`
		}
		if err := e.Decode(&head); err != nil {
			return err
		}
		switch e.Type {
		case events.ProjectCreated:
			var d events.ProjectCreatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`INSERT INTO projects (id, slug, name, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)`,
				d.ProjectID, d.Slug, d.Name, d.Description, e.Time)
			b.Queue(`INSERT INTO project_members (project_id, user_id, role, added_at) VALUES ($1, $2, 'owner', $3)`, d.ProjectID, d.OwnerID, e.Time)
		case events.ProjectUpdated:
			var d events.ProjectUpdatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE projects SET description = COALESCE($2, description), updated_at = $3 WHERE id = $1`, d.ProjectID, d.Description, e.Time)
		case events.ProjectArchived, events.ProjectRestored:
			var d events.ProjectLifecycleData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE projects SET archived = $2, updated_at = $3 WHERE id = $1`, d.ProjectID, e.Type == events.ProjectArchived, e.Time)
		case events.ProjectMemberSet:
			var d events.ProjectMemberSetData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`INSERT INTO project_members (project_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role`, d.ProjectID, d.UserID, d.Role, e.Time)
			b.Queue(`UPDATE projects SET updated_at = $2 WHERE id = $1`, d.ProjectID, e.Time)
		case events.ProjectMemberRemoved:
			var d events.ProjectMemberRemovedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, d.ProjectID, d.UserID)
			b.Queue(`UPDATE projects SET updated_at = $2 WHERE id = $1`, d.ProjectID, e.Time)
		}
		b.Invalidate("project", head.ProjectID)
	}
	return nil
}

// Models is the read model of registered models, versions, aliases and artifacts.
type Models struct{}

// Name implements Projection.
func (Models) Name() string { return "models" }

// Tables implements Projection.
func (Models) Tables() []string {
	return []string{"models", "model_versions", "model_aliases", "model_artifacts"}
}

// jsonOrNil encodes a map, or gives SQL NULL for a nil one ("unchanged").
func jsonOrNil[M ~map[string]V, V any](m M) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	return json.Marshal(m)
}

// Aggregates implements Projection.
func (Models) Aggregates() []string { return []string{events.AggModel} }

// Handles implements Projection.
func (Models) Handles(t string) bool { return strings.HasPrefix(t, "maestro.model.") }

// Queue implements Projection.
func (Models) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		if !(Models{}).Handles(e.Type) {
			continue
		}
		var head struct {
			ModelID string `json:"model_id"`
		}
		if err := e.Decode(&head); err != nil {
			return err
		}
		if err := applyModelEvent(b, e); err != nil {
			return err
		}
		b.Invalidate("model", head.ModelID)
		if e.Type != events.ModelCreated && e.Type != events.ModelVersionRegistered {
			b.Queue(`UPDATE models SET updated_at = $2, updated_seq = $3 WHERE id = $1`, head.ModelID, e.Time, int64(e.Sequence))
		}
	}
	return nil
}

func applyModelEvent(b *Batch, e events.Envelope) error {
	switch e.Type {
	case events.ModelCreated:
		var d events.ModelCreatedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		tags, _ := json.Marshal(nonNil(d.Tags))
		b.Queue(`INSERT INTO models (id, project_id, name, name_lower, description, tags, created_at, updated_at, updated_seq)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)`, d.ModelID, d.ProjectID, d.Name, strings.ToLower(d.Name), d.Description, tags, e.Time, int64(e.Sequence))
	case events.ModelUpdated:
		var d events.ModelUpdatedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		tags, err := jsonOrNil(d.Tags)
		if err != nil {
			return err
		}
		b.Queue(`UPDATE models SET description = COALESCE($2, description), tags = COALESCE($3::jsonb, tags) WHERE id = $1`, d.ModelID, d.Description, tags)
	case events.ModelRenamed:
		var d events.ModelRenamedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		b.Queue(`UPDATE models SET name = $2, name_lower = $3 WHERE id = $1`, d.ModelID, d.Name, strings.ToLower(d.Name))
	case events.ModelDeleted, events.ModelRestored:
		var d events.ModelLifecycleData
		if err := e.Decode(&d); err != nil {
			return err
		}
		b.Queue(`UPDATE models SET deleted = $2 WHERE id = $1`, d.ModelID, e.Type == events.ModelDeleted)
	case events.ModelVersionRegistered:
		var d events.ModelVersionRegisteredData
		if err := e.Decode(&d); err != nil {
			return err
		}
		tags, _ := json.Marshal(nonNil(d.Tags))
		metrics, err := jsonOrNil(d.Metrics)
		if err != nil {
			return err
		}
		var sig []byte
		if len(d.Signature) > 0 {
			sig = d.Signature
		}
		b.Queue(`INSERT INTO model_versions (model_id, version, description, tags, source, run_id, metrics, signature, stage, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'none', $9, $9)`, d.ModelID, d.Version, d.Description, tags, d.Source, d.RunID, metrics, sig, e.Time)
		b.Queue(`UPDATE models SET latest_version = GREATEST(latest_version, $2), updated_at = $3, updated_seq = $4 WHERE id = $1`,
			d.ModelID, d.Version, e.Time, int64(e.Sequence))
	case events.ModelVersionUpdated:
		var d events.ModelVersionUpdatedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		tags, err := jsonOrNil(d.Tags)
		if err != nil {
			return err
		}
		b.Queue(`UPDATE model_versions SET description = COALESCE($3, description), tags = COALESCE($4::jsonb, tags), updated_at = $5
			WHERE model_id = $1 AND version = $2`, d.ModelID, d.Version, d.Description, tags, e.Time)
	case events.ModelVersionDeleted:
		var d events.ModelVersionDeletedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		b.Queue(`UPDATE model_versions SET deleted = true, updated_at = $3 WHERE model_id = $1 AND version = $2`, d.ModelID, d.Version, e.Time)
		b.Queue(`DELETE FROM model_aliases WHERE model_id = $1 AND version = $2`, d.ModelID, d.Version)
	case events.ModelVersionTransition:
		var d events.ModelVersionTransitionData
		if err := e.Decode(&d); err != nil {
			return err
		}
		for _, a := range d.Archived {
			b.Queue(`UPDATE model_versions SET stage = 'archived', updated_at = $3 WHERE model_id = $1 AND version = $2`, d.ModelID, a.Version, e.Time)
		}
		b.Queue(`UPDATE model_versions SET stage = $3, updated_at = $4 WHERE model_id = $1 AND version = $2`, d.ModelID, d.Version, d.To, e.Time)
	case events.ModelAliasSet:
		var d events.ModelAliasSetData
		if err := e.Decode(&d); err != nil {
			return err
		}
		b.Queue(`INSERT INTO model_aliases (model_id, alias, version) VALUES ($1, $2, $3)
			ON CONFLICT (model_id, alias) DO UPDATE SET version = EXCLUDED.version`, d.ModelID, d.Alias, d.Version)
	case events.ModelAliasDeleted:
		var d events.ModelAliasDeletedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		b.Queue(`DELETE FROM model_aliases WHERE model_id = $1 AND alias = $2`, d.ModelID, d.Alias)
	case events.ModelArtifactRecorded:
		var d events.ModelArtifactRecordedData
		if err := e.Decode(&d); err != nil {
			return err
		}
		b.Queue(`UPDATE model_versions SET updated_at = $3 WHERE model_id = $1 AND version = $2`, d.ModelID, d.Version, e.Time)
		b.Queue(`INSERT INTO model_artifacts (model_id, version, path, digest, size, content_type, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (model_id, version, path) DO UPDATE SET digest = EXCLUDED.digest, size = EXCLUDED.size,
			content_type = EXCLUDED.content_type, recorded_at = EXCLUDED.recorded_at`, d.ModelID, d.Version, d.Path, d.Digest, d.Size, d.ContentType, e.Time)
	}
	return nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
