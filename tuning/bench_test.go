package tuning

import (
	"testing"
)

// sixParams is a 6-dimensional space of every type.
var sixParams = Space{
	"lr":       logUniform(1e-5, 0.1),
	"dropout":  uniform(0, 0.5),
	"momentum": uniform(0.5, 0.99),
	"layers":   intParam(1, 8),
	"width":    intParam(16, 1024),
	"opt":      categorical("adam", "sgd", "rmsprop", "adagrad"),
}

func BenchmarkSuggestRandom(b *testing.B) {
	st := Study{Space: sixParams, Algorithm: Random, Direction: Minimize, Seed: 1}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := Suggest(st, nil, i+1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSuggestTPE suggests trial 101 after 100 completed trials.
func BenchmarkSuggestTPE(b *testing.B) {
	history := make([]Trial, 100)
	for i := range history {
		p, err := Suggest(Study{Space: sixParams, Algorithm: Random, Seed: 2}, nil, i+1)
		if err != nil {
			b.Fatal(err)
		}
		v := float64((i * 37) % 100)
		history[i] = Trial{Number: i + 1, Params: p, State: StateCompleted, Value: &v}
	}
	st := Study{Space: sixParams, Algorithm: Bayesian, Direction: Minimize, Seed: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Suggest(st, history, 101); err != nil {
			b.Fatal(err)
		}
	}
}

// pruneHistory is 100 trials of 27 reports each (99 completed) and a
// running trial at its last step.
func pruneHistory() (Trial, []Trial) {
	others := make([]Trial, 100)
	for i := range others {
		vs := make([]float64, 27)
		for s := range vs {
			vs[s] = float64((i*31)%100) + 10/float64(s+1)
		}
		others[i] = curve(i+1, StateCompleted, vs...)
	}
	t := others[99]
	t.State, t.Value = StateRunning, nil
	return t, others
}

func BenchmarkPruneMedian(b *testing.B) {
	t, others := pruneHistory()
	b.ReportAllocs()
	for b.Loop() {
		Prune(Pruner{Rule: Median}, Minimize, t, others)
	}
}

func BenchmarkPruneASHA(b *testing.B) {
	t, others := pruneHistory()
	b.ReportAllocs()
	for b.Loop() {
		Prune(Pruner{Rule: ASHA}, Minimize, t, others)
	}
}
