package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/projections"
	"github.com/maestro-ml/maestro/runner"
)

// Training jobs on Maestro's own API, under a project. Submission and
// cancellation go through jobs.Service (which authorizes job:run on the
// project's event-sourced membership); the job list and a job are read from
// the jobs projection after the read-side check every project read makes
// (readableProject); a job's log is read from the job log stream
// (runner.ReadLogs), once or followed live as Server-Sent Events.

// jobMaxBody bounds a job submission: 256 arguments of up to 8 KiB (64 KiB
// in all), 100 env variables of up to 8 KiB and 100 params of up to 6,000
// bytes fit, with room for JSON escaping.
const jobMaxBody = 512 << 10

// A log read without follow ends within logReadTimeout; a follow lasts at
// most logFollowTimeout (the route's deadline), and each write to the
// client must finish within logWriteWindow (it extends the server's
// WriteTimeout, which would otherwise cut every answer after a minute).
// A follow that has nothing to send writes a comment every logKeepAlive,
// so proxies keep the connection and a client that went away is noticed.
const (
	logReadTimeout   = 10 * time.Minute
	logFollowTimeout = 24 * time.Hour
	logWriteWindow   = 30 * time.Second
	logKeepAlive     = 15 * time.Second
	logFlush         = 64 << 10
	// followSessionCheck is how often a UI follow checks its session.
	followSessionCheck = 5 * time.Second
)

// A log follow holds its connection and a server-side consumer (a NATS
// ordered consumer on the job log stream) for as long as it lasts, up to
// logFollowTimeout, so the follows open at once are bounded (streamSet):
// maxFollowsPerUser per user, so that one client (a viewer is enough)
// cannot hold thousands; the user's sessions and API tokens share the
// budget, which is plenty for a person watching a few jobs in a few tabs
// and a script or two; and maxFollows per API process in all, so that
// many users together cannot exhaust its connections, file descriptors and
// NATS's consumers. Beyond either a follow is refused with 429
// too-many-streams. A read without follow is not counted: it ends within
// logReadTimeout.
const (
	maxFollowsPerUser = 16
	maxFollows        = 1024
)

// jobViews are the projections a job command's answer and the next natural
// read need: the job, and (for a submission) the experiment and run it made.
var jobViews = []string{projections.Jobs{}.Name()}

func (s *Server) jobRoutes() []Route {
	const (
		jobsPath = "/api/v1/projects/{project}/jobs"
		job      = jobsPath + "/{job}"
	)
	return []Route{
		{Method: "POST", Pattern: jobsPath, Command: true, MaxBody: jobMaxBody, Await: slices.Concat(trackingViews, jobViews),
			handle: command(s, http.StatusCreated, s.submitJob)},
		{Method: "GET", Pattern: jobsPath, handle: query(s, s.listJobs)},
		{Method: "GET", Pattern: job, handle: query(s, s.getJob)},
		{Method: "POST", Pattern: job + ":cancel", Command: true, Await: jobViews, handle: commandNoBody(s, http.StatusOK, s.cancelJob)},
		{Method: "GET", Pattern: job + "/logs", Timeout: logFollowTimeout, handle: s.jobLogs},
	}
}

// ---- inputs ----

// jobRef is {job}.
type jobRef struct{ job string }

func (x *jobRef) readParams(r *http.Request) (err error) {
	x.job, err = pathID(r, "job", "job")
	return err
}

// jobArtifactRequest names a run artifact to unpack before the job starts.
type jobArtifactRequest struct {
	RunID string `json:"run_id"`
	Path  string `json:"path"`
}

// submitJobRequest is the body of POST …/jobs. Params take strings, and
// numbers and booleans as their JSON text ({"lr": 0.1} is "0.1"); timeout
// is a Go duration ("90s", "1h30m") or a number of seconds.
type submitJobRequest struct {
	Experiment     string                     `json:"experiment"`
	Name           string                     `json:"name"`
	Command        []string                   `json:"command"`
	Params         map[string]json.RawMessage `json:"params"`
	Env            map[string]string          `json:"env"`
	WorkingDir     string                     `json:"working_dir"`
	Artifact       *jobArtifactRequest        `json:"artifact"`
	Image          string                     `json:"image"`
	Timeout        json.RawMessage            `json:"timeout"`
	MaxRetries     int                        `json:"max_retries"`
	RetryOnFailure bool                       `json:"retry_on_failure"`
	Resources      events.JobResources        `json:"resources"`

	params  map[string]string
	timeout time.Duration
}

// validate turns params and timeout into what the service takes; every
// other rule is jobs.CheckSubmit's (run by the service, so that every way
// of submitting a job is held to the same rules).
func (req *submitJobRequest) validate() error {
	if strings.TrimSpace(req.Experiment) == "" {
		return problem("validation-failed", "experiment must name an experiment (its id or name; a name that does not exist yet is created)")
	}
	if len(req.Params) > jobs.MaxParams {
		return problem("validation-failed", "at most "+strconv.Itoa(jobs.MaxParams)+" params")
	}
	if len(req.Params) > 0 {
		req.params = make(map[string]string, len(req.Params))
	}
	for k, raw := range req.Params {
		v, ok := paramText(raw)
		if !ok {
			return problem("validation-failed", "params."+strconv.Quote(k)+" must be a string, a number or a boolean")
		}
		req.params[k] = v
	}
	// The params become the run's: held to the run's rules here, before
	// the service creates anything (an experiment named by the job) for a
	// submission the run would refuse.
	if _, err := tracking.DecideLogParams(tracking.RunState{Created: true}, tracking.SortedParams(req.params)); err != nil {
		return err
	}
	var err error
	req.timeout, err = jobTimeout(req.Timeout)
	return err
}

// paramText is a param value as text: a string as it is, a number or a
// boolean as its JSON text (as written: 0.1 stays "0.1", 1e-3 "1e-3").
func paramText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err == nil
	case 't', 'f':
		var b bool
		err := json.Unmarshal(raw, &b)
		return strconv.FormatBool(b), err == nil
	case 'n', '{', '[':
		return "", false
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", false
	}
	return n.String(), true
}

// jobTimeout reads timeout: absent, null or 0 is the default (jobs.CheckSubmit
// applies it and the bounds); a string is a Go duration; a number is seconds.
func jobTimeout(raw json.RawMessage) (time.Duration, error) {
	const what = `timeout must be a duration such as "90s" or "1h30m", or a number of seconds`
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return 0, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, problem("validation-failed", what)
		}
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return 0, problem("validation-failed", what+": "+strconv.Quote(s)+" is neither")
		}
		return d, nil
	}
	var secs float64
	if err := json.Unmarshal(raw, &secs); err != nil {
		return 0, problem("validation-failed", what)
	}
	if secs < 0 || secs > jobs.MaxTimeout.Seconds() || math.IsNaN(secs) {
		return 0, problem("validation-failed", "timeout must be between 1s and "+jobs.MaxTimeout.String())
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// ---- answers ----

// JobSubmission is the answer to a job submission: the job, queued, and
// the run that tracks it.
type JobSubmission struct {
	Job projections.Job `json:"job"`
	Run projections.Run `json:"run"`
}

// JobPage is a page of jobs.
type JobPage = projections.Page[projections.Job]

// JobLogLine is one line of a job's log as the API shows it.
type JobLogLine struct {
	Attempt int       `json:"attempt"`
	Time    time.Time `json:"time"`
	Stream  string    `json:"stream"`
	Text    string    `json:"text"`
}

// JobLogs is a job's log read once (GET …/logs without follow).
type JobLogs struct {
	Lines []JobLogLine `json:"lines"`
}

// JobLogEnd is the data of a followed log's last event: how the job ended.
type JobLogEnd struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// jobTime is a time as the jobs read model keeps it (microseconds, UTC), so
// a command's answer and a later read of the same job agree.
func jobTime(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

func optionalJobTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = jobTime(t)
	return &t
}

// jobFromState renders a job as the jobs projection does (without the
// attempts' token ids): what a command answers before the read model has
// caught up.
func jobFromState(j jobs.State) projections.Job {
	d := j.Spec
	out := projections.Job{ID: d.JobID, ProjectID: d.ProjectID, ExperimentID: d.ExperimentID, RunID: d.RunID, Name: d.Name,
		State: j.State, Command: slices.Clone(d.Command), Params: maps.Clone(d.Params), Env: maps.Clone(d.Env),
		WorkingDir: d.WorkingDir, Image: d.Image, Resources: d.Resources, TimeoutSeconds: float64(d.TimeoutMS) / 1000,
		MaxRetries: d.MaxRetries, RetryOnFailure: d.RetryOnFailure, SubmittedBy: d.SubmittedBy, SubmittedAt: jobTime(j.SubmittedAt),
		EndedAt: optionalJobTime(j.EndedAt), UpdatedAt: jobTime(j.UpdatedAt), Reason: j.Reason, ExitCode: j.ExitCode,
		CancelRequested: j.CancelRequested, Attempts: make([]projections.JobAttempt, 0, len(j.Attempts)), Artifact: d.Artifact}
	if out.Command == nil {
		out.Command = []string{}
	}
	if out.Params == nil {
		out.Params = map[string]string{}
	}
	if out.Env == nil {
		out.Env = map[string]string{}
	}
	for i, a := range j.Attempts {
		if i == 0 {
			out.StartedAt = optionalJobTime(a.StartedAt)
		}
		out.Attempts = append(out.Attempts, projections.JobAttempt{Number: a.Number, RunnerID: a.RunnerID, Executor: a.Executor,
			StartedAt: jobTime(a.StartedAt), EndedAt: optionalJobTime(a.EndedAt), Outcome: a.Outcome, ExitCode: a.ExitCode, Reason: a.Reason})
	}
	return out
}

// ---- commands ----

func (s *Server) submitJob(c *call, req submitJobRequest) (JobSubmission, uint64, error) {
	in := jobs.SubmitInput{Experiment: strings.TrimSpace(req.Experiment), Name: req.Name, Command: req.Command, Params: req.params,
		Env: req.Env, WorkingDir: req.WorkingDir, Image: req.Image, Resources: req.Resources, Timeout: req.timeout,
		MaxRetries: req.MaxRetries, RetryOnFailure: req.RetryOnFailure}
	if req.Artifact != nil {
		in.Artifact = &jobs.ArtifactRef{RunID: req.Artifact.RunID, Path: req.Artifact.Path}
	}
	j, run, seq, err := s.deps.Jobs.Submit(c.ctx, c.meta, c.who, c.param("project"), in)
	if err != nil {
		return JobSubmission{}, 0, err
	}
	c.locate("/api/v1/projects/" + j.Spec.ProjectID + "/jobs/" + j.ID())
	return JobSubmission{Job: jobFromState(j), Run: runFromState(run)}, seq, nil
}

func (s *Server) cancelJob(c *call, ref jobRef) (projections.Job, uint64, error) {
	j, seq, err := s.deps.Jobs.Cancel(c.ctx, c.meta, c.who, c.param("project"), ref.job)
	if err != nil {
		return projections.Job{}, 0, err
	}
	return jobFromState(j), seq, nil
}

// ---- queries ----

// listJobsQuery is paging, ?state= and ?experiment= (an experiment id).
type listJobsQuery struct {
	pageQuery
	filter projections.JobFilter
}

func (q *listJobsQuery) readParams(r *http.Request) error {
	v := r.URL.Query()
	q.filter.State = v.Get("state")
	if q.filter.State != "" && !slices.Contains(projections.JobStates, q.filter.State) {
		return problem("validation-failed", "state must be one of "+strings.Join(projections.JobStates, ", "))
	}
	q.filter.ExperimentID = v.Get("experiment")
	if q.filter.ExperimentID != "" && !isCanonicalUUID(q.filter.ExperimentID) {
		return problem("validation-failed", "experiment must be an experiment id")
	}
	return q.pageQuery.readParams(r)
}

func (s *Server) listJobs(c *call, q listJobsQuery) (JobPage, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return JobPage{}, err
	}
	page, err := s.deps.Queries.ListJobs(c.ctx, proj.ID, q.filter, q.token, q.size)
	return page, searchError(err)
}

// readableJob is readableProject plus the job, in it.
func (s *Server) readableJob(r *http.Request, id string) (projections.Job, error) {
	proj, err := s.readableProject(r)
	if err != nil {
		return projections.Job{}, err
	}
	j, err := s.deps.Queries.Job(r.Context(), proj.ID, id)
	if errors.Is(err, projections.ErrNotFound) {
		return j, problem("not-found", "job not found")
	}
	return j, err
}

func (s *Server) getJob(c *call, ref jobRef) (projections.Job, error) {
	return s.readableJob(c.r, ref.job)
}

// ---- logs ----

// jobLogsQuery is {job}, ?follow= and ?format= (json, the default, or text).
type jobLogsQuery struct {
	jobRef
	follow bool
	text   bool
}

func (q *jobLogsQuery) readParams(r *http.Request) error {
	if err := q.jobRef.readParams(r); err != nil {
		return err
	}
	v := r.URL.Query()
	if f := v.Get("follow"); f != "" {
		var err error
		if q.follow, err = strconv.ParseBool(f); err != nil {
			return problem("validation-failed", "follow must be true or false")
		}
	}
	switch v.Get("format") {
	case "", "json":
	case "text":
		q.text = true
	default:
		return problem("validation-failed", "format must be json or text")
	}
	return nil
}

// jobLogs answers a job's log: read once as JSON ({"lines": [...]}) or
// text (one "time stream text" line per line), or followed until the job
// ends as Server-Sent Events (event "line" per line, then "end" with the
// job's final state) or as text. Errors before anything is written are
// problems as usual; after that a read once is cut (the client must not
// mistake it for a short log), and a follow sends event "error" and ends.
func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request) error {
	var q jobLogsQuery
	if err := q.readParams(r); err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	if _, err := s.readableJob(r, q.job); err != nil {
		return err
	}
	if s.deps.JobLogs == nil || s.deps.Jobs == nil {
		return &problemError{code: "unavailable", detail: "job logs are not served by this process"}
	}
	out := newLogWriter(w)
	if !q.follow {
		ctx, cancel := context.WithTimeout(r.Context(), logReadTimeout)
		defer cancel()
		if q.text {
			out.start("text/plain; charset=utf-8", "no-store")
		} else {
			out.start("application/json", "no-store")
			out.add([]byte(`{"lines":[`))
		}
		n := 0
		err := runner.ReadLogs(ctx, s.deps.JobLogs, q.job, false, nil, func(l runner.LogLine) error {
			if q.text {
				out.add(textLine(l))
			} else {
				if n > 0 {
					out.add([]byte{','})
				}
				b, _ := json.Marshal(apiLogLine(l))
				out.add(b)
			}
			n++
			return out.flushIfFull()
		})
		if err == nil {
			if !q.text {
				out.add([]byte("]}\n"))
			}
			err = out.flush()
		}
		if err != nil && out.wrote {
			s.deps.Logger.ErrorContext(r.Context(), "job log read cut short", "request_id", requestID(r.Context()), "job_id", q.job, "err", err)
			panic(http.ErrAbortHandler)
		}
		return err
	}
	return s.followJobLogs(r, out, q)
}

// followJobLogs streams a job's log until the job has ended and every line
// is sent, the client goes away, the server shuts down (EndStreams) or the
// route's deadline passes. A client that reconnects reads the log from the
// start again. It counts against the bounds on open follows (streamSet)
// until it returns.
func (s *Server) followJobLogs(r *http.Request, out *logWriter, q jobLogsQuery) error {
	p, _ := principal(r.Context())
	release, err := s.streams.open(p.UserID)
	if err != nil {
		return err // nothing is written yet: a problem
	}
	defer release() // however the follow ends, panics included
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.streams.done():
			cancel()
		case <-ctx.Done():
		}
	}()
	if check, ok := r.Context().Value(uiSessionCheck{}).(func() error); ok {
		// A UI follow ends with its session (sign-out, revocation,
		// deactivation), which it checks every followSessionCheck.
		go func() {
			tick := time.NewTicker(followSessionCheck)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					var pe *problemError
					if err := check(); errors.As(err, &pe) && pe.code == "unauthenticated" {
						cancel()
						return
					}
				}
			}
		}()
	}
	markStreamed(r)
	if q.text {
		out.start("text/plain; charset=utf-8", "no-cache")
	} else {
		out.start("text/event-stream", "no-cache")
		out.w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	}
	if err := out.flush(); err != nil { // the headers, at once
		return nil
	}
	if !q.text {
		defer out.keepAlive(ctx)()
	}
	id := q.job
	ended := func(ctx context.Context) (bool, error) {
		j, err := s.deps.Jobs.Load(ctx, id)
		return j.Ended(), err
	}
	err = runner.ReadLogs(ctx, s.deps.JobLogs, id, true, ended, func(l runner.LogLine) error {
		if q.text {
			out.add(textLine(l))
		} else {
			out.event("line", apiLogLine(l))
		}
		return out.flush()
	})
	if ctx.Err() != nil {
		return nil // the client left, the server is stopping, or the deadline passed
	}
	if err != nil {
		s.deps.Logger.ErrorContext(r.Context(), "job log follow failed", "request_id", requestID(r.Context()), "job_id", id, "err", err)
		if !q.text {
			out.event("error", map[string]string{"detail": "reading the job's log failed; reconnect to read it again"})
			_ = out.flush()
		}
		return nil
	}
	if !q.text {
		j, err := s.deps.Jobs.Load(ctx, id)
		if err != nil {
			out.event("error", map[string]string{"detail": "the job's state cannot be read right now; reconnect"})
		} else {
			out.event("end", JobLogEnd{State: j.State, Reason: j.Reason})
		}
		_ = out.flush()
	}
	return nil
}

func apiLogLine(l runner.LogLine) JobLogLine {
	return JobLogLine{Attempt: l.Attempt, Time: l.Time.UTC(), Stream: string(l.Stream), Text: l.Text}
}

// textLine is a line of the text format: "2026-01-02T03:04:05.123Z stdout text".
func textLine(l runner.LogLine) []byte {
	b := l.Time.UTC().AppendFormat(nil, time.RFC3339Nano)
	b = append(append(append(b, ' '), l.Stream...), ' ')
	return append(append(b, l.Text...), '\n')
}

// logWriter writes a log answer in buffered chunks, each write with its own
// deadline (logWriteWindow) and flushed to the client. Writes are
// serialised: a follow's keep-alive writes from another goroutine.
type logWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	mu    sync.Mutex
	buf   []byte
	wrote bool // the status line is out: errors can no longer be problems
	ctype string
	cache string
}

func newLogWriter(w http.ResponseWriter) *logWriter {
	return &logWriter{w: w, rc: http.NewResponseController(w), buf: make([]byte, 0, logFlush+4096)}
}

// start sets the answer's content type and caching, written with the
// first flush.
func (o *logWriter) start(contentType, cacheControl string) {
	o.ctype, o.cache = contentType, cacheControl
}

func (o *logWriter) add(b []byte) {
	o.mu.Lock()
	o.buf = append(o.buf, b...)
	o.mu.Unlock()
}

// event adds a Server-Sent Event whose data is v as JSON (one line: JSON
// escapes the newlines of a log line).
func (o *logWriter) event(name string, v any) {
	data, _ := json.Marshal(v)
	o.add(slices.Concat([]byte("event: "+name+"\ndata: "), data, []byte("\n\n")))
}

func (o *logWriter) flushIfFull() error {
	o.mu.Lock()
	full := len(o.buf) >= logFlush
	o.mu.Unlock()
	if full {
		return o.flush()
	}
	return nil
}

func (o *logWriter) flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.flushLocked()
}

func (o *logWriter) flushLocked() error {
	if !o.wrote {
		o.wrote = true
		h := o.w.Header()
		h.Set("Content-Type", o.ctype)
		h.Set("Cache-Control", o.cache)
		o.w.WriteHeader(http.StatusOK)
	}
	// Behind a writer that cannot set deadlines (a test recorder) the
	// server's own timeouts apply.
	_ = o.rc.SetWriteDeadline(time.Now().Add(logWriteWindow))
	if len(o.buf) > 0 {
		_, err := o.w.Write(o.buf)
		o.buf = o.buf[:0]
		if err != nil {
			return err
		}
	}
	if err := o.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// keepAlive writes an SSE comment every logKeepAlive until ctx ends or the
// returned function is called (which waits for the writer to stop).
func (o *logWriter) keepAlive(ctx context.Context) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(logKeepAlive)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				o.mu.Lock()
				o.buf = append(o.buf, ": keep-alive\n\n"...)
				_ = o.flushLocked()
				o.mu.Unlock()
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// streamSet tracks the log follows in progress: it bounds how many are
// open at once (maxFollowsPerUser, maxFollows) and ends them when the server
// stops. Its zero value is ready to use.
type streamSet struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
	count  int            // follows open
	byUser map[string]int // follows open per user id (none: no entry)
	// perUser and total, when above zero, replace maxFollowsPerUser and
	// maxFollows (tests, which cannot cheaply open a thousand follows).
	perUser, total int
}

// open admits a follow by user, or refuses it with too-many-streams when
// the user, or the process, has as many follows open as it may. Call the
// returned function when the follow has ended, whatever ended it (defer
// it); calling it again does nothing.
func (s *streamSet) open(user string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	perUser, total := maxFollowsPerUser, maxFollows
	if s.perUser > 0 {
		perUser = s.perUser
	}
	if s.total > 0 {
		total = s.total
	}
	if s.byUser[user] >= perUser {
		return nil, problem("too-many-streams", "you have "+strconv.Itoa(perUser)+
			" log follows open, the most one user may have at once; close one to follow another")
	}
	if s.count >= total {
		return nil, problem("too-many-streams", "the server has as many log follows open as it serves at once; retry later")
	}
	if s.byUser == nil {
		s.byUser = map[string]int{}
	}
	s.count++
	s.byUser[user]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.count--
			if s.byUser[user]--; s.byUser[user] <= 0 {
				delete(s.byUser, user)
			}
		})
	}, nil
}

func (s *streamSet) done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *streamSet) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}

// EndStreams ends every log follow in progress, and any started later: an
// open follow holds its connection, which http.Server.Shutdown would
// otherwise wait for until its deadline. Register it with
// http.Server.RegisterOnShutdown.
func (s *Server) EndStreams() { s.streams.end() }
