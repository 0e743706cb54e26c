package api_test

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// The registry's authorization matrix, generated from the route table:
// every route under /api/v1/projects × {anonymous, non-member, viewer,
// editor, approver, owner, admin, and API tokens: scoped, capped, an
// admin's scoped, a service account's, revoked} × {own project A, foreign
// project B}.
// Members of A hold their roles in A only; the admin is a member of neither.
// Expected: anonymous 401; whoever may not see the target project 404 with
// the body a missing project gets; a member whose role is short of the
// route's action 403; everyone else 2xx. No non-admin may succeed on a
// project it is not a member of, which is also checked in the audit trail.

// mxAction is what a route needs; the table below names one per route.
type mxAction int

const (
	mxList          mxAction = iota // GET /projects: any user; lists only what they may see
	mxCreateProject                 // global: members and admins
	mxRead                          // project role viewer and up
	mxModelWrite                    // editor and up: models, versions, artifacts, tags
	mxPromote                       // approver and up: stage transitions, aliases
	mxManage                        // owner: the project and its members
	mxOverride                      // global admins through a session only: overriding an approval policy
	mxDecide                        // approver and up, through a session only: approving or rejecting a promotion
)

// mxMinRank is the least project role (viewer 1 … owner 4) an action needs.
// No project role suffices for mxOverride.
var mxMinRank = map[mxAction]int{mxRead: 1, mxModelWrite: 2, mxPromote: 3, mxManage: 4, mxOverride: 5, mxDecide: 3}

// mxProject is one project and its fixtures.
type mxProject struct {
	name, slug, id string
	owner          string // token of the member who created it
	spare          string // user id of a member the member routes act on
	hasArtifact    bool
	experiment     string // id of experiment "x" and of a run in it
	run            string
}

// mxReq is one request of a cell: path parameters (project, name, version,
// alias, user_id and * default to the target's fixtures), body and headers.
type mxReq struct {
	params  map[string]string
	body    any
	headers []string
}

// mxCell says how to call one route in the matrix.
type mxCell struct {
	action mxAction
	// build returns the request against target; it may first prepare the
	// target as the admin (a fresh victim for a destructive route).
	build func(m *matrix, target *mxProject) mxReq
	// repair undoes, as the admin, a successful request's change that later
	// cells rely on (an archived project, a deleted model, a removed member).
	repair func(m *matrix, target *mxProject)
	// also are further runs of the same route whose target needs another
	// action (deleting a deployed version needs more than a plain one).
	also  []mxCell
	label string // names a variant in failures
}

const (
	mxProjects  = "/api/v1/projects"
	mxProj      = mxProjects + "/{project}"
	mxModel     = mxProj + "/models/{name}"
	mxVersion   = mxModel + "/versions/{version}"
	mxArtifacts = mxVersion + "/artifacts"
	mxExps      = mxProj + "/experiments"
	mxExp       = mxExps + "/{experiment}"
	mxRun       = mxProj + "/runs/{run}"
	mxRunArts   = mxRun + "/artifacts"
)

// matrixCells is the table of every registry route: action and request
// builder, keyed by method and pattern. A route in the table without an
// entry here fails the test, so no new route escapes the matrix.
func matrixCells() map[string]mxCell {
	none := func(*matrix, *mxProject) mxReq { return mxReq{} }
	// upload is an artifact PUT (a version's or a run's) of a new path.
	upload := func(m *matrix, _ *mxProject) mxReq {
		n := m.next()
		return mxReq{params: map[string]string{"*": fmt.Sprintf("uploads/%d.bin", n)},
			body: []byte(fmt.Sprintf("matrix artifact %d", n)), headers: []string{"Content-Type", "application/octet-stream"}}
	}
	return map[string]mxCell{
		"POST " + mxProjects: {action: mxCreateProject, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"name": m.unique("mx project")}}
		}},
		"GET " + mxProjects: {action: mxList, build: none},
		"GET " + mxProj:     {action: mxRead, build: none},
		"PATCH " + mxProj: {action: mxManage, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"description": m.unique("d")}}
		}},
		"DELETE " + mxProj: {action: mxManage, build: none, repair: func(m *matrix, p *mxProject) {
			m.admin("POST", mxProjects+"/"+p.slug+":restore", nil)
		}},
		"POST " + mxProj + ":restore": {action: mxManage, build: none},
		"GET " + mxProj + "/members":  {action: mxRead, build: none},
		"PUT " + mxProj + "/members/{user_id}": {action: mxManage, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"role": []string{"editor", "viewer"}[m.next()%2]}}
		}},
		"DELETE " + mxProj + "/members/{user_id}": {action: mxManage, build: none, repair: func(m *matrix, p *mxProject) {
			m.admin("PUT", mxProjects+"/"+p.slug+"/members/"+p.spare, map[string]any{"role": "viewer"})
		}},
		"POST " + mxProj + "/models": {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"name": strings.ReplaceAll(m.unique("mx-model"), " ", "-")}}
		}},
		"GET " + mxProj + "/models": {action: mxRead, build: none},
		"GET " + mxModel:            {action: mxRead, build: none},
		"PATCH " + mxModel: {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"description": m.unique("d")}}
		}},
		// Model "m" has the alias champion: deleting it takes a deployment
		// pointer offline, which needs the approver role; a model with
		// plain versions only is the editors' to delete.
		"DELETE " + mxModel: {action: mxPromote, label: "model with an alias", build: none, repair: func(m *matrix, p *mxProject) {
			m.admin("POST", mxProjects+"/"+p.slug+"/models/m:restore", nil)
		}, also: []mxCell{{action: mxModelWrite, label: "model with plain versions", build: func(m *matrix, p *mxProject) mxReq {
			name := fmt.Sprintf("plain-%d", m.next())
			m.admin("POST", mxProjects+"/"+p.slug+"/models", map[string]any{"name": name})
			m.admin("POST", mxProjects+"/"+p.slug+"/models/"+name+"/versions", map[string]any{"description": "plain"})
			return mxReq{params: map[string]string{"name": name}}
		}}}},
		"POST " + mxModel + ":restore": {action: mxModelWrite, build: none},
		"POST " + mxModel + "/versions": {action: mxModelWrite, build: func(*matrix, *mxProject) mxReq {
			return mxReq{body: map[string]any{"description": "matrix"}}
		}},
		"GET " + mxModel + "/versions": {action: mxRead, build: none},
		"GET " + mxModel + "/history":  {action: mxRead, build: none},
		"GET " + mxVersion:             {action: mxRead, build: none},
		"PATCH " + mxVersion: {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"description": m.unique("d")}}
		}},
		// Each cell deletes a version the admin registered just for it: a
		// plain one (editors may), one in production and one an alias names
		// (deployment pointers: approvers and up).
		"DELETE " + mxVersion: {action: mxModelWrite, label: "plain version", build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"version": fmt.Sprint(m.victim(p))}}
		}, also: []mxCell{
			{action: mxPromote, label: "version in production", build: func(m *matrix, p *mxProject) mxReq {
				v := m.victim(p)
				m.admin("POST", fmt.Sprintf("%s/%s/models/m/versions/%d:transition", mxProjects, p.slug, v),
					map[string]any{"stage": "production", "archive_existing": true})
				return mxReq{params: map[string]string{"version": fmt.Sprint(v)}}
			}},
			{action: mxPromote, label: "version with an alias", build: func(m *matrix, p *mxProject) mxReq {
				v := m.victim(p)
				m.admin("PUT", mxProjects+"/"+p.slug+"/models/m/aliases/deployed", map[string]any{"version": v})
				return mxReq{params: map[string]string{"version": fmt.Sprint(v)}}
			}},
		}},
		"POST " + mxVersion + ":transition": {action: mxPromote, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{params: map[string]string{"version": "2"},
				body: map[string]any{"stage": []string{"staging", "none"}[m.next()%2]}}
		}},
		"GET " + mxModel + "/aliases/{alias}": {action: mxRead, build: none},
		"PUT " + mxModel + "/aliases/{alias}": {action: mxPromote, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{params: map[string]string{"alias": "challenger"}, body: map[string]any{"version": 1 + m.next()%2}}
		}},
		// Each cell deletes an alias the admin (re)set just for it.
		"DELETE " + mxModel + "/aliases/{alias}": {action: mxPromote, build: func(m *matrix, p *mxProject) mxReq {
			m.admin("PUT", mxProjects+"/"+p.slug+"/models/m/aliases/doomed", map[string]any{"version": 1})
			return mxReq{params: map[string]string{"alias": "doomed"}}
		}},
		"GET " + mxArtifacts:         {action: mxRead, build: none},
		"PUT " + mxArtifacts + "/*":  {action: mxModelWrite, build: upload},
		"GET " + mxArtifacts + "/*":  {action: mxRead, build: none},
		"HEAD " + mxArtifacts + "/*": {action: mxRead, build: none},

		// Experiment tracking: tracking:write is the editors' (mxModelWrite's rank).
		"POST " + mxExps: {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"name": m.unique("mx experiment")}}
		}},
		"GET " + mxExps: {action: mxRead, build: none},
		"GET " + mxExp:  {action: mxRead, build: none},
		"PATCH " + mxExp: {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"tags": map[string]string{"k": m.unique("v")}}}
		}},
		"DELETE " + mxExp: {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"experiment": m.experiment(p, false)}}
		}},
		"POST " + mxExp + ":restore": {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"experiment": m.experiment(p, true)}}
		}},
		"DELETE " + mxExp + "/tags/{key}": {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			m.admin("PATCH", mxProjects+"/"+p.slug+"/experiments/"+p.experiment, map[string]any{"tags": map[string]string{"doomed": "x"}})
			return mxReq{params: map[string]string{"key": "doomed"}}
		}},
		"POST " + mxExp + "/runs": {action: mxModelWrite, build: func(*matrix, *mxProject) mxReq {
			return mxReq{body: map[string]any{"name": "matrix run"}}
		}},
		"GET " + mxExp + "/runs": {action: mxRead, build: none},
		"GET " + mxRun:           {action: mxRead, build: none},
		"PATCH " + mxRun: {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"tags": map[string]string{"k": m.unique("v")}}}
		}},
		"DELETE " + mxRun: {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"run": m.run(p, false)}}
		}},
		"POST " + mxRun + ":restore": {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"run": m.run(p, true)}}
		}},
		"POST " + mxRun + "/params": {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"params": []map[string]string{{"key": m.unique("p"), "value": "1"}}}}
		}},
		"POST " + mxRun + "/metrics": {action: mxModelWrite, build: func(m *matrix, _ *mxProject) mxReq {
			return mxReq{body: map[string]any{"metrics": []map[string]any{{"key": "loss", "value": 0.5, "step": m.next(), "timestamp": 1}}}}
		}},
		"GET " + mxRun + "/metrics/{key}": {action: mxRead, build: func(*matrix, *mxProject) mxReq {
			return mxReq{params: map[string]string{"key": "loss"}}
		}},
		// Run search is a query: viewers and up, of the target's experiment.
		"POST " + mxProj + "/runs:search": {action: mxRead, build: func(_ *matrix, p *mxProject) mxReq {
			return mxReq{body: map[string]any{"experiment_ids": []string{p.experiment}, "filter": "attributes.status = 'RUNNING'",
				"order_by": []string{"start_time DESC"}}}
		}},
		"GET " + mxRunArts:         {action: mxRead, build: none},
		"PUT " + mxRunArts + "/*":  {action: mxModelWrite, build: upload},
		"GET " + mxRunArts + "/*":  {action: mxRead, build: none},
		"HEAD " + mxRunArts + "/*": {action: mxRead, build: none},
		"DELETE " + mxRun + "/tags/{key}": {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			m.admin("PATCH", mxProjects+"/"+p.slug+"/runs/"+p.run, map[string]any{"tags": map[string]string{"doomed": "x"}})
			return mxReq{params: map[string]string{"key": "doomed"}}
		}},
	}
}

// experiment creates, as the admin, an experiment for a cell to delete (or,
// deleted, to restore) and returns its id.
func (m *matrix) experiment(p *mxProject, deleted bool) string {
	m.t.Helper()
	x := asJSON[projections.Experiment](m.t, m.admin("POST", mxProjects+"/"+p.slug+"/experiments", map[string]any{"name": m.unique("victim")}))
	if deleted {
		m.admin("DELETE", mxProjects+"/"+p.slug+"/experiments/"+x.ID, nil)
	}
	return x.ID
}

// run is experiment for runs (in the project's fixture experiment).
func (m *matrix) run(p *mxProject, deleted bool) string {
	m.t.Helper()
	r := asJSON[projections.Run](m.t, m.admin("POST", mxProjects+"/"+p.slug+"/experiments/"+p.experiment+"/runs", map[string]any{}))
	if deleted {
		m.admin("DELETE", mxProjects+"/"+p.slug+"/runs/"+r.ID, nil)
	}
	return r.ID
}

// mxPrincipal is a caller of the matrix.
type mxPrincipal struct {
	name   string
	id     string
	token  string         // "" = anonymous
	global string         // global role ("limited" for a scoped or capped API token)
	rank   map[string]int // project id → role rank (viewer 1 … owner 4)
	// revoked marks a revoked API token (401 everywhere).
	revoked bool
	// sharedActor marks an API token of a principal that also acts through
	// its session: the audit trail cannot tell their writes apart.
	sharedActor bool
	// apiToken marks an API token (session-only actions refuse it).
	apiToken bool
}

type matrix struct {
	t       *testing.T
	e       *testenv.Env
	adminTk string
	n       int
}

func (m *matrix) next() int { m.n++; return m.n }

func (m *matrix) unique(prefix string) string { return fmt.Sprintf("%s %d", prefix, m.next()) }

// victim registers, as the admin, a version of model "m" for a cell to delete.
func (m *matrix) victim(p *mxProject) int {
	m.t.Helper()
	r := m.admin("POST", mxProjects+"/"+p.slug+"/models/m/versions", map[string]any{"description": "victim"})
	return asJSON[api.VersionResponse](m.t, r).Version
}

// admin sends a fixture request as the admin and fails unless it is 2xx.
func (m *matrix) admin(method, path string, body any) testenv.Response {
	m.t.Helper()
	r := m.e.Do(method, path, m.adminTk, body)
	if r.Status < 200 || r.Status > 299 {
		m.t.Fatalf("fixture %s %s: %d %s", method, path, r.Status, r.Body)
	}
	return r
}

// mxFill makes a concrete path of pattern from the target's fixtures and
// the cell's overrides; byID names the project by id instead of slug.
func mxFill(t *testing.T, pattern string, target *mxProject, byID bool, over map[string]string) string {
	t.Helper()
	ref := target.slug
	if byID {
		ref = target.id
	}
	params := map[string]string{"project": ref, "name": "m", "version": "1", "alias": "champion", "target": "@mx-governed",
		"user_id": target.spare, "*": "weights/model.bin", "experiment": target.experiment, "run": target.run, "key": "k"}
	for k, v := range over {
		params[k] = v
	}
	path := pathParam.ReplaceAllStringFunc(pattern, func(p string) string {
		v, ok := params[strings.Trim(p, "{}")]
		if !ok {
			t.Fatalf("%s: no value for %s", pattern, p)
		}
		return url.PathEscape(v)
	})
	if strings.HasSuffix(path, "/*") {
		path = strings.TrimSuffix(path, "*") + params["*"]
	}
	return path
}

func TestRegistryAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	began := time.Now()
	e := testenv.Start(t, testenv.Config(t))
	adminTk := e.Admin("root@matrix.test").AccessToken
	m := &matrix{t: t, e: e, adminTk: adminTk}

	routes := map[string]api.Route{}
	var keys []string // table order
	for _, rt := range e.P.API.Routes() {
		if strings.HasPrefix(rt.Pattern, mxProjects) {
			k := rt.Method + " " + rt.Pattern
			routes[k] = rt
			keys = append(keys, k)
		}
	}
	cells := matrixCells()
	maps.Copy(cells, jobCells())         // jobs_test.go
	maps.Copy(cells, promotionCells())   // promotions_test.go
	maps.Copy(cells, webhookCells())     // webhooks_test.go
	maps.Copy(cells, explanationCells()) // explanations_test.go
	maps.Copy(cells, sweepCells())       // sweeps_test.go
	for _, k := range keys {
		if _, ok := cells[k]; !ok {
			t.Errorf("route %s has no entry in matrixCells: say which action it needs and how to call it", k)
		}
	}
	for k := range cells {
		if _, ok := routes[k]; !ok {
			t.Logf("matrixCells has %s, which the route table does not (yet) register", k)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Principals. Project roles are given in A only; the global role decides
	// project creation (viewers may not create projects).
	user := func(email, global string) mxPrincipal {
		u := regUser(e, adminTk, email, global)
		return mxPrincipal{name: strings.TrimSuffix(email, "@matrix.test"), id: u.ID, token: u.Token, global: global, rank: map[string]int{}}
	}
	anonymous := mxPrincipal{name: "anonymous", rank: map[string]int{}}
	nonMember := user("non-member@matrix.test", "member")
	viewer := user("viewer@matrix.test", "viewer")
	editor := user("editor@matrix.test", "viewer")
	approver := user("approver@matrix.test", "viewer")
	owner := user("owner@matrix.test", "member")
	ownerB := user("owner-b@matrix.test", "member")
	spareA := user("spare-a@matrix.test", "viewer")
	spareB := user("spare-b@matrix.test", "viewer")
	admin := mxPrincipal{name: "admin", token: adminTk, global: "admin", rank: map[string]int{}}

	_, hasArtifactPut := routes["PUT "+mxArtifacts+"/*"]
	setup := func(name string, own mxPrincipal, spare mxPrincipal, members map[*mxPrincipal]string) *mxProject {
		p := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", mxProjects, own.token, map[string]any{"name": name}))
		f := &mxProject{name: name, slug: p.Slug, id: p.ID, owner: own.token, spare: spare.id}
		pp := mxProjects + "/" + p.Slug
		for u, role := range members {
			call(t, e, 200, "PUT", pp+"/members/"+u.id, own.token, map[string]any{"role": role})
		}
		call(t, e, 200, "PUT", pp+"/members/"+spare.id, own.token, map[string]any{"role": "viewer"})
		call(t, e, 201, "POST", pp+"/models", own.token, map[string]any{"name": "m"})
		call(t, e, 201, "POST", pp+"/models/m/versions", own.token, map[string]any{"description": "one"})
		call(t, e, 201, "POST", pp+"/models/m/versions", own.token, map[string]any{"description": "two"})
		call(t, e, 200, "PUT", pp+"/models/m/aliases/champion", own.token, map[string]any{"version": 1})
		x := asJSON[projections.Experiment](t, call(t, e, 201, "POST", pp+"/experiments", own.token, map[string]any{"name": "x"}))
		f.experiment = x.ID
		f.run = asJSON[projections.Run](t, call(t, e, 201, "POST", pp+"/experiments/"+x.ID+"/runs", own.token, map[string]any{})).ID
		if hasArtifactPut {
			call(t, e, 201, "PUT", pp+"/models/m/versions/1/artifacts/weights/model.bin", own.token, []byte("weights"),
				"Content-Type", "application/octet-stream")
			f.hasArtifact = true
		}
		if _, ok := routes["PUT "+mxRunArts+"/*"]; ok {
			call(t, e, 201, "PUT", pp+"/runs/"+f.run+"/artifacts/weights/model.bin", own.token, []byte("run weights"),
				"Content-Type", "application/octet-stream")
		}
		return f
	}
	projA := setup("Matrix A", owner, spareA, map[*mxPrincipal]string{&viewer: "viewer", &editor: "editor", &approver: "approver"})
	projB := setup("Matrix B", ownerB, spareB, nil)
	viewer.rank[projA.id], editor.rank[projA.id], approver.rank[projA.id], owner.rank[projA.id] = 1, 2, 3, 4
	principals := []mxPrincipal{anonymous, nonMember, viewer, editor, approver, owner, admin}

	// API tokens go through the same policy: the owner's token scoped to A
	// and one capped at viewer, the admin's scoped to A (no admin then), a
	// service account that is an editor in A, and a revoked token.
	mint := func(session, path string, body map[string]any) api.APITokenResponse {
		return asJSON[api.APITokenResponse](t, call(t, e, 201, "POST", path, session, body))
	}
	svc := asJSON[api.UserResponse](t, call(t, e, 201, "POST", "/api/v1/service-accounts", adminTk, map[string]any{"name": "matrix bot"}))
	call(t, e, 200, "PUT", mxProjects+"/"+projA.slug+"/members/"+svc.ID, owner.token, map[string]any{"role": "editor"})
	revoked := mint(owner.token, "/api/v1/tokens", map[string]any{"name": "revoked"})
	call(t, e, 204, "DELETE", "/api/v1/tokens/"+revoked.ID, owner.token, nil)
	principals = append(principals,
		mxPrincipal{name: "owner's token scoped to A", id: owner.id, global: "limited", rank: map[string]int{projA.id: 4}, sharedActor: true, apiToken: true,
			token: mint(owner.token, "/api/v1/tokens", map[string]any{"name": "scoped", "project": projA.slug}).Token},
		mxPrincipal{name: "owner's token capped at viewer", id: owner.id, global: "limited", rank: map[string]int{projA.id: 1}, sharedActor: true, apiToken: true,
			token: mint(owner.token, "/api/v1/tokens", map[string]any{"name": "capped", "role": "viewer"}).Token},
		mxPrincipal{name: "admin's token scoped to A", global: "limited", rank: map[string]int{projA.id: 4}, sharedActor: true, apiToken: true,
			token: mint(adminTk, "/api/v1/tokens", map[string]any{"name": "admin scoped", "project": projA.id}).Token},
		mxPrincipal{name: "service account's token", id: svc.ID, global: "member", rank: map[string]int{projA.id: 2}, apiToken: true,
			token: mint(adminTk, "/api/v1/service-accounts/"+svc.ID+"/tokens", map[string]any{"name": "bot"}).Token},
		mxPrincipal{name: "revoked token", token: revoked.Token, revoked: true, rank: map[string]int{}},
	)
	if _, ok := routes["GET "+mxArtifacts+"/*"]; ok && !projA.hasArtifact {
		t.Fatal("GET .../artifacts/* is registered but PUT .../artifacts/* is not: the matrix cannot make an artifact fixture")
	}
	t.Logf("matrix setup: %s", time.Since(began).Round(time.Millisecond))

	// expect is the status class a principal must get (200 stands for 2xx).
	expect := func(c mxCell, p mxPrincipal, target *mxProject) int {
		switch {
		case p.token == "" || p.revoked:
			return 401
		case c.action == mxList:
			return 200
		case c.action == mxCreateProject:
			if p.global == "member" || p.global == "admin" {
				return 200
			}
			return 403
		case p.global == "admin":
			return 200
		case p.rank[target.id] == 0:
			return 404
		case c.action == mxDecide && p.apiToken:
			return 403
		case p.rank[target.id] >= mxMinRank[c.action]:
			return 200
		}
		return 403
	}

	// Every cell runs twice: the project named by slug, and by id.
	var cellsRun, crossOK int
	var crossWhat []string
	for _, byID := range []bool{false, true} {
		for _, k := range keys {
			c, rt := cells[k], routes[k]
			global := !strings.Contains(rt.Pattern, "{project}")
			if global && byID {
				continue
			}
			name, missingRef := "slug: "+k, "mx-no-such-project"
			if byID {
				name, missingRef = "id: "+k, uuid.NewString()
			}
			t.Run(name, func(t *testing.T) {
				m.t = t
				defer func() { m.t = nil }() // builders and repairs run inside a cell only
				for _, c := range append([]mxCell{c}, c.also...) {
					for _, p := range principals {
						for _, target := range []*mxProject{projA, projB} {
							if global && target != projA {
								continue // no project in the path: one cell per principal
							}
							where := fmt.Sprintf("%s on %s", p.name, target.name)
							if global {
								where = p.name
							}
							if c.label != "" {
								where += " (" + c.label + ")"
							}
							req := c.build(m, target)
							path := mxFill(t, rt.Pattern, target, byID, req.params)
							r := send(t, e, rt.Method, path, p.token, req.body, req.headers...)
							cellsRun++
							want := expect(c, p, target)
							ok2xx := r.Status >= 200 && r.Status <= 299
							if !global && ok2xx && p.global != "admin" && p.rank[target.id] == 0 {
								crossOK++
								crossWhat = append(crossWhat, k+" by "+where)
							}
							if rt.Method == "HEAD" { // no body: the status is the whole answer
								if (want == 200 && !ok2xx) || (want != 200 && r.Status != want) {
									t.Errorf("%s: %d, want %d", where, r.Status, want)
								}
							} else {
								switch want {
								case 200:
									if !ok2xx {
										t.Errorf("%s: %d %s, want 2xx", where, r.Status, r.Body)
									}
								case 401:
									if _, err := checkProblem(r, 401, "unauthenticated"); err != nil {
										t.Errorf("%s: %v", where, err)
									}
								case 403:
									if _, err := checkProblem(r, 403, "forbidden"); err != nil {
										t.Errorf("%s: %v", where, err)
									}
								case 404:
									got, err := checkProblem(r, 404, "not-found")
									if err != nil {
										t.Errorf("%s: %v", where, err)
										break
									}
									// The same request to a project that does not exist.
									over := map[string]string{"project": missingRef}
									for k, v := range req.params {
										over[k] = v
									}
									miss := send(t, e, rt.Method, mxFill(t, rt.Pattern, target, false, over), p.token, req.body, req.headers...)
									want, err := checkProblem(miss, 404, "not-found")
									if err != nil {
										t.Errorf("%s, missing project: %v", where, err)
									} else if got.Type != want.Type || got.Title != want.Title || got.Detail != want.Detail {
										t.Errorf("%s: a hidden project answers %+v, a missing one %+v", where, got, want)
									}
								}
							}
							if ok2xx && c.repair != nil {
								c.repair(m, target)
							}
							if c.action == mxList && ok2xx {
								// The list holds exactly the fixture projects the caller may see.
								var page api.ProjectPage
								r.JSON(t, &page)
								for _, f := range []*mxProject{projA, projB} {
									visible := p.global == "admin" || p.rank[f.id] > 0
									listed := slices.ContainsFunc(page.Items, func(it api.ProjectResponse) bool { return it.ID == f.id })
									if listed && !visible {
										crossOK++
										crossWhat = append(crossWhat, k+" by "+where+" lists "+f.name)
										t.Errorf("%s lists %s", where, f.name)
									}
									if visible && !listed {
										t.Errorf("%s does not list %s: %s", where, f.name, r.Body)
									}
								}
							}
						}
					}
				}
			})
		}
	}
	if crossOK != 0 {
		t.Errorf("%d successful requests on projects the caller is not a member of: %q", crossOK, crossWhat)
	}

	// The audit trail agrees: no event written by a non-admin caller lands on
	// a project (or a model of a project) the caller is not a member of.
	subjectsOf := func(f *mxProject) map[string]bool {
		s := map[string]bool{events.Subject(events.AggProject, f.id): true}
		token := ""
		for {
			q := "?include_deleted=true&max_results=200"
			if token != "" {
				q += "&page_token=" + url.QueryEscape(token)
			}
			pg := asJSON[api.ModelPage](t, call(t, e, 200, "GET", mxProjects+"/"+f.slug+"/models"+q, adminTk, nil))
			for _, it := range pg.Items {
				s[events.Subject(events.AggModel, it.ID)] = true
			}
			if token = pg.NextPageToken; token == "" {
				return s
			}
		}
	}
	subjA, subjB := subjectsOf(projA), subjectsOf(projB)
	for _, p := range principals {
		if p.token == "" || p.global == "admin" || p.revoked || p.sharedActor {
			continue
		}
		wrote := 0
		for _, it := range auditAll(t, e, adminTk, url.Values{"actor": {"user:" + p.id}}) {
			inA, inB := subjA[it.Subject], subjB[it.Subject]
			if inA || inB {
				wrote++
			}
			if (inA && p.rank[projA.id] == 0) || inB {
				t.Errorf("%s wrote %s on %s (seq %d), a project it is not a member of", p.name, it.Type, it.Subject, it.Seq)
			}
		}
		if wantWrites := p.rank[projA.id] >= mxMinRank[mxModelWrite]; wantWrites != (wrote > 0) {
			t.Errorf("%s wrote %d events in the fixture projects; want some = %v", p.name, wrote, wantWrites)
		}
	}
	if cellsRun < 2*len(principals)*len(keys) {
		t.Fatalf("only %d cells ran for %d routes", cellsRun, len(keys))
	}
	t.Logf("matrix: %d routes, %d cells, %d cross-project successes, %s in all", len(keys), cellsRun, crossOK, time.Since(began).Round(time.Millisecond))
}
