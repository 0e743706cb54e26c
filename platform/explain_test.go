package platform_test

import (
	"math"
	"net/http"
	"testing"
	"time"
)

// The reference explainer of issue 13: the training fixture, run as a job,
// explains its model on held-out data and logs explanation.json into its
// run through the MLflow artifact proxy with only the job's environment.
// x (weight 3) matters most, z (0.5) less, u (pure noise) not at all; a
// version registered from the run answers GET …/versions/1/explanation.
func TestJobLogsExplanation(t *testing.T) {
	train := trainProgram(t)
	e := startJobs(t)
	j := e.submit(t, map[string]any{"experiment": "explained", "command": []string{train}, "params": map[string]any{"epochs": 30, "seed": 7},
		"timeout": "60s"})
	skip := e.submit(t, map[string]any{"experiment": "explained", "command": []string{train}, "params": map[string]any{"epochs": 2, "explain": 0},
		"timeout": "60s"})
	for _, id := range []string{j.ID, skip.ID} {
		if done := e.await(t, id, 60*time.Second, ended); done.State != "succeeded" {
			t.Fatalf("job %s ended %+v, want succeeded", id, done)
		}
	}
	r := e.Do("GET", e.path("/runs/"+j.RunID+"/artifacts/explanation.json"), e.token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("explanation.json of the run: %d %s", r.Status, r.Body)
	}
	var doc struct {
		SchemaVersion int `json:"schema_version"`
		Dataset       struct {
			Name  string `json:"name"`
			Rows  int    `json:"rows"`
			Split string `json:"split"`
		} `json:"dataset"`
		Metric struct {
			Name     string  `json:"name"`
			Baseline float64 `json:"baseline"`
		} `json:"metric"`
		Importances []struct {
			Feature, Method string
			Score, Std      float64
		} `json:"feature_importances"`
		Effects []struct {
			Feature, Method string
			Points          []struct{ Value, Effect float64 }
		} `json:"feature_effects"`
	}
	r.JSON(t, &doc)
	if doc.SchemaVersion != 1 || doc.Dataset.Name != "holdout" || doc.Dataset.Rows != 50 || doc.Dataset.Split != "test" ||
		doc.Metric.Name != "mse" || doc.Metric.Baseline <= 0 || doc.Metric.Baseline > 0.1 {
		t.Fatalf("explanation: %s", r.Body)
	}
	if len(doc.Importances) != 3 || doc.Importances[0].Feature != "x" || doc.Importances[1].Feature != "z" || doc.Importances[2].Feature != "u" {
		t.Fatalf("importances %+v, want x > z > u", doc.Importances)
	}
	x, z, u := doc.Importances[0], doc.Importances[1], doc.Importances[2]
	if x.Method != "permutation" || z.Score < 10*math.Abs(u.Score) || math.Abs(u.Score) > 0.01 || x.Std <= 0 {
		t.Fatalf("importances %+v: want u near 0, well below z", doc.Importances)
	}
	if len(doc.Effects) != 3 {
		t.Fatalf("effects %+v", doc.Effects)
	}
	for _, eff := range doc.Effects {
		if eff.Method != "partial_dependence" || len(eff.Points) != 10 {
			t.Fatalf("effect %+v", eff)
		}
	}
	// The partial dependence of x rises by about 3 per unit of x.
	px := doc.Effects[0].Points
	if slope := (px[9].Effect - px[0].Effect) / (px[9].Value - px[0].Value); doc.Effects[0].Feature != "x" || math.Abs(slope-3) > 0.1 {
		t.Fatalf("partial dependence of x: slope %v, want about 3", slope)
	}
	t.Logf("permutation importance on %d held-out rows: x %.3g±%.2g, z %.3g±%.2g, u %.2g±%.2g",
		doc.Dataset.Rows, x.Score, x.Std, z.Score, z.Std, u.Score, u.Std)

	// A version registered from the run carries its explanation: the
	// explanation route answers it (the run's, by reference).
	if r := e.Do("POST", e.path("/models"), e.token, map[string]any{"name": "linreg"}); r.Status != http.StatusCreated {
		t.Fatalf("create model: %d %s", r.Status, r.Body)
	}
	if r := e.Do("POST", e.path("/models/linreg/versions"), e.token, map[string]any{"run_id": j.RunID}); r.Status != http.StatusCreated {
		t.Fatalf("register a version from the run: %d %s", r.Status, r.Body)
	}
	r = e.Do("GET", e.path("/models/linreg/versions/1/explanation"), e.token, nil)
	var got struct {
		Source      string `json:"source"`
		RunID       string `json:"run_id"`
		Explanation struct {
			Importances []struct{ Feature string } `json:"feature_importances"`
		} `json:"explanation"`
		Previous any `json:"previous"`
	}
	r.JSON(t, &got)
	if r.Status != http.StatusOK || got.Source != "run" || got.RunID != j.RunID || len(got.Explanation.Importances) != 3 ||
		got.Explanation.Importances[0].Feature != "x" || got.Previous != nil {
		t.Fatalf("the version's explanation: %d %s", r.Status, r.Body)
	}

	// EXPLAIN=0 opts out.
	if r := e.Do("GET", e.path("/runs/"+skip.RunID+"/artifacts/explanation.json"), e.token, nil); r.Status != http.StatusNotFound {
		t.Fatalf("a run with explain=0 has explanation.json: %d %s", r.Status, r.Body)
	}
}
