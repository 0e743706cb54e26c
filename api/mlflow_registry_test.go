package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// MLflow's model registry REST API, called as MLflow's Python client
// (MlflowClient) calls it: GET with query parameters (lists as repeated
// keys), POST with JSON, PATCH and DELETE with JSON bodies; through the
// project's tracking URI, the UI's ajax-api, and the bare /api/2.0 with a
// scoped API token sent as HTTP Basic's password. Every change is checked
// on Maestro's own API too: the same read models.

// mlrClient is a caller of the MLflow API: a base (tracking URI + /api/2.0)
// and credentials.
type mlrClient struct {
	t       *testing.T
	e       *testenv.Env
	base    string
	token   string   // Bearer
	headers []string // or these (HTTP Basic)
}

// do sends an MLflow request: params as the query of a GET (a []string
// repeats its key), JSON otherwise.
func (c mlrClient) do(method, rpc string, params map[string]any) testenv.Response {
	c.t.Helper()
	path := c.base + "/mlflow/" + rpc
	var body any
	if method == "GET" {
		q := url.Values{}
		for k, v := range params {
			switch v := v.(type) {
			case []string:
				q[k] = v
			case string:
				q.Set(k, v)
			default:
				b, _ := json.Marshal(v)
				q.Set(k, string(b))
			}
		}
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
	} else if params != nil {
		body = params
	}
	return c.e.Do(method, path, c.token, body, c.headers...)
}

// ok is do that must answer 200; it returns the body decoded into out.
func (c mlrClient) ok(method, rpc string, params map[string]any, out any) {
	c.t.Helper()
	r := c.do(method, rpc, params)
	if r.Status != http.StatusOK {
		c.t.Fatalf("%s %s %v: %d %s, want 200", method, rpc, params, r.Status, r.Body)
	}
	if out != nil {
		r.JSON(c.t, out)
	}
}

// fails is do that must answer MLflow's error with status and code; it
// returns the message.
func (c mlrClient) fails(status int, code, method, rpc string, params map[string]any) string {
	c.t.Helper()
	r := c.do(method, rpc, params)
	if err := checkMLflowError(r, status, code); err != nil {
		c.t.Fatalf("%s %s %v: %v", method, rpc, params, err)
	}
	var e api.MLflowError
	r.JSON(c.t, &e)
	return e.Message
}

type (
	mlrModel struct {
		RegisteredModel api.MLflowRegisteredModel `json:"registered_model"`
	}
	mlrModels struct {
		RegisteredModels []api.MLflowRegisteredModel `json:"registered_models"`
		NextPageToken    string                      `json:"next_page_token"`
	}
	mlrVersion struct {
		ModelVersion api.MLflowModelVersion `json:"model_version"`
	}
	mlrVersions struct {
		ModelVersions []api.MLflowModelVersion `json:"model_versions"`
		NextPageToken string                   `json:"next_page_token"`
	}
)

func (c mlrClient) model(name string) api.MLflowRegisteredModel {
	c.t.Helper()
	var m mlrModel
	c.ok("GET", "registered-models/get", map[string]any{"name": name}, &m)
	return m.RegisteredModel
}

func (c mlrClient) version(name, v string) api.MLflowModelVersion {
	c.t.Helper()
	var m mlrVersion
	c.ok("GET", "model-versions/get", map[string]any{"name": name, "version": v}, &m)
	return m.ModelVersion
}

// jsonOf is v as JSON, to compare lists of MLflow's tags.
func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// versionsOf lists the name and version of each.
func versionsOf(vs []api.MLflowModelVersion) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.Name+"/"+v.Version+"@"+v.CurrentStage)
	}
	return out
}

func wantVersions(t *testing.T, what string, got []api.MLflowModelVersion, want ...string) {
	t.Helper()
	if g := versionsOf(got); !slices.Equal(g, want) {
		t.Fatalf("%s = %v, want %v", what, g, want)
	}
}

// mlrProject is a project with an owner, an editor, an approver and a
// viewer (their access tokens), and an MLflow client per member.
type mlrProject struct {
	proj                                    api.ProjectResponse
	owner, editor, approver, viewer         regClient
	asOwner, asEditor, asApprover, asViewer mlrClient
}

func newMLflowRegistryProject(t *testing.T, e *testenv.Env, admin, name string) mlrProject {
	t.Helper()
	slug := strings.ToLower(strings.ReplaceAll(name, " ", "-"))
	p := mlrProject{owner: regUser(e, admin, "owner@"+slug+".test", "member"), editor: regUser(e, admin, "editor@"+slug+".test", "viewer"),
		approver: regUser(e, admin, "approver@"+slug+".test", "viewer"), viewer: regUser(e, admin, "viewer@"+slug+".test", "viewer")}
	p.proj = asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, p.owner.Token, map[string]any{"name": name}))
	for _, m := range []struct {
		u    regClient
		role string
	}{{p.editor, "editor"}, {p.approver, "approver"}, {p.viewer, "viewer"}} {
		call(t, e, 200, "PUT", projectsPath+"/"+p.proj.Slug+"/members/"+m.u.ID, p.owner.Token, map[string]any{"role": m.role})
	}
	base := "/mlflow/" + p.proj.Slug + "/api/2.0"
	p.asOwner = mlrClient{t: t, e: e, base: base, token: p.owner.Token}
	p.asEditor = mlrClient{t: t, e: e, base: base, token: p.editor.Token}
	p.asApprover = mlrClient{t: t, e: e, base: base, token: p.approver.Token}
	p.asViewer = mlrClient{t: t, e: e, base: base, token: p.viewer.Token}
	return p
}

// A session of MlflowClient's registry calls, as its REST store sends
// them, each change read back through MLflow's API and Maestro's.
func TestMLflowRegistryClientFlow(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@mlreg.test").AccessToken
	p := newMLflowRegistryProject(t, e, admin, "Fraud Models")
	ed, ap, owner := p.asEditor, p.asApprover, p.asOwner
	maestro := projectsPath + "/" + p.proj.Slug

	// A run of the project, to register from (lineage).
	x := asJSON[projections.Experiment](t, call(t, e, 201, "POST", maestro+"/experiments", p.editor.Token, map[string]any{"name": "train"}))
	run := asJSON[projections.Run](t, call(t, e, 201, "POST", maestro+"/experiments/"+x.ID+"/runs", p.editor.Token, map[string]any{}))

	// create_registered_model, then mlflow.register_model's second try.
	var created mlrModel
	ed.ok("POST", "registered-models/create", map[string]any{"name": "fraud", "description": "card fraud",
		"tags": []map[string]string{{"key": "team", "value": "risk"}}}, &created)
	rm := created.RegisteredModel
	if rm.Name != "fraud" || rm.Description != "card fraud" || rm.CreationTimestamp <= 0 || rm.LastUpdatedTimestamp < rm.CreationTimestamp ||
		jsonOf(rm.Tags) != `[{"key":"team","value":"risk"}]` || len(rm.LatestVersions) != 0 || len(rm.Aliases) != 0 {
		t.Fatalf("created = %+v", rm)
	}
	if got := ed.model("fraud"); got.Name != "fraud" || got.CreationTimestamp != rm.CreationTimestamp || jsonOf(got.Tags) != jsonOf(rm.Tags) {
		t.Fatalf("read back = %+v, created %+v", got, rm)
	}
	ed.fails(400, "RESOURCE_ALREADY_EXISTS", "POST", "registered-models/create", map[string]any{"name": "FRAUD"})
	if msg := ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "GET", "registered-models/get", map[string]any{"name": "nope"}); msg != "Registered Model with name=nope not found" {
		t.Fatalf("missing model: %q", msg)
	}
	// The wire shape: int64 as JSON numbers, the version a string, every field.
	raw := ed.do("POST", "model-versions/create", map[string]any{"name": "fraud", "source": "runs:/" + run.ID + "/model",
		"run_id": run.ID, "tags": []map[string]string{{"key": "framework", "value": "xgboost"}}, "description": "first"})
	if raw.Status != 200 {
		t.Fatalf("create version: %d %s", raw.Status, raw.Body)
	}
	var wire map[string]map[string]any
	raw.JSON(t, &wire)
	mv := wire["model_version"]
	for _, k := range []string{"name", "version", "creation_timestamp", "last_updated_timestamp", "current_stage", "description", "source",
		"run_id", "status", "status_message", "tags", "run_link", "aliases"} {
		if _, ok := mv[k]; !ok {
			t.Errorf("model_version has no %s: %s", k, raw.Body)
		}
	}
	if _, ok := mv["creation_timestamp"].(float64); !ok || mv["version"] != "1" || mv["status"] != "READY" || mv["current_stage"] != "None" ||
		mv["run_id"] != run.ID || mv["source"] != "runs:/"+run.ID+"/model" {
		t.Fatalf("created version: %s", raw.Body)
	}
	var v2 mlrVersion
	ed.ok("POST", "model-versions/create", map[string]any{"name": "fraud", "source": "s3://models/fraud/2"}, &v2)
	if v2.ModelVersion.Version != "2" || v2.ModelVersion.RunID != "" || v2.ModelVersion.Description != "" {
		t.Fatalf("version 2 = %+v", v2.ModelVersion)
	}
	ed.fails(400, "INVALID_PARAMETER_VALUE", "POST", "model-versions/create", map[string]any{"name": "fraud"}) // no source
	ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "POST", "model-versions/create", map[string]any{"name": "nope", "source": "s3://x"})
	ed.fails(400, "INVALID_PARAMETER_VALUE", "POST", "model-versions/create",
		map[string]any{"name": "fraud", "source": "s3://x", "run_id": "0123456789abcdef0123456789abcdef"}) // no such run

	// update_model_version, get_model_version; errors in MLflow's order.
	var upd mlrVersion
	ed.ok("PATCH", "model-versions/update", map[string]any{"name": "fraud", "version": "1", "description": "first, tuned"}, &upd)
	if upd.ModelVersion.Description != "first, tuned" || upd.ModelVersion.Version != "1" {
		t.Fatalf("updated = %+v", upd.ModelVersion)
	}
	if got := ed.version("fraud", "1"); got.Description != "first, tuned" || jsonOf(got.Tags) != `[{"key":"framework","value":"xgboost"}]` {
		t.Fatalf("version 1 = %+v", got)
	}
	ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "model-versions/get", map[string]any{"name": "fraud"})
	if msg := ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "model-versions/get", map[string]any{"name": "fraud", "version": "x"}); msg != "Parameter 'version' must be an integer, got 'x'." {
		t.Fatalf("version x: %q", msg)
	}
	if msg := ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "GET", "model-versions/get", map[string]any{"name": "fraud", "version": "9"}); msg != "Model Version (name=fraud, version=9) not found" {
		t.Fatalf("version 9: %q", msg)
	}
	ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "PATCH", "model-versions/update", map[string]any{"name": "fraud", "version": 9, "description": "x"})

	// transition_model_version_stage: approvers only; stage names in any
	// case; at most one version in Production unless the current one is
	// archived in the same step.
	msg := ed.fails(403, "PERMISSION_DENIED", "POST", "model-versions/transition-stage",
		map[string]any{"name": "fraud", "version": "1", "stage": "Staging", "archive_existing_versions": false})
	if !strings.Contains(msg, "role") {
		t.Fatalf("editor's transition: %q", msg)
	}
	var tr mlrVersion
	ap.ok("POST", "model-versions/transition-stage", map[string]any{"name": "fraud", "version": "2", "stage": "production", "archive_existing_versions": false}, &tr)
	if tr.ModelVersion.CurrentStage != "Production" {
		t.Fatalf("transitioned = %+v", tr.ModelVersion)
	}
	msg = ap.fails(409, "RESOURCE_CONFLICT", "POST", "model-versions/transition-stage",
		map[string]any{"name": "fraud", "version": "1", "stage": "Production", "archive_existing_versions": false})
	if !strings.Contains(msg, "archive_existing_versions=true") {
		t.Fatalf("second version to production: %q", msg)
	}
	ap.fails(400, "INVALID_PARAMETER_VALUE", "POST", "model-versions/transition-stage",
		map[string]any{"name": "fraud", "version": "1", "stage": "Shipped", "archive_existing_versions": false})
	ap.fails(400, "INVALID_PARAMETER_VALUE", "POST", "model-versions/transition-stage",
		map[string]any{"name": "fraud", "version": "1", "stage": "None", "archive_existing_versions": true})
	ap.ok("POST", "model-versions/transition-stage", map[string]any{"name": "fraud", "version": "1", "stage": "Production", "archive_existing_versions": true}, &tr)
	if got := ed.version("fraud", "2"); got.CurrentStage != "Archived" {
		t.Fatalf("version 2 after archive_existing_versions: %+v", got)
	}
	// The same change on Maestro's API.
	if got := asJSON[api.VersionResponse](t, call(t, e, 200, "GET", maestro+"/models/fraud/versions/1", p.viewer.Token, nil)); got.Stage != "production" || got.Description != "first, tuned" || got.RunID != run.ID {
		t.Fatalf("Maestro's version 1 = %+v", got)
	}

	// get_latest_versions: POST, and GET (the client's fallback).
	var latest mlrVersions
	ed.ok("POST", "registered-models/get-latest-versions", map[string]any{"name": "fraud", "stages": []string{"Production"}}, &latest)
	wantVersions(t, "latest production", latest.ModelVersions, "fraud/1@Production")
	ed.ok("GET", "registered-models/get-latest-versions", map[string]any{"name": "fraud", "stages": []string{"archived", "Production"}}, &latest)
	wantVersions(t, "latest archived+production", latest.ModelVersions, "fraud/1@Production", "fraud/2@Archived")
	ed.ok("POST", "registered-models/get-latest-versions", map[string]any{"name": "fraud"}, &latest)
	wantVersions(t, "latest of every stage", latest.ModelVersions, "fraud/1@Production", "fraud/2@Archived")
	ed.fails(400, "INVALID_PARAMETER_VALUE", "POST", "registered-models/get-latest-versions", map[string]any{"name": "fraud", "stages": []string{"Shipped"}})
	wantVersions(t, "latest_versions", ed.model("fraud").LatestVersions, "fraud/1@Production", "fraud/2@Archived")

	// Aliases: set (approvers), get by alias, shown on the model and version.
	ed.fails(403, "PERMISSION_DENIED", "POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "champion", "version": "1"})
	ap.ok("POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "champion", "version": "1"}, nil)
	ap.ok("POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "challenger", "version": "2"}, nil)
	ap.fails(404, "RESOURCE_DOES_NOT_EXIST", "POST", "registered-models/alias", map[string]any{"name": "fraud", "alias": "x", "version": "7"})
	var byAlias mlrVersion
	ed.ok("GET", "registered-models/alias", map[string]any{"name": "fraud", "alias": "champion"}, &byAlias)
	if byAlias.ModelVersion.Version != "1" || !slices.Equal(byAlias.ModelVersion.Aliases, []string{"champion"}) {
		t.Fatalf("by alias = %+v", byAlias.ModelVersion)
	}
	if msg := ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "registered-models/alias", map[string]any{"name": "fraud", "alias": "champ"}); msg != "Registered model alias champ not found." {
		t.Fatalf("unknown alias: %q", msg)
	}
	if got := ed.model("fraud").Aliases; !slices.Equal(got, []api.MLflowModelAlias{{Alias: "challenger", Version: "2"}, {Alias: "champion", Version: "1"}}) {
		t.Fatalf("aliases = %+v", got)
	}
	ap.ok("DELETE", "registered-models/alias", map[string]any{"name": "fraud", "alias": "challenger"}, nil)
	ap.ok("DELETE", "registered-models/alias", map[string]any{"name": "fraud", "alias": "challenger"}, nil) // gone already: no error
	if got := asJSON[api.ModelResponse](t, call(t, e, 200, "GET", maestro+"/models/fraud", p.viewer.Token, nil)); len(got.Aliases) != 1 || got.Aliases["champion"] != 1 {
		t.Fatalf("Maestro's aliases = %+v", got.Aliases)
	}

	// Tags of models and versions; deleting a missing one is no error.
	ed.ok("POST", "registered-models/set-tag", map[string]any{"name": "fraud", "key": "owner", "value": "ana"}, nil)
	ed.ok("DELETE", "registered-models/delete-tag", map[string]any{"name": "fraud", "key": "team"}, nil)
	ed.ok("DELETE", "registered-models/delete-tag", map[string]any{"name": "fraud", "key": "team"}, nil)
	ed.fails(400, "INVALID_PARAMETER_VALUE", "POST", "registered-models/set-tag", map[string]any{"name": "fraud", "value": "x"})
	ed.ok("POST", "model-versions/set-tag", map[string]any{"name": "fraud", "version": "1", "key": "validated", "value": "yes"}, nil)
	ed.ok("DELETE", "model-versions/delete-tag", map[string]any{"name": "fraud", "version": "1", "key": "framework"}, nil)
	ed.ok("DELETE", "model-versions/delete-tag", map[string]any{"name": "fraud", "version": "1", "key": "framework"}, nil)
	ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "POST", "model-versions/set-tag", map[string]any{"name": "fraud", "version": "9", "key": "k", "value": "v"})
	if got := jsonOf(ed.model("fraud").Tags); got != `[{"key":"owner","value":"ana"}]` {
		t.Fatalf("model tags = %+v", got)
	}
	if got := asJSON[api.VersionResponse](t, call(t, e, 200, "GET", maestro+"/models/fraud/versions/1", p.viewer.Token, nil)); len(got.Tags) != 1 || got.Tags["validated"] != "yes" {
		t.Fatalf("Maestro's version tags = %+v", got.Tags)
	}
	var updated mlrModel
	ed.ok("PATCH", "registered-models/update", map[string]any{"name": "fraud", "description": "card fraud, v2"}, &updated)
	if updated.RegisteredModel.Description != "card fraud, v2" {
		t.Fatalf("updated model = %+v", updated.RegisteredModel)
	}

	// search_model_versions, as the client asks (max_results 10,000).
	ed.ok("POST", "registered-models/create", map[string]any{"name": "churn"}, nil)
	ed.ok("POST", "model-versions/create", map[string]any{"name": "churn", "source": "s3://models/churn/1", "run_id": run.ID}, nil)
	search := func(filter string, order ...string) []api.MLflowModelVersion {
		t.Helper()
		var out mlrVersions
		ed.ok("GET", "model-versions/search", map[string]any{"filter": filter, "max_results": "10000", "order_by": order}, &out)
		if out.NextPageToken != "" {
			t.Fatalf("search %q: a next page", filter)
		}
		return out.ModelVersions
	}
	wantVersions(t, "all versions", search(""), "churn/1@None", "fraud/2@Archived", "fraud/1@Production")
	wantVersions(t, "by run", search("run_id = '"+run.ID+"'"), "churn/1@None", "fraud/1@Production")
	wantVersions(t, "by run, MLflow's id form", search("run_id IN ('"+strings.ReplaceAll(run.ID, "-", "")+"', 'other')"), "churn/1@None", "fraud/1@Production")
	wantVersions(t, "by name and number", search("name = 'fraud' AND version_number >= 2"), "fraud/2@Archived")
	wantVersions(t, "by source", search("source_path LIKE 's3://%'"), "churn/1@None", "fraud/2@Archived")
	wantVersions(t, "by tag", search("tags.validated = 'yes'"), "fraud/1@Production")
	wantVersions(t, "ordered", search("", "version_number DESC", "name DESC"), "fraud/2@Archived", "fraud/1@Production", "churn/1@None")
	ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "model-versions/search", map[string]any{"filter": "metrics.auc > 1"})
	ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "model-versions/search", map[string]any{"filter": "name = 'a' OR name = 'b'"})
	ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "model-versions/search", map[string]any{"max_results": "200001"})

	// search_registered_models: filter, order, pages.
	ed.ok("POST", "registered-models/create", map[string]any{"name": "fraud-eu", "tags": []map[string]string{{"key": "owner", "value": "ana"}}}, nil)
	var page mlrModels
	ed.ok("GET", "registered-models/search", map[string]any{"filter": "name LIKE 'fraud%'", "order_by": []string{"name DESC"}}, &page)
	if len(page.RegisteredModels) != 2 || page.RegisteredModels[0].Name != "fraud-eu" || page.RegisteredModels[1].Name != "fraud" || page.NextPageToken != "" {
		t.Fatalf("search = %+v", page)
	}
	wantVersions(t, "searched model's latest", page.RegisteredModels[1].LatestVersions, "fraud/1@Production", "fraud/2@Archived")
	var names []string
	token := ""
	for {
		var pg mlrModels
		ed.ok("GET", "registered-models/search", map[string]any{"filter": "tags.owner = 'ana'", "max_results": "1", "page_token": token}, &pg)
		for _, m := range pg.RegisteredModels {
			names = append(names, m.Name)
		}
		if token = pg.NextPageToken; token == "" {
			break
		}
		ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "registered-models/search", map[string]any{"filter": "tags.owner = 'bob'", "page_token": token})
	}
	if !slices.Equal(names, []string{"fraud", "fraud-eu"}) {
		t.Fatalf("paged search = %v", names)
	}
	ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "registered-models/search", map[string]any{"max_results": "1001"})
	ed.fails(400, "INVALID_PARAMETER_VALUE", "GET", "registered-models/search", map[string]any{"filter": "run_id = 'x'"})

	// get_model_version_download_uri: the source; without one (registered
	// on Maestro's API), the version's own artifacts on Maestro.
	var dl struct {
		ArtifactURI string `json:"artifact_uri"`
	}
	ed.ok("GET", "model-versions/get-download-uri", map[string]any{"name": "fraud", "version": "1"}, &dl)
	if dl.ArtifactURI != "runs:/"+run.ID+"/model" {
		t.Fatalf("download uri = %q", dl.ArtifactURI)
	}
	call(t, e, 201, "POST", maestro+"/models/churn/versions", p.editor.Token, map[string]any{"description": "uploaded"})
	ed.ok("GET", "model-versions/get-download-uri", map[string]any{"name": "churn", "version": "2"}, &dl)
	if dl.ArtifactURI != "mlflow-artifacts:/models/churn/versions/2/artifacts" {
		t.Fatalf("download uri = %q", dl.ArtifactURI)
	}

	// rename_registered_model: the old name is gone for reads and writes,
	// and stays the model's: no other model takes it; renaming back works.
	var renamed mlrModel
	ed.ok("POST", "registered-models/rename", map[string]any{"name": "fraud", "new_name": "fraud-global"}, &renamed)
	if renamed.RegisteredModel.Name != "fraud-global" || len(renamed.RegisteredModel.LatestVersions) != 2 {
		t.Fatalf("renamed = %+v", renamed.RegisteredModel)
	}
	ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "GET", "registered-models/get", map[string]any{"name": "fraud"})
	ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "POST", "registered-models/set-tag", map[string]any{"name": "fraud", "key": "k", "value": "v"})
	if got := ed.version("fraud-global", "1"); got.Name != "fraud-global" || got.CurrentStage != "Production" {
		t.Fatalf("renamed model's version = %+v", got)
	}
	call(t, e, 200, "GET", maestro+"/models/fraud-global", p.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", maestro+"/models/fraud", p.viewer.Token, nil)
	ed.fails(400, "RESOURCE_ALREADY_EXISTS", "POST", "registered-models/create", map[string]any{"name": "fraud"})
	ed.fails(400, "RESOURCE_ALREADY_EXISTS", "POST", "registered-models/rename", map[string]any{"name": "churn", "new_name": "fraud"})
	ed.fails(400, "RESOURCE_ALREADY_EXISTS", "POST", "registered-models/rename", map[string]any{"name": "churn", "new_name": "Fraud-EU"})
	ed.fails(400, "INVALID_PARAMETER_VALUE", "POST", "registered-models/rename", map[string]any{"name": "churn"})
	ed.ok("POST", "registered-models/rename", map[string]any{"name": "fraud-global", "new_name": "fraud"}, nil)
	wantVersions(t, "renamed back", ed.model("fraud").LatestVersions, "fraud/1@Production", "fraud/2@Archived")

	// delete_model_version: a plain version by an editor; a deployed one
	// (Production, or an alias's) needs an approver. Gone for MLflow.
	ed.fails(403, "PERMISSION_DENIED", "DELETE", "model-versions/delete", map[string]any{"name": "fraud", "version": "1"})
	ed.ok("DELETE", "model-versions/delete", map[string]any{"name": "fraud", "version": "2"}, nil)
	ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "GET", "model-versions/get", map[string]any{"name": "fraud", "version": "2"})
	ed.fails(404, "RESOURCE_DOES_NOT_EXIST", "DELETE", "model-versions/delete", map[string]any{"name": "fraud", "version": "2"})
	wantVersions(t, "latest after deletion", ed.model("fraud").LatestVersions, "fraud/1@Production")
	if got := asJSON[api.VersionResponse](t, call(t, e, 200, "GET", maestro+"/models/fraud/versions/2", p.viewer.Token, nil)); !got.Deleted {
		t.Fatalf("Maestro's version 2 = %+v", got)
	}
	var next mlrVersion
	ed.ok("POST", "model-versions/create", map[string]any{"name": "fraud", "source": "s3://models/fraud/3"}, &next)
	if next.ModelVersion.Version != "3" {
		t.Fatalf("after a deletion the next version is %s, want 3 (numbers are never reused)", next.ModelVersion.Version)
	}

	// delete_registered_model: a model with a deployed version needs an
	// approver; then it is gone for MLflow and deleted on Maestro's API.
	ed.fails(403, "PERMISSION_DENIED", "DELETE", "registered-models/delete", map[string]any{"name": "fraud"})
	owner.ok("DELETE", "registered-models/delete", map[string]any{"name": "fraud"}, nil)
	owner.fails(404, "RESOURCE_DOES_NOT_EXIST", "GET", "registered-models/get", map[string]any{"name": "fraud"})
	owner.fails(404, "RESOURCE_DOES_NOT_EXIST", "DELETE", "registered-models/delete", map[string]any{"name": "fraud"})
	owner.fails(404, "RESOURCE_DOES_NOT_EXIST", "POST", "model-versions/create", map[string]any{"name": "fraud", "source": "s3://x"})
	if got := asJSON[api.ModelResponse](t, call(t, e, 200, "GET", maestro+"/models/fraud", p.viewer.Token, nil)); !got.Deleted {
		t.Fatalf("Maestro's model = %+v", got)
	}
	wantVersions(t, "versions of a deleted model", search("name = 'fraud'"))
	var left mlrModels
	ed.ok("GET", "registered-models/search", map[string]any{}, &left)
	if len(left.RegisteredModels) != 2 || left.RegisteredModels[0].Name != "churn" || left.RegisteredModels[1].Name != "fraud-eu" {
		t.Fatalf("models left = %+v", left.RegisteredModels)
	}
}

// The three ways in (tracking URI, ajax-api, bare /api/2.0 with a scoped
// token as HTTP Basic's password), the roles the registry asks for, and
// refusals in MLflow's shape.
func TestMLflowRegistryAccess(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@mlaccess.test").AccessToken
	p := newMLflowRegistryProject(t, e, admin, "Access A")
	other := newMLflowRegistryProject(t, e, admin, "Access B")
	p.asEditor.ok("POST", "registered-models/create", map[string]any{"name": "m"}, nil)
	other.asEditor.ok("POST", "registered-models/create", map[string]any{"name": "only-b"}, nil)

	scoped := createToken(t, e, p.editor.Token, map[string]any{"name": "mlflow", "project": p.proj.Slug})
	unscoped := createToken(t, e, p.editor.Token, map[string]any{"name": "all"})
	ways := map[string]mlrClient{
		"tracking URI":                  {t: t, e: e, base: "/mlflow/" + p.proj.Slug + "/api/2.0", token: p.editor.Token},
		"ajax-api":                      {t: t, e: e, base: "/mlflow/" + p.proj.Slug + "/ajax-api/2.0", token: p.editor.Token},
		"tracking URI by id, Basic":     {t: t, e: e, base: "/mlflow/" + p.proj.ID + "/api/2.0", headers: basic(unscoped.Token)},
		"bare /api/2.0, scoped, Basic":  {t: t, e: e, base: "/api/2.0", headers: basic(scoped.Token)},
		"bare /api/2.0, scoped, Bearer": {t: t, e: e, base: "/api/2.0", token: scoped.Token},
	}
	for way, c := range ways {
		var v mlrVersion
		c.ok("POST", "model-versions/create", map[string]any{"name": "m", "source": "s3://m/" + way}, &v)
		if got := c.version("m", v.ModelVersion.Version); got.Source != "s3://m/"+way {
			t.Fatalf("%s: read back %+v", way, got)
		}
	}
	var all mlrVersions
	p.asViewer.ok("GET", "model-versions/search", map[string]any{"filter": "name = 'm'"}, &all)
	if len(all.ModelVersions) != len(ways) {
		t.Fatalf("versions registered = %d, want %d", len(all.ModelVersions), len(ways))
	}

	// The bare paths need a scoped token; a scoped token sees only its project.
	bare := mlrClient{t: t, e: e, base: "/api/2.0", headers: basic(unscoped.Token)}
	bare.fails(400, "BAD_REQUEST", "GET", "registered-models/get", map[string]any{"name": "m"})
	elsewhere := mlrClient{t: t, e: e, base: "/mlflow/" + other.proj.Slug + "/api/2.0", headers: basic(scoped.Token)}
	elsewhere.fails(404, "RESOURCE_DOES_NOT_EXIST", "GET", "registered-models/get", map[string]any{"name": "only-b"})
	elsewhere.fails(404, "RESOURCE_DOES_NOT_EXIST", "POST", "registered-models/create", map[string]any{"name": "sneaky"})
	outsider := mlrClient{t: t, e: e, base: "/mlflow/" + other.proj.Slug + "/api/2.0", token: p.editor.Token}
	outsider.fails(404, "RESOURCE_DOES_NOT_EXIST", "GET", "registered-models/search", nil)
	anonymous := mlrClient{t: t, e: e, base: "/mlflow/" + p.proj.Slug + "/api/2.0"}
	anonymous.fails(401, "UNAUTHENTICATED", "GET", "registered-models/get", map[string]any{"name": "m"})

	// Roles: viewers read, editors write, approvers move stages and aliases.
	p.asViewer.ok("GET", "registered-models/get", map[string]any{"name": "m"}, nil)
	p.asViewer.fails(403, "PERMISSION_DENIED", "POST", "registered-models/create", map[string]any{"name": "v"})
	p.asViewer.fails(403, "PERMISSION_DENIED", "POST", "registered-models/set-tag", map[string]any{"name": "m", "key": "k", "value": "v"})
	p.asEditor.fails(403, "PERMISSION_DENIED", "POST", "model-versions/transition-stage",
		map[string]any{"name": "m", "version": "1", "stage": "Staging", "archive_existing_versions": false})
	p.asEditor.fails(403, "PERMISSION_DENIED", "DELETE", "registered-models/alias", map[string]any{"name": "m", "alias": "a"})
	p.asApprover.ok("POST", "model-versions/transition-stage", map[string]any{"name": "m", "version": "1", "stage": "Staging", "archive_existing_versions": false}, nil)
	capped := createToken(t, e, p.approver.Token, map[string]any{"name": "ci", "project": p.proj.Slug, "role": "editor"})
	cappedClient := mlrClient{t: t, e: e, base: "/api/2.0", headers: basic(capped.Token)}
	cappedClient.fails(403, "PERMISSION_DENIED", "POST", "registered-models/alias", map[string]any{"name": "m", "alias": "a", "version": "1"})

	// Request shapes: Content-Type, missing fields before existence, unknown
	// fields ignored, the legacy body-as-a-JSON-string.
	r := e.Do("POST", "/mlflow/"+p.proj.Slug+"/api/2.0/mlflow/registered-models/create", p.editor.Token, []byte(`{"name":"x"}`), "Content-Type", "text/plain")
	if err := checkMLflowError(r, 400, "INVALID_PARAMETER_VALUE"); err != nil {
		t.Fatal(err)
	}
	p.asEditor.fails(400, "INVALID_PARAMETER_VALUE", "POST", "registered-models/create", map[string]any{})
	p.asEditor.fails(400, "INVALID_PARAMETER_VALUE", "GET", "model-versions/get", map[string]any{"name": "nope"}) // version missing: 400 first
	p.asEditor.fails(400, "INVALID_PARAMETER_VALUE", "POST", "registered-models/create", map[string]any{"name": "has space"})
	p.asEditor.ok("POST", "registered-models/create", map[string]any{"name": "extra", "unknown_field": 1}, nil)
	r = e.Do("POST", "/mlflow/"+p.proj.Slug+"/api/2.0/mlflow/registered-models/set-tag", p.editor.Token, []byte(`"{\"name\":\"extra\",\"key\":\"k\",\"value\":\"v\"}"`))
	if r.Status != 200 {
		t.Fatalf("body as a JSON string: %d %s", r.Status, r.Body)
	}

	// Unknown RPCs and methods are ENDPOINT_NOT_FOUND (the client's cue
	// to fall back, as get-latest-versions does).
	for _, c := range []struct{ method, rpc string }{{"GET", "registered-models/nope"}, {"PUT", "registered-models/create"}, {"POST", "model-versions/get"}} {
		r := e.Do(c.method, "/mlflow/"+p.proj.Slug+"/api/2.0/mlflow/"+c.rpc, p.editor.Token, map[string]any{})
		if err := checkMLflowError(r, 404, "ENDPOINT_NOT_FOUND"); err != nil {
			t.Fatalf("%s %s: %v", c.method, c.rpc, err)
		}
	}

	// An archived project takes no writes; reads go on.
	call(t, e, 200, "DELETE", projectsPath+"/"+p.proj.Slug, p.owner.Token, nil)
	p.asEditor.fails(400, "INVALID_PARAMETER_VALUE", "POST", "registered-models/set-tag", map[string]any{"name": "m", "key": "k", "value": "v"})
	p.asEditor.fails(400, "INVALID_PARAMETER_VALUE", "POST", "registered-models/create", map[string]any{"name": "late"})
	p.asEditor.ok("GET", "registered-models/get", map[string]any{"name": "m"}, nil)
}
