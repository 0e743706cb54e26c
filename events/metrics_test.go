package events

import (
	"encoding/json"
	"math"
	"testing"
)

// Metric values survive the stream exactly, NaN and ±Inf included (as
// MLflow's strings), and anything else is refused.
func TestMetricValueJSON(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		json string
	}{
		{0.1, `0.1`}, {3, `3`}, {-2.5e-7, `-2.5e-07`}, {1e300, `1e+300`}, {math.MaxFloat64, `1.7976931348623157e+308`},
		{math.NaN(), `"NaN"`}, {math.Inf(1), `"Infinity"`}, {math.Inf(-1), `"-Infinity"`},
	} {
		b, err := json.Marshal(MetricValue(tc.v))
		if err != nil || string(b) != tc.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tc.v, b, err, tc.json)
		}
		var back MetricValue
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if f := float64(back); f != tc.v && !(math.IsNaN(f) && math.IsNaN(tc.v)) {
			t.Errorf("round trip of %v gave %v", tc.v, f)
		}
	}
	var v MetricValue
	if err := json.Unmarshal([]byte(`"2.5"`), &v); err != nil || v != 2.5 {
		t.Errorf(`"2.5" = %v, %v`, v, err)
	}
	for _, bad := range []string{`"abc"`, `1e400`, `"1e400"`, `null x`, `true`, `"nan"`, `{}`, `0x10`, `"0x10"`, `Infinity`, `+1`, `"+1"`, `1_000`, `-`, `1.2.3`, ``} {
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestMetricPointJSON(t *testing.T) {
	d := MetricsLoggedData{RunID: "r", Metrics: map[string][]MetricPoint{
		"loss": {{Value: 0.5, Step: 1, Timestamp: 1700000000000}, {Value: MetricValue(math.NaN()), Step: 2, Timestamp: 1700000000001}},
	}}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"run_id":"r","experiment_id":"","project_id":"","metrics":{"loss":[[0.5,1,1700000000000],["NaN",2,1700000000001]]}}`
	if string(b) != want {
		t.Fatalf("encoded %s\nwant    %s", b, want)
	}
	var back MetricsLoggedData
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	p := back.Metrics["loss"]
	if len(p) != 2 || p[0] != (MetricPoint{0.5, 1, 1700000000000}) || !math.IsNaN(float64(p[1].Value)) || p[1].Step != 2 {
		t.Fatalf("decoded %+v", p)
	}
	var spaced MetricPoint
	if err := json.Unmarshal([]byte(` [ 0.5 , 2 , 3 ] `), &spaced); err != nil || spaced != (MetricPoint{0.5, 2, 3}) {
		t.Errorf("spaced point = %+v, %v", spaced, err)
	}
	for _, bad := range []string{`[1,2]`, `[1,2,3,4]`, `[1,"x",3]`, `[1,2,3.5]`, `{}`, `[NaN,1,1]`, `["1,2",1,1]`, `[1,2,1e3]`} {
		var q MetricPoint
		if err := json.Unmarshal([]byte(bad), &q); err == nil {
			t.Errorf("point %s accepted", bad)
		}
	}
}
