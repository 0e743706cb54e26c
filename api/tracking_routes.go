package api

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/projections"
)

// Experiment tracking on Maestro's own API, under a project. Commands go
// through tracking.Service (which authorizes on the project's event-sourced
// membership); queries read the experiments and runs projections after the
// same read-side check as the registry's (readableProject).

// trackingMaxBody admits 100 tags of 8,000 bytes or 100 params of 6,000
// (MLflow's limits) with room for JSON escaping; what does not fit in one
// event after all is refused by handlers.Build (MaxEventData).
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
		{Method: "POST", Pattern: experiments, Command: true, MaxBody: trackingMaxBody, handle: command(s, http.StatusCreated, s.createExperiment)},
		{Method: "GET", Pattern: experiments, handle: query(s, s.listExperiments)},
		{Method: "GET", Pattern: experiment, handle: query(s, s.getExperiment)},
		{Method: "PATCH", Pattern: experiment, Command: true, MaxBody: trackingMaxBody, handle: command(s, http.StatusOK, s.updateExperiment)},
		{Method: "DELETE", Pattern: experiment, Command: true, handle: commandNoBody(s, http.StatusNoContent, s.deleteExperiment)},
		{Method: "POST", Pattern: experiment + ":restore", Command: true, handle: commandNoBody(s, http.StatusOK, s.restoreExperiment)},
		{Method: "DELETE", Pattern: experiment + "/tags/{key}", Command: true, handle: commandNoBody(s, http.StatusNoContent, s.deleteExperimentTag)},
		{Method: "POST", Pattern: experiment + "/runs", Command: true, MaxBody: trackingMaxBody, handle: command(s, http.StatusCreated, s.createRun)},
		{Method: "GET", Pattern: experiment + "/runs", handle: query(s, s.listRuns)},
		{Method: "POST", Pattern: runs + ":search", MaxBody: runSearchMaxBody, handle: query(s, s.searchRuns)},
		{Method: "GET", Pattern: run, handle: query(s, s.getRun)},
		{Method: "PATCH", Pattern: run, Command: true, MaxBody: trackingMaxBody, handle: command(s, http.StatusOK, s.updateRun)},
		{Method: "DELETE", Pattern: run, Command: true, handle: commandNoBody(s, http.StatusNoContent, s.deleteRun)},
		{Method: "POST", Pattern: run + ":restore", Command: true, handle: commandNoBody(s, http.StatusOK, s.restoreRun)},
		{Method: "POST", Pattern: run + "/params", Command: true, MaxBody: trackingMaxBody, handle: command(s, http.StatusOK, s.logParams)},
		{Method: "DELETE", Pattern: run + "/tags/{key}", Command: true, handle: commandNoBody(s, http.StatusNoContent, s.deleteRunTag)},
		{Method: "POST", Pattern: run + "/metrics", Command: true, MaxBody: metricsMaxBody, Await: []string{projections.Metrics{}.Name()}, handle: s.logMetrics},
		{Method: "GET", Pattern: run + "/metrics/{key}", handle: s.metricHistory},
	}
}

func experimentFromState(x tracking.ExperimentState) projections.Experiment {
	tags := maps.Clone(x.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	return projections.Experiment{ID: x.ID, ProjectID: x.ProjectID, Name: x.Name, ArtifactLocation: x.ArtifactLocation,
		LifecycleStage: projections.LifecycleStage(x.Deleted), Tags: tags, CreatedAt: apiTime(x.CreatedAt), UpdatedAt: apiTime(x.UpdatedAt)}
}

func runFromState(r tracking.RunState) projections.Run {
	return projections.Run{ID: r.ID, ExperimentID: r.ExperimentID, ProjectID: r.ProjectID, Name: r.Name, UserID: r.UserID,
		Status: r.Status, StartTime: r.StartTime, EndTime: r.EndTime, LifecycleStage: projections.LifecycleStage(r.Deleted),
		Params: maps.Clone(r.Params), Tags: maps.Clone(r.Tags), ArtifactURI: projections.RunArtifactsURI(r.ProjectID, r.ID)}
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

// ---- inputs ----

// experimentRef is {experiment}; runRef is {run}; tagRef adds {key}.
type experimentRef struct{ experiment string }

func (x *experimentRef) readParams(r *http.Request) (err error) {
	x.experiment, err = pathID(r, "experiment", "experiment")
	return err
}

type runRef struct{ run string }

func (x *runRef) readParams(r *http.Request) (err error) {
	x.run, err = pathID(r, "run", "run")
	return err
}

type tagKey struct{ key string }

func (k *tagKey) readParams(r *http.Request) (err error) {
	k.key, err = keyParam(r, "tag")
	return err
}

// keyParam reads {key} (a tag or metric key) unescaped: a key may hold "/",
// which a client sends as %2F (chi matches the escaped path and passes it
// on as sent).
func keyParam(r *http.Request, kind string) (string, error) {
	key, err := url.PathUnescape(chi.URLParam(r, "key"))
	if err != nil {
		return "", problem("validation-failed", "the "+kind+" key is not a valid escaped path segment")
	}
	return key, tracking.ValidKey(kind, key)
}

type experimentTagRef struct {
	experimentRef
	tagKey
}

func (x *experimentTagRef) readParams(r *http.Request) error {
	if err := x.experimentRef.readParams(r); err != nil {
		return err
	}
	return x.tagKey.readParams(r)
}

type runTagRef struct {
	runRef
	tagKey
}

func (x *runTagRef) readParams(r *http.Request) error {
	if err := x.runRef.readParams(r); err != nil {
		return err
	}
	return x.tagKey.readParams(r)
}

// listQuery is a list's paging and ?view= (active, deleted or all).
type listQuery struct {
	pageQuery
	view projections.View
}

func (q *listQuery) readParams(r *http.Request) error {
	if err := q.pageQuery.readParams(r); err != nil {
		return err
	}
	switch v := projections.View(r.URL.Query().Get("view")); v {
	case "":
		q.view = projections.ViewActive
	case projections.ViewActive, projections.ViewDeleted, projections.ViewAll:
		q.view = v
	default:
		return problem("validation-failed", "view must be active, deleted or all")
	}
	return nil
}

// ---- experiments ----

type createExperimentRequest struct {
	Name             string            `json:"name"`
	ArtifactLocation string            `json:"artifact_location"`
	Tags             map[string]string `json:"tags"`
}

func (s *Server) createExperiment(c *call, req createExperimentRequest) (projections.Experiment, uint64, error) {
	x, seq, err := s.deps.Tracking.CreateExperiment(c.ctx, c.meta, c.who, c.param("project"),
		tracking.CreateExperiment{Name: req.Name, ArtifactLocation: req.ArtifactLocation, Tags: req.Tags})
	if err != nil {
		return projections.Experiment{}, 0, err
	}
	c.locate("/api/v1/projects/" + x.ProjectID + "/experiments/" + x.ID)
	return experimentFromState(x), seq, nil
}

// ExperimentPage is a page of experiments.
type ExperimentPage = projections.Page[projections.Experiment]

type listExperimentsQuery struct {
	listQuery
	name   string
	search experimentSearchQuery // ?filter= and ?order_by= (run_search_routes.go)
}

func (q *listExperimentsQuery) readParams(r *http.Request) error {
	q.name = r.URL.Query().Get("name")
	if len(q.name) > tracking.MaxNameLen*4 || !handlers.PlainText(q.name) {
		return problem("validation-failed", "name must be at most 500 characters of text")
	}
	if err := q.search.readParams(r); err != nil {
		return err
	}
	if q.name != "" && q.search.set {
		return problem("validation-failed", "name cannot be combined with filter or order_by (filter on name instead)")
	}
	return q.listQuery.readParams(r)
}

func (s *Server) listExperiments(c *call, q listExperimentsQuery) (ExperimentPage, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return ExperimentPage{}, err
	}
	if q.search.set {
		return s.searchExperiments(c, proj.ID, q.search, q.view, q.token, q.size)
	}
	if q.name == "" {
		page, err := s.deps.Queries.ListExperiments(c.ctx, proj.ID, q.view, q.token, q.size)
		return page, pageError(err)
	}
	// Get by name: a page of at most one.
	page := ExperimentPage{Items: []projections.Experiment{}}
	x, err := s.deps.Queries.ExperimentByName(c.ctx, proj.ID, q.name)
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		return page, err
	}
	if err == nil && (q.view == projections.ViewAll || x.LifecycleStage == string(q.view)) {
		page.Items = append(page.Items, x)
	}
	return page, nil
}

// readableExperiment is readableProject plus the experiment, in it.
func (s *Server) readableExperiment(c *call, id string) (projections.Project, projections.Experiment, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return proj, projections.Experiment{}, err
	}
	x, err := s.deps.Queries.Experiment(c.ctx, proj.ID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return proj, x, problem("not-found", "experiment not found")
	}
	return proj, x, err
}

func (s *Server) getExperiment(c *call, ref experimentRef) (projections.Experiment, error) {
	_, x, err := s.readableExperiment(c, ref.experiment)
	return x, err
}

type updateExperimentRequest struct {
	experimentRef
	Name *string           `json:"name"`
	Tags map[string]string `json:"tags"`
}

func (req *updateExperimentRequest) validate() error {
	if req.Name == nil && req.Tags == nil {
		return problem("validation-failed", "send name and/or tags")
	}
	return nil
}

func (s *Server) updateExperiment(c *call, req updateExperimentRequest) (projections.Experiment, uint64, error) {
	ref, id := c.param("project"), req.experiment
	x, seq, err := s.deps.Tracking.UpdateExperiment(c.ctx, c.meta, c.who, ref, id, tracking.UpdateExperiment{Name: req.Name, Tags: req.Tags})
	if err != nil {
		return projections.Experiment{}, 0, err
	}
	return experimentFromState(x), seq, nil
}

func (s *Server) deleteExperiment(c *call, ref experimentRef) (none, uint64, error) {
	_, seq, err := s.deps.Tracking.DeleteExperiment(c.ctx, c.meta, c.who, c.param("project"), ref.experiment, true)
	return none{}, seq, err
}

func (s *Server) restoreExperiment(c *call, ref experimentRef) (projections.Experiment, uint64, error) {
	x, seq, err := s.deps.Tracking.DeleteExperiment(c.ctx, c.meta, c.who, c.param("project"), ref.experiment, false)
	return experimentFromState(x), seq, err
}

func (s *Server) deleteExperimentTag(c *call, ref experimentTagRef) (none, uint64, error) {
	_, seq, err := s.deps.Tracking.DeleteExperimentTag(c.ctx, c.meta, c.who, c.param("project"), ref.experiment, ref.key)
	return none{}, seq, err
}

// ---- runs ----

type createRunRequest struct {
	experimentRef
	Name      string            `json:"name"`
	StartTime int64             `json:"start_time"`
	Tags      map[string]string `json:"tags"`
}

func (s *Server) createRun(c *call, req createRunRequest) (projections.Run, uint64, error) {
	run, seq, err := s.deps.Tracking.CreateRun(c.ctx, c.meta, c.who, c.param("project"), req.experiment,
		tracking.CreateRun{Name: req.Name, StartTime: req.StartTime, Tags: req.Tags})
	if err != nil {
		return projections.Run{}, 0, err
	}
	c.locate("/api/v1/projects/" + run.ProjectID + "/runs/" + run.ID)
	return runFromState(run), seq, nil
}

// RunPage is a page of runs.
type RunPage = projections.Page[projections.Run]

type listRunsQuery struct {
	experimentRef
	listQuery
}

func (q *listRunsQuery) readParams(r *http.Request) error {
	if err := q.experimentRef.readParams(r); err != nil {
		return err
	}
	return q.listQuery.readParams(r)
}

func (s *Server) listRuns(c *call, q listRunsQuery) (RunPage, error) {
	proj, x, err := s.readableExperiment(c, q.experiment)
	if err != nil {
		return RunPage{}, err
	}
	page, err := s.deps.Queries.ListRuns(c.ctx, proj.ID, x.ID, q.view, q.token, q.size)
	return page, pageError(err)
}

// readableRunRow is readableProject plus the run, in it (readableRun
// only checks that it is there).
func (s *Server) readableRunRow(r *http.Request, id string) (projections.Run, error) {
	proj, err := s.readableProject(r)
	if err != nil {
		return projections.Run{}, err
	}
	run, err := s.deps.Queries.Run(r.Context(), proj.ID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return run, problem("not-found", "run not found")
	}
	return run, err
}

func (s *Server) getRun(c *call, ref runRef) (projections.Run, error) {
	return s.readableRunRow(c.r, ref.run)
}

type updateRunRequest struct {
	runRef
	Status  string            `json:"status"`
	EndTime *int64            `json:"end_time"`
	Name    *string           `json:"name"`
	Tags    map[string]string `json:"tags"`
}

func (req *updateRunRequest) validate() error {
	if req.Status == "" && req.EndTime == nil && req.Name == nil && req.Tags == nil {
		return problem("validation-failed", "send status, end_time, name and/or tags")
	}
	return nil
}

func (s *Server) updateRun(c *call, req updateRunRequest) (projections.Run, uint64, error) {
	run, seq, err := s.deps.Tracking.UpdateRun(c.ctx, c.meta, c.who, c.param("project"), req.run,
		tracking.UpdateRun{Status: req.Status, EndTime: req.EndTime, Name: req.Name, Tags: req.Tags})
	if err != nil {
		return projections.Run{}, 0, err
	}
	return s.runAnswer(c, req.run, run, seq)
}

// runAnswer is a run command's answer: the run as the command left it, or
// as it is when the command changed nothing.
func (s *Server) runAnswer(c *call, id string, run tracking.RunState, seq uint64) (projections.Run, uint64, error) {
	if seq == 0 {
		var err error
		if run, err = s.deps.Tracking.Run(c.ctx, c.who, c.param("project"), id); err != nil {
			return projections.Run{}, 0, err
		}
	}
	return runFromState(run), seq, nil
}

func (s *Server) deleteRun(c *call, ref runRef) (none, uint64, error) {
	_, seq, err := s.deps.Tracking.DeleteRun(c.ctx, c.meta, c.who, c.param("project"), ref.run, true)
	return none{}, seq, err
}

func (s *Server) restoreRun(c *call, ref runRef) (projections.Run, uint64, error) {
	run, seq, err := s.deps.Tracking.DeleteRun(c.ctx, c.meta, c.who, c.param("project"), ref.run, false)
	if err != nil {
		return projections.Run{}, 0, err
	}
	return s.runAnswer(c, ref.run, run, seq)
}

type logParamsRequest struct {
	runRef
	Params []events.Param `json:"params"`
}

func (req *logParamsRequest) validate() error {
	if len(req.Params) == 0 {
		return problem("validation-failed", "send at least one param")
	}
	return nil
}

func (s *Server) logParams(c *call, req logParamsRequest) (projections.Run, uint64, error) {
	run, seq, err := s.deps.Tracking.LogParams(c.ctx, c.meta, c.who, c.param("project"), req.run, req.Params)
	if err != nil {
		return projections.Run{}, 0, err
	}
	return s.runAnswer(c, req.run, run, seq)
}

func (s *Server) deleteRunTag(c *call, ref runTagRef) (none, uint64, error) {
	_, seq, err := s.deps.Tracking.DeleteRunTag(c.ctx, c.meta, c.who, c.param("project"), ref.run, ref.key)
	return none{}, seq, err
}

// ---- metrics ----

// metricsMaxBody admits 10,000 points with long keys.
const metricsMaxBody = 4 << 20

type metricPointRequest struct {
	Key       string              `json:"key"`
	Value     *events.MetricValue `json:"value"` // required: a missing value is not 0
	Step      int64               `json:"step"`
	Timestamp int64               `json:"timestamp"`
}

// logMetricsRequest is a batch: metric points, and params and tags too
// (one decision on the run; nothing of a refused batch is stored).
type logMetricsRequest struct {
	Metrics []metricPointRequest `json:"metrics"`
	Params  []events.Param       `json:"params"`
	Tags    map[string]string    `json:"tags"`
}

// MetricsLogged is the answer to a metric logging request.
type MetricsLogged struct {
	RunID  string `json:"run_id"`
	Logged int    `json:"logged"` // metric points
	Params int    `json:"params"` // params and tags the batch carried
	Tags   int    `json:"tags"`
}

// logMetrics appends a request's points to the metrics stream. Its
// sequence is the metrics stream's, so it is reported as
// Maestro-Metrics-Sequence; unless the client prefers async, the answer
// waits until the route's projection (metrics) makes the points readable.
func (s *Server) logMetrics(w http.ResponseWriter, r *http.Request) error {
	var ref runRef
	if err := ref.readParams(r); err != nil {
		return err
	}
	b, err := decodeMetricsBody(r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	var seq, mseq uint64
	if len(b.Params) == 0 && len(b.Tags) == 0 {
		mseq, err = s.deps.Tracking.LogMetrics(c.ctx, c.meta, c.who, c.param("project"), ref.run, b.Metrics)
	} else {
		_, seq, mseq, err = s.deps.Tracking.LogBatch(c.ctx, c.meta, c.who, c.param("project"), ref.run, b)
	}
	if err != nil {
		return err
	}
	// The params and tags are on the event stream: their sequence is
	// Maestro-Sequence, and the answer waits for the runs projection too.
	status := http.StatusOK
	if s.awaitSequence(w, r, "Maestro-Sequence", seq, projections.Runs{}.Name()) {
		status = http.StatusAccepted
	}
	s.respondSequence(w, r, status, "Maestro-Metrics-Sequence", mseq,
		MetricsLogged{RunID: ref.run, Logged: len(b.Metrics), Params: len(b.Params), Tags: len(b.Tags)})
	return nil
}

type metricKeyRef struct {
	runRef
	key       string
	maxPoints int // 0: the whole series
}

// MaxSampledPoints bounds ?max_points= of a metric history.
const MaxSampledPoints = 100_000

func (m *metricKeyRef) readParams(r *http.Request) error {
	if err := m.runRef.readParams(r); err != nil {
		return err
	}
	if v := r.URL.Query().Get("max_points"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 || n > MaxSampledPoints {
			return problem("validation-failed", "max_points must be between 4 and "+strconv.Itoa(MaxSampledPoints))
		}
		m.maxPoints = n
	}
	var err error
	m.key, err = keyParam(r, "metric")
	return err
}

// MetricHistory is a run's series of one key (the answer of GET
// …/metrics/{key}, which writes it as it reads it: see metricHistory).
type MetricHistory struct {
	Key    string                    `json:"key"`
	Points []projections.MetricPoint `json:"points"`
	// Truncated is false: the whole series is answered. (It said that a
	// series had more than 100,000 points when the answer stopped there.)
	Truncated bool `json:"truncated"`
}

// metricHistory answers a run's series of one key, whole or downsampled
// (max_points). The whole series of any length is one answer, written as
// the points are read (projections.EachMetricPoint) in bounded memory, not
// pages: a chart or an export wants all of it, each page of a cursor would
// re-read the chunk headers before it, and a page token over points with
// equal positions needs the chunk's sequence and index, which a client
// has no use for. (MLflow's get-history pages, through
// MetricHistoryPage.) Errors before the first 64 KiB are written are
// problems as usual; after that the connection is cut, so a client never
// mistakes a broken answer for a short series.
func (s *Server) metricHistory(w http.ResponseWriter, r *http.Request) error {
	var ref metricKeyRef
	if err := ref.readParams(r); err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	if _, err := s.readableRunRow(r, ref.run); err != nil {
		return err
	}
	out := newHistoryWriter(w, ref.key)
	var err error
	if ref.maxPoints > 0 {
		err = s.deps.Queries.EachMetricPointSampled(r.Context(), ref.run, ref.key, ref.maxPoints, out.point)
	} else {
		err = s.deps.Queries.EachMetricPoint(r.Context(), ref.run, ref.key, out.point)
	}
	if err == nil {
		err = out.finish()
	}
	if err != nil && out.started {
		s.deps.Logger.ErrorContext(r.Context(), "metric history cut short", "request_id", requestID(r.Context()), "err", err)
		panic(http.ErrAbortHandler)
	}
	return err
}

// historyWriter writes a MetricHistory as its points come: the JSON
// json.Encoder would write for it, flushed every 64 KiB.
type historyWriter struct {
	w       http.ResponseWriter
	buf     []byte
	prefix  []byte // {"key":<key>,"value":
	n       int
	started bool
}

const historyFlush = 64 << 10

func newHistoryWriter(w http.ResponseWriter, key string) *historyWriter {
	k, _ := json.Marshal(key)
	h := &historyWriter{w: w, buf: make([]byte, 0, historyFlush+256)}
	h.prefix = append(append(append(h.prefix, `{"key":`...), k...), `,"value":`...)
	h.buf = append(append(append(h.buf, `{"key":`...), k...), `,"points":[`...)
	return h
}

func (h *historyWriter) point(p projections.MetricPoint) error {
	if h.n > 0 {
		h.buf = append(h.buf, ',')
	}
	h.n++
	h.buf = p.Value.AppendJSON(append(h.buf, h.prefix...))
	h.buf = strconv.AppendInt(append(h.buf, `,"step":`...), p.Step, 10)
	h.buf = strconv.AppendInt(append(h.buf, `,"timestamp":`...), p.Timestamp, 10)
	h.buf = append(h.buf, '}')
	if len(h.buf) >= historyFlush {
		return h.flush()
	}
	return nil
}

func (h *historyWriter) flush() error {
	if !h.started {
		h.started = true
		h.w.Header().Set("Content-Type", "application/json")
		h.w.Header().Set("Cache-Control", "no-store")
		h.w.WriteHeader(http.StatusOK)
	}
	_, err := h.w.Write(h.buf)
	h.buf = h.buf[:0]
	return err
}

func (h *historyWriter) finish() error {
	h.buf = append(h.buf, "],\"truncated\":false}\n"...)
	return h.flush()
}
