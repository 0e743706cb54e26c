package projections

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/events"
)

func mv(f float64) *events.MetricValue {
	v := events.MetricValue(f)
	return &v
}

func fptr(f float64) *float64 { return &f }

// sweepEvent appends one batch of a sweep's events at time at.
func sweepEvent(t *testing.T, f *fixture, at time.Time, id string, typesAndData ...any) uint64 {
	t.Helper()
	var changes [][3]any
	for i := 0; i < len(typesAndData); i += 2 {
		changes = append(changes, [3]any{events.Subject(events.AggSweep, id), typesAndData[i], typesAndData[i+1]})
	}
	return f.append(t, at, changes...)
}

func newSweep(t *testing.T, f *fixture, at time.Time, project, direction string) string {
	t.Helper()
	id := uuid.NewString()
	sweepEvent(t, f, at, id, events.SweepCreated, events.SweepCreatedData{SweepID: id, ProjectID: project, ExperimentID: uuid.NewString(),
		Name: "lr search", Objective: events.SweepObjective{Metric: "loss", Direction: direction},
		Space: map[string]events.SweepParam{"lr": {Type: "log_uniform", Low: fptr(1e-4), High: fptr(0.1)},
			"opt": {Type: "categorical", Values: []string{"adam", "sgd"}}},
		Algorithm: "random", EarlyStopping: &events.SweepEarlyStopping{Rule: "median", WarmupSteps: 2, MinTrials: 3},
		MaxTrials: 8, Parallelism: 3, Seed: math.MaxUint64 - 7,
		Trial:     events.SweepTrialSpec{Command: []string{"python", "train.py"}, Env: map[string]string{"MODE": "fast"}, TimeoutMS: 90_500, MaxRetries: 1},
		CreatedBy: "00000000-0000-4000-8000-0000000000aa"})
	return id
}

// trial appends trial n's suggestion and dispatch.
func trial(t *testing.T, f *fixture, at time.Time, id string, n int, lr string) (job string) {
	t.Helper()
	job = uuid.NewString()
	sweepEvent(t, f, at, id, events.SweepTrialSuggested, events.SweepTrialSuggestedData{SweepID: id, Trial: n, Params: map[string]string{"lr": lr, "opt": "adam"}},
		events.SweepTrialDispatched, events.SweepTrialDispatchedData{SweepID: id, Trial: n, JobID: job, RunID: uuid.NewString()})
	return job
}

func ended(t *testing.T, f *fixture, at time.Time, id string, n int, job, state string, objective *events.MetricValue, reason string) {
	t.Helper()
	jobState := map[string]string{events.TrialCompleted: events.JobSucceeded, events.TrialFailed: events.JobFailed,
		events.TrialPruned: events.JobCancelled, events.TrialCancelled: events.JobCancelled}[state]
	sweepEvent(t, f, at, id, events.SweepTrialEnded, events.SweepTrialEndedData{SweepID: id, Trial: n, JobID: job, JobState: jobState,
		State: state, Objective: objective, Reason: reason})
}

func objectives(ps []SweepPoint) (trials []int, obj, best []string) {
	s := func(v *events.MetricValue) string {
		if v == nil {
			return "-"
		}
		b, _ := json.Marshal(*v)
		return string(b)
	}
	for _, p := range ps {
		trials = append(trials, p.Trial)
		obj = append(obj, s(p.Objective))
		best = append(best, s(p.Best))
	}
	return
}

// The life of sweeps through the real store and runner: a minimizing sweep
// whose trials complete (one with NaN), fail, are pruned and cancelled by
// a stop, a maximizing one still running, and one of another project. The
// rows hold the spec, the state, the counts and the best trial (NaN never
// best; the end's best once ended); a sweep reads back with its trials by
// number and the progress in end order; the list pages newest first and
// filters by state; a rebuild (and a build one event per batch) gives the
// same rows.
func TestSweepsProjection(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start(t, NewRunner(f.pool, f.store, Sweeps{}, testRunnerConfig()))
	q := NewQueries(f.pool)
	ctx := testCtx(t)
	project, other := uuid.NewString(), uuid.NewString()
	at := base.Add(123456789 * time.Nanosecond)
	after := func(d time.Duration) time.Time { return at.Add(d) }

	a := newSweep(t, f, at, project, "minimize")
	j1 := trial(t, f, after(time.Minute), a, 1, "0.01")
	j2 := trial(t, f, after(time.Minute), a, 2, "0.05")
	j3 := trial(t, f, after(time.Minute), a, 3, "0.001")
	sweepEvent(t, f, after(2*time.Minute), a, events.SweepTrialReported, events.SweepTrialReportedData{SweepID: a, Trial: 2, Step: 3, Value: 2.5},
		events.SweepTrialReported, events.SweepTrialReportedData{SweepID: a, Trial: 1, Step: 3, Value: 0.9})
	sweepEvent(t, f, after(3*time.Minute), a, events.SweepTrialPruned, events.SweepTrialPrunedData{SweepID: a, Trial: 2, Step: 4, Value: 2.4,
		Rule: "median", Reason: events.ReasonEarlyStopped})
	readA := func() SweepDetail {
		t.Helper()
		waitCaughtUp(t, f.pool, f.lastSeq(t), Sweeps{}.Name())
		d, err := q.SweepDetail(ctx, project, a)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if t2 := readA().Trials[1]; t2.State != events.TrialRunning || !t2.Pruned || *t2.PrunedStep != 4 || t2.Reason != events.ReasonEarlyStopped {
		t.Fatalf("pruned trial, its job not yet cancelled: %+v", t2)
	}
	ended(t, f, after(4*time.Minute), a, 1, j1, events.TrialCompleted, mv(0.5), "")
	ended(t, f, after(5*time.Minute), a, 2, j2, events.TrialPruned, nil, "")
	ended(t, f, after(6*time.Minute), a, 3, j3, events.TrialCompleted, mv(math.NaN()), "")
	j4 := trial(t, f, after(7*time.Minute), a, 4, "0.02")
	j5 := trial(t, f, after(7*time.Minute), a, 5, "0.03")
	ended(t, f, after(8*time.Minute), a, 4, j4, events.TrialFailed, nil, "exit code 1")
	ended(t, f, after(9*time.Minute), a, 5, j5, events.TrialCompleted, mv(0.2), "")
	j6 := trial(t, f, after(10*time.Minute), a, 6, "0.04")
	sweepEvent(t, f, after(10*time.Minute), a, events.SweepTrialSuggested, events.SweepTrialSuggestedData{SweepID: a, Trial: 7, Params: map[string]string{"lr": "0.06"}})

	// Running: the best so far is trial 5 (0.2 < 0.5; trial 3's NaN never).
	d := readA()
	if d.State != events.SweepRunning || d.Best == nil || d.Best.Trial != 5 || float64(d.Best.Objective) != 0.2 || d.Best.Params["lr"] != "0.03" {
		t.Fatalf("running sweep: state %s best %+v", d.State, d.Best)
	}
	if want := (SweepCounts{Total: 7, Suggested: 1, Running: 1, Completed: 3, Pruned: 1, Failed: 1}); d.Counts != want {
		t.Fatalf("counts %+v, want %+v", d.Counts, want)
	}

	// Stop: stopping, trial 6 cancelled, then stopped with the end's best.
	sweepEvent(t, f, after(11*time.Minute), a, events.SweepStopRequested, events.SweepStopRequestedData{SweepID: a, Reason: "enough"})
	if d = readA(); d.State != events.SweepStopping || !d.StopRequested || d.Reason != "enough" || d.EndedAt != nil {
		t.Fatalf("stopping sweep: %+v", d.Sweep)
	}
	ended(t, f, after(12*time.Minute), a, 6, j6, events.TrialCancelled, nil, "the sweep stopped")
	ended(t, f, after(12*time.Minute), a, 7, "", events.TrialCancelled, nil, "the sweep stopped")
	sweepEvent(t, f, after(13*time.Minute), a, events.SweepEnded, events.SweepEndedData{SweepID: a, State: events.SweepStopped, Trials: 7,
		BestTrial: 5, BestValue: mv(0.2)})
	d = readA()
	ms := func(dur time.Duration) time.Time { return at.Add(dur).Truncate(time.Microsecond) }
	if d.State != events.SweepStopped || d.EndedAt == nil || !d.EndedAt.Equal(ms(13*time.Minute)) || !d.CreatedAt.Equal(ms(0)) ||
		!d.UpdatedAt.Equal(ms(13*time.Minute)) || d.Best == nil || d.Best.Trial != 5 {
		t.Fatalf("stopped sweep: %+v", d.Sweep)
	}
	if d.Seed != math.MaxUint64-7 || d.MaxTrials != 8 || d.Parallelism != 3 || d.Algorithm != "random" || d.Objective.Metric != "loss" ||
		d.EarlyStopping == nil || d.EarlyStopping.MinTrials != 3 || *d.Space["lr"].High != 0.1 || !slices.Equal(d.Space["opt"].Values, []string{"adam", "sgd"}) ||
		d.Trial.TimeoutSeconds != 90.5 || d.Trial.MaxRetries != 1 || d.Trial.Env["MODE"] != "fast" || len(d.Trial.Params) != 0 ||
		!slices.Equal(d.Trial.Command, []string{"python", "train.py"}) {
		t.Fatalf("spec: %+v", d.Sweep)
	}
	if want := (SweepCounts{Total: 7, Completed: 3, Pruned: 1, Failed: 1, Cancelled: 2}); d.Counts != want {
		t.Fatalf("counts %+v, want %+v", d.Counts, want)
	}
	var numbers []int
	for _, tr := range d.Trials {
		numbers = append(numbers, tr.Number)
	}
	if !slices.Equal(numbers, []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("trials %v", numbers)
	}
	t2 := d.Trials[1]
	if t2.State != events.TrialPruned || !t2.Pruned || t2.Reason != events.ReasonEarlyStopped || t2.PrunedStep == nil || *t2.PrunedStep != 4 ||
		t2.LastReport == nil || t2.LastReport.Step != 4 || float64(t2.LastReport.Value) != 2.4 || t2.JobID != j2 || t2.JobState != events.JobCancelled ||
		t2.Objective != nil || t2.EndedAt == nil || !t2.EndedAt.Equal(ms(5*time.Minute)) || t2.DispatchedAt == nil {
		t.Fatalf("pruned trial: %+v", t2)
	}
	if t1 := d.Trials[0]; t1.LastReport == nil || t1.LastReport.Step != 3 || t1.Objective == nil || float64(*t1.Objective) != 0.5 || t1.RunID == "" {
		t.Fatalf("trial 1: %+v", t1)
	}
	if t3 := d.Trials[2]; t3.Objective == nil || !math.IsNaN(float64(*t3.Objective)) {
		t.Fatalf("trial 3 (NaN): %+v", t3)
	}
	if t4 := d.Trials[3]; t4.State != events.TrialFailed || t4.Reason != "exit code 1" || t4.Objective != nil {
		t.Fatalf("trial 4: %+v", t4)
	}
	if t7 := d.Trials[6]; t7.State != events.TrialCancelled || t7.JobID != "" || t7.DispatchedAt != nil || t7.Params["lr"] != "0.06" {
		t.Fatalf("trial 7, never dispatched: %+v", t7)
	}
	// The progress, in end order: the best so far never NaN.
	tr, obj, best := objectives(d.Progress)
	if !slices.Equal(tr, []int{1, 2, 3, 4, 5, 6, 7}) || !slices.Equal(obj, []string{"0.5", "-", `"NaN"`, "-", "0.2", "-", "-"}) ||
		!slices.Equal(best, []string{"0.5", "0.5", "0.5", "0.5", "0.2", "0.2", "0.2"}) {
		t.Fatalf("progress trials %v objectives %v best %v", tr, obj, best)
	}
	// The read model's best is the Go rule's (BestTrialOf), as the API's
	// answer from the write side computes it.
	if b := BestTrialOf(d.Objective.Direction, d.Trials); b == nil || b.Trial != d.Best.Trial || CountsOf(d.Trials) != d.Counts {
		t.Fatalf("BestTrialOf %+v, CountsOf %+v; read model %+v %+v", b, CountsOf(d.Trials), d.Best, d.Counts)
	}

	// B maximizes: the larger value is best; it is still running.
	b := newSweep(t, f, after(20*time.Minute), project, "maximize")
	jb1, jb2 := trial(t, f, after(21*time.Minute), b, 1, "0.1"), trial(t, f, after(21*time.Minute), b, 2, "0.2")
	trial(t, f, after(21*time.Minute), b, 3, "0.3")
	ended(t, f, after(22*time.Minute), b, 2, jb2, events.TrialCompleted, mv(0.9), "")
	ended(t, f, after(23*time.Minute), b, 1, jb1, events.TrialCompleted, mv(0.3), "")
	c := newSweep(t, f, after(30*time.Minute), other, "minimize")
	waitCaughtUp(t, f.pool, f.lastSeq(t), Sweeps{}.Name())
	db, err := q.SweepDetail(ctx, project, b)
	if err != nil {
		t.Fatal(err)
	}
	if db.Best == nil || db.Best.Trial != 2 || db.Counts.Running != 1 || db.State != events.SweepRunning {
		t.Fatalf("sweep B: %+v", db.Sweep)
	}
	if tr, _, best := objectives(db.Progress); !slices.Equal(tr, []int{2, 1}) || !slices.Equal(best, []string{"0.9", "0.9"}) {
		t.Fatalf("sweep B progress %v best %v", tr, best)
	}

	// Not found: another project's sweep, an unknown id, a malformed one.
	for _, id := range []string{c, uuid.NewString(), "not-a-uuid", ""} {
		if _, err := q.SweepDetail(ctx, project, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("SweepDetail(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := q.Sweep(ctx, project, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Sweep(%q) = %v, want ErrNotFound", id, err)
		}
	}

	// Lists: newest first, pages, the state filter; refusals.
	list := func(proj string, fl SweepFilter, size int) []string {
		t.Helper()
		ids, token := []string{}, ""
		for range 10 {
			page, err := q.ListSweeps(ctx, proj, fl, token, size)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range page.Items {
				ids = append(ids, s.ID)
			}
			if token = page.NextPageToken; token == "" {
				return ids
			}
		}
		t.Fatal("ListSweeps never ends")
		return nil
	}
	for _, size := range []int{1, 2, 10} {
		if got := list(project, SweepFilter{}, size); !slices.Equal(got, []string{b, a}) {
			t.Fatalf("pages of %d: %v, want [%s %s]", size, got, b, a)
		}
	}
	if got := list(project, SweepFilter{State: events.SweepStopped}, 10); !slices.Equal(got, []string{a}) {
		t.Fatalf("stopped sweeps: %v", got)
	}
	if got := list(project, SweepFilter{State: events.SweepCompleted}, 10); len(got) != 0 {
		t.Fatalf("completed sweeps: %v", got)
	}
	if got := list(other, SweepFilter{}, 10); !slices.Equal(got, []string{c}) {
		t.Fatalf("the other project's sweeps: %v", got)
	}
	if _, err := q.ListSweeps(ctx, project, SweepFilter{State: "done"}, "", 10); !errors.Is(err, ErrInvalidSearch) {
		t.Fatalf("bad state: %v", err)
	}
	if _, err := q.ListSweeps(ctx, project, SweepFilter{}, "garbage!", 10); !errors.Is(err, ErrBadPageToken) {
		t.Fatalf("bad token: %v", err)
	}

	// The same rows after a rebuild, and built one event per batch.
	dumps := func(p *pgxpool.Pool) map[string][]string {
		return map[string][]string{"sweeps": dumpOrdered(t, p, "sweeps", "id"), "sweep_trials": dumpOrdered(t, p, "sweep_trials", "sweep_id, number")}
	}
	before := dumps(f.pool)
	if len(before["sweeps"]) != 3 || len(before["sweep_trials"]) != 10 {
		t.Fatalf("%d sweeps and %d trials", len(before["sweeps"]), len(before["sweep_trials"]))
	}
	ref := newDB(t)
	one := testRunnerConfig()
	one.BatchSize = 1
	start(t, NewRunner(ref, f.store, Sweeps{}, one))
	last := f.lastSeq(t)
	waitCaughtUp(t, ref, last, Sweeps{}.Name())
	sameDump(t, dumps(ref), before)
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, last, Sweeps{}.Name())
	sameDump(t, dumps(f.pool), before)
}
