// Package sweeps is the write side of hyper-parameter sweeps: the sweep
// aggregate's state, its deciders (create, suggest trials, record their
// dispatch, intermediate values, early stops and ends, stop, end), the
// service that authorizes and appends them, and the scheduler — the
// process manager that keeps a sweep's trials running as jobs.
//
// Every decision is a pure function of the sweep's events: the sampler and
// the pruner (package tuning) see only the trial history folded from
// them, so a scheduler that restarts continues from the stream alone, and
// a sweep with a seed suggests the same params again.
package sweeps

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/tuning"
)

// Trial is one trial of a sweep.
type Trial struct {
	Number int
	Params map[string]string
	State  string // events.Trial*
	JobID  string
	RunID  string
	// Objective is the trial's objective: its run's latest value of the
	// objective metric (a pruned trial: its last reported value).
	Objective *float64
	// Reports are the objective's intermediate values, by ascending step.
	Reports []tuning.Report
	// Pruned is set once the early-stopping rule stopped the trial (its
	// job's cancellation may still be under way).
	Pruned bool
	Reason string
}

// Active reports whether the trial still holds one of the sweep's
// parallel slots (its params are chosen and its job has not ended).
func (t Trial) Active() bool {
	return t.State == events.TrialSuggested || t.State == events.TrialRunning
}

// State is a sweep folded from its events.
type State struct {
	Created       bool
	Spec          events.SweepCreatedData
	State         string // events.Sweep*
	StopRequested bool
	StopReason    string
	Trials        []Trial // Trials[i].Number == i+1
	CreatedAt     time.Time
	UpdatedAt     time.Time
	EndedAt       time.Time
	EndReason     string
}

// ID is the sweep's id.
func (s State) ID() string { return s.Spec.SweepID }

// Ended reports whether the sweep reached a final state.
func (s State) Ended() bool {
	return s.State == events.SweepCompleted || s.State == events.SweepStopped
}

// Active counts the trials holding a parallel slot.
func (s State) Active() int {
	n := 0
	for _, t := range s.Trials {
		if t.Active() {
			n++
		}
	}
	return n
}

// Trial returns trial n (nil when the sweep has none such).
func (s *State) Trial(n int) *Trial {
	if n < 1 || n > len(s.Trials) {
		return nil
	}
	return &s.Trials[n-1]
}

// Best is the completed trial with the best objective (by the sweep's
// direction; NaN is never best, ties go to the earlier trial).
func (s State) Best() (Trial, bool) {
	var best Trial
	found := false
	for _, t := range s.Trials {
		if t.State != events.TrialCompleted || t.Objective == nil || math.IsNaN(*t.Objective) {
			continue
		}
		if !found || better(s.Spec.Objective.Direction, *t.Objective, *best.Objective) {
			best, found = t, true
		}
	}
	return best, found
}

func better(direction string, a, b float64) bool {
	if direction == tuning.Maximize {
		return a > b
	}
	return a < b
}

// Clone copies the slice evolve writes to (cached states are shared).
func Clone(s State) State {
	s.Trials = slices.Clone(s.Trials)
	return s
}

// Evolve folds one event into sweep state.
func Evolve(s State, e events.Envelope) (State, error) {
	s.UpdatedAt = e.Time
	switch e.Type {
	case events.SweepCreated:
		var d events.SweepCreatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = State{Created: true, Spec: d, State: events.SweepRunning, CreatedAt: e.Time, UpdatedAt: e.Time}
	case events.SweepTrialSuggested:
		var d events.SweepTrialSuggestedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if d.Trial != len(s.Trials)+1 {
			return s, fmt.Errorf("sweep %s: trial %d suggested after %d trials", s.ID(), d.Trial, len(s.Trials))
		}
		s.Trials = append(s.Trials, Trial{Number: d.Trial, Params: d.Params, State: events.TrialSuggested})
	case events.SweepTrialDispatched:
		var d events.SweepTrialDispatchedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if t := s.Trial(d.Trial); t != nil {
			t.JobID, t.RunID = d.JobID, d.RunID
			if t.State == events.TrialSuggested {
				t.State = events.TrialRunning
			}
		}
	case events.SweepTrialReported:
		var d events.SweepTrialReportedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if t := s.Trial(d.Trial); t != nil {
			// Clip: a cached state shares this slice's array; appending
			// must never write into it.
			t.Reports = append(slices.Clip(t.Reports), tuning.Report{Step: d.Step, Value: float64(d.Value)})
		}
	case events.SweepTrialPruned:
		var d events.SweepTrialPrunedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if t := s.Trial(d.Trial); t != nil {
			t.Pruned, t.Reason = true, d.Reason
		}
	case events.SweepTrialEnded:
		var d events.SweepTrialEndedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if t := s.Trial(d.Trial); t != nil {
			t.State, t.Reason = d.State, cmp.Or(d.Reason, t.Reason)
			if d.JobID != "" {
				t.JobID = d.JobID
			}
			if d.Objective != nil {
				v := float64(*d.Objective)
				t.Objective = &v
			}
		}
	case events.SweepStopRequested:
		var d events.SweepStopRequestedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.StopRequested, s.StopReason = true, d.Reason
		if !s.Ended() {
			s.State = events.SweepStopping
		}
	case events.SweepEnded:
		var d events.SweepEndedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.State, s.EndedAt, s.EndReason = d.State, e.Time, d.Reason
	}
	return s, nil
}

func subject(id string) string { return events.Subject(events.AggSweep, id) }

func invalid(format string, args ...any) error {
	return handlers.Errorf(handlers.Invalid, "validation-failed", format, args...)
}

var errNotFound = handlers.Errorf(handlers.NotFound, "not-found", "sweep not found")

// DecideCreate starts a new sweep (c checked by Check).
func DecideCreate(s State, c events.SweepCreatedData) ([]handlers.Change, error) {
	if s.Created {
		return nil, handlers.Errorf(handlers.Conflict, "sweep-exists", "sweep %s already exists", c.SweepID)
	}
	return []handlers.Change{{Subject: subject(c.SweepID), Type: events.SweepCreated, Data: c}}, nil
}

// study is what the sampler needs of the sweep.
func (s State) study() tuning.Study {
	return tuning.Study{Space: space(s.Spec.Space), Algorithm: s.Spec.Algorithm, Direction: s.Spec.Objective.Direction, Seed: s.Spec.Seed,
		Startup: startup(s.Spec.MaxTrials)}
}

// startup is how many finished trials a Bayesian sweep of maxTrials waits
// for before it models the history: Optuna's 10, but a quarter of a
// smaller sweep (at least 2), so a 12-trial sweep is not random search.
func startup(maxTrials int) int { return min(10, max(2, maxTrials/4)) }

// space converts the event's space to the sampler's.
func space(in map[string]events.SweepParam) tuning.Space {
	out := make(tuning.Space, len(in))
	for name, p := range in {
		out[name] = tuning.Param{Type: p.Type, Low: p.Low, High: p.High, Values: p.Values}
	}
	return out
}

// history is the sweep's trials as the sampler and pruner see them.
func (s State) history() []tuning.Trial {
	out := make([]tuning.Trial, len(s.Trials))
	for i, t := range s.Trials {
		state := t.State
		if state == events.TrialSuggested {
			state = events.TrialRunning
		}
		out[i] = tuning.Trial{Number: t.Number, Params: t.Params, State: state, Value: t.Objective, Reports: t.Reports}
	}
	return out
}

// Exhausted reports whether the sweep can start no further trial: it has
// had max_trials, or its grid has no point left.
func (s State) exhausted() bool {
	if len(s.Trials) >= s.Spec.MaxTrials {
		return true
	}
	return s.Spec.Algorithm == tuning.Grid && len(s.Trials) >= tuning.GridSize(space(s.Spec.Space))
}

// DecideAdvance starts as many trials as the sweep's free parallel slots
// and its remaining trials allow (each one's params from the sampler, which
// sees the trials before it, including those suggested in this same
// decision), or ends the sweep when nothing runs and nothing more will.
func DecideAdvance(s State) ([]handlers.Change, error) {
	if !s.Created {
		return nil, errNotFound
	}
	if s.Ended() {
		return nil, nil
	}
	if s.StopRequested || s.exhausted() {
		if s.Active() > 0 {
			return nil, nil
		}
		return []handlers.Change{end(s)}, nil
	}
	free := s.Spec.Parallelism - s.Active()
	var changes []handlers.Change
	st, hist := s.study(), s.history()
	for n := len(s.Trials) + 1; free > 0 && n <= s.Spec.MaxTrials; n++ {
		params, err := tuning.Suggest(st, hist, n)
		if errors.Is(err, tuning.ErrExhausted) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("sweep %s: suggest trial %d: %w", s.ID(), n, err)
		}
		changes = append(changes, handlers.Change{Subject: subject(s.ID()), Type: events.SweepTrialSuggested,
			Data: events.SweepTrialSuggestedData{SweepID: s.ID(), Trial: n, Params: params}})
		hist = append(hist, tuning.Trial{Number: n, Params: params, State: events.TrialRunning})
		free--
	}
	if len(changes) == 0 && s.Active() == 0 {
		// The grid ran out before max_trials.
		return []handlers.Change{end(s)}, nil
	}
	return changes, nil
}

// end is the sweep's end: completed, or stopped when someone asked.
func end(s State) handlers.Change {
	d := events.SweepEndedData{SweepID: s.ID(), State: events.SweepCompleted, Trials: len(s.Trials)}
	if s.StopRequested {
		d.State, d.Reason = events.SweepStopped, s.StopReason
	}
	if best, ok := s.Best(); ok {
		v := events.MetricValue(*best.Objective)
		d.BestTrial, d.BestValue = best.Number, &v
	}
	return handlers.Change{Subject: subject(s.ID()), Type: events.SweepEnded, Data: d}
}

// DecideDispatched records that trial n runs as job jobID with run runID
// (nothing when it is recorded already).
func DecideDispatched(s State, n int, jobID, runID string) ([]handlers.Change, error) {
	t := s.Trial(n)
	if t == nil {
		return nil, fmt.Errorf("sweep %s has no trial %d", s.ID(), n)
	}
	if t.JobID != "" || t.State != events.TrialSuggested {
		return nil, nil
	}
	return []handlers.Change{{Subject: subject(s.ID()), Type: events.SweepTrialDispatched,
		Data: events.SweepTrialDispatchedData{SweepID: s.ID(), Trial: n, JobID: jobID, RunID: runID}}}, nil
}

// MaxReports bounds the intermediate values a sweep records of one trial
// (rule 10: the trial's program decides how many steps it logs); the
// early-stopping rule judges a trial on its first MaxReports recorded
// values.
const MaxReports = 1000

// newReports are the changes recording the objective's new intermediate
// values of trial t: those at steps after its last recorded one that the
// sweep's early-stopping rule looks at (none without a rule), within
// MaxReports; a step logged twice keeps its latest value in points. judge,
// when set, is asked after each one whether the trial must stop (its
// reports so far); the first yes ends the list with the trial's early stop.
func newReports(s State, t *Trial, points []tuning.Report, judge func(reports []tuning.Report) (bool, string)) []handlers.Change {
	if s.Spec.EarlyStopping == nil {
		return nil
	}
	rule := pruner(*s.Spec.EarlyStopping)
	last := int64(math.MinInt64)
	if k := len(t.Reports); k > 0 {
		last = t.Reports[k-1].Step
	}
	points = slices.SortedStableFunc(slices.Values(points), func(a, b tuning.Report) int { return cmp.Compare(a.Step, b.Step) })
	var changes []handlers.Change
	reports := slices.Clip(t.Reports)
	for _, p := range points {
		if p.Step <= last || len(reports) >= MaxReports || !rule.Needs(last, p.Step) {
			continue
		}
		last = p.Step
		reports = append(reports, p)
		changes = append(changes, handlers.Change{Subject: subject(s.ID()), Type: events.SweepTrialReported,
			Data: events.SweepTrialReportedData{SweepID: s.ID(), Trial: t.Number, Step: p.Step, Value: events.MetricValue(p.Value)}})
		if judge == nil {
			continue
		}
		// Each new value is judged as it would have been alone: a batch
		// that crosses an ASHA rung is judged at that rung.
		if stop, reason := judge(reports); stop {
			return append(changes, handlers.Change{Subject: subject(s.ID()), Type: events.SweepTrialPruned,
				Data: events.SweepTrialPrunedData{SweepID: s.ID(), Trial: t.Number, Step: p.Step, Value: events.MetricValue(p.Value),
					Rule: s.Spec.EarlyStopping.Rule, Reason: reason}})
		}
	}
	return changes
}

// DecideReport records the objective's new intermediate values of trial n
// (newReports) and asks the sweep's early-stopping rule after each whether
// the trial should stop. A trial that ended or was stopped takes none.
func DecideReport(s State, n int, points []tuning.Report) ([]handlers.Change, error) {
	t := s.Trial(n)
	if t == nil || !t.Active() || t.Pruned {
		return nil, nil
	}
	var judge func([]tuning.Report) (bool, string)
	if !s.StopRequested && s.Spec.EarlyStopping != nil {
		others := slices.DeleteFunc(s.history(), func(o tuning.Trial) bool { return o.Number == n })
		judge = func(reports []tuning.Report) (bool, string) {
			cur := tuning.Trial{Number: n, Params: t.Params, State: events.TrialRunning, Reports: reports}
			return tuning.Prune(pruner(*s.Spec.EarlyStopping), s.Spec.Objective.Direction, cur, others)
		}
	}
	return newReports(s, t, points, judge), nil
}

func pruner(e events.SweepEarlyStopping) tuning.Pruner {
	return tuning.Pruner{Rule: e.Rule, WarmupSteps: e.WarmupSteps, MinTrials: e.MinTrials, MinResource: e.MinResource,
		ReductionFactor: e.ReductionFactor}
}

// JobEnd is how a trial's job ended, and its run's objective value (nil
// when the run logged none).
type JobEnd struct {
	Trial     int
	JobID     string
	RunID     string
	JobState  string
	Reason    string
	Objective *float64
	// Reports is the run's objective series: the values the metrics
	// reaction had not recorded yet (it follows another stream, which may
	// lag the job's end) are recorded before the end, so the trials the
	// early-stopping rule compares with have their whole curves.
	Reports []tuning.Report
}

// DecideTrialEnd records the end of a trial's job: completed when it
// succeeded with an objective, pruned when the early-stopping rule stopped
// it, cancelled when it was cancelled otherwise, failed otherwise. A job
// that ended before its dispatch was recorded (the scheduler stopped in
// between) is recorded as dispatched first. Nothing when already recorded.
func DecideTrialEnd(s State, c JobEnd) ([]handlers.Change, error) {
	t := s.Trial(c.Trial)
	if t == nil {
		return nil, fmt.Errorf("sweep %s has no trial %d", s.ID(), c.Trial)
	}
	if !t.Active() {
		return nil, nil
	}
	var changes []handlers.Change
	if t.State == events.TrialSuggested {
		changes = append(changes, handlers.Change{Subject: subject(s.ID()), Type: events.SweepTrialDispatched,
			Data: events.SweepTrialDispatchedData{SweepID: s.ID(), Trial: c.Trial, JobID: c.JobID, RunID: c.RunID}})
	}
	if !t.Pruned {
		changes = append(changes, newReports(s, t, c.Reports, nil)...)
	}
	d := events.SweepTrialEndedData{SweepID: s.ID(), Trial: c.Trial, JobID: c.JobID, JobState: c.JobState, Reason: c.Reason}
	objective := c.Objective
	switch {
	case c.JobState == events.JobSucceeded && objective != nil:
		// A job that finished before its early stop reached it has its
		// objective: it completed.
		d.State = events.TrialCompleted
		if t.Pruned {
			d.Reason = "finished before its early stop took effect (" + t.Reason + ")"
		}
	case t.Pruned || c.JobState == events.JobCancelled && c.Reason == events.ReasonEarlyStopped:
		d.State, d.Reason = events.TrialPruned, events.ReasonEarlyStopped
		if t.Reason != "" {
			d.Reason += ": " + t.Reason // the rule's sentence, with its numbers
		}
		if k := len(t.Reports); k > 0 {
			last := t.Reports[k-1].Value
			objective = &last
		}
	case c.JobState == events.JobSucceeded:
		d.State, d.Reason = events.TrialFailed, fmt.Sprintf("the run logged no %s", s.Spec.Objective.Metric)
	case c.JobState == events.JobCancelled:
		d.State = events.TrialCancelled
	default:
		d.State = events.TrialFailed
	}
	if objective != nil {
		v := events.MetricValue(*objective)
		d.Objective = &v
	}
	return append(changes, handlers.Change{Subject: subject(s.ID()), Type: events.SweepTrialEnded, Data: d}), nil
}

// DecideAbandon ends a trial whose job could not be submitted (its
// creator may no longer run jobs, the project was archived): failed, with
// the reason, so the sweep goes on or ends instead of waiting for ever.
func DecideAbandon(s State, n int, reason string) ([]handlers.Change, error) {
	t := s.Trial(n)
	if t == nil || t.State != events.TrialSuggested {
		return nil, nil
	}
	state := events.TrialFailed
	if s.StopRequested {
		state = events.TrialCancelled
	}
	return []handlers.Change{{Subject: subject(s.ID()), Type: events.SweepTrialEnded,
		Data: events.SweepTrialEndedData{SweepID: s.ID(), Trial: n, State: state, Reason: reason}}}, nil
}

// DecideStop asks a sweep to stop: no trial starts any more and the
// running ones are cancelled. Asking again changes nothing; an ended sweep
// cannot be stopped.
func DecideStop(s State, reason string) ([]handlers.Change, error) {
	if !s.Created {
		return nil, errNotFound
	}
	if s.Ended() {
		return nil, handlers.Errorf(handlers.Conflict, "sweep-ended", "the sweep already ended (%s)", s.State)
	}
	if s.StopRequested {
		return nil, nil
	}
	return []handlers.Change{{Subject: subject(s.ID()), Type: events.SweepStopRequested,
		Data: events.SweepStopRequestedData{SweepID: s.ID(), Reason: reason}}}, nil
}
