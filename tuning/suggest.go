package tuning

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
)

// Trial states as the sampler and pruner see them.
const (
	StateRunning   = "running"
	StateCompleted = "completed"
	StatePruned    = "pruned"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Report is an intermediate objective value at a step.
type Report struct {
	Step  int64   `json:"step"`
	Value float64 `json:"value"`
}

// Trial is one trial as the sampler and pruner see it.
type Trial struct {
	Number  int               // from 1
	Params  map[string]string // formatted as the job gets them (see Suggest)
	State   string            // running, completed, pruned, failed, cancelled
	Value   *float64          // final objective (completed trials; pruned: nil or the last report)
	Reports []Report          // intermediate values, ascending step
}

// Study is what a sampler needs besides the history.
type Study struct {
	Space     Space
	Algorithm string
	Direction string
	Seed      uint64
	// Startup is how many finished trials the Bayesian sampler waits for
	// (suggesting at random meanwhile) before it models the history
	// (0: Optuna's 10).
	Startup int
}

// ErrExhausted says a grid has no point number N: every point was tried.
var ErrExhausted = errors.New("tuning: the grid is exhausted")

// Suggest returns trial number's params (number counts from 1), a pure
// deterministic function of (st, history, number):
//
//   - grid: the number-th point of the grid, params in name order, each
//     axis in its declared order (int ranges ascending, categorical values
//     as listed), the last name varying fastest; ErrExhausted past the end.
//   - random: depends only on (Seed, number), never on the history.
//   - bayesian: TPE over the completed (and pruned) trials in history;
//     until 10 such trials exist it returns exactly what random would.
//
// Params are formatted as the job gets them: floats by
// strconv.FormatFloat(x, 'g', -1, 64), ints as integers, categoricals as
// the value. An invalid space (see ValidateSpace) is an error wrapping its
// *FieldError; bayesian also needs a direction.
func Suggest(st Study, history []Trial, number int) (map[string]string, error) {
	if number < 1 {
		return nil, fmt.Errorf("tuning: trial number %d, want 1 or more", number)
	}
	// A stored sweep's space was validated when it was created; checking
	// again (microseconds) turns a corrupt one into an error, not a panic.
	if err := ValidateSpace(st.Space, st.Algorithm); err != nil {
		return nil, fmt.Errorf("tuning: %w", err)
	}
	switch st.Algorithm {
	case Grid:
		return gridPoint(st.Space, number)
	case Random:
		return randomPoint(st.Space, st.Seed, number), nil
	case Bayesian:
		if st.Direction != Minimize && st.Direction != Maximize {
			return nil, fmt.Errorf("tuning: direction %q, want minimize or maximize", st.Direction)
		}
		return suggestTPE(st, history, number)
	default:
		return nil, fmt.Errorf("tuning: unknown algorithm %q", st.Algorithm)
	}
}

// gridPoint decodes number-1 as a mixed-radix index over the axes.
func gridPoint(s Space, number int) (map[string]string, error) {
	size := GridSize(s)
	if number > size {
		return nil, ErrExhausted
	}
	names := s.names()
	out := make(map[string]string, len(names))
	idx := number - 1
	for i := len(names) - 1; i >= 0; i-- {
		p := s[names[i]]
		k := axisSize(p)
		j := idx % k
		idx /= k
		switch p.Type {
		case Categorical:
			out[names[i]] = p.Values[j]
		case Int:
			out[names[i]] = FormatInt(int64(*p.Low) + int64(j))
		default:
			return nil, fmt.Errorf("tuning: %s is %s, which has no grid", names[i], p.Type)
		}
	}
	return out, nil
}

// rng is the generator of one suggestion: a PCG seeded from the sweep's
// seed and the trial number (and a stream tag, so the TPE's draws are not
// the random sampler's).
func rng(seed uint64, number int, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed^stream, uint64(number)*0x9e3779b97f4a7c15+stream))
}

const (
	streamRandom uint64 = 0
	streamTPE    uint64 = 0x7470655f73747265 // "tpe_stre"
)

func randomPoint(s Space, seed uint64, number int) map[string]string {
	r := rng(seed, number, streamRandom)
	out := make(map[string]string, len(s))
	for _, name := range s.names() {
		out[name] = sampleUniform(s[name], r)
	}
	return out
}

// sampleUniform draws one value of p uniformly (log-uniformly for
// log_uniform), formatted.
func sampleUniform(p Param, r *rand.Rand) string {
	switch p.Type {
	case Categorical:
		return p.Values[r.IntN(len(p.Values))]
	case Int:
		lo, hi := int64(*p.Low), int64(*p.High)
		return FormatInt(lo + r.Int64N(hi-lo+1))
	case LogUniform:
		llo, lhi := math.Log(*p.Low), math.Log(*p.High)
		return FormatFloat(clamp(math.Exp(lerp(llo, lhi, r.Float64())), *p.Low, *p.High))
	default:
		return FormatFloat(clamp(lerp(*p.Low, *p.High, r.Float64()), *p.Low, *p.High))
	}
}

// lerp interpolates without overflowing when hi - lo is huge.
func lerp(lo, hi, u float64) float64 { return (1-u)*lo + u*hi }

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

// ParseValue reads a formatted param value back into the sampler's
// number for p: the float for ranges, the value's index for categorical.
// ok is false when v is not a value of p.
func ParseValue(p Param, v string) (x float64, ok bool) {
	switch p.Type {
	case Categorical:
		for i, c := range p.Values {
			if c == v {
				return float64(i), true
			}
		}
		return 0, false
	case Int:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || p.Low == nil || p.High == nil || float64(n) < *p.Low || float64(n) > *p.High {
			return 0, false
		}
		return float64(n), true
	case Uniform, LogUniform:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || p.Low == nil || p.High == nil || !(f >= *p.Low && f <= *p.High) {
			return 0, false
		}
		return f, true
	}
	return 0, false
}
