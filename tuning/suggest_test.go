package tuning

import (
	"errors"
	"maps"
	"math"
	"strconv"
	"testing"
)

var mixedSpace = Space{
	"lr":      logUniform(1e-5, 0.1),
	"dropout": uniform(0, 0.5),
	"layers":  intParam(1, 8),
	"big":     intParam(-1e15, 1e15),
	"opt":     categorical("adam", "sgd", "rmsprop"),
	"one":     categorical("only"),
	"fixed":   intParam(4, 4),
}

// syntheticHistory is n finished trials over space from the random
// sampler, with an objective that prefers small lr, many layers and adam;
// every fifth trial was pruned.
func syntheticHistory(t testing.TB, space Space, seed uint64, n int) []Trial {
	t.Helper()
	var h []Trial
	for i := 1; i <= n; i++ {
		p, err := Suggest(Study{Space: space, Algorithm: Random, Seed: seed}, nil, i)
		if err != nil {
			t.Fatal(err)
		}
		v := float64(i % 7)
		if x, err := strconv.ParseFloat(p["lr"], 64); err == nil {
			v += math.Log(x)
		}
		if p["opt"] == "adam" {
			v -= 2
		}
		tr := Trial{Number: i, Params: p, State: StateCompleted, Value: &v}
		if i%5 == 0 {
			tr.State, tr.Value = StatePruned, nil
			tr.Reports = []Report{{Step: 1, Value: v + 3}}
		}
		h = append(h, tr)
	}
	return h
}

func TestSuggestInsideTheSpace(t *testing.T) {
	t.Parallel()
	history := syntheticHistory(t, mixedSpace, 3, 30)
	for _, alg := range []string{Random, Bayesian} {
		for _, dir := range []string{Minimize, Maximize} {
			st := Study{Space: mixedSpace, Algorithm: alg, Direction: dir, Seed: 11}
			seen := map[string]map[string]bool{}
			for n := 1; n <= 200; n++ {
				p, err := Suggest(st, history, n)
				if err != nil {
					t.Fatalf("%s trial %d: %v", alg, n, err)
				}
				checkInSpace(t, mixedSpace, p)
				for k, v := range p {
					if seen[k] == nil {
						seen[k] = map[string]bool{}
					}
					seen[k][v] = true
				}
			}
			if len(seen["one"]) != 1 || len(seen["fixed"]) != 1 {
				t.Errorf("%s %s: single-valued params took %v %v", alg, dir, seen["one"], seen["fixed"])
			}
			// Random covers every category; TPE, shown one fixed history,
			// may rightly settle on the best trials' category, but its
			// continuous candidates still vary with the trial number.
			if alg == Random && len(seen["opt"]) != 3 {
				t.Errorf("random: categorical values seen %v", seen["opt"])
			}
			if len(seen["lr"]) < 100 || len(seen["dropout"]) < 100 || len(seen["big"]) < 100 {
				t.Errorf("%s %s: only %d distinct lr, %d dropout and %d big values in 200 trials", alg, dir, len(seen["lr"]), len(seen["dropout"]), len(seen["big"]))
			}
		}
	}
}

func TestSuggestRandomReproducible(t *testing.T) {
	t.Parallel()
	st := Study{Space: mixedSpace, Algorithm: Random, Direction: Minimize, Seed: 42}
	history := syntheticHistory(t, mixedSpace, 5, 20)
	differ := 0
	for n := 1; n <= 50; n++ {
		a, _ := Suggest(st, nil, n)
		b, _ := Suggest(st, history, n) // history plays no part
		if !maps.Equal(a, b) {
			t.Fatalf("trial %d: %v without history, %v with", n, a, b)
		}
		other := st
		other.Seed = 43
		c, _ := Suggest(other, nil, n)
		if !maps.Equal(a, c) {
			differ++
		}
		prev, _ := Suggest(st, nil, n+1)
		if maps.Equal(a, prev) {
			t.Errorf("trials %d and %d got the same params %v", n, n+1, a)
		}
	}
	if differ != 50 {
		t.Errorf("seeds 42 and 43 agree on %d of 50 trials", 50-differ)
	}
}

func TestSuggestBayesianReproducible(t *testing.T) {
	t.Parallel()
	history := syntheticHistory(t, mixedSpace, 9, 40)
	st := Study{Space: mixedSpace, Algorithm: Bayesian, Direction: Minimize, Seed: 1}
	for n := 41; n <= 60; n++ {
		a, err := Suggest(st, history, n)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Suggest(st, history, n)
		if !maps.Equal(a, b) {
			t.Fatalf("trial %d: %v then %v", n, a, b)
		}
	}
	// Reversing the history's order changes nothing: it is a set of trials.
	rev := make([]Trial, len(history))
	for i, tr := range history {
		rev[len(history)-1-i] = tr
	}
	a, _ := Suggest(st, history, 41)
	b, _ := Suggest(st, rev, 41)
	if !maps.Equal(a, b) {
		t.Errorf("history order matters: %v vs %v", a, b)
	}
	// Below 10 finished trials (running, failed and cancelled ones do not
	// count) it is the random sampler.
	early := append([]Trial{}, history[:9]...)
	early = append(early, Trial{Number: 10, State: StateRunning}, Trial{Number: 11, State: StateFailed}, Trial{Number: 12, State: StateCancelled})
	rnd := st
	rnd.Algorithm = Random
	for n := 13; n <= 20; n++ {
		a, _ := Suggest(st, early, n)
		b, _ := Suggest(rnd, nil, n)
		if !maps.Equal(a, b) {
			t.Errorf("trial %d with 9 finished trials: bayesian %v, random %v", n, a, b)
		}
	}
	// From 10 on, it learns: the history shapes the suggestion.
	a, _ = Suggest(st, history[:10], 11)
	b, _ = Suggest(rnd, nil, 11)
	if maps.Equal(a, b) {
		t.Errorf("with 10 finished trials bayesian still suggests random's %v", a)
	}
}

func TestSuggestGrid(t *testing.T) {
	t.Parallel()
	space := Space{"layers": intParam(-1, 2), "opt": categorical("adam", "sgd", "rmsprop"), "one": categorical("x")}
	st := Study{Space: space, Algorithm: Grid, Seed: 5}
	size := GridSize(space)
	if size != 12 {
		t.Fatalf("GridSize = %d, want 12", size)
	}
	seen := map[string]bool{}
	for n := 1; n <= size; n++ {
		p, err := Suggest(st, nil, n)
		if err != nil {
			t.Fatalf("point %d: %v", n, err)
		}
		checkInSpace(t, space, p)
		key := p["layers"] + "|" + p["opt"] + "|" + p["one"]
		if seen[key] {
			t.Fatalf("point %d repeats %s", n, key)
		}
		seen[key] = true
		again, _ := Suggest(Study{Space: space, Algorithm: Grid, Seed: 99}, []Trial{{Number: 1}}, n)
		if !maps.Equal(p, again) {
			t.Errorf("point %d depends on seed or history: %v vs %v", n, p, again)
		}
	}
	for _, n := range []int{size + 1, size + 100} {
		if _, err := Suggest(st, nil, n); !errors.Is(err, ErrExhausted) {
			t.Errorf("point %d: err %v, want ErrExhausted", n, err)
		}
	}
	first, _ := Suggest(st, nil, 1)
	if want := map[string]string{"layers": "-1", "one": "x", "opt": "adam"}; !maps.Equal(first, want) {
		t.Errorf("first point %v, want %v", first, want)
	}
}

func TestSuggestRejects(t *testing.T) {
	t.Parallel()
	st := Study{Space: mixedSpace, Algorithm: Random}
	if _, err := Suggest(st, nil, 0); err == nil {
		t.Error("trial number 0 accepted")
	}
	st.Algorithm = "annealing"
	if _, err := Suggest(st, nil, 1); err == nil {
		t.Error("unknown algorithm accepted")
	}
	if _, err := Suggest(Study{Algorithm: Random}, nil, 1); err == nil {
		t.Error("empty space accepted")
	}
	var fe *FieldError
	if _, err := Suggest(Study{Space: Space{"x": {Type: Uniform}}, Algorithm: Random}, nil, 1); !errors.As(err, &fe) || fe.Field != "space.x.low" {
		t.Errorf("a space without bounds: err %v, want the space.x.low field error", err)
	}
	if _, err := Suggest(Study{Space: Space{"x": uniform(0, 1)}, Algorithm: Grid}, nil, 1); !errors.As(err, &fe) || fe.Field != "space.x.type" {
		t.Errorf("a grid over a continuous range: err %v, want the space.x.type field error", err)
	}
	if _, err := Suggest(Study{Space: mixedSpace, Algorithm: Bayesian}, nil, 1); err == nil {
		t.Error("bayesian without a direction accepted")
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ got, want string }{
		{FormatFloat(0.1), "0.1"},
		{FormatFloat(1e-5), "1e-05"},
		{FormatFloat(3), "3"},
		{FormatInt(-1000000000000000), "-1000000000000000"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
