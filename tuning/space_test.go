package tuning

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func intParam(lo, hi float64) Param { return Param{Type: Int, Low: f64(lo), High: f64(hi)} }

func logUniform(lo, hi float64) Param { return Param{Type: LogUniform, Low: f64(lo), High: f64(hi)} }

func categorical(vs ...string) Param { return Param{Type: Categorical, Values: vs} }

func TestValidateSpace(t *testing.T) {
	t.Parallel()
	manyParams := Space{}
	for i := range MaxParams + 1 {
		manyParams["p"+strconv.Itoa(i)] = uniform(0, 1)
	}
	var manyValues []string
	for i := range MaxValues + 1 {
		manyValues = append(manyValues, "v"+strconv.Itoa(i))
	}
	cases := []struct {
		name      string
		space     Space
		algorithm string
		field     string // "" = valid
		message   string // a part of the message
	}{
		{"every type", Space{"lr": logUniform(1e-5, 0.1), "dropout": uniform(0, 0.5), "layers": intParam(1, 8), "opt": categorical("adam", "sgd")}, Random, "", ""},
		{"bayesian", Space{"lr": logUniform(1e-5, 0.1)}, Bayesian, "", ""},
		{"grid over int and categorical", Space{"layers": intParam(1, 8), "opt": categorical("adam", "sgd")}, Grid, "", ""},
		{"single-point int", Space{"n": intParam(3, 3)}, Grid, "", ""},
		{"negative uniform", Space{"x": uniform(-10, -1)}, Random, "", ""},
		{"max params", func() Space { s := Space{}; firstParams(manyParams, s, MaxParams); return s }(), Random, "", ""},
		{"name of 64 bytes", Space{"a" + strings.Repeat("b", 63): uniform(0, 1)}, Random, "", ""},
		{"unknown algorithm", Space{"x": uniform(0, 1)}, "annealing", "algorithm", "grid, random, bayesian"},
		{"empty algorithm", Space{"x": uniform(0, 1)}, "", "algorithm", "must be one of"},
		{"empty space", Space{}, Random, "space", "at least one"},
		{"nil space", nil, Random, "space", "at least one"},
		{"too many params", manyParams, Random, "space", "at most 32"},
		{"name starts with digit", Space{"1x": uniform(0, 1)}, Random, "space.1x", "must match"},
		{"name with dash", Space{"learning-rate": uniform(0, 1)}, Random, "space.learning-rate", "must match"},
		{"empty name", Space{"": uniform(0, 1)}, Random, "space.", "must match"},
		{"name of 65 bytes", Space{"a" + strings.Repeat("b", 64): uniform(0, 1)}, Random, "space.a" + strings.Repeat("b", 64), "must match"},
		{"missing type", Space{"x": {Low: f64(0), High: f64(1)}}, Random, "space.x.type", "is required"},
		{"unknown type", Space{"x": {Type: "normal", Low: f64(0), High: f64(1)}}, Random, "space.x.type", "must be one of"},
		{"uniform missing low", Space{"x": {Type: Uniform, High: f64(1)}}, Random, "space.x.low", "is required"},
		{"uniform missing high", Space{"x": {Type: Uniform, Low: f64(1)}}, Random, "space.x.high", "is required"},
		{"uniform empty range", Space{"x": uniform(1, 1)}, Random, "space.x.high", "greater than low"},
		{"uniform reversed", Space{"x": uniform(2, 1)}, Random, "space.x.high", "greater than low"},
		{"uniform NaN low", Space{"x": uniform(math.NaN(), 1)}, Random, "space.x.low", "finite"},
		{"uniform infinite high", Space{"x": uniform(0, math.Inf(1))}, Random, "space.x.high", "finite"},
		{"uniform too wide", Space{"x": uniform(-math.MaxFloat64, math.MaxFloat64)}, Random, "space.x.high", "too wide"},
		{"uniform with values", Space{"x": {Type: Uniform, Low: f64(0), High: f64(1), Values: []string{"a"}}}, Random, "space.x.values", "not allowed"},
		{"log of zero", Space{"lr": logUniform(0, 1)}, Random, "space.lr.low", "must be greater than 0 for log_uniform"},
		{"log of negative", Space{"lr": logUniform(-1, 1)}, Bayesian, "space.lr.low", "greater than 0"},
		{"log empty range", Space{"lr": logUniform(0.1, 0.1)}, Random, "space.lr.high", "greater than low"},
		{"log infinite", Space{"lr": logUniform(0.1, math.Inf(1))}, Random, "space.lr.high", "finite"},
		{"int fractional low", Space{"n": intParam(1.5, 4)}, Random, "space.n.low", "whole number"},
		{"int fractional high", Space{"n": intParam(1, 4.5)}, Random, "space.n.high", "whole number"},
		{"int too large", Space{"n": intParam(0, 2e15)}, Random, "space.n.high", "1e15"},
		{"int too small", Space{"n": intParam(-2e15, 0)}, Random, "space.n.low", "1e15"},
		{"int reversed", Space{"n": intParam(5, 4)}, Random, "space.n.high", "at least low"},
		{"int with values", Space{"n": {Type: Int, Low: f64(0), High: f64(1), Values: []string{}}}, Random, "space.n.values", "not allowed"},
		{"categorical empty", Space{"opt": categorical()}, Random, "space.opt.values", "at least one"},
		{"categorical too many", Space{"opt": categorical(manyValues...)}, Random, "space.opt.values", "at most 100"},
		{"categorical repeated", Space{"opt": categorical("a", "b", "a")}, Random, "space.opt.values[2]", "distinct"},
		{"categorical empty value", Space{"opt": categorical("a", "")}, Random, "space.opt.values[1]", "1 to 250 bytes"},
		{"categorical long value", Space{"opt": categorical(strings.Repeat("x", 251))}, Random, "space.opt.values[0]", "1 to 250 bytes"},
		{"categorical NUL", Space{"opt": categorical("a\x00b")}, Random, "space.opt.values[0]", "NUL"},
		{"categorical bad UTF-8", Space{"opt": categorical("\xff")}, Random, "space.opt.values[0]", "UTF-8"},
		{"categorical with low", Space{"opt": {Type: Categorical, Low: f64(0), Values: []string{"a"}}}, Random, "space.opt.low", "not allowed"},
		{"categorical with high", Space{"opt": {Type: Categorical, High: f64(0), Values: []string{"a"}}}, Random, "space.opt.high", "not allowed"},
		{"grid over uniform", Space{"n": intParam(1, 3), "lr": uniform(0, 1)}, Grid, "space.lr.type", "a continuous range has no grid (lr is uniform)"},
		{"grid over log_uniform", Space{"lr": logUniform(1e-3, 1)}, Grid, "space.lr.type", "a continuous range has no grid"},
		{"grid too large", Space{"a": intParam(1, 1000), "b": intParam(1, 101)}, Grid, "space", "more than 100000"},
		{"grid huge int", Space{"a": intParam(-1e15, 1e15), "b": intParam(-1e15, 1e15)}, Grid, "space", "more than 100000"},
		{"grid at the limit", Space{"a": intParam(1, 1000), "b": intParam(1, 100)}, Grid, "", ""},
		{"first error by name", Space{"b": uniform(1, 0), "a": logUniform(0, 1)}, Random, "space.a.low", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateSpace(tc.space, tc.algorithm)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("ValidateSpace = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("ValidateSpace = %v (%T), want a *FieldError for %s", err, err, tc.field)
			}
			if fe.Field != tc.field {
				t.Errorf("Field = %q, want %q (message %q)", fe.Field, tc.field, fe.Message)
			}
			if !strings.Contains(fe.Message, tc.message) {
				t.Errorf("Message = %q, want it to contain %q", fe.Message, tc.message)
			}
			if err.Error() != fe.Field+": "+fe.Message {
				t.Errorf("Error() = %q", err.Error())
			}
		})
	}
}

// firstParams copies the first n entries of src (in name order) into dst.
func firstParams(src, dst Space, n int) {
	for _, name := range src.names()[:n] {
		dst[name] = src[name]
	}
}

func TestFieldErrorMessage(t *testing.T) {
	t.Parallel()
	err := ValidateSpace(Space{"lr": logUniform(0, 1)}, Bayesian)
	if got, want := err.Error(), "space.lr.low: must be greater than 0 for log_uniform"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestGridSize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		space Space
		want  int
	}{
		{Space{}, 0},
		{Space{"a": intParam(1, 3)}, 3},
		{Space{"a": intParam(-2, 2), "b": categorical("x", "y")}, 10},
		{Space{"a": intParam(5, 5), "b": categorical("x")}, 1},
		{Space{"a": intParam(-1e15, 1e15), "b": intParam(-1e15, 1e15), "c": intParam(-1e15, 1e15)}, math.MaxInt},
	}
	for _, tc := range cases {
		if got := GridSize(tc.space); got != tc.want {
			t.Errorf("GridSize(%v) = %d, want %d", tc.space, got, tc.want)
		}
	}
}

func TestValidatePruner(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		p     Pruner
		field string
	}{
		{"median defaults", Pruner{Rule: Median}, ""},
		{"median set", Pruner{Rule: Median, WarmupSteps: 5, MinTrials: 3}, ""},
		{"median limits", Pruner{Rule: Median, WarmupSteps: 1e9, MinTrials: 1000}, ""},
		{"asha defaults", Pruner{Rule: ASHA}, ""},
		{"asha set", Pruner{Rule: ASHA, MinResource: 2, ReductionFactor: 4}, ""},
		{"asha limits", Pruner{Rule: ASHA, MinResource: 1e9, ReductionFactor: 100}, ""},
		{"asha factor 2", Pruner{Rule: ASHA, ReductionFactor: 2}, ""},
		{"no rule", Pruner{}, "early_stopping.rule"},
		{"unknown rule", Pruner{Rule: "hyperband"}, "early_stopping.rule"},
		{"negative warmup", Pruner{Rule: Median, WarmupSteps: -1}, "early_stopping.warmup_steps"},
		{"huge warmup", Pruner{Rule: Median, WarmupSteps: 1e9 + 1}, "early_stopping.warmup_steps"},
		{"negative min trials", Pruner{Rule: Median, MinTrials: -1}, "early_stopping.min_trials"},
		{"huge min trials", Pruner{Rule: Median, MinTrials: 1001}, "early_stopping.min_trials"},
		{"median with min resource", Pruner{Rule: Median, MinResource: 1}, "early_stopping.min_resource"},
		{"median with reduction factor", Pruner{Rule: Median, ReductionFactor: 3}, "early_stopping.reduction_factor"},
		{"asha with warmup", Pruner{Rule: ASHA, WarmupSteps: 1}, "early_stopping.warmup_steps"},
		{"asha with min trials", Pruner{Rule: ASHA, MinTrials: 1}, "early_stopping.min_trials"},
		{"negative min resource", Pruner{Rule: ASHA, MinResource: -1}, "early_stopping.min_resource"},
		{"huge min resource", Pruner{Rule: ASHA, MinResource: 1e9 + 1}, "early_stopping.min_resource"},
		{"reduction factor 1", Pruner{Rule: ASHA, ReductionFactor: 1}, "early_stopping.reduction_factor"},
		{"negative reduction factor", Pruner{Rule: ASHA, ReductionFactor: -3}, "early_stopping.reduction_factor"},
		{"huge reduction factor", Pruner{Rule: ASHA, ReductionFactor: 101}, "early_stopping.reduction_factor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := ValidatePruner(tc.p)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("ValidatePruner = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("ValidatePruner = %v, want a *FieldError for %s", err, tc.field)
			}
		})
	}
}

// FuzzValidateSpace decodes untrusted JSON into a space: validation never
// panics, and every space it accepts yields params inside the space from
// each sampler (TPE with a history too).
func FuzzValidateSpace(f *testing.F) {
	for _, seed := range []string{
		`{"lr":{"type":"log_uniform","low":1e-5,"high":0.1},"layers":{"type":"int","low":1,"high":8}}`,
		`{"opt":{"type":"categorical","values":["adam","sgd","rmsprop"]}}`,
		`{"x":{"type":"uniform","low":-1e308,"high":1e308}}`,
		`{"x":{"type":"uniform","low":-1.7e308,"high":1.7e308}}`,
		`{"x":{"type":"int","low":-1e15,"high":1e15}}`,
		`{"x":{"type":"int","low":0.5,"high":2}}`,
		`{"x":{"type":"log_uniform","low":5e-324,"high":1.7e308}}`,
		`{"x":{"type":"log_uniform","low":0,"high":1}}`,
		`{"x":{"type":"categorical","values":["a","a"]}}`,
		`{"x":{"type":"categorical","low":1,"values":["a"]}}`,
		`{"x":{"type":"uniform","low":1,"high":1}}`,
		`{"x":{"type":"uniform"}}`,
		`{"":{"type":"int","low":1,"high":2}}`,
		`{"x":{}}`,
		`{}`,
		`null`,
	} {
		for _, alg := range []string{Grid, Random, Bayesian} {
			f.Add(seed, alg)
		}
	}
	f.Fuzz(func(t *testing.T, body, algorithm string) {
		var s Space
		if json.Unmarshal([]byte(body), &s) != nil {
			return
		}
		err := ValidateSpace(s, algorithm)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("ValidateSpace error %v is a %T, not a *FieldError", err, err)
			}
			if fe.Field != "algorithm" && fe.Field != "space" && !strings.HasPrefix(fe.Field, "space.") {
				t.Fatalf("Field %q", fe.Field)
			}
			return
		}
		st := Study{Space: s, Algorithm: algorithm, Direction: Minimize, Seed: 7}
		for n := 1; n <= 3; n++ {
			p, err := Suggest(st, nil, n)
			if errors.Is(err, ErrExhausted) && algorithm == Grid && n > GridSize(s) {
				break
			}
			if err != nil {
				t.Fatalf("Suggest(%s, %d): %v", algorithm, n, err)
			}
			checkInSpace(t, s, p)
		}
		if algorithm == Grid {
			return
		}
		// TPE past its start-up, over a history of 12 trials of this space
		// (one of them pruned), in both directions.
		var history []Trial
		for n := 1; n <= 12; n++ {
			p, err := Suggest(Study{Space: s, Algorithm: Random, Seed: 7}, nil, n)
			if err != nil {
				t.Fatal(err)
			}
			v := float64(n % 5)
			tr := Trial{Number: n, Params: p, State: StateCompleted, Value: &v}
			if n == 4 {
				tr = Trial{Number: n, Params: p, State: StatePruned, Reports: []Report{{Step: 1, Value: 9}}}
			}
			history = append(history, tr)
		}
		for _, dir := range []string{Minimize, Maximize} {
			p, err := Suggest(Study{Space: s, Algorithm: Bayesian, Direction: dir, Seed: 7}, history, 13)
			if err != nil {
				t.Fatal(err)
			}
			checkInSpace(t, s, p)
		}
	})
}

// checkInSpace fails t unless params has exactly the space's names, each
// a valid value.
func checkInSpace(t testing.TB, s Space, params map[string]string) {
	t.Helper()
	if len(params) != len(s) {
		t.Fatalf("params %v do not match the space's %d names", params, len(s))
	}
	for name, p := range s {
		v, ok := params[name]
		if !ok {
			t.Fatalf("params %v miss %s", params, name)
		}
		if _, ok := ParseValue(p, v); !ok {
			t.Fatalf("param %s = %q is not a value of %+v", name, v, p)
		}
		if p.Type == Int && strings.ContainsAny(v, ".eE") {
			t.Fatalf("int param %s = %q is not formatted as an integer", name, v)
		}
	}
}
