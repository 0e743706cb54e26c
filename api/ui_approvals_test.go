package api_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// Governed promotion through the UI: an owner sets a policy with the form,
// an editor requests promotion from the version page, separation of duties
// refuses the requester's own approval, an approver finds the request in
// the inbox and approves it, and the flow moves the version; a failing gate
// records the request rejected with its reason; a viewer sees no control
// and a forged form appends nothing; user text renders inert.
func TestUIApprovals(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uiappr.test").AccessToken
	owner := e.Register("owner@uiappr.test")
	editor := e.Register("editor@uiappr.test")
	approver := e.Register("approver@uiappr.test")
	viewer := e.Register("viewer@uiappr.test")
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Gov"})
	pp := "/api/v1/projects/gov"
	for u, role := range map[string]string{owner.ID: "owner", editor.ID: "editor", approver.ID: "approver", viewer.ID: "viewer"} {
		call(t, e, 200, "PUT", pp+"/members/"+u, admin, map[string]any{"role": role})
	}
	// The owner registers the versions (so the owner is their author):
	// v1 and v3 meet the gate, v2 does not.
	ownerAPI := e.Login(owner.Email, testenv.Password).AccessToken
	call(t, e, 201, "POST", pp+"/models", ownerAPI, map[string]any{"name": "scorer"})
	for _, auc := range []float64{0.95, 0.5, 0.97} {
		call(t, e, 201, "POST", pp+"/models/scorer/versions", ownerAPI, map[string]any{"metrics": map[string]float64{"auc": auc}})
	}
	xss := `<img src=x onerror=alert(1)>"'`
	escaped := "&lt;img src=x onerror=alert(1)&gt;"
	noRaw := func(t *testing.T, where, body string) {
		t.Helper()
		if strings.Contains(body, "<img src=x") {
			t.Errorf("%s renders user text unescaped: %.3000s", where, body)
		}
	}

	// The owner sets the production policy through the form: one approval,
	// approvers by role and the editor by name, separation of duties.
	o := newUIClient(t, e)
	o.signIn(owner.Email, testenv.Password)
	pol := "/projects/gov/policies"
	if b := o.get(pol).want(t, 200).Body; !strings.Contains(b, "Set a policy") || !strings.Contains(b, `value="`+editor.ID+`"`) {
		t.Fatalf("the owner's policies page lacks the form or the members: %.3000s", b)
	}
	form := func(gate, ttl string) url.Values {
		return url.Values{"target": {"production"}, "required_approvals": {"1"}, "approver_roles": {"approver"},
			"approver_users": {editor.ID}, "separation_of_duties": {"on"}, "gate": {gate}, "request_ttl": {ttl}}
	}
	// The API's reasons for bad input are shown, and the sent values kept.
	if b := o.post(pol, form("params.lr = '1'", "72h")).want(t, 400).Body; !strings.Contains(b, "a gate compares metrics only") || !strings.Contains(b, `value="params.lr = &#39;1&#39;"`) {
		t.Errorf("bad gate: %.3000s", b)
	}
	if b := o.post(pol, form("metrics.auc >= 0.9", "forever")).want(t, 400).Body; !strings.Contains(b, "request_ttl must be a duration") {
		t.Errorf("bad ttl: %.3000s", b)
	}
	if b := o.post(pol, form("metrics.auc >= 0.9 AND "+xss, "72h")).want(t, 400).Body; !strings.Contains(b, escaped) {
		t.Errorf("refused gate text is not shown escaped: %.3000s", b)
	} else {
		noRaw(t, "the refused policy form", b)
	}
	f := form("metrics.auc >= 0.9", "72h")
	f.Set("required_approvals", "many")
	if b := o.post(pol, f).want(t, 400).Body; !strings.Contains(b, "required approvals must be a whole number") {
		t.Errorf("bad count: %.3000s", b)
	}
	o.post(pol, form("metrics.auc >= 0.9", "72h")).want(t, 303, pol+"?done=policy-set")
	got := asJSON[api.PolicyBody](t, call(t, e, 200, "GET", pp+"/policies/production", admin, nil))
	if got.RequiredApprovals != 1 || strings.Join(got.ApproverRoles, ",") != "approver" || strings.Join(got.ApproverUsers, ",") != editor.ID ||
		got.SeparationOfDuties == nil || !*got.SeparationOfDuties || got.Gate != "metrics.auc >= 0.9" || got.RequestTTL != "72h" {
		t.Fatalf("the API reads back %+v", got)
	}
	// A gate with a quoted metric key carrying markup: stored, shown inert.
	o.get(pol)
	o.post(pol, url.Values{"target": {"alias"}, "alias": {"@canary"}, "gate": {"metrics.`" + xss[:len(xss)-2] + "` >= 1"},
		"required_artifacts": {"model.bin\n\n  README.md \n"}, "separation_of_duties": {"on"}}).want(t, 303, pol+"?done=policy-set")
	canary := asJSON[api.PolicyBody](t, call(t, e, 200, "GET", pp+"/policies/@canary", admin, nil))
	if strings.Join(canary.RequiredArtifacts, ",") != "README.md,model.bin" || strings.Join(canary.ApproverRoles, ",") != "approver,owner" || canary.RequiredApprovals != 1 {
		t.Errorf("the canary policy reads back %+v", canary)
	}
	b := o.get(pol+"?edit=@canary").want(t, 200).Body
	for _, want := range []string{escaped, `<option value="alias" selected>`, `value="canary"`, `action="/projects/gov/policies/@canary/remove"`, "README.md\nmodel.bin</textarea>"} {
		if !strings.Contains(b, want) {
			t.Errorf("policies page with the canary policy lacks %s: %.4000s", want, b)
		}
	}
	noRaw(t, "the policies page", b)

	// The editor requests promotion from the version page.
	ed := newUIClient(t, e)
	ed.signIn(editor.Email, testenv.Password)
	v1 := "/projects/gov/models/scorer/versions/1"
	if !strings.Contains(ed.get(v1).want(t, 200).Body, "Request promotion") {
		t.Fatal("the editor sees no request form")
	}
	// To the canary alias: the version lacks the gate's metric and the
	// artifacts, so the request is rejected at once, its reason inert.
	r := ed.post("/projects/gov/promotions", url.Values{"model": {"scorer"}, "version": {"1"}, "target": {"alias"}, "alias": {"canary"}}).want(t, 303)
	b = ed.get(r.Header.Get("Location")).want(t, 200).Body
	for _, want := range []string{`state-rejected">rejected<`, "to @canary", "not recorded</td><td>fail</td>", "artifact <code>model.bin</code></td><td>missing</td><td>fail</td>",
		"required artifacts missing: README.md, model.bin", escaped} {
		if !strings.Contains(b, want) {
			t.Errorf("the canary request's page lacks %s: %.4000s", want, b)
		}
	}
	noRaw(t, "the canary request's page", b)
	o.get(pol)
	o.post(pol+"/@canary/remove", nil).want(t, 303, pol+"?done=policy-removed")
	call(t, e, 404, "GET", pp+"/policies/@canary", admin, nil)
	// No policy governs staging: the version page says so.
	if b := ed.post("/projects/gov/promotions", url.Values{"model": {"scorer"}, "version": {"1"}, "target": {"staging"}}).want(t, 409).Body; !strings.Contains(b, "no approval policy governs staging") {
		t.Errorf("staging request: %.2000s", b)
	}
	r = ed.post("/projects/gov/promotions", url.Values{"model": {"scorer"}, "version": {"1"}, "target": {"production"}, "comment": {"ship " + xss}}).want(t, 303)
	loc := r.Header.Get("Location")
	id, ok := strings.CutSuffix(strings.TrimPrefix(loc, "/projects/gov/promotions/"), "?done=promotion-requested")
	if !ok || len(id) != 36 {
		t.Fatalf("request redirected to %q", loc)
	}
	page := "/projects/gov/promotions/" + id
	b = ed.get(loc).want(t, 200).Body
	for _, want := range []string{"Promotion requested.", ">pending<", "ship " + escaped, "<code>metrics.auc &gt;= 0.9</code></td><td>0.95</td><td>pass</td>", "editor@uiappr.test", "owner@uiappr.test"} {
		if !strings.Contains(b, want) {
			t.Errorf("request page lacks %s: %.4000s", want, b)
		}
	}
	noRaw(t, "the request page", b)
	// The policy names the editor, but separation of duties refuses the
	// requester's own approval: the page shows the service's reason.
	ctx := context.Background()
	seq, _ := e.P.Store.LastSequence(ctx)
	if b := ed.post(page+"/approve", url.Values{"comment": {"self"}}).want(t, 403).Body; !strings.Contains(b, "you requested this promotion: someone else must approve it") {
		t.Errorf("self-approval: %.3000s", b)
	}
	if after, _ := e.P.Store.LastSequence(ctx); after != seq {
		t.Errorf("a refused approval appended events: %d -> %d", seq, after)
	}
	if b := ed.get("/approvals").want(t, 200).Body; !strings.Contains(b, `href="`+page+`"`) || !strings.Contains(b, "Nothing awaits your decision.") {
		t.Errorf("the editor's inbox: %.3000s", b)
	}

	// The approver finds it in the inbox and approves with a comment.
	ap := newUIClient(t, e)
	ap.signIn(approver.Email, testenv.Password)
	inboxPage := ap.get("/approvals").want(t, 200).Body
	if i := strings.Index(inboxPage, "Awaiting your decision"); i < 0 || !strings.Contains(inboxPage[i:], `href="`+page+`"`) || !strings.Contains(inboxPage, "editor@uiappr.test") {
		t.Fatalf("the approver's inbox: %.3000s", inboxPage)
	}
	if b := ap.get(page).want(t, 200).Body; !strings.Contains(b, `action="`+page+`/approve"`) || strings.Contains(b, `action="`+page+`/cancel"`) {
		t.Errorf("the approver's request page (approve, no cancel): %.4000s", b)
	}
	ap.post(page+"/approve", url.Values{"comment": {"lgtm " + xss}}).want(t, 303, page+"?done=promotion-approved")
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := asJSON[VersionBody](t, call(t, e, 200, "GET", pp+"/models/scorer/versions/1", admin, nil))
		p := asJSON[api.PromotionResponse](t, call(t, e, 200, "GET", pp+"/promotions/"+id, admin, nil))
		if v.Stage == "production" && p.State == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the approval: version in %s, request %s (%s)", v.Stage, p.State, p.Reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The requester's view shows the outcome and the approval.
	b = ed.get(page).want(t, 200).Body
	for _, want := range []string{">completed<", "approver@uiappr.test", "lgtm " + escaped, "1 of 1"} {
		if !strings.Contains(b, want) {
			t.Errorf("the requester's view lacks %s: %.4000s", want, b)
		}
	}
	noRaw(t, "the completed request", b)
	if strings.Contains(b, `action="`+page+`/cancel"`) || strings.Contains(b, `action="`+page+`/approve"`) {
		t.Error("a completed request still offers forms")
	}
	if b := ed.get("/approvals").Body; !strings.Contains(b, ">completed<") {
		t.Errorf("My requests after completion: %.3000s", b)
	}

	// A failing gate: the request is made, rejected at once, and says why.
	ed.get("/projects/gov/models/scorer/versions/2")
	r = ed.post("/projects/gov/promotions", url.Values{"model": {"scorer"}, "version": {"2"}, "target": {"production"}}).want(t, 303)
	b = ed.get(r.Header.Get("Location")).want(t, 200).Body
	for _, want := range []string{">rejected<", "gate not met: metrics.auc &gt;= 0.9 (auc = 0.5)", "<td>0.5</td><td>fail</td>", "failed when the request was made"} {
		if !strings.Contains(b, want) {
			t.Errorf("rejected request page lacks %s: %.4000s", want, b)
		}
	}

	// A pending request for the viewer to look at; the viewer sees no
	// control anywhere, and forged forms are refused with nothing appended.
	ed.get("/projects/gov/models/scorer/versions/3")
	r = ed.post("/projects/gov/promotions", url.Values{"model": {"scorer"}, "version": {"3"}, "target": {"production"}}).want(t, 303)
	pending := strings.TrimSuffix(r.Header.Get("Location"), "?done=promotion-requested")
	if b := ed.get(pending).Body; !strings.Contains(b, `action="`+pending+`/cancel"`) {
		t.Errorf("the requester has no cancel form: %.3000s", b)
	}
	vw := newUIClient(t, e)
	vw.signIn(viewer.Email, testenv.Password)
	for pg, controls := range map[string][]string{
		pending:                                  {"/approve", "/reject", "/cancel"},
		pol:                                      {"Set a policy", "/remove", ">Edit<"},
		"/projects/gov/models/scorer/versions/3": {"Request promotion"},
	} {
		b := vw.get(pg).want(t, 200).Body
		for _, c := range controls {
			if strings.Contains(b, c) {
				t.Errorf("the viewer sees %q on %s", c, pg)
			}
		}
	}
	if b := vw.get("/approvals").want(t, 200).Body; strings.Contains(b, pending) {
		t.Error("the request awaits the viewer")
	}
	seq, _ = e.P.Store.LastSequence(ctx)
	vw.post(pending+"/approve", url.Values{"comment": {"forged"}}).want(t, 403)
	vw.post(pending+"/reject", url.Values{"comment": {"forged"}}).want(t, 403)
	vw.post(pending+"/cancel", nil).want(t, 403)
	vw.post(pol, form("", "1h")).want(t, 403)
	vw.post(pol+"/production/remove", nil).want(t, 403)
	vw.post("/projects/gov/promotions", url.Values{"model": {"scorer"}, "version": {"3"}, "target": {"production"}}).want(t, 403)
	if after, _ := e.P.Store.LastSequence(ctx); after != seq {
		t.Errorf("the viewer's forged forms appended events: %d -> %d", seq, after)
	}
	if p := asJSON[api.PromotionResponse](t, call(t, e, 200, "GET", pp+"/promotions/"+strings.TrimPrefix(pending, "/projects/gov/promotions/"), admin, nil)); p.State != "pending" || len(p.Approvals) != 0 {
		t.Fatalf("the forged forms changed the request: %+v", p)
	}

	// The requester cancels; the project's list shows each outcome.
	ed.get(pending)
	ed.post(pending+"/cancel", url.Values{"comment": {"not now"}}).want(t, 303, pending+"?done=promotion-cancelled")
	// An approver's rejection ends a request; the requester sees why.
	ed.get("/projects/gov/models/scorer/versions/3")
	r = ed.post("/projects/gov/promotions", url.Values{"model": {"scorer"}, "version": {"3"}, "target": {"production"}}).want(t, 303)
	again := strings.TrimSuffix(r.Header.Get("Location"), "?done=promotion-requested")
	ap.get(again)
	ap.post(again+"/reject", url.Values{"comment": {"not this week"}}).want(t, 303, again+"?done=promotion-rejected")
	if b := ed.get(again).Body; !strings.Contains(b, `state-rejected">rejected<`) || !strings.Contains(b, "rejected by an approver") {
		t.Errorf("the rejected request's page: %.3000s", b)
	}
	ap.get(again)
	if b := ap.post(again+"/approve", nil).want(t, 409).Body; !strings.Contains(b, "the promotion request is rejected") {
		t.Errorf("approving a rejected request: %.3000s", b)
	}
	list := ed.get("/projects/gov/promotions").want(t, 200).Body
	for _, state := range []string{"completed", "rejected", "cancelled"} {
		if want := `state-` + state + `">` + state + `<`; !strings.Contains(list, want) {
			t.Errorf("the project's requests lack %s: %.3000s", want, list)
		}
	}
	if b := ed.get("/projects/gov/promotions?state=cancelled").Body; strings.Contains(b, `state-completed">`) || !strings.Contains(b, `state-cancelled">cancelled<`) {
		t.Errorf("state filter: %.3000s", b)
	}
}
