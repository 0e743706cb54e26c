package api

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/approvals"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

// Governed promotion on Maestro's API, under a project: approval policies
// (owners set them; they live on the project aggregate), promotion requests
// and their approvals (approvals.Service decides on the request's
// event-sourced state), and administrators' emergency overrides. Lists and
// reads come from the promotions projection after the read-side project
// check.

// promotionViews are the projections a promotion command's answer and the
// next natural read need.
var promotionViews = []string{projections.Promotions{}.Name()}

func (s *Server) promotionRoutes() []Route {
	const (
		policies   = "/api/v1/projects/{project}/policies"
		policy     = policies + "/{target}"
		promotions = "/api/v1/projects/{project}/promotions"
		promotion  = promotions + "/{promotion}"
	)
	return []Route{
		{Method: "GET", Pattern: policies, handle: query(s, s.listPolicies)},
		{Method: "POST", Pattern: policies, Command: true, handle: command(s, http.StatusOK, s.setPolicy)},
		{Method: "GET", Pattern: policy, handle: query(s, s.getPolicy)},
		{Method: "PUT", Pattern: policy, Command: true, handle: command(s, http.StatusOK, s.putPolicy)},
		{Method: "DELETE", Pattern: policy, Command: true, handle: commandNoBody(s, http.StatusNoContent, s.deletePolicy)},
		{Method: "POST", Pattern: promotions, Command: true, handle: command(s, http.StatusCreated, s.requestPromotion)},
		{Method: "GET", Pattern: promotions, handle: query(s, s.listPromotions)},
		{Method: "POST", Pattern: promotions + ":override", Command: true, Await: registryViews,
			handle: command(s, http.StatusOK, s.overridePromotion)},
		{Method: "GET", Pattern: promotion, handle: query(s, s.getPromotion)},
		{Method: "POST", Pattern: promotion + ":approve", Command: true, handle: command(s, http.StatusOK, s.approvePromotion)},
		{Method: "POST", Pattern: promotion + ":reject", Command: true, handle: command(s, http.StatusOK, s.rejectPromotion)},
		{Method: "POST", Pattern: promotion + ":cancel", Command: true, handle: command(s, http.StatusOK, s.cancelPromotion)},
	}
}

// ---- policies ----

// PolicyBody is an approval policy as the API takes and shows it.
type PolicyBody struct {
	Target            string   `json:"target"`
	RequiredApprovals int      `json:"required_approvals"`
	ApproverRoles     []string `json:"approver_roles"`
	ApproverUsers     []string `json:"approver_users"`
	// SeparationOfDuties defaults to true: the requester and the version's
	// author may not approve.
	SeparationOfDuties *bool    `json:"separation_of_duties"`
	Gate               string   `json:"gate"`
	RequiredArtifacts  []string `json:"required_artifacts"`
	// RequestTTL is a duration ("72h", "30m"); default 168h.
	RequestTTL string     `json:"request_ttl"`
	UpdatedAt  *time.Time `json:"updated_at,omitempty"`
}

// Input bounds of a policy body: the service checks the values, these
// keep a hostile body from costing more than that.
const (
	maxPolicyList = registry.MaxApproverUsers
)

func (b *PolicyBody) validate() error {
	if len(b.ApproverRoles) > maxPolicyList || len(b.ApproverUsers) > maxPolicyList || len(b.RequiredArtifacts) > maxPolicyList {
		return problem("validation-failed", "approver_roles, approver_users and required_artifacts hold at most "+strconv.Itoa(maxPolicyList)+" entries each")
	}
	return nil
}

// data is the policy as its event carries it.
func (b PolicyBody) data() (events.PolicyData, error) {
	d := events.PolicyData{Target: b.Target, RequiredApprovals: b.RequiredApprovals, ApproverRoles: b.ApproverRoles,
		ApproverUsers: b.ApproverUsers, SeparationOfDuties: b.SeparationOfDuties == nil || *b.SeparationOfDuties,
		Gate: b.Gate, RequiredArtifacts: b.RequiredArtifacts}
	if b.RequestTTL != "" {
		ttl, err := time.ParseDuration(b.RequestTTL)
		if err != nil || ttl%time.Second != 0 {
			return d, problem("validation-failed", `request_ttl must be a duration in whole seconds such as "72h" or "30m"`)
		}
		d.RequestTTLSeconds = int64(ttl / time.Second)
	}
	return d, nil
}

func policyBody(p events.PolicyData, updated *time.Time) PolicyBody {
	sod := p.SeparationOfDuties
	return PolicyBody{Target: p.Target, RequiredApprovals: p.RequiredApprovals, ApproverRoles: nonNil(p.ApproverRoles),
		ApproverUsers: nonNil(p.ApproverUsers), SeparationOfDuties: &sod, Gate: p.Gate, RequiredArtifacts: nonNil(p.RequiredArtifacts),
		RequestTTL: ttlString(time.Duration(p.RequestTTLSeconds) * time.Second), UpdatedAt: updated}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ttlString writes a TTL in its largest whole unit ("168h", "90m", "45s").
func ttlString(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// PolicyList is a project's approval policies.
type PolicyList struct {
	Policies []PolicyBody `json:"policies"`
}

func (s *Server) listPolicies(c *call, _ none) (PolicyList, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return PolicyList{}, err
	}
	ps, err := s.deps.Queries.Policies(c.ctx, proj.ID)
	if err != nil {
		return PolicyList{}, err
	}
	out := PolicyList{Policies: make([]PolicyBody, 0, len(ps))}
	for _, p := range ps {
		out.Policies = append(out.Policies, policyBody(p.Policy, &p.UpdatedAt))
	}
	return out, nil
}

// targetRef is {target}: a stage or "@alias".
type targetRef struct{ target string }

func (t *targetRef) readParams(r *http.Request) (err error) {
	// A client may escape the alias's "@" (%40).
	t.target, err = url.PathUnescape(chi.URLParam(r, "target"))
	if err != nil || !registry.ValidTarget(t.target) {
		return problem("not-found", "no policy for this target: a target is staging, production or @alias")
	}
	return nil
}

func (s *Server) getPolicy(c *call, t targetRef) (PolicyBody, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return PolicyBody{}, err
	}
	p, err := s.deps.Queries.PolicyOf(c.ctx, proj.ID, t.target)
	if errors.Is(err, projections.ErrNotFound) {
		return PolicyBody{}, problem("not-found", "no policy governs "+t.target)
	}
	if err != nil {
		return PolicyBody{}, err
	}
	return policyBody(p.Policy, &p.UpdatedAt), nil
}

func (s *Server) setPolicy(c *call, b PolicyBody) (PolicyBody, uint64, error) {
	d, err := b.data()
	if err != nil {
		return PolicyBody{}, 0, err
	}
	ps, seq, err := s.deps.Registry.SetPolicy(c.ctx, c.meta, c.who, c.param("project"), d)
	if err != nil {
		return PolicyBody{}, 0, err
	}
	return policyBody(ps.Policies[d.Target], nil), seq, nil
}

// putPolicyRequest is PUT .../policies/{target}: the path names the target
// (a body's target, if any, must agree).
type putPolicyRequest struct {
	targetRef
	PolicyBody
}

func (s *Server) putPolicy(c *call, req putPolicyRequest) (PolicyBody, uint64, error) {
	if req.Target != "" && req.Target != req.target {
		return PolicyBody{}, 0, problem("validation-failed", "the body's target differs from the path's")
	}
	req.Target = req.target
	return s.setPolicy(c, req.PolicyBody)
}

func (s *Server) deletePolicy(c *call, t targetRef) (none, uint64, error) {
	_, seq, err := s.deps.Registry.RemovePolicy(c.ctx, c.meta, c.who, c.param("project"), t.target)
	return none{}, seq, err
}

// ---- promotion requests ----

// PromotionApproval is one approval of a request, as the read model has it.
type PromotionApproval = projections.PromotionApproval

// PromotionGate is what the gate saw and decided when the request was made.
type PromotionGate struct {
	Passed           bool                          `json:"passed"`
	Metrics          map[string]events.MetricValue `json:"metrics"`
	MissingArtifacts []string                      `json:"missing_artifacts"`
	Reason           string                        `json:"reason,omitempty"`
	// Importances are the importances of the features the gate names, as
	// the version's explanation gave them (absent: the gate names none).
	Importances map[string]events.MetricValue `json:"importances,omitempty"`
	// Explanation is the document the gate and required artifacts read.
	Explanation *events.ExplanationSeen `json:"explanation,omitempty"`
}

// PromotionResponse is a promotion request.
type PromotionResponse struct {
	ID                string              `json:"id"`
	ProjectID         string              `json:"project_id"`
	Model             string              `json:"model"`
	ModelID           string              `json:"model_id"`
	Version           int                 `json:"version"`
	Target            string              `json:"target"`
	Comment           string              `json:"comment"`
	RequesterID       string              `json:"requester_id"`
	AuthorID          string              `json:"author_id"`
	State             string              `json:"state"`
	Reason            string              `json:"reason,omitempty"`
	RequiredApprovals int                 `json:"required_approvals"`
	Approvals         []PromotionApproval `json:"approvals"`
	Policy            PolicyBody          `json:"policy"`
	Gate              PromotionGate       `json:"gate"`
	RequestedAt       time.Time           `json:"requested_at"`
	ExpiresAt         time.Time           `json:"expires_at"`
}

// PromotionPage is a page of promotion requests.
type PromotionPage = projections.Page[PromotionResponse]

func gateOf(g events.GateResult) PromotionGate {
	out := PromotionGate{Passed: g.Passed, Metrics: g.Metrics, MissingArtifacts: nonNil(g.MissingArtifacts), Reason: g.Reason,
		Importances: g.Importances, Explanation: g.Explanation}
	if out.Metrics == nil {
		out.Metrics = map[string]events.MetricValue{}
	}
	return out
}

func promotionFromState(st approvals.PromotionState, now time.Time) PromotionResponse {
	out := PromotionResponse{ID: st.ID, ProjectID: st.ProjectID, Model: st.ModelName, ModelID: st.ModelID, Version: st.Version,
		Target: st.Target, Comment: st.Comment, RequesterID: st.RequesterID, AuthorID: st.AuthorID, State: st.StateAt(now),
		Reason: st.Reason, RequiredApprovals: st.Policy.RequiredApprovals, Approvals: []PromotionApproval{},
		Policy: policyBody(st.Policy, nil), Gate: gateOf(st.Gate), RequestedAt: st.RequestedAt, ExpiresAt: st.ExpiresAt}
	for _, a := range st.Approvals {
		out.Approvals = append(out.Approvals, PromotionApproval{UserID: a.UserID, Comment: a.Comment, At: a.At})
	}
	return out
}

func promotionFromProjection(p projections.Promotion, now time.Time) PromotionResponse {
	out := PromotionResponse{ID: p.ID, ProjectID: p.ProjectID, Model: p.ModelName, ModelID: p.ModelID, Version: p.Version,
		Target: p.Target, Comment: p.Comment, RequesterID: p.RequesterID, AuthorID: p.AuthorID, State: p.StateAt(now), Reason: p.Reason,
		RequiredApprovals: p.Policy.RequiredApprovals, Approvals: []PromotionApproval{}, Policy: policyBody(p.Policy, nil),
		Gate: gateOf(p.Gate), RequestedAt: p.RequestedAt, ExpiresAt: p.ExpiresAt}
	out.Approvals = append(out.Approvals, p.Approvals...)
	return out
}

type promotionRequest struct {
	Model   string `json:"model"`
	Version int    `json:"version"`
	Target  string `json:"target"`
	Comment string `json:"comment"`
}

func (req *promotionRequest) validate() error {
	if len(req.Model) > 4*registry.MaxNameLen {
		return problem("validation-failed", "model is a model's name")
	}
	return nil
}

func (s *Server) requestPromotion(c *call, req promotionRequest) (PromotionResponse, uint64, error) {
	st, seq, err := s.deps.Approvals.Request(c.ctx, c.meta, c.who, c.param("project"),
		approvals.Request{Model: req.Model, Version: req.Version, Target: req.Target, Comment: req.Comment})
	if err == nil {
		c.locate("/api/v1/projects/" + c.param("project") + "/promotions/" + st.ID)
	}
	return s.promotionAnswer(st, seq, err)
}

// promotionRef is {promotion}.
type promotionRef struct{ promotion string }

func (x *promotionRef) readParams(r *http.Request) (err error) {
	x.promotion, err = pathID(r, "promotion", "promotion request")
	return err
}

// promotionDecision is :approve, :reject and :cancel: {comment}, or no
// body at all.
type promotionDecision struct {
	promotionRef
	Comment string `json:"comment"`
}

func (*promotionDecision) optionalBody() {}

// promotionAnswer is a promotion command's answer.
func (s *Server) promotionAnswer(st approvals.PromotionState, seq uint64, err error) (PromotionResponse, uint64, error) {
	if err != nil {
		return PromotionResponse{}, 0, err
	}
	return promotionFromState(st, s.deps.Approvals.Now()), seq, nil
}

func (s *Server) approvePromotion(c *call, req promotionDecision) (PromotionResponse, uint64, error) {
	return s.promotionAnswer(s.deps.Approvals.Approve(c.ctx, c.meta, c.who, c.param("project"), req.promotion, req.Comment))
}

func (s *Server) rejectPromotion(c *call, req promotionDecision) (PromotionResponse, uint64, error) {
	return s.promotionAnswer(s.deps.Approvals.Reject(c.ctx, c.meta, c.who, c.param("project"), req.promotion, req.Comment))
}

func (s *Server) cancelPromotion(c *call, req promotionDecision) (PromotionResponse, uint64, error) {
	return s.promotionAnswer(s.deps.Approvals.Cancel(c.ctx, c.meta, c.who, c.param("project"), req.promotion, req.Comment))
}

// listPromotionsQuery is paging, ?state=, ?mine=true (the caller's
// requests) and ?awaiting_me=true (the caller's inbox).
type listPromotionsQuery struct {
	pageQuery
	state            string
	mine, awaitingMe bool
}

func (q *listPromotionsQuery) readParams(r *http.Request) (err error) {
	q.state = r.URL.Query().Get("state")
	if q.state != "" && !slices.Contains(projections.PromotionStates, q.state) {
		return problem("validation-failed", "state must be one of "+strings.Join(projections.PromotionStates, ", "))
	}
	if q.mine, err = boolParam(r, "mine"); err != nil {
		return err
	}
	if q.awaitingMe, err = boolParam(r, "awaiting_me"); err != nil {
		return err
	}
	return q.pageQuery.readParams(r)
}

func (s *Server) listPromotions(c *call, q listPromotionsQuery) (PromotionPage, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return PromotionPage{}, err
	}
	now := s.deps.Approvals.Now()
	f := projections.PromotionFilter{State: q.state, Now: now}
	if q.mine {
		f.RequesterID = c.who.UserID
	}
	if q.awaitingMe {
		f.AwaitingUser = c.who.UserID
		f.AwaitingRole = string(authz.Effective(c.who, proj.ID, authz.ProjectRole(proj.Role)))
	}
	page, err := s.deps.Queries.ListPromotions(c.ctx, proj.ID, f, q.token, q.size)
	if err != nil {
		return PromotionPage{}, searchError(err)
	}
	return PromotionPage(pageOf(page, func(p projections.Promotion) PromotionResponse { return promotionFromProjection(p, now) })), nil
}

func (s *Server) getPromotion(c *call, ref promotionRef) (PromotionResponse, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return PromotionResponse{}, err
	}
	p, err := s.deps.Queries.PromotionOf(c.ctx, proj.ID, ref.promotion)
	if errors.Is(err, projections.ErrNotFound) {
		return PromotionResponse{}, problem("not-found", "promotion request not found")
	}
	if err != nil {
		return PromotionResponse{}, err
	}
	return promotionFromProjection(p, s.deps.Approvals.Now()), nil
}

// ---- emergency override ----

// overrideRequest is POST .../promotions:override: move version of model
// to target past the policy (administrators, with a reason). Emergencies
// are also rollbacks: target may take the version out of a governed stage
// (archived, none), and remove deletes a governed alias.
type overrideRequest struct {
	Model   string `json:"model"`
	Version int    `json:"version"`
	Target  string `json:"target"`
	Remove  bool   `json:"remove"`
	Reason  string `json:"reason"`
}

func (req *overrideRequest) validate() error {
	_, alias := strings.CutPrefix(req.Target, "@")
	switch {
	case !registry.ValidTarget(req.Target) && req.Target != events.StageArchived && req.Target != events.StageNone:
		return problem("validation-failed", "target must be staging, production, archived, none, or an alias written @name")
	case req.Remove && !alias:
		return problem("validation-failed", "remove applies to an alias target (@name): a version leaves a stage by moving to archived or none")
	case req.Version < 1 || req.Version > maxVersion:
		return problem("validation-failed", "version must be a positive version number")
	case strings.TrimSpace(req.Reason) == "":
		return problem("validation-failed", "reason is required: an override is recorded with why it was made")
	}
	return nil
}

func (s *Server) overridePromotion(c *call, req overrideRequest) (VersionResponse, uint64, error) {
	m, seq, err := s.deps.Registry.Override(c.ctx, c.meta, c.who, c.param("project"), req.Model, req.Reason,
		func(m registry.ModelState) ([]handlers.Change, error) {
			alias, isAlias := strings.CutPrefix(req.Target, "@")
			switch {
			case isAlias && req.Remove:
				if v, ok := m.Aliases[alias]; ok && v != req.Version {
					// The admin acted on a stale view: say so rather than remove the wrong pointer.
					return nil, handlers.Errorf(handlers.Conflict, "concurrent-modification", "@%s points to version %d now, not %d", alias, v, req.Version)
				}
				return registry.DecideDeleteAlias(m, alias)
			case isAlias:
				return registry.DecideSetAlias(m, alias, req.Version)
			}
			return registry.DecideTransition(m, req.Version, req.Target, true)
		})
	if err != nil {
		return VersionResponse{}, 0, err
	}
	out, err := versionOf(m, req.Version)
	return out, seq, err
}
