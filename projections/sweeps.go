package projections

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Sweeps is the read model of hyper-parameter sweeps: one row per sweep
// (its spec, state, best trial and trial counts) and one per trial (its
// params, job, run, last reported value and end).
type Sweeps struct{}

// Name implements Projection.
func (Sweeps) Name() string { return "sweeps" }

// Tables implements Projection.
func (Sweeps) Tables() []string { return []string{"sweeps", "sweep_trials"} }

// Aggregates implements Projection.
func (Sweeps) Aggregates() []string { return []string{events.AggSweep} }

// Handles implements Projection.
func (Sweeps) Handles(t string) bool {
	switch t {
	case events.SweepCreated, events.SweepTrialSuggested, events.SweepTrialDispatched, events.SweepTrialReported,
		events.SweepTrialPruned, events.SweepTrialEnded, events.SweepStopRequested, events.SweepEnded:
		return true
	}
	return false
}

// sweepRecount recomputes a sweep's trial counts from its trials, and its
// best trial while it runs (an ended sweep keeps the best its end names):
// the best completed trial by the objective's direction, NaN never best,
// the lowest number among equals. It runs in the batch's transaction after
// the statement that changed a trial, so it sees that change.
const sweepRecount = `UPDATE sweeps s SET
	trials_suggested = c.suggested, trials_running = c.running, trials_completed = c.completed,
	trials_pruned = c.pruned, trials_failed = c.failed, trials_cancelled = c.cancelled,
	best_trial = CASE WHEN s.ended_at IS NULL THEN b.number ELSE s.best_trial END,
	best_value = CASE WHEN s.ended_at IS NULL THEN b.objective ELSE s.best_value END,
	updated_at = $2, seq = $3
	FROM (SELECT count(*) FILTER (WHERE state = 'suggested')::int AS suggested, count(*) FILTER (WHERE state = 'running')::int AS running,
		count(*) FILTER (WHERE state = 'completed')::int AS completed, count(*) FILTER (WHERE state = 'pruned')::int AS pruned,
		count(*) FILTER (WHERE state = 'failed')::int AS failed, count(*) FILTER (WHERE state = 'cancelled')::int AS cancelled
		FROM sweep_trials WHERE sweep_id = $1) c
	LEFT JOIN LATERAL (SELECT t.number, t.objective FROM sweep_trials t JOIN sweeps o ON o.id = t.sweep_id
		WHERE t.sweep_id = $1 AND t.state = 'completed' AND t.objective IS NOT NULL AND t.objective <> 'NaN'
		ORDER BY CASE WHEN o.objective_direction = 'maximize' THEN -t.objective ELSE t.objective END, t.number LIMIT 1) b ON true
	WHERE s.id = $1`

// Queue implements Projection. Every event sets the sweep's updated_at and
// seq; an event of a sweep or trial the tables do not hold changes nothing.
func (Sweeps) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		seq, at := int64(e.Sequence), jobTime(e.Time)
		switch e.Type {
		case events.SweepCreated:
			var d events.SweepCreatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			space, _ := json.Marshal(nonNilMap(d.Space))
			trial, _ := json.Marshal(d.Trial)
			var stopping []byte
			if d.EarlyStopping != nil {
				stopping, _ = json.Marshal(d.EarlyStopping)
			}
			b.Queue(`INSERT INTO sweeps (id, project_id, experiment_id, name, algorithm, objective_metric, objective_direction, space,
				early_stopping, trial, max_trials, parallelism, seed, state, created_by, created_at, updated_at, created_seq, seq)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::numeric, 'running', $14, $15, $15, $16, $16)`,
				d.SweepID, d.ProjectID, d.ExperimentID, d.Name, d.Algorithm, d.Objective.Metric, d.Objective.Direction, space,
				stopping, trial, d.MaxTrials, d.Parallelism, strconv.FormatUint(d.Seed, 10), d.CreatedBy, at, seq)
		case events.SweepTrialSuggested:
			var d events.SweepTrialSuggestedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			params, _ := json.Marshal(nonNil(d.Params))
			// A second suggestion of a trial number (only a forged stream
			// has one) is a unique violation: the event is quarantined.
			b.Queue(`INSERT INTO sweep_trials (sweep_id, number, params, state, suggested_at, updated_at)
				SELECT $1, $2, $3, 'suggested', $4, $4 WHERE EXISTS (SELECT 1 FROM sweeps WHERE id = $1)`,
				d.SweepID, d.Trial, params, at)
			b.Queue(sweepRecount, d.SweepID, at, seq)
		case events.SweepTrialDispatched:
			var d events.SweepTrialDispatchedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE sweep_trials SET state = CASE WHEN state = 'suggested' THEN 'running' ELSE state END,
				job_id = $3, run_id = $4, dispatched_at = $5, updated_at = $5 WHERE sweep_id = $1 AND number = $2`,
				d.SweepID, d.Trial, d.JobID, d.RunID, at)
			b.Queue(sweepRecount, d.SweepID, at, seq)
		case events.SweepTrialReported:
			var d events.SweepTrialReportedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE sweep_trials SET last_step = $3, last_value = $4, updated_at = $5 WHERE sweep_id = $1 AND number = $2`,
				d.SweepID, d.Trial, d.Step, float64(d.Value), at)
			b.Queue(`UPDATE sweeps SET updated_at = $2, seq = $3 WHERE id = $1`, d.SweepID, at, seq)
		case events.SweepTrialPruned:
			var d events.SweepTrialPrunedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			// The trial stays running until its job's cancellation ends it
			// (pruned), as handlers/sweeps Evolve has it; pruned_step marks it.
			b.Queue(`UPDATE sweep_trials SET pruned_step = $3, last_step = $3, last_value = $4, reason = $5, updated_at = $6
				WHERE sweep_id = $1 AND number = $2`, d.SweepID, d.Trial, d.Step, float64(d.Value), d.Reason, at)
			b.Queue(`UPDATE sweeps SET updated_at = $2, seq = $3 WHERE id = $1`, d.SweepID, at, seq)
		case events.SweepTrialEnded:
			var d events.SweepTrialEndedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			var objective *float64
			if d.Objective != nil {
				v := float64(*d.Objective)
				objective = &v
			}
			// A pruned trial keeps the rule's reason unless its end gives one.
			b.Queue(`UPDATE sweep_trials SET state = $3, job_state = $4, objective = $5, reason = CASE WHEN $6 = '' THEN reason ELSE $6 END,
				job_id = COALESCE(NULLIF($7, '')::uuid, job_id), ended_at = $8, updated_at = $8, end_seq = $9 WHERE sweep_id = $1 AND number = $2`,
				d.SweepID, d.Trial, d.State, d.JobState, objective, d.Reason, d.JobID, at, seq)
			b.Queue(sweepRecount, d.SweepID, at, seq)
		case events.SweepStopRequested:
			var d events.SweepStopRequestedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE sweeps SET stop_requested = true, state = CASE WHEN state = 'running' THEN 'stopping' ELSE state END,
				reason = CASE WHEN $2 = '' THEN reason ELSE $2 END, updated_at = $3, seq = $4 WHERE id = $1`, d.SweepID, d.Reason, at, seq)
		case events.SweepEnded:
			var d events.SweepEndedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			var best *int
			var value *float64
			if d.BestTrial > 0 && d.BestValue != nil {
				n, v := d.BestTrial, float64(*d.BestValue)
				best, value = &n, &v
			}
			// The end's best trial is the write side's word; an end that
			// names none keeps the one computed from the trials.
			b.Queue(`UPDATE sweeps SET state = $2, reason = CASE WHEN $3 = '' THEN reason ELSE $3 END, ended_at = $4,
				best_trial = COALESCE($5, best_trial), best_value = CASE WHEN $5::int IS NULL THEN best_value ELSE $6 END,
				updated_at = $4, seq = $7 WHERE id = $1`, d.SweepID, d.State, d.Reason, at, best, value, seq)
		}
	}
	return nil
}

func nonNilMap[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

// ---- queries ----

// Sweep is a hyper-parameter sweep as the API shows it.
type Sweep struct {
	ID            string                       `json:"id"`
	ProjectID     string                       `json:"project_id"`
	ExperimentID  string                       `json:"experiment_id"`
	Name          string                       `json:"name"`
	State         string                       `json:"state"`
	StopRequested bool                         `json:"stop_requested"`
	Reason        string                       `json:"reason,omitempty"`
	Objective     events.SweepObjective        `json:"objective"`
	Space         map[string]events.SweepParam `json:"space"`
	Algorithm     string                       `json:"algorithm"`
	EarlyStopping *events.SweepEarlyStopping   `json:"early_stopping,omitempty"`
	MaxTrials     int                          `json:"max_trials"`
	Parallelism   int                          `json:"parallelism"`
	// Seed reproduces the sweep's suggestions (chosen for it when its
	// creation named none).
	Seed      uint64        `json:"seed"`
	Trial     SweepTemplate `json:"trial"`
	CreatedBy string        `json:"created_by"`
	CreatedAt time.Time     `json:"created_at"`
	UpdatedAt time.Time     `json:"updated_at"`
	EndedAt   *time.Time    `json:"ended_at,omitempty"`
	// Best is the best completed trial so far (none while no trial has
	// completed with a value).
	Best   *SweepBest  `json:"best,omitempty"`
	Counts SweepCounts `json:"trial_counts"`
	// CreatedSeq orders the list (the cursor).
	CreatedSeq int64 `json:"-"`
}

// SweepTemplate is the job every trial of a sweep runs.
type SweepTemplate struct {
	Command        []string          `json:"command"`
	Env            map[string]string `json:"env"`
	Params         map[string]string `json:"params"`
	TimeoutSeconds float64           `json:"timeout_seconds"`
	MaxRetries     int               `json:"max_retries"`
}

// TemplateOf is a trial spec as Sweep.Trial shows it.
func TemplateOf(t events.SweepTrialSpec) SweepTemplate {
	command := slices.Clone(t.Command)
	if command == nil {
		command = []string{}
	}
	return SweepTemplate{Command: command, Env: cloneOrEmpty(t.Env), Params: cloneOrEmpty(t.Params),
		TimeoutSeconds: float64(t.TimeoutMS) / 1000, MaxRetries: t.MaxRetries}
}

func cloneOrEmpty(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// SweepBest is a sweep's best trial so far: its number, objective value
// and (on a sweep read with its trials) params.
type SweepBest struct {
	Trial     int                `json:"trial"`
	Objective events.MetricValue `json:"objective"`
	Params    map[string]string  `json:"params,omitempty"`
}

// SweepCounts counts a sweep's trials by state.
type SweepCounts struct {
	Total     int `json:"total"`
	Suggested int `json:"suggested"`
	Running   int `json:"running"`
	Completed int `json:"completed"`
	Pruned    int `json:"pruned"`
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"`
}

// SweepReport is a trial's last reported value of the objective.
type SweepReport struct {
	Step  int64              `json:"step"`
	Value events.MetricValue `json:"value"`
}

// SweepTrial is one trial of a sweep.
type SweepTrial struct {
	Number int               `json:"number"`
	Params map[string]string `json:"params"`
	State  string            `json:"state"`
	JobID  string            `json:"job_id,omitempty"`
	RunID  string            `json:"run_id,omitempty"`
	// JobState is the state the trial's job ended in.
	JobState string `json:"job_state,omitempty"`
	// Objective is the trial's value of the objective metric (its run's
	// latest), once it has ended with one.
	Objective  *events.MetricValue `json:"objective,omitempty"`
	Reason     string              `json:"reason,omitempty"`
	LastReport *SweepReport        `json:"last_report,omitempty"`
	// Pruned says early stopping stopped the trial (at PrunedStep, when
	// known): it is running until its job's cancellation ends it, pruned.
	Pruned       bool       `json:"pruned,omitempty"`
	PrunedStep   *int64     `json:"pruned_step,omitempty"`
	SuggestedAt  time.Time  `json:"suggested_at"`
	DispatchedAt *time.Time `json:"dispatched_at,omitempty"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	// endSeq orders the ended trials (Progress).
	endSeq int64
}

// SweepPoint is one point of the objective's progress over trials: an
// ended trial (in end order), its objective (none when it ended without
// one) and the best value of the completed trials up to it.
type SweepPoint struct {
	Trial     int                 `json:"trial"`
	State     string              `json:"state"`
	Objective *events.MetricValue `json:"objective,omitempty"`
	Best      *events.MetricValue `json:"best,omitempty"`
	BestTrial int                 `json:"best_trial,omitempty"`
}

// SweepDetail is a sweep with its trials (by number) and the objective's
// progress over them.
type SweepDetail struct {
	Sweep
	Trials   []SweepTrial `json:"trials"`
	Progress []SweepPoint `json:"progress"`
}

// Better reports whether objective a beats b in direction (NaN never does;
// a value beats NaN).
func Better(direction string, a, b float64) bool {
	if math.IsNaN(a) {
		return false
	}
	if math.IsNaN(b) {
		return true
	}
	if direction == "maximize" {
		return a > b
	}
	return a < b
}

// BestTrialOf is the best completed trial of trials in direction (the
// lowest number among equals; NaN never best), or nil.
func BestTrialOf(direction string, trials []SweepTrial) *SweepBest {
	var best *SweepBest
	for _, t := range trials {
		if t.State != events.TrialCompleted || t.Objective == nil || math.IsNaN(float64(*t.Objective)) {
			continue
		}
		if best == nil || Better(direction, float64(*t.Objective), float64(best.Objective)) ||
			(float64(*t.Objective) == float64(best.Objective) && t.Number < best.Trial) {
			best = &SweepBest{Trial: t.Number, Objective: *t.Objective, Params: t.Params}
		}
	}
	return best
}

// CountsOf counts trials by state.
func CountsOf(trials []SweepTrial) SweepCounts {
	c := SweepCounts{Total: len(trials)}
	for _, t := range trials {
		switch t.State {
		case events.TrialSuggested:
			c.Suggested++
		case events.TrialRunning:
			c.Running++
		case events.TrialCompleted:
			c.Completed++
		case events.TrialPruned:
			c.Pruned++
		case events.TrialFailed:
			c.Failed++
		case events.TrialCancelled:
			c.Cancelled++
		}
	}
	return c
}

// ProgressOf is the objective's progress over the ended trials, taken in
// the order given (end order), with the best value so far in direction.
func ProgressOf(direction string, ended []SweepTrial) []SweepPoint {
	out := make([]SweepPoint, 0, len(ended))
	var best *SweepBest
	for _, t := range ended {
		if b := BestTrialOf(direction, []SweepTrial{t}); b != nil && (best == nil || Better(direction, float64(b.Objective), float64(best.Objective)) ||
			(float64(b.Objective) == float64(best.Objective) && b.Trial < best.Trial)) {
			best = b
		}
		p := SweepPoint{Trial: t.Number, State: t.State, Objective: t.Objective}
		if best != nil {
			v := best.Objective
			p.Best, p.BestTrial = &v, best.Trial
		}
		out = append(out, p)
	}
	return out
}

// SweepStates are the states a sweep can be in.
var SweepStates = []string{events.SweepRunning, events.SweepStopping, events.SweepCompleted, events.SweepStopped}

// SweepFilter narrows a project's sweeps.
type SweepFilter struct {
	State string // one of SweepStates, or "" for all
}

const sweepCols = `id, project_id, experiment_id, name, state, stop_requested, reason, objective_metric, objective_direction, space,
	algorithm, early_stopping, max_trials, parallelism, seed::text, trial, created_by, created_at, updated_at, ended_at,
	best_trial, best_value, trials_suggested, trials_running, trials_completed, trials_pruned, trials_failed, trials_cancelled, created_seq`

func scanSweep(row pgx.Row) (Sweep, error) {
	var s Sweep
	var space, stopping, trial []byte
	var seed string
	var bestTrial *int
	var bestValue *float64
	c := &s.Counts
	err := row.Scan(&s.ID, &s.ProjectID, &s.ExperimentID, &s.Name, &s.State, &s.StopRequested, &s.Reason, &s.Objective.Metric,
		&s.Objective.Direction, &space, &s.Algorithm, &stopping, &s.MaxTrials, &s.Parallelism, &seed, &trial, &s.CreatedBy,
		&s.CreatedAt, &s.UpdatedAt, &s.EndedAt, &bestTrial, &bestValue, &c.Suggested, &c.Running, &c.Completed, &c.Pruned,
		&c.Failed, &c.Cancelled, &s.CreatedSeq)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, err
	}
	c.Total = c.Suggested + c.Running + c.Completed + c.Pruned + c.Failed + c.Cancelled
	if s.Seed, err = strconv.ParseUint(seed, 10, 64); err != nil {
		return s, fmt.Errorf("sweep %s seed: %w", s.ID, err)
	}
	if err := json.Unmarshal(space, &s.Space); err != nil {
		return s, fmt.Errorf("sweep %s space: %w", s.ID, err)
	}
	if stopping != nil {
		s.EarlyStopping = &events.SweepEarlyStopping{}
		if err := json.Unmarshal(stopping, s.EarlyStopping); err != nil {
			return s, fmt.Errorf("sweep %s early stopping: %w", s.ID, err)
		}
	}
	var spec events.SweepTrialSpec
	if err := json.Unmarshal(trial, &spec); err != nil {
		return s, fmt.Errorf("sweep %s trial: %w", s.ID, err)
	}
	s.Trial = TemplateOf(spec)
	if s.Space == nil {
		s.Space = map[string]events.SweepParam{}
	}
	if bestTrial != nil && bestValue != nil {
		s.Best = &SweepBest{Trial: *bestTrial, Objective: events.MetricValue(*bestValue)}
	}
	return s, nil
}

// Sweep is sweep id of the project, without its trials (ErrNotFound for an
// id that is not a uuid, and for another project's sweep).
func (q *Queries) Sweep(ctx context.Context, projectID, id string) (Sweep, error) {
	if !isUUID(id) || !isUUID(projectID) {
		return Sweep{}, ErrNotFound
	}
	return scanSweep(q.pool.QueryRow(ctx, "SELECT "+sweepCols+" FROM sweeps WHERE project_id = $1 AND id = $2", projectID, id))
}

// SweepDetail is sweep id of the project with every trial, by number, and
// the objective's progress over the ended trials (ErrNotFound as Sweep).
// Both are read in one transaction, so they agree.
func (q *Queries) SweepDetail(ctx context.Context, projectID, id string) (SweepDetail, error) {
	if !isUUID(id) || !isUUID(projectID) {
		return SweepDetail{}, ErrNotFound
	}
	tx, err := q.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return SweepDetail{}, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	s, err := scanSweep(tx.QueryRow(ctx, "SELECT "+sweepCols+" FROM sweeps WHERE project_id = $1 AND id = $2", projectID, id))
	if err != nil {
		return SweepDetail{}, err
	}
	rows, err := tx.Query(ctx, `SELECT number, params, state, COALESCE(job_id::text, ''), COALESCE(run_id::text, ''), job_state, objective,
		reason, last_step, last_value, pruned_step, suggested_at, dispatched_at, ended_at, COALESCE(end_seq, 0)
		FROM sweep_trials WHERE sweep_id = $1 ORDER BY number`, id)
	if err != nil {
		return SweepDetail{}, err
	}
	trials, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SweepTrial, error) {
		var t SweepTrial
		var params []byte
		var objective, lastValue *float64
		var lastStep *int64
		if err := r.Scan(&t.Number, &params, &t.State, &t.JobID, &t.RunID, &t.JobState, &objective, &t.Reason, &lastStep, &lastValue,
			&t.PrunedStep, &t.SuggestedAt, &t.DispatchedAt, &t.EndedAt, &t.endSeq); err != nil {
			return t, err
		}
		if err := json.Unmarshal(params, &t.Params); err != nil {
			return t, fmt.Errorf("sweep %s trial %d params: %w", id, t.Number, err)
		}
		if t.Params == nil {
			t.Params = map[string]string{}
		}
		t.Pruned = t.PrunedStep != nil || t.State == events.TrialPruned
		if objective != nil {
			v := events.MetricValue(*objective)
			t.Objective = &v
		}
		if lastStep != nil && lastValue != nil {
			t.LastReport = &SweepReport{Step: *lastStep, Value: events.MetricValue(*lastValue)}
		}
		return t, nil
	})
	if err != nil {
		return SweepDetail{}, err
	}
	return DetailOf(s, trials), nil
}

// DetailOf is sweep s with trials (by number): the best trial's params and
// the progress over the ended ones, in end order.
func DetailOf(s Sweep, trials []SweepTrial) SweepDetail {
	if trials == nil {
		trials = []SweepTrial{}
	}
	d := SweepDetail{Sweep: s, Trials: trials}
	if s.Best != nil {
		best := *s.Best
		for _, t := range trials {
			if t.Number == best.Trial {
				best.Params = t.Params
			}
		}
		d.Best = &best
	}
	var ended []SweepTrial
	for _, t := range trials {
		if t.EndedAt != nil {
			ended = append(ended, t)
		}
	}
	slices.SortStableFunc(ended, func(a, b SweepTrial) int {
		if c := cmp.Compare(a.endSeq, b.endSeq); c != 0 {
			return c
		}
		return a.EndedAt.Compare(*b.EndedAt)
	})
	d.Progress = ProgressOf(s.Objective.Direction, ended)
	return d
}

// ListSweeps pages a project's sweeps, newest first, optionally of one
// state. A state that is not one of SweepStates or a limit below 1 is
// ErrInvalidSearch; a token this list did not issue ErrBadPageToken.
func (q *Queries) ListSweeps(ctx context.Context, projectID string, f SweepFilter, pageToken string, limit int) (Page[Sweep], error) {
	if f.State != "" && !slices.Contains(SweepStates, f.State) {
		return Page[Sweep]{}, fmt.Errorf("%w: state %q is not one of %v", ErrInvalidSearch, f.State, SweepStates)
	}
	if limit < 1 {
		return Page[Sweep]{}, fmt.Errorf("%w: the page size must be at least 1", ErrInvalidSearch)
	}
	c, err := decodeCursor(pageToken, seqCursor)
	if err != nil {
		return Page[Sweep]{}, err
	}
	if !isUUID(projectID) {
		return Page[Sweep]{Items: []Sweep{}}, nil
	}
	args := []any{projectID, limit + 1}
	where := "project_id = $1"
	add := func(cond string, v any) {
		args = append(args, v)
		where += " AND " + cond + "$" + strconv.Itoa(len(args))
	}
	if f.State != "" {
		add("state = ", f.State)
	}
	if pageToken != "" {
		add("created_seq < ", c.Seq)
	}
	rows, err := q.pool.Query(ctx, "SELECT "+sweepCols+" FROM sweeps WHERE "+where+" ORDER BY created_seq DESC LIMIT $2", args...)
	if err != nil {
		return Page[Sweep]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (Sweep, cursor, error) {
		s, err := scanSweep(r)
		return s, cursor{Seq: s.CreatedSeq}, err
	})
}
