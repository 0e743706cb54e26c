package tuning

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/floats"
)

// Optuna's TPESampler defaults.
const (
	tpeStartupTrials = 10
	tpeEICandidates  = 24
	tpePriorWeight   = 1.0
)

// tpeGamma is how many of n trials form the "good" group l(x).
func tpeGamma(n int) int {
	return min(int(math.Ceil(0.1*float64(n))), 25)
}

// tpeWeights are the observations' weights in trial-number order: the 25
// newest weigh 1, older ones ramp linearly from 1/n up to 1.
func tpeWeights(n int) []float64 {
	w := make([]float64, n)
	ramp := n - 25
	for i := range w {
		if i < ramp {
			if ramp == 1 {
				w[i] = 1 / float64(n)
			} else {
				w[i] = 1/float64(n) + (1-1/float64(n))*float64(i)/float64(ramp-1)
			}
		} else {
			w[i] = 1
		}
	}
	return w
}

// scored is a finished trial the TPE learns from.
type scored struct {
	number int
	params map[string]string
	// rank orders trials best first: completed by value, then pruned by
	// how far they got and their last value (Optuna's order).
	completed bool
	value     float64 // completed: the objective, sign-flipped so lower is better
	step      int64   // pruned: the last reported step (MinInt64 for none)
}

// tpeHistory picks the trials TPE learns from: completed ones with a
// finite objective and pruned ones.
func tpeHistory(direction string, history []Trial) []scored {
	sign := 1.0
	if direction == Maximize {
		sign = -1
	}
	var out []scored
	for _, t := range history {
		switch t.State {
		case StateCompleted:
			if t.Value == nil || math.IsNaN(*t.Value) {
				continue
			}
			out = append(out, scored{number: t.Number, params: t.Params, completed: true, value: sign * *t.Value})
		case StatePruned:
			s := scored{number: t.Number, params: t.Params, step: math.MinInt64, value: math.Inf(1)}
			if n := len(t.Reports); n > 0 {
				s.step = t.Reports[n-1].Step
				if v := t.Reports[n-1].Value; !math.IsNaN(v) {
					s.value = sign * v
				}
			} else if t.Value != nil && !math.IsNaN(*t.Value) {
				s.value = sign * *t.Value
			}
			out = append(out, s)
		}
	}
	return out
}

// splitTrials is Optuna's _split_trials: the best gamma(n) trials
// (completed by value, then pruned by step reached and last value) are
// "below", the rest "above"; each group in trial-number order.
func splitTrials(trials []scored) (below, above []scored) {
	s := slices.Clone(trials)
	slices.SortStableFunc(s, func(a, b scored) int {
		if a.completed != b.completed {
			if a.completed {
				return -1
			}
			return 1
		}
		if !a.completed && a.step != b.step {
			return cmp.Compare(b.step, a.step) // further first
		}
		if c := cmp.Compare(a.value, b.value); c != 0 {
			return c
		}
		return cmp.Compare(a.number, b.number)
	})
	n := tpeGamma(len(s))
	below, above = s[:n], s[n:]
	byNumber := func(a, b scored) int { return cmp.Compare(a.number, b.number) }
	slices.SortFunc(below, byNumber)
	slices.SortFunc(above, byNumber)
	return below, above
}

func suggestTPE(st Study, history []Trial, number int) (map[string]string, error) {
	trials := tpeHistory(st.Direction, history)
	startup := st.Startup
	if startup <= 0 {
		startup = tpeStartupTrials
	}
	if len(trials) < startup {
		return randomPoint(st.Space, st.Seed, number), nil
	}
	below, above := splitTrials(trials)
	r := rng(st.Seed, number, streamTPE)
	out := make(map[string]string, len(st.Space))
	for _, name := range st.Space.names() {
		p := st.Space[name]
		l := newParzen(p, observations(p, name, below))
		g := newParzen(p, observations(p, name, above))
		best, bestScore := 0.0, math.Inf(-1)
		lt, gt := make([]float64, len(l.logW)), make([]float64, len(g.logW))
		for range tpeEICandidates {
			x := l.sample(r)
			score := l.logPDF(x, lt) - g.logPDF(x, gt)
			if score > bestScore || math.IsInf(bestScore, -1) {
				best, bestScore = x, score
			}
		}
		out[name] = l.format(best)
	}
	return out, nil
}

// observations are the group's values of param name in the sampler's
// internal space (log for log_uniform, index for categorical); trials
// without a valid value are left out.
func observations(p Param, name string, group []scored) []float64 {
	var xs []float64
	for _, t := range group {
		v, ok := ParseValue(p, t.params[name])
		if !ok {
			continue
		}
		if p.Type == LogUniform {
			v = math.Log(v)
		}
		xs = append(xs, v)
	}
	return xs
}

// parzen is a one-dimensional Parzen estimator: a weighted mixture of
// Gaussians truncated to the bounds (of the param's log for log_uniform;
// for int params the mass of each integer's unit cell) with a prior
// component, or of categorical kernels.
type parzen struct {
	p        Param
	logW     []float64 // mixture weights, log, normalized
	mus      []float64 // numeric: component means (internal space)
	sigmas   []float64 // numeric: component bandwidths
	logNorm  []float64 // numeric: log(σ) + log(mass inside the bounds), per component
	lo, hi   float64   // numeric: truncation bounds (internal space)
	discrete bool      // int: unit cells around the integers
	cat      [][]float64
}

func newParzen(p Param, obs []float64) *parzen {
	n := len(obs)
	var w []float64
	if n == 0 {
		w = []float64{1}
	} else {
		w = append(tpeWeights(n), tpePriorWeight)
	}
	total := floats.Sum(w)
	pe := &parzen{p: p, logW: make([]float64, len(w))}
	for i, x := range w {
		pe.logW[i] = math.Log(x / total)
	}
	if p.Type == Categorical {
		k := len(p.Values)
		kernels := n + 1 // observations and the prior
		pe.cat = make([][]float64, kernels)
		for i := range pe.cat {
			row := make([]float64, k)
			for j := range row {
				row[j] = tpePriorWeight / float64(kernels)
			}
			if i < n {
				row[int(obs[i])]++
			}
			floats.Scale(1/floats.Sum(row), row)
			pe.cat[i] = row
		}
		return pe
	}
	lo, hi, step := *p.Low, *p.High, 0.0
	switch p.Type {
	case LogUniform:
		lo, hi = math.Log(lo), math.Log(hi)
	case Int:
		step = 1
		pe.discrete = true
	}
	pe.lo, pe.hi = lo-step/2, hi+step/2
	width := hi - lo + step
	prior := 0.5 * (lo + hi)

	// Optuna's univariate bandwidth: the larger gap to a neighbour among
	// the sorted means (the prior's included) and the bounds, the outer
	// ones measured inward only, clipped to [width/min(100, n+2), width].
	withPrior := append(slices.Clone(obs), prior)
	order := make([]int, len(withPrior))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(withPrior[a], withPrior[b]) })
	sorted := make([]float64, 0, len(withPrior)+2)
	sorted = append(sorted, pe.lo)
	for _, i := range order {
		sorted = append(sorted, withPrior[i])
	}
	sorted = append(sorted, pe.hi)
	m := len(withPrior)
	sig := make([]float64, m)
	for j := range m {
		sig[j] = math.Max(sorted[j+1]-sorted[j], sorted[j+2]-sorted[j+1])
	}
	if len(sorted) >= 4 {
		sig[0] = sorted[2] - sorted[1]
		sig[m-1] = sorted[m] - sorted[m-1]
	}
	minSigma := width / math.Min(100, float64(1+n+1))
	pe.mus = make([]float64, 0, n+1)
	pe.sigmas = make([]float64, 0, n+1)
	bw := make([]float64, m)
	for j, i := range order {
		bw[i] = sig[j]
	}
	for i := range n {
		pe.mus = append(pe.mus, obs[i])
		pe.sigmas = append(pe.sigmas, clamp(bw[i], minSigma, width))
	}
	pe.mus = append(pe.mus, prior)
	pe.sigmas = append(pe.sigmas, width)
	pe.logNorm = make([]float64, len(pe.mus))
	for i, mu := range pe.mus {
		s := pe.sigmas[i]
		pe.logNorm[i] = logNormMass((pe.lo-mu)/s, (pe.hi-mu)/s)
		if !pe.discrete {
			pe.logNorm[i] += math.Log(s) + 0.5*math.Log(2*math.Pi)
		}
	}
	return pe
}

// sample draws one value (internal space) from the mixture.
func (pe *parzen) sample(r *rand.Rand) float64 {
	u := r.Float64()
	c := len(pe.logW) - 1
	acc := 0.0
	for i, lw := range pe.logW {
		acc += math.Exp(lw)
		if u < acc {
			c = i
			break
		}
	}
	if pe.cat != nil {
		u := r.Float64()
		row := pe.cat[c]
		acc := 0.0
		for j, q := range row {
			acc += q
			if u < acc {
				return float64(j)
			}
		}
		return float64(len(row) - 1)
	}
	mu, s := pe.mus[c], pe.sigmas[c]
	a, b := (pe.lo-mu)/s, (pe.hi-mu)/s
	pa, pb := normCDF(a), normCDF(b)
	x := mu + s*normQuantile(pa+r.Float64()*(pb-pa))
	x = clamp(x, pe.lo, pe.hi)
	if pe.discrete {
		x = clamp(math.Round(x), *pe.p.Low, *pe.p.High)
	}
	return x
}

// logPDF is the mixture's log density (log mass for int params) at x;
// terms is scratch space of len(pe.logW).
func (pe *parzen) logPDF(x float64, terms []float64) float64 {
	for i, lw := range pe.logW {
		switch {
		case pe.cat != nil:
			terms[i] = lw + math.Log(pe.cat[i][int(x)])
		case pe.discrete:
			mu, s := pe.mus[i], pe.sigmas[i]
			terms[i] = lw + logNormMass((x-0.5-mu)/s, (x+0.5-mu)/s) - pe.logNorm[i]
		default:
			z := (x - pe.mus[i]) / pe.sigmas[i]
			terms[i] = lw - 0.5*z*z - pe.logNorm[i]
		}
	}
	return floats.LogSumExp(terms)
}

// format turns an internal value into the job's param string.
func (pe *parzen) format(x float64) string {
	switch pe.p.Type {
	case Categorical:
		return pe.p.Values[int(x)]
	case Int:
		return FormatInt(int64(x))
	case LogUniform:
		return FormatFloat(clamp(math.Exp(x), *pe.p.Low, *pe.p.High))
	default:
		return FormatFloat(clamp(x, *pe.p.Low, *pe.p.High))
	}
}

func normCDF(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

func normQuantile(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }

// logNormMass is log(Φ(b) - Φ(a)) for a <= b, computed in the lower tail
// (where Φ keeps its precision) by symmetry.
func logNormMass(a, b float64) float64 {
	if a > 0 {
		a, b = -b, -a
	}
	return math.Log(normCDF(b) - normCDF(a))
}
