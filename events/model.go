package events

import "encoding/json"

// Registered model aggregate events (subject maestro.events.model.<model_id>).
// Versions, aliases, stages and artifacts all live on the model's subject:
// version numbers are gapless because each registration is appended with the
// model's expected version, and a stage change with archive_existing is one
// event, decided once.
const (
	ModelCreated           = "maestro.model.created.v1"
	ModelUpdated           = "maestro.model.updated.v1"
	ModelDeleted           = "maestro.model.deleted.v1"
	ModelRestored          = "maestro.model.restored.v1"
	ModelRenamed           = "maestro.model.renamed.v1"
	ModelVersionRegistered = "maestro.model.version.registered.v1"
	ModelVersionUpdated    = "maestro.model.version.updated.v1"
	ModelVersionDeleted    = "maestro.model.version.deleted.v1"
	ModelVersionTransition = "maestro.model.version.stage_transitioned.v1"
	ModelAliasSet          = "maestro.model.alias.set.v1"
	ModelAliasDeleted      = "maestro.model.alias.deleted.v1"
	ModelArtifactRecorded  = "maestro.model.version.artifact_recorded.v1"
)

// Stages of a model version.
const (
	StageNone       = "none"
	StageStaging    = "staging"
	StageProduction = "production"
	StageArchived   = "archived"
)

// ModelCreatedData: a registered model in a project.
type ModelCreatedData struct {
	ModelID     string            `json:"model_id"`
	ProjectID   string            `json:"project_id"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Tags        map[string]string `json:"tags"`
}

// ModelUpdatedData: changed description and/or tags (nil = unchanged; tags replace).
type ModelUpdatedData struct {
	ModelID     string            `json:"model_id"`
	Description *string           `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitzero"` // nil = unchanged; {} clears
}

// ModelLifecycleData: a model was soft-deleted or restored.
type ModelLifecycleData struct {
	ModelID   string `json:"model_id"`
	ProjectID string `json:"project_id"`
}

// ModelRenamedData: the model's name changed. Names are never released: the
// old one stays reserved by this model (only it may take it back), so a
// name that once resolved to a model never resolves to another one.
type ModelRenamedData struct {
	ModelID      string `json:"model_id"`
	ProjectID    string `json:"project_id"`
	Name         string `json:"name"`
	PreviousName string `json:"previous_name"`
}

// ModelVersionRegisteredData: version Version of the model.
type ModelVersionRegisteredData struct {
	ModelID     string             `json:"model_id"`
	Version     int                `json:"version"`
	Description string             `json:"description"`
	Tags        map[string]string  `json:"tags"`
	Source      string             `json:"source"`
	RunID       string             `json:"run_id,omitempty"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
	Signature   json.RawMessage    `json:"signature,omitempty"`
}

// ModelVersionUpdatedData: changed description and/or tags of a version.
type ModelVersionUpdatedData struct {
	ModelID     string            `json:"model_id"`
	Version     int               `json:"version"`
	Description *string           `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitzero"` // nil = unchanged; {} clears
}

// ModelVersionDeletedData: a version was soft-deleted.
type ModelVersionDeletedData struct {
	ModelID string `json:"model_id"`
	Version int    `json:"version"`
	// RemovedAliases pointed at the version and are removed with it.
	RemovedAliases []string `json:"removed_aliases,omitempty"`
}

// ArchivedVersion is a version archived as part of another's transition.
type ArchivedVersion struct {
	Version int    `json:"version"`
	From    string `json:"from"`
}

// ModelVersionTransitionData: Version moved From → To; with archive_existing,
// the versions that held To before are archived in the same event.
type ModelVersionTransitionData struct {
	ModelID  string            `json:"model_id"`
	Version  int               `json:"version"`
	From     string            `json:"from"`
	To       string            `json:"to"`
	Archived []ArchivedVersion `json:"archived,omitempty"`
	// PromotionID and OverrideReason: see Authority.
	PromotionID    string `json:"promotion_id,omitempty"`
	OverrideReason string `json:"override_reason,omitempty"`
}

// Authority names what allowed a move of a governed deployment pointer: the
// approved promotion request the flow carried out, or an administrator's
// emergency override and its reason. Both empty: no policy governed it.
// The model's transition and alias events carry its two fields.
type Authority struct {
	PromotionID    string `json:"promotion_id,omitempty"`
	OverrideReason string `json:"override_reason,omitempty"`
}

// ModelAliasSetData: Alias now points at Version (PreviousVersion 0 = new alias).
type ModelAliasSetData struct {
	ModelID         string `json:"model_id"`
	Alias           string `json:"alias"`
	Version         int    `json:"version"`
	PreviousVersion int    `json:"previous_version,omitempty"`
	PromotionID     string `json:"promotion_id,omitempty"`
	OverrideReason  string `json:"override_reason,omitempty"`
}

// ModelAliasDeletedData: Alias no longer exists (it pointed at Version).
type ModelAliasDeletedData struct {
	ModelID        string `json:"model_id"`
	Alias          string `json:"alias"`
	Version        int    `json:"version"`
	PromotionID    string `json:"promotion_id,omitempty"`
	OverrideReason string `json:"override_reason,omitempty"`
}

// ModelArtifactRecordedData: a blob stored at Digest is the artifact at Path
// of a version (a later record for the same path replaces it).
type ModelArtifactRecordedData struct {
	ModelID     string `json:"model_id"`
	Version     int    `json:"version"`
	Path        string `json:"path"`
	Digest      string `json:"digest"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
}
