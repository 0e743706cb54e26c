package sweeps

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/flows"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/tuning"
)

// The scheduler is two reactions on watermill (rule 11):
//
//   - sweeps, over the sweep and job subjects: a new sweep, a trial's end
//     and a stop make it reconcile the sweep (submit the trials whose
//     params are chosen, suggest more while slots and trials remain, end
//     the sweep); a job of a trial ending records the trial's end with its
//     run's objective; a trial stopped early has its job cancelled.
//   - sweep-metrics, over MAESTRO_METRICS: the objective metric's points
//     of a trial's run become the trial's intermediate reports, on which
//     the early-stopping rule decides.
//
// Every command carries an idempotency key derived from the sweep and the
// trial it is about (not from the event that caused it), so two workers,
// or one that restarts, that take the same decision append it once; the
// trial's job and run ids derive from the same key, so a trial is
// submitted once however often its dispatch is retried.
const (
	schedulerName = "sweeps"
	metricsName   = "sweep-metrics"
	// stopReason is the reason of a trial's job cancelled because its
	// sweep stopped.
	stopReason = "sweep stopped"
	// Tags of a trial's run (jobs.Submit sets them).
	tagSweep = "maestro.sweep_id"
	tagTrial = "maestro.sweep_trial"
)

// Register adds the sweep scheduler's reactions to r.
func (s *Service) Register(r *flows.Router) error {
	err := r.Handle(flows.Consumer{Name: schedulerName,
		Subjects: []string{events.Subject(events.AggSweep, ">"), events.Subject(events.AggJob, ">")}}, s.react)
	if err != nil {
		return err
	}
	return r.Handle(flows.Consumer{Name: metricsName, Stream: events.MetricsStreamName, FromNow: true,
		Subjects: []string{events.MetricsSubjectPrefix + ">"}}, s.follow)
}

// meta is the who-and-why of a scheduler command about sweep id, named by
// what (e.g. "trial/3"), caused by event e.
func meta(e events.Envelope, id, what string) events.Meta {
	return events.Meta{Actor: events.Actor{Kind: events.ActorSystem, ID: "maestro/" + schedulerName}, CorrelationID: e.CorrelationID,
		CausationID: e.ID, IdempotencyKey: "sweep/" + id + "/" + what}
}

// TrialIDs are the job and run ids trial n of sweep id gets: derived from
// its dispatch's idempotency key, as jobs.Submit and tracking.CreateRun
// derive them.
func TrialIDs(id string, n int) (jobID, runID string) {
	m := events.Meta{IdempotencyKey: "sweep/" + id + "/trial/" + strconv.Itoa(n)}
	return handlers.IDFor(m, "job"), handlers.IDFor(m, "run")
}

func (s *Service) react(ctx context.Context, e events.Envelope) error {
	switch e.Type {
	case events.SweepCreated, events.SweepTrialSuggested, events.SweepTrialEnded, events.SweepStopRequested:
		_, id := events.AggregateOf(e.Subject)
		return s.reconcile(ctx, e, id)
	case events.SweepTrialPruned:
		var d events.SweepTrialPrunedData
		if err := e.Decode(&d); err != nil {
			return flows.Permanent(fmt.Errorf("sweep scheduler: %w", err))
		}
		jobID, _ := TrialIDs(d.SweepID, d.Trial)
		return s.jobs.CancelFor(ctx, meta(e, d.SweepID, "prune/"+strconv.Itoa(d.Trial)), jobID, events.ReasonEarlyStopped)
	case events.JobEnded:
		var d events.JobEndedData
		if err := e.Decode(&d); err != nil {
			return flows.Permanent(fmt.Errorf("sweep scheduler: %w", err))
		}
		return s.trialEnded(ctx, e, d)
	}
	return nil
}

// trialEnded records the end of a trial's job, with its run's objective.
func (s *Service) trialEnded(ctx context.Context, e events.Envelope, d events.JobEndedData) error {
	j, err := s.jobs.Load(ctx, d.JobID)
	if err != nil || !j.Created || j.Spec.Sweep == nil {
		return err
	}
	id, n := j.Spec.Sweep.SweepID, j.Spec.Sweep.Trial
	st, err := s.Load(ctx, id)
	if err != nil || !st.Created {
		return err
	}
	if jobID, _ := TrialIDs(id, n); jobID != d.JobID {
		return nil // not the sweep's own job for that trial
	}
	var objective *float64
	if d.State == events.JobSucceeded {
		latest, err := s.tracking.LatestMetrics(ctx, d.RunID)
		if err != nil {
			return err
		}
		if v, ok := latest[st.Spec.Objective.Metric]; ok {
			objective = &v
		}
	}
	var reports []tuning.Report
	if st.Spec.EarlyStopping != nil {
		series, err := s.tracking.MetricSteps(ctx, d.RunID, st.Spec.Objective.Metric)
		if err != nil {
			return err
		}
		for _, p := range series {
			reports = append(reports, tuning.Report{Step: p.Step, Value: float64(p.Value)})
		}
	}
	_, err = s.update(ctx, meta(e, id, "ended/"+strconv.Itoa(n)), id, func(st State) ([]handlers.Change, error) {
		return DecideTrialEnd(st, JobEnd{Trial: n, JobID: d.JobID, RunID: d.RunID, JobState: d.State, Reason: d.Reason,
			Objective: objective, Reports: reports})
	})
	return err
}

// reconcile brings sweep id up to date: a stopping sweep's trials are
// cancelled; otherwise the trials whose params are chosen are submitted and
// more are suggested while slots and trials remain; a sweep with nothing
// left to run ends.
func (s *Service) reconcile(ctx context.Context, e events.Envelope, id string) error {
	st, err := s.Load(ctx, id)
	if err != nil || !st.Created || st.Ended() {
		return err
	}
	if st.StopRequested {
		for _, t := range st.Trials {
			if !t.Active() {
				continue
			}
			jobID, _ := TrialIDs(id, t.Number)
			if err := s.jobs.CancelFor(ctx, meta(e, id, "stop/"+strconv.Itoa(t.Number)), jobID, stopReason); err != nil {
				return err
			}
			if t.State == events.TrialSuggested {
				// A trial never submitted ends here; one submitted ends
				// when its job's cancellation does.
				j, err := s.jobs.Load(ctx, jobID)
				if err != nil {
					return err
				}
				if j.Created {
					continue
				}
				if _, err := s.update(ctx, meta(e, id, "abandon/"+strconv.Itoa(t.Number)), id, func(st State) ([]handlers.Change, error) {
					return DecideAbandon(st, t.Number, "the sweep stopped before it started")
				}); err != nil {
					return err
				}
			}
		}
		_, err := s.update(ctx, meta(e, id, "end"), id, DecideAdvance)
		return err
	}
	for {
		for _, t := range st.Trials {
			if t.State == events.TrialSuggested {
				if err := s.dispatch(ctx, e, st, t); err != nil {
					return err
				}
			}
		}
		// The key names the decision "suggest after trial <before>": taken
		// on a sweep that moved on meanwhile (another worker), it decides
		// nothing, and the loop goes round with the new count.
		before := len(st.Trials)
		st, err = s.update(ctx, meta(e, id, "suggest/"+strconv.Itoa(before)), id, func(st State) ([]handlers.Change, error) {
			if len(st.Trials) != before {
				return nil, nil
			}
			return DecideAdvance(st)
		})
		if err != nil || st.Ended() || len(st.Trials) == before {
			return err
		}
		if len(st.Trials) < before {
			return fmt.Errorf("sweep %s: %d trials after %d", id, len(st.Trials), before)
		}
	}
}

// dispatch submits trial t of sweep st as a job of its creator (who must
// still be allowed to run jobs in the project, with the API token the
// sweep was created with, if any), then records it. A job of the trial
// that exists already (submitted before a crash) is recorded, not
// submitted again. A refusal (the creator lost the right, the token was
// revoked, the project archived, the experiment deleted) ends the trial
// failed and stops the sweep. A job whose trial is no longer waiting for
// it once recorded (the sweep stopped meanwhile) is cancelled.
func (s *Service) dispatch(ctx context.Context, e events.Envelope, st State, t Trial) error {
	spec, id := st.Spec, st.ID()
	jobID, runID := TrialIDs(id, t.Number)
	j, err := s.jobs.Load(ctx, jobID)
	if err != nil {
		return err
	}
	if !j.Created {
		params := maps.Clone(spec.Trial.Params)
		if params == nil {
			params = map[string]string{}
		}
		maps.Copy(params, t.Params)
		name := fmt.Sprintf("%s · trial %d", spec.Name, t.Number)
		if len(name) > jobs.MaxNameLen {
			name = fmt.Sprintf("trial %d", t.Number)
		}
		_, _, _, err := s.jobs.Submit(ctx, meta(e, id, "trial/"+strconv.Itoa(t.Number)),
			authz.Principal{UserID: spec.CreatedBy, TokenID: spec.TokenID}, spec.ProjectID,
			jobs.SubmitInput{Experiment: spec.ExperimentID, Name: name, Command: spec.Trial.Command, Env: spec.Trial.Env, Params: params,
				Timeout: time.Duration(spec.Trial.TimeoutMS) * time.Millisecond, MaxRetries: spec.Trial.MaxRetries,
				// A trial's retries are for failed attempts too (a platform
				// restart that fails its program's API calls, a flaky node).
				RetryOnFailure: spec.Trial.MaxRetries > 0,
				Sweep:          &events.JobSweepTrial{SweepID: id, Trial: t.Number}})
		if refused(err) {
			reason := "trial not submitted: " + err.Error()
			_, err = s.update(ctx, meta(e, id, "refused/"+strconv.Itoa(t.Number)), id, func(st State) ([]handlers.Change, error) {
				abandon, err := DecideAbandon(st, t.Number, reason)
				if err != nil || len(abandon) == 0 {
					return nil, err
				}
				stop, err := DecideStop(st, "the sweep cannot go on: "+reason)
				return append(abandon, stop...), err
			})
			return err
		}
		if err != nil {
			return err
		}
	}
	after, err := s.update(ctx, meta(e, id, "dispatched/"+strconv.Itoa(t.Number)), id, func(st State) ([]handlers.Change, error) {
		return DecideDispatched(st, t.Number, jobID, runID)
	})
	if err != nil {
		return err
	}
	if cur := after.Trial(t.Number); cur == nil || cur.JobID != jobID || cur.State != events.TrialRunning {
		return s.jobs.CancelFor(ctx, meta(e, id, "stop/"+strconv.Itoa(t.Number)), jobID, stopReason)
	}
	return nil
}

// trialRun is what the metrics reaction knows of a run: the sweep and
// trial it runs, or none.
type trialRun struct {
	sweep string
	trial int
}

// runs caches which runs are trials (runs are tagged when created, so a
// run found untagged never becomes a trial): the metrics reaction looks a
// run up once, not once per logging request.
type runs struct {
	mu sync.Mutex
	m  map[string]trialRun
}

const maxCachedRuns = 100_000

func (c *runs) get(id string) (trialRun, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.m[id]
	return t, ok
}

func (c *runs) put(id string, t trialRun) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedRuns {
		c.m = map[string]trialRun{}
	}
	c.m[id] = t
}

// follow turns the objective metric's points of a trial's run into the
// trial's reports.
func (s *Service) follow(ctx context.Context, e events.Envelope) error {
	if e.Type != events.MetricsLogged {
		return nil
	}
	runID := strings.TrimPrefix(e.Subject, events.MetricsSubjectPrefix)
	tr, ok := s.trialRuns.get(runID)
	if !ok {
		tags, err := s.tracking.RunTags(ctx, runID)
		if err != nil {
			return err
		}
		if sweep := tags[tagSweep]; sweep != "" {
			n, _ := strconv.Atoi(tags[tagTrial])
			// The tags are only a hint (a user may tag a run): the run must
			// be the one the sweep derived for that trial.
			if _, want := TrialIDs(sweep, n); want == runID {
				tr = trialRun{sweep: sweep, trial: n}
			}
		}
		s.trialRuns.put(runID, tr)
	}
	if tr.sweep == "" {
		return nil
	}
	st, err := s.Load(ctx, tr.sweep)
	if err != nil || !st.Created || st.Ended() {
		return err
	}
	d, err := events.DecodeMetricsLogged(e.Data)
	if err != nil {
		return flows.Permanent(fmt.Errorf("sweep metrics: %w", err))
	}
	latest := map[int64]events.MetricPoint{}
	for _, p := range d.Metrics[st.Spec.Objective.Metric] {
		if l, ok := latest[p.Step]; !ok || events.LaterPoint(p, l) {
			latest[p.Step] = p
		}
	}
	if len(latest) == 0 {
		return nil
	}
	points := make([]tuning.Report, 0, len(latest))
	for step, p := range latest {
		points = append(points, tuning.Report{Step: step, Value: float64(p.Value)})
	}
	m := meta(e, tr.sweep, "report/"+e.ID)
	_, err = s.update(ctx, m, tr.sweep, func(st State) ([]handlers.Change, error) {
		return DecideReport(st, tr.trial, points)
	})
	return err
}
