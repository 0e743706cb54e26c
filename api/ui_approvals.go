package api

import (
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/filter"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

// The web UI's governed promotion (docs/ARCHITECTURE.md "Governed
// promotion"): the caller's inbox across their projects, a project's
// approval policies, its promotion requests and one request with its gate
// results and decisions. Every form calls the route function of the JSON
// route it stands for (setPolicy, deletePolicy, requestPromotion,
// approvePromotion, rejectPromotion, cancelPromotion), so the policy's
// rules — who may approve, separation of duties, expiry — are decided
// once, by approvals.Service; a page only hides the forms its caller
// plainly cannot use.

func init() {
	maps.Copy(uiNotices, map[string]string{
		"policy-set":          "Approval policy saved.",
		"policy-removed":      "Approval policy removed.",
		"promotion-requested": "Promotion requested.",
		"promotion-approved":  "Approval recorded.",
		"promotion-rejected":  "Request rejected.",
		"promotion-cancelled": "Request cancelled.",
	})
}

const (
	// uiInboxProjects bounds the projects the inbox looks into (one
	// listPromotions pair each): the first page of the caller's projects.
	uiInboxProjects = 100
	// uiInboxPerProject is the requests of each kind the inbox shows per
	// project; more link to the project's list.
	uiInboxPerProject = 50
)

func (s *Server) uiApprovalRoutes() []UIRoute {
	const (
		policies   = "/projects/{project}/policies"
		promotions = "/projects/{project}/promotions"
		promotion  = promotions + "/{promotion}"
	)
	return []UIRoute{
		{Method: "GET", Pattern: "/approvals", handle: s.uiApprovals},
		{Method: "GET", Pattern: policies, handle: s.uiPolicies},
		{Method: "POST", Pattern: policies, handle: s.uiSetPolicy},
		{Method: "POST", Pattern: policies + "/{target}/remove", handle: s.uiRemovePolicy},
		{Method: "GET", Pattern: promotions, handle: s.uiPromotions},
		{Method: "POST", Pattern: promotions, handle: s.uiRequestPromotion},
		{Method: "GET", Pattern: promotion, handle: shown(s.promotionPage)},
		{Method: "POST", Pattern: promotion + "/approve", handle: s.uiDecidePromotion("approve")},
		{Method: "POST", Pattern: promotion + "/reject", handle: s.uiDecidePromotion("reject")},
		{Method: "POST", Pattern: promotion + "/cancel", handle: s.uiDecidePromotion("cancel")},
	}
}

// inProjectRequest is r as a request for the project ref: the route
// functions read the project from the path, and the inbox asks about
// several.
func inProjectRequest(r *http.Request, ref string) *http.Request {
	rc := chi.NewRouteContext()
	rc.URLParams.Add("project", ref)
	return r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, rc))
}

// promotionRow is a request in a list, with its project and its
// requester's e-mail where the page knows it.
type promotionRow struct {
	PromotionResponse
	Slug, ProjectName, Requester string
}

// inboxData is the /approvals page's data.
type inboxData struct {
	Awaiting, Mine []promotionRow
	// More lists the projects with more requests than the page shows.
	More []ProjectResponse
	// Truncated: the caller is in more projects than the inbox reads.
	Truncated bool
	Projects  int
	// All is the projects read, each with links to its requests and
	// policies.
	All []ProjectResponse
}

// uiApprovals is the caller's inbox: per project they are in (the first
// uiInboxProjects of listProjects), the requests awaiting their decision
// (listPromotions with awaiting_me) and their own (mine).
func (s *Server) uiApprovals(w http.ResponseWriter, r *http.Request) error {
	c := newCall(w, r)
	projs, err := s.listProjects(c, listProjectsQuery{pageQuery: pageQuery{size: uiInboxProjects}})
	if err != nil {
		return err
	}
	d := inboxData{Truncated: projs.NextPageToken != "", Projects: len(projs.Items), All: projs.Items}
	for _, p := range projs.Items {
		pr := inProjectRequest(r, p.Slug)
		pc := newCall(w, pr)
		awaiting, err := s.listPromotions(pc, listPromotionsQuery{pageQuery: pageQuery{size: uiInboxPerProject}, awaitingMe: true})
		if err != nil && s.problemFor(r, err).code == "not-found" {
			continue // left the project since listProjects read it
		}
		if err != nil {
			return err
		}
		mine, err := s.listPromotions(pc, listPromotionsQuery{pageQuery: pageQuery{size: uiInboxPerProject}, mine: true})
		if err != nil {
			return err
		}
		if awaiting.NextPageToken != "" || mine.NextPageToken != "" {
			d.More = append(d.More, p)
		}
		var emails map[string]string
		if len(awaiting.Items) > 0 {
			if emails, err = s.memberEmails(newCall(w, pr)); err != nil {
				return err
			}
		}
		for _, it := range awaiting.Items {
			d.Awaiting = append(d.Awaiting, promotionRow{PromotionResponse: it, Slug: p.Slug, ProjectName: p.Name, Requester: emailOr(emails, it.RequesterID)})
		}
		for _, it := range mine.Items {
			d.Mine = append(d.Mine, promotionRow{PromotionResponse: it, Slug: p.Slug, ProjectName: p.Name})
		}
	}
	newest := func(a, b promotionRow) int { return b.RequestedAt.Compare(a.RequestedAt) }
	slices.SortStableFunc(d.Awaiting, newest)
	slices.SortStableFunc(d.Mine, newest)
	pg := s.page(r, "Approvals", "Approvals", d)
	pg.Notice = notice(r)
	return s.render(w, http.StatusOK, "approvals", pg)
}

// memberEmails maps the project's members' user ids to their e-mails
// (listMembers): pages show people, the API's answers carry ids.
func (s *Server) memberEmails(c *call) (map[string]string, error) {
	ms, err := s.listMembers(c, none{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ms.Items))
	for _, m := range ms.Items {
		out[m.UserID] = m.Email
	}
	return out, nil
}

// emailOr is the e-mail of user id, or the id of someone no longer a
// member.
func emailOr(emails map[string]string, id string) string {
	if e := emails[id]; e != "" {
		return e
	}
	return id
}

// ---- policies ----

// policyRow is a policy as the page lists it.
type policyRow struct {
	PolicyBody
	Users      []string // approver e-mails
	Separation bool
}

// policyForm is the policy form's values: a policy being edited, or the
// defaults.
type policyForm struct {
	Target, Alias, Approvals, Gate, Artifacts, TTL string
	Roles, Users                                   map[string]bool
	Separation                                     bool
}

// policiesData is the policies page's data.
type policiesData struct {
	Slug      string
	Policies  []policyRow
	Members   []MemberResponse
	Roles     []string
	Form      policyForm
	CanManage bool
}

func (s *Server) uiPolicies(w http.ResponseWriter, r *http.Request) error {
	return s.policiesPage(w, r, http.StatusOK, "", nil)
}

// policiesPage is the project's policies (listPolicies) and, for its
// owners, the form that sets one (pre-filled with ?edit=<target>'s policy,
// or with the refused form's values) and the remove buttons.
func (s *Server) policiesPage(w http.ResponseWriter, r *http.Request, status int, errText string, sent *policyForm) error {
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	list, err := s.listPolicies(c, none{})
	if err != nil {
		return err
	}
	members, err := s.listMembers(c, none{})
	if err != nil {
		return err
	}
	emails := map[string]string{}
	for _, m := range members.Items {
		emails[m.UserID] = m.Email
	}
	d := policiesData{Slug: proj.Slug, Members: members.Items, CanManage: can(r, proj, authz.ProjectManage),
		Roles: []string{string(authz.ProjectViewer), string(authz.ProjectEditor), string(authz.ProjectApprover), string(authz.ProjectOwner)},
		Form: policyForm{Target: events.StageProduction, Separation: true, Approvals: "1", TTL: "168h",
			Roles: map[string]bool{string(authz.ProjectApprover): true, string(authz.ProjectOwner): true}, Users: map[string]bool{}}}
	edit := r.URL.Query().Get("edit")
	for _, p := range list.Policies {
		row := policyRow{PolicyBody: p, Separation: p.SeparationOfDuties == nil || *p.SeparationOfDuties}
		for _, u := range p.ApproverUsers {
			row.Users = append(row.Users, emailOr(emails, u))
		}
		d.Policies = append(d.Policies, row)
		if p.Target == edit {
			d.Form = formOfPolicy(p)
		}
	}
	if sent != nil {
		d.Form = *sent
	}
	pg := s.inProject(r, proj, "Approval policies", "Approvals", d)
	pg.Error = errText
	return s.render(w, status, "policies", pg)
}

func formOfPolicy(p PolicyBody) policyForm {
	f := policyForm{Target: p.Target, Approvals: strconv.Itoa(p.RequiredApprovals), Gate: p.Gate,
		Artifacts: strings.Join(p.RequiredArtifacts, "\n"), TTL: p.RequestTTL, Separation: p.SeparationOfDuties == nil || *p.SeparationOfDuties,
		Roles: map[string]bool{}, Users: map[string]bool{}}
	if alias, ok := strings.CutPrefix(p.Target, "@"); ok {
		f.Target, f.Alias = "alias", alias
	}
	for _, x := range p.ApproverRoles {
		f.Roles[x] = true
	}
	for _, x := range p.ApproverUsers {
		f.Users[x] = true
	}
	return f
}

// formTarget is a target form's choice: staging, production, or "alias"
// with the alias field (written with or without its "@").
func formTarget(target, alias string) string {
	if target == "alias" {
		return "@" + strings.TrimPrefix(strings.TrimSpace(alias), "@")
	}
	return target
}

// lines is a textarea's non-blank lines, trimmed.
func lines(text string) []string {
	var out []string
	for l := range strings.Lines(text) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// uiSetPolicy is the policy form: setPolicy, as POST
// /api/v1/projects/{project}/policies (creates or replaces the target's).
func (s *Server) uiSetPolicy(w http.ResponseWriter, r *http.Request) error {
	if err := r.ParseForm(); err != nil {
		return problem("validation-failed", "the form could not be read")
	}
	f := policyForm{Target: r.PostForm.Get("target"), Alias: r.PostForm.Get("alias"), Approvals: strings.TrimSpace(r.PostForm.Get("required_approvals")),
		Gate: r.PostForm.Get("gate"), Artifacts: r.PostForm.Get("required_artifacts"), TTL: strings.TrimSpace(r.PostForm.Get("request_ttl")),
		Separation: r.PostForm.Get("separation_of_duties") == "on", Roles: map[string]bool{}, Users: map[string]bool{}}
	body := PolicyBody{Target: formTarget(f.Target, f.Alias), ApproverRoles: r.PostForm["approver_roles"], ApproverUsers: r.PostForm["approver_users"],
		SeparationOfDuties: &f.Separation, Gate: f.Gate, RequiredArtifacts: lines(f.Artifacts), RequestTTL: f.TTL}
	for _, x := range body.ApproverRoles {
		f.Roles[x] = true
	}
	for _, x := range body.ApproverUsers {
		f.Users[x] = true
	}
	again := func(status int, detail string) error { return s.policiesPage(w, r, status, detail, &f) }
	if f.Approvals != "" {
		n, err := strconv.Atoi(f.Approvals)
		if err != nil {
			return again(http.StatusBadRequest, "required approvals must be a whole number")
		}
		body.RequiredApprovals = n
	}
	if err := body.validate(); err != nil {
		return s.formFailed(w, r, err, again)
	}
	_, seq, err := s.setPolicy(newCall(w, r), body)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, promotionViews...)
	seeOther(w, r, "/projects/"+url.PathEscape(chi.URLParam(r, "project"))+"/policies", "policy-set")
	return nil
}

// uiRemovePolicy removes a target's policy: deletePolicy, as DELETE
// /api/v1/projects/{project}/policies/{target}.
func (s *Server) uiRemovePolicy(w http.ResponseWriter, r *http.Request) error {
	var t targetRef
	if err := fillParams(r, &t); err != nil {
		return err
	}
	_, seq, err := s.deletePolicy(newCall(w, r), t)
	if err != nil {
		return s.formFailed(w, r, err, func(status int, detail string) error { return s.policiesPage(w, r, status, detail, nil) })
	}
	s.waitApplied(r.Context(), seq, promotionViews...)
	seeOther(w, r, "/projects/"+url.PathEscape(chi.URLParam(r, "project"))+"/policies", "policy-removed")
	return nil
}

// ---- requests ----

// promotionsData is a project's requests page.
type promotionsData struct {
	Slug      string
	Items     []promotionRow
	States    []string
	Query     url.Values
	NextQuery string // "?" and the next page's query
}

// uiPromotions is a project's promotion requests, filtered as GET
// .../promotions (state, mine, awaiting_me).
func (s *Server) uiPromotions(w http.ResponseWriter, r *http.Request) error {
	proj, q, err := projectInput[listPromotionsQuery](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	list, err := s.listPromotions(c, q)
	if err != nil {
		return err
	}
	emails, err := s.memberEmails(c)
	if err != nil {
		return err
	}
	d := promotionsData{Slug: proj.Slug, States: projections.PromotionStates, Query: r.URL.Query()}
	for _, it := range list.Items {
		d.Items = append(d.Items, promotionRow{PromotionResponse: it, Slug: proj.Slug, ProjectName: proj.Name, Requester: emailOr(emails, it.RequesterID)})
	}
	if list.NextPageToken != "" {
		next := r.URL.Query()
		next.Set("page_token", list.NextPageToken)
		d.NextQuery = "?" + next.Encode() // a whole URL: html/template keeps its "=" and "&"
	}
	return s.render(w, http.StatusOK, "promotions", s.inProject(r, proj, "Promotion requests", "Approvals", d))
}

// uiRequestPromotion is the version page's request form: requestPromotion,
// as POST /api/v1/projects/{project}/promotions. A refusal (no policy,
// already there, not allowed) is shown on the version page; a request the
// gate rejects is created, and its page says why.
func (s *Server) uiRequestPromotion(w http.ResponseWriter, r *http.Request) error {
	model, version := formValue(r, "model"), formValue(r, "version")
	withParam(r, "name", model)
	withParam(r, "version", version)
	again := func(status int, detail string) error { return s.versionPage(w, r, status, detail) }
	v, err := strconv.Atoi(version)
	if err != nil || v < 1 {
		return again(http.StatusBadRequest, "version must be a positive version number")
	}
	req := promotionRequest{Model: model, Version: v, Target: formTarget(formValue(r, "target"), formValue(r, "alias")), Comment: formValue(r, "comment")}
	if err := req.validate(); err != nil {
		return s.formFailed(w, r, err, again)
	}
	p, seq, err := s.requestPromotion(newCall(w, r), req)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, promotionViews...)
	seeOther(w, r, "/projects/"+url.PathEscape(chi.URLParam(r, "project"))+"/promotions/"+p.ID, "promotion-requested")
	return nil
}

// gateRow is one comparison of a request's gate: the bound, the value the
// gate recorded for its metric, and whether that value met it.
type gateRow struct {
	Clause, Metric, Value string
	Seen, Passed          bool
}

// gateRows splits the request's gate (the policy copied into the request)
// into its comparisons, each matched by the filter package against the
// values recorded when the request was made: what the decision saw, not
// today's metrics.
func gateRows(p PromotionResponse) []gateRow {
	if p.Policy.Gate == "" {
		return nil
	}
	e, err := registry.ParseGate(p.Policy.Gate)
	if err != nil {
		return nil // the request's reason says the gate could not be evaluated
	}
	metrics := make(map[string]float64, len(p.Gate.Metrics))
	for k, v := range p.Gate.Metrics {
		metrics[k] = float64(v)
	}
	rows := make([]gateRow, 0, len(e.Clauses))
	for _, c := range e.Clauses {
		row := gateRow{Clause: c.String(), Metric: c.Key, Passed: filter.Expr{Clauses: []filter.Comparison{c}}.Match(filter.Values{Metrics: metrics})}
		if v, ok := p.Gate.Metrics[c.Key]; ok {
			row.Seen, row.Value = true, formatFloat(float64(v))
		}
		rows = append(rows, row)
	}
	return rows
}

// artifactCheck is a required artifact and whether the version lacked it
// when the request was made.
type artifactCheck struct {
	Path    string
	Missing bool
}

// approvalRow is an approval with its approver's e-mail.
type approvalRow struct {
	PromotionApproval
	Email string
}

// promotionData is a request's page.
type promotionData struct {
	Slug        string
	P           PromotionResponse
	Requester   string
	Author      string
	Approvers   []string // the policy's approver users, as e-mails
	Approvals   []approvalRow
	Gate        []gateRow
	Artifacts   []artifactCheck
	Separation  bool
	VersionPath string
	Pending     bool
	// CanDecide: the policy names the caller's role or the caller (the
	// service still decides separation of duties and the rest).
	CanDecide bool
	CanCancel bool
}

// promotionPage is a request (getPromotion): what is asked, the policy it
// was made under, the gate's recorded results, the approvals so far, and
// the forms for those the policy names and for the requester.
func (s *Server) promotionPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, ref, err := projectInput[promotionRef](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	p, err := s.getPromotion(c, ref)
	if err != nil {
		return err
	}
	emails, err := s.memberEmails(c)
	if err != nil {
		return err
	}
	role := authz.Effective(c.who, proj.ID, authz.ProjectRole(proj.Role))
	d := promotionData{Slug: proj.Slug, P: p, Requester: emailOr(emails, p.RequesterID), Author: emailOr(emails, p.AuthorID),
		Gate: gateRows(p), Pending: p.State == events.PromotionStatePending,
		VersionPath: "/projects/" + url.PathEscape(proj.Slug) + "/models/" + url.PathEscape(p.Model) + "/versions/" + strconv.Itoa(p.Version)}
	d.Separation = p.Policy.SeparationOfDuties == nil || *p.Policy.SeparationOfDuties
	for _, a := range p.Policy.RequiredArtifacts {
		d.Artifacts = append(d.Artifacts, artifactCheck{Path: a, Missing: slices.Contains(p.Gate.MissingArtifacts, a)})
	}
	for _, u := range p.Policy.ApproverUsers {
		d.Approvers = append(d.Approvers, emailOr(emails, u))
	}
	for _, a := range p.Approvals {
		d.Approvals = append(d.Approvals, approvalRow{PromotionApproval: a, Email: emailOr(emails, a.UserID)})
	}
	if d.Pending && !proj.Archived {
		d.CanDecide = slices.Contains(p.Policy.ApproverRoles, string(role)) || slices.Contains(p.Policy.ApproverUsers, c.who.UserID)
		d.CanCancel = (c.who.UserID == p.RequesterID && can(r, proj, authz.ModelWrite)) || can(r, proj, authz.ProjectManage)
	}
	pg := s.inProject(r, proj, "Promotion of "+p.Model+" version "+strconv.Itoa(p.Version)+" to "+p.Target, "Approvals", d)
	pg.Error = errText
	return s.render(w, status, "promotion", pg)
}

// uiDecidePromotion is the approve, reject and cancel forms:
// approvePromotion, rejectPromotion and cancelPromotion, as POST
// .../promotions/{promotion}:<verb>. A refusal (not an approver,
// separation of duties, closed, expired) is shown on the request's page.
func (s *Server) uiDecidePromotion(verb string) func(http.ResponseWriter, *http.Request) error {
	decide := map[string]func(*call, promotionDecision) (PromotionResponse, uint64, error){
		"approve": s.approvePromotion, "reject": s.rejectPromotion, "cancel": s.cancelPromotion,
	}[verb]
	done := map[string]string{"approve": "promotion-approved", "reject": "promotion-rejected", "cancel": "promotion-cancelled"}[verb]
	return func(w http.ResponseWriter, r *http.Request) error {
		req := promotionDecision{Comment: formValue(r, "comment")}
		if err := fillParams(r, &req); err != nil {
			return err
		}
		_, seq, err := decide(newCall(w, r), req)
		if err != nil {
			return s.formFailed(w, r, err, func(status int, detail string) error { return s.promotionPage(w, r, status, detail) })
		}
		s.waitApplied(r.Context(), seq, promotionViews...)
		seeOther(w, r, strings.TrimSuffix(r.URL.Path, "/"+verb), done)
		return nil
	}
}
