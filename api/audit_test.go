package api_test

import (
	"bytes"
	"crypto/ed25519"
	"net/url"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// The audit trail's filters (project, correlation id, with the older ones)
// and its export's authorization: admins export everything, a project's
// owners their project (the rest as links), everyone else is refused; the
// keys that sign it are public.
func TestAuditFiltersAndExport(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@audit.test")
	walkAudit(t, e, admin.AccessToken)
}

// awaitSealed polls the export until a signed checkpoint covers the trail
// (the worker seals about once a second; 503 until then).
func awaitSealed(t *testing.T, e *testenv.Env, path, token string) testenv.Response {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := e.Do("GET", path, token, nil)
		if r.Status != 503 || time.Now().After(deadline) {
			return r
		}
		time.Sleep(100 * time.Millisecond) // a poll with a deadline (Retry-After: 1)
	}
}

// walkAudit exercises the audit routes and returns the responses it
// provoked per operation (for TestOpenAPIWalk).
func walkAudit(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	owner := regUser(e, admin, "audit-owner@example.com", "member")
	viewer := regUser(e, admin, "audit-viewer@example.com", "viewer")
	outsider := regUser(e, admin, "audit-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, owner.Token, map[string]any{"name": "Audit Walk"}))
	pp := projectsPath + "/" + proj.Slug
	call(t, e, 200, "PUT", pp+"/members/"+viewer.ID, owner.Token, map[string]any{"role": "viewer"})
	r := call(t, e, 201, "POST", pp+"/models", owner.Token, map[string]any{"name": "audited"})
	seq := r.Header.Get("Maestro-Sequence")
	type page struct {
		Items []projections.AuditEntry `json:"items"`
	}
	// The project filter, by slug or id: the project's own events and the
	// model's, whose data names the project.
	q := url.Values{"project": {proj.Slug}, "max_results": {"200"}, "min_sequence": {seq}}
	byProject := asJSON[page](t, call(t, e, 200, "GET", "/api/v1/audit?"+q.Encode(), admin, nil))
	types := map[string]bool{}
	for _, it := range byProject.Items {
		if it.ProjectID != proj.ID || len(it.Hash) != 64 {
			t.Fatalf("project filter returned %+v", it)
		}
		types[it.Type] = true
	}
	if !types["maestro.project.created.v1"] || !types["maestro.model.created.v1"] || !types["maestro.project.member_set.v1"] {
		t.Fatalf("project filter: types %v", types)
	}
	q.Set("project", proj.ID)
	if again := asJSON[page](t, call(t, e, 200, "GET", "/api/v1/audit?"+q.Encode(), admin, nil)); len(again.Items) != len(byProject.Items) {
		t.Fatalf("by id %d entries, by slug %d", len(again.Items), len(byProject.Items))
	}
	// The correlation id: every entry of one request.
	corr := byProject.Items[0].CorrelationID
	byCorr := asJSON[page](t, call(t, e, 200, "GET", "/api/v1/audit?"+url.Values{"correlation_id": {corr}}.Encode(), admin, nil))
	if len(byCorr.Items) == 0 {
		t.Fatal("correlation filter found nothing")
	}
	for _, it := range byCorr.Items {
		if it.CorrelationID != corr {
			t.Fatalf("correlation filter returned %+v", it)
		}
	}
	// With a time range and a type.
	tq := url.Values{"project": {proj.ID}, "type": {"maestro.model.created.v1"}, "since": {time.Now().Add(-time.Hour).Format(time.RFC3339)},
		"until": {time.Now().Add(time.Hour).Format(time.RFC3339)}}
	if got := asJSON[page](t, call(t, e, 200, "GET", "/api/v1/audit?"+tq.Encode(), admin, nil)); len(got.Items) != 1 {
		t.Fatalf("type and time filter: %+v", got.Items)
	}
	tq.Set("until", time.Now().Add(-time.Hour).Format(time.RFC3339))
	if got := asJSON[page](t, call(t, e, 200, "GET", "/api/v1/audit?"+tq.Encode(), admin, nil)); len(got.Items) != 0 {
		t.Fatalf("an empty time range: %+v", got.Items)
	}
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/audit?project=no-such-project", admin, nil)
	callProblem(t, e, 400, "validation-failed", "GET", "/api/v1/audit?correlation_id=%00", admin, nil)

	// The keys: public.
	keys := asJSON[struct {
		Keys []struct{ Kid, X string }
	}](t, call(t, e, 200, "GET", "/api/v1/audit/keys", "", nil))

	// The export.
	export := "/api/v1/audit/export"
	full := awaitSealed(t, e, export+"?min_sequence="+seq+"&to_seq="+seq, admin)
	if full.Status != 200 {
		t.Fatalf("export as admin: %d %s", full.Status, full.Body)
	}
	keys = asJSON[struct {
		Keys []struct{ Kid, X string }
	}](t, call(t, e, 200, "GET", "/api/v1/audit/keys", "", nil))
	if len(keys.Keys) != 1 {
		t.Fatalf("audit keys after sealing: %+v", keys)
	}
	kid, pub, err := projections.ParsePublicKey(keys.Keys[0].X)
	if err != nil || kid != keys.Keys[0].Kid {
		t.Fatalf("published key %+v: %v (id %s)", keys.Keys[0], err, kid)
	}
	res, err := projections.VerifyAuditExport(bytes.NewReader(full.Body), map[string]ed25519.PublicKey{kid: pub}, 0)
	if err != nil || !res.OK() || res.Links != 0 || res.Entries == 0 {
		t.Fatalf("admin's export: %+v %v", res, err)
	}
	// An owner's export of the project: its entries, the rest as links.
	mine := awaitSealed(t, e, export+"?project="+proj.Slug+"&to_seq="+seq, owner.Token)
	if mine.Status != 200 {
		t.Fatalf("export as owner: %d %s", mine.Status, mine.Body)
	}
	res, err = projections.VerifyAuditExport(bytes.NewReader(mine.Body), map[string]ed25519.PublicKey{kid: pub}, 0)
	if err != nil || !res.OK() || res.Entries < len(byProject.Items) || res.Links == 0 {
		t.Fatalf("owner's export: %+v %v (want %d entries)", res, err, len(byProject.Items))
	}
	if bytes.Contains(mine.Body, []byte("root@audit.test")) {
		t.Fatal("an owner's export discloses another entry")
	}
	// A range.
	if r := awaitSealed(t, e, export+"?from_seq=2&to_seq=3", admin); r.Status != 200 {
		t.Fatalf("export of a range: %d %s", r.Status, r.Body)
	}
	callProblem(t, e, 403, "forbidden", "GET", export, owner.Token, nil)
	callProblem(t, e, 403, "forbidden", "GET", export+"?project="+proj.Slug, viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", export+"?project="+proj.Slug, outsider.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", export, "", nil)
	callProblem(t, e, 400, "validation-failed", "GET", export+"?from_seq=x", admin, nil)
	callProblem(t, e, 400, "validation-failed", "GET", export+"?from_seq=5&to_seq=2", admin, nil)
	callProblem(t, e, 404, "not-found", "GET", export+"?from_seq=999999999", admin, nil)
	return map[string][]int{
		"listAuditKeys": {200},
		"exportAudit":   {200, 400, 401, 403, 404},
	}
}
