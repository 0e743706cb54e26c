package tuning

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Sampling algorithms.
const (
	Grid     = "grid"
	Random   = "random"
	Bayesian = "bayesian"
)

// Objective directions.
const (
	Minimize = "minimize"
	Maximize = "maximize"
)

// Param types.
const (
	Uniform     = "uniform"
	LogUniform  = "log_uniform"
	Int         = "int"
	Categorical = "categorical"
)

// Limits of a space (rule 10: everything bounded).
const (
	MaxParams         = 32
	MaxValues         = 100
	MaxValueBytes     = 250
	MaxGridSize       = 100000
	MaxIntMagnitude   = 1e15
	maxParamNameBytes = 64
)

// Param is one dimension: uniform, log_uniform and int have Low and High
// (inclusive), categorical has Values.
type Param struct {
	Type   string   `json:"type"`
	Low    *float64 `json:"low,omitempty"`
	High   *float64 `json:"high,omitempty"`
	Values []string `json:"values,omitempty"`
}

// Space maps param names to their dimensions.
type Space map[string]Param

// FieldError names the request field at fault, e.g. Field "space.lr.low".
type FieldError struct{ Field, Message string }

// Error is "field: message".
func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

var paramName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// names returns the space's param names in their fixed (sorted) order.
func (s Space) names() []string {
	out := make([]string, 0, len(s))
	for n := range s {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// fieldName is the field path of a param, with a hostile name cut short
// so an error message stays bounded.
func fieldName(name string) string {
	if len(name) > maxParamNameBytes+8 {
		name = name[:maxParamNameBytes] + "…"
	}
	return "space." + name
}

// ValidateSpace checks s for algorithm; every error is a *FieldError
// whose Field starts "space." (or is "space" or "algorithm"). The first
// error in a fixed order (params by name) is returned.
func ValidateSpace(s Space, algorithm string) error {
	switch algorithm {
	case Grid, Random, Bayesian:
	default:
		return fieldErr("algorithm", "must be one of grid, random, bayesian")
	}
	if len(s) == 0 {
		return fieldErr("space", "must have at least one param")
	}
	if len(s) > MaxParams {
		return fieldErr("space", "has %d params, at most %d allowed", len(s), MaxParams)
	}
	for _, name := range s.names() {
		f := fieldName(name)
		if !paramName.MatchString(name) {
			return fieldErr(f, "param name must match ^[A-Za-z][A-Za-z0-9_]{0,63}$ (it becomes the job param MAESTRO_PARAM_<NAME>)")
		}
		if err := validateParam(f, name, s[name], algorithm); err != nil {
			return err
		}
	}
	if algorithm == Grid {
		if n := GridSize(s); n > MaxGridSize {
			return fieldErr("space", "the grid has more than %d points", MaxGridSize)
		}
	}
	return nil
}

func validateParam(f, name string, p Param, algorithm string) error {
	switch p.Type {
	case Uniform, LogUniform, Int:
		if p.Values != nil {
			return fieldErr(f+".values", "not allowed for %s (values belong to categorical params)", p.Type)
		}
		if algorithm == Grid && p.Type != Int {
			return fieldErr(f+".type", "a continuous range has no grid (%s is %s); use int or categorical params, or the random or bayesian algorithm", name, p.Type)
		}
		if p.Low == nil {
			return fieldErr(f+".low", "is required for %s", p.Type)
		}
		if p.High == nil {
			return fieldErr(f+".high", "is required for %s", p.Type)
		}
		lo, hi := *p.Low, *p.High
		if math.IsNaN(lo) || math.IsInf(lo, 0) {
			return fieldErr(f+".low", "must be a finite number")
		}
		if math.IsNaN(hi) || math.IsInf(hi, 0) {
			return fieldErr(f+".high", "must be a finite number")
		}
		switch p.Type {
		case Uniform:
			if !(lo < hi) {
				return fieldErr(f+".high", "must be greater than low (the range is empty)")
			}
			if math.IsInf(hi-lo, 0) {
				return fieldErr(f+".high", "high - low must be a finite number (the range is too wide)")
			}
		case LogUniform:
			if !(lo > 0) {
				return fieldErr(f+".low", "must be greater than 0 for log_uniform")
			}
			if !(lo < hi) {
				return fieldErr(f+".high", "must be greater than low (the range is empty)")
			}
		case Int:
			if lo != math.Trunc(lo) || math.Abs(lo) > MaxIntMagnitude {
				return fieldErr(f+".low", "must be a whole number between -1e15 and 1e15 for int")
			}
			if hi != math.Trunc(hi) || math.Abs(hi) > MaxIntMagnitude {
				return fieldErr(f+".high", "must be a whole number between -1e15 and 1e15 for int")
			}
			if !(lo <= hi) {
				return fieldErr(f+".high", "must be at least low (the range is empty)")
			}
		}
	case Categorical:
		if p.Low != nil {
			return fieldErr(f+".low", "not allowed for categorical (use values)")
		}
		if p.High != nil {
			return fieldErr(f+".high", "not allowed for categorical (use values)")
		}
		if len(p.Values) == 0 {
			return fieldErr(f+".values", "must have at least one value")
		}
		if len(p.Values) > MaxValues {
			return fieldErr(f+".values", "has %d values, at most %d allowed", len(p.Values), MaxValues)
		}
		seen := make(map[string]bool, len(p.Values))
		for i, v := range p.Values {
			vf := f + ".values[" + strconv.Itoa(i) + "]"
			if len(v) == 0 || len(v) > MaxValueBytes {
				return fieldErr(vf, "must be 1 to %d bytes", MaxValueBytes)
			}
			if !utf8.ValidString(v) || slices.Contains([]byte(v), 0) {
				return fieldErr(vf, "must be valid UTF-8 without NUL bytes (it becomes an environment variable)")
			}
			if seen[v] {
				return fieldErr(vf, "repeats the value %q (values must be distinct)", v)
			}
			seen[v] = true
		}
	case "":
		return fieldErr(f+".type", "is required (uniform, log_uniform, int or categorical)")
	default:
		return fieldErr(f+".type", "must be one of uniform, log_uniform, int, categorical")
	}
	return nil
}

// GridSize is how many points a grid over s has (the product of int range
// sizes and categorical counts). Continuous params count as one point;
// the result saturates at math.MaxInt instead of overflowing.
func GridSize(s Space) int {
	if len(s) == 0 {
		return 0
	}
	n := 1
	for _, name := range s.names() {
		k := axisSize(s[name])
		if k <= 0 {
			return 0
		}
		if n > math.MaxInt/k {
			return math.MaxInt
		}
		n *= k
	}
	return n
}

// axisSize is how many grid points one param has.
func axisSize(p Param) int {
	switch p.Type {
	case Categorical:
		return len(p.Values)
	case Int:
		if p.Low == nil || p.High == nil {
			return 0
		}
		d := *p.High - *p.Low + 1
		if !(d >= 1) {
			return 0
		}
		if d >= math.MaxInt/2 {
			return math.MaxInt / 2
		}
		return int(d)
	default:
		return 1
	}
}

// FormatFloat formats a float param value as a job gets it.
func FormatFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// FormatInt formats an int param value as a job gets it.
func FormatInt(x int64) string { return strconv.FormatInt(x, 10) }
