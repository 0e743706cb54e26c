package events

// Experiment tracking: experiments (subject maestro.events.experiment.<id>)
// and runs (maestro.events.run.<id>). Run decisions (status, write-once
// params, tags) are made on the run's aggregate; metric points are
// telemetry and live in their own stream, not here.
const (
	ExperimentCreated    = "maestro.experiment.created.v1"
	ExperimentRenamed    = "maestro.experiment.renamed.v1"
	ExperimentTagsSet    = "maestro.experiment.tags_set.v1"
	ExperimentTagDeleted = "maestro.experiment.tag_deleted.v1"
	ExperimentDeleted    = "maestro.experiment.deleted.v1"
	ExperimentRestored   = "maestro.experiment.restored.v1"

	RunCreated      = "maestro.run.created.v1"
	RunUpdated      = "maestro.run.updated.v1"
	RunDeleted      = "maestro.run.deleted.v1"
	RunRestored     = "maestro.run.restored.v1"
	RunParamsLogged = "maestro.run.params_logged.v1"
	RunTagsSet      = "maestro.run.tags_set.v1"
	RunTagDeleted   = "maestro.run.tag_deleted.v1"
	// RunArtifactRecorded names a stored blob as the file at a path of the
	// run's artifacts (a later record for the same path replaces it).
	RunArtifactRecorded = "maestro.run.artifact_recorded.v1"
	// RunInputsLogged records datasets a run used (MLflow's log-inputs),
	// each new to the run by name and digest.
	RunInputsLogged = "maestro.run.inputs_logged.v1"

	// NameReleased frees a reserved name (an experiment's old name after a
	// rename), so a later reservation may take it again.
	NameReleased = "maestro.name.released.v1"
)

// Aggregate types of experiment tracking.
const (
	AggExperiment     = "experiment"
	AggExperimentName = "experimentname" // reservation: sha256(project_id "/" name)
	AggRun            = "run"
)

// ExperimentCreatedData: a new experiment in a project.
type ExperimentCreatedData struct {
	ExperimentID     string            `json:"experiment_id"`
	ProjectID        string            `json:"project_id"`
	Name             string            `json:"name"`
	ArtifactLocation string            `json:"artifact_location"`
	Tags             map[string]string `json:"tags,omitempty"`
}

// ExperimentRenamedData: the experiment's name changed (the old name is
// released in the same atomic append).
type ExperimentRenamedData struct {
	ExperimentID string `json:"experiment_id"`
	ProjectID    string `json:"project_id"`
	Name         string `json:"name"`
	PreviousName string `json:"previous_name"`
}

// TagsSetData: tags set (added or overwritten) on an experiment or a run.
type TagsSetData struct {
	ID   string            `json:"id"`
	Tags map[string]string `json:"tags"`
}

// TagDeletedData: one tag removed from an experiment or a run.
type TagDeletedData struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// ExperimentLifecycleData: an experiment was deleted or restored.
type ExperimentLifecycleData struct {
	ExperimentID string `json:"experiment_id"`
	ProjectID    string `json:"project_id"`
}

// RunCreatedData: a new run. StartTime is milliseconds since the epoch, as
// clients send it (MLflow's unit).
type RunCreatedData struct {
	RunID        string            `json:"run_id"`
	ExperimentID string            `json:"experiment_id"`
	ProjectID    string            `json:"project_id"`
	Name         string            `json:"name"`
	UserID       string            `json:"user_id"`
	StartTime    int64             `json:"start_time"`
	Tags         map[string]string `json:"tags,omitempty"`
}

// RunUpdatedData: a run's status, end time or name changed (absent fields
// are unchanged).
type RunUpdatedData struct {
	RunID   string  `json:"run_id"`
	Status  string  `json:"status,omitempty"`
	EndTime *int64  `json:"end_time,omitempty"`
	Name    *string `json:"name,omitempty"`
}

// RunLifecycleData: a run was deleted or restored.
type RunLifecycleData struct {
	RunID        string `json:"run_id"`
	ExperimentID string `json:"experiment_id"`
}

// Param is one run parameter: written once per key.
type Param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// RunParamsLoggedData: parameters logged on a run, each key new to it.
type RunParamsLoggedData struct {
	RunID  string  `json:"run_id"`
	Params []Param `json:"params"`
}

// RunArtifactRecordedData: the blob stored at Digest is the run's artifact
// at Path, as ModelArtifactRecordedData is a model version's.
type RunArtifactRecordedData struct {
	RunID       string `json:"run_id"`
	Path        string `json:"path"`
	Digest      string `json:"digest"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type"`
}

// DatasetInput is a dataset a run used, as MLflow's DatasetInput: the
// dataset (name, digest, source type, source, optional schema and profile,
// all text as the client sent it) and the input's tags, in order (MLflow's
// mlflow.data.context says how it was used, e.g. "training").
type DatasetInput struct {
	Name       string  `json:"name"`
	Digest     string  `json:"digest"`
	SourceType string  `json:"source_type"`
	Source     string  `json:"source"`
	Schema     string  `json:"schema,omitempty"`
	Profile    string  `json:"profile,omitempty"`
	Tags       []Param `json:"tags,omitempty"`
}

// RunInputsLoggedData: datasets a run used, in the order sent.
type RunInputsLoggedData struct {
	RunID  string         `json:"run_id"`
	Inputs []DatasetInput `json:"inputs"`
}

// NameReleasedData: a reserved name is free again.
type NameReleasedData struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	OwnerID string `json:"owner_id"`
	Scope   string `json:"scope,omitempty"`
}
