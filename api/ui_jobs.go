package api

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/projections"
	"github.com/maestro-ml/maestro/runner"
)

// The jobs area of the web UI: a project's queue and history (listJobs,
// with its state and experiment filters and pages), the submission form
// (submitJob), a job (getJob) with its cancel form (cancelJob) and its log:
// the page renders the log read so far (runner.ReadLogs, as jobLogs reads
// it), and joblog.js follows it live from the UI's own log route, which is
// the API's jobLogs itself behind the cookie (Server-Sent Events with
// ?follow=true, the whole log as text with ?format=text).

func (s *Server) uiJobRoutes() []UIRoute {
	const (
		list = "/projects/{project}/jobs"
		job  = list + "/{job}"
	)
	return []UIRoute{
		{Method: "GET", Pattern: "/jobs", handle: s.uiPickProject("Jobs", "jobs")},
		{Method: "GET", Pattern: list, handle: shown(s.jobsPage)},
		{Method: "POST", Pattern: list, MaxBody: jobMaxBody, handle: s.uiSubmitJob},
		{Method: "GET", Pattern: job, handle: shown(s.jobPage)},
		{Method: "POST", Pattern: job + "/cancel", handle: s.uiCancelJob},
		{Method: "GET", Pattern: job + "/log", Timeout: logFollowTimeout, handle: s.jobLogs},
	}
}

func init() {
	maps.Copy(uiNotices, map[string]string{
		"job-submitted":        "Job submitted.",
		"job-cancel-requested": "Cancellation requested: the job ends once its runner has stopped it.",
	})
}

// uiLogLines bounds the log lines a job page renders (its last ones), and
// uiLogBytes their text, so that a long log (lines are up to
// runner.MaxLineBytes) makes no huge page; the whole log is a link away
// (?format=text), and joblog.js keeps at most as many lines again.
const (
	uiLogLines = 2000
	uiLogBytes = 2 << 20
)

// jobRow is a job as the jobs table shows it.
type jobRow struct {
	Job         projections.Job
	Experiment  string // the experiment's name ("" when it cannot be read)
	Command     string // the command as a shell line, cut for the table
	SubmittedBy string // the submitter's e-mail address, or id
}

// jobsData is the jobs page's data.
type jobsData struct {
	Slug       string
	Items      []jobRow
	States     []string
	State      string // the state filter
	Experiment string // the experiment filter as typed (a name or an id)
	NoMatch    string // the experiment filter names no experiment
	NextQuery  string // "?" and the next page's query
	CanSubmit  bool
	Form       url.Values // a refused submission's fields, shown again
	Limits     jobLimits
}

// jobLimits are jobs.CheckSubmit's bounds, for the form's hints.
type jobLimits struct {
	MaxRetries int
	MaxTimeout string
}

// jobsPage is a project's jobs, newest first, filtered by state and
// experiment as GET …/jobs is, with the submission form for those who may
// run jobs.
func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	d := jobsData{Slug: proj.Slug, States: projections.JobStates, CanSubmit: can(r, proj, authz.JobRun),
		Limits: jobLimits{MaxRetries: jobs.MaxRetries, MaxTimeout: jobs.MaxTimeout.String()}}
	if r.Method == http.MethodPost {
		d.Form = r.PostForm
	}
	v := r.URL.Query()
	d.State, d.Experiment = v.Get("state"), strings.TrimSpace(v.Get("experiment"))
	// The experiment filter takes a name or an id; GET …/jobs takes the id.
	if d.Experiment != "" && !isCanonicalUUID(d.Experiment) {
		page, err := s.listExperiments(c, listExperimentsQuery{listQuery: listQuery{view: projections.ViewAll}, name: d.Experiment})
		if err != nil {
			return err
		}
		if len(page.Items) == 0 {
			d.NoMatch = d.Experiment
		} else {
			v.Set("experiment", page.Items[0].ID)
		}
	}
	if d.NoMatch == "" {
		var q listJobsQuery
		if err := fillParams(jobsWithQuery(r, v), &q); err != nil {
			return err
		}
		page, err := s.listJobs(c, q)
		if err != nil {
			return err
		}
		if d.Items, err = s.jobRows(c, proj, page.Items); err != nil {
			return err
		}
		if page.NextPageToken != "" {
			next := r.URL.Query()
			next.Del("done")
			next.Set("page_token", page.NextPageToken)
			d.NextQuery = "?" + next.Encode()
		}
	}
	pg := s.inProject(r, proj, "Jobs", "Jobs", d)
	pg.Error = errText
	return s.render(w, status, "jobs", pg)
}

// jobsWithQuery is r with query v (r itself is left as it is).
func jobsWithQuery(r *http.Request, v url.Values) *http.Request {
	r2 := r.WithContext(r.Context())
	u := *r.URL
	u.RawQuery = v.Encode()
	r2.URL = &u
	return r2
}

// jobRows adds to jobs what the table shows besides: the experiments'
// names and the submitters' addresses (of the project's members, as GET
// …/members shows them).
func (s *Server) jobRows(c *call, proj projections.Project, list []projections.Job) ([]jobRow, error) {
	emails, err := s.jobMemberEmails(c)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	rows := make([]jobRow, 0, len(list))
	for _, j := range list {
		name, ok := names[j.ExperimentID]
		if !ok {
			x, err := s.deps.Queries.Experiment(c.ctx, proj.ID, j.ExperimentID)
			if err != nil && !errors.Is(err, projections.ErrNotFound) {
				return nil, err
			}
			name, names[j.ExperimentID] = x.Name, x.Name
		}
		rows = append(rows, jobRow{Job: j, Experiment: name, Command: jobCut(jobCommandLine(j.Command), 160), SubmittedBy: jobSubmitter(emails, j.SubmittedBy)})
	}
	return rows, nil
}

// jobMemberEmails maps the project's members' ids to their addresses.
func (s *Server) jobMemberEmails(c *call) (map[string]string, error) {
	ms, err := s.listMembers(c, none{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ms.Items))
	for _, m := range ms.Items {
		if m.Email != "" {
			out[m.UserID] = m.Email
		}
	}
	return out, nil
}

func jobSubmitter(emails map[string]string, id string) string {
	if e, ok := emails[id]; ok {
		return e
	}
	return id
}

// jobCommandLine is a command as a POSIX shell would take it: arguments with
// anything but plain characters in single quotes.
func jobCommandLine(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			b.WriteString(a)
			continue
		}
		b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	return b.String()
}

// jobCut shortens s to at most n runes, marking the cut.
func jobCut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	rs := []rune(s)
	if len(rs) <= n {
		return s
	}
	return string(rs[:n-1]) + "…"
}

// uiSubmitJob is the submission form: its fields become a
// submitJobRequest, which submitJob takes as POST …/jobs does (so
// jobs.CheckSubmit's rules, the secret refusal and job:run apply alike).
func (s *Server) uiSubmitJob(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.jobsPage(w, r, status, detail) }
	req, err := submitJobRequestFromForm(r)
	if err == nil {
		err = req.validate()
	}
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	sub, seq, err := s.submitJob(newCall(w, r), req)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, slices.Concat(trackingViews, jobViews)...)
	seeOther(w, r, uiJobsPath(r)+"/"+sub.Job.ID, "job-submitted")
	return nil
}

// submitJobRequestFromForm reads the submission form: the command one
// argument per line, params and env one key=value per line, the timeout as
// a duration ("90s", "1h30m") or seconds, and max retries.
func submitJobRequestFromForm(r *http.Request) (submitJobRequest, error) {
	req := submitJobRequest{Experiment: formValue(r, "experiment"), Name: formValue(r, "name"),
		RetryOnFailure: formValue(r, "retry_on_failure") == "on"}
	for line := range strings.Lines(formValue(r, "command")) {
		if a := strings.TrimSpace(line); a != "" {
			req.Command = append(req.Command, a)
		}
	}
	params, err := parseJobKeyValues("params", formValue(r, "params"))
	if err != nil {
		return req, err
	}
	if len(params) > 0 {
		req.Params = make(map[string]json.RawMessage, len(params))
		for k, v := range params {
			req.Params[k], _ = json.Marshal(v)
		}
	}
	if req.Env, err = parseJobKeyValues("env", formValue(r, "env")); err != nil {
		return req, err
	}
	if t := strings.TrimSpace(formValue(r, "timeout")); t != "" {
		if _, err := strconv.ParseFloat(t, 64); err == nil {
			req.Timeout = json.RawMessage(t) // seconds, as the API takes a number
		} else {
			req.Timeout, _ = json.Marshal(t)
		}
	}
	if m := strings.TrimSpace(formValue(r, "max_retries")); m != "" {
		if req.MaxRetries, err = strconv.Atoi(m); err != nil {
			return req, problem("validation-failed", "max retries must be a whole number")
		}
	}
	return req, nil
}

// parseJobKeyValues reads "key=value" lines (a textarea); a line without "="
// or a key given twice is an error naming it.
func parseJobKeyValues(field, text string) (map[string]string, error) {
	var out map[string]string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, problem("validation-failed", field+": write one key=value per line (not "+strconv.Quote(jobCut(line, 80))+")")
		}
		if out == nil {
			out = map[string]string{}
		}
		if _, dup := out[k]; dup {
			return nil, problem("validation-failed", field+": "+strconv.Quote(jobCut(k, 80))+" is given twice")
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}

// uiJobsPath is the UI path of the request's project's jobs.
func uiJobsPath(r *http.Request) string {
	return "/projects/" + url.PathEscape(chi.URLParam(r, "project")) + "/jobs"
}

// jobData is the job page's data.
type jobData struct {
	Slug        string
	Job         projections.Job
	Experiment  string
	Command     string
	Params      []kv
	Env         []kv
	SubmittedBy string
	Timeout     string
	Active      bool // queued or running
	CanCancel   bool
	Log         jobLogView
}

// jobLogView is the log as a page (the job's, its run's) renders it first
// (the partial _joblog.html).
type jobLogView struct {
	Active  bool   // the job is queued or running: joblog.js follows it
	State   string // the job's state
	Served  bool   // this process serves job logs
	Lines   []JobLogLine
	Total   int    // lines read in all (Lines are the last of them)
	LastKey string // the last line's key (joblog.js skips the lines up to it when it follows)
	Follow  string // the follow's URL
	Text    string // the whole log as text
	Failed  bool   // the log could not be read
}

// jobPage is a job: its state, attempts, how it ended, its run, its
// request, the cancel form for those who may run jobs while it is queued
// or running, and its log.
func (s *Server) jobPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, ref, err := projectInput[jobRef](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	j, err := s.getJob(c, ref)
	if err != nil {
		return err
	}
	rows, err := s.jobRows(c, proj, []projections.Job{j})
	if err != nil {
		return err
	}
	active := j.State == events.JobQueued || j.State == events.JobRunning
	d := jobData{Slug: proj.Slug, Job: j, Experiment: rows[0].Experiment, Command: jobCommandLine(j.Command),
		Params: sortedKV(j.Params, func(s string) string { return s }), Env: sortedKV(j.Env, func(s string) string { return s }),
		SubmittedBy: rows[0].SubmittedBy, Timeout: (time.Duration(j.TimeoutSeconds * float64(time.Second))).String(),
		Active: active, CanCancel: active && !j.CancelRequested && can(r, proj, authz.JobRun)}
	d.Log = s.jobLog(r, j)
	pg := s.inProject(r, proj, "Job "+j.Name, "Jobs", d)
	pg.Error = errText
	return s.render(w, status, "job", pg)
}

// jobLog is job j's log as a page renders it first: its tail, and where
// joblog.js follows it while the job runs. A log that cannot be read is
// said so on the page, not an error of the page.
func (s *Server) jobLog(r *http.Request, j projections.Job) jobLogView {
	base := uiJobsPath(r) + "/" + j.ID + "/log"
	v := jobLogView{Active: j.State == events.JobQueued || j.State == events.JobRunning, State: j.State,
		Served: s.deps.JobLogs != nil && s.deps.Jobs != nil, Follow: base + "?follow=true", Text: base + "?format=text"}
	if v.Served {
		if err := s.jobLogTail(r.Context(), j.ID, &v); err != nil {
			s.deps.Logger.WarnContext(r.Context(), "read a job's log for a page", "request_id", requestID(r.Context()), "job_id", j.ID, "err", err)
			v.Failed, v.Lines, v.Total = true, nil, 0
		}
	}
	return v
}

// jobLogTail reads a job's log as GET …/logs does (once, bounded by
// logReadTimeout) and keeps its last uiLogLines lines, at most uiLogBytes
// of text.
func (s *Server) jobLogTail(ctx context.Context, jobID string, v *jobLogView) error {
	ctx, cancel := context.WithTimeout(ctx, logReadTimeout)
	defer cancel()
	var lines []JobLogLine
	size := 0
	err := runner.ReadLogs(ctx, s.deps.JobLogs, jobID, false, nil, func(l runner.LogLine) error {
		lines = append(lines, apiLogLine(l))
		size += len(l.Text)
		v.Total++
		for len(lines) > uiLogLines || (size > uiLogBytes && len(lines) > 1) {
			size -= len(lines[0].Text)
			lines[0] = JobLogLine{}
			lines = lines[1:]
		}
		return nil
	})
	if err != nil {
		return err
	}
	v.Lines = lines
	if n := len(lines); n > 0 {
		v.LastKey = jobLogKey(lines[n-1])
	}
	return nil
}

// jobLogKey identifies a log line as joblog.js does from a line event:
// attempt, time (as JSON writes it) and stream.
func jobLogKey(l JobLogLine) string {
	return strconv.Itoa(l.Attempt) + " " + l.Time.UTC().Format(time.RFC3339Nano) + " " + l.Stream
}

// uiCancelJob is the cancel form: cancelJob, as POST …/jobs/{job}:cancel.
func (s *Server) uiCancelJob(w http.ResponseWriter, r *http.Request) error {
	var ref jobRef
	if err := fillParams(r, &ref); err != nil {
		return err
	}
	_, seq, err := s.cancelJob(newCall(w, r), ref)
	if err != nil {
		return s.formFailed(w, r, err, func(status int, detail string) error { return s.jobPage(w, r, status, detail) })
	}
	s.waitApplied(r.Context(), seq, jobViews...)
	seeOther(w, r, uiJobsPath(r)+"/"+ref.job, "job-cancel-requested")
	return nil
}
