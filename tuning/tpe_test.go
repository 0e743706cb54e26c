package tuning

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

func TestTPEGammaAndWeights(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]int{0: 0, 1: 1, 10: 1, 11: 2, 100: 10, 250: 25, 1000: 25} {
		if got := tpeGamma(n); got != want {
			t.Errorf("gamma(%d) = %d, want %d", n, got, want)
		}
	}
	if w := tpeWeights(3); !slices.Equal(w, []float64{1, 1, 1}) {
		t.Errorf("weights(3) = %v", w)
	}
	if w := tpeWeights(26); w[0] != 1.0/26 || w[1] != 1 || w[25] != 1 {
		t.Errorf("weights(26) = %v", w)
	}
	w := tpeWeights(35) // ramp of 10 from 1/35 to 1, then 25 ones
	if math.Abs(w[0]-1.0/35) > 1e-15 || math.Abs(w[9]-1) > 1e-15 || w[10] != 1 || !slices.IsSorted(w) {
		t.Errorf("weights(35) = %v", w)
	}
}

func TestParzenBandwidths(t *testing.T) {
	t.Parallel()
	// Observations 0.2 and 0.5 on [0, 1], prior at 0.5: sorted with the
	// bounds 0, 0.2, 0.5, 0.5(prior), 1. The first kernel measures inward
	// (0.5-0.2), the 0.5 one the larger neighbouring gap (0.3), both above
	// the clip floor 1/min(100, 2+2) = 0.25; the prior has the full width.
	pe := newParzen(uniform(0, 1), []float64{0.2, 0.5})
	if !slices.Equal(pe.mus, []float64{0.2, 0.5, 0.5}) {
		t.Errorf("mus %v", pe.mus)
	}
	want := []float64{0.3, 0.3, 1}
	for i := range want {
		if math.Abs(pe.sigmas[i]-want[i]) > 1e-12 {
			t.Errorf("sigmas %v, want %v", pe.sigmas, want)
			break
		}
	}
	// Crowded observations are clipped up to range/min(100, n+2).
	pe = newParzen(uniform(0, 10), []float64{5, 5.001, 5.002})
	for _, s := range pe.sigmas[:3] {
		if math.Abs(s-2) > 1e-12 {
			t.Errorf("crowded sigmas %v, want 10/5 = 2", pe.sigmas)
			break
		}
	}
	// int params widen the bounds by half a step each side.
	pe = newParzen(intParam(1, 4), []float64{2})
	if pe.lo != 0.5 || pe.hi != 4.5 || pe.sigmas[len(pe.sigmas)-1] != 4 {
		t.Errorf("int bounds [%g, %g], prior sigma %g", pe.lo, pe.hi, pe.sigmas[len(pe.sigmas)-1])
	}
}

// TestParzenNormalized checks each estimator is a probability
// distribution: its density integrates (its masses sum) to 1 over the
// param's range, and its samples stay in range.
func TestParzenNormalized(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		p   Param
		obs []float64
	}{
		{uniform(-3, 7), []float64{-2.9, 0, 0.1, 6.5}},
		{uniform(0, 1), nil},
		{logUniform(1e-4, 1), []float64{math.Log(1e-4), math.Log(0.01), math.Log(0.02)}},
		{intParam(-3, 12), []float64{-3, 0, 0, 5, 12}},
		{intParam(7, 7), []float64{7}},
		{categorical("a", "b", "c", "d"), []float64{0, 0, 3}},
		{categorical("a"), nil},
	}
	for _, tc := range cases {
		pe := newParzen(tc.p, tc.obs)
		scratch := make([]float64, len(pe.logW))
		total := 0.0
		switch tc.p.Type {
		case Categorical:
			for i := range tc.p.Values {
				total += math.Exp(pe.logPDF(float64(i), scratch))
			}
		case Int:
			for x := *tc.p.Low; x <= *tc.p.High; x++ {
				total += math.Exp(pe.logPDF(x, scratch))
			}
		default: // midpoint rule over the internal range
			const n = 200000
			h := (pe.hi - pe.lo) / n
			for i := range n {
				total += math.Exp(pe.logPDF(pe.lo+(float64(i)+0.5)*h, scratch)) * h
			}
		}
		if math.Abs(total-1) > 1e-6 {
			t.Errorf("%+v with %v: total probability %g", tc.p, tc.obs, total)
		}
		for range 1000 {
			x := pe.sample(r)
			if _, ok := ParseValue(tc.p, pe.format(x)); !ok {
				t.Fatalf("%+v: sample %g formats as %q, outside the space", tc.p, x, pe.format(x))
			}
		}
	}
}

// mixed is a benchmark over every param type: the best is lr = 1e-3,
// layers = 6, opt = adam, dropout = 0.2.
var mixed = benchmark{
	name: "mixed",
	space: Space{
		"lr":      logUniform(1e-6, 1),
		"layers":  intParam(1, 12),
		"opt":     categorical("sgd", "adam", "rmsprop", "adagrad", "lamb"),
		"dropout": uniform(0, 0.8),
	},
	min: 0,
}

func init() {
	mixed.f = func(p map[string]float64) float64 {
		d := math.Log10(p["lr"]) + 3
		l := (p["layers"] - 6) / 3
		o := 1.0
		if p["opt"] == 1 { // adam
			o = 0
		}
		return d*d + l*l + o + 4*(p["dropout"]-0.2)*(p["dropout"]-0.2)
	}
}

// TestBayesianBeatsRandomMixed is the quality test over int, log_uniform
// and categorical params (Branin and Hartmann-6 are continuous only).
func TestBayesianBeatsRandomMixed(t *testing.T) {
	t.Parallel()
	run := func(algorithm string) float64 {
		var bests []float64
		for seed := uint64(1); seed <= 20; seed++ {
			st := Study{Space: mixed.space, Algorithm: algorithm, Direction: Minimize, Seed: seed}
			var history []Trial
			best := math.Inf(1)
			for n := 1; n <= 40; n++ {
				params, err := Suggest(st, history, n)
				if err != nil {
					t.Fatal(err)
				}
				x := map[string]float64{}
				for k, v := range params {
					if k == "opt" {
						i, _ := ParseValue(mixed.space[k], v)
						x[k] = i
						continue
					}
					f, err := strconv.ParseFloat(v, 64)
					if err != nil {
						t.Fatal(err)
					}
					x[k] = f
				}
				v := mixed.f(x)
				best = math.Min(best, v)
				history = append(history, Trial{Number: n, Params: params, State: StateCompleted, Value: &v})
			}
			bests = append(bests, best)
		}
		return median(bests)
	}
	rnd, tpe := run(Random), run(Bayesian)
	t.Logf("mixed space, median best after 40 trials over 20 seeds: random %.4f, bayesian %.4f", rnd, tpe)
	if !(tpe < rnd) {
		t.Errorf("bayesian %g is not below random %g", tpe, rnd)
	}
}

// TestBayesianMaximize: on the negated Branin, maximizing, TPE still
// beats random (the direction reaches the split).
func TestBayesianMaximize(t *testing.T) {
	t.Parallel()
	run := func(algorithm string) float64 {
		var bests []float64
		for seed := uint64(1); seed <= 20; seed++ {
			st := Study{Space: branin.space, Algorithm: algorithm, Direction: Maximize, Seed: seed}
			var history []Trial
			best := math.Inf(-1)
			for n := 1; n <= 40; n++ {
				params, err := Suggest(st, history, n)
				if err != nil {
					t.Fatal(err)
				}
				x1, _ := strconv.ParseFloat(params["x1"], 64)
				x2, _ := strconv.ParseFloat(params["x2"], 64)
				v := -branin.f(map[string]float64{"x1": x1, "x2": x2})
				best = math.Max(best, v)
				history = append(history, Trial{Number: n, Params: params, State: StateCompleted, Value: &v})
			}
			bests = append(bests, best)
		}
		return median(bests)
	}
	rnd, tpe := run(Random), run(Bayesian)
	t.Logf("-branin maximized, median best after 40 trials over 20 seeds: random %.4f, bayesian %.4f", rnd, tpe)
	if !(tpe > rnd) {
		t.Errorf("bayesian %g is not above random %g", tpe, rnd)
	}
}
