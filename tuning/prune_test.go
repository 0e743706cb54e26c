package tuning

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// curve is a trial whose reports are value at steps 1..len(values).
func curve(number int, state string, values ...float64) Trial {
	t := Trial{Number: number, State: state}
	for i, v := range values {
		t.Reports = append(t.Reports, Report{Step: int64(i + 1), Value: v})
	}
	if state == StateCompleted && len(values) > 0 {
		v := values[len(values)-1]
		t.Value = &v
	}
	return t
}

// completedFlat is n completed trials reporting the same value at steps 1..steps.
func completedFlat(n, steps int, values ...float64) []Trial {
	var out []Trial
	for i := range n {
		vs := make([]float64, steps)
		for j := range vs {
			vs[j] = values[i%len(values)]
		}
		out = append(out, curve(100+i, StateCompleted, vs...))
	}
	return out
}

func TestPruneMedian(t *testing.T) {
	t.Parallel()
	five := completedFlat(5, 10, 1, 2, 3, 4, 5) // median 3 at every step
	cases := []struct {
		name      string
		p         Pruner
		direction string
		t         Trial
		others    []Trial
		stop      bool
		reason    string
	}{
		{"worse than the median", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, 9, 8, 7), five, true,
			"best value 7 by step 3 is worse than the median 3 of 5 completed trials at that step"},
		{"better than the median", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, 9, 8, 2.5), five, false, ""},
		{"equal to the median continues", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, 3), five, false, ""},
		{"its best so far counts", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, 1, 9, 9), five, false, ""},
		{"maximize worse", Pruner{Rule: Median}, Maximize, curve(1, StateRunning, 2, 2), five, true, "worse than the median 3"},
		{"maximize better", Pruner{Rule: Median}, Maximize, curve(1, StateRunning, 4), five, false, ""},
		{"too few completed trials (default 5)", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, 9), five[:4], false, ""},
		{"min trials 2", Pruner{Rule: Median, MinTrials: 2}, Minimize, curve(1, StateRunning, 9), five[:2], true, "median 1.5 of 2"},
		{"min trials 6", Pruner{Rule: Median, MinTrials: 6}, Minimize, curve(1, StateRunning, 9), five, false, ""},
		{"running and pruned trials do not count", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, 9),
			append(five[:4:4], curve(7, StateRunning, 1), curve(8, StatePruned, 1), curve(9, StateFailed, 1), curve(10, StateCancelled, 1)), false, ""},
		{"warmup", Pruner{Rule: Median, WarmupSteps: 4}, Minimize, curve(1, StateRunning, 9, 9, 9), five, false, ""},
		{"past warmup", Pruner{Rule: Median, WarmupSteps: 4}, Minimize, curve(1, StateRunning, 9, 9, 9, 9), five, true, "step 4"},
		{"no completed trial reached the step", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9), five, false, ""},
		{"itself among the others is ignored", Pruner{Rule: Median, MinTrials: 1}, Minimize, curve(1, StateRunning, 9), []Trial{curve(1, StateCompleted, 9)}, false, ""},
		{"NaN reports", Pruner{Rule: Median}, Minimize, curve(1, StateRunning, math.NaN()), five, true, "NaN"},
		{"no reports", Pruner{Rule: Median}, Minimize, Trial{Number: 1, State: StateRunning}, five, false, ""},
		{"unknown rule", Pruner{Rule: "x"}, Minimize, curve(1, StateRunning, 9), five, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stop, reason := Prune(tc.p, tc.direction, tc.t, tc.others)
			if stop != tc.stop || !strings.Contains(reason, tc.reason) || (!stop && reason != "") {
				t.Errorf("Prune = %v %q, want %v %q", stop, reason, tc.stop, tc.reason)
			}
		})
	}
}

func TestPruneMedianSparseSteps(t *testing.T) {
	t.Parallel()
	// Others reported every 10 steps; t's report at step 20 meets theirs,
	// at step 25 it meets none.
	var others []Trial
	for i := range 5 {
		o := Trial{Number: 10 + i, State: StateCompleted}
		for s := int64(10); s <= 50; s += 10 {
			o.Reports = append(o.Reports, Report{Step: s, Value: float64(i)})
		}
		others = append(others, o)
	}
	tr := Trial{Number: 1, State: StateRunning, Reports: []Report{{Step: 20, Value: 9}}}
	if stop, _ := Prune(Pruner{Rule: Median}, Minimize, tr, others); !stop {
		t.Error("step 20: not stopped")
	}
	tr.Reports = []Report{{Step: 25, Value: 9}}
	if stop, _ := Prune(Pruner{Rule: Median}, Minimize, tr, others); stop {
		t.Error("step 25: stopped though no other trial reported that step")
	}
}

func TestPruneASHA(t *testing.T) {
	t.Parallel()
	asha := Pruner{Rule: ASHA} // rungs at steps 1, 3, 9, 27
	// Six other trials reached rung 1 (step 3) with values 1..6.
	var six []Trial
	for i := range 6 {
		v := float64(i + 1)
		six = append(six, curve(10+i, StateCompleted, v, v, v, v))
	}
	cases := []struct {
		name      string
		p         Pruner
		direction string
		t         Trial
		others    []Trial
		stop      bool
		reason    string
	}{
		{"first trial at a rung continues", asha, Minimize, curve(1, StateRunning, 100), nil, false, ""},
		{"second trial, worse, before eta reached the rung", asha, Minimize, curve(2, StateRunning, 5), []Trial{curve(1, StateRunning, 4)}, true,
			"value 5 at step 1 is not the best of the 2 trials that reached rung 0 (step 1) so far"},
		{"second trial, better", asha, Minimize, curve(2, StateRunning, 3), []Trial{curve(1, StateRunning, 4)}, false, ""},
		{"second trial, tie", asha, Minimize, curve(2, StateRunning, 4), []Trial{curve(1, StateRunning, 4)}, false, ""},
		// 7 values at rung 1 (six + t): the top 7/3 = 2 continue.
		{"rung 1, in the top 2", asha, Minimize, curve(1, StateRunning, 0, 0, 1.5), six, false, ""},
		{"rung 1, third", asha, Minimize, curve(1, StateRunning, 0, 0, 2.5), six, true,
			"value 2.5 at step 3 is not in the top 2 of the 7 trials that reached rung 1 (step 3)"},
		{"between rungs nothing is judged", asha, Minimize, curve(1, StateRunning, 0, 0, 1.5, 100), six, false, ""},
		{"maximize, in the top 2", asha, Maximize, curve(1, StateRunning, 9, 9, 5.5), six, false, ""},
		{"maximize, third", asha, Maximize, curve(1, StateRunning, 9, 9, 4.5), six, true, "top 2 of the 7"},
		// Reduction factor 2: rungs at steps 1, 2, 4; the top 7/2 = 3 continue.
		{"reduction factor 2: third of 7", Pruner{Rule: ASHA, ReductionFactor: 2}, Minimize, curve(1, StateRunning, 0, 0, 9, 3), six, false, ""},
		{"reduction factor 2: fourth of 7", Pruner{Rule: ASHA, ReductionFactor: 2}, Minimize, curve(1, StateRunning, 0, 0, 9, 3.5), six, true, "top 3 of the 7 trials that reached rung 2 (step 4)"},
		{"min resource 3: step 1 is no rung", Pruner{Rule: ASHA, MinResource: 3}, Minimize, curve(1, StateRunning, 100), six, false, ""},
		{"min resource 3: step 3 is rung 0", Pruner{Rule: ASHA, MinResource: 3}, Minimize, curve(1, StateRunning, 0, 0, 2.5), six, true, "rung 0 (step 3)"},
		{"NaN at a rung", asha, Minimize, curve(1, StateRunning, math.NaN()), nil, true, "NaN"},
		{"no reports", asha, Minimize, Trial{Number: 1}, six, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stop, reason := Prune(tc.p, tc.direction, tc.t, tc.others)
			if stop != tc.stop || !strings.Contains(reason, tc.reason) || (!stop && reason != "") {
				t.Errorf("Prune = %v %q, want %v %q", stop, reason, tc.stop, tc.reason)
			}
		})
	}
}

func TestPruneASHAJumpOverRungs(t *testing.T) {
	t.Parallel()
	// A report that jumps from step 2 to step 10 crosses rungs 1 (step 3)
	// and 2 (step 9): both are judged with its value at step 10.
	var others []Trial
	for i := range 8 {
		o := Trial{Number: 10 + i, State: StateCompleted}
		for _, s := range []int64{1, 3, 9} {
			o.Reports = append(o.Reports, Report{Step: s, Value: float64(i) + float64(s)})
		}
		others = append(others, o)
	}
	tr := Trial{Number: 1, State: StateRunning, Reports: []Report{{Step: 2, Value: 0}, {Step: 10, Value: 4.5}}}
	// Rung 1 values: 3..10 + 4.5 → top 3 of 9 are 3, 4, 4.5: passes.
	// Rung 2 values: 9..16 + 4.5 → 4.5 is the best: passes.
	if stop, reason := Prune(Pruner{Rule: ASHA}, Minimize, tr, others); stop {
		t.Errorf("stopped: %s", reason)
	}
	tr.Reports[1].Value = 5.5 // rung 1: 3, 4, 5, 5.5 → fourth: stops at rung 1
	if stop, reason := Prune(Pruner{Rule: ASHA}, Minimize, tr, others); !stop || !strings.Contains(reason, "rung 1") {
		t.Errorf("Prune = %v %q, want a stop at rung 1", stop, reason)
	}
}

// learningCurve is a synthetic training run: the objective (a loss)
// decays from start to final with time constant tau, plus small noise.
type learningCurve struct{ start, final, tau float64 }

func (c learningCurve) at(config int, step int64) float64 {
	noise := rand.New(rand.NewPCG(uint64(config), uint64(step))).NormFloat64() * 0.005
	return c.final + (c.start-c.final)*math.Exp(-float64(step)/c.tau) + noise
}

// curveOf derives a config's learning curve from its params: a and b in
// [0, 1] set the final loss (best at a=0.7, b=0.3) and b also how slowly
// it learns (tau from 1 to 4 steps), so early values do not rank configs
// exactly as their final ones do — slow learners look worse early.
func curveOf(params map[string]string) learningCurve {
	a, _ := strconv.ParseFloat(params["a"], 64)
	b, _ := strconv.ParseFloat(params["b"], 64)
	final := 0.1 + (a-0.7)*(a-0.7) + (b-0.3)*(b-0.3)
	return learningCurve{start: 1, final: final, tau: 1 + 3*b}
}

type curveResult struct {
	steps     int64   // reports made, i.e. training steps spent
	best      float64 // the best final value of the trials that completed
	bestTrial int
	stopped   int
}

// runCurves runs configs trials of maxStep steps in batches of 3 that
// advance in lockstep (3 trials in parallel), asking the pruner after
// every report but the last (a trial that reported its last step has
// finished; stopping it saves nothing).
func runCurves(t testing.TB, p *Pruner, configs int, maxStep int64, seed uint64) curveResult {
	t.Helper()
	st := Study{Space: Space{"a": uniform(0, 1), "b": uniform(0, 1)}, Algorithm: Random, Seed: seed}
	trials := make([]Trial, configs)
	curves := make([]learningCurve, configs)
	for i := range trials {
		params, err := Suggest(st, nil, i+1)
		if err != nil {
			t.Fatal(err)
		}
		trials[i] = Trial{Number: i + 1, Params: params, State: StateRunning}
		curves[i] = curveOf(params)
	}
	res := curveResult{best: math.Inf(1)}
	for lo := 0; lo < configs; lo += 3 {
		batch := []int{}
		for i := lo; i < min(lo+3, configs); i++ {
			batch = append(batch, i)
		}
		for step := int64(1); step <= maxStep; step++ {
			for _, i := range batch {
				tr := &trials[i]
				if tr.State != StateRunning {
					continue
				}
				v := curves[i].at(tr.Number, step)
				tr.Reports = append(tr.Reports, Report{Step: step, Value: v})
				res.steps++
				if step == maxStep {
					tr.State, tr.Value = StateCompleted, &v
					if v < res.best {
						res.best, res.bestTrial = v, tr.Number
					}
					continue
				}
				if p == nil {
					continue
				}
				if stop, _ := Prune(*p, Minimize, *tr, trials[:lo+len(batch)]); stop {
					tr.State = StatePruned
					res.stopped++
				}
			}
		}
	}
	return res
}

// TestASHASavesCompute is the early-stopping test: on a synthetic
// learning-curve benchmark (30 configs, 27 steps, 3 trials at a time) ASHA
// spends markedly fewer steps (under 60%) than running every trial to the
// end and still runs the best trial to the end (the same best final
// value), on each of 10 seeds; the median rule is measured alongside.
func TestASHASavesCompute(t *testing.T) {
	t.Parallel()
	const configs, maxStep = 30, 27
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "synthetic learning curves, %d configs × %d steps, 3 in parallel:\n", configs, maxStep)
	fmt.Fprintf(&tbl, "| seed | rule | steps used | of no-stopping | best final value | trials stopped |\n|---|---|---|---|---|---|\n")
	var sumNone, sumASHA, sumMedian int64
	sameBest := 0
	for seed := uint64(1); seed <= 10; seed++ {
		none := runCurves(t, nil, configs, maxStep, seed)
		asha := runCurves(t, &ashaBench, configs, maxStep, seed)
		med := runCurves(t, &Pruner{Rule: Median}, configs, maxStep, seed)
		for _, r := range []struct {
			rule string
			res  curveResult
		}{{"none", none}, {"asha", asha}, {"median", med}} {
			fmt.Fprintf(&tbl, "| %d | %s | %d | %.0f%% | %.4f (trial %d) | %d |\n", seed, r.rule, r.res.steps,
				100*float64(r.res.steps)/float64(none.steps), r.res.best, r.res.bestTrial, r.res.stopped)
		}
		sumNone, sumASHA, sumMedian = sumNone+none.steps, sumASHA+asha.steps, sumMedian+med.steps
		if asha.bestTrial == none.bestTrial {
			sameBest++
		}
		if none.steps != configs*maxStep {
			t.Fatalf("seed %d: no stopping used %d steps, want %d", seed, none.steps, configs*maxStep)
		}
		if float64(asha.steps) >= 0.6*float64(none.steps) {
			t.Errorf("seed %d: ASHA used %d steps, not under 60%% of no stopping's %d", seed, asha.steps, none.steps)
		}
		if asha.best != none.best {
			t.Errorf("seed %d: ASHA's best %g (trial %d) is not no stopping's %g (trial %d)", seed, asha.best, asha.bestTrial, none.best, none.bestTrial)
		}
	}
	fmt.Fprintf(&tbl, "over 10 seeds: ASHA used %.0f%% of no-stopping's steps and kept the same best trial in %d; the median rule used %.0f%%\n",
		100*float64(sumASHA)/float64(sumNone), sameBest, 100*float64(sumMedian)/float64(sumNone))
	t.Log("\n" + tbl.String())
}

// ashaBench rungs at steps 3, 9 and 27 (27 = 3 × 3²: two halvings before
// the end). A first rung at step 1 (MinResource 1) judges a trial on one
// step of training and, on this benchmark, loses the best config in about
// a third of seeds for 20% of the steps; see the closing note.
var ashaBench = Pruner{Rule: ASHA, MinResource: 3}
