package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzMLflowDecode feeds arbitrary requests to the MLflow façade's decoder
// and checks (mlflowRequest, as every MLflow RPC runs them): a JSON body,
// or (get) a query string. The request types cover every field type the
// façade reads: ids as strings or numbers, int64s, doubles with NaN and
// null, enums, booleans, repeated fields, nested objects, pointers and
// embedded requests. It must never panic, and a refusal is MLflow's error
// with a 4xx status or the body limit's, never one MLflow's clients retry.
func FuzzMLflowDecode(f *testing.F) {
	for _, seed := range []struct {
		get  bool
		data string
	}{
		{false, `{"run_id":"5f0c","metrics":[{"key":"loss","value":"NaN","timestamp":1700000000000,"step":"3"}],"params":[{"key":"lr","value":"0.1"}],"tags":[{"key":"t","value":"v"}]}`},
		{false, `{"experiment_ids":["1",2],"filter":"metrics.loss < 1","run_view_type":"ALL","max_results":10,"order_by":["metrics.loss ASC"],"page_token":"x"}`},
		{false, `{"name":"m","version":1,"stage":"staging","archive_existing_versions":"True"}`},
		{false, `{"run_id":"r","datasets":[{"tags":[{"key":"k","value":"v"}],"dataset":{"name":"d","digest":"1","source_type":"local","source":"{}"}}],"models":[{}]}`},
		{false, `{"run_id":"r","status":3,"end_time":null,"run_name":"n"}`},
		{false, `{"experiment_id":null,"start_time":1e3,"tags":[{"key":"mlflow.runName"}]}`},
		{false, `{"run_uuid":"r","key":"k","value":null,"timestamp":-1,"step":9223372036854775807}`},
		{false, `"{\"name\":\"m\"}"`}, {false, `"\"x\""`}, {false, `""`}, {false, ``}, {false, `null`}, {false, `[]`}, {false, `{}{}`},
		{false, `{"max_results":1.5}`}, {false, `{"max_results":-9223372036854775809}`}, {false, `{"timestamp":9.3e18}`},
		{false, `{"value":1e400}`}, {false, `{"value":"nan"}`}, {false, `{"stages":"None"}`}, {false, "{\"name\":\"\xff\"}"},
		{false, strings.Repeat(`{"a":`, 20000)},
		{true, `run_id=x&max_results=5&page_token=`}, {true, `stages=None&stages=Production&name=m`},
		{true, `view_type=3&max_results=1e3`}, {true, `archive_existing_versions=TRUE&version=01`}, {true, `%zz&a=%00`},
		{true, `experiment_ids=0&experiment_ids=1`}, {true, `metric_key=%00&run_uuid=x`},
	} {
		f.Add(seed.get, seed.data)
	}
	f.Fuzz(func(t *testing.T, get bool, data string) {
		for name, decode := range map[string]func(*http.Request) error{
			"log-batch":           mlflowDecodes[mlLogBatchRequest],
			"log-metric":          mlflowDecodes[mlLogMetricRequest],
			"runs/search":         mlflowDecodes[mlSearchRunsRequest],
			"runs/create":         mlflowDecodes[mlCreateRunRequest],
			"runs/update":         mlflowDecodes[mlUpdateRunRequest],
			"log-inputs":          mlflowDecodes[mlLogInputsRequest],
			"experiments/search":  mlflowDecodes[mlSearchExperimentsRequest],
			"transition-stage":    mlflowDecodes[mlflowTransitionRequest],
			"get-latest-versions": mlflowDecodes[mlflowLatestVersionsRequest],
			"model-versions/set":  mlflowDecodes[mlflowTagRequest],
		} {
			r := httptest.NewRequest(http.MethodPost, "/api/2.0/mlflow/x", strings.NewReader(data))
			if get {
				r = httptest.NewRequest(http.MethodGet, "/api/2.0/mlflow/x", nil)
				r.URL.RawQuery = data
			}
			r.Header.Set("Content-Type", "application/json")
			r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 64<<10)
			err := decode(r)
			if err == nil {
				continue
			}
			var pe *problemError
			var mbe *http.MaxBytesError
			switch {
			case errors.As(err, &mbe):
			case !errors.As(err, &pe):
				t.Fatalf("%s: %q: the refusal is no problem: %v", name, data, err)
			default:
				code := pe.mlflow
				if code == "" {
					code = mlflowCodes[pe.code]
				}
				if status, ok := mlflowStatus[code]; !ok || status >= 500 {
					t.Fatalf("%s: %q: refused with %q (%d): %v", name, data, code, status, err)
				}
			}
		}
	})
}

// mlflowDecodes is mlflowRequest without the request.
func mlflowDecodes[Req any](r *http.Request) error {
	_, err := mlflowRequest[Req](r)
	return err
}
