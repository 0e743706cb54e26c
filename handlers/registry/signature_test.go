package registry_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// What a version's free-form fields become in the event: the signature in
// handlers.CanonicalJSON's form (or refused when jsonb could not hold it),
// metrics without negative zeros (jsonb has none).
func TestDecideRegisterVersionCanonicalises(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		signature string
		metrics   map[string]float64
		wantSig   string
		wantM     map[string]float64
		err       wantErr
	}{
		{name: "keys sorted, numbers as doubles", signature: `{"z":1e2,"a":[2.50,-0]}`, wantSig: `{"a":[2.5,0],"z":100}`},
		{name: "lone surrogate becomes U+FFFD", signature: `{"a":"\ud800"}`, wantSig: "{\"a\":\"\uFFFD\"}"},
		{name: "no signature", signature: ``, wantSig: ``},
		{name: "number beyond numeric", signature: `{"a":1e200000}`, err: invalid},
		{name: "NUL", signature: `{"a":"\u0000"}`, err: invalid},
		{name: "not JSON", signature: `{"a":`, err: invalid},
		{name: "negative zero metric", metrics: map[string]float64{"loss": math.Copysign(0, -1), "auc": 0.9},
			wantM: map[string]float64{"loss": 0, "auc": 0.9}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideRegisterVersion(fold(t, registry.EvolveModel, withVersions(t, 0)),
				registry.RegisterVersion{Signature: json.RawMessage(tc.signature), Metrics: tc.metrics})
			checkErr(t, err, tc.err)
			if tc.err != (wantErr{}) {
				return
			}
			d := got[0].Data.(events.ModelVersionRegisteredData)
			if string(d.Signature) != tc.wantSig {
				t.Fatalf("signature %s, want %s", d.Signature, tc.wantSig)
			}
			for k, v := range tc.wantM {
				if d.Metrics[k] != v || math.Signbit(d.Metrics[k]) {
					t.Fatalf("metrics %v, want %v", d.Metrics, tc.wantM)
				}
			}
			if v, ok := tc.metrics["loss"]; ok && !math.Signbit(v) {
				t.Fatal("the decider changed the command's own metrics map")
			}
		})
	}
}
