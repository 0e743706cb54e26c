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

// AppendJSON writes exactly the bytes json.Marshal writes, whatever the
// strings hold, and DecodeMetricsLogged reads them back as json.Unmarshal
// does.
func TestMetricsLoggedAppendJSON(t *testing.T) {
	for _, d := range []MetricsLoggedData{
		{},
		{RunID: "r", Metrics: map[string][]MetricPoint{}},
		{RunID: "11111111-1111-4111-8111-111111111111", ExperimentID: "e", ProjectID: "p", Metrics: map[string][]MetricPoint{
			"loss":  {{Value: 0.5, Step: 1, Timestamp: 1700000000000}, {Value: MetricValue(math.NaN()), Step: -2, Timestamp: 0}},
			"acc":   {{Value: MetricValue(math.Inf(1))}, {Value: MetricValue(math.Inf(-1)), Step: math.MaxInt64, Timestamp: math.MinInt64}},
			"b/c d": {{Value: MetricValue(math.Copysign(0, -1))}, {Value: 1e-300}, {Value: math.MaxFloat64}, {Value: 123456789}},
		}},
		{RunID: `q"\<>&`, ExperimentID: "é\u2028\x00", ProjectID: "\xff", Metrics: map[string][]MetricPoint{"a<b": {{Value: 1}}, "nil": nil, "": {}}},
	} {
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		got := d.AppendJSON(nil)
		if string(got) != string(want) {
			t.Fatalf("AppendJSON\n%s\njson.Marshal\n%s", got, want)
		}
		back, err := DecodeMetricsLogged(got)
		var ref MetricsLoggedData
		refErr := json.Unmarshal(got, &ref)
		if (err == nil) != (refErr == nil) || !sameMetricsLogged(back, ref) {
			t.Fatalf("DecodeMetricsLogged(%s) = %+v, %v; json.Unmarshal %+v, %v", got, back, err, ref, refErr)
		}
	}
	d := MetricsLoggedData{RunID: "r", Metrics: map[string][]MetricPoint{"k": {{Value: 1, Step: 2, Timestamp: 3}}}}
	if _, ok := decodeMetricsLoggedFast(d.AppendJSON(nil)); !ok {
		t.Fatal("the fast path does not read what AppendJSON writes")
	}
}

// FuzzDecodeMetricsLogged: the fast path reads a message's data as
// json.Unmarshal does, or leaves it to it.
func FuzzDecodeMetricsLogged(f *testing.F) {
	for _, s := range []string{
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{"a":[[0.5,1,2],["NaN",-1,0]],"b":[["Infinity",0,0],["-Infinity",0,0]]}}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{}}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{"a":[]}}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{"a":[[1,2,3]],"a":[[4,5,6]]}}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{"a":[[1e400,2,3]]}}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{"a":[["1.5",2,3]]}}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{"a":[[1,2.5,3]]}}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":null}`,
		`{"run_id":"r","experiment_id":"e","project_id":"p","metrics":{"a":[[1,2,3]]}}x`,
		`{"metrics":{"a":[[1,2,3]]},"run_id":"r"}`, `{"RUN_ID":"r"}`, `{"run_id":"\u0072"}`, ``, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeMetricsLoggedFast(data)
		if !ok {
			return
		}
		var ref MetricsLoggedData
		if err := json.Unmarshal(data, &ref); err != nil {
			t.Fatalf("the fast path read %q, which json.Unmarshal refuses: %v", data, err)
		}
		if !sameMetricsLogged(fast, ref) {
			t.Fatalf("%q: fast path %+v, json.Unmarshal %+v", data, fast, ref)
		}
	})
}

func sameMetricsLogged(a, b MetricsLoggedData) bool {
	if a.RunID != b.RunID || a.ExperimentID != b.ExperimentID || a.ProjectID != b.ProjectID ||
		len(a.Metrics) != len(b.Metrics) || (a.Metrics == nil) != (b.Metrics == nil) {
		return false
	}
	for k, ap := range a.Metrics {
		bp, ok := b.Metrics[k]
		if !ok || len(ap) != len(bp) {
			return false
		}
		for i := range ap {
			if ap[i].Step != bp[i].Step || ap[i].Timestamp != bp[i].Timestamp ||
				math.Float64bits(float64(ap[i].Value)) != math.Float64bits(float64(bp[i].Value)) {
				return false
			}
		}
	}
	return true
}
