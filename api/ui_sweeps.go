package api

import (
	"encoding/json"
	"maps"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/sweeps"
	"github.com/maestro-ml/maestro/projections"
	"github.com/maestro-ml/maestro/tuning"
)

// The sweeps area of the web UI: a project's sweeps (listSweeps, with its
// state filter and pages) with the "New sweep" form (createSweep: the same
// request as POST …/sweeps, its space written as JSON), and a sweep
// (getSweep): its trials with their params, state, objective, job and run,
// the best trial marked, the objective over the trials with the best so
// far (static/sweeps.js draws it with uPlot from the table the page
// renders, so the values are readable without the canvas), and the stop
// form (stopSweep).

func (s *Server) uiSweepRoutes() []UIRoute {
	const (
		list  = "/projects/{project}/sweeps"
		sweep = list + "/{sweep}"
	)
	return []UIRoute{
		{Method: "GET", Pattern: "/sweeps", handle: s.uiPickProject("Sweeps", "sweeps")},
		{Method: "GET", Pattern: list, handle: shown(s.sweepsPage)},
		{Method: "POST", Pattern: list, MaxBody: sweepMaxBody, handle: s.uiCreateSweep},
		{Method: "GET", Pattern: sweep, handle: shown(s.sweepPage)},
		{Method: "POST", Pattern: sweep + "/stop", handle: s.uiStopSweep},
	}
}

func init() {
	maps.Copy(uiNotices, map[string]string{
		"sweep-created":        "Sweep started: its trials run as jobs.",
		"sweep-stop-requested": "Stop requested: no new trial starts, and the running ones are cancelled.",
	})
}

// sweepsData is the sweeps page's data.
type sweepsData struct {
	Slug      string
	Items     []projections.Sweep
	States    []string
	State     string // the state filter
	NextQuery string // "?" and the next page's query
	CanCreate bool
	Form      url.Values // a refused request's fields, shown again
	Limits    sweepLimits
}

// sweepLimits are the bounds the form's hints name.
type sweepLimits struct {
	MaxTrials, MaxParallelism, MaxParams, MaxValues int
	MaxTimeout                                      string
}

// sweepsPage is a project's sweeps, newest first, filtered by state as
// GET …/sweeps is, with the "New sweep" form for those who may run jobs.
func (s *Server) sweepsPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, q, err := projectInput[listSweepsQuery](s, r)
	if err != nil {
		return err
	}
	page, err := s.listSweeps(newCall(w, r), q)
	if err != nil {
		return err
	}
	d := sweepsData{Slug: proj.Slug, Items: page.Items, States: projections.SweepStates, State: q.filter.State,
		CanCreate: can(r, proj, authz.JobRun),
		Limits: sweepLimits{MaxTrials: sweeps.MaxTrials, MaxParallelism: sweeps.MaxParallelism, MaxParams: tuning.MaxParams,
			MaxValues: tuning.MaxValues, MaxTimeout: jobs.MaxTimeout.String()}}
	if r.Method == http.MethodPost {
		d.Form = r.PostForm
	}
	if page.NextPageToken != "" {
		next := r.URL.Query()
		next.Del("done")
		next.Set("page_token", page.NextPageToken)
		d.NextQuery = "?" + next.Encode()
	}
	pg := s.inProject(r, proj, "Sweeps", "Sweeps", d)
	pg.Error = errText
	return s.render(w, status, "sweeps", pg)
}

// uiSweepsPath is the UI path of the request's project's sweeps.
func uiSweepsPath(r *http.Request) string {
	return "/projects/" + url.PathEscape(chi.URLParam(r, "project")) + "/sweeps"
}

// uiCreateSweep is the "New sweep" form: its fields become a
// createSweepRequest, which createSweep takes as POST …/sweeps does (so
// the same validation, each refusal naming its field, and job:run apply).
func (s *Server) uiCreateSweep(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.sweepsPage(w, r, status, detail) }
	req, err := createSweepRequestFromForm(r)
	if err == nil {
		err = req.validate()
	}
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	sw, _, err := s.createSweep(newCall(w, r), req)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	// createSweep has waited for the read model (sweepAnswer).
	seeOther(w, r, uiSweepsPath(r)+"/"+sw.ID, "sweep-created")
	return nil
}

// createSweepRequestFromForm reads the "New sweep" form: the command one
// argument per line, the space as JSON (the API's "space" object), the
// counts and the seed as whole numbers, the timeout as the API takes it
// (a duration or seconds), and an optional early-stopping rule.
func createSweepRequestFromForm(r *http.Request) (createSweepRequest, error) {
	req := createSweepRequest{Experiment: formValue(r, "experiment"), Name: formValue(r, "name"), Algorithm: formValue(r, "algorithm"),
		Objective: events.SweepObjective{Metric: formValue(r, "metric"), Direction: formValue(r, "direction")}}
	for line := range strings.Lines(formValue(r, "command")) {
		if a := strings.TrimSpace(line); a != "" {
			req.Trial.Command = append(req.Trial.Command, a)
		}
	}
	if t := strings.TrimSpace(formValue(r, "timeout")); t != "" {
		if _, err := strconv.ParseFloat(t, 64); err == nil {
			req.Trial.Timeout = json.RawMessage(t) // seconds, as the API takes a number
		} else {
			req.Trial.Timeout, _ = json.Marshal(t)
		}
	}
	whole := func(field string, into *int) error {
		v := strings.TrimSpace(formValue(r, field))
		if v == "" {
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return problem("validation-failed", field+": must be a whole number")
		}
		*into = n
		return nil
	}
	for _, f := range []struct {
		name string
		into *int
	}{{"max_trials", &req.MaxTrials}, {"parallelism", &req.Parallelism}, {"max_retries", &req.Trial.MaxRetries}} {
		if err := whole(f.name, f.into); err != nil {
			return req, err
		}
	}
	if v := strings.TrimSpace(formValue(r, "seed")); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return req, problem("validation-failed", "seed: must be a whole number from 0")
		}
		req.Seed = &seed
	}
	// Fixed params, one name=value a line, every trial gets besides the
	// sampled ones.
	for line := range strings.Lines(formValue(r, "params")) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return req, problem("validation-failed", "trial.params: write one name=value a line")
		}
		if req.Trial.Params == nil {
			req.Trial.Params = map[string]json.RawMessage{}
		}
		req.Trial.Params[strings.TrimSpace(name)], _ = json.Marshal(strings.TrimSpace(value))
	}
	switch rule := formValue(r, "early_stopping"); rule {
	case "", "none":
	default:
		req.EarlyStopping = &events.SweepEarlyStopping{Rule: rule}
	}
	space := strings.TrimSpace(formValue(r, "space"))
	if space == "" {
		return req, problem("validation-failed", "space: write the params to search as a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(space))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req.Space); err != nil || dec.More() {
		detail := "not a JSON object of params such as {\"lr\": {\"type\": \"log_uniform\", \"low\": 0.0001, \"high\": 0.1}}"
		if err != nil {
			detail += " (" + jobCut(err.Error(), 200) + ")"
		}
		return req, problem("validation-failed", "space: "+detail)
	}
	return req, nil
}

// sweepTrialRow is a trial as the sweep page's table shows it.
type sweepTrialRow struct {
	projections.SweepTrial
	Params    string // "name=value" pairs, by name
	Objective string // the value, "—" when none
	Best      bool
}

// sweepPoint is a point of the objective's progress as the page's table
// (and sweeps.js, from its data attributes) has it: finite values only,
// "" for none.
type sweepPoint struct {
	Trial     int
	State     string
	Objective string
	Best      string
	BestTrial int
}

// sweepData is the sweep page's data.
type sweepData struct {
	Slug       string
	Sweep      projections.SweepDetail
	Experiment string
	Space      []kv // param: its range or values
	Command    string
	Timeout    string
	CreatedBy  string
	Trials     []sweepTrialRow
	Progress   []sweepPoint
	Best       string // the best value, formatted
	Active     bool   // running or stopping
	CanStop    bool
}

// metricText formats an objective value for a page.
func metricText(v *events.MetricValue) string {
	if v == nil {
		return ""
	}
	b, _ := v.MarshalJSON()
	return strings.Trim(string(b), `"`)
}

// finiteText is a value sweeps.js can plot: finite, else "".
func finiteText(v *events.MetricValue) string {
	if v == nil || math.IsNaN(float64(*v)) || math.IsInf(float64(*v), 0) {
		return ""
	}
	return strconv.FormatFloat(float64(*v), 'g', -1, 64)
}

// spaceText describes a param of the space.
func spaceText(p events.SweepParam) string {
	num := func(f *float64) string {
		if f == nil {
			return "?"
		}
		return strconv.FormatFloat(*f, 'g', -1, 64)
	}
	if p.Type == tuning.Categorical {
		return "categorical: " + strings.Join(p.Values, ", ")
	}
	return p.Type + " from " + num(p.Low) + " to " + num(p.High)
}

// sweepPage is a sweep: its spec, state and best trial, its trials, the
// objective over them, and the stop form for those who may run jobs while
// it runs.
func (s *Server) sweepPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, ref, err := projectInput[sweepRef](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	sw, err := s.getSweep(c, ref)
	if err != nil {
		return err
	}
	emails, err := s.jobMemberEmails(c)
	if err != nil {
		return err
	}
	active := sw.State == events.SweepRunning || sw.State == events.SweepStopping
	d := sweepData{Slug: proj.Slug, Sweep: sw, Command: jobCommandLine(sw.Trial.Command), CreatedBy: jobSubmitter(emails, sw.CreatedBy),
		Timeout: (time.Duration(sw.Trial.TimeoutSeconds * float64(time.Second))).String(), Active: active,
		CanStop: sw.State == events.SweepRunning && can(r, proj, authz.JobRun),
		Space:   sortedKV(sw.Space, spaceText)}
	if x, err := s.deps.Queries.Experiment(c.ctx, proj.ID, sw.ExperimentID); err == nil {
		d.Experiment = x.Name
	}
	if sw.Best != nil {
		d.Best = metricText(&sw.Best.Objective)
	}
	for _, t := range sw.Trials {
		var params []string
		for _, p := range sortedKV(t.Params, func(v string) string { return v }) {
			params = append(params, p.Key+"="+p.Value)
		}
		row := sweepTrialRow{SweepTrial: t, Params: strings.Join(params, ", "), Objective: metricText(t.Objective),
			Best: sw.Best != nil && sw.Best.Trial == t.Number}
		if row.Objective == "" {
			row.Objective = "—"
		}
		d.Trials = append(d.Trials, row)
	}
	for _, p := range sw.Progress {
		d.Progress = append(d.Progress, sweepPoint{Trial: p.Trial, State: p.State, Objective: finiteText(p.Objective), Best: finiteText(p.Best),
			BestTrial: p.BestTrial})
	}
	pg := s.inProject(r, proj, "Sweep "+sw.Name, "Sweeps", d)
	pg.Error = errText
	return s.render(w, status, "sweep", pg)
}

// uiStopSweep is the stop form: stopSweep, as POST …/sweeps/{sweep}:stop.
func (s *Server) uiStopSweep(w http.ResponseWriter, r *http.Request) error {
	var ref sweepRef
	if err := fillParams(r, &ref); err != nil {
		return err
	}
	if _, _, err := s.stopSweep(newCall(w, r), ref); err != nil {
		return s.formFailed(w, r, err, func(status int, detail string) error { return s.sweepPage(w, r, status, detail) })
	}
	seeOther(w, r, uiSweepsPath(r)+"/"+ref.sweep, "sweep-stop-requested")
	return nil
}
