package platform_test

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/sweeps"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// Sweeps of issue 13 end to end on a real platform: the training fixture
// (runner/testdata/train) runs as each trial's job through the in-process
// runner, logs its loss per epoch through the MLflow REST API, and the
// scheduler (watermill reactions over the sweep, job and metric events)
// keeps three trials running, stops obviously bad ones by the median rule,
// and ends the sweep with its best trial.

// sweepInput is a 12-trial sweep of the fixture over its learning rate:
// rates above 1 diverge and rates under 0.005 barely move in 3 epochs, so a
// sweep of 12 has bad trials for the median rule to stop.
func sweepInput(train, algorithm string, seed uint64) sweeps.CreateInput {
	low, high := 1e-4, 2.5
	return sweeps.CreateInput{Experiment: "lr-sweep", Name: "lr " + algorithm,
		Objective: events.SweepObjective{Metric: "loss", Direction: "minimize"},
		Space:     map[string]events.SweepParam{"lr": {Type: "log_uniform", Low: &low, High: &high}},
		Algorithm: algorithm, MaxTrials: 12, Parallelism: 3, Seed: &seed,
		EarlyStopping: &events.SweepEarlyStopping{Rule: "median", WarmupSteps: 3, MinTrials: 2},
		Trial: sweeps.TrialInput{Command: []string{train}, Params: map[string]string{"epochs": "12", "sleep": "0.05", "explain": "0"},
			Timeout: time.Minute, MaxRetries: 2}}
}

// awaitSweep polls the sweep's events until cond holds.
func awaitSweep(t *testing.T, e *jobEnv, id string, within time.Duration, cond func(sweeps.State) bool) sweeps.State {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := e.P.Sweeps.Load(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweep %s: condition not met within %s; state %s, %d trials: %+v", id, within, st.State, len(st.Trials), st.Trials)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkFinished checks a finished 12-trial sweep: every trial ran once as
// its own job and ended, the pruned ones' jobs were cancelled as
// early_stopped, and the best trial is the completed one with the lowest
// loss.
func checkFinished(t *testing.T, e *jobEnv, st sweeps.State) sweeps.Trial {
	t.Helper()
	if st.State != events.SweepCompleted || len(st.Trials) != 12 {
		t.Fatalf("sweep %s with %d trials, want completed with 12", st.State, len(st.Trials))
	}
	jobsSeen := map[string]bool{}
	pruned, completed := 0, 0
	for _, tr := range st.Trials {
		if tr.JobID == "" || jobsSeen[tr.JobID] {
			t.Fatalf("trial %d: job %q (missing or shared)", tr.Number, tr.JobID)
		}
		jobsSeen[tr.JobID] = true
		j := e.job(t, tr.JobID)
		switch tr.State {
		case events.TrialPruned:
			pruned++
			if j.State != "cancelled" || j.Reason != events.ReasonEarlyStopped {
				t.Errorf("pruned trial %d: job %s %q, want cancelled early_stopped", tr.Number, j.State, j.Reason)
			}
		case events.TrialCompleted:
			completed++
			if j.State != "succeeded" || tr.Objective == nil {
				t.Errorf("completed trial %d: job %s, objective %v", tr.Number, j.State, tr.Objective)
			}
		default:
			t.Errorf("trial %d ended %s (%s); job %s %q", tr.Number, tr.State, tr.Reason, j.State, j.Reason)
		}
	}
	if pruned == 0 {
		t.Errorf("no trial was stopped early; trials: %+v", st.Trials)
	}
	best, ok := st.Best()
	if !ok {
		t.Fatal("no best trial")
	}
	for _, tr := range st.Trials {
		if tr.State == events.TrialCompleted && *tr.Objective < *best.Objective {
			t.Errorf("trial %d (%g) beats the best trial %d (%g)", tr.Number, *tr.Objective, best.Number, *best.Objective)
		}
	}
	t.Logf("%s: %d completed, %d stopped early; best trial %d lr=%s loss=%.4g", st.Spec.Algorithm, completed, pruned,
		best.Number, best.Params["lr"], *best.Objective)
	return best
}

func TestSweepEndToEnd(t *testing.T) {
	train := trainProgram(t)
	for _, algorithm := range []string{"random", "bayesian"} {
		t.Run(algorithm, func(t *testing.T) {
			t.Parallel()
			e := startJobs(t)
			p := authz.Principal{UserID: e.editor}
			st, _, err := e.P.Sweeps.Create(context.Background(), events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: e.editor}},
				p, e.project, sweepInput(train, algorithm, 7))
			if err != nil {
				t.Fatal(err)
			}
			maxActive := 0
			done := awaitSweep(t, e, st.ID(), 3*time.Minute, func(s sweeps.State) bool {
				maxActive = max(maxActive, s.Active())
				return s.Ended()
			})
			if maxActive > 3 {
				t.Errorf("%d trials active at once, parallelism is 3", maxActive)
			}
			best := checkFinished(t, e, done)
			if *best.Objective > 0.1 || math.IsNaN(*best.Objective) {
				t.Errorf("best loss %g: 12 trials of lr in [1e-4, 2.5] find one under 0.1", *best.Objective)
			}
		})
	}
}

// The scheduler continues from the events alone: the platform stops with
// trials running and starts again on the same data; the sweep ends with
// exactly 12 trials, none repeated or lost, and the params of the trials
// suggested before the stop are the ones they ran with.
func TestSweepSurvivesRestart(t *testing.T) {
	train := trainProgram(t)
	e := startJobs(t)
	p := authz.Principal{UserID: e.editor}
	in := sweepInput(train, "random", 11)
	in.Trial.Params["sleep"] = "0.15"
	st, _, err := e.P.Sweeps.Create(context.Background(), events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: e.editor}}, p, e.project, in)
	if err != nil {
		t.Fatal(err)
	}
	mid := awaitSweep(t, e, st.ID(), time.Minute, func(s sweeps.State) bool {
		ended := 0
		for _, tr := range s.Trials {
			if !tr.Active() {
				ended++
			}
		}
		return ended >= 3 && s.Active() > 0
	})
	before := map[int]string{}
	for _, tr := range mid.Trials {
		before[tr.Number] = tr.Params["lr"]
	}
	cfg := e.Config
	e.Stop()
	e.Env = testenv.Start(t, cfg)
	done := awaitSweep(t, e, st.ID(), 3*time.Minute, func(s sweeps.State) bool { return s.Ended() })
	for _, tr := range done.Trials {
		if lr, ok := before[tr.Number]; ok && tr.Params["lr"] != lr {
			t.Errorf("trial %d ran with lr %s after the restart, %s before", tr.Number, tr.Params["lr"], lr)
		}
	}
	if done.State != events.SweepCompleted || len(done.Trials) != 12 {
		t.Fatalf("after the restart: %s with %d trials, want completed with 12", done.State, len(done.Trials))
	}
	for _, tr := range done.Trials {
		if tr.JobID == "" {
			t.Errorf("trial %d has no job", tr.Number)
		}
		if tr.State != events.TrialCompleted && tr.State != events.TrialPruned {
			t.Errorf("trial %d ended %s (%s)", tr.Number, tr.State, tr.Reason)
		}
	}
	// Exactly one job per trial exists: none submitted twice across the
	// restart.
	var list struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	e.Do("GET", e.path("/jobs?max_results=100"), e.token, nil).JSON(t, &list)
	trialJobs := 0
	for _, j := range list.Items {
		if strings.HasPrefix(j.Name, in.Name+" · trial ") {
			trialJobs++
		}
	}
	if trialJobs != 12 {
		t.Errorf("%d jobs of the sweep's trials, want 12", trialJobs)
	}
	// The same seed suggests the same params (random: by trial number).
	again, _, err := e.P.Sweeps.Create(context.Background(), events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: e.editor}}, p, e.project,
		func() sweeps.CreateInput { in.MaxTrials, in.Parallelism = 2, 1; return in }())
	if err != nil {
		t.Fatal(err)
	}
	rerun := awaitSweep(t, e, again.ID(), 2*time.Minute, func(s sweeps.State) bool { return len(s.Trials) == 2 })
	for i, tr := range rerun.Trials {
		if tr.Params["lr"] != done.Trials[i].Params["lr"] {
			t.Errorf("seed 11 trial %d: lr %s, the first sweep had %s", i+1, tr.Params["lr"], done.Trials[i].Params["lr"])
		}
	}
	if _, _, err := e.P.Sweeps.Stop(context.Background(), events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: e.editor}}, p, e.project, again.ID()); err != nil {
		t.Fatal(err)
	}
	stopped := awaitSweep(t, e, again.ID(), time.Minute, func(s sweeps.State) bool { return s.Ended() })
	if stopped.State != events.SweepStopped {
		t.Fatalf("stopped sweep ended %s", stopped.State)
	}
}

// BenchmarkSweepNoopTrials measures the scheduler's own cost: sweeps of 40
// trials that run `true` with parallelism 4 (the runner's slots). It
// reports trials per minute end to end, and from the sweep's event times
// the scheduler's overhead per trial: suggest → dispatched (the job and
// its run created) and a trial's end → the next trial suggested in the
// slot it freed (the reaction to the job's end and to the trial's).
//
//	go test -run '^$' -bench BenchmarkSweepNoopTrials -benchtime 3x ./platform/
func BenchmarkSweepNoopTrials(b *testing.B) {
	const trials, parallelism = 40, 4
	e := startJobsWith(b, nil)
	p := authz.Principal{UserID: e.editor}
	low, high := 0.0, 1.0
	in := sweeps.CreateInput{Experiment: "noop", Name: "noop", Objective: events.SweepObjective{Metric: "loss", Direction: "minimize"},
		Space: map[string]events.SweepParam{"x": {Type: "uniform", Low: &low, High: &high}}, Algorithm: "random",
		MaxTrials: trials, Parallelism: parallelism, Trial: sweeps.TrialInput{Command: []string{"true"}, Timeout: time.Minute}}
	var dispatch, refill []time.Duration
	var elapsed time.Duration
	for b.Loop() {
		start := time.Now()
		st, _, err := e.P.Sweeps.Create(context.Background(), events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: e.editor}}, p, e.project, in)
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			cur, err := e.P.Sweeps.Load(context.Background(), st.ID())
			if err != nil {
				b.Fatal(err)
			}
			if cur.Ended() {
				if len(cur.Trials) != trials {
					b.Fatalf("%d trials, want %d", len(cur.Trials), trials)
				}
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("sweep not done in 5 minutes: %d trials, %d active", len(cur.Trials), cur.Active())
			}
			time.Sleep(20 * time.Millisecond)
		}
		elapsed += time.Since(start)
		evs, _, err := e.P.Store.Load(context.Background(), events.Subject(events.AggSweep, st.ID()), 0)
		if err != nil {
			b.Fatal(err)
		}
		suggested, ends := map[int]time.Time{}, []time.Time{}
		for _, ev := range evs {
			var d struct {
				Trial int `json:"trial"`
			}
			_ = ev.Decode(&d)
			switch ev.Type {
			case events.SweepTrialSuggested:
				suggested[d.Trial] = ev.Time
				// Trial n > parallelism takes the slot of the k-th end.
				if k := d.Trial - parallelism; k >= 1 && k <= len(ends) {
					refill = append(refill, ev.Time.Sub(ends[k-1]))
				}
			case events.SweepTrialDispatched:
				dispatch = append(dispatch, ev.Time.Sub(suggested[d.Trial]))
			case events.SweepTrialEnded:
				ends = append(ends, ev.Time)
			}
		}
	}
	b.ReportMetric(float64(trials*b.N)/elapsed.Minutes(), "trials/min")
	b.ReportMetric(float64(median(dispatch).Microseconds())/1000, "ms-suggest-to-dispatched-p50")
	b.ReportMetric(float64(median(refill).Microseconds())/1000, "ms-end-to-next-suggest-p50")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// A sweep that can no longer submit its trials (its experiment deleted)
// stops with the reason instead of retrying for ever: the refused trial
// ends failed, the running one is cancelled.
func TestSweepStopsWhenItsTrialsAreRefused(t *testing.T) {
	train := trainProgram(t)
	e := startJobs(t)
	p := authz.Principal{UserID: e.editor}
	in := sweepInput(train, "random", 3)
	in.EarlyStopping, in.Parallelism, in.MaxTrials = nil, 1, 3
	in.Trial.Params["sleep"] = "0.3"
	st, _, err := e.P.Sweeps.Create(context.Background(), events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: e.editor}}, p, e.project, in)
	if err != nil {
		t.Fatal(err)
	}
	awaitSweep(t, e, st.ID(), time.Minute, func(s sweeps.State) bool { return len(s.Trials) == 1 && s.Trials[0].JobID != "" })
	if r := e.Do("DELETE", e.path("/experiments/"+st.Spec.ExperimentID), e.token, nil); r.Status != 204 {
		t.Fatalf("delete the experiment: %d %s", r.Status, r.Body)
	}
	done := awaitSweep(t, e, st.ID(), 2*time.Minute, func(s sweeps.State) bool { return s.Ended() })
	if done.State != events.SweepStopped || !strings.Contains(done.StopReason, "trial not submitted") {
		t.Fatalf("sweep %s (%q), want stopped because a trial was refused", done.State, done.StopReason)
	}
	for _, tr := range done.Trials[1:] {
		if tr.State != events.TrialFailed || tr.JobID != "" {
			t.Errorf("refused trial %d: %s job %q", tr.Number, tr.State, tr.JobID)
		}
	}
}
