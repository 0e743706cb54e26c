package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Governed promotion through HTTP: approval policies, promotion requests
// under the four-eyes and gate rules, the flow that carries approved ones
// out, policy bypass attempts through Maestro's API and MLflow's, and the
// administrators' override.

// promoProject is a project with an owner, an editor, an approver and a
// viewer (newMLflowRegistryProject), a second approver, and a model
// "churn" whose versions the editor registered: v1 and v3 meet the gate
// (auc 0.95, latency 20 ms), v2 does not (auc 0.8).
type promoProject struct {
	mlrProject
	approver2 regClient
	pp        string // /api/v1/projects/<slug>
}

func newPromoProject(t *testing.T, e *testenv.Env, admin, name string) promoProject {
	t.Helper()
	p := promoProject{mlrProject: newMLflowRegistryProject(t, e, admin, name)}
	p.pp = projectsPath + "/" + p.proj.Slug
	p.approver2 = regUser(e, admin, "approver2@"+p.proj.Slug+".test", "viewer")
	call(t, e, 200, "PUT", p.pp+"/members/"+p.approver2.ID, p.owner.Token, map[string]any{"role": "approver"})
	call(t, e, 201, "POST", p.pp+"/models", p.editor.Token, map[string]any{"name": "churn"})
	for _, auc := range []float64{0.95, 0.8, 0.95} {
		call(t, e, 201, "POST", p.pp+"/models/churn/versions", p.editor.Token, map[string]any{"metrics": map[string]float64{"auc": auc, "latency_ms": 20}})
	}
	return p
}

func (p promoProject) request(t *testing.T, e *testenv.Env, token string, version int, target string) api.PromotionResponse {
	t.Helper()
	r := call(t, e, 201, "POST", p.pp+"/promotions", token, map[string]any{"model": "churn", "version": version, "target": target, "comment": "ship it"})
	out := asJSON[api.PromotionResponse](t, r)
	if loc := r.Header.Get("Location"); loc != p.pp+"/promotions/"+out.ID {
		t.Fatalf("Location = %q, want the request's", loc)
	}
	return out
}

func (p promoProject) decide(t *testing.T, e *testenv.Env, status int, token, id, verb string) api.PromotionResponse {
	t.Helper()
	r := call(t, e, status, "POST", p.pp+"/promotions/"+id+":"+verb, token, map[string]any{"comment": verb + "d"})
	return asJSON[api.PromotionResponse](t, r)
}

func (p promoProject) stage(t *testing.T, e *testenv.Env, v string) string {
	t.Helper()
	return asJSON[api.VersionResponse](t, call(t, e, 200, "GET", p.pp+"/models/churn/versions/"+v, p.viewer.Token, nil)).Stage
}

// waitStage polls version v until it is in stage: the flow's move reaches
// the models read model on its own time (no command of the test waits for
// it).
func (p promoProject) waitStage(t *testing.T, e *testenv.Env, v, stage string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for got := p.stage(t, e, v); got != stage; got = p.stage(t, e, v) {
		if time.Now().After(deadline) {
			t.Fatalf("version %s is in %s, want %s", v, got, stage)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPromotion polls the request until it reaches state.
func (p promoProject) waitPromotion(t *testing.T, e *testenv.Env, id, state string) api.PromotionResponse {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := asJSON[api.PromotionResponse](t, call(t, e, 200, "GET", p.pp+"/promotions/"+id, p.viewer.Token, nil))
		if got.State == state {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("promotion %s is %s (%s), want %s: %+v", id, got.State, got.Reason, state, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func inbox(t *testing.T, e *testenv.Env, pp, token, query string) []string {
	t.Helper()
	page := asJSON[api.PromotionPage](t, call(t, e, 200, "GET", pp+"/promotions?"+query, token, nil))
	var ids []string
	for _, it := range page.Items {
		ids = append(ids, it.ID)
	}
	return ids
}

func TestPromotionFourEyes(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("admin@promo.test").AccessToken
	p := newPromoProject(t, e, admin, "Promo Four Eyes")

	// Only owners set policies; the policy is read back with its defaults.
	gate := "metrics.auc >= 0.9 AND metrics.latency_ms < 50"
	body := map[string]any{"target": "production", "required_approvals": 2, "approver_roles": []string{"approver", "owner"}, "gate": gate}
	callProblem(t, e, 403, "forbidden", "POST", p.pp+"/policies", p.approver.Token, body)
	callProblem(t, e, 400, "validation-failed", "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "archived"})
	callProblem(t, e, 400, "validation-failed", "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "production", "gate": "params.lr = '1'"})
	pol := asJSON[api.PolicyBody](t, call(t, e, 200, "POST", p.pp+"/policies", p.owner.Token, body))
	if pol.RequiredApprovals != 2 || pol.SeparationOfDuties == nil || !*pol.SeparationOfDuties || pol.RequestTTL != "168h" || pol.Gate != gate {
		t.Fatalf("policy = %+v", pol)
	}
	if got := asJSON[api.PolicyList](t, call(t, e, 200, "GET", p.pp+"/policies", p.viewer.Token, nil)); len(got.Policies) != 1 || got.Policies[0].Target != "production" {
		t.Fatalf("policies = %+v", got)
	}
	call(t, e, 200, "GET", p.pp+"/policies/production", p.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", p.pp+"/policies/staging", p.viewer.Token, nil)

	// Direct moves of the governed stage are refused on both APIs, naming
	// the policy; the ungoverned staging is not.
	r := e.Do("POST", p.pp+"/models/churn/versions/1:transition", p.approver.Token, map[string]any{"stage": "production"})
	if _, err := checkProblem(r, 403, "approval-required"); err != nil || !strings.Contains(string(r.Body), "/promotions") {
		t.Fatalf("direct transition: %v %s", err, r.Body)
	}
	msg := p.asApprover.fails(403, "PERMISSION_DENIED", "POST", "model-versions/transition-stage",
		map[string]any{"name": "churn", "version": "1", "stage": "Production", "archive_existing_versions": false})
	if !strings.Contains(msg, "approval policy for production") {
		t.Fatalf("MLflow transition: %q", msg)
	}
	call(t, e, 200, "POST", p.pp+"/models/churn/versions/3:transition", p.approver.Token, map[string]any{"stage": "staging"})

	// A failing gate records the request as rejected, with the reason.
	low := p.request(t, e, p.editor.Token, 2, "production")
	if low.State != "rejected" || low.Gate.Passed || !strings.Contains(low.Reason, "auc = 0.8") {
		t.Fatalf("low-auc request = %+v", low)
	}
	callProblem(t, e, 409, "no-policy", "POST", p.pp+"/promotions", p.editor.Token, map[string]any{"model": "churn", "version": 1, "target": "@champion"})
	callProblem(t, e, 403, "forbidden", "POST", p.pp+"/promotions", p.viewer.Token, map[string]any{"model": "churn", "version": 1, "target": "production"})

	// The editor (requester and author) asks; approvals need two of the
	// approver and owner roles, never the editor's own.
	req := p.request(t, e, p.editor.Token, 1, "production")
	if req.State != "pending" || !req.Gate.Passed || req.RequiredApprovals != 2 {
		t.Fatalf("request = %+v", req)
	}
	callProblem(t, e, 403, "forbidden", "POST", p.pp+"/promotions/"+req.ID+":approve", p.viewer.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "POST", p.pp+"/promotions/"+req.ID+":approve", p.editor.Token, map[string]any{})
	if got := inbox(t, e, p.pp, p.approver.Token, "awaiting_me=true"); len(got) != 1 || got[0] != req.ID {
		t.Fatalf("approver's inbox = %v", got)
	}
	if got := inbox(t, e, p.pp, p.editor.Token, "mine=true"); len(got) != 2 {
		t.Fatalf("editor's requests = %v", got)
	}
	first := p.decide(t, e, 200, p.approver.Token, req.ID, "approve")
	if first.State != "pending" || len(first.Approvals) != 1 {
		t.Fatalf("after one approval: %+v", first)
	}
	callProblem(t, e, 409, "already-approved", "POST", p.pp+"/promotions/"+req.ID+":approve", p.approver.Token, map[string]any{})
	if got := inbox(t, e, p.pp, p.approver.Token, "awaiting_me=true"); len(got) != 0 {
		t.Fatalf("inbox after approving = %v", got)
	}
	if p.stage(t, e, "1") != "none" {
		t.Fatal("one approval of two moved the version")
	}
	p.decide(t, e, 200, p.approver2.Token, req.ID, "approve")
	done := p.waitPromotion(t, e, req.ID, "completed")
	if len(done.Approvals) != 2 {
		t.Fatalf("completed request = %+v", done)
	}
	p.waitStage(t, e, "1", "production")
	callProblem(t, e, 409, "promotion-closed", "POST", p.pp+"/promotions/"+req.ID+":approve", p.owner.Token, map[string]any{})

	// The transition names the request that authorised it (the audit
	// trail shows the event as stored).
	auditWait(t, e, admin, "maestro.model.version.stage_transitioned.v1", func(items []projections.AuditEntry) bool {
		for _, a := range items {
			var d struct {
				Version     int    `json:"version"`
				PromotionID string `json:"promotion_id"`
			}
			if json.Unmarshal(a.Data, &d) == nil && d.Version == 1 && d.PromotionID == req.ID && strings.Contains(a.Summary, req.ID) {
				return true
			}
		}
		return false
	})

	// Self-approval: an approver who requests may not approve; only the
	// requester cancels; nothing is decided on a cancelled request.
	own := p.request(t, e, p.approver.Token, 3, "production")
	callProblem(t, e, 403, "separation-of-duties", "POST", p.pp+"/promotions/"+own.ID+":approve", p.approver.Token, map[string]any{})
	callProblem(t, e, 403, "forbidden", "POST", p.pp+"/promotions/"+own.ID+":cancel", p.editor.Token, map[string]any{})
	if got := p.decide(t, e, 200, p.approver.Token, own.ID, "cancel"); got.State != "cancelled" {
		t.Fatalf("cancelled = %+v", got)
	}
	callProblem(t, e, 409, "promotion-closed", "POST", p.pp+"/promotions/"+own.ID+":approve", p.owner.Token, map[string]any{})

	// A rejection ends a request.
	rej := p.request(t, e, p.editor.Token, 3, "production")
	if got := p.decide(t, e, 200, p.owner.Token, rej.ID, "reject"); got.State != "rejected" {
		t.Fatalf("rejected = %+v", got)
	}
	if got := inbox(t, e, p.pp, p.viewer.Token, "state=rejected"); len(got) != 2 {
		t.Fatalf("rejected requests = %v", got)
	}

	// Strangers see nothing.
	outsider := regUser(e, admin, "outsider@promo.test", "member")
	callProblem(t, e, 404, "not-found", "GET", p.pp+"/promotions/"+req.ID, outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", p.pp+"/promotions/"+rej.ID+":approve", outsider.Token, map[string]any{})
}

func TestPromotionExpiryAliasAndOverride(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("admin@promo2.test").AccessToken
	p := newPromoProject(t, e, admin, "Promo Alias")

	call(t, e, 200, "PUT", p.pp+"/policies/@champion", p.owner.Token, map[string]any{"required_artifacts": []string{"explanation.json"}, "request_ttl": "1m"})
	// A governed alias cannot be set or deleted directly, on either API.
	callProblem(t, e, 403, "approval-required", "PUT", p.pp+"/models/churn/aliases/champion", p.approver.Token, map[string]any{"version": 1})
	p.asApprover.fails(403, "PERMISSION_DENIED", "POST", "registered-models/alias", map[string]any{"name": "churn", "alias": "champion", "version": "1"})

	// A required artifact missing rejects the request at once.
	missing := p.request(t, e, p.editor.Token, 1, "@champion")
	if missing.State != "rejected" || len(missing.Gate.MissingArtifacts) != 1 || missing.Gate.MissingArtifacts[0] != "explanation.json" {
		t.Fatalf("request without the explanation = %+v", missing)
	}
	put := e.Do("PUT", p.pp+"/models/churn/versions/1/artifacts/explanation.json", p.editor.Token, explanationDoc("x1", 0.5)) // a valid one: uploads are validated
	if put.Status != http.StatusCreated && put.Status != http.StatusOK {
		t.Fatalf("upload: %d %s", put.Status, put.Body)
	}

	// Expiry: a request older than the policy's TTL can no longer be approved.
	stale := p.request(t, e, p.editor.Token, 1, "@champion")
	e.Clock.Advance(2 * time.Minute)
	callProblem(t, e, 409, "promotion-expired", "POST", p.pp+"/promotions/"+stale.ID+":approve", p.approver.Token, map[string]any{})
	if got := inbox(t, e, p.pp, p.viewer.Token, "state=expired"); len(got) != 1 || got[0] != stale.ID {
		t.Fatalf("expired requests = %v", got)
	}

	// Concurrent approvals of a one-approval request: one wins, the
	// alias moves once.
	req := p.request(t, e, p.editor.Token, 1, "@champion")
	var wg sync.WaitGroup
	statuses := make([]int, 3)
	for i, tok := range []string{p.approver.Token, p.approver2.Token, p.owner.Token} {
		wg.Go(func() {
			statuses[i] = e.Do("POST", p.pp+"/promotions/"+req.ID+":approve", tok, map[string]any{}).Status
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 409:
		default:
			t.Fatalf("concurrent approvals answered %v", statuses)
		}
	}
	if ok != 1 {
		t.Fatalf("concurrent approvals answered %v, want one 200", statuses)
	}
	p.waitPromotion(t, e, req.ID, "completed")
	deadline := time.Now().Add(20 * time.Second)
	for r := e.Do("GET", p.pp+"/models/churn/aliases/champion", p.viewer.Token, nil); r.Status != 200 || asJSON[api.VersionResponse](t, r).Version != 1; r = e.Do("GET", p.pp+"/models/churn/aliases/champion", p.viewer.Token, nil) {
		if time.Now().After(deadline) {
			t.Fatalf("champion: %d %s, want version 1", r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	auditWait(t, e, admin, "maestro.model.alias.set.v1", func(items []projections.AuditEntry) bool {
		if len(items) > 1 {
			t.Fatalf("alias set %d times: %+v", len(items), items)
		}
		return len(items) == 1 && strings.Contains(items[0].Summary, "promotion "+req.ID)
	})

	// The emergency override: admins only, with a reason, recorded.
	over := map[string]any{"model": "churn", "version": 3, "target": "@champion", "reason": "rollback: v1 leaks PII"}
	callProblem(t, e, 403, "forbidden", "POST", p.pp+"/promotions:override", p.owner.Token, over)
	callProblem(t, e, 400, "validation-failed", "POST", p.pp+"/promotions:override", admin, map[string]any{"model": "churn", "version": 3, "target": "@champion"})
	callProblem(t, e, 409, "no-policy", "POST", p.pp+"/promotions:override", admin, map[string]any{"model": "churn", "version": 3, "target": "staging", "reason": "x"})
	call(t, e, 200, "POST", p.pp+"/promotions:override", admin, over)
	alias := asJSON[api.VersionResponse](t, call(t, e, 200, "GET", p.pp+"/models/churn/aliases/champion", p.viewer.Token, nil))
	if alias.Version != 3 {
		t.Fatalf("champion after override = %d", alias.Version)
	}
	auditWait(t, e, admin, "maestro.model.alias.set.v1", func(items []projections.AuditEntry) bool {
		return len(items) == 2 && strings.Contains(items[0].Summary, `policy overridden: "rollback: v1 leaks PII"`) &&
			strings.HasPrefix(items[0].Actor, "user:")
	})

	// An emergency is also taking a governed pointer offline: the alias is
	// removed (naming the version it must point at), a version leaves a
	// governed stage by moving to archived or none (none governs here).
	pull := map[string]any{"model": "churn", "version": 1, "target": "@champion", "remove": true, "reason": "v3 misbehaves too"}
	callProblem(t, e, 403, "approval-required", "DELETE", p.pp+"/models/churn/aliases/champion", p.owner.Token, nil)
	callProblem(t, e, 409, "concurrent-modification", "POST", p.pp+"/promotions:override", admin, pull)
	callProblem(t, e, 400, "validation-failed", "POST", p.pp+"/promotions:override", admin,
		map[string]any{"model": "churn", "version": 3, "target": "staging", "remove": true, "reason": "x"})
	callProblem(t, e, 409, "no-policy", "POST", p.pp+"/promotions:override", admin,
		map[string]any{"model": "churn", "version": 3, "target": "archived", "reason": "x"})
	pull["version"] = 3
	call(t, e, 200, "POST", p.pp+"/promotions:override", admin, pull)
	callProblem(t, e, 404, "not-found", "GET", p.pp+"/models/churn/aliases/champion", p.viewer.Token, nil)
	auditWait(t, e, admin, "maestro.model.alias.deleted.v1", func(items []projections.AuditEntry) bool {
		return len(items) == 1 && strings.Contains(items[0].Summary, `policy overridden: "v3 misbehaves too"`)
	})
}

// auditWait polls the audit trail's entries of type (newest first) until
// ok holds: the trail lingers behind commands (projections.Lingering).
func auditWait(t *testing.T, e *testenv.Env, admin, typ string, ok func([]projections.AuditEntry) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		page := asJSON[api.AuditPage](t, call(t, e, 200, "GET", "/api/v1/audit?type="+typ, admin, nil))
		if ok(page.Items) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit entries of %s: %+v", typ, page.Items)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An approval whose flow did not run before the process stopped is
// carried out after the restart: the flow's durable consumer (paused here,
// so the approval is stored and the move is not made) delivers it again.
func TestPromotionRestartBetweenApprovalAndTransition(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	e := testenv.Start(t, cfg)
	admin := e.Admin("admin@promo3.test").AccessToken
	p := newPromoProject(t, e, admin, "Promo Restart")
	ctx := context.Background()
	if _, err := e.P.Store.JetStream().PauseConsumer(ctx, events.StreamName, "promotions", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("pause the promotion flow: %v", err)
	}
	call(t, e, 200, "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "production"})
	req := p.request(t, e, p.editor.Token, 1, "production")
	if got := p.decide(t, e, 200, p.approver.Token, req.ID, "approve"); got.State != "approved" {
		t.Fatalf("approved = %+v", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := e.P.Store.JetStream().Consumer(ctx, events.StreamName, "promotions")
		if err != nil {
			t.Fatal(err)
		}
		if ci := info.CachedInfo(); ci.NumPending+uint64(ci.NumAckPending) > 0 {
			break // the approval waits for the flow
		}
		if time.Now().After(deadline) {
			t.Fatal("the approval never reached the paused flow's consumer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.stage(t, e, "1") != "none" {
		t.Fatal("moved while the flow was paused")
	}
	p.waitPromotion(t, e, req.ID, "approved")
	e.Stop()

	e2 := testenv.Start(t, cfg)
	// A pause outlives the flow binding its consumer again (an operator's
	// pause should): lift it, and the stored approval is delivered.
	if _, err := e2.P.Store.JetStream().ResumeConsumer(ctx, events.StreamName, "promotions"); err != nil {
		t.Fatalf("resume the promotion flow: %v", err)
	}
	p.viewer.Token = e2.Login("viewer@promo-restart.test", testenv.Password).AccessToken
	p.waitPromotion(t, e2, req.ID, "completed")
	p.waitStage(t, e2, "1", "production")
}

// ---- authorization matrix (registry_matrix_test.go) ----

// promotionCells are the matrix cells of the promotion routes. Their
// fixtures, made by the admin, never touch what other cells rely on: the
// policies govern aliases no other cell uses (@mx-governed for requests,
// approvals and reads, @mx-override for the override), and they need ten
// approvals, so no approval completes and no flow moves anything.
func promotionCells() map[string]mxCell {
	const (
		policies   = mxProj + "/policies"
		promotions = mxProj + "/promotions"
	)
	governed := map[string]any{"target": "@mx-governed", "required_approvals": 10, "separation_of_duties": false}
	fresh := func(m *matrix, p *mxProject) mxReq {
		return mxReq{params: map[string]string{"promotion": m.promotion(p, true, m.adminTk)}}
	}
	return map[string]mxCell{
		"GET " + policies: {action: mxRead, build: func(m *matrix, p *mxProject) mxReq { m.promotion(p, false, m.adminTk); return mxReq{} }},
		"POST " + policies: {action: mxManage, build: func(*matrix, *mxProject) mxReq {
			return mxReq{body: governed}
		}},
		"GET " + policies + "/{target}": {action: mxRead, build: func(m *matrix, p *mxProject) mxReq {
			m.promotion(p, false, m.adminTk)
			return mxReq{params: map[string]string{"target": "@mx-governed"}}
		}},
		"PUT " + policies + "/{target}": {action: mxManage, build: func(*matrix, *mxProject) mxReq {
			return mxReq{params: map[string]string{"target": "@mx-governed"}, body: map[string]any{"required_approvals": 10, "separation_of_duties": false}}
		}},
		"DELETE " + policies + "/{target}": {action: mxManage, build: func(m *matrix, p *mxProject) mxReq {
			m.admin("PUT", mxProjects+"/"+p.slug+"/policies/@mx-doomed", map[string]any{})
			return mxReq{params: map[string]string{"target": "@mx-doomed"}}
		}},
		"POST " + promotions: {action: mxModelWrite, build: func(m *matrix, p *mxProject) mxReq {
			m.promotion(p, false, m.adminTk)
			return mxReq{body: map[string]any{"model": "m", "version": 1 + m.next()%2, "target": "@mx-governed"}}
		}},
		"GET " + promotions: {action: mxRead, build: func(*matrix, *mxProject) mxReq { return mxReq{} }},
		"GET " + promotions + "/{promotion}": {action: mxRead, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"promotion": m.promotion(p, false, m.adminTk)}}
		}},
		// The policy names the approver and owner roles: approving and
		// rejecting are the promote action's ranks, through a session.
		"POST " + promotions + "/{promotion}:approve": {action: mxDecide, build: fresh},
		"POST " + promotions + "/{promotion}:reject":  {action: mxDecide, build: fresh},
		// The project's owner requests the fixture: its requester and the
		// owners (admins act as owners) may cancel it.
		"POST " + promotions + "/{promotion}:cancel": {action: mxManage, build: func(m *matrix, p *mxProject) mxReq {
			return mxReq{params: map[string]string{"promotion": m.promotion(p, true, p.owner)}}
		}},
		// Each cell governs @mx-override for itself; the repair lifts the
		// policy and the alias, which would otherwise govern the model
		// deletion cells.
		"POST " + promotions + ":override": {action: mxOverride, build: func(m *matrix, p *mxProject) mxReq {
			m.admin("PUT", mxProjects+"/"+p.slug+"/policies/@mx-override", map[string]any{"required_approvals": 10})
			return mxReq{body: map[string]any{"model": "m", "version": 1 + m.next()%2, "target": "@mx-override", "reason": "matrix"}}
		}, repair: func(m *matrix, p *mxProject) {
			m.admin("DELETE", mxProjects+"/"+p.slug+"/policies/@mx-override", nil)
			m.admin("DELETE", mxProjects+"/"+p.slug+"/models/m/aliases/mx-override", nil)
		}},
	}
}

// mxPromotions holds, per matrix and project, the id of a shared fixture
// request (and marks the policies made).
var mxPromotions sync.Map

// promotion makes the matrix's policies in p (once) and returns the id of
// a request of version 1 to @mx-governed made with token: the shared one,
// or a fresh one.
func (m *matrix) promotion(p *mxProject, fresh bool, token string) string {
	m.t.Helper()
	key := fmt.Sprintf("%p/%s", m, p.id)
	if !fresh {
		if id, ok := mxPromotions.Load(key); ok {
			return id.(string)
		}
	}
	pp := mxProjects + "/" + p.slug
	if _, made := mxPromotions.Load(key + "/policies"); !made {
		m.admin("PUT", pp+"/policies/@mx-governed", map[string]any{"required_approvals": 10, "separation_of_duties": false})
		mxPromotions.Store(key+"/policies", true)
	}
	r := m.e.Do("POST", pp+"/promotions", token, map[string]any{"model": "m", "version": 1, "target": "@mx-governed"})
	if r.Status != http.StatusCreated {
		m.t.Fatalf("fixture request: %d %s", r.Status, r.Body)
	}
	id := asJSON[api.PromotionResponse](m.t, r).ID
	if !fresh {
		mxPromotions.Store(key, id)
	}
	return id
}

// An approval needs no body: none at all, or a chunked one that is empty.
func TestPromotionDecisionWithoutBody(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("admin@promo4.test").AccessToken
	p := newPromoProject(t, e, admin, "Promo Bodyless")
	call(t, e, 200, "POST", p.pp+"/policies", p.owner.Token, map[string]any{"target": "production", "required_approvals": 2})
	req := p.request(t, e, p.editor.Token, 1, "production")
	for i, tok := range []string{p.approver.Token, p.approver2.Token} {
		hr, err := http.NewRequest("POST", e.URL+p.pp+"/promotions/"+req.ID+":approve", nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			hr.Body = io.NopCloser(strings.NewReader("")) // no length: sent chunked
			hr.ContentLength = -1
		}
		hr.Header.Set("Authorization", "Bearer "+tok)
		resp, err := e.Client.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("approval %d without a body: %d %s", i+1, resp.StatusCode, body)
		}
	}
	p.waitPromotion(t, e, req.ID, "completed")
}

// Concurrent approve and reject of a one-approval request: one decision
// wins, the other is 409 promotion-closed, and every view agrees with the
// winner — the request's state, and the alias (moved once after an
// approval, untouched after a rejection).
func TestPromotionApproveRejectRace(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("admin@promo-race.test").AccessToken
	p := newPromoProject(t, e, admin, "Promo Race")
	call(t, e, 200, "PUT", p.pp+"/policies/@winner", p.owner.Token, map[string]any{"required_approvals": 1})
	aliased := 0
	for round := range 6 {
		v := 1
		if aliased == 1 {
			v = 3
		}
		req := p.request(t, e, p.editor.Token, v, "@winner")
		var wg sync.WaitGroup
		var approve, reject testenv.Response
		wg.Go(func() {
			approve = e.Do("POST", p.pp+"/promotions/"+req.ID+":approve", p.approver.Token, map[string]any{})
		})
		wg.Go(func() {
			reject = e.Do("POST", p.pp+"/promotions/"+req.ID+":reject", p.approver2.Token, map[string]any{})
		})
		wg.Wait()
		var want string
		switch {
		case approve.Status == 200 && reject.Status == 409:
			want, aliased = "completed", v
			wantProblem(t, reject, 409, "promotion-closed")
		case reject.Status == 200 && approve.Status == 409:
			want = "rejected"
			wantProblem(t, approve, 409, "promotion-closed")
		default:
			t.Fatalf("round %d: approve %d %s, reject %d %s: want one 200 and one 409", round, approve.Status, approve.Body, reject.Status, reject.Body)
		}
		p.waitPromotion(t, e, req.ID, want)
		deadline := time.Now().Add(20 * time.Second)
		for {
			r := e.Do("GET", p.pp+"/models/churn/aliases/winner", p.viewer.Token, nil)
			got := 0
			if r.Status == 200 {
				got = asJSON[api.VersionResponse](t, r).Version
			}
			if got == aliased {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d (%s): @winner = %d (%d), want %d", round, want, got, r.Status, aliased)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The alias moved exactly once per approved request.
	completed := len(inbox(t, e, p.pp, p.viewer.Token, "state=completed"))
	t.Logf("approval won %d of 6 races, rejection %d", completed, 6-completed)
	auditWait(t, e, admin, "maestro.model.alias.set.v1", func(items []projections.AuditEntry) bool {
		if len(items) > completed {
			t.Fatalf("alias set %d times for %d completed requests", len(items), completed)
		}
		return len(items) == completed
	})
}
