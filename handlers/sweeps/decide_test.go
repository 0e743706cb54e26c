package sweeps_test

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/sweeps"
	"github.com/maestro-ml/maestro/tuning"
)

func ptr(v float64) *float64 { return &v }

func input() sweeps.CreateInput {
	return sweeps.CreateInput{Experiment: "x", Name: "lr search", Objective: events.SweepObjective{Metric: "loss", Direction: "minimize"},
		Space:     map[string]events.SweepParam{"lr": {Type: "log_uniform", Low: ptr(1e-4), High: ptr(1)}, "depth": {Type: "int", Low: ptr(2), High: ptr(8)}},
		Algorithm: "random", MaxTrials: 5, Parallelism: 2,
		Trial: sweeps.TrialInput{Command: []string{"python", "train.py"}, Params: map[string]string{"epochs": "10"}, Timeout: time.Minute}}
}

// A bad request is a 400 whose detail names the field at fault.
func TestCheckNamesTheField(t *testing.T) {
	cases := []struct {
		name  string
		mod   func(*sweeps.CreateInput)
		field string
	}{
		{"no name", func(in *sweeps.CreateInput) { in.Name = " " }, "name"},
		{"no metric", func(in *sweeps.CreateInput) { in.Objective.Metric = "" }, "objective.metric"},
		{"bad direction", func(in *sweeps.CreateInput) { in.Objective.Direction = "up" }, "objective.direction"},
		{"unknown algorithm", func(in *sweeps.CreateInput) { in.Algorithm = "genetic" }, "algorithm"},
		{"empty range", func(in *sweeps.CreateInput) {
			in.Space["lr"] = events.SweepParam{Type: "uniform", Low: ptr(1), High: ptr(1)}
		}, "space.lr"},
		{"log of zero", func(in *sweeps.CreateInput) {
			in.Space["lr"] = events.SweepParam{Type: "log_uniform", Low: ptr(0), High: ptr(1)}
		}, "space.lr.low"},
		{"grid over a continuous range", func(in *sweeps.CreateInput) { in.Algorithm = "grid" }, "space.lr"},
		{"unknown rule", func(in *sweeps.CreateInput) { in.EarlyStopping = &events.SweepEarlyStopping{Rule: "patience"} }, "early_stopping.rule"},
		{"too many trials", func(in *sweeps.CreateInput) { in.MaxTrials = sweeps.MaxTrials + 1 }, "max_trials"},
		{"no trials", func(in *sweeps.CreateInput) { in.MaxTrials = 0 }, "max_trials"},
		{"parallelism", func(in *sweeps.CreateInput) { in.Parallelism = sweeps.MaxParallelism + 1 }, "parallelism"},
		{"seed beyond 2^53", func(in *sweeps.CreateInput) { s := uint64(1 << 60); in.Seed = &s }, "seed"},
		{"param sampled and fixed", func(in *sweeps.CreateInput) { in.Trial.Params["lr"] = "0.1" }, "trial.params.lr"},
		{"no command", func(in *sweeps.CreateInput) { in.Trial.Command = nil }, "trial"},
		{"secret in clear", func(in *sweeps.CreateInput) { in.Trial.Env = map[string]string{"API_KEY": "abc"} }, "trial"},
		{"a fixed param that is not text", func(in *sweeps.CreateInput) { in.Trial.Params["note"] = "a\x00b" }, "trial.params"},
		{"a fixed param key runs refuse", func(in *sweeps.CreateInput) { in.Trial.Params["bad key!"] = "1" }, "trial.params"},
		{"a categorical value runs refuse", func(in *sweeps.CreateInput) {
			in.Space["opt"] = events.SweepParam{Type: "categorical", Values: []string{"sgd", "bell\x07"}}
		}, "space.opt.values"},
		{"a space too big for one event", func(in *sweeps.CreateInput) {
			for p := range 32 {
				var vals []string
				for v := range 100 {
					vals = append(vals, fmt.Sprintf("%03d", v)+strings.Repeat("v", 247))
				}
				in.Space[fmt.Sprintf("p%02d", p)] = events.SweepParam{Type: "categorical", Values: vals}
			}
			delete(in.Space, "lr")
			delete(in.Space, "depth")
		}, "space"},
	}
	for _, tc := range cases {
		in := input()
		tc.mod(&in)
		_, err := sweeps.Check(in)
		e, ok := handlers.AsError(err)
		if !ok || e.Kind != handlers.Invalid || !strings.HasPrefix(e.Detail, tc.field) {
			t.Errorf("%s: %v, want a validation error naming %s", tc.name, err, tc.field)
		}
	}
	d, err := sweeps.Check(input())
	if err != nil || d.Trial.TimeoutMS != 60000 || d.Trial.Params["epochs"] != "10" {
		t.Fatalf("a good request: %+v %v", d, err)
	}
	grid := input()
	grid.Algorithm, grid.MaxTrials = "grid", 0
	grid.Space = map[string]events.SweepParam{"depth": {Type: "int", Low: ptr(2), High: ptr(4)}, "opt": {Type: "categorical", Values: []string{"sgd", "adam"}}}
	if d, err := sweeps.Check(grid); err != nil || d.MaxTrials != 6 {
		t.Fatalf("a grid without max_trials runs its 6 points: %d %v", d.MaxTrials, err)
	}
}

// fold applies changes to a state as the store would.
func fold(t *testing.T, st sweeps.State, changes []handlers.Change) sweeps.State {
	t.Helper()
	st = sweeps.Clone(st)
	for _, c := range changes {
		b, err := handlers.Build(events.Meta{Actor: events.Actor{Kind: events.ActorSystem, ID: "test"}}, nil, c)
		if err != nil {
			t.Fatal(err)
		}
		if st, err = sweeps.Evolve(st, b[0].Event); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// must fails the test on a decider's error: must(t)(sweeps.DecideX(...)).
func must(t *testing.T) func([]handlers.Change, error) []handlers.Change {
	return func(ch []handlers.Change, err error) []handlers.Change {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
}

func created(t *testing.T, mod func(*sweeps.CreateInput)) sweeps.State {
	t.Helper()
	in := input()
	if mod != nil {
		mod(&in)
	}
	d, err := sweeps.Check(in)
	if err != nil {
		t.Fatal(err)
	}
	d.SweepID, d.ProjectID, d.Seed = "s1", "p1", 3
	return fold(t, sweeps.State{}, must(t)(sweeps.DecideCreate(sweeps.State{}, d)))
}

func end(t *testing.T, st sweeps.State, n int, state string, objective *float64) sweeps.State {
	t.Helper()
	st = fold(t, st, must(t)(sweeps.DecideDispatched(st, n, "job", "run")))
	return fold(t, st, must(t)(sweeps.DecideTrialEnd(st, sweeps.JobEnd{Trial: n, JobID: "job", RunID: "run", JobState: state, Objective: objective})))
}

// The sweep keeps parallelism trials going until max_trials, then ends
// with its best trial.
func TestAdvanceKeepsTheSlotsFullAndEnds(t *testing.T) {
	st := created(t, nil)
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	if len(st.Trials) != 2 || st.Active() != 2 {
		t.Fatalf("first advance: %d trials, %d active; want 2 (parallelism)", len(st.Trials), st.Active())
	}
	if ch := must(t)(sweeps.DecideAdvance(st)); len(ch) != 0 {
		t.Fatalf("no free slot, yet %d changes", len(ch))
	}
	st = end(t, st, 1, events.JobSucceeded, ptr(0.5))
	st = end(t, st, 2, events.JobSucceeded, nil) // logged no objective
	if tr := st.Trial(2); tr.State != events.TrialFailed || !strings.Contains(tr.Reason, "loss") {
		t.Fatalf("a trial without its objective: %+v", tr)
	}
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	if len(st.Trials) != 4 {
		t.Fatalf("after two ends: %d trials, want 4", len(st.Trials))
	}
	st = end(t, st, 3, events.JobSucceeded, ptr(0.2))
	st = end(t, st, 4, events.JobFailed, nil)
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	if len(st.Trials) != 5 {
		t.Fatalf("max_trials 5: %d trials", len(st.Trials))
	}
	if ch := must(t)(sweeps.DecideAdvance(st)); len(ch) != 0 {
		t.Fatalf("trial 5 runs: the sweep must wait, got %d changes", len(ch))
	}
	st = end(t, st, 5, events.JobCancelled, nil)
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	if st.State != events.SweepCompleted {
		t.Fatalf("all 5 trials ended: %s", st.State)
	}
	if best, ok := st.Best(); !ok || best.Number != 3 {
		t.Fatalf("best: %+v %v, want trial 3", best, ok)
	}
	if ch := must(t)(sweeps.DecideAdvance(st)); len(ch) != 0 {
		t.Fatal("an ended sweep decided more")
	}
}

// A grid ends when its points run out, before max_trials.
func TestGridRunsOut(t *testing.T) {
	st := created(t, func(in *sweeps.CreateInput) {
		in.Algorithm, in.MaxTrials, in.Parallelism = "grid", 10, 5
		in.Space = map[string]events.SweepParam{"depth": {Type: "int", Low: ptr(1), High: ptr(3)}}
	})
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	if len(st.Trials) != 3 {
		t.Fatalf("a 3-point grid: %d trials", len(st.Trials))
	}
	seen := map[string]bool{}
	for n := 1; n <= 3; n++ {
		seen[st.Trial(n).Params["depth"]] = true
		st = end(t, st, n, events.JobSucceeded, ptr(float64(n)))
	}
	if len(seen) != 3 {
		t.Fatalf("grid points repeated: %v", seen)
	}
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	if st.State != events.SweepCompleted {
		t.Fatalf("grid exhausted: %s", st.State)
	}
}

// Reports are kept once per step; the median rule stops a trial clearly
// worse than the others at the same step, and its end is "pruned".
func TestReportPrunesAndTheTrialEndsPruned(t *testing.T) {
	st := created(t, func(in *sweeps.CreateInput) {
		in.MaxTrials, in.Parallelism = 3, 3
		in.EarlyStopping = &events.SweepEarlyStopping{Rule: "median", MinTrials: 2}
	})
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	for n := 1; n <= 3; n++ {
		st = fold(t, st, must(t)(sweeps.DecideDispatched(st, n, "job", "run")))
	}
	good := []tuning.Report{{Step: 1, Value: 1}, {Step: 2, Value: 0.5}, {Step: 3, Value: 0.2}}
	for n := 1; n <= 2; n++ {
		st = fold(t, st, must(t)(sweeps.DecideReport(st, n, good)))
		st = fold(t, st, must(t)(sweeps.DecideTrialEnd(st, sweeps.JobEnd{Trial: n, JobID: "job", RunID: "run", JobState: events.JobSucceeded, Objective: ptr(0.2)})))
	}
	ch := must(t)(sweeps.DecideReport(st, 3, []tuning.Report{{Step: 1, Value: 9}, {Step: 1, Value: 8}}))
	if len(ch) != 2 || ch[1].Type != events.SweepTrialPruned {
		t.Fatalf("a trial at 9 where others are at 1: %d changes %v", len(ch), ch)
	}
	st = fold(t, st, ch)
	if ch := must(t)(sweeps.DecideReport(st, 3, []tuning.Report{{Step: 2, Value: 9}})); len(ch) != 0 {
		t.Fatal("a stopped trial took a report")
	}
	st = fold(t, st, must(t)(sweeps.DecideTrialEnd(st, sweeps.JobEnd{Trial: 3, JobID: "job", RunID: "run", JobState: events.JobCancelled, Reason: events.ReasonEarlyStopped})))
	if tr := st.Trial(3); tr.State != events.TrialPruned || tr.Objective == nil || *tr.Objective != 9 {
		t.Fatalf("pruned trial: %+v", tr)
	}
	if ch := must(t)(sweeps.DecideTrialEnd(st, sweeps.JobEnd{Trial: 3, JobState: events.JobCancelled})); len(ch) != 0 {
		t.Fatal("a trial's end was recorded twice")
	}
}

// A stop is recorded once, refused on an ended sweep, and the sweep ends
// stopped when its active trials have ended.
func TestStop(t *testing.T) {
	st := created(t, nil)
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	st = fold(t, st, must(t)(sweeps.DecideStop(st, "enough")))
	if ch := must(t)(sweeps.DecideStop(st, "again")); len(ch) != 0 {
		t.Fatal("a second stop changed something")
	}
	if ch := must(t)(sweeps.DecideAdvance(st)); len(ch) != 0 {
		t.Fatal("a stopping sweep with active trials suggested or ended")
	}
	st = fold(t, st, must(t)(sweeps.DecideAbandon(st, 1, "the sweep stopped before it started")))
	st = end(t, st, 2, events.JobCancelled, nil)
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	if st.State != events.SweepStopped || st.Trial(1).State != events.TrialCancelled {
		t.Fatalf("after stop: %s, trial 1 %s", st.State, st.Trial(1).State)
	}
	if _, err := sweeps.DecideStop(st, "late"); err == nil {
		t.Fatal("stopping an ended sweep was accepted")
	}
}

// A Bayesian sweep run one trial at a time suggests the same params again
// with the same seed (its history is the same), and other params with
// another seed.
func TestBayesianSweepIsReproducible(t *testing.T) {
	run := func(seed uint64) []string {
		in := input()
		in.Algorithm, in.MaxTrials, in.Parallelism = "bayesian", 15, 1
		d, err := sweeps.Check(in)
		if err != nil {
			t.Fatal(err)
		}
		d.SweepID, d.ProjectID, d.Seed = "s1", "p1", seed
		st := fold(t, sweeps.State{}, must(t)(sweeps.DecideCreate(sweeps.State{}, d)))
		var seen []string
		for n := 1; n <= 15; n++ {
			st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
			tr := st.Trial(n)
			if tr == nil {
				t.Fatalf("trial %d not suggested", n)
			}
			lr, err := strconv.ParseFloat(tr.Params["lr"], 64)
			if err != nil {
				t.Fatal(err)
			}
			seen = append(seen, tr.Params["lr"]+"/"+tr.Params["depth"])
			st = end(t, st, n, events.JobSucceeded, ptr(math.Pow(math.Log10(lr)+2, 2)))
		}
		return seen
	}
	a, b, c := run(5), run(5), run(6)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 5 twice:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Fatal("seeds 5 and 6 suggested the same params")
	}
}

// A job that succeeded before its early stop reached it completed: its
// objective counts (reviewer's finding).
func TestSucceededJobIsNotPruned(t *testing.T) {
	st := created(t, func(in *sweeps.CreateInput) {
		in.MaxTrials, in.Parallelism = 3, 3
		in.EarlyStopping = &events.SweepEarlyStopping{Rule: "median", MinTrials: 2}
	})
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	for n := 1; n <= 3; n++ {
		st = fold(t, st, must(t)(sweeps.DecideDispatched(st, n, "job", "run")))
	}
	good := []tuning.Report{{Step: 1, Value: 1}, {Step: 2, Value: 0.5}, {Step: 3, Value: 0.2}}
	for n := 1; n <= 2; n++ {
		st = fold(t, st, must(t)(sweeps.DecideReport(st, n, good)))
		st = fold(t, st, must(t)(sweeps.DecideTrialEnd(st, sweeps.JobEnd{Trial: n, JobID: "job", RunID: "run", JobState: events.JobSucceeded, Objective: ptr(0.2)})))
	}
	st = fold(t, st, must(t)(sweeps.DecideReport(st, 3, []tuning.Report{{Step: 1, Value: 1}, {Step: 2, Value: 0.5}, {Step: 3, Value: 0.3}})))
	if !st.Trial(3).Pruned {
		t.Fatal("setup: trial 3 not pruned")
	}
	st = fold(t, st, must(t)(sweeps.DecideTrialEnd(st, sweeps.JobEnd{Trial: 3, JobID: "job", RunID: "run", JobState: events.JobSucceeded, Objective: ptr(0.01)})))
	if tr := st.Trial(3); tr.State != events.TrialCompleted || *tr.Objective != 0.01 {
		t.Fatalf("trial 3's job succeeded with 0.01, the trial ended %s with %v", tr.State, *tr.Objective)
	}
	if best, ok := st.Best(); !ok || best.Number != 3 {
		t.Fatalf("best trial %d, want 3", best.Number)
	}
}

// A sweep records only the values its rule looks at (ASHA: the first at or
// past each rung; none without a rule), at most MaxReports per trial, and a
// trial's end records the values the metrics reaction had not.
func TestReportsAreBounded(t *testing.T) {
	series := func(n int) []tuning.Report {
		out := make([]tuning.Report, n)
		for i := range out {
			out[i] = tuning.Report{Step: int64(i + 1), Value: 1 / float64(i+1)}
		}
		return out
	}
	st := created(t, func(in *sweeps.CreateInput) {
		in.EarlyStopping = &events.SweepEarlyStopping{Rule: "asha", MinResource: 1, ReductionFactor: 3}
	})
	st = fold(t, st, must(t)(sweeps.DecideAdvance(st)))
	st = fold(t, st, must(t)(sweeps.DecideDispatched(st, 1, "job", "run")))
	st = fold(t, st, must(t)(sweeps.DecideReport(st, 1, series(100))))
	var steps []int64
	for _, r := range st.Trial(1).Reports {
		steps = append(steps, r.Step)
	}
	if !slices.Equal(steps, []int64{1, 3, 9, 27, 81}) {
		t.Fatalf("ASHA (rungs 1, 3, 9, 27, 81) recorded steps %v", steps)
	}

	none := created(t, nil)
	none = fold(t, none, must(t)(sweeps.DecideAdvance(none)))
	none = fold(t, none, must(t)(sweeps.DecideDispatched(none, 1, "job", "run")))
	if ch := must(t)(sweeps.DecideReport(none, 1, series(10))); len(ch) != 0 {
		t.Fatalf("a sweep without early stopping recorded %d reports", len(ch))
	}

	median := created(t, func(in *sweeps.CreateInput) { in.EarlyStopping = &events.SweepEarlyStopping{Rule: "median"} })
	median = fold(t, median, must(t)(sweeps.DecideAdvance(median)))
	median = fold(t, median, must(t)(sweeps.DecideDispatched(median, 1, "job", "run")))
	median = fold(t, median, must(t)(sweeps.DecideReport(median, 1, series(10))))
	median = fold(t, median, must(t)(sweeps.DecideTrialEnd(median, sweeps.JobEnd{Trial: 1, JobID: "job", RunID: "run",
		JobState: events.JobSucceeded, Objective: ptr(0.0005), Reports: series(sweeps.MaxReports + 500)})))
	if got := len(median.Trial(1).Reports); got != sweeps.MaxReports {
		t.Fatalf("%d reports recorded, at most %d", got, sweeps.MaxReports)
	}
}
