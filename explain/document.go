package explain

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
)

// Explanation is a valid explanation document (see explanation.schema.json).
type Explanation struct {
	SchemaVersion      int          `json:"schema_version"`
	Dataset            Dataset      `json:"dataset"`
	Target             string       `json:"target,omitempty"`
	Metric             *Metric      `json:"metric,omitempty"`
	FeatureImportances []Importance `json:"feature_importances"`
	FeatureEffects     []Effect     `json:"feature_effects,omitempty"`
	Classes            []Class      `json:"classes,omitempty"`
}

// Dataset is the data an explanation was computed on.
type Dataset struct {
	Name        string `json:"name"`
	Rows        int64  `json:"rows"`
	Split       string `json:"split,omitempty"`
	Digest      string `json:"digest,omitempty"`
	Description string `json:"description,omitempty"`
}

// Metric is the score permutation importance measured.
type Metric struct {
	Name      string   `json:"name"`
	Baseline  *float64 `json:"baseline,omitempty"`
	Direction string   `json:"direction,omitempty"`
}

// Importance is one feature's global importance by one method.
type Importance struct {
	Feature string   `json:"feature"`
	Method  string   `json:"method"`
	Score   float64  `json:"score"`
	Std     *float64 `json:"std,omitempty"`
}

// Effect is one feature's effect curve (partial dependence, SHAP summary).
type Effect struct {
	Feature string  `json:"feature"`
	Method  string  `json:"method"`
	Points  []Point `json:"points"`
}

// Point is the effect at one value of the feature.
type Point struct {
	Value  Value   `json:"value"`
	Effect float64 `json:"effect"`
}

// Value is a feature's value: a number, or (IsText) a category's name.
type Value struct {
	Number float64
	Text   string
	IsText bool
}

// String is the value as a label.
func (v Value) String() string {
	if v.IsText {
		return v.Text
	}
	return strconv.FormatFloat(v.Number, 'g', -1, 64)
}

// MarshalJSON writes a number or a string.
func (v Value) MarshalJSON() ([]byte, error) {
	if v.IsText {
		return json.Marshal(v.Text)
	}
	return json.Marshal(v.Number)
}

// UnmarshalJSON reads a number or a string.
func (v *Value) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		*v = Value{IsText: true}
		return json.Unmarshal(b, &v.Text)
	}
	*v = Value{}
	if err := json.Unmarshal(b, &v.Number); err != nil {
		return fmt.Errorf("a value is a number or a string: %w", err)
	}
	return nil
}

// Class is one class's breakdown (classifiers).
type Class struct {
	Class              string       `json:"class"`
	FeatureImportances []Importance `json:"feature_importances"`
	FeatureEffects     []Effect     `json:"feature_effects,omitempty"`
}

// SortedImportances returns the global importances, highest score first
// (ties by feature, then method), without changing x.
func (x Explanation) SortedImportances() []Importance {
	return sortedImportances(x.FeatureImportances)
}

// SortedImportances returns the class's importances, highest score first.
func (c Class) SortedImportances() []Importance {
	return sortedImportances(c.FeatureImportances)
}

func sortedImportances(list []Importance) []Importance {
	out := append([]Importance(nil), list...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Score != b.Score {
			return a.Score > b.Score
		}
		if a.Feature != b.Feature {
			return a.Feature < b.Feature
		}
		return a.Method < b.Method
	})
	return out
}

// MaxScore is the largest importance score (0 for none), for scaling bars.
func (x Explanation) MaxScore() float64 {
	m := 0.0
	for _, im := range x.FeatureImportances {
		m = math.Max(m, math.Abs(im.Score))
	}
	return m
}

// ImportanceOf is a feature's global importance: the score of its first
// entry in feature_importances (document order), which is what approval
// gates compare (importance.<feature>). ok is false when it has none.
func (x Explanation) ImportanceOf(feature string) (score float64, ok bool) {
	for _, im := range x.FeatureImportances {
		if im.Feature == feature {
			return im.Score, true
		}
	}
	return 0, false
}

// Change is how one feature's importance (by one method) moved between two
// explanations.
type Change struct {
	Feature string `json:"feature"`
	Method  string `json:"method"`
	// Score is the current score; nil when the feature is gone.
	Score *float64 `json:"score"`
	// Previous is the previous score; nil when the feature is new.
	Previous *float64 `json:"previous"`
	// Change is Score − Previous, a missing side counting as 0.
	Change float64 `json:"change"`
	// Status is "new", "gone", "changed" or "unchanged".
	Status string `json:"status"`
}

// Change statuses.
const (
	StatusNew       = "new"
	StatusGone      = "gone"
	StatusChanged   = "changed"
	StatusUnchanged = "unchanged"
)

// Compare lists how every global importance moved from prev to cur, keyed
// by (feature, method) — scores of different methods are not comparable —
// largest |change| first (ties by feature, then method); features new in
// cur or gone from it are included, the missing side counting as 0.
func Compare(prev, cur Explanation) []Change {
	type entry struct {
		prev, cur *float64
	}
	entries := map[featureMethod]*entry{}
	var order []featureMethod
	get := func(k featureMethod) *entry {
		e, ok := entries[k]
		if !ok {
			e = &entry{}
			entries[k] = e
			order = append(order, k)
		}
		return e
	}
	for _, im := range prev.FeatureImportances {
		if e := get(featureMethod{im.Feature, im.Method}); e.prev == nil {
			s := im.Score
			e.prev = &s
		}
	}
	for _, im := range cur.FeatureImportances {
		if e := get(featureMethod{im.Feature, im.Method}); e.cur == nil {
			s := im.Score
			e.cur = &s
		}
	}
	out := make([]Change, 0, len(order))
	for _, k := range order {
		e := entries[k]
		c := Change{Feature: k.feature, Method: k.method, Score: e.cur, Previous: e.prev}
		switch {
		case e.prev == nil:
			c.Change, c.Status = *e.cur, StatusNew
		case e.cur == nil:
			c.Change, c.Status = -*e.prev, StatusGone
		default:
			// Scores near ±MaxFloat64 (finite, so valid) must not make an
			// infinite change, which JSON cannot carry.
			c.Change = max(-math.MaxFloat64, min(math.MaxFloat64, *e.cur-*e.prev))
			c.Status = StatusChanged
			if c.Change == 0 {
				c.Status = StatusUnchanged
			}
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := math.Abs(out[i].Change), math.Abs(out[j].Change)
		if a != b {
			return a > b
		}
		if out[i].Feature != out[j].Feature {
			return out[i].Feature < out[j].Feature
		}
		return out[i].Method < out[j].Method
	})
	return out
}
