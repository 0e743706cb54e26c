package api

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/sweeps"
)

// FuzzSweepRequest: a sweep request body of any bytes is decoded and
// validated as POST …/sweeps does (decodeStrict, validate, then the
// service's pure sweeps.Check) without panicking; every refusal is a
// validation problem whose detail names a field ("field: …") and stays
// bounded, and a request both accept has text values only.
func FuzzSweepRequest(f *testing.F) {
	for _, seed := range []string{
		`{"experiment":"x","name":"s","objective":{"metric":"loss","direction":"minimize"},"space":{"lr":{"type":"log_uniform","low":1e-4,"high":0.1},"opt":{"type":"categorical","values":["adam",0.5,true]}},"algorithm":"random","max_trials":4,"parallelism":2,"seed":3,"trial":{"command":["true"],"timeout":"1m","params":{"epochs":3}}}`,
		`{"name":"g","objective":{"metric":"acc","direction":"maximize"},"space":{"n":{"type":"int","low":1,"high":3}},"algorithm":"grid","trial":{"command":["x"],"timeout":30}}`,
		`{"space":{"lr":{"type":"log_uniform","low":0,"high":1}},"algorithm":"bayesian"}`,
		`{"space":{"x":{"type":"categorical","values":[null,{},[]]}}}`,
		`{"space":{"x":{"type":"uniform","low":1e308,"high":-1e308}},"early_stopping":{"rule":"asha","reduction_factor":1}}`,
		`{"trial":{"timeout":"soon","params":{"k":[1]}}}`,
		`{"seed":18446744073709551615,"max_trials":-1,"parallelism":1000}`,
		`{"space":{"\u00e9\u0000":{"type":"categorical","values":["\ud800"]}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req createSweepRequest
		if err := decodeStrict(strings.NewReader(string(body)), &req); err != nil {
			return
		}
		err := req.validate()
		if err == nil {
			for name, p := range req.in.Space {
				for _, v := range p.Values {
					if !utf8.ValidString(v) && utf8.ValidString(name) {
						// JSON text is valid UTF-8 (invalid escapes become U+FFFD).
						t.Fatalf("space.%s: value %q is not UTF-8", name, v)
					}
				}
			}
			_, err = sweeps.Check(req.in)
			if err == nil {
				return
			}
		}
		var pe *problemError
		detail := ""
		switch {
		case errors.As(err, &pe):
			if pe.code != "validation-failed" {
				t.Fatalf("refused as %s: %v", pe.code, err)
			}
			detail = pe.detail
		default:
			he, ok := handlers.AsError(err)
			if !ok || he.Kind != handlers.Invalid {
				t.Fatalf("refused with %T %v", err, err)
			}
			detail = he.Detail
		}
		field, _, ok := strings.Cut(detail, ": ")
		if !ok || field == "" || strings.ContainsAny(field, " \n") && !strings.HasPrefix(field, "space.") {
			t.Fatalf("the refusal names no field: %q", detail)
		}
		if len(detail) > 4096 {
			t.Fatalf("a refusal of %d bytes", len(detail))
		}
	})
}
