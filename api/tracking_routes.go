package api

import (
	"errors"
	"maps"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/projections"
)

// Experiment tracking on Maestro's own API, under a project. Commands go
// through tracking.Service (which authorizes on the project's event-sourced
// membership); queries read the experiments and runs projections after the
// same read-side check as the registry's (readableProject).

// trackingMaxBody admits 100 tags of 8,000 bytes or 100 params of 6,000
// (MLflow's limits) with room for JSON escaping.
const trackingMaxBody = 2 << 20

var trackingViews = []string{projections.Projects{}.Name(), projections.Experiments{}.Name(), projections.Runs{}.Name()}

func (s *Server) trackingRoutes() []Route {
	const (
		experiments = "/api/v1/projects/{project}/experiments"
		experiment  = experiments + "/{experiment}"
		runs        = "/api/v1/projects/{project}/runs"
		run         = runs + "/{run}"
	)
	return []Route{
		{Method: "POST", Pattern: experiments, Command: true, MaxBody: trackingMaxBody, handle: s.createExperiment},
		{Method: "GET", Pattern: experiments, handle: s.listExperiments},
		{Method: "GET", Pattern: experiment, handle: s.getExperiment},
		{Method: "PATCH", Pattern: experiment, Command: true, MaxBody: trackingMaxBody, handle: s.updateExperiment},
		{Method: "DELETE", Pattern: experiment, Command: true, handle: s.deleteExperiment(true)},
		{Method: "POST", Pattern: experiment + ":restore", Command: true, handle: s.deleteExperiment(false)},
		{Method: "DELETE", Pattern: experiment + "/tags/{key}", Command: true, handle: s.deleteExperimentTag},
		{Method: "POST", Pattern: experiment + "/runs", Command: true, MaxBody: trackingMaxBody, handle: s.createRun},
		{Method: "GET", Pattern: experiment + "/runs", handle: s.listRuns},
		{Method: "GET", Pattern: run, handle: s.getRun},
		{Method: "PATCH", Pattern: run, Command: true, MaxBody: trackingMaxBody, handle: s.updateRun},
		{Method: "DELETE", Pattern: run, Command: true, handle: s.deleteRun(true)},
		{Method: "POST", Pattern: run + ":restore", Command: true, handle: s.deleteRun(false)},
		{Method: "POST", Pattern: run + "/params", Command: true, MaxBody: trackingMaxBody, handle: s.logParams},
		{Method: "DELETE", Pattern: run + "/tags/{key}", Command: true, handle: s.deleteRunTag},
	}
}

func experimentFromState(x tracking.ExperimentState) projections.Experiment {
	tags := maps.Clone(x.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	return projections.Experiment{ID: x.ID, ProjectID: x.ProjectID, Name: x.Name, ArtifactLocation: x.ArtifactLocation,
		LifecycleStage: lifecycle(x.Deleted), Tags: tags, CreatedAt: apiTime(x.CreatedAt), UpdatedAt: apiTime(x.UpdatedAt)}
}

func runFromState(r tracking.RunState) projections.Run {
	return projections.Run{ID: r.ID, ExperimentID: r.ExperimentID, ProjectID: r.ProjectID, Name: r.Name, UserID: r.UserID,
		Status: r.Status, StartTime: r.StartTime, EndTime: r.EndTime, LifecycleStage: lifecycle(r.Deleted),
		Params: maps.Clone(r.Params), Tags: maps.Clone(r.Tags)}
}

func lifecycle(deleted bool) string {
	if deleted {
		return "deleted"
	}
	return "active"
}

// viewParam is ?view= (active, deleted or all; default active).
func viewParam(r *http.Request) (projections.View, error) {
	switch v := projections.View(r.URL.Query().Get("view")); v {
	case "":
		return projections.ViewActive, nil
	case projections.ViewActive, projections.ViewDeleted, projections.ViewAll:
		return v, nil
	}
	return "", problem("validation-failed", "view must be active, deleted or all")
}

// pathID is a uuid path parameter in its canonical (lower-case) form, as
// subjects and rows hold it; anything else is the 404 of a missing one.
func pathID(r *http.Request, name, what string) (string, error) {
	id := chi.URLParam(r, name)
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", problem("not-found", what+" not found")
	}
	return u.String(), nil
}

// ---- experiments ----

type createExperimentRequest struct {
	Name             string            `json:"name"`
	ArtifactLocation string            `json:"artifact_location"`
	Tags             map[string]string `json:"tags"`
}

func (s *Server) createExperiment(w http.ResponseWriter, r *http.Request) error {
	ref, err := projectRef(r)
	if err != nil {
		return err
	}
	var req createExperimentRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p, _ := principal(r.Context())
	x, seq, err := s.deps.Tracking.CreateExperiment(r.Context(), meta(r), p, ref,
		tracking.CreateExperiment{Name: req.Name, ArtifactLocation: req.ArtifactLocation, Tags: req.Tags})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/projects/"+ref+"/experiments/"+x.ID)
	s.respondCommand(w, r, http.StatusCreated, seq, experimentFromState(x))
	return nil
}

// ExperimentPage is a page of experiments.
type ExperimentPage = projections.Page[projections.Experiment]

func (s *Server) listExperiments(w http.ResponseWriter, r *http.Request) error {
	n, err := pageSize(r)
	if err != nil {
		return err
	}
	view, err := viewParam(r)
	if err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	if name := r.URL.Query().Get("name"); name != "" {
		// Get by name: a page of at most one.
		page := ExperimentPage{Items: []projections.Experiment{}}
		x, err := s.deps.Queries.ExperimentByName(r.Context(), proj.ID, name)
		if err != nil && !errors.Is(err, projections.ErrNotFound) {
			return err
		}
		if err == nil && (view == projections.ViewAll || x.LifecycleStage == string(view)) {
			page.Items = append(page.Items, x)
		}
		writeJSON(w, http.StatusOK, page)
		return nil
	}
	page, err := s.deps.Queries.ListExperiments(r.Context(), proj.ID, view, pageTokenParam(r), n)
	if err != nil {
		return pageError(err)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// readableExperiment is readableProject plus {experiment}.
func (s *Server) readableExperiment(r *http.Request) (projections.Project, projections.Experiment, error) {
	proj, err := s.readableProject(r)
	if err != nil {
		return proj, projections.Experiment{}, err
	}
	id, err := pathID(r, "experiment", "experiment")
	if err != nil {
		return proj, projections.Experiment{}, err
	}
	x, err := s.deps.Queries.Experiment(r.Context(), proj.ID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return proj, x, problem("not-found", "experiment not found")
	}
	return proj, x, err
}

func (s *Server) getExperiment(w http.ResponseWriter, r *http.Request) error {
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	_, x, err := s.readableExperiment(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, x)
	return nil
}

type updateExperimentRequest struct {
	Name *string           `json:"name"`
	Tags map[string]string `json:"tags"`
}

func (s *Server) updateExperiment(w http.ResponseWriter, r *http.Request) error {
	ref, err := projectRef(r)
	if err != nil {
		return err
	}
	id, err := pathID(r, "experiment", "experiment")
	if err != nil {
		return err
	}
	var req updateExperimentRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Name == nil && req.Tags == nil {
		return problem("validation-failed", "send name and/or tags")
	}
	// Both parts are checked before either is applied: a bad tag must not
	// leave the rename done.
	if err := tracking.CheckTags(req.Tags); err != nil {
		return err
	}
	p, _ := principal(r.Context())
	var x tracking.ExperimentState
	var seq uint64
	if req.Name != nil {
		if x, seq, err = s.deps.Tracking.RenameExperiment(r.Context(), meta(r), p, ref, id, *req.Name); err != nil {
			return err
		}
	}
	if req.Tags != nil {
		var tseq uint64
		if x, tseq, err = s.deps.Tracking.SetExperimentTags(r.Context(), meta(r), p, ref, id, req.Tags); err != nil {
			return err
		}
		seq = max(seq, tseq)
	}
	if seq == 0 { // nothing changed: answer with the current state
		if x, err = s.deps.Tracking.Experiment(r.Context(), p, ref, id); err != nil {
			return err
		}
	}
	s.respondCommand(w, r, http.StatusOK, seq, experimentFromState(x))
	return nil
}

func (s *Server) deleteExperiment(del bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		ref, err := projectRef(r)
		if err != nil {
			return err
		}
		id, err := pathID(r, "experiment", "experiment")
		if err != nil {
			return err
		}
		p, _ := principal(r.Context())
		x, seq, err := s.deps.Tracking.DeleteExperiment(r.Context(), meta(r), p, ref, id, del)
		if err != nil {
			return err
		}
		if del {
			s.respondCommand(w, r, http.StatusNoContent, seq, nil)
			return nil
		}
		s.respondCommand(w, r, http.StatusOK, seq, experimentFromState(x))
		return nil
	}
}

func tagKeyParam(r *http.Request) (string, error) {
	key := chi.URLParam(r, "key")
	if err := tracking.ValidKey("tag", key); err != nil {
		return "", err
	}
	return key, nil
}

func (s *Server) deleteExperimentTag(w http.ResponseWriter, r *http.Request) error {
	ref, err := projectRef(r)
	if err != nil {
		return err
	}
	id, err := pathID(r, "experiment", "experiment")
	if err != nil {
		return err
	}
	key, err := tagKeyParam(r)
	if err != nil {
		return err
	}
	p, _ := principal(r.Context())
	_, seq, err := s.deps.Tracking.DeleteExperimentTag(r.Context(), meta(r), p, ref, id, key)
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusNoContent, seq, nil)
	return nil
}

// ---- runs ----

type createRunRequest struct {
	Name      string            `json:"name"`
	StartTime int64             `json:"start_time"`
	Tags      map[string]string `json:"tags"`
}

func (s *Server) createRun(w http.ResponseWriter, r *http.Request) error {
	ref, err := projectRef(r)
	if err != nil {
		return err
	}
	xid, err := pathID(r, "experiment", "experiment")
	if err != nil {
		return err
	}
	var req createRunRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p, _ := principal(r.Context())
	run, seq, err := s.deps.Tracking.CreateRun(r.Context(), meta(r), p, ref, xid,
		tracking.CreateRun{Name: req.Name, StartTime: req.StartTime, Tags: req.Tags})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/projects/"+ref+"/runs/"+run.ID)
	s.respondCommand(w, r, http.StatusCreated, seq, runFromState(run))
	return nil
}

// RunPage is a page of runs.
type RunPage = projections.Page[projections.Run]

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) error {
	n, err := pageSize(r)
	if err != nil {
		return err
	}
	view, err := viewParam(r)
	if err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	proj, x, err := s.readableExperiment(r)
	if err != nil {
		return err
	}
	page, err := s.deps.Queries.ListRuns(r.Context(), proj.ID, x.ID, view, pageTokenParam(r), n)
	if err != nil {
		return pageError(err)
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) error {
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	id, err := pathID(r, "run", "run")
	if err != nil {
		return err
	}
	run, err := s.deps.Queries.Run(r.Context(), proj.ID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return problem("not-found", "run not found")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, run)
	return nil
}

type updateRunRequest struct {
	Status  string            `json:"status"`
	EndTime *int64            `json:"end_time"`
	Name    *string           `json:"name"`
	Tags    map[string]string `json:"tags"`
}

func (s *Server) updateRun(w http.ResponseWriter, r *http.Request) error {
	ref, err := projectRef(r)
	if err != nil {
		return err
	}
	id, err := pathID(r, "run", "run")
	if err != nil {
		return err
	}
	var req updateRunRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Status == "" && req.EndTime == nil && req.Name == nil && req.Tags == nil {
		return problem("validation-failed", "send status, end_time, name and/or tags")
	}
	if err := tracking.CheckTags(req.Tags); err != nil {
		return err
	}
	if req.Status != "" && !tracking.ValidStatus(req.Status) {
		return problem("validation-failed", "status must be one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED")
	}
	p, _ := principal(r.Context())
	var run tracking.RunState
	var seq uint64
	if req.Status != "" || req.EndTime != nil || req.Name != nil {
		if run, seq, err = s.deps.Tracking.UpdateRun(r.Context(), meta(r), p, ref, id,
			tracking.UpdateRun{Status: req.Status, EndTime: req.EndTime, Name: req.Name}); err != nil {
			return err
		}
	}
	if req.Tags != nil {
		var tseq uint64
		if run, tseq, err = s.deps.Tracking.SetRunTags(r.Context(), meta(r), p, ref, id, req.Tags); err != nil {
			return err
		}
		seq = max(seq, tseq)
	}
	if seq == 0 {
		if run, err = s.deps.Tracking.Run(r.Context(), p, ref, id); err != nil {
			return err
		}
	}
	s.respondCommand(w, r, http.StatusOK, seq, runFromState(run))
	return nil
}

func (s *Server) deleteRun(del bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		ref, err := projectRef(r)
		if err != nil {
			return err
		}
		id, err := pathID(r, "run", "run")
		if err != nil {
			return err
		}
		p, _ := principal(r.Context())
		run, seq, err := s.deps.Tracking.DeleteRun(r.Context(), meta(r), p, ref, id, del)
		if err != nil {
			return err
		}
		if del {
			s.respondCommand(w, r, http.StatusNoContent, seq, nil)
			return nil
		}
		s.respondCommand(w, r, http.StatusOK, seq, runFromState(run))
		return nil
	}
}

type logParamsRequest struct {
	Params []events.Param `json:"params"`
}

func (s *Server) logParams(w http.ResponseWriter, r *http.Request) error {
	ref, err := projectRef(r)
	if err != nil {
		return err
	}
	id, err := pathID(r, "run", "run")
	if err != nil {
		return err
	}
	var req logParamsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Params) == 0 {
		return problem("validation-failed", "send at least one param")
	}
	p, _ := principal(r.Context())
	run, seq, err := s.deps.Tracking.LogParams(r.Context(), meta(r), p, ref, id, req.Params)
	if err != nil {
		return err
	}
	if seq == 0 {
		if run, err = s.deps.Tracking.Run(r.Context(), p, ref, id); err != nil {
			return err
		}
	}
	s.respondCommand(w, r, http.StatusOK, seq, runFromState(run))
	return nil
}

func (s *Server) deleteRunTag(w http.ResponseWriter, r *http.Request) error {
	ref, err := projectRef(r)
	if err != nil {
		return err
	}
	id, err := pathID(r, "run", "run")
	if err != nil {
		return err
	}
	key, err := tagKeyParam(r)
	if err != nil {
		return err
	}
	p, _ := principal(r.Context())
	_, seq, err := s.deps.Tracking.DeleteRunTag(r.Context(), meta(r), p, ref, id, key)
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusNoContent, seq, nil)
	return nil
}
