package api

import (
	"cmp"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/sweeps"
	"github.com/maestro-ml/maestro/projections"
	"github.com/maestro-ml/maestro/tuning"
)

// Hyper-parameter sweeps on Maestro's API, under a project. Creating and
// stopping go through sweeps.Service (which authorizes job:run on the
// project, as a job submission does, and holds a sweep to tuning's space
// rules and the jobs' rules for its trial); the list and a sweep with its
// trials are read from the sweeps projection after the read-side project
// check (readableProject). The scheduler (handlers/sweeps) runs the trials
// as jobs; nothing here starts one.

// sweepMaxBody bounds a sweep request: a space of tuning.MaxParams params
// of tuning.MaxValues values of up to tuning.MaxValueBytes bytes (800 KB
// at most) and a trial as large as a job's fit, with room for escaping.
const sweepMaxBody = 1 << 20

// sweepViews are the projections a sweep command's answer and the next
// natural read need.
var sweepViews = []string{projections.Sweeps{}.Name()}

func (s *Server) sweepRoutes() []Route {
	const (
		sweepsPath = "/api/v1/projects/{project}/sweeps"
		sweep      = sweepsPath + "/{sweep}"
	)
	return []Route{
		{Method: "POST", Pattern: sweepsPath, Command: true, MaxBody: sweepMaxBody, Await: slices.Concat(trackingViews, sweepViews),
			handle: command(s, http.StatusCreated, s.createSweep)},
		{Method: "GET", Pattern: sweepsPath, handle: query(s, s.listSweeps)},
		{Method: "GET", Pattern: sweep, handle: query(s, s.getSweep)},
		{Method: "POST", Pattern: sweep + ":stop", Command: true, handle: commandNoBody(s, http.StatusOK, s.stopSweep)},
	}
}

// ---- inputs ----

// sweepRef is {sweep}.
type sweepRef struct{ sweep string }

func (x *sweepRef) readParams(r *http.Request) (err error) {
	x.sweep, err = pathID(r, "sweep", "sweep")
	return err
}

// sweepParamRequest is one dimension of a sweep's space as the API takes
// it: a categorical param's values may be strings, numbers or booleans,
// taken as their JSON text (0.1 is "0.1"), as a job's params are.
type sweepParamRequest struct {
	Type   string            `json:"type"`
	Low    *float64          `json:"low"`
	High   *float64          `json:"high"`
	Values []json.RawMessage `json:"values"`
}

// sweepTrialRequest is the job every trial runs: timeout is a Go duration
// ("90s", "1h30m") or a number of seconds, as a job's; params are fixed
// params every trial gets besides the sampled ones.
type sweepTrialRequest struct {
	Command    []string                   `json:"command"`
	Env        map[string]string          `json:"env"`
	Params     map[string]json.RawMessage `json:"params"`
	Timeout    json.RawMessage            `json:"timeout"`
	MaxRetries int                        `json:"max_retries"`
}

// createSweepRequest is the body of POST …/sweeps.
type createSweepRequest struct {
	Experiment    string                       `json:"experiment"`
	Name          string                       `json:"name"`
	Objective     events.SweepObjective        `json:"objective"`
	Space         map[string]sweepParamRequest `json:"space"`
	Algorithm     string                       `json:"algorithm"`
	EarlyStopping *events.SweepEarlyStopping   `json:"early_stopping"`
	MaxTrials     int                          `json:"max_trials"`
	Parallelism   int                          `json:"parallelism"`
	Seed          *uint64                      `json:"seed"`
	Trial         sweepTrialRequest            `json:"trial"`

	in sweeps.CreateInput
}

// maxSweepExperiment bounds the experiment reference (an id or a name).
const maxSweepExperiment = 500

// sweepField is a param name as a problem's field path shows it: cut
// short, so a hostile name keeps the detail bounded.
func sweepField(name string) string {
	if len(name) > 72 {
		cut := 64
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut] + "…"
	}
	return name
}

// validate bounds the request and turns it into the service's input
// (categorical values and trial params as text, the timeout as a
// duration); the space, the objective, the counts and the trial's job are
// sweeps.Check's to judge (run by the service), each refusal naming its
// field ("space.lr.low: …").
func (req *createSweepRequest) validate() error {
	bad := func(field, detail string) error { return problem("validation-failed", field+": "+detail) }
	if len(req.Experiment) > maxSweepExperiment {
		return bad("experiment", "at most "+strconv.Itoa(maxSweepExperiment)+" bytes (an experiment's id or name)")
	}
	if len(req.Space) > tuning.MaxParams {
		return bad("space", "has "+strconv.Itoa(len(req.Space))+" params, at most "+strconv.Itoa(tuning.MaxParams)+" allowed")
	}
	in := sweeps.CreateInput{Experiment: strings.TrimSpace(req.Experiment), Name: req.Name, Objective: req.Objective,
		Algorithm: req.Algorithm, EarlyStopping: req.EarlyStopping, MaxTrials: req.MaxTrials, Parallelism: req.Parallelism,
		Seed: req.Seed, Space: make(map[string]events.SweepParam, len(req.Space))}
	for name, p := range req.Space {
		field := "space." + sweepField(name)
		if len(p.Values) > tuning.MaxValues {
			return bad(field+".values", "has "+strconv.Itoa(len(p.Values))+" values, at most "+strconv.Itoa(tuning.MaxValues)+" allowed")
		}
		param := events.SweepParam{Type: p.Type, Low: p.Low, High: p.High}
		if p.Values != nil {
			param.Values = make([]string, 0, len(p.Values))
		}
		for i, raw := range p.Values {
			v, ok := paramText(raw)
			if !ok {
				return bad(field+".values["+strconv.Itoa(i)+"]", "must be a string, a number or a boolean")
			}
			param.Values = append(param.Values, v)
		}
		in.Space[name] = param
	}
	t := req.Trial
	if len(t.Params) > jobs.MaxParams {
		return bad("trial.params", "at most "+strconv.Itoa(jobs.MaxParams)+" params")
	}
	in.Trial = sweeps.TrialInput{Command: t.Command, Env: t.Env, MaxRetries: t.MaxRetries}
	if len(t.Params) > 0 {
		in.Trial.Params = make(map[string]string, len(t.Params))
	}
	for k, raw := range t.Params {
		v, ok := paramText(raw)
		if !ok {
			return bad("trial.params."+sweepField(k), "must be a string, a number or a boolean")
		}
		in.Trial.Params[k] = v
	}
	timeout, err := jobTimeout(t.Timeout)
	if err != nil {
		if pe := (*problemError)(nil); errors.As(err, &pe) {
			return bad("trial.timeout", strings.TrimPrefix(pe.detail, "timeout "))
		}
		return err
	}
	in.Trial.Timeout = timeout
	req.in = in
	return nil
}

// ---- answers ----

// SweepPage is a page of sweeps.
type SweepPage = projections.Page[projections.Sweep]

// sweepFromState renders a sweep as the read model does, from the write
// side's state: what a command answers when the read model has not caught
// up (Prefer: respond-async, or a wait that ran out). The trials' times,
// last reports and job states are the read model's only, and the progress
// takes the ended trials by number (the read model: in end order).
func sweepFromState(st sweeps.State) projections.SweepDetail {
	d := st.Spec
	out := projections.Sweep{ID: d.SweepID, ProjectID: d.ProjectID, ExperimentID: d.ExperimentID, Name: d.Name, State: st.State,
		StopRequested: st.StopRequested, Reason: cmp.Or(st.EndReason, st.StopReason), Objective: d.Objective, Space: d.Space,
		Algorithm: d.Algorithm, EarlyStopping: d.EarlyStopping, MaxTrials: d.MaxTrials, Parallelism: d.Parallelism, Seed: d.Seed,
		Trial: projections.TemplateOf(d.Trial), CreatedBy: d.CreatedBy, CreatedAt: jobTime(st.CreatedAt), UpdatedAt: jobTime(st.UpdatedAt),
		EndedAt: optionalJobTime(st.EndedAt)}
	if out.Space == nil {
		out.Space = map[string]events.SweepParam{}
	}
	trials := make([]projections.SweepTrial, 0, len(st.Trials))
	var ended []projections.SweepTrial
	for _, t := range st.Trials {
		tr := projections.SweepTrial{Number: t.Number, Params: t.Params, State: t.State, JobID: t.JobID, RunID: t.RunID,
			Reason: t.Reason, Pruned: t.Pruned}
		if tr.Params == nil {
			tr.Params = map[string]string{}
		}
		if t.Objective != nil {
			v := events.MetricValue(*t.Objective)
			tr.Objective = &v
		}
		trials = append(trials, tr)
		if t.State != events.TrialSuggested && t.State != events.TrialRunning {
			ended = append(ended, tr)
		}
	}
	out.Counts = projections.CountsOf(trials)
	out.Best = projections.BestTrialOf(d.Objective.Direction, trials)
	return projections.SweepDetail{Sweep: out, Trials: trials, Progress: projections.ProgressOf(d.Objective.Direction, ended)}
}

// sweepAnswer is a sweep command's answer: the read model's sweep once it
// has applied the command (so the answer and the next read agree), else
// the write side's state (sweepFromState), which respondCommand then
// answers with 202.
func (s *Server) sweepAnswer(c *call, st sweeps.State, seq uint64, views []string) projections.SweepDetail {
	if seq != 0 && !preferAsync(c.r) && s.waitApplied(c.ctx, seq, views...) {
		if d, err := s.deps.Queries.SweepDetail(c.ctx, st.Spec.ProjectID, st.ID()); err == nil {
			return d
		}
	}
	return sweepFromState(st)
}

// ---- commands ----

func (s *Server) createSweep(c *call, req createSweepRequest) (projections.SweepDetail, uint64, error) {
	st, seq, err := s.deps.Sweeps.Create(c.ctx, c.meta, c.who, c.param("project"), req.in)
	if err != nil {
		return projections.SweepDetail{}, 0, err
	}
	c.locate("/api/v1/projects/" + st.Spec.ProjectID + "/sweeps/" + st.ID())
	return s.sweepAnswer(c, st, seq, slices.Concat(trackingViews, sweepViews)), seq, nil
}

func (s *Server) stopSweep(c *call, ref sweepRef) (projections.SweepDetail, uint64, error) {
	st, seq, err := s.deps.Sweeps.Stop(c.ctx, c.meta, c.who, c.param("project"), ref.sweep)
	if err != nil {
		return projections.SweepDetail{}, 0, err
	}
	return s.sweepAnswer(c, st, seq, sweepViews), seq, nil
}

// ---- queries ----

// listSweepsQuery is paging and ?state=.
type listSweepsQuery struct {
	pageQuery
	filter projections.SweepFilter
}

func (q *listSweepsQuery) readParams(r *http.Request) error {
	q.filter.State = r.URL.Query().Get("state")
	if q.filter.State != "" && !slices.Contains(projections.SweepStates, q.filter.State) {
		return problem("validation-failed", "state must be one of "+strings.Join(projections.SweepStates, ", "))
	}
	return q.pageQuery.readParams(r)
}

func (s *Server) listSweeps(c *call, q listSweepsQuery) (SweepPage, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return SweepPage{}, err
	}
	page, err := s.deps.Queries.ListSweeps(c.ctx, proj.ID, q.filter, q.token, q.size)
	return page, searchError(err)
}

// readableSweep is readableProject plus the sweep, in it, with its trials.
func (s *Server) readableSweep(r *http.Request, id string) (projections.SweepDetail, error) {
	proj, err := s.readableProject(r)
	if err != nil {
		return projections.SweepDetail{}, err
	}
	d, err := s.deps.Queries.SweepDetail(r.Context(), proj.ID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return d, problem("not-found", "sweep not found")
	}
	return d, err
}

func (s *Server) getSweep(c *call, ref sweepRef) (projections.SweepDetail, error) {
	return s.readableSweep(c.r, ref.sweep)
}
