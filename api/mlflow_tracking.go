package api

import (
	"cmp"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/projections"
)

// MLflow's tracking service (service.proto) over tracking.Service and the
// experiments, runs and metrics read models. Mapping decisions (see
// docs/ARCHITECTURE.md, "MLflow-compatible API"):
//
//   - Ids are Maestro's: experiments and runs answer with their canonical
//     uuids. A uuid's 32 hex digits without dashes (the form MLflow mints)
//     are accepted too, and experiment id "0" is the project's experiment
//     named Default, created by the first run that needs it.
//   - A run's user_id is the Maestro user who created it; the deprecated
//     user_id a client sends is not stored (the mlflow.user tag is).
//   - Metric values read back as MLflow's SQL store reads them
//     (mlflowDouble), and a JSON null is logged as NaN (mlDouble).
//   - max_results above Maestro's page size (1,000) is answered with a
//     full page and a next_page_token: MLflow's clients page on.
func (s *Server) mlflowTrackingRPCs() []mlflowRPC {
	const body = trackingMaxBody
	metrics := []string{projections.Metrics{}.Name()}
	return []mlflowRPC{
		{method: "POST", path: "/mlflow/experiments/create", command: true, maxBody: body, handle: mlflowHandler(s, s.mlCreateExperiment)},
		{method: "GET", path: "/mlflow/experiments/get", handle: mlflowHandler(s, s.mlGetExperiment)},
		{method: "GET", path: "/mlflow/experiments/get-by-name", handle: mlflowHandler(s, s.mlGetExperimentByName)},
		{method: "POST", path: "/mlflow/experiments/search", handle: mlflowHandler(s, s.mlSearchExperiments)},
		{method: "GET", path: "/mlflow/experiments/search", handle: mlflowHandler(s, s.mlSearchExperiments)},
		// MLflow 1.x's list, which the npm client still calls.
		{method: "GET", path: "/mlflow/experiments/list", handle: mlflowHandler(s, s.mlListExperiments)},
		{method: "POST", path: "/mlflow/experiments/update", command: true, handle: mlflowHandler(s, s.mlUpdateExperiment)},
		{method: "POST", path: "/mlflow/experiments/delete", command: true, handle: mlflowHandler(s, s.mlDeleteExperiment)},
		{method: "POST", path: "/mlflow/experiments/restore", command: true, handle: mlflowHandler(s, s.mlRestoreExperiment)},
		{method: "POST", path: "/mlflow/experiments/set-experiment-tag", command: true, maxBody: body, handle: mlflowHandler(s, s.mlSetExperimentTag)},
		// The path the npm client sends set-experiment-tag to (its URL
		// lacks a slash, docs/MLFLOW_REFERENCE.md §9).
		{method: "POST", path: "/mlflow/experimentsset-experiment-tag", command: true, maxBody: body, handle: mlflowHandler(s, s.mlSetExperimentTag)},
		{method: "POST", path: "/mlflow/experiments/delete-experiment-tag", command: true, handle: mlflowHandler(s, s.mlDeleteExperimentTag)},
		{method: "POST", path: "/mlflow/runs/create", command: true, maxBody: body, handle: mlflowHandler(s, s.mlCreateRun)},
		{method: "GET", path: "/mlflow/runs/get", handle: mlflowHandler(s, s.mlGetRun)},
		{method: "POST", path: "/mlflow/runs/update", command: true, handle: mlflowHandler(s, s.mlUpdateRun)},
		{method: "POST", path: "/mlflow/runs/delete", command: true, handle: mlflowHandler(s, s.mlDeleteRun)},
		{method: "POST", path: "/mlflow/runs/restore", command: true, handle: mlflowHandler(s, s.mlRestoreRun)},
		{method: "POST", path: "/mlflow/runs/search", handle: mlflowHandler(s, s.mlSearchRuns)},
		{method: "POST", path: "/mlflow/runs/log-metric", command: true, await: metrics, handle: mlflowHandler(s, s.mlLogMetric)},
		{method: "POST", path: "/mlflow/runs/log-parameter", command: true, maxBody: body, handle: mlflowHandler(s, s.mlLogParam)},
		{method: "POST", path: "/mlflow/runs/set-tag", command: true, maxBody: body, handle: mlflowHandler(s, s.mlSetTag)},
		{method: "POST", path: "/mlflow/runs/delete-tag", command: true, handle: mlflowHandler(s, s.mlDeleteTag)},
		{method: "POST", path: "/mlflow/runs/log-batch", command: true, maxBody: body, handle: mlflowHandler(s, s.mlLogBatch)},
		{method: "POST", path: "/mlflow/runs/log-inputs", command: true, maxBody: body, handle: mlflowHandler(s, s.mlLogInputs)},
		{method: "GET", path: "/mlflow/metrics/get-history", handle: mlflowHandler(s, s.mlMetricHistory)},
	}
}

// ---- shapes (service.proto) ----

// MLflowExperiment is MLflow's Experiment.
type MLflowExperiment struct {
	ExperimentID     string     `json:"experiment_id"`
	Name             string     `json:"name"`
	ArtifactLocation string     `json:"artifact_location"`
	LifecycleStage   string     `json:"lifecycle_stage"`
	LastUpdateTime   int64      `json:"last_update_time"`
	CreationTime     int64      `json:"creation_time"`
	Tags             []mlflowKV `json:"tags,omitempty"`
}

// MLflowRunInfo is MLflow's RunInfo (run_uuid is the deprecated copy of
// run_id that older clients read).
type MLflowRunInfo struct {
	RunID          string `json:"run_id"`
	RunUUID        string `json:"run_uuid"`
	RunName        string `json:"run_name"`
	ExperimentID   string `json:"experiment_id"`
	UserID         string `json:"user_id"`
	Status         string `json:"status"`
	StartTime      int64  `json:"start_time"`
	EndTime        *int64 `json:"end_time,omitempty"`
	ArtifactURI    string `json:"artifact_uri"`
	LifecycleStage string `json:"lifecycle_stage"`
}

// MLflowMetric is MLflow's Metric.
type MLflowMetric struct {
	Key       string             `json:"key"`
	Value     events.MetricValue `json:"value"`
	Timestamp int64              `json:"timestamp"`
	Step      int64              `json:"step"`
}

// MLflowRunData is MLflow's RunData: the latest point of each metric,
// params and tags, ordered by key.
type MLflowRunData struct {
	Metrics []MLflowMetric `json:"metrics,omitempty"`
	Params  []mlflowKV     `json:"params,omitempty"`
	Tags    []mlflowKV     `json:"tags,omitempty"`
}

// MLflowDatasetInput is MLflow's DatasetInput: the input's tags and the
// dataset (MLflow's Dataset: events.DatasetInput without its tags).
type MLflowDatasetInput struct {
	Tags    []events.Param      `json:"tags,omitempty"`
	Dataset events.DatasetInput `json:"dataset"`
}

// MLflowRunInputs is MLflow's RunInputs (MLflow 3's model inputs are not
// kept: Maestro has no logged models).
type MLflowRunInputs struct {
	DatasetInputs []MLflowDatasetInput `json:"dataset_inputs,omitempty"`
}

// MLflowRun is MLflow's Run.
type MLflowRun struct {
	Info   MLflowRunInfo   `json:"info"`
	Data   MLflowRunData   `json:"data"`
	Inputs MLflowRunInputs `json:"inputs"`
}

func mlflowExperimentOf(x projections.Experiment) MLflowExperiment {
	loc := x.ArtifactLocation
	if loc == "" {
		loc = "mlflow-artifacts:/" + x.ID
	}
	return MLflowExperiment{ExperimentID: x.ID, Name: x.Name, ArtifactLocation: loc, LifecycleStage: x.LifecycleStage,
		LastUpdateTime: x.UpdatedAt.UnixMilli(), CreationTime: x.CreatedAt.UnixMilli(), Tags: mlflowKVs(x.Tags)}
}

// mlflowRunArtifactURI is a run's artifact_uri: MLflow's proxied form,
// which MLflow clients resolve against the tracking URI
// (<tracking URI>/api/2.0/mlflow-artifacts/artifacts/<experiment>/<run>/artifacts/...).
func mlflowRunArtifactURI(r projections.Run) string {
	return "mlflow-artifacts:/" + r.ExperimentID + "/" + r.ID + "/artifacts"
}

func mlflowRunInfoOf(r projections.Run) MLflowRunInfo {
	return MLflowRunInfo{RunID: r.ID, RunUUID: r.ID, RunName: r.Name, ExperimentID: r.ExperimentID, UserID: r.UserID,
		Status: r.Status, StartTime: r.StartTime, EndTime: r.EndTime, ArtifactURI: mlflowRunArtifactURI(r), LifecycleStage: r.LifecycleStage}
}

func mlflowRunOf(r projections.Run) MLflowRun {
	out := MLflowRun{Info: mlflowRunInfoOf(r), Data: MLflowRunData{Params: mlflowKVs(r.Params), Tags: mlflowKVs(r.Tags)}}
	for _, k := range slices.Sorted(maps.Keys(r.Metrics)) {
		m := r.Metrics[k]
		out.Data.Metrics = append(out.Data.Metrics, MLflowMetric{Key: k, Value: mlflowDouble(m.Value), Timestamp: m.Timestamp, Step: m.Step})
	}
	for _, in := range r.Inputs {
		tags := in.Tags
		in.Tags = nil
		out.Inputs.DatasetInputs = append(out.Inputs.DatasetInputs, MLflowDatasetInput{Tags: tags, Dataset: in})
	}
	return out
}

// ---- ids and references ----

// defaultExperimentID is the id MLflow clients give the Default experiment.
const defaultExperimentID = "0"

// mlflowUUID is an id as Maestro stores it: a uuid in canonical form,
// from that form or its 32 hex digits; anything else is passed on as sent
// (and found nowhere).
func mlflowUUID(id string) string {
	if len(id) == 32 || len(id) == 36 {
		if u, err := uuid.Parse(id); err == nil {
			return u.String()
		}
	}
	return id
}

func experimentMissing(id string) error {
	return mlflowProblem("RESOURCE_DOES_NOT_EXIST", "No Experiment with id="+id+" exists")
}

func runMissing(id string) error {
	return mlflowProblem("RESOURCE_DOES_NOT_EXIST", "Run with id="+id+" not found")
}

// mlflowExperimentRow reads an experiment of the project by its MLflow id.
func (s *Server) mlflowExperimentRow(c *call, proj projections.Project, id string) (projections.Experiment, error) {
	var x projections.Experiment
	var err error
	if id == defaultExperimentID {
		x, err = s.deps.Queries.ExperimentByName(c.ctx, proj.ID, tracking.DefaultExperimentName)
	} else {
		x, err = s.deps.Queries.Experiment(c.ctx, proj.ID, mlflowUUID(id))
	}
	if errors.Is(err, projections.ErrNotFound) {
		return x, experimentMissing(id)
	}
	return x, err
}

// mlflowExperimentRef resolves an experiment id for a command: "0" is the
// Default experiment, found on the write side (ExperimentNamed).
func (s *Server) mlflowExperimentRef(c *call, ref, id string) (string, error) {
	if id != defaultExperimentID {
		return mlflowUUID(id), nil
	}
	x, err := s.deps.Tracking.ExperimentNamed(c.ctx, c.who, ref, tracking.DefaultExperimentName)
	return x.ID, mlflowMissing(err, "experiment", experimentMissing(id))
}

// mlflowExperimentCommand runs an experiment command of the request's
// project on the experiment id names, and settles its sequence.
func (s *Server) mlflowExperimentCommand(c *call, id string,
	do func(ref, id string) (tracking.ExperimentState, uint64, error)) (struct{}, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return struct{}{}, err
	}
	xid, err := s.mlflowExperimentRef(c, ref, id)
	if err != nil {
		return struct{}{}, err
	}
	_, seq, err := do(ref, xid)
	if err != nil {
		return struct{}{}, mlflowMissing(err, "experiment", experimentMissing(id))
	}
	s.settle(c, "Maestro-Sequence", seq)
	return struct{}{}, nil
}

// mlflowRunCommand runs a run command of the request's project and settles
// its sequence.
func (s *Server) mlflowRunCommand(c *call, id string, do func(ref, id string) (uint64, error)) (struct{}, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return struct{}{}, err
	}
	seq, err := do(ref, mlflowUUID(id))
	if err != nil {
		return struct{}{}, mlflowMissing(err, "run", runMissing(id))
	}
	s.settle(c, "Maestro-Sequence", seq)
	return struct{}{}, nil
}

// ---- requests ----

// mlflowRunRef is run_id, or the deprecated run_uuid older clients send.
type mlflowRunRef struct {
	RunID   string `json:"run_id"`
	RunUUID string `json:"run_uuid"`
}

func (r *mlflowRunRef) id() string {
	if r.RunID != "" {
		return r.RunID
	}
	return r.RunUUID
}

func (r *mlflowRunRef) validate() error { return mlflowRequired("run_id", r.id()) }

// mlflowRunKey is a run and a key, both required.
type mlflowRunKey struct {
	mlflowRunRef
	Key string `json:"key"`
}

func (r *mlflowRunKey) validate() error {
	return cmp.Or(r.mlflowRunRef.validate(), mlflowRequired("key", r.Key))
}

type mlflowExperimentIDRequest struct {
	ExperimentID mlID `json:"experiment_id"`
}

func (r *mlflowExperimentIDRequest) validate() error {
	return mlflowRequired("experiment_id", string(r.ExperimentID))
}

// viewTypes are MLflow's ViewType names, in proto order.
var viewTypes = []string{"ACTIVE_ONLY", "DELETED_ONLY", "ALL"}

// mlflowSearch checks what every tracking search shares and resolves the
// project: the view type (field names it; ACTIVE_ONLY by default) and the
// page size, MLflow's default (1,000) when absent, MLflow's refusal above
// 50,000, and at most Maestro's page (projections.MaxSearchResults) in
// between.
func (s *Server) mlflowSearch(c *call, field string, viewType mlEnum, maxResults *mlInt64) (projections.Project, projections.View, int, error) {
	v, err := viewType.of(field, viewTypes, "ACTIVE_ONLY")
	if err != nil {
		return projections.Project{}, "", 0, err
	}
	view := map[string]projections.View{"ACTIVE_ONLY": projections.ViewActive, "DELETED_ONLY": projections.ViewDeleted, "ALL": projections.ViewAll}[v]
	size := projections.MaxSearchResults
	if n := maxResults; n != nil {
		if *n < 1 || *n > 50_000 {
			return projections.Project{}, "", 0, mlflowProblem("INVALID_PARAMETER_VALUE", "Invalid value "+strconv.FormatInt(int64(*n), 10)+
				" for parameter 'max_results' supplied. It must be at most 50000 and at least 1.")
		}
		size = min(int(*n), size)
	}
	proj, err := s.mlflowReadable(c)
	return proj, view, size, err
}

// ---- experiments ----

type mlCreateExperimentRequest struct {
	Name             string        `json:"name"`
	ArtifactLocation string        `json:"artifact_location"`
	Tags             []mlflowTagIn `json:"tags"`
}

func (r *mlCreateExperimentRequest) validate() error {
	return cmp.Or(mlflowRequired("name", r.Name), mlflowKeys("tags", r.Tags))
}

type mlCreateExperimentResponse struct {
	ExperimentID string `json:"experiment_id"`
}

func (s *Server) mlCreateExperiment(c *call, req mlCreateExperimentRequest) (mlCreateExperimentResponse, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return mlCreateExperimentResponse{}, err
	}
	if strings.HasPrefix(req.ArtifactLocation, "runs:") {
		return mlCreateExperimentResponse{}, mlflowProblem("INVALID_PARAMETER_VALUE",
			"Invalid artifact location: '"+req.ArtifactLocation+"'. Experiment artifact location cannot be a runs:/ URI.")
	}
	tags, err := mlflowTagMap("tags", req.Tags)
	if err != nil {
		return mlCreateExperimentResponse{}, err
	}
	x, seq, err := s.deps.Tracking.CreateExperiment(c.ctx, c.meta, c.who, ref,
		tracking.CreateExperiment{Name: req.Name, ArtifactLocation: req.ArtifactLocation, Tags: tags})
	if err != nil {
		return mlCreateExperimentResponse{}, err
	}
	s.settle(c, "Maestro-Sequence", seq)
	return mlCreateExperimentResponse{ExperimentID: x.ID}, nil
}

type mlExperimentResponse struct {
	Experiment MLflowExperiment `json:"experiment"`
}

func (s *Server) mlGetExperiment(c *call, req mlflowExperimentIDRequest) (mlExperimentResponse, error) {
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return mlExperimentResponse{}, err
	}
	x, err := s.mlflowExperimentRow(c, proj, string(req.ExperimentID))
	return mlExperimentResponse{Experiment: mlflowExperimentOf(x)}, err
}

type mlGetExperimentByNameRequest struct {
	ExperimentName string `json:"experiment_name"`
}

func (r *mlGetExperimentByNameRequest) validate() error {
	return mlflowRequired("experiment_name", r.ExperimentName)
}

func (s *Server) mlGetExperimentByName(c *call, req mlGetExperimentByNameRequest) (mlExperimentResponse, error) {
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return mlExperimentResponse{}, err
	}
	missing := mlflowProblem("RESOURCE_DOES_NOT_EXIST", "Could not find experiment with name '"+req.ExperimentName+"'")
	if !possibleExperimentName(req.ExperimentName) {
		// No experiment has it, and Postgres refuses NUL in a parameter.
		return mlExperimentResponse{}, missing
	}
	x, err := s.deps.Queries.ExperimentByName(c.ctx, proj.ID, req.ExperimentName)
	if errors.Is(err, projections.ErrNotFound) {
		return mlExperimentResponse{}, missing
	}
	return mlExperimentResponse{Experiment: mlflowExperimentOf(x)}, err
}

// possibleExperimentName says whether an experiment could be named name:
// text (tracking's names are) of at most tracking.MaxNameLen characters.
// A name that fails is looked up nowhere.
func possibleExperimentName(name string) bool {
	return utf8.RuneCountInString(name) <= tracking.MaxNameLen && handlers.PlainText(name)
}

type mlSearchExperimentsRequest struct {
	MaxResults *mlInt64 `json:"max_results"`
	PageToken  string   `json:"page_token"`
	Filter     string   `json:"filter"`
	OrderBy    []string `json:"order_by"`
	ViewType   mlEnum   `json:"view_type"`
}

type mlExperimentsResponse struct {
	Experiments   []MLflowExperiment `json:"experiments,omitempty"`
	NextPageToken string             `json:"next_page_token,omitempty"`
}

func (s *Server) mlSearchExperiments(c *call, req mlSearchExperimentsRequest) (mlExperimentsResponse, error) {
	proj, view, size, err := s.mlflowSearch(c, "view_type", req.ViewType, req.MaxResults)
	if err != nil {
		return mlExperimentsResponse{}, err
	}
	page, err := s.deps.Queries.SearchExperiments(c.ctx, proj.ID, projections.ExperimentSearch{Filter: req.Filter, OrderBy: req.OrderBy,
		View: view, MaxResults: size, PageToken: req.PageToken})
	if err != nil {
		return mlExperimentsResponse{}, mlflowSearchError(err)
	}
	out := mlExperimentsResponse{NextPageToken: page.NextPageToken}
	for _, x := range page.Items {
		out.Experiments = append(out.Experiments, mlflowExperimentOf(x))
	}
	return out, nil
}

// mlListExperimentsRequest is MLflow 1.x's ListExperiments.
type mlListExperimentsRequest struct {
	ViewType   mlEnum   `json:"view_type"`
	MaxResults *mlInt64 `json:"max_results"`
	PageToken  string   `json:"page_token"`
}

func (s *Server) mlListExperiments(c *call, req mlListExperimentsRequest) (mlExperimentsResponse, error) {
	return s.mlSearchExperiments(c, mlSearchExperimentsRequest{ViewType: req.ViewType, MaxResults: req.MaxResults, PageToken: req.PageToken})
}

type mlUpdateExperimentRequest struct {
	mlflowExperimentIDRequest
	NewName string `json:"new_name"`
}

func (r *mlUpdateExperimentRequest) validate() error {
	return cmp.Or(r.mlflowExperimentIDRequest.validate(), mlflowRequired("new_name", r.NewName))
}

func (s *Server) mlUpdateExperiment(c *call, req mlUpdateExperimentRequest) (struct{}, error) {
	return s.mlflowExperimentCommand(c, string(req.ExperimentID), func(ref, id string) (tracking.ExperimentState, uint64, error) {
		return s.deps.Tracking.RenameExperiment(c.ctx, c.meta, c.who, ref, id, req.NewName)
	})
}

func (s *Server) mlDeleteExperiment(c *call, req mlflowExperimentIDRequest) (struct{}, error) {
	return s.mlflowExperimentCommand(c, string(req.ExperimentID), func(ref, id string) (tracking.ExperimentState, uint64, error) {
		return s.deps.Tracking.DeleteExperiment(c.ctx, c.meta, c.who, ref, id, true)
	})
}

func (s *Server) mlRestoreExperiment(c *call, req mlflowExperimentIDRequest) (struct{}, error) {
	return s.mlflowExperimentCommand(c, string(req.ExperimentID), func(ref, id string) (tracking.ExperimentState, uint64, error) {
		return s.deps.Tracking.DeleteExperiment(c.ctx, c.meta, c.who, ref, id, false)
	})
}

type mlExperimentTagRequest struct {
	mlflowExperimentIDRequest
	Key   string `json:"key"`
	Value string `json:"value"`
}

func (r *mlExperimentTagRequest) validate() error {
	return cmp.Or(r.mlflowExperimentIDRequest.validate(), mlflowRequired("key", r.Key))
}

func (s *Server) mlSetExperimentTag(c *call, req mlExperimentTagRequest) (struct{}, error) {
	return s.mlflowExperimentCommand(c, string(req.ExperimentID), func(ref, id string) (tracking.ExperimentState, uint64, error) {
		return s.deps.Tracking.SetExperimentTags(c.ctx, c.meta, c.who, ref, id, map[string]string{req.Key: req.Value})
	})
}

func (s *Server) mlDeleteExperimentTag(c *call, req mlExperimentTagRequest) (struct{}, error) {
	return s.mlflowExperimentCommand(c, string(req.ExperimentID), func(ref, id string) (tracking.ExperimentState, uint64, error) {
		return s.deps.Tracking.DeleteExperimentTag(c.ctx, c.meta, c.who, ref, id, req.Key)
	})
}

// ---- runs ----

type mlCreateRunRequest struct {
	ExperimentID mlID          `json:"experiment_id"`
	RunName      string        `json:"run_name"`
	StartTime    mlInt64       `json:"start_time"`
	Tags         []mlflowTagIn `json:"tags"`
}

func (r *mlCreateRunRequest) validate() error { return mlflowKeys("tags", r.Tags) }

type mlRunResponse struct {
	Run MLflowRun `json:"run"`
}

// mlCreateRun starts a run; without experiment_id (or with "0") in the
// project's Default experiment, which it creates when there is none.
func (s *Server) mlCreateRun(c *call, req mlCreateRunRequest) (mlRunResponse, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return mlRunResponse{}, err
	}
	tags, err := mlflowTagMap("tags", req.Tags)
	if err != nil {
		return mlRunResponse{}, err
	}
	id := string(req.ExperimentID)
	xid := mlflowUUID(id)
	if id == "" || id == defaultExperimentID {
		id = defaultExperimentID
		x, _, err := s.deps.Tracking.DefaultExperiment(c.ctx, c.meta, c.who, ref)
		if err != nil {
			return mlRunResponse{}, err
		}
		xid = x.ID
	}
	run, seq, err := s.deps.Tracking.CreateRun(c.ctx, c.meta, c.who, ref, xid,
		tracking.CreateRun{Name: req.RunName, StartTime: int64(req.StartTime), Tags: tags})
	if err != nil {
		return mlRunResponse{}, mlflowMissing(err, "experiment", experimentMissing(id))
	}
	s.settle(c, "Maestro-Sequence", seq)
	return mlRunResponse{Run: mlflowRunOf(runFromState(run))}, nil
}

// mlflowRunRow reads a run of the project. A run of a deleted experiment
// reads as deleted (the runs read model has it so, as MLflow deletes the
// runs with their experiment).
func (s *Server) mlflowRunRow(c *call, proj projections.Project, id string) (projections.Run, error) {
	run, err := s.deps.Queries.Run(c.ctx, proj.ID, mlflowUUID(id))
	if errors.Is(err, projections.ErrNotFound) {
		return run, runMissing(id)
	}
	return run, err
}

func (s *Server) mlGetRun(c *call, req mlflowRunRef) (mlRunResponse, error) {
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return mlRunResponse{}, err
	}
	run, err := s.mlflowRunRow(c, proj, req.id())
	return mlRunResponse{Run: mlflowRunOf(run)}, err
}

type mlUpdateRunRequest struct {
	mlflowRunRef
	Status  mlEnum   `json:"status"`
	EndTime *mlInt64 `json:"end_time"`
	RunName *string  `json:"run_name"`
}

type mlUpdateRunResponse struct {
	RunInfo MLflowRunInfo `json:"run_info"`
}

var runStatuses = []string{tracking.StatusRunning, tracking.StatusScheduled, tracking.StatusFinished, tracking.StatusFailed, tracking.StatusKilled}

func (s *Server) mlUpdateRun(c *call, req mlUpdateRunRequest) (mlUpdateRunResponse, error) {
	status, err := req.Status.of("status", runStatuses, "")
	if err != nil {
		return mlUpdateRunResponse{}, err
	}
	ref, err := mlflowProject(c)
	if err != nil {
		return mlUpdateRunResponse{}, err
	}
	u := tracking.UpdateRun{Status: status, Name: req.RunName}
	if req.EndTime != nil {
		end := int64(*req.EndTime)
		u.EndTime = &end
	}
	run, seq, err := s.deps.Tracking.UpdateRun(c.ctx, c.meta, c.who, ref, mlflowUUID(req.id()), u)
	if err != nil {
		return mlUpdateRunResponse{}, mlflowMissing(err, "run", runMissing(req.id()))
	}
	s.settle(c, "Maestro-Sequence", seq)
	return mlUpdateRunResponse{RunInfo: mlflowRunInfoOf(runFromState(run))}, nil
}

func (s *Server) mlDeleteRun(c *call, req mlflowRunRef) (struct{}, error) {
	return s.mlflowRunCommand(c, req.id(), func(ref, id string) (uint64, error) {
		_, seq, err := s.deps.Tracking.DeleteRun(c.ctx, c.meta, c.who, ref, id, true)
		return seq, err
	})
}

func (s *Server) mlRestoreRun(c *call, req mlflowRunRef) (struct{}, error) {
	return s.mlflowRunCommand(c, req.id(), func(ref, id string) (uint64, error) {
		_, seq, err := s.deps.Tracking.DeleteRun(c.ctx, c.meta, c.who, ref, id, false)
		return seq, err
	})
}

type mlSearchRunsRequest struct {
	ExperimentIDs []mlID   `json:"experiment_ids"`
	Filter        string   `json:"filter"`
	RunViewType   mlEnum   `json:"run_view_type"`
	MaxResults    *mlInt64 `json:"max_results"`
	OrderBy       []string `json:"order_by"`
	PageToken     string   `json:"page_token"`
}

type mlRunsResponse struct {
	Runs          []MLflowRun `json:"runs,omitempty"`
	NextPageToken string      `json:"next_page_token,omitempty"`
}

// mlSearchRuns searches the runs of the experiments named (as MLflow, none
// named finds none; "0" is the Default experiment, and finds none while
// there is no Default). The runs of a deleted experiment are deleted runs
// in every view (the runs read model has them so).
func (s *Server) mlSearchRuns(c *call, req mlSearchRunsRequest) (mlRunsResponse, error) {
	proj, view, size, err := s.mlflowSearch(c, "run_view_type", req.RunViewType, req.MaxResults)
	if err != nil {
		return mlRunsResponse{}, err
	}
	// SearchRuns refuses more too; this refuses them before anything is
	// read for them.
	if len(req.ExperimentIDs) > projections.MaxSearchExperiments {
		return mlRunsResponse{}, mlflowProblem("INVALID_PARAMETER_VALUE", "experiment_ids: at most "+
			strconv.Itoa(projections.MaxSearchExperiments)+" experiments per search")
	}
	ids := make([]string, 0, len(req.ExperimentIDs))
	for _, id := range slices.Compact(slices.Sorted(slices.Values(req.ExperimentIDs))) {
		if string(id) != defaultExperimentID {
			ids = append(ids, mlflowUUID(string(id)))
			continue
		}
		x, err := s.deps.Queries.ExperimentByName(c.ctx, proj.ID, tracking.DefaultExperimentName)
		if errors.Is(err, projections.ErrNotFound) {
			continue
		}
		if err != nil {
			return mlRunsResponse{}, err
		}
		ids = append(ids, x.ID)
	}
	if len(ids) == 0 {
		return mlRunsResponse{}, nil
	}
	page, err := s.deps.Queries.SearchRuns(c.ctx, proj.ID, projections.RunSearch{ExperimentIDs: ids, Filter: req.Filter,
		OrderBy: req.OrderBy, View: view, MaxResults: size, PageToken: req.PageToken})
	if errors.Is(err, projections.ErrNotFound) {
		return mlRunsResponse{}, mlflowProblem("RESOURCE_DOES_NOT_EXIST", "an experiment of experiment_ids does not exist")
	}
	if err != nil {
		return mlRunsResponse{}, mlflowSearchError(err)
	}
	out := mlRunsResponse{NextPageToken: page.NextPageToken}
	for _, r := range page.Items {
		out.Runs = append(out.Runs, mlflowRunOf(r))
	}
	return out, nil
}

// ---- params, tags, metrics ----

type mlRunKeyValue struct {
	mlflowRunKey
	Value string `json:"value"`
}

func (s *Server) mlLogParam(c *call, req mlRunKeyValue) (struct{}, error) {
	return s.mlflowRunCommand(c, req.id(), func(ref, id string) (uint64, error) {
		_, seq, err := s.deps.Tracking.LogParams(c.ctx, c.meta, c.who, ref, id, []events.Param{{Key: req.Key, Value: req.Value}})
		return seq, err
	})
}

func (s *Server) mlSetTag(c *call, req mlRunKeyValue) (struct{}, error) {
	return s.mlflowRunCommand(c, req.id(), func(ref, id string) (uint64, error) {
		_, seq, err := s.deps.Tracking.SetRunTags(c.ctx, c.meta, c.who, ref, id, map[string]string{req.Key: req.Value})
		return seq, err
	})
}

func (s *Server) mlDeleteTag(c *call, req mlflowRunKey) (struct{}, error) {
	return s.mlflowRunCommand(c, req.id(), func(ref, id string) (uint64, error) {
		_, seq, err := s.deps.Tracking.DeleteRunTag(c.ctx, c.meta, c.who, ref, id, req.Key)
		return seq, err
	})
}

// mlflowMetricIn is a metric point in a request: key, value and timestamp
// are required (step defaults to 0).
type mlflowMetricIn struct {
	Key       string   `json:"key"`
	Value     mlDouble `json:"value"`
	Timestamp *mlInt64 `json:"timestamp"`
	Step      mlInt64  `json:"step"`
}

// check refuses a point without a required field; at names the field's
// parent ("" or "metrics[3].").
func (m *mlflowMetricIn) check(at string) error {
	switch {
	case m.Key == "":
		return missingParam(at + "key")
	case !m.Value.set:
		return missingParam(at + "value")
	case m.Timestamp == nil:
		return missingParam(at + "timestamp")
	}
	return nil
}

func (m *mlflowMetricIn) point() tracking.Metric {
	return tracking.Metric{Key: m.Key, Value: m.Value.value, Step: int64(m.Step), Timestamp: int64(*m.Timestamp)}
}

type mlLogMetricRequest struct {
	mlflowRunRef
	mlflowMetricIn
}

func (r *mlLogMetricRequest) validate() error { return cmp.Or(r.mlflowRunRef.validate(), r.check("")) }

func (s *Server) mlLogMetric(c *call, req mlLogMetricRequest) (struct{}, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return struct{}{}, err
	}
	seq, err := s.deps.Tracking.LogMetrics(c.ctx, c.meta, c.who, ref, mlflowUUID(req.id()), []tracking.Metric{req.point()})
	if err != nil {
		return struct{}{}, mlflowMissing(err, "run", runMissing(req.id()))
	}
	s.settle(c, "Maestro-Metrics-Sequence", seq, projections.Metrics{}.Name())
	return struct{}{}, nil
}

// MLflow's log-batch limits (mlflow/utils/validation.py).
const (
	mlflowBatchMetrics  = 1000
	mlflowBatchParams   = 100
	mlflowBatchTags     = 100
	mlflowBatchEntities = 1000
)

type mlLogBatchRequest struct {
	mlflowRunRef
	Metrics []mlflowMetricIn `json:"metrics"`
	Params  []mlflowTagIn    `json:"params"`
	Tags    []mlflowTagIn    `json:"tags"`
}

// validate checks the request's shape and MLflow's limits; the points'
// keys and times, the params and the tags are decided by the service.
func (r *mlLogBatchRequest) validate() error {
	if err := r.mlflowRunRef.validate(); err != nil {
		return err
	}
	for i := range r.Metrics {
		if err := r.Metrics[i].check("metrics[" + strconv.Itoa(i) + "]."); err != nil {
			return err
		}
	}
	if err := cmp.Or(mlflowKeys("params", r.Params), mlflowKeys("tags", r.Tags)); err != nil {
		return err
	}
	for _, l := range []struct {
		name string
		n    int
		max  int
	}{{"metrics", len(r.Metrics), mlflowBatchMetrics}, {"params", len(r.Params), mlflowBatchParams}, {"tags", len(r.Tags), mlflowBatchTags}} {
		if l.n > l.max {
			return mlflowProblem("INVALID_PARAMETER_VALUE", "A batch logging request can contain at most "+strconv.Itoa(l.max)+" "+l.name+
				". Got "+strconv.Itoa(l.n)+" "+l.name+". Please split up "+l.name+" across multiple requests and try again.")
		}
	}
	if n := len(r.Metrics) + len(r.Params) + len(r.Tags); n > mlflowBatchEntities {
		return mlflowProblem("INVALID_PARAMETER_VALUE", "A batch logging request can contain at most "+strconv.Itoa(mlflowBatchEntities)+
			" metrics, params, and tags in total. Got "+strconv.Itoa(n)+" in total. Please split up the data across multiple requests and try again.")
	}
	return nil
}

// mlLogBatch logs params, tags and points as one request; see
// tracking.Service.LogBatch for the order and why a retry converges.
func (s *Server) mlLogBatch(c *call, req mlLogBatchRequest) (struct{}, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return struct{}{}, err
	}
	tags, err := mlflowTagMap("tags", req.Tags)
	if err != nil {
		return struct{}{}, err
	}
	b := tracking.Batch{Tags: tags}
	for _, p := range req.Params {
		b.Params = append(b.Params, events.Param{Key: p.Key, Value: p.Value})
	}
	for i := range req.Metrics {
		b.Metrics = append(b.Metrics, req.Metrics[i].point())
	}
	_, seq, mseq, err := s.deps.Tracking.LogBatch(c.ctx, c.meta, c.who, ref, mlflowUUID(req.id()), b)
	if err != nil {
		return struct{}{}, mlflowMissing(err, "run", runMissing(req.id()))
	}
	s.settle(c, "Maestro-Sequence", seq)
	s.settle(c, "Maestro-Metrics-Sequence", mseq, projections.Metrics{}.Name())
	return struct{}{}, nil
}

type mlMetricHistoryRequest struct {
	mlflowRunRef
	MetricKey  string   `json:"metric_key"`
	PageToken  string   `json:"page_token"`
	MaxResults *mlInt64 `json:"max_results"`
}

func (r *mlMetricHistoryRequest) validate() error {
	return cmp.Or(r.mlflowRunRef.validate(), mlflowRequired("metric_key", r.MetricKey))
}

type mlMetricHistoryResponse struct {
	Metrics       []MLflowMetric `json:"metrics,omitempty"`
	NextPageToken string         `json:"next_page_token,omitempty"`
}

// mlMetricHistory pages a run's series of one key: without max_results
// the whole series (pages of projections.MaxHistory points beyond).
func (s *Server) mlMetricHistory(c *call, req mlMetricHistoryRequest) (mlMetricHistoryResponse, error) {
	size := projections.MaxHistory
	if req.MaxResults != nil {
		if *req.MaxResults < 1 || *req.MaxResults > projections.MaxHistory {
			return mlMetricHistoryResponse{}, mlflowProblem("INVALID_PARAMETER_VALUE",
				"max_results must be between 1 and "+strconv.Itoa(projections.MaxHistory))
		}
		size = int(*req.MaxResults)
	}
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return mlMetricHistoryResponse{}, err
	}
	run, err := s.mlflowRunRow(c, proj, req.id())
	if err != nil {
		return mlMetricHistoryResponse{}, err
	}
	if tracking.ValidKey("metric", req.MetricKey) != nil {
		// No point can have been logged under it (and Postgres refuses
		// NUL in a parameter): the empty history of a key never logged.
		return mlMetricHistoryResponse{}, nil
	}
	page, err := s.deps.Queries.MetricHistoryPage(c.ctx, run.ID, req.MetricKey, req.PageToken, size)
	if err != nil {
		return mlMetricHistoryResponse{}, pageError(err)
	}
	out := mlMetricHistoryResponse{NextPageToken: page.NextPageToken}
	for _, p := range page.Items {
		out.Metrics = append(out.Metrics, MLflowMetric{Key: p.Key, Value: mlflowDouble(p.Value), Timestamp: p.Timestamp, Step: p.Step})
	}
	return out, nil
}

// ---- dataset inputs ----

type mlLogInputsRequest struct {
	mlflowRunRef
	Datasets []struct {
		Tags    []mlflowTagIn        `json:"tags"`
		Dataset *events.DatasetInput `json:"dataset"`
	} `json:"datasets"`
	Models []json.RawMessage `json:"models"`
}

// validate checks what MLflow requires: the run, each input's dataset with
// its name, digest, source type and source, and each input tag's key and
// value. MLflow 3's model inputs name logged models, which Maestro does
// not have: they are refused rather than dropped.
func (r *mlLogInputsRequest) validate() error {
	if err := r.mlflowRunRef.validate(); err != nil {
		return err
	}
	for i, in := range r.Datasets {
		at := "datasets[" + strconv.Itoa(i) + "]."
		if in.Dataset == nil {
			return missingParam(at + "dataset")
		}
		for _, f := range []struct{ name, value string }{{"name", in.Dataset.Name}, {"digest", in.Dataset.Digest},
			{"source_type", in.Dataset.SourceType}, {"source", in.Dataset.Source}} {
			if f.value == "" {
				return missingParam(at + "dataset." + f.name)
			}
		}
		for j, t := range in.Tags {
			tag := at + "tags[" + strconv.Itoa(j) + "]."
			if t.Key == "" {
				return missingParam(tag + "key")
			}
			if t.Value == "" {
				return missingParam(tag + "value")
			}
		}
	}
	if len(r.Models) > 0 {
		return mlflowProblem("INVALID_PARAMETER_VALUE", "model inputs name MLflow 3 logged models, which this server does not have")
	}
	return nil
}

// mlLogInputs records the datasets a run used (a dataset, by name and
// digest, once per run).
func (s *Server) mlLogInputs(c *call, req mlLogInputsRequest) (struct{}, error) {
	inputs := make([]events.DatasetInput, len(req.Datasets))
	for i, in := range req.Datasets {
		inputs[i] = *in.Dataset
		inputs[i].Tags = nil // the input's tags, not the dataset's
		for _, t := range in.Tags {
			inputs[i].Tags = append(inputs[i].Tags, events.Param{Key: t.Key, Value: t.Value})
		}
	}
	return s.mlflowRunCommand(c, req.id(), func(ref, id string) (uint64, error) {
		_, seq, err := s.deps.Tracking.LogInputs(c.ctx, c.meta, c.who, ref, id, inputs)
		return seq, err
	})
}
