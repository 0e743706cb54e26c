package api_test

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// The MLflow façade's authorization matrix, generated from the route table
// like the registry's (registry_matrix_test.go): every route with MLflow:
// true, grouped by RPC (method and path after the prefix), each RPC under
// its three prefixes:
//
//   - /mlflow/{project}/api/2.0 (the project by slug): every principal of
//     the registry matrix (anonymous, non-member, viewer, editor, approver,
//     owner, admin, and API tokens: the owner's scoped to A, the owner's
//     capped at viewer, the admin's scoped to A, the admin's capped at
//     editor, a service account's sent as HTTP Basic, a revoked one) and
//     the token of a user who left A (scoped to A, no longer a member) ×
//     {own project A, foreign project B};
//   - /mlflow/{project}/ajax-api/2.0 (the project by id): a reader, a
//     writer and a stranger × {A, B};
//   - /api/2.0, whose project is a scoped token's: tokens scoped to A of a
//     reader, a writer and the user who left; without a scope (a session,
//     a capped token) it is refused with BAD_REQUEST;
//
// and, for the RPCs that name experiments and runs by their global ids, A's
// tracking URI naming B's objects, which nobody may reach through A.
//
// Expected, in MLflow's error shape: anonymous and revoked 401
// UNAUTHENTICATED; whoever may not see the project 404
// RESOURCE_DOES_NOT_EXIST with the body a missing project gets; a member
// short of the RPC's action 403 PERMISSION_DENIED; everyone else 200. No
// non-admin may succeed on a project it is not a member of, and no refused
// request may leave an event (the audit trail, matched to the requests by
// correlation id) or a metric point (the run's history) behind.

const (
	mlMain = "/mlflow/{project}/api/2.0"
	mlAjax = "/mlflow/{project}/ajax-api/2.0"
	mlBare = "/api/2.0"
)

var mlPrefixes = []string{mlMain, mlAjax, mlBare}

// mlAction is what an RPC needs in the project it addresses: the authz
// action the services check (authz/project.go).
type mlAction int

const (
	mlRead    mlAction = iota + 1 // project:read: viewers and up
	mlTrack                       // tracking:write: editors and up
	mlModel                       // model:write: editors and up
	mlPromote                     // version:promote: approvers and up
)

var mlActionNames = map[mlAction]string{mlRead: "project:read (viewer)", mlTrack: "tracking:write (editor)",
	mlModel: "model:write (editor)", mlPromote: "version:promote (approver)"}

// mlMinRank is the least project role (viewer 1 … owner 4) an action needs.
var mlMinRank = map[mlAction]int{mlRead: 1, mlTrack: 2, mlModel: 2, mlPromote: 3}

// mlProject is one project and its fixtures: model "m" (versions 1 and 2,
// alias champion → 1, an artifact on version 1), experiment "x" with a run
// (and an artifact), and the Default experiment ("0").
type mlProject struct {
	name, slug, id   string
	experiment, run  string
	defaultExp       string
	modelArtifact    []byte
	runArtifact      []byte
	subjects         map[string]bool // aggregate subjects, filled at the end
	metricPointsSent int             // points logged by requests that answered 200
}

// mlReq is one request of a cell: params (the query of a GET, the JSON
// body otherwise), the * of an artifact path, or a raw body (an upload).
type mlReq struct {
	params map[string]any
	path   string
	raw    []byte
}

// mlCell says how to call one RPC.
type mlCell struct {
	action mlAction
	// build returns a request naming p's objects; it may first prepare p
	// as the admin (a fresh victim for a destructive RPC).
	build func(m *mlMatrix, p *mlProject) mlReq
	// consumes: a successful request uses its fixture up (a deleted or
	// renamed victim, a removed tag); a refused one leaves it for the
	// next caller, so victims are made only as they are consumed.
	consumes bool
	// byID: the request names objects by global id (experiments, runs),
	// so it is also sent to A's URI naming B's objects.
	byID bool
	// search: through A's URI, B's ids may answer 200 if nothing of B's
	// is in the answer (a search finds nothing).
	search bool
	// download is the body a successful request answers (a file).
	download func(p *mlProject) []byte
	// also are further variants of the same RPC whose fixture needs
	// another action (deleting a deployed version) or another path.
	also  []mlCell
	label string
}

// mlflowCells is the table of every MLflow RPC: its action and request
// builder, keyed by method and path after the prefix. An MLflow route in
// the route table without an entry here fails the test.
func mlflowCells() map[string]mlCell {
	const rm, mv = "/mlflow/registered-models", "/mlflow/model-versions"
	q := func(kv ...any) mlReq {
		r := mlReq{params: map[string]any{}}
		for i := 0; i+1 < len(kv); i += 2 {
			r.params[kv[i].(string)] = kv[i+1]
		}
		return r
	}
	expTag := func(m *mlMatrix, p *mlProject) mlReq {
		return q("experiment_id", p.experiment, "key", "k", "value", m.unique("v"))
	}
	return map[string]mlCell{
		// ---- experiments ----
		"POST /mlflow/experiments/create": {action: mlTrack, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", m.unique("mlx experiment"))
		}},
		"GET /mlflow/experiments/get": {action: mlRead, byID: true, build: func(_ *mlMatrix, p *mlProject) mlReq {
			return q("experiment_id", p.experiment)
		}, also: []mlCell{{action: mlRead, label: `Default experiment "0"`, build: func(*mlMatrix, *mlProject) mlReq {
			return q("experiment_id", "0")
		}}}},
		"GET /mlflow/experiments/get-by-name": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("experiment_name", "x")
		}},
		"POST /mlflow/experiments/search": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("max_results", 10, "filter", "name = 'x'")
		}},
		"GET /mlflow/experiments/search": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("max_results", "10", "view_type", "ALL")
		}},
		"GET /mlflow/experiments/list": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq { return q() }},
		// A rename: of a victim, so "x" keeps its name for get-by-name.
		"POST /mlflow/experiments/update": {action: mlTrack, byID: true, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("experiment_id", m.experimentVictim(p, false), "new_name", m.unique("renamed experiment"))
		}},
		"POST /mlflow/experiments/delete": {action: mlTrack, byID: true, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("experiment_id", m.experimentVictim(p, false))
		}},
		"POST /mlflow/experiments/restore": {action: mlTrack, byID: true, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("experiment_id", m.experimentVictim(p, true))
		}},
		"POST /mlflow/experiments/set-experiment-tag": {action: mlTrack, byID: true, build: expTag},
		"POST /mlflow/experimentsset-experiment-tag":  {action: mlTrack, byID: true, build: expTag},
		"POST /mlflow/experiments/delete-experiment-tag": {action: mlTrack, byID: true, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			key := fmt.Sprintf("doomed-%d", m.next())
			m.admin("PATCH", m.pp(p)+"/experiments/"+p.experiment, map[string]any{"tags": map[string]string{key: "x"}})
			return q("experiment_id", p.experiment, "key", key)
		}},

		// ---- runs ----
		"POST /mlflow/runs/create": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("experiment_id", p.experiment, "run_name", m.unique("mlx run"), "start_time", 1_700_000_000_000)
		}, also: []mlCell{{action: mlTrack, label: "Default experiment", build: func(*mlMatrix, *mlProject) mlReq {
			return q("run_name", "default run")
		}}}},
		"GET /mlflow/runs/get": {action: mlRead, byID: true, build: func(_ *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run)
		}},
		"POST /mlflow/runs/update": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run, "run_name", m.unique("run"))
		}},
		"POST /mlflow/runs/delete": {action: mlTrack, byID: true, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("run_id", m.runVictim(p, false))
		}},
		"POST /mlflow/runs/restore": {action: mlTrack, byID: true, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("run_id", m.runVictim(p, true))
		}},
		"POST /mlflow/runs/search": {action: mlRead, byID: true, search: true, build: func(_ *mlMatrix, p *mlProject) mlReq {
			return q("experiment_ids", []string{p.experiment}, "filter", "attributes.status = 'RUNNING'", "max_results", 10)
		}},
		"POST /mlflow/runs/log-metric": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run, "key", "loss", "value", 0.5, "timestamp", 1_700_000_000_000, "step", m.next())
		}},
		"POST /mlflow/runs/log-parameter": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run, "key", fmt.Sprintf("p%d", m.next()), "value", "1")
		}},
		"POST /mlflow/runs/set-tag": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run, "key", "k", "value", m.unique("v"))
		}},
		"POST /mlflow/runs/delete-tag": {action: mlTrack, byID: true, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			key := fmt.Sprintf("doomed-%d", m.next())
			m.admin("PATCH", m.pp(p)+"/runs/"+p.run, map[string]any{"tags": map[string]string{key: "x"}})
			return q("run_id", p.run, "key", key)
		}},
		"POST /mlflow/runs/log-batch": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			n := m.next()
			return q("run_id", p.run,
				"metrics", []map[string]any{{"key": "loss", "value": 0.25, "timestamp": 1_700_000_000_000, "step": n}},
				"params", []map[string]string{{"key": fmt.Sprintf("b%d", n), "value": "1"}},
				"tags", []map[string]string{{"key": "batch", "value": strconv.Itoa(n)}})
		}},
		"POST /mlflow/runs/log-inputs": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run, "datasets", []map[string]any{{"dataset": map[string]string{"name": fmt.Sprintf("ds%d", m.next()),
				"digest": "abc123", "source_type": "local", "source": "file:///data/train.csv"}}})
		}},
		"GET /mlflow/metrics/get-history": {action: mlRead, byID: true, build: func(_ *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run, "metric_key", "loss")
		}},

		// ---- artifacts ----
		"GET /mlflow/artifacts/list": {action: mlRead, byID: true, build: func(_ *mlMatrix, p *mlProject) mlReq {
			return q("run_id", p.run, "path", "weights")
		}},
		"GET /mlflow-artifacts/artifacts": {action: mlRead, byID: true, label: "a run's", build: func(_ *mlMatrix, p *mlProject) mlReq {
			return q("path", p.experiment+"/"+p.run+"/artifacts/weights")
		}, also: []mlCell{{action: mlRead, label: "a version's", build: func(*mlMatrix, *mlProject) mlReq {
			return q("path", "models/m/versions/1/artifacts/weights")
		}}}},
		"GET /mlflow-artifacts/artifacts/*": {action: mlRead, byID: true, label: "a run's", build: func(_ *mlMatrix, p *mlProject) mlReq {
			return mlReq{path: p.experiment + "/" + p.run + "/artifacts/weights/model.bin"}
		}, download: func(p *mlProject) []byte { return p.runArtifact },
			also: []mlCell{{action: mlRead, label: "a version's", build: func(*mlMatrix, *mlProject) mlReq {
				return mlReq{path: "models/m/versions/1/artifacts/weights/model.bin"}
			}, download: func(p *mlProject) []byte { return p.modelArtifact }}}},
		"PUT /mlflow-artifacts/artifacts/*": {action: mlTrack, byID: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			n := m.next()
			return mlReq{path: fmt.Sprintf("%s/%s/artifacts/uploads/%d.bin", p.experiment, p.run, n), raw: []byte(fmt.Sprintf("upload %d", n))}
		}},

		// ---- registered models ----
		"POST " + rm + "/create": {action: mlModel, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", fmt.Sprintf("mlx-model-%d", m.next()))
		}},
		"GET " + rm + "/get": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq { return q("name", "m") }},
		"POST " + rm + "/rename": {action: mlModel, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("name", m.modelVictim(p, "plain"), "new_name", fmt.Sprintf("renamed-%d", m.next()))
		}},
		"PATCH " + rm + "/update": {action: mlModel, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", "m", "description", m.unique("d"))
		}},
		// Deleting a model with a deployment pointer (a version in Staging
		// or Production, an alias) is the approvers'; a plain one the
		// editors'. Each cell deletes a victim of its own.
		"DELETE " + rm + "/delete": {action: mlModel, consumes: true, label: "model with plain versions", build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("name", m.modelVictim(p, "plain"))
		}, also: []mlCell{
			{action: mlPromote, consumes: true, label: "model with an alias", build: func(m *mlMatrix, p *mlProject) mlReq {
				return q("name", m.modelVictim(p, "alias"))
			}},
			{action: mlPromote, consumes: true, label: "model with a version in Staging", build: func(m *mlMatrix, p *mlProject) mlReq {
				return q("name", m.modelVictim(p, "staging"))
			}},
		}},
		"GET " + rm + "/search": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("filter", "name = 'm'", "max_results", "10")
		}},
		"POST " + rm + "/get-latest-versions": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("name", "m", "stages", []string{"None", "Staging"})
		}},
		"GET " + rm + "/get-latest-versions": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq { return q("name", "m") }},
		"POST " + rm + "/set-tag": {action: mlModel, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", "m", "key", "k", "value", m.unique("v"))
		}},
		"DELETE " + rm + "/delete-tag": {action: mlModel, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			key := fmt.Sprintf("doomed-%d", m.next())
			m.adminML(p, "POST", rm+"/set-tag", q("name", "m", "key", key, "value", "x"))
			return q("name", "m", "key", key)
		}},
		"POST " + rm + "/alias": {action: mlPromote, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", "m", "alias", "challenger", "version", strconv.Itoa(1+m.next()%2))
		}},
		"DELETE " + rm + "/alias": {action: mlPromote, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			alias := fmt.Sprintf("doomed-%d", m.next())
			m.admin("PUT", m.pp(p)+"/models/m/aliases/"+alias, map[string]any{"version": 1})
			return q("name", "m", "alias", alias)
		}},
		"GET " + rm + "/alias": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("name", "m", "alias", "champion")
		}},

		// ---- model versions ----
		// A version made from the project's run (lineage): through A's URI
		// B's run is no run of the project.
		"POST " + mv + "/create": {action: mlModel, byID: true, build: func(_ *mlMatrix, p *mlProject) mlReq {
			return q("name", "m", "source", "runs:/"+p.run+"/model", "run_id", p.run)
		}},
		"GET " + mv + "/get": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq { return q("name", "m", "version", "1") }},
		"PATCH " + mv + "/update": {action: mlModel, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", "m", "version", "1", "description", m.unique("d"))
		}},
		"DELETE " + mv + "/delete": {action: mlModel, consumes: true, label: "plain version", build: func(m *mlMatrix, p *mlProject) mlReq {
			return q("name", "m", "version", strconv.Itoa(m.versionVictim(p, "plain")))
		}, also: []mlCell{
			{action: mlPromote, consumes: true, label: "version in Production", build: func(m *mlMatrix, p *mlProject) mlReq {
				return q("name", "m", "version", strconv.Itoa(m.versionVictim(p, "production")))
			}},
			{action: mlPromote, consumes: true, label: "version with an alias", build: func(m *mlMatrix, p *mlProject) mlReq {
				return q("name", "m", "version", strconv.Itoa(m.versionVictim(p, "alias")))
			}},
		}},
		"GET " + mv + "/search": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("filter", "name = 'm'", "max_results", "10")
		}},
		"POST " + mv + "/transition-stage": {action: mlPromote, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", "m", "version", "2", "stage", []string{"Staging", "None"}[m.next()%2], "archive_existing_versions", false)
		}},
		"GET " + mv + "/get-download-uri": {action: mlRead, build: func(*mlMatrix, *mlProject) mlReq {
			return q("name", "m", "version", "1")
		}},
		"POST " + mv + "/set-tag": {action: mlModel, build: func(m *mlMatrix, _ *mlProject) mlReq {
			return q("name", "m", "version", "1", "key", "k", "value", m.unique("v"))
		}},
		"DELETE " + mv + "/delete-tag": {action: mlModel, consumes: true, build: func(m *mlMatrix, p *mlProject) mlReq {
			key := fmt.Sprintf("doomed-%d", m.next())
			m.adminML(p, "POST", mv+"/set-tag", q("name", "m", "version", "1", "key", key, "value", "x"))
			return q("name", "m", "version", "1", "key", key)
		}},
	}
}

// mlPrincipal is a caller of the matrix.
type mlPrincipal struct {
	name  string
	id    string // the user the audit trail names
	token string // "" = anonymous
	basic bool   // sent as HTTP Basic's password (MLFLOW_TRACKING_PASSWORD)
	admin bool   // a global admin through a session: every project
	scope string // the project id an API token is scoped to
	rank  map[string]int
	// revoked marks a revoked API token (401 everywhere).
	revoked bool
	// sharedActor marks an API token of a user who also acts through a
	// session (or another token): the audit's actor cannot tell them apart.
	sharedActor bool
}

// mlPass is one sweep of the matrix: a prefix, how it names the project,
// who calls, and the (URI project, objects' project) pairs.
type mlPass struct {
	name       string
	prefix     string
	byID       bool
	cross      bool
	principals []mlPrincipal
	targets    [][2]*mlProject
}

// mlSent is a matrix request, kept to match the audit trail against.
type mlSent struct {
	where   string
	ok      bool // answered 2xx
	allowed bool // the caller may take the action in the URI's project
	at      *mlProject
}

type mlMatrix struct {
	t       *testing.T
	e       *testenv.Env
	adminTk string
	n       int
	pending map[string]mlReq  // per cell and project: a built request not yet consumed
	sent    map[string]mlSent // by X-Request-Id
}

func (m *mlMatrix) next() int { m.n++; return m.n }

func (m *mlMatrix) unique(prefix string) string { return fmt.Sprintf("%s %d", prefix, m.next()) }

func (m *mlMatrix) pp(p *mlProject) string { return projectsPath + "/" + p.slug }

// admin sends a fixture request as the admin and fails unless it is 2xx.
func (m *mlMatrix) admin(method, path string, body any) testenv.Response {
	m.t.Helper()
	r := m.e.Do(method, path, m.adminTk, body)
	if r.Status < 200 || r.Status > 299 {
		m.t.Fatalf("fixture %s %s: %d %s", method, path, r.Status, r.Body)
	}
	return r
}

// adminML sends a fixture MLflow request as the admin (through p's URI).
func (m *mlMatrix) adminML(p *mlProject, method, rpc string, req mlReq) testenv.Response {
	m.t.Helper()
	path := mlURL(mlMain, rpc, p.slug, method, req)
	r := m.e.Do(method, path, m.adminTk, mlBody(method, req))
	if r.Status != 200 {
		m.t.Fatalf("fixture %s %s: %d %s", method, path, r.Status, r.Body)
	}
	return r
}

// experimentVictim creates, as the admin, an experiment for a cell to
// rename or delete (or, deleted, to restore).
func (m *mlMatrix) experimentVictim(p *mlProject, deleted bool) string {
	m.t.Helper()
	x := asJSON[projections.Experiment](m.t, m.admin("POST", m.pp(p)+"/experiments", map[string]any{"name": m.unique("victim")}))
	if deleted {
		m.admin("DELETE", m.pp(p)+"/experiments/"+x.ID, nil)
	}
	return x.ID
}

// runVictim is experimentVictim for runs (in the fixture experiment).
func (m *mlMatrix) runVictim(p *mlProject, deleted bool) string {
	m.t.Helper()
	r := asJSON[projections.Run](m.t, m.admin("POST", m.pp(p)+"/experiments/"+p.experiment+"/runs", map[string]any{}))
	if deleted {
		m.admin("DELETE", m.pp(p)+"/runs/"+r.ID, nil)
	}
	return r.ID
}

// modelVictim creates, as the admin, a model with one version: plain, or
// named by an alias, or in Staging.
func (m *mlMatrix) modelVictim(p *mlProject, kind string) string {
	m.t.Helper()
	name := fmt.Sprintf("victim-%d", m.next())
	mp := m.pp(p) + "/models/" + name
	m.admin("POST", m.pp(p)+"/models", map[string]any{"name": name})
	m.admin("POST", mp+"/versions", map[string]any{"description": "victim"})
	switch kind {
	case "alias":
		m.admin("PUT", mp+"/aliases/deployed", map[string]any{"version": 1})
	case "staging":
		m.admin("POST", mp+"/versions/1:transition", map[string]any{"stage": "staging"})
	}
	return name
}

// versionVictim registers, as the admin, a version of model "m": plain,
// in Production, or named by an alias.
func (m *mlMatrix) versionVictim(p *mlProject, kind string) int {
	m.t.Helper()
	v := asJSON[api.VersionResponse](m.t, m.admin("POST", m.pp(p)+"/models/m/versions", map[string]any{"description": "victim"})).Version
	switch kind {
	case "production":
		m.admin("POST", fmt.Sprintf("%s/models/m/versions/%d:transition", m.pp(p), v), map[string]any{"stage": "production", "archive_existing": true})
	case "alias":
		m.admin("PUT", m.pp(p)+"/models/m/aliases/deployed", map[string]any{"version": v})
	}
	return v
}

// request is the cell's request naming p's objects: the pending one of a
// consuming cell, or a new one.
func (m *mlMatrix) request(key string, c mlCell, p *mlProject) mlReq {
	if !c.consumes {
		return c.build(m, p)
	}
	k := key + "|" + c.label + "|" + p.id
	r, ok := m.pending[k]
	if !ok {
		r = c.build(m, p)
		m.pending[k] = r
	}
	return r
}

// consumed forgets the pending request of a consuming cell that succeeded.
func (m *mlMatrix) consumed(key string, c mlCell, p *mlProject) {
	delete(m.pending, key+"|"+c.label+"|"+p.id)
}

// mlURL is the path of rpc under prefix, the project named ref; a GET
// carries the request's params as its query.
func mlURL(prefix, rpc, ref, method string, req mlReq) string {
	path := strings.Replace(prefix, "{project}", url.PathEscape(ref), 1) + rpc
	if strings.HasSuffix(path, "/*") {
		path = strings.TrimSuffix(path, "*") + req.path
	}
	if method == "GET" && len(req.params) > 0 {
		v := url.Values{}
		for k, p := range req.params {
			if list, ok := p.([]string); ok {
				v[k] = list
			} else {
				v.Set(k, fmt.Sprint(p))
			}
		}
		path += "?" + v.Encode()
	}
	return path
}

// mlBody is the body of a request: none for a GET, the raw bytes of an
// upload, the params as JSON otherwise.
func mlBody(method string, req mlReq) any {
	switch {
	case method == "GET":
		return nil
	case req.raw != nil:
		return req.raw
	case req.params == nil:
		return map[string]any{}
	}
	return req.params
}

// call sends req as p.
func (m *mlMatrix) call(t *testing.T, p mlPrincipal, method, path string, req mlReq) testenv.Response {
	t.Helper()
	var hdr []string
	if req.raw != nil {
		hdr = append(hdr, "Content-Type", "application/octet-stream")
	}
	tok := p.token
	if p.basic && tok != "" {
		hdr, tok = append(hdr, basic(tok)...), ""
	}
	return send(t, m.e, method, path, tok, mlBody(method, req), hdr...)
}

// expect is what p must get from c in the project at: a status and, for a
// refusal, MLflow's error code.
func mlExpect(c mlCell, p mlPrincipal, pass mlPass, at *mlProject) (int, string) {
	switch {
	case p.token == "" || p.revoked:
		return 401, "UNAUTHENTICATED"
	case pass.prefix == mlBare && p.scope == "":
		return 400, "BAD_REQUEST"
	case p.admin:
		return 200, ""
	}
	switch r := p.rank[at.id]; {
	case r == 0:
		return 404, "RESOURCE_DOES_NOT_EXIST"
	case r >= mlMinRank[c.action]:
		return 200, ""
	}
	return 403, "PERMISSION_DENIED"
}

// mlSplit splits an MLflow route's pattern into prefix and RPC path.
func mlSplit(pattern string) (string, string, bool) {
	for _, p := range mlPrefixes {
		if strings.HasPrefix(pattern, p+"/") {
			return p, strings.TrimPrefix(pattern, p), true
		}
	}
	return "", "", false
}

func TestMLflowAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	began := time.Now()
	e := testenv.Start(t, testenv.Config(t))
	adminTk := e.Admin("root@mlmatrix.test").AccessToken
	m := &mlMatrix{t: t, e: e, adminTk: adminTk, pending: map[string]mlReq{}, sent: map[string]mlSent{}}

	// The MLflow routes by RPC and prefix, in table order. A route under
	// an MLflow prefix must be an MLflow route (or its errors would not be
	// MLflow's), every RPC must be served under every prefix, and every
	// RPC must have a cell.
	routes := map[string]map[string]api.Route{}
	var keys []string
	for _, rt := range e.P.API.Routes() {
		prefix, rpc, under := mlSplit(rt.Pattern)
		switch {
		case !rt.MLflow && under:
			t.Errorf("route %s %s is under the MLflow prefix %s but not MLflow: true", rt.Method, rt.Pattern, prefix)
			continue
		case !rt.MLflow:
			continue
		case !under:
			t.Errorf("MLflow route %s %s is under none of the prefixes %q", rt.Method, rt.Pattern, mlPrefixes)
			continue
		case rt.Public:
			t.Errorf("MLflow route %s %s is public", rt.Method, rt.Pattern)
		}
		k := rt.Method + " " + rpc
		if routes[k] == nil {
			routes[k] = map[string]api.Route{}
			keys = append(keys, k)
		}
		routes[k][prefix] = rt
	}
	cells := mlflowCells()
	for _, k := range keys {
		for _, prefix := range mlPrefixes {
			if _, ok := routes[k][prefix]; !ok {
				t.Errorf("MLflow RPC %s is not served under %s", k, prefix)
			}
		}
		if _, ok := cells[k]; !ok {
			t.Errorf("MLflow route %s has no entry in mlflowCells: say which action it needs and how to call it", k)
		}
	}
	for k := range cells {
		if _, ok := routes[k]; !ok {
			t.Logf("mlflowCells has %s, which the route table does not (yet) register", k)
		}
	}
	if len(keys) == 0 {
		t.Fatal("the route table has no MLflow routes")
	}
	if t.Failed() {
		t.FailNow()
	}

	// Principals. Project roles are given in A only.
	user := func(email, global string) mlPrincipal {
		u := regUser(e, adminTk, email, global)
		return mlPrincipal{name: strings.TrimSuffix(email, "@mlmatrix.test"), id: u.ID, token: u.Token, rank: map[string]int{}}
	}
	anonymous := mlPrincipal{name: "anonymous", rank: map[string]int{}}
	nonMember := user("non-member@mlmatrix.test", "member")
	viewer := user("viewer@mlmatrix.test", "viewer")
	editor := user("editor@mlmatrix.test", "viewer")
	approver := user("approver@mlmatrix.test", "viewer")
	owner := user("owner@mlmatrix.test", "member")
	leaver := user("leaver@mlmatrix.test", "viewer")
	ownerB := user("owner-b@mlmatrix.test", "member")
	admin := mlPrincipal{name: "admin", id: meID(t, e, adminTk), token: adminTk, admin: true, rank: map[string]int{}}

	setup := func(name string, own mlPrincipal, members map[*mlPrincipal]string) *mlProject {
		p := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, own.token, map[string]any{"name": name}))
		f := &mlProject{name: name, slug: p.Slug, id: p.ID, modelArtifact: []byte("weights of " + name),
			runArtifact: []byte("run weights of " + name)}
		pp := projectsPath + "/" + p.Slug
		for u, role := range members {
			call(t, e, 200, "PUT", pp+"/members/"+u.id, own.token, map[string]any{"role": role})
		}
		call(t, e, 201, "POST", pp+"/models", own.token, map[string]any{"name": "m"})
		call(t, e, 201, "POST", pp+"/models/m/versions", own.token, map[string]any{"description": "one"})
		call(t, e, 201, "POST", pp+"/models/m/versions", own.token, map[string]any{"description": "two"})
		call(t, e, 200, "PUT", pp+"/models/m/aliases/champion", own.token, map[string]any{"version": 1})
		call(t, e, 201, "PUT", pp+"/models/m/versions/1/artifacts/weights/model.bin", own.token, f.modelArtifact,
			"Content-Type", "application/octet-stream")
		f.experiment = asJSON[projections.Experiment](t, call(t, e, 201, "POST", pp+"/experiments", own.token, map[string]any{"name": "x"})).ID
		f.run = asJSON[projections.Run](t, call(t, e, 201, "POST", pp+"/experiments/"+f.experiment+"/runs", own.token, map[string]any{})).ID
		call(t, e, 201, "PUT", pp+"/runs/"+f.run+"/artifacts/weights/model.bin", own.token, f.runArtifact,
			"Content-Type", "application/octet-stream")
		// The Default experiment ("0"), made as an MLflow client makes it:
		// a run without an experiment.
		var created struct{ Run api.MLflowRun }
		r := call(t, e, 200, "POST", "/mlflow/"+p.Slug+"/api/2.0/mlflow/runs/create", own.token, map[string]any{"run_name": "first"})
		r.JSON(t, &created)
		f.defaultExp = created.Run.Info.ExperimentID
		return f
	}
	projA := setup("MLflow Matrix A", owner, map[*mlPrincipal]string{&viewer: "viewer", &editor: "editor", &approver: "approver", &leaver: "editor"})
	projB := setup("MLflow Matrix B", ownerB, nil)
	viewer.rank[projA.id], editor.rank[projA.id], approver.rank[projA.id], owner.rank[projA.id] = 1, 2, 3, 4

	// API tokens go through the same policy.
	mint := func(session, path string, body map[string]any) string {
		return createToken(t, e, session, body, path).Token
	}
	svc := asJSON[api.UserResponse](t, call(t, e, 201, "POST", "/api/v1/service-accounts", adminTk, map[string]any{"name": "mlmatrix bot"}))
	call(t, e, 200, "PUT", projectsPath+"/"+projA.slug+"/members/"+svc.ID, owner.token, map[string]any{"role": "editor"})
	revoked := createToken(t, e, owner.token, map[string]any{"name": "revoked"})
	call(t, e, 204, "DELETE", "/api/v1/tokens/"+revoked.ID, owner.token, nil)
	// The leaver's token is scoped to A, minted while an editor there;
	// then the owner removes the leaver from A.
	leaverTk := mint(leaver.token, "/api/v1/tokens", map[string]any{"name": "before leaving", "project": projA.slug})
	call(t, e, 204, "DELETE", projectsPath+"/"+projA.slug+"/members/"+leaver.id, owner.token, nil)

	ownerScoped := mlPrincipal{name: "owner's token scoped to A", id: owner.id, scope: projA.id, rank: map[string]int{projA.id: 4}, sharedActor: true,
		token: mint(owner.token, "/api/v1/tokens", map[string]any{"name": "scoped", "project": projA.slug})}
	ownerCapped := mlPrincipal{name: "owner's token capped at viewer", id: owner.id, rank: map[string]int{projA.id: 1}, sharedActor: true,
		token: mint(owner.token, "/api/v1/tokens", map[string]any{"name": "capped", "role": "viewer"})}
	adminScoped := mlPrincipal{name: "admin's token scoped to A", id: admin.id, scope: projA.id, rank: map[string]int{projA.id: 4}, sharedActor: true,
		token: mint(adminTk, "/api/v1/tokens", map[string]any{"name": "admin scoped", "project": projA.id})}
	// An admin's token with only a ceiling keeps no global power: it acts
	// with the admin's memberships (none), so it is a stranger everywhere.
	adminCapped := mlPrincipal{name: "admin's token capped at editor", id: admin.id, rank: map[string]int{}, sharedActor: true,
		token: mint(adminTk, "/api/v1/tokens", map[string]any{"name": "admin capped", "role": "editor"})}
	svcTok := mlPrincipal{name: "service account's token (HTTP Basic)", id: svc.ID, basic: true, rank: map[string]int{projA.id: 2},
		token: mint(adminTk, "/api/v1/service-accounts/"+svc.ID+"/tokens", map[string]any{"name": "bot"})}
	revokedTok := mlPrincipal{name: "revoked token", id: owner.id, token: revoked.Token, revoked: true, rank: map[string]int{}, sharedActor: true}
	leaverScoped := mlPrincipal{name: "token scoped to A of a user who left A", id: leaver.id, scope: projA.id, rank: map[string]int{}, token: leaverTk}
	viewerScoped := mlPrincipal{name: "viewer's token scoped to A", id: viewer.id, scope: projA.id, rank: map[string]int{projA.id: 1}, sharedActor: true,
		token: mint(viewer.token, "/api/v1/tokens", map[string]any{"name": "viewer scoped", "project": projA.id})}
	viewerSession := viewer
	viewerSession.name = "viewer's session (no scope)"

	both := [][2]*mlProject{{projA, projA}, {projB, projB}}
	passes := []mlPass{
		{name: "tracking URI by slug", prefix: mlMain, targets: both, principals: []mlPrincipal{anonymous, nonMember, viewer, editor, approver, owner, admin,
			ownerScoped, ownerCapped, adminScoped, adminCapped, svcTok, revokedTok, leaverScoped}},
		{name: "UI path by id", prefix: mlAjax, byID: true, targets: both, principals: []mlPrincipal{viewer, editor, nonMember}},
		{name: "bare path", prefix: mlBare, targets: [][2]*mlProject{{projA, projA}},
			principals: []mlPrincipal{anonymous, revokedTok, viewerSession, ownerCapped, viewerScoped, ownerScoped, leaverScoped}},
		{name: "A's URI naming B's objects", prefix: mlMain, cross: true, targets: [][2]*mlProject{{projA, projB}},
			principals: []mlPrincipal{viewer, editor, ownerScoped, svcTok, admin}},
	}
	all := passes[0].principals
	t.Logf("MLflow matrix setup: %s", time.Since(began).Round(time.Millisecond))

	var cellsRun, crossOK int
	var crossWhat []string
	var table []string
	for _, k := range keys {
		method, rpc, _ := strings.Cut(k, " ")
		cell := cells[k]
		for _, c := range append([]mlCell{cell}, cell.also...) {
			row := fmt.Sprintf("%-7s %-48s %s", method, rpc, mlActionNames[c.action])
			if c.label != "" {
				row += " [" + c.label + "]"
			}
			table = append(table, row)
		}
		t.Run(k, func(t *testing.T) {
			m.t = t
			defer func() { m.t = nil }() // builders run inside a cell only
			for _, c := range append([]mlCell{cell}, cell.also...) {
				for _, pass := range passes {
					if pass.cross && !c.byID {
						continue
					}
					for _, p := range pass.principals {
						for _, tg := range pass.targets {
							at, objs := tg[0], tg[1]
							where := fmt.Sprintf("%s: %s on %s", pass.name, p.name, at.name)
							if c.label != "" {
								where += " (" + c.label + ")"
							}
							ref := at.slug
							if pass.byID {
								ref = at.id
							}
							req := m.request(k, c, objs)
							r := m.call(t, p, method, mlURL(pass.prefix, rpc, ref, method, req), req)
							cellsRun++
							ok := r.Status >= 200 && r.Status <= 299
							if ok && c.consumes {
								m.consumed(k, c, objs)
							}
							want, code := mlExpect(c, p, pass, at)
							rid := r.Header.Get("X-Request-Id")
							if rid == "" {
								t.Fatalf("%s: no X-Request-Id, so the audit trail cannot be matched to the request", where)
							}
							m.sent[rid] = mlSent{where: k + " by " + where, ok: ok, allowed: want == 200 && !pass.cross, at: at}
							if ok && (k == "POST /mlflow/runs/log-metric" || k == "POST /mlflow/runs/log-batch") {
								objs.metricPointsSent++
							}
							if ok && ((!p.admin && p.rank[at.id] == 0) || (pass.cross && !c.search)) {
								crossOK++
								crossWhat = append(crossWhat, k+" by "+where)
							}
							if pass.cross {
								m.checkCross(t, where, c, r, want, objs)
								continue
							}
							if want == 200 {
								m.checkOK(t, where, c, r, objs)
								continue
							}
							if err := checkMLflowError(r, want, code); err != nil {
								t.Errorf("%s: %v", where, err)
								continue
							}
							if want == 404 {
								// The same request to a project that does not exist.
								missing, prefix := "mlx-no-such-project", pass.prefix
								if pass.byID {
									missing = uuid.NewString()
								}
								if prefix == mlBare {
									prefix = mlMain
								}
								miss := m.call(t, p, method, mlURL(prefix, rpc, missing, method, req), req)
								if err := checkMLflowError(miss, 404, "RESOURCE_DOES_NOT_EXIST"); err != nil {
									t.Errorf("%s, missing project: %v", where, err)
								} else if !bytes.Equal(r.Body, miss.Body) {
									t.Errorf("%s: a hidden project answers %s, a missing one %s", where, r.Body, miss.Body)
								}
							}
						}
					}
				}
			}
		})
	}
	m.t = t
	t.Logf("MLflow action table (%d RPCs):\n%s", len(keys), strings.Join(table, "\n"))
	if crossOK != 0 {
		t.Errorf("%d successful requests on projects the caller is not a member of: %q", crossOK, crossWhat)
	}

	// No refused request logged a point: each run's history holds exactly
	// the points of the requests that answered 200.
	for _, p := range []*mlProject{projA, projB} {
		// Not eventually: a failure here must not stop the audit check.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			var h struct {
				Metrics []api.MLflowMetric `json:"metrics"`
			}
			r := m.adminML(p, "GET", "/mlflow/metrics/get-history", mlReq{params: map[string]any{"run_id": p.run, "metric_key": "loss"}})
			r.JSON(t, &h)
			if len(h.Metrics) == p.metricPointsSent {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s's run has %d points of loss; %d requests that logged one answered 200", p.name, len(h.Metrics), p.metricPointsSent)
				break
			}
		}
	}

	// The audit trail agrees. Every event a matrix request caused (matched
	// by its correlation id) comes from a request that answered 2xx, by a
	// caller allowed to take the action, on an aggregate of the project
	// the request addressed; and no caller (who acts as nobody else)
	// wrote on a project it is not a member of.
	for _, p := range []*mlProject{projA, projB} {
		p.subjects = m.subjectsOf(p)
	}
	last := m.admin("PATCH", m.pp(projA)+"/experiments/"+projA.experiment, map[string]any{"tags": map[string]string{"audit": "end"}}).Header.Get("Maestro-Sequence")
	var audit []projections.AuditEntry
	for q := (url.Values{"min_sequence": {last}, "max_results": {"200"}}); ; {
		pg := auditPage(t, e, adminTk, q)
		audit = append(audit, pg.Items...)
		if pg.NextPageToken == "" {
			break
		}
		q.Set("page_token", pg.NextPageToken)
	}
	if !slices.ContainsFunc(audit, func(a projections.AuditEntry) bool { return strconv.FormatUint(a.Sequence, 10) == last }) {
		t.Fatalf("the audit trail lacks the last event (%s)", last)
	}
	projectAggs := map[string]bool{events.AggProject: true, events.AggModel: true, events.AggExperiment: true, events.AggRun: true}
	caused := 0
	for _, a := range audit {
		s, ours := m.sent[a.CorrelationID]
		if !ours {
			continue
		}
		caused++
		agg, _ := events.AggregateOf(a.Subject)
		switch {
		case !s.ok:
			t.Errorf("%s was refused but wrote %s on %s (seq %d)", s.where, a.Type, a.Subject, a.Sequence)
		case !s.allowed:
			t.Errorf("%s may not, yet wrote %s on %s (seq %d)", s.where, a.Type, a.Subject, a.Sequence)
		case projectAggs[agg] && !s.at.subjects[a.Subject]:
			t.Errorf("%s wrote %s on %s (seq %d), which is not an aggregate of %s", s.where, a.Type, a.Subject, a.Sequence, s.at.name)
		}
	}
	if caused == 0 {
		t.Error("no audit entry matches a matrix request: the correlation check checked nothing")
	}
	for _, p := range all {
		if p.token == "" || p.admin || p.revoked || p.sharedActor {
			continue
		}
		wrote := 0
		for _, a := range audit {
			if a.Actor != "user:"+p.id {
				continue
			}
			inA, inB := projA.subjects[a.Subject], projB.subjects[a.Subject]
			if inA || inB {
				wrote++
			}
			if (inA && p.rank[projA.id] < mlMinRank[mlTrack]) || inB {
				t.Errorf("%s wrote %s on %s (seq %d), in a project where it may not write", p.name, a.Type, a.Subject, a.Sequence)
			}
		}
		// Owners set their project up; everyone else wrote through the matrix only.
		if wantWrites := p.rank[projA.id] >= mlMinRank[mlTrack]; wantWrites != (wrote > 0) {
			t.Errorf("%s wrote %d events in the fixture projects; want some = %v", p.name, wrote, wantWrites)
		}
	}
	if cellsRun < len(keys)*(2*len(all)) {
		t.Fatalf("only %d cells ran for %d RPCs", cellsRun, len(keys))
	}
	t.Logf("MLflow matrix: %d RPCs (%d routes), %d cells, %d audit entries caused, %d cross-project successes, %s in all",
		len(keys), 3*len(keys), cellsRun, caused, crossOK, time.Since(began).Round(time.Millisecond))
}

// checkOK checks a successful answer: 200 with a JSON object, or a file's
// bytes.
func (m *mlMatrix) checkOK(t *testing.T, where string, c mlCell, r testenv.Response, objs *mlProject) {
	t.Helper()
	switch {
	case r.Status != 200:
		t.Errorf("%s: %d %s, want 200", where, r.Status, r.Body)
	case c.download != nil:
		if want := c.download(objs); !bytes.Equal(r.Body, want) {
			t.Errorf("%s: downloaded %q, want %q", where, r.Body, want)
		}
	case !bytes.HasPrefix(bytes.TrimSpace(r.Body), []byte("{")):
		t.Errorf("%s: 200 %s, want a JSON object", where, r.Body)
	}
}

// checkCross checks a request to A's URI naming B's objects: whoever may
// take the action in A is told the object does not exist there (or, for a
// registration, that its run is no run of A); whoever may not is refused
// either way; a search may answer, without anything of B's.
func (m *mlMatrix) checkCross(t *testing.T, where string, c mlCell, r testenv.Response, want int, foreign *mlProject) {
	t.Helper()
	if r.Status == 200 && c.search {
		for _, id := range []string{foreign.experiment, foreign.run} {
			if bytes.Contains(r.Body, []byte(id)) {
				t.Errorf("%s: B's %s is in the answer %s", where, id, r.Body)
			}
		}
		return
	}
	codes := []string{"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}
	if want != 200 {
		codes = []string{"PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST"}
	}
	for _, code := range codes {
		if checkMLflowError(r, map[string]int{"RESOURCE_DOES_NOT_EXIST": 404, "INVALID_PARAMETER_VALUE": 400, "PERMISSION_DENIED": 403}[code], code) == nil {
			return
		}
	}
	t.Errorf("%s: %d %s, want MLflow's error %q", where, r.Status, r.Body, codes)
}

// subjectsOf lists, as the admin, the aggregate subjects of a project: the
// project, its models, experiments and runs (deleted ones too).
func (m *mlMatrix) subjectsOf(p *mlProject) map[string]bool {
	m.t.Helper()
	s := map[string]bool{events.Subject(events.AggProject, p.id): true}
	pages := func(path string, each func(r testenv.Response) string) {
		token := ""
		for {
			q := url.Values{"max_results": {"200"}}
			if strings.Contains(path, "/experiments") {
				q.Set("view", "all")
			} else {
				q.Set("include_deleted", "true")
			}
			if token != "" {
				q.Set("page_token", token)
			}
			if token = each(m.admin("GET", path+"?"+q.Encode(), nil)); token == "" {
				return
			}
		}
	}
	pages(m.pp(p)+"/models", func(r testenv.Response) string {
		pg := asJSON[api.ModelPage](m.t, r)
		for _, it := range pg.Items {
			s[events.Subject(events.AggModel, it.ID)] = true
		}
		return pg.NextPageToken
	})
	var experiments []string
	pages(m.pp(p)+"/experiments", func(r testenv.Response) string {
		pg := asJSON[api.ExperimentPage](m.t, r)
		for _, it := range pg.Items {
			s[events.Subject(events.AggExperiment, it.ID)] = true
			experiments = append(experiments, it.ID)
		}
		return pg.NextPageToken
	})
	for _, x := range experiments {
		pages(m.pp(p)+"/experiments/"+x+"/runs", func(r testenv.Response) string {
			pg := asJSON[api.RunPage](m.t, r)
			for _, it := range pg.Items {
				s[events.Subject(events.AggRun, it.ID)] = true
			}
			return pg.NextPageToken
		})
	}
	return s
}
