package api_test

import (
	"net/url"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// MLflow's artifact paths as the Python client uses them with a server
// that serves artifacts: log_artifact PUTs to
// <tracking URI>/api/2.0/mlflow-artifacts/artifacts/<experiment>/<run>/artifacts/<path>,
// list_artifacts lists with ?path= (entries by base name), download GETs
// the file; the UI and the npm client call artifacts/list (run-relative
// paths). The files land in the run's artifacts on Maestro's own API, and a
// model version made from the run's model downloads through the proxy too.
func TestMLflowArtifactProxy(t *testing.T) {
	t.Parallel()
	m := newMLflowProject(t, "mlart.test", "Art Demo")
	e, ana, proj, tok, viewerTok, py := m.e, m.ana, m.proj, m.tok, m.viewerTok, m.py
	uri := py.base

	var created struct {
		ExperimentID string `json:"experiment_id"`
	}
	py.ok("POST", "experiments/create", map[string]any{"name": "art"}, &created)
	var cr struct{ Run api.MLflowRun }
	py.ok("POST", "runs/create", map[string]any{"experiment_id": created.ExperimentID, "start_time": 1_700_000_000_000}, &cr)
	run := cr.Run.Info
	root := run.ExperimentID + "/" + run.RunID + "/artifacts"
	if run.ArtifactURI != "mlflow-artifacts:/"+root {
		t.Fatalf("artifact_uri %q", run.ArtifactURI)
	}
	proxy := uri + "/api/2.0/mlflow-artifacts/artifacts"
	put := func(auth, p, body string) testenv.Response {
		t.Helper()
		// The Python client sends the file's guessed type, not JSON.
		return e.Do("PUT", proxy+"/"+p, "", []byte(body), "Authorization", auth, "Content-Type", "text/plain")
	}

	// log_artifact(s): two files in model/, one at the root.
	for p, body := range map[string]string{"model/MLmodel": "flavors: {}\n", "model/data/weights.bin": "0123456789", "notes.txt": "hello"} {
		if r := put(basicAuth(tok), root+"/"+p, body); r.Status != 200 || string(r.Body) != "{}\n" {
			t.Fatalf("PUT %s: %d %s", p, r.Status, r.Body)
		}
	}
	// The same bytes again change nothing and still answer 200.
	if r := put(basicAuth(tok), root+"/notes.txt", "hello"); r.Status != 200 {
		t.Fatalf("PUT again: %d %s", r.Status, r.Body)
	}

	// list_artifacts: base names, is_dir always present, sizes for files.
	var listed struct {
		Files []api.MLflowFileInfo `json:"files"`
	}
	r := e.Do("GET", proxy+"?"+url.Values{"path": {root + "/model"}}.Encode(), "", nil, "Authorization", basicAuth(tok))
	r.JSON(t, &listed)
	if r.Status != 200 || len(listed.Files) != 2 || listed.Files[0].Path != "MLmodel" || listed.Files[0].IsDir ||
		listed.Files[0].FileSize == nil || *listed.Files[0].FileSize != 12 || listed.Files[1].Path != "data" || !listed.Files[1].IsDir {
		t.Fatalf("proxy list: %d %s", r.Status, r.Body)
	}
	// artifacts/list (tracking service): run-relative paths and the root URI.
	var al struct {
		RootURI string               `json:"root_uri"`
		Files   []api.MLflowFileInfo `json:"files"`
	}
	py.ok("GET", "artifacts/list", url.Values{"run_id": {run.RunID}, "path": {"model"}}, &al)
	if al.RootURI != run.ArtifactURI || len(al.Files) != 2 || al.Files[0].Path != "model/MLmodel" || al.Files[1].Path != "model/data" {
		t.Fatalf("artifacts/list: %+v", al)
	}
	py.ok("GET", "artifacts/list", url.Values{"run_id": {run.RunID}}, &al)
	if len(al.Files) != 2 || al.Files[0].Path != "model" || !al.Files[0].IsDir || al.Files[1].Path != "notes.txt" {
		t.Fatalf("artifacts/list of the root: %+v", al)
	}
	py.fail(400, "INVALID_PARAMETER_VALUE", "GET", "artifacts/list", url.Values{"run_id": {run.RunID}, "path": {"../x"}})

	// Download through the proxy, a Range too.
	r = e.Do("GET", proxy+"/"+root+"/model/data/weights.bin", "", nil, "Authorization", basicAuth(tok))
	if r.Status != 200 || string(r.Body) != "0123456789" {
		t.Fatalf("download: %d %s", r.Status, r.Body)
	}
	r = e.Do("GET", proxy+"/"+root+"/model/data/weights.bin", "", nil, "Authorization", basicAuth(tok), "Range", "bytes=2-4")
	if r.Status != 206 || string(r.Body) != "234" {
		t.Fatalf("range download: %d %s", r.Status, r.Body)
	}
	// The same file on Maestro's own API.
	r = call(t, e, 200, "GET", projectsPath+"/"+proj.Slug+"/runs/"+run.RunID+"/artifacts/model/MLmodel", ana.Token, nil)
	if string(r.Body) != "flavors: {}\n" {
		t.Fatalf("Maestro API download: %s", r.Body)
	}

	// Refusals, in MLflow's shape: a run in another experiment's path, a
	// missing file, a viewer uploading, a path that escapes, a model path.
	other := "00000000-0000-4000-8000-000000000000/" + run.RunID + "/artifacts"
	for _, c := range []struct {
		r      testenv.Response
		status int
		code   string
	}{
		{put(basicAuth(tok), other+"/x.txt", "x"), 404, "RESOURCE_DOES_NOT_EXIST"},
		{e.Do("GET", proxy+"/"+root+"/missing.txt", "", nil, "Authorization", basicAuth(tok)), 404, "RESOURCE_DOES_NOT_EXIST"},
		{put(basicAuth(viewerTok), root+"/v.txt", "v"), 403, "PERMISSION_DENIED"},
		{put(basicAuth(tok), root+"/%2E%2E/x.txt", "x"), 400, "INVALID_PARAMETER_VALUE"},
		{put(basicAuth(tok), "models/m/versions/1/artifacts/x.txt", "x"), 400, "INVALID_PARAMETER_VALUE"},
		{e.Do("GET", proxy+"?"+url.Values{"path": {"somewhere"}}.Encode(), "", nil, "Authorization", basicAuth(tok)), 404, "RESOURCE_DOES_NOT_EXIST"},
		{e.Do("GET", proxy+"/"+root+"/notes.txt", "", nil), 401, "UNAUTHENTICATED"},
	} {
		if err := checkMLflowError(c.r, c.status, c.code); err != nil {
			t.Error(err)
		}
	}
	// The viewer reads.
	if r := e.Do("GET", proxy+"/"+root+"/notes.txt", "", nil, "Authorization", basicAuth(viewerTok)); r.Status != 200 || string(r.Body) != "hello" {
		t.Fatalf("viewer download: %d %s", r.Status, r.Body)
	}

	// A deleted run's files stay readable; uploads to it are refused.
	py.ok("POST", "runs/delete", map[string]any{"run_id": run.RunID}, nil)
	if err := checkMLflowError(put(basicAuth(tok), root+"/late.txt", "late"), 400, "INVALID_PARAMETER_VALUE"); err != nil {
		t.Error(err)
	}
	if r := e.Do("GET", proxy+"/"+root+"/notes.txt", "", nil, "Authorization", basicAuth(tok)); r.Status != 200 {
		t.Fatalf("deleted run download: %d %s", r.Status, r.Body)
	}

	// A version's own artifacts (uploaded on Maestro's API) under
	// models/<name>/versions/<v>/artifacts.
	models := projectsPath + "/" + proj.Slug + "/models"
	call(t, e, 201, "POST", models, ana.Token, map[string]any{"name": "churn"})
	call(t, e, 201, "POST", models+"/churn/versions", ana.Token, map[string]any{"source": "s3://bucket/churn"})
	call(t, e, 201, "PUT", models+"/churn/versions/1/artifacts/model/model.pkl", ana.Token, []byte("pickle"), "Content-Type", "application/octet-stream")
	vroot := "models/churn/versions/1/artifacts"
	r = e.Do("GET", proxy+"?"+url.Values{"path": {vroot}}.Encode(), "", nil, "Authorization", basicAuth(tok))
	r.JSON(t, &listed)
	if r.Status != 200 || len(listed.Files) != 1 || listed.Files[0].Path != "model" || !listed.Files[0].IsDir {
		t.Fatalf("version list: %d %s", r.Status, r.Body)
	}
	if r := e.Do("GET", proxy+"/"+vroot+"/model/model.pkl", "", nil, "Authorization", basicAuth(tok)); r.Status != 200 || string(r.Body) != "pickle" {
		t.Fatalf("version download: %d %s", r.Status, r.Body)
	}
	if err := checkMLflowError(e.Do("GET", proxy+"/models/nope/versions/1/artifacts/model/model.pkl", "", nil, "Authorization", basicAuth(tok)),
		404, "RESOURCE_DOES_NOT_EXIST"); err != nil {
		t.Error(err)
	}
	// A deleted version is gone for MLflow clients, and its files with it
	// (they stay on Maestro's API: deletions are reversible).
	py.ok("DELETE", "model-versions/delete", map[string]any{"name": "churn", "version": "1"}, nil)
	for _, r := range []testenv.Response{
		e.Do("GET", proxy+"?"+url.Values{"path": {vroot}}.Encode(), "", nil, "Authorization", basicAuth(tok)),
		e.Do("GET", proxy+"/"+vroot+"/model/model.pkl", "", nil, "Authorization", basicAuth(tok)),
		e.Do("GET", proxy+"/models/churn/versions/2/artifacts/model/model.pkl", "", nil, "Authorization", basicAuth(tok)),
	} {
		if err := checkMLflowError(r, 404, "RESOURCE_DOES_NOT_EXIST"); err != nil {
			t.Error(err)
		}
	}
}
