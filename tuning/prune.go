package tuning

import (
	"fmt"
	"math"
	"slices"
)

// Early-stopping rules.
const (
	Median = "median"
	ASHA   = "asha"
)

// Defaults of the pruners' zero fields (Optuna's).
const (
	DefaultMinTrials       = 5
	DefaultMinResource     = 1
	DefaultReductionFactor = 3
)

// Pruner is an early-stopping rule. Zero fields take the defaults:
// MinTrials 5, MinResource 1, ReductionFactor 3, WarmupSteps 0.
type Pruner struct {
	Rule            string `json:"rule"`
	WarmupSteps     int64  `json:"warmup_steps,omitempty"`
	MinTrials       int    `json:"min_trials,omitempty"`
	MinResource     int64  `json:"min_resource,omitempty"`
	ReductionFactor int    `json:"reduction_factor,omitempty"`
}

// ValidatePruner checks p; every error is a *FieldError whose Field is
// "early_stopping.<field>". It fills nothing in.
func ValidatePruner(p Pruner) error {
	const f = "early_stopping."
	switch p.Rule {
	case Median:
		if p.MinResource != 0 {
			return fieldErr(f+"min_resource", "belongs to the asha rule, not median")
		}
		if p.ReductionFactor != 0 {
			return fieldErr(f+"reduction_factor", "belongs to the asha rule, not median")
		}
	case ASHA:
		if p.WarmupSteps != 0 {
			return fieldErr(f+"warmup_steps", "belongs to the median rule, not asha")
		}
		if p.MinTrials != 0 {
			return fieldErr(f+"min_trials", "belongs to the median rule, not asha")
		}
	case "":
		return fieldErr(f+"rule", "is required (median or asha)")
	default:
		return fieldErr(f+"rule", "must be median or asha")
	}
	if p.WarmupSteps < 0 || p.WarmupSteps > 1e9 {
		return fieldErr(f+"warmup_steps", "must be between 0 and 1000000000")
	}
	if p.MinTrials < 0 || p.MinTrials > 1000 {
		return fieldErr(f+"min_trials", "must be between 0 and 1000 (0 means %d)", DefaultMinTrials)
	}
	if p.MinResource < 0 || p.MinResource > 1e9 {
		return fieldErr(f+"min_resource", "must be between 0 and 1000000000 (0 means %d)", DefaultMinResource)
	}
	if p.ReductionFactor != 0 && (p.ReductionFactor < 2 || p.ReductionFactor > 100) {
		return fieldErr(f+"reduction_factor", "must be between 2 and 100 (0 means %d)", DefaultReductionFactor)
	}
	return nil
}

// Prune says whether trial t should stop now. t's newest report is the
// last of t.Reports; others are the sweep's other trials (t itself among
// them is ignored). Prune judges only the newest report, so a scheduler
// that learns of several reports at once asks once per report (with
// Reports cut after it). reason is a human sentence when stop is true.
//
// median (Optuna's MedianPruner): from step WarmupSteps on, and once
// MinTrials trials completed, t stops when its best value so far is worse
// than the median of the completed trials' values at the newest step (of
// those that reported that step).
//
// asha (Optuna's SuccessiveHalvingPruner, min_early_stopping_rate 0):
// rung k is at step MinResource × ReductionFactor^k. When t's newest
// report is the first at or past a rung, its value is recorded there and
// t continues only if it is in the top 1/ReductionFactor of the values
// recorded at that rung by every trial that reached it (t included); while
// fewer than ReductionFactor trials reached the rung, only a value that is
// the best there so far continues (Optuna's rule, as it cannot resume a
// paused trial). A trial's value at a rung is its first report at or past
// the rung's step.
func Prune(p Pruner, direction string, t Trial, others []Trial) (stop bool, reason string) {
	if len(t.Reports) == 0 {
		return false, ""
	}
	switch p.Rule {
	case Median:
		return pruneMedian(p, direction, t, others)
	case ASHA:
		return pruneASHA(p, direction, t, others)
	}
	return false, ""
}

// better reports whether a is strictly better than b in direction.
func better(direction string, a, b float64) bool {
	if direction == Maximize {
		return a > b
	}
	return a < b
}

func pruneMedian(p Pruner, direction string, t Trial, others []Trial) (bool, string) {
	last := t.Reports[len(t.Reports)-1]
	if last.Step < p.WarmupSteps {
		return false, ""
	}
	minTrials := p.MinTrials
	if minTrials == 0 {
		minTrials = DefaultMinTrials
	}
	completed := 0
	var atStep []float64
	for _, o := range others {
		if o.Number == t.Number || o.State != StateCompleted {
			continue
		}
		completed++
		if v, ok := valueAt(o.Reports, last.Step); ok && !math.IsNaN(v) {
			atStep = append(atStep, v)
		}
	}
	if completed < minTrials || len(atStep) == 0 {
		return false, ""
	}
	best := math.NaN()
	for _, r := range t.Reports {
		if math.IsNaN(r.Value) {
			continue
		}
		if math.IsNaN(best) || better(direction, r.Value, best) {
			best = r.Value
		}
	}
	if math.IsNaN(best) {
		return true, fmt.Sprintf("every value reported by step %d is NaN", last.Step)
	}
	med := median(atStep)
	if better(direction, med, best) {
		return true, fmt.Sprintf("best value %s by step %d is worse than the median %s of %d completed trials at that step",
			FormatFloat(best), last.Step, FormatFloat(med), len(atStep))
	}
	return false, ""
}

// valueAt is the report at exactly step (the last one if repeated).
func valueAt(rs []Report, step int64) (float64, bool) {
	i, found := slices.BinarySearchFunc(rs, step, func(r Report, s int64) int {
		switch {
		case r.Step < s:
			return -1
		case r.Step > s:
			return 1
		}
		return 0
	})
	if !found {
		return 0, false
	}
	for i+1 < len(rs) && rs[i+1].Step == step {
		i++
	}
	return rs[i].Value, true
}

// firstAtOrPast is the first report at or past step.
func firstAtOrPast(rs []Report, step int64) (float64, bool) {
	for _, r := range rs {
		if r.Step >= step {
			return r.Value, true
		}
	}
	return 0, false
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func pruneASHA(p Pruner, direction string, t Trial, others []Trial) (bool, string) {
	minRes := p.MinResource
	if minRes == 0 {
		minRes = DefaultMinResource
	}
	eta := int64(p.ReductionFactor)
	if eta == 0 {
		eta = DefaultReductionFactor
	}
	last := t.Reports[len(t.Reports)-1]
	prev := int64(math.MinInt64)
	if n := len(t.Reports); n > 1 {
		prev = t.Reports[n-2].Step
	}
	value := last.Value
	for k, rungStep := 0, minRes; rungStep <= last.Step; k++ {
		if rungStep > prev {
			if math.IsNaN(value) {
				return true, fmt.Sprintf("value at step %d is NaN", last.Step)
			}
			competing := []float64{value}
			for _, o := range others {
				if o.Number == t.Number {
					continue
				}
				if v, ok := firstAtOrPast(o.Reports, rungStep); ok && !math.IsNaN(v) {
					competing = append(competing, v)
				}
			}
			if !promotable(direction, value, competing, int(eta)) {
				keep := len(competing) / int(eta)
				if keep < 1 {
					return true, fmt.Sprintf("value %s at step %d is not the best of the %d trials that reached rung %d (step %d) so far",
						FormatFloat(value), last.Step, len(competing), k, rungStep)
				}
				return true, fmt.Sprintf("value %s at step %d is not in the top %d of the %d trials that reached rung %d (step %d)",
					FormatFloat(value), last.Step, keep, len(competing), k, rungStep)
			}
		}
		if rungStep > math.MaxInt64/eta {
			break
		}
		rungStep *= eta
	}
	return false, ""
}

// promotable is Optuna's _is_trial_promotable_to_next_rung.
func promotable(direction string, value float64, competing []float64, eta int) bool {
	idx := len(competing)/eta - 1
	if idx < 0 {
		idx = 0
	}
	s := slices.Clone(competing)
	slices.Sort(s)
	if direction == Maximize {
		return value >= s[len(s)-1-idx]
	}
	return value <= s[idx]
}

// Needs reports whether the rule ever looks at a trial's value at step,
// given the step of its previous recorded value (prev; math.MinInt64 when
// none): ASHA only at the first value at or past each rung, the median rule
// at every step. A sweep records only what its rule needs, so a trial that
// logs its objective at every one of thousands of steps costs its sweep a
// few events under ASHA.
func (p Pruner) Needs(prev, step int64) bool {
	if p.Rule != ASHA {
		return true
	}
	minRes, eta := p.MinResource, int64(p.ReductionFactor)
	if minRes <= 0 {
		minRes = DefaultMinResource
	}
	if eta <= 0 {
		eta = DefaultReductionFactor
	}
	// The first rung after prev: a value at or past it is judged there.
	rung := minRes
	for rung <= prev && rung <= math.MaxInt64/eta {
		rung *= eta
	}
	return step >= rung && rung > prev
}
