package tuning

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// benchmark is a test function for the samplers: a space and the
// objective over its params (minimized).
type benchmark struct {
	name  string
	space Space
	f     func(x map[string]float64) float64
	min   float64
}

func f64(x float64) *float64 { return &x }

func uniform(lo, hi float64) Param { return Param{Type: Uniform, Low: f64(lo), High: f64(hi)} }

// branin is the Branin-Hoo function on [-5, 10] × [0, 15]; its global
// minimum 0.397887 is reached at three points.
var branin = benchmark{
	name:  "branin",
	space: Space{"x1": uniform(-5, 10), "x2": uniform(0, 15)},
	f: func(p map[string]float64) float64 {
		x1, x2 := p["x1"], p["x2"]
		const a, r, s = 1.0, 6.0, 10.0
		b := 5.1 / (4 * math.Pi * math.Pi)
		c := 5 / math.Pi
		t := 1 / (8 * math.Pi)
		d := x2 - b*x1*x1 + c*x1 - r
		return a*d*d + s*(1-t)*math.Cos(x1) + s
	},
	min: 0.397887,
}

// hartmann6 is the six-dimensional Hartmann function on [0, 1]^6, global
// minimum -3.32237.
var hartmann6 = benchmark{
	name: "hartmann6",
	space: Space{
		"x1": uniform(0, 1), "x2": uniform(0, 1), "x3": uniform(0, 1),
		"x4": uniform(0, 1), "x5": uniform(0, 1), "x6": uniform(0, 1),
	},
	f: func(p map[string]float64) float64 {
		alpha := [4]float64{1.0, 1.2, 3.0, 3.2}
		A := [4][6]float64{
			{10, 3, 17, 3.5, 1.7, 8},
			{0.05, 10, 17, 0.1, 8, 14},
			{3, 3.5, 1.7, 10, 17, 8},
			{17, 8, 0.05, 10, 0.1, 14},
		}
		P := [4][6]float64{
			{1312, 1696, 5569, 124, 8283, 5886},
			{2329, 4135, 8307, 3736, 1004, 9991},
			{2348, 1451, 3522, 2883, 3047, 6650},
			{4047, 8828, 8732, 5743, 1091, 381},
		}
		x := [6]float64{p["x1"], p["x2"], p["x3"], p["x4"], p["x5"], p["x6"]}
		sum := 0.0
		for i := range 4 {
			e := 0.0
			for j := range 6 {
				d := x[j] - P[i][j]*1e-4
				e += A[i][j] * d * d
			}
			sum += alpha[i] * math.Exp(-e)
		}
		return -sum
	},
	min: -3.32237,
}

// runSweep runs trials sequentially (each suggestion sees every earlier
// completed trial) and returns the best value after each trial.
func runSweep(t testing.TB, bm benchmark, algorithm string, seed uint64, trials int) []float64 {
	t.Helper()
	st := Study{Space: bm.space, Algorithm: algorithm, Direction: Minimize, Seed: seed}
	var history []Trial
	bests := make([]float64, 0, trials)
	best := math.Inf(1)
	for n := 1; n <= trials; n++ {
		params, err := Suggest(st, history, n)
		if err != nil {
			t.Fatalf("%s %s seed %d trial %d: %v", bm.name, algorithm, seed, n, err)
		}
		x := make(map[string]float64, len(params))
		for k, v := range params {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("param %s=%q: %v", k, v, err)
			}
			x[k] = f
		}
		v := bm.f(x)
		best = math.Min(best, v)
		bests = append(bests, best)
		history = append(history, Trial{Number: n, Params: params, State: StateCompleted, Value: &v})
	}
	return bests
}

// medianBests runs seeds 1..seeds and returns, per trial count, the
// median over seeds of the best value found by then.
func medianBests(t testing.TB, bm benchmark, algorithm string, seeds, trials int) []float64 {
	perTrial := make([][]float64, trials)
	for seed := 1; seed <= seeds; seed++ {
		for i, b := range runSweep(t, bm, algorithm, uint64(seed), trials) {
			perTrial[i] = append(perTrial[i], b)
		}
	}
	out := make([]float64, trials)
	for i := range perTrial {
		out[i] = median(perTrial[i])
	}
	return out
}

// TestBayesianBeatsRandom is the sampler quality test: on Branin
// and Hartmann-6, over 20 seeds, the median best value after 40 sequential
// trials is lower with the Bayesian sampler (TPE) than with random search.
func TestBayesianBeatsRandom(t *testing.T) {
	t.Parallel()
	const seeds, trials = 20, 40
	for _, bm := range []benchmark{branin, hartmann6} {
		t.Run(bm.name, func(t *testing.T) {
			t.Parallel()
			rnd := medianBests(t, bm, Random, seeds, trials)
			tpe := medianBests(t, bm, Bayesian, seeds, trials)
			var tbl strings.Builder
			fmt.Fprintf(&tbl, "%s (global minimum %g), median over %d seeds of the best value found:\n", bm.name, bm.min, seeds)
			fmt.Fprintf(&tbl, "| trials | random median best | bayesian median best |\n|---|---|---|\n")
			for _, n := range []int{10, 20, 30, 40} {
				fmt.Fprintf(&tbl, "| %d | %.4f | %.4f |\n", n, rnd[n-1], tpe[n-1])
			}
			t.Log("\n" + tbl.String())
			if !(tpe[trials-1] < rnd[trials-1]) {
				t.Errorf("%s: bayesian median best after %d trials %g is not below random's %g", bm.name, trials, tpe[trials-1], rnd[trials-1])
			}
			// The first 10 trials are TPE's random start-up: identical.
			if !slices.Equal(rnd[:10], tpe[:10]) {
				t.Errorf("%s: the first 10 trials differ between random and bayesian: %v vs %v", bm.name, rnd[:10], tpe[:10])
			}
		})
	}
}
