package api

import (
	"encoding/json"
	"testing"
)

// Every problem type an MLflow route can meet maps to an MLflow error code
// with a status; a refusal that is not 5xx on Maestro's API is not 5xx or
// 429 for MLflow either (MLflow's clients retry those for minutes). A new
// problem type without a mapping would answer INTERNAL_ERROR.
func TestMLflowCodesCoverEveryProblem(t *testing.T) {
	t.Parallel()
	for typ, p := range problemCatalog {
		code, ok := mlflowCodes[typ]
		if !ok {
			t.Errorf("problem type %q has no MLflow error code (mlflowCodes)", typ)
			continue
		}
		status, ok := mlflowStatus[code]
		if !ok {
			t.Errorf("problem type %q maps to %q, which has no status (mlflowStatus)", typ, code)
		}
		if p.Status < 500 && p.Status != 429 && (status >= 500 || status == 429) {
			t.Errorf("problem type %q (%d) maps to %q (%d), a status MLflow's clients retry", typ, p.Status, code, status)
		}
	}
}

// The MLflow field types read what protobuf's JSON parser reads: null as
// unset, ids and enums as strings or integers, int64s as decimal strings
// or integral numbers.
func TestMLflowFieldTypes(t *testing.T) {
	t.Parallel()
	type fields struct {
		N    mlInt64  `json:"n"`
		P    *mlInt64 `json:"p"`
		ID   mlID     `json:"id"`
		Enum mlEnum   `json:"enum"`
		B    mlBool   `json:"b"`
	}
	start := fields{N: 7, ID: "x", Enum: "ALL", B: true}
	for _, c := range []struct {
		in   string
		want fields
		ok   bool
	}{
		{`{"n":null,"p":null,"id":null,"enum":null,"b":null}`, start, true},
		{`{"n":"12","p":12,"id":12,"enum":3,"b":"False"}`, fields{N: 12, P: ptr(mlInt64(12)), ID: "12", Enum: "3", B: false}, true},
		{`{"n":1e3}`, fields{N: 1000, ID: "x", Enum: "ALL", B: true}, true},
		{`{"n":5.0}`, fields{N: 5, ID: "x", Enum: "ALL", B: true}, true},
		{`{"n":-9223372036854775808}`, fields{N: -1 << 63, ID: "x", Enum: "ALL", B: true}, true},
		{`{"n":1.5}`, start, false},
		{`{"n":"1e3"}`, start, false},
		{`{"n":" 1"}`, start, false},
		{`{"n":9.3e18}`, start, false},
		{`{"n":9223372036854775808}`, start, false},
		{`{"n":true}`, start, false},
		{`{"id":1.5}`, start, false},
		{`{"id":true}`, start, false},
		{`{"enum":1.0}`, start, false},
		{`{"b":1}`, start, false},
	} {
		got := start
		err := json.Unmarshal([]byte(c.in), &got)
		if (err == nil) != c.ok {
			t.Errorf("%s: error %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if c.ok && (got.N != c.want.N || got.ID != c.want.ID || got.Enum != c.want.Enum || got.B != c.want.B ||
			(got.P == nil) != (c.want.P == nil) || (got.P != nil && *got.P != *c.want.P)) {
			t.Errorf("%s: %+v, want %+v", c.in, got, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
