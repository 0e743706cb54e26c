package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// Registry routes through HTTP: projects, members, models, versions, stage
// transitions, aliases and point-in-time reads.

const projectsPath = "/api/v1/projects"

// regClient is a user of the registry tests: an id and a token.
type regClient struct {
	ID    string
	Token string
}

func regUser(e *testenv.Env, admin, email, role string) regClient {
	e.T.Helper()
	u, tok := e.UserWithRole(admin, email, role)
	return regClient{ID: u.ID, Token: tok.AccessToken}
}

// call sends a request and fails t unless it got status.
func call(t *testing.T, e *testenv.Env, status int, method, path, token string, body any, headers ...string) testenv.Response {
	t.Helper()
	r := e.Do(method, path, token, body, headers...)
	if r.Status != status {
		t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Body, status)
	}
	return r
}

// callProblem is call for an error response of a given problem type.
func callProblem(t *testing.T, e *testenv.Env, status int, code, method, path, token string, body any, headers ...string) {
	t.Helper()
	r := e.Do(method, path, token, body, headers...)
	if _, err := checkProblem(r, status, code); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

func asJSON[T any](t *testing.T, r testenv.Response) T {
	t.Helper()
	var v T
	r.JSON(t, &v)
	return v
}

// huge is over every JSON route's body limit: 64 KiB by default, 2 MiB on
// the tracking routes (MLflow's batch limits).
var huge = bytes.Repeat([]byte(" "), 2<<20+1)

// commandErrors provokes the errors every command route shares: 401 without
// a token, 400 for a bad Idempotency-Key, 413 for a huge body (read by the
// idempotency layer even on routes without a body), 415 for a non-JSON body
// where there is one, and 422 when a key is reused: first at missing (a path
// of the same route that answers 4xx, so nothing happens), then at path.
func commandErrors(t *testing.T, e *testenv.Env, token, method, path, missing string, body any, key string) []int {
	t.Helper()
	codes := []int{401, 400, 413, 422}
	call(t, e, 401, method, path, "", body)
	callProblem(t, e, 400, "invalid-idempotency-key", method, path, token, body, "Idempotency-Key", "bad key")
	callProblem(t, e, 413, "payload-too-large", method, path, token, huge, "Idempotency-Key", key+"-huge")
	if body != nil {
		callProblem(t, e, 415, "unsupported-media-type", method, path, token, []byte(`{}`), "Content-Type", "text/plain")
		codes = append(codes, 415)
	}
	first := e.Do(method, missing, token, body, "Idempotency-Key", key)
	if first.Status < 400 || first.Status > 499 {
		t.Fatalf("%s %s (to set up a key reuse): %d %s, want a 4xx", method, missing, first.Status, first.Body)
	}
	callProblem(t, e, 422, "idempotency-key-reused", method, path, token, body, "Idempotency-Key", key)
	return codes
}

// walkRegistry exercises every registry route's success and main errors
// and returns, per operation, the statuses it provoked (TestOpenAPIConformance
// checks them against the document; the Observe of e validates each exchange).
func walkRegistry(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	async := []string{"Prefer", "respond-async"}

	owner := regUser(e, admin, "reg-owner@example.com", "member")
	editor := regUser(e, admin, "reg-editor@example.com", "viewer")
	approver := regUser(e, admin, "reg-approver@example.com", "viewer")
	viewer := regUser(e, admin, "reg-viewer@example.com", "viewer")
	outsider := regUser(e, admin, "reg-outsider@example.com", "member")

	// Projects: create.
	r := call(t, e, 201, "POST", projectsPath, owner.Token, map[string]any{"name": "Fraud Detection", "description": "card fraud"})
	proj := asJSON[api.ProjectResponse](t, r)
	if proj.Slug != "fraud-detection" || proj.Role != "owner" || r.Header.Get("Location") != projectsPath+"/fraud-detection" {
		t.Fatalf("created project: %s (Location %q)", r.Body, r.Header.Get("Location"))
	}
	pp := projectsPath + "/" + proj.Slug
	callProblem(t, e, 409, "project-exists", "POST", projectsPath, owner.Token, map[string]any{"name": "FRAUD detection!"})
	callProblem(t, e, 403, "forbidden", "POST", projectsPath, viewer.Token, map[string]any{"name": "Mine"})
	callProblem(t, e, 400, "validation-failed", "POST", projectsPath, owner.Token, map[string]any{"name": " -- "})
	call(t, e, 202, "POST", projectsPath, owner.Token, map[string]any{"name": "Async Project"}, async...)
	callProblem(t, e, 400, "invalid-idempotency-key", "POST", projectsPath, owner.Token, map[string]any{"name": "K"}, "Idempotency-Key", "bad key")
	callProblem(t, e, 413, "payload-too-large", "POST", projectsPath, owner.Token, huge)
	callProblem(t, e, 415, "unsupported-media-type", "POST", projectsPath, owner.Token, []byte(`{}`), "Content-Type", "text/plain")
	call(t, e, 401, "POST", projectsPath, "", map[string]any{"name": "K"})
	call(t, e, 400, "POST", projectsPath, owner.Token, map[string]any{"name": ""}, "Idempotency-Key", "cp-1")
	callProblem(t, e, 422, "idempotency-key-reused", "POST", projectsPath, owner.Token, map[string]any{"name": "Other"}, "Idempotency-Key", "cp-1")
	add("createProject", 201, 202, 400, 401, 403, 409, 413, 415, 422)

	// Members.
	mp := func(id string) string { return pp + "/members/" + id }
	r = call(t, e, 200, "PUT", mp(editor.ID), owner.Token, map[string]any{"role": "editor"})
	if m := asJSON[api.MemberResponse](t, r); m.UserID != editor.ID || m.Role != "editor" || m.Email != "reg-editor@example.com" {
		t.Fatalf("set member: %s", r.Body)
	}
	call(t, e, 200, "PUT", mp(approver.ID), owner.Token, map[string]any{"role": "approver"})
	call(t, e, 202, "PUT", mp(viewer.ID), owner.Token, map[string]any{"role": "viewer"}, async...)
	callProblem(t, e, 400, "validation-failed", "PUT", mp(viewer.ID), owner.Token, map[string]any{"role": "boss"})
	callProblem(t, e, 403, "forbidden", "PUT", mp(viewer.ID), editor.Token, map[string]any{"role": "editor"})
	callProblem(t, e, 404, "not-found", "PUT", mp(viewer.ID), outsider.Token, map[string]any{"role": "editor"})
	callProblem(t, e, 404, "not-found", "PUT", mp("00000000-0000-4000-8000-000000000000"), owner.Token, map[string]any{"role": "viewer"})
	callProblem(t, e, 409, "last-owner", "PUT", mp(owner.ID), owner.Token, map[string]any{"role": "editor"})
	add("setMember", 200, 202, 400, 403, 404, 409)
	add("setMember", commandErrors(t, e, owner.Token, "PUT", mp(viewer.ID), projectsPath+"/nope/members/"+viewer.ID, map[string]any{"role": "viewer"}, "sm")...)

	r = call(t, e, 200, "GET", pp+"/members", viewer.Token, nil)
	if ms := asJSON[api.MemberList](t, r); len(ms.Items) != 4 || ms.Items[0].AddedAt.IsZero() {
		t.Fatalf("members: %s", r.Body)
	}
	call(t, e, 404, "GET", pp+"/members", outsider.Token, nil)
	call(t, e, 401, "GET", pp+"/members", "", nil)
	call(t, e, 400, "GET", pp+"/members?min_sequence=x", owner.Token, nil)
	add("listMembers", 200, 400, 401, 404)

	call(t, e, 200, "PUT", mp(outsider.ID), owner.Token, map[string]any{"role": "viewer"})
	call(t, e, 204, "DELETE", mp(outsider.ID), owner.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", mp(outsider.ID), owner.Token, nil)
	callProblem(t, e, 409, "last-owner", "DELETE", mp(owner.ID), owner.Token, nil)
	callProblem(t, e, 403, "forbidden", "DELETE", mp(viewer.ID), editor.Token, nil)
	call(t, e, 200, "PUT", mp(outsider.ID), owner.Token, map[string]any{"role": "viewer"})
	removed := call(t, e, 202, "DELETE", mp(outsider.ID), owner.Token, nil, async...).Header.Get("Maestro-Sequence")
	add("removeMember", 202, 204, 403, 404, 409)
	add("removeMember", commandErrors(t, e, owner.Token, "DELETE", mp(viewer.ID), projectsPath+"/nope/members/"+viewer.ID, nil, "rm")...)

	// Projects: read and change.
	r = call(t, e, 200, "GET", projectsPath+"?max_results=1", owner.Token, nil)
	pg := asJSON[api.ProjectPage](t, r)
	if len(pg.Items) != 1 || pg.NextPageToken == "" {
		t.Fatalf("projects page 1: %s", r.Body)
	}
	call(t, e, 200, "GET", projectsPath+"?page_token="+url.QueryEscape(pg.NextPageToken), owner.Token, nil)
	if pg := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", projectsPath+"?min_sequence="+removed, outsider.Token, nil)); len(pg.Items) != 0 {
		t.Fatalf("an outsider lists %+v", pg.Items)
	}
	callProblem(t, e, 400, "invalid-page-token", "GET", projectsPath+"?page_token=nope", owner.Token, nil)
	call(t, e, 400, "GET", projectsPath+"?include_archived=yes", owner.Token, nil)
	call(t, e, 401, "GET", projectsPath, "", nil)
	add("listProjects", 200, 400, 401)

	r = call(t, e, 200, "GET", pp, viewer.Token, nil)
	if got := asJSON[api.ProjectResponse](t, r); got.ID != proj.ID || got.Role != "viewer" {
		t.Fatalf("get project: %s", r.Body)
	}
	call(t, e, 200, "GET", projectsPath+"/"+proj.ID, admin, nil)
	callProblem(t, e, 404, "not-found", "GET", pp, outsider.Token, nil)
	call(t, e, 401, "GET", pp, "", nil)
	call(t, e, 400, "GET", pp+"?min_sequence=-1", owner.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", pp+"?min_sequence=999999999", owner.Token, nil)
	add("getProject", 200, 400, 401, 404, 503)

	call(t, e, 200, "PATCH", pp, owner.Token, map[string]any{"description": "all card fraud"})
	call(t, e, 202, "PATCH", pp, owner.Token, map[string]any{"description": "card fraud"}, async...)
	callProblem(t, e, 400, "validation-failed", "PATCH", pp, owner.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "PATCH", pp, editor.Token, map[string]any{"description": "x"})
	callProblem(t, e, 404, "not-found", "PATCH", pp, outsider.Token, map[string]any{"description": "x"})
	add("updateProject", 200, 202, 400, 403, 404)
	add("updateProject", commandErrors(t, e, owner.Token, "PATCH", pp, projectsPath+"/nope", map[string]any{"description": "d"}, "up")...)

	// Models.
	models := pp + "/models"
	r = call(t, e, 201, "POST", models, editor.Token, map[string]any{"name": "Churn", "description": "who leaves", "tags": map[string]string{"team": "risk"}})
	model := asJSON[api.ModelResponse](t, r)
	if model.Name != "Churn" || model.Tags["team"] != "risk" || model.LatestVersion != 0 || r.Header.Get("Location") == "" {
		t.Fatalf("created model: %s", r.Body)
	}
	m := models + "/churn" // names are case-insensitive
	callProblem(t, e, 409, "model-exists", "POST", models, editor.Token, map[string]any{"name": "CHURN"})
	callProblem(t, e, 403, "forbidden", "POST", models, viewer.Token, map[string]any{"name": "x"})
	callProblem(t, e, 404, "not-found", "POST", models, outsider.Token, map[string]any{"name": "x"})
	callProblem(t, e, 400, "validation-failed", "POST", models, editor.Token, map[string]any{"name": "no spaces"})
	call(t, e, 202, "POST", models, editor.Token, map[string]any{"name": "scorer"}, async...)
	add("createModel", 201, 202, 400, 403, 404, 409)
	add("createModel", commandErrors(t, e, editor.Token, "POST", models, projectsPath+"/nope/models", map[string]any{"name": "k"}, "cm")...)

	r = call(t, e, 200, "GET", models+"?name_prefix=CH&tag_key=team&tag_value=risk&order_by=updated&max_results=5", viewer.Token, nil)
	if mpg := asJSON[api.ModelPage](t, r); len(mpg.Items) != 1 || mpg.Items[0].ID != model.ID {
		t.Fatalf("filtered models: %s", r.Body)
	}
	call(t, e, 400, "GET", models+"?tag_value=risk", viewer.Token, nil)
	call(t, e, 400, "GET", models+"?order_by=size", viewer.Token, nil)
	callProblem(t, e, 400, "invalid-page-token", "GET", models+"?page_token=x", viewer.Token, nil)
	call(t, e, 404, "GET", models, outsider.Token, nil)
	call(t, e, 401, "GET", models, "", nil)
	add("listModels", 200, 400, 401, 404)

	call(t, e, 200, "GET", m, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", models+"/nope", viewer.Token, nil)
	call(t, e, 404, "GET", m, outsider.Token, nil)
	call(t, e, 400, "GET", m+"?as_of=yesterday", viewer.Token, nil)
	call(t, e, 401, "GET", m, "", nil)
	add("getModel", 200, 400, 401, 404)

	// The model's history: its audit entries, for its readers.
	eventually(t, 30*time.Second, "the model's creation in its history", func() error {
		h := asJSON[api.AuditPage](t, call(t, e, 200, "GET", m+"/history?max_results=50", viewer.Token, nil))
		if len(h.Items) == 0 || h.Items[len(h.Items)-1].Type != "maestro.model.created.v1" || h.Items[len(h.Items)-1].Actor != "user:"+editor.ID {
			return fmt.Errorf("history %+v", h.Items)
		}
		return nil
	})
	callProblem(t, e, 400, "invalid-page-token", "GET", m+"/history?page_token=x", viewer.Token, nil)
	call(t, e, 404, "GET", m+"/history", outsider.Token, nil)
	call(t, e, 401, "GET", m+"/history", "", nil)
	add("getModelHistory", 200, 400, 401, 404)

	call(t, e, 200, "PATCH", m, editor.Token, map[string]any{"description": "who churns", "tags": map[string]string{"team": "risk", "tier": "1"}})
	call(t, e, 202, "PATCH", m, editor.Token, map[string]any{"description": "who leaves"}, async...)
	callProblem(t, e, 400, "validation-failed", "PATCH", m, editor.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "PATCH", m, viewer.Token, map[string]any{"description": "x"})
	callProblem(t, e, 404, "not-found", "PATCH", models+"/nope", editor.Token, map[string]any{"description": "x"})
	add("updateModel", 200, 202, 400, 403, 404)
	add("updateModel", commandErrors(t, e, editor.Token, "PATCH", m, models+"/nope", map[string]any{"description": "d"}, "um")...)

	call(t, e, 201, "POST", models, editor.Token, map[string]any{"name": "tmp"})
	tmp := models + "/tmp"
	if got := asJSON[api.ModelResponse](t, call(t, e, 200, "DELETE", tmp, editor.Token, nil)); !got.Deleted {
		t.Fatal("deleted model not marked deleted")
	}
	callProblem(t, e, 403, "forbidden", "DELETE", m, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", models+"/nope", editor.Token, nil)
	if got := asJSON[api.ModelResponse](t, call(t, e, 200, "POST", tmp+":restore", editor.Token, nil)); got.Deleted {
		t.Fatal("restored model still deleted")
	}
	callProblem(t, e, 403, "forbidden", "POST", tmp+":restore", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", models+"/nope:restore", editor.Token, nil)
	call(t, e, 202, "DELETE", tmp, editor.Token, nil, async...)
	call(t, e, 202, "POST", tmp+":restore", editor.Token, nil, async...)
	add("deleteModel", 200, 202, 403, 404)
	add("deleteModel", commandErrors(t, e, editor.Token, "DELETE", tmp, models+"/nope", nil, "dm")...)
	add("restoreModel", 200, 202, 403, 404)
	add("restoreModel", commandErrors(t, e, editor.Token, "POST", tmp+":restore", models+"/nope:restore", nil, "rsm")...)

	// Versions.
	vs := m + "/versions"
	// Version 1 is made from a run of the project (lineage).
	type idOnly struct {
		ID string `json:"id"`
	}
	xid := asJSON[idOnly](t, call(t, e, 201, "POST", pp+"/experiments", editor.Token, map[string]any{"name": "churn"})).ID
	runID := asJSON[idOnly](t, call(t, e, 201, "POST", pp+"/experiments/"+xid+"/runs", editor.Token, map[string]any{})).ID
	vbody := map[string]any{"description": "first", "tags": map[string]string{"data": "2025-01"}, "source": "s3://models/churn/1",
		"run_id": runID, "metrics": map[string]float64{"auc": 0.91, "loss": 0.2}, "signature": map[string]any{"inputs": []any{"age", "spend"}}}
	r = call(t, e, 201, "POST", vs, editor.Token, vbody)
	v1 := asJSON[api.VersionResponse](t, r)
	if v1.Version != 1 || v1.Stage != "none" || v1.Metrics["auc"] != 0.91 || r.Header.Get("Location") != "/api/v1/projects/"+proj.ID+"/models/Churn/versions/1" {
		t.Fatalf("version 1: %s (Location %q)", r.Body, r.Header.Get("Location"))
	}
	if v := asJSON[api.VersionResponse](t, call(t, e, 201, "POST", vs, editor.Token, map[string]any{})); v.Version != 2 {
		t.Fatalf("second version is %d", v.Version)
	}
	third := call(t, e, 202, "POST", vs, editor.Token, map[string]any{"description": "third"}, async...).Header.Get("Maestro-Sequence")
	callProblem(t, e, 400, "validation-failed", "POST", vs, editor.Token, map[string]any{"signature": []int{1}})
	callProblem(t, e, 403, "forbidden", "POST", vs, viewer.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", models+"/nope/versions", editor.Token, map[string]any{})
	add("createModelVersion", 201, 202, 400, 403, 404)
	add("createModelVersion", commandErrors(t, e, editor.Token, "POST", vs, models+"/nope/versions", map[string]any{}, "cv")...)

	r = call(t, e, 200, "GET", vs+"?max_results=2&stage=none&min_sequence="+third, viewer.Token, nil)
	if vpg := asJSON[api.VersionPage](t, r); len(vpg.Items) != 2 || vpg.NextPageToken == "" {
		t.Fatalf("versions page: %s", r.Body)
	}
	call(t, e, 400, "GET", vs+"?stage=gold", viewer.Token, nil)
	call(t, e, 404, "GET", vs, outsider.Token, nil)
	call(t, e, 401, "GET", vs, "", nil)
	add("listModelVersions", 200, 400, 401, 404)

	call(t, e, 200, "GET", vs+"/1", viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", vs+"/99", viewer.Token, nil)
	call(t, e, 404, "GET", vs+"/1", outsider.Token, nil)
	call(t, e, 400, "GET", vs+"/1?min_sequence=x", viewer.Token, nil)
	call(t, e, 401, "GET", vs+"/1", "", nil)
	add("getModelVersion", 200, 400, 401, 404)

	call(t, e, 200, "PATCH", vs+"/1", editor.Token, map[string]any{"description": "the first", "tags": map[string]string{"data": "2025-02"}})
	call(t, e, 202, "PATCH", vs+"/1", editor.Token, map[string]any{"description": "first"}, async...)
	callProblem(t, e, 400, "validation-failed", "PATCH", vs+"/1", editor.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "PATCH", vs+"/1", viewer.Token, map[string]any{"description": "x"})
	callProblem(t, e, 404, "not-found", "PATCH", vs+"/99", editor.Token, map[string]any{"description": "x"})
	add("updateModelVersion", 200, 202, 400, 403, 404)
	add("updateModelVersion", commandErrors(t, e, editor.Token, "PATCH", vs+"/1", vs+"/99", map[string]any{"description": "d"}, "uv")...)

	// Stages.
	tr := func(v int) string { return vs + "/" + strconv.Itoa(v) + ":transition" }
	if v := asJSON[api.VersionResponse](t, call(t, e, 200, "POST", tr(1), approver.Token, map[string]any{"stage": "production"})); v.Stage != "production" {
		t.Fatalf("v1 stage %s", v.Stage)
	}
	callProblem(t, e, 409, "production-occupied", "POST", tr(2), approver.Token, map[string]any{"stage": "production"})
	call(t, e, 200, "POST", tr(2), owner.Token, map[string]any{"stage": "production", "archive_existing": true})
	if v := asJSON[api.VersionResponse](t, call(t, e, 200, "GET", vs+"/1", viewer.Token, nil)); v.Stage != "archived" {
		t.Fatalf("v1 after archive_existing: %s", v.Stage)
	}
	call(t, e, 202, "POST", tr(3), approver.Token, map[string]any{"stage": "staging"}, async...)
	callProblem(t, e, 400, "validation-failed", "POST", tr(3), approver.Token, map[string]any{"stage": "gold"})
	callProblem(t, e, 403, "forbidden", "POST", tr(3), editor.Token, map[string]any{"stage": "production"})
	callProblem(t, e, 404, "not-found", "POST", tr(99), approver.Token, map[string]any{"stage": "staging"})
	add("transitionModelVersion", 200, 202, 400, 403, 404, 409)
	add("transitionModelVersion", commandErrors(t, e, approver.Token, "POST", tr(3), tr(99), map[string]any{"stage": "staging"}, "tv")...)

	// Aliases.
	al := func(a string) string { return m + "/aliases/" + a }
	r = call(t, e, 200, "PUT", al("champion"), approver.Token, map[string]any{"version": 2})
	if v := asJSON[api.VersionResponse](t, r); v.Version != 2 || !slices.Equal(v.Aliases, []string{"champion"}) {
		t.Fatalf("set alias: %s", r.Body)
	}
	call(t, e, 202, "PUT", al("challenger"), approver.Token, map[string]any{"version": 3}, async...)
	callProblem(t, e, 400, "validation-failed", "PUT", al("latest"), approver.Token, map[string]any{"version": 1})
	callProblem(t, e, 403, "forbidden", "PUT", al("champion"), editor.Token, map[string]any{"version": 1})
	callProblem(t, e, 404, "not-found", "PUT", al("champion"), approver.Token, map[string]any{"version": 99})
	add("setModelAlias", 200, 202, 400, 403, 404)
	add("setModelAlias", commandErrors(t, e, approver.Token, "PUT", al("champion"), models+"/nope/aliases/champion", map[string]any{"version": 2}, "sa")...)

	got := call(t, e, 200, "GET", al("champion"), viewer.Token, nil)
	if direct := call(t, e, 200, "GET", vs+"/2", viewer.Token, nil); !bytes.Equal(got.Body, direct.Body) {
		t.Fatalf("alias read %s != version read %s", got.Body, direct.Body)
	}
	callProblem(t, e, 404, "not-found", "GET", al("nobody"), viewer.Token, nil)
	call(t, e, 404, "GET", al("champion"), outsider.Token, nil)
	call(t, e, 401, "GET", al("champion"), "", nil)
	call(t, e, 400, "GET", al("champion")+"?min_sequence=x", viewer.Token, nil)
	add("getModelAlias", 200, 400, 401, 404)

	call(t, e, 204, "DELETE", al("challenger"), approver.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", al("challenger"), approver.Token, nil)
	callProblem(t, e, 403, "forbidden", "DELETE", al("champion"), editor.Token, nil)
	call(t, e, 200, "PUT", al("tmp"), approver.Token, map[string]any{"version": 3})
	call(t, e, 202, "DELETE", al("tmp"), approver.Token, nil, async...)
	add("deleteModelAlias", 202, 204, 403, 404)
	add("deleteModelAlias", commandErrors(t, e, approver.Token, "DELETE", al("champion"), models+"/nope/aliases/champion", nil, "da")...)

	// Deleting a version takes its aliases with it; a version in staging or
	// with aliases is a deployment pointer, so only an approver deletes it.
	call(t, e, 200, "PUT", al("doomed"), approver.Token, map[string]any{"version": 3})
	callProblem(t, e, 403, "forbidden", "DELETE", vs+"/3", editor.Token, nil)
	if v := asJSON[api.VersionResponse](t, call(t, e, 200, "DELETE", vs+"/3", approver.Token, nil)); !v.Deleted || len(v.Aliases) != 0 {
		t.Fatalf("deleted version: %+v", v)
	}
	call(t, e, 404, "GET", al("doomed"), viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", vs+"/3", editor.Token, nil)
	callProblem(t, e, 403, "forbidden", "DELETE", vs+"/2", viewer.Token, nil)
	call(t, e, 201, "POST", vs, editor.Token, map[string]any{})
	call(t, e, 202, "DELETE", vs+"/4", editor.Token, nil, async...)
	add("deleteModelVersion", 200, 202, 403, 404)
	add("deleteModelVersion", commandErrors(t, e, editor.Token, "DELETE", vs+"/2", vs+"/99", nil, "dv")...)

	// Point in time.
	call(t, e, 404, "GET", m+"?as_of="+url.QueryEscape(model.CreatedAt.Add(-time.Second).Format(time.RFC3339Nano)), viewer.Token, nil)
	r = call(t, e, 200, "GET", m+"?as_of="+url.QueryEscape(v1.CreatedAt.Format(time.RFC3339Nano)), viewer.Token, nil)
	if then := asJSON[api.ModelResponse](t, r); len(then.Versions) != 1 || then.Versions[0].Stage != "none" || then.LatestVersion != 1 {
		t.Fatalf("as of v1's registration: %s", r.Body)
	}

	// Archive and restore the project; an archived project refuses changes.
	callProblem(t, e, 403, "forbidden", "DELETE", pp, editor.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", pp, outsider.Token, nil)
	if got := asJSON[api.ProjectResponse](t, call(t, e, 200, "DELETE", pp, owner.Token, nil)); !got.Archived {
		t.Fatal("archived project not marked archived")
	}
	for _, c := range []struct {
		op, method, path string
		body             any
	}{
		{"updateProject", "PATCH", pp, map[string]any{"description": "x"}},
		{"setMember", "PUT", mp(outsider.ID), map[string]any{"role": "viewer"}},
		{"removeMember", "DELETE", mp(viewer.ID), nil},
		{"createModel", "POST", models, map[string]any{"name": "late"}},
		{"updateModel", "PATCH", m, map[string]any{"description": "x"}},
		{"deleteModel", "DELETE", m, nil},
		{"restoreModel", "POST", m + ":restore", nil},
		{"createModelVersion", "POST", vs, map[string]any{}},
		{"updateModelVersion", "PATCH", vs + "/2", map[string]any{"description": "x"}},
		{"deleteModelVersion", "DELETE", vs + "/2", nil},
		{"transitionModelVersion", "POST", tr(2), map[string]any{"stage": "staging"}},
		{"setModelAlias", "PUT", al("champion"), map[string]any{"version": 1}},
		{"deleteModelAlias", "DELETE", al("champion"), nil},
	} {
		callProblem(t, e, 409, "project-archived", c.method, c.path, owner.Token, c.body)
		add(c.op, 409)
	}
	call(t, e, 200, "GET", m, viewer.Token, nil) // still readable
	if pg := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", projectsPath, owner.Token, nil)); slices.ContainsFunc(pg.Items, func(p api.ProjectResponse) bool { return p.ID == proj.ID }) {
		t.Fatal("an archived project is listed by default")
	}
	if pg := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", projectsPath+"?include_archived=true", owner.Token, nil)); !slices.ContainsFunc(pg.Items, func(p api.ProjectResponse) bool { return p.ID == proj.ID }) {
		t.Fatal("include_archived does not list the archived project")
	}
	callProblem(t, e, 403, "forbidden", "POST", pp+":restore", editor.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", pp+":restore", outsider.Token, nil)
	if got := asJSON[api.ProjectResponse](t, call(t, e, 200, "POST", pp+":restore", owner.Token, nil)); got.Archived {
		t.Fatal("restored project still archived")
	}
	call(t, e, 202, "DELETE", pp, owner.Token, nil, async...)
	call(t, e, 202, "POST", pp+":restore", owner.Token, nil, async...)
	add("archiveProject", 200, 202, 403, 404)
	add("archiveProject", commandErrors(t, e, owner.Token, "DELETE", pp, projectsPath+"/nope", nil, "ap")...)
	add("restoreProject", 200, 202, 403, 404)
	add("restoreProject", commandErrors(t, e, owner.Token, "POST", pp+":restore", projectsPath+"/nope:restore", nil, "rp")...)
	return want
}

// Members: add, change a role, the last owner is kept, non-members see
// nothing (404 everywhere, reads included), admins see everything.
func TestRegistryMembers(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@members.test").AccessToken
	alice := regUser(e, admin, "alice@members.test", "member")
	bob := regUser(e, admin, "bob@members.test", "member")
	carol := regUser(e, admin, "carol@members.test", "viewer")

	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, alice.Token, map[string]any{"name": "Vision"}))
	pp := projectsPath + "/vision"
	members := func(token string) []api.MemberResponse {
		t.Helper()
		return asJSON[api.MemberList](t, call(t, e, 200, "GET", pp+"/members", token, nil)).Items
	}
	if ms := members(alice.Token); len(ms) != 1 || ms[0].UserID != alice.ID || ms[0].Role != "owner" || ms[0].Email != "alice@members.test" {
		t.Fatalf("creator membership: %+v", ms)
	}

	// Bob is no member: every project route is 404 for him, reads included.
	models := pp + "/models"
	for _, c := range []struct{ method, path string }{
		{"GET", pp}, {"GET", projectsPath + "/" + proj.ID}, {"GET", pp + "/members"}, {"GET", models},
		{"GET", models + "/m"}, {"GET", models + "/m/versions"}, {"GET", models + "/m/versions/1"}, {"GET", models + "/m/aliases/a"},
	} {
		callProblem(t, e, 404, "not-found", c.method, c.path, bob.Token, nil)
	}
	// ...the same answer as a project that does not exist.
	missing := e.Do("GET", projectsPath+"/no-such-project", bob.Token, nil)
	hidden := e.Do("GET", pp, bob.Token, nil)
	var pm, ph api.Problem
	missing.JSON(t, &pm)
	hidden.JSON(t, &ph)
	if pm.Detail != ph.Detail || pm.Title != ph.Title {
		t.Fatalf("a hidden project answers differently from a missing one: %+v vs %+v", ph, pm)
	}
	callProblem(t, e, 404, "not-found", "PUT", pp+"/members/"+bob.ID, bob.Token, map[string]any{"role": "owner"})

	// Add Bob as viewer: he reads but may not write.
	r := call(t, e, 200, "PUT", pp+"/members/"+bob.ID, alice.Token, map[string]any{"role": "viewer"})
	if m := asJSON[api.MemberResponse](t, r); m.Role != "viewer" || m.Name == "" {
		t.Fatalf("add member: %s", r.Body)
	}
	if got := asJSON[api.ProjectResponse](t, call(t, e, 200, "GET", pp, bob.Token, nil)); got.Role != "viewer" {
		t.Fatalf("bob's role = %q", got.Role)
	}
	callProblem(t, e, 403, "forbidden", "POST", models, bob.Token, map[string]any{"name": "m"})
	callProblem(t, e, 403, "forbidden", "PUT", pp+"/members/"+carol.ID, bob.Token, map[string]any{"role": "viewer"})

	// Promote Bob to editor: he registers models but cannot promote or manage.
	call(t, e, 200, "PUT", pp+"/members/"+bob.ID, alice.Token, map[string]any{"role": "editor"})
	call(t, e, 201, "POST", models, bob.Token, map[string]any{"name": "m"})
	call(t, e, 201, "POST", models+"/m/versions", bob.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "POST", models+"/m/versions/1:transition", bob.Token, map[string]any{"stage": "staging"})
	callProblem(t, e, 403, "forbidden", "PUT", models+"/m/aliases/best", bob.Token, map[string]any{"version": 1})
	// As approver he promotes, still does not manage.
	call(t, e, 200, "PUT", pp+"/members/"+bob.ID, alice.Token, map[string]any{"role": "approver"})
	call(t, e, 200, "POST", models+"/m/versions/1:transition", bob.Token, map[string]any{"stage": "staging"})
	call(t, e, 200, "PUT", models+"/m/aliases/best", bob.Token, map[string]any{"version": 1})
	callProblem(t, e, 403, "forbidden", "PATCH", pp, bob.Token, map[string]any{"description": "mine"})

	// The last owner is kept: Alice can neither leave nor step down alone...
	callProblem(t, e, 409, "last-owner", "PUT", pp+"/members/"+alice.ID, alice.Token, map[string]any{"role": "viewer"})
	callProblem(t, e, 409, "last-owner", "DELETE", pp+"/members/"+alice.ID, alice.Token, nil)
	// ...but once Bob is an owner too, she can.
	call(t, e, 200, "PUT", pp+"/members/"+bob.ID, alice.Token, map[string]any{"role": "owner"})
	call(t, e, 200, "PUT", pp+"/members/"+alice.ID, alice.Token, map[string]any{"role": "viewer"})
	callProblem(t, e, 409, "last-owner", "DELETE", pp+"/members/"+bob.ID, bob.Token, nil)
	callProblem(t, e, 403, "forbidden", "PUT", pp+"/members/"+alice.ID, alice.Token, map[string]any{"role": "owner"})

	// Removing Carol (never a member) is 404; removing Alice ends her access.
	callProblem(t, e, 404, "not-found", "DELETE", pp+"/members/"+carol.ID, bob.Token, nil)
	call(t, e, 204, "DELETE", pp+"/members/"+alice.ID, bob.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", pp, alice.Token, nil)
	if pg := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", projectsPath, alice.Token, nil)); len(pg.Items) != 0 {
		t.Fatalf("alice still lists %+v", pg.Items)
	}
	if ms := members(bob.Token); len(ms) != 1 || ms[0].UserID != bob.ID {
		t.Fatalf("members after removal: %+v", ms)
	}

	// An admin who is not a member sees and manages the project (no role shown).
	if got := asJSON[api.ProjectResponse](t, call(t, e, 200, "GET", pp, admin, nil)); got.Role != "" {
		t.Fatalf("admin role %q", got.Role)
	}
	if pg := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", projectsPath, admin, nil)); len(pg.Items) != 1 {
		t.Fatalf("admin lists %+v", pg.Items)
	}
	call(t, e, 200, "PUT", pp+"/members/"+carol.ID, admin, map[string]any{"role": "editor"})
	// Carol is a global viewer but a project editor: the project role rules.
	call(t, e, 201, "POST", models, carol.Token, map[string]any{"name": "carols"})
	// Unknown and malformed user ids are 404.
	callProblem(t, e, 404, "not-found", "PUT", pp+"/members/00000000-0000-4000-8000-000000000000", bob.Token, map[string]any{"role": "viewer"})
	callProblem(t, e, 404, "not-found", "PUT", pp+"/members/"+strings.ToUpper(carol.ID), bob.Token, map[string]any{"role": "viewer"})
}

// A command's response and a later read of the same thing are equal JSON,
// lists page and filter, and a point-in-time read folds the history.
func TestRegistryReadsMatchCommands(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@reads.test").AccessToken
	u := regUser(e, admin, "u@reads.test", "member")
	same := func(what string, cmd testenv.Response, path string) {
		t.Helper()
		read := call(t, e, 200, "GET", path, u.Token, nil)
		if !bytes.Equal(cmd.Body, read.Body) {
			t.Fatalf("%s: command answered\n%s\nread answers\n%s", what, cmd.Body, read.Body)
		}
	}

	pp := projectsPath + "/reads"
	same("create project", call(t, e, 201, "POST", projectsPath, u.Token, map[string]any{"name": "Reads", "description": "d"}), pp)
	same("patch project", call(t, e, 200, "PATCH", pp, u.Token, map[string]any{"description": "d2"}), pp)
	m := pp + "/models/clf"
	same("create model", call(t, e, 201, "POST", pp+"/models", u.Token, map[string]any{"name": "clf", "tags": map[string]string{"a": "1"}}), m)
	same("patch model", call(t, e, 200, "PATCH", m, u.Token, map[string]any{"tags": map[string]string{"b": "2"}}), m)
	// A signature's keys come back sorted, whatever order they were sent in,
	// and numbers as doubles (handlers.CanonicalJSON).
	sig := []byte(`{"description":"first","metrics":{"f1":0.5},"signature":{"z":1,"a":{"y":[1,2.50],"b":null}}}`)
	cv := call(t, e, 201, "POST", m+"/versions", u.Token, sig)
	if v := asJSON[api.VersionResponse](t, cv); string(v.Signature) != `{"a":{"b":null,"y":[1,2.5]},"z":1}` {
		t.Fatalf("signature %s", v.Signature)
	}
	same("register version", cv, m+"/versions/1")
	same("patch version", call(t, e, 200, "PATCH", m+"/versions/1", u.Token, map[string]any{"description": "one"}), m+"/versions/1")
	same("transition", call(t, e, 200, "POST", m+"/versions/1:transition", u.Token, map[string]any{"stage": "production"}), m+"/versions/1")
	same("set alias", call(t, e, 200, "PUT", m+"/aliases/prod", u.Token, map[string]any{"version": 1}), m+"/aliases/prod")
	same("delete model", call(t, e, 200, "DELETE", m, u.Token, nil), m)
	same("restore model", call(t, e, 200, "POST", m+":restore", u.Token, nil), m)
	same("archive project", call(t, e, 200, "DELETE", pp, u.Token, nil), pp)
	same("restore project", call(t, e, 200, "POST", pp+":restore", u.Token, nil), pp)

	// Lists: names ordered case-insensitively, pages, filters, deleted ones.
	for _, n := range []string{"beta", "Alpha", "gamma", "alpine"} {
		call(t, e, 201, "POST", pp+"/models", u.Token, map[string]any{"name": n, "tags": map[string]string{"kind": strings.ToLower(n[:1])}})
	}
	call(t, e, 200, "DELETE", pp+"/models/gamma", u.Token, nil)
	names := func(query string) []string {
		t.Helper()
		var out []string
		token := ""
		for {
			q := query + "&max_results=2"
			if token != "" {
				q += "&page_token=" + url.QueryEscape(token)
			}
			pg := asJSON[api.ModelPage](t, call(t, e, 200, "GET", pp+"/models?"+q, u.Token, nil))
			for _, it := range pg.Items {
				out = append(out, it.Name)
			}
			if token = pg.NextPageToken; token == "" {
				return out
			}
		}
	}
	for q, want := range map[string][]string{
		"order_by=name":              {"Alpha", "alpine", "beta", "clf"},
		"include_deleted=true":       {"Alpha", "alpine", "beta", "clf", "gamma"},
		"name_prefix=AL":             {"Alpha", "alpine"},
		"tag_key=kind&tag_value=a":   {"Alpha", "alpine"},
		"tag_key=b":                  {"clf"},
		"order_by=updated":           {"alpine", "Alpha", "beta", "clf"},
		"name_prefix=a&tag_key=kind": {"Alpha", "alpine"},
	} {
		if got := names(q); !slices.Equal(got, want) {
			t.Errorf("models?%s = %v, want %v", q, got, want)
		}
	}

	// Versions: stage filter and deleted ones.
	call(t, e, 201, "POST", m+"/versions", u.Token, map[string]any{})
	call(t, e, 201, "POST", m+"/versions", u.Token, map[string]any{})
	call(t, e, 200, "DELETE", m+"/versions/3", u.Token, nil)
	versions := func(q string) (out []int) {
		for _, v := range asJSON[api.VersionPage](t, call(t, e, 200, "GET", m+"/versions?"+q, u.Token, nil)).Items {
			out = append(out, v.Version)
		}
		return out
	}
	if got := versions(""); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("versions = %v", got)
	}
	if got := versions("include_deleted=true"); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("versions with deleted = %v", got)
	}
	if got := versions("stage=production"); !slices.Equal(got, []int{1}) {
		t.Errorf("production versions = %v", got)
	}

	// Point in time: which version was in production, and where did the alias point?
	v2 := asJSON[api.VersionResponse](t, call(t, e, 200, "POST", m+"/versions/2:transition", u.Token, map[string]any{"stage": "production", "archive_existing": true}))
	t1 := v2.UpdatedAt.Add(-time.Microsecond) // just before v2 replaced v1
	call(t, e, 200, "PUT", m+"/aliases/prod", u.Token, map[string]any{"version": 2})
	at := func(ts time.Time) api.ModelResponse {
		t.Helper()
		return asJSON[api.ModelResponse](t, call(t, e, 200, "GET", m+"?as_of="+url.QueryEscape(ts.Format(time.RFC3339Nano)), u.Token, nil))
	}
	before, after := at(t1), at(v2.UpdatedAt)
	stages := func(mr api.ModelResponse) (out []string) {
		for _, v := range mr.Versions {
			out = append(out, v.Stage)
		}
		return out
	}
	if got := stages(before); !slices.Equal(got, []string{"production", "none", "none"}) || before.Aliases["prod"] != 1 || !before.Versions[2].Deleted {
		t.Fatalf("before: stages %v aliases %v", got, before.Aliases)
	}
	if got := stages(after); !slices.Equal(got, []string{"archived", "production", "none"}) || after.Aliases["prod"] != 1 {
		t.Fatalf("after: stages %v aliases %v", got, after.Aliases)
	}
	if after.AsOf == nil || !after.AsOf.Equal(v2.UpdatedAt) {
		t.Fatalf("as_of %v, want %v", after.AsOf, v2.UpdatedAt)
	}
	if now := at(time.Now().Add(time.Hour)); now.Aliases["prod"] != 2 || len(now.Versions) != 3 {
		t.Fatalf("now: aliases %v, %d versions", now.Aliases, len(now.Versions))
	}
	// Without as_of the answer has neither as_of nor versions.
	var plain map[string]json.RawMessage
	call(t, e, 200, "GET", m, u.Token, nil).JSON(t, &plain)
	if _, ok := plain["versions"]; ok {
		t.Fatal("a plain read carries versions")
	}
}
