package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/filter"
	"github.com/maestro-ml/maestro/handlers"
)

// Approval policy bounds.
const (
	MaxApprovals         = 10
	MaxApproverUsers     = 50
	MaxRequiredArtifacts = 20
	MaxGateLen           = 2000
	// DefaultRequestTTL is how long a promotion request stays open when
	// the policy does not say.
	DefaultRequestTTL = 7 * 24 * time.Hour
	// MaxRequestTTL bounds a policy's request_ttl.
	MaxRequestTTL = 90 * 24 * time.Hour
	// MaxReasonLen bounds an override's reason and a request's comments.
	MaxReasonLen = 2000
)

// ValidTarget reports whether t can be governed: a stage a version is
// promoted to (staging, production), or an alias written "@name".
func ValidTarget(t string) bool {
	if alias, ok := strings.CutPrefix(t, "@"); ok {
		return ValidAlias(alias)
	}
	return t == events.StageStaging || t == events.StageProduction
}

// ParseGate parses a policy gate: the run-search filter language over the
// version's metrics (metrics.auc >= 0.9 AND metrics.latency_ms < 50) and
// the global feature importances of its explanation (importance.age < 0.1;
// a feature that is not a bare word is quoted: importance."zip code").
func ParseGate(gate string) (filter.Expr, error) {
	e, err := filter.Parse(filter.Gates, gate)
	if err != nil {
		return e, err
	}
	for _, c := range e.Clauses {
		if c.Type != filter.Metric && c.Type != filter.Importance {
			return e, fmt.Errorf("a gate compares metrics only (metrics.<key> <op> <number>) and feature importances (importance.<feature> <op> <number>), not %s.%s", c.Type, c.Key)
		}
	}
	return e, nil
}

// GateNamesImportance reports whether a parsed gate compares a feature's
// importance, and so needs the version's explanation.
func GateNamesImportance(gate filter.Expr) bool {
	for _, c := range gate.Clauses {
		if c.Type == filter.Importance {
			return true
		}
	}
	return false
}

// NormalizePolicy validates p and fills its defaults: approver roles
// approver and owner, separation of duties as given, one approval, a TTL
// of DefaultRequestTTL.
func NormalizePolicy(p events.PolicyData) (events.PolicyData, error) {
	if !ValidTarget(p.Target) {
		return p, invalid("target must be staging, production, or an alias written @name")
	}
	if p.RequiredApprovals == 0 {
		p.RequiredApprovals = 1
	}
	if p.RequiredApprovals < 1 || p.RequiredApprovals > MaxApprovals {
		return p, invalid("required_approvals must be 1 to %d", MaxApprovals)
	}
	if len(p.ApproverRoles) == 0 && len(p.ApproverUsers) == 0 {
		p.ApproverRoles = []string{string(authz.ProjectApprover), string(authz.ProjectOwner)}
	}
	roles := make([]string, 0, len(p.ApproverRoles))
	for _, r := range p.ApproverRoles {
		if !authz.ValidProjectRole(r) {
			return p, invalid("approver_roles: %q is not a project role (viewer, editor, approver, owner)", r)
		}
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	slices.Sort(roles)
	p.ApproverRoles = roles
	if len(p.ApproverUsers) > MaxApproverUsers {
		return p, invalid("approver_users: at most %d", MaxApproverUsers)
	}
	users := make([]string, 0, len(p.ApproverUsers))
	for _, u := range p.ApproverUsers {
		id, err := uuid.Parse(u)
		if err != nil || len(u) != 36 {
			return p, invalid("approver_users: %q is not a user id", u)
		}
		if !slices.Contains(users, id.String()) {
			users = append(users, id.String())
		}
	}
	slices.Sort(users)
	p.ApproverUsers = users
	if len(p.ApproverRoles) == 0 {
		p.ApproverRoles = nil
	}
	if len(p.ApproverUsers) == 0 {
		p.ApproverUsers = nil
	}
	if err := checkText("gate", p.Gate, MaxGateLen, false); err != nil {
		return p, err
	}
	p.Gate = strings.TrimSpace(p.Gate)
	if p.Gate != "" {
		e, err := ParseGate(p.Gate)
		if err != nil {
			return p, invalid("gate: %v", err)
		}
		p.Gate = e.String() // canonical, as the audit trail shows it
	}
	if len(p.RequiredArtifacts) > MaxRequiredArtifacts {
		return p, invalid("required_artifacts: at most %d", MaxRequiredArtifacts)
	}
	arts := make([]string, 0, len(p.RequiredArtifacts))
	for _, a := range p.RequiredArtifacts {
		if !ValidArtifactPath(a) {
			return p, invalid("required_artifacts: %q is not a relative artifact path", a)
		}
		if !slices.Contains(arts, a) {
			arts = append(arts, a)
		}
	}
	slices.Sort(arts)
	p.RequiredArtifacts = arts
	if len(arts) == 0 {
		p.RequiredArtifacts = nil
	}
	if p.RequestTTLSeconds == 0 {
		p.RequestTTLSeconds = int64(DefaultRequestTTL / time.Second)
	}
	if p.RequestTTLSeconds < 60 || p.RequestTTLSeconds > int64(MaxRequestTTL/time.Second) {
		return p, invalid("request_ttl must be between 1m and %s", MaxRequestTTL)
	}
	return p, nil
}

// DecideSetPolicy creates or replaces the policy of p.Target.
func DecideSetPolicy(s ProjectState, p events.PolicyData) ([]handlers.Change, error) {
	if err := liveProject(s); err != nil {
		return nil, err
	}
	p, err := NormalizePolicy(p)
	if err != nil {
		return nil, err
	}
	if cur, ok := s.Policies[p.Target]; ok && samePolicy(cur, p) {
		return nil, nil
	}
	return []handlers.Change{{Subject: events.Subject(events.AggProject, s.ID), Type: events.ProjectPolicySet,
		Data: events.ProjectPolicySetData{ProjectID: s.ID, Policy: p}}}, nil
}

// DecideRemovePolicy lifts the policy of target.
func DecideRemovePolicy(s ProjectState, target string) ([]handlers.Change, error) {
	if err := liveProject(s); err != nil {
		return nil, err
	}
	if _, ok := s.Policies[target]; !ok {
		return nil, notFound("policy")
	}
	return []handlers.Change{{Subject: events.Subject(events.AggProject, s.ID), Type: events.ProjectPolicyRemoved,
		Data: events.ProjectPolicyRemovedData{ProjectID: s.ID, Target: target}}}, nil
}

func liveProject(s ProjectState) error {
	if !s.Created {
		return notFound("project")
	}
	return NotArchived(s)
}

func samePolicy(a, b events.PolicyData) bool {
	return a.Target == b.Target && a.RequiredApprovals == b.RequiredApprovals && slices.Equal(a.ApproverRoles, b.ApproverRoles) &&
		slices.Equal(a.ApproverUsers, b.ApproverUsers) && a.SeparationOfDuties == b.SeparationOfDuties && a.Gate == b.Gate &&
		slices.Equal(a.RequiredArtifacts, b.RequiredArtifacts) && a.RequestTTLSeconds == b.RequestTTLSeconds
}

// movedTargets lists the governed-target names a model change moves: the
// stages a version leaves or enters (and those archive_existing empties),
// the aliases set or removed ("@name"), and for a deletion the stages and
// aliases it takes offline.
func movedTargets(m ModelState, c handlers.Change) []string {
	var out []string
	switch d := c.Data.(type) {
	case events.ModelVersionTransitionData:
		out = append(out, d.From, d.To)
		for _, a := range d.Archived {
			out = append(out, a.From)
		}
	case events.ModelAliasSetData:
		out = append(out, "@"+d.Alias)
	case events.ModelAliasDeletedData:
		out = append(out, "@"+d.Alias)
	case events.ModelVersionDeletedData:
		if v, ok := m.Version(d.Version); ok {
			out = append(out, v.Stage)
		}
		for _, a := range d.RemovedAliases {
			out = append(out, "@"+a)
		}
	case events.ModelLifecycleData:
		if c.Type == events.ModelDeleted || c.Type == events.ModelRestored {
			for _, v := range m.Versions {
				if !v.Deleted {
					out = append(out, v.Stage)
				}
			}
			for a := range m.Aliases {
				out = append(out, "@"+a)
			}
		}
	}
	return out
}

// Governing is the first policy of ps that changes on m would move a
// governed pointer under (false if none).
func Governing(ps ProjectState, m ModelState, changes []handlers.Change) (events.PolicyData, bool) {
	return governingExcept(ps, m, changes, nil)
}

// GoverningBesides is Governing for the move an approved promotion to
// target makes: the target's own policy authorised it, and so is leaving a
// lower stage for it (staging for production, up the ladder); any other
// governed pointer it would move — above all a version taken out of
// production by a request for staging — still needs its own policy.
func GoverningBesides(ps ProjectState, m ModelState, changes []handlers.Change, target string) (events.PolicyData, bool) {
	return governingExcept(ps, m, changes, func(t string) bool {
		return t == target || stageRank[t] < stageRank[target]
	})
}

// stageRank orders the stages a version climbs (aliases rank 0).
var stageRank = map[string]int{events.StageNone: 1, events.StageStaging: 2, events.StageProduction: 3}

func governingExcept(ps ProjectState, m ModelState, changes []handlers.Change, skip func(string) bool) (events.PolicyData, bool) {
	for _, c := range changes {
		targets := movedTargets(m, c)
		slices.Sort(targets)
		for _, t := range targets {
			if skip != nil && skip(t) {
				continue
			}
			if p, ok := ps.Policies[t]; ok {
				return p, true
			}
		}
	}
	return events.PolicyData{}, false
}

// approvalRequired is the 403 a direct move of a governed pointer gets: it
// names the policy and how to ask for the move instead.
func approvalRequired(ps ProjectState, p events.PolicyData) error {
	return handlers.Errorf(handlers.Forbidden, "approval-required",
		"the project's approval policy for %s (%d approval(s) from %s) governs this change: request it with POST /api/v1/projects/%s/promotions {model, version, target: %q}",
		p.Target, p.RequiredApprovals, approvers(p), ps.Slug, p.Target)
}

func approvers(p events.PolicyData) string {
	var parts []string
	if len(p.ApproverRoles) > 0 {
		parts = append(parts, "roles "+strings.Join(p.ApproverRoles, ", "))
	}
	if len(p.ApproverUsers) > 0 {
		parts = append(parts, fmt.Sprintf("%d named user(s)", len(p.ApproverUsers)))
	}
	return strings.Join(parts, " or ")
}

// MovePointer is a command that moves deployment pointers (a stage
// transition, an alias set or deleted), on the caller's VersionPromote
// permission. A change a policy of the project governs is refused with
// approval-required (403) naming the policy: the move goes through a
// promotion request (approvals.Service) or an administrator's Override.
// Maestro's API and the MLflow façade both come here, so neither can
// bypass a policy.
func (s *Service) MovePointer(ctx context.Context, meta events.Meta, p authz.Principal, ref, name string,
	decide func(ModelState) ([]handlers.Change, error)) (ModelState, uint64, error) {
	return s.updateModel(ctx, meta, p, ref, name, authz.VersionPromote, func(_ authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, error) {
		changes, err := decide(m)
		return guard(ps, m, changes, err, replay)
	})
}

// guard refuses a decision whose changes move a pointer a policy of ps
// governs (approval-required). A replay answers what was stored: it was
// allowed then.
func guard(ps ProjectState, m ModelState, changes []handlers.Change, err error, replay bool) ([]handlers.Change, error) {
	if err != nil || replay {
		return changes, err
	}
	if pol, governed := Governing(ps, m, changes); governed {
		return nil, approvalRequired(ps, pol)
	}
	return changes, nil
}

// Override moves deployment pointers past the project's policies: an
// administrator's emergency command (authz.OverridePolicy: a global admin
// through a login session, never a token), with a mandatory reason that the
// model's event carries (Authority.OverrideReason), so the audit trail
// shows who bypassed which policy and why. It refuses a change no policy
// governs (the direct route is there for that).
func (s *Service) Override(ctx context.Context, meta events.Meta, p authz.Principal, ref, name, reason string,
	decide func(ModelState) ([]handlers.Change, error)) (ModelState, uint64, error) {
	if err := checkText("reason", reason, MaxReasonLen, true); err != nil {
		return ModelState{}, 0, err
	}
	// Strangers learn nothing of the project (404, as for a missing one);
	// its members who are not administrators are refused.
	p, _, err := s.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return ModelState{}, 0, err
	}
	if !authz.Can(p, authz.OverridePolicy, authz.Resource{}) {
		return ModelState{}, 0, forbidden("only an administrator, signed in with a session, may override an approval policy")
	}
	return s.updateModel(ctx, meta, p, ref, name, authz.VersionPromote, func(_ authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, error) {
		changes, err := decide(m)
		if err != nil {
			return nil, err
		}
		if _, governed := Governing(ps, m, changes); !governed && !replay && len(changes) > 0 {
			return nil, handlers.Errorf(handlers.Conflict, "no-policy", "no approval policy governs this change: make it directly")
		}
		return WithAuthority(changes, events.Authority{OverrideReason: reason}), nil
	})
}

// WithAuthority stamps the authority of a governed move onto the model
// events among changes.
func WithAuthority(changes []handlers.Change, a events.Authority) []handlers.Change {
	out := slices.Clone(changes)
	for i, c := range out {
		switch d := c.Data.(type) {
		case events.ModelVersionTransitionData:
			d.PromotionID, d.OverrideReason = a.PromotionID, a.OverrideReason
			out[i].Data = d
		case events.ModelAliasSetData:
			d.PromotionID, d.OverrideReason = a.PromotionID, a.OverrideReason
			out[i].Data = d
		case events.ModelAliasDeletedData:
			d.PromotionID, d.OverrideReason = a.PromotionID, a.OverrideReason
			out[i].Data = d
		}
	}
	return out
}

// SetPolicy creates or replaces a policy (owners: authz.ProjectManage).
func (s *Service) SetPolicy(ctx context.Context, meta events.Meta, p authz.Principal, ref string, pol events.PolicyData) (ProjectState, uint64, error) {
	return s.updateProject(ctx, meta, p, ref, authz.ProjectManage, func(ps ProjectState) ([]handlers.Change, error) {
		return DecideSetPolicy(ps, pol)
	})
}

// RemovePolicy lifts the policy of target (owners).
func (s *Service) RemovePolicy(ctx context.Context, meta events.Meta, p authz.Principal, ref, target string) (ProjectState, uint64, error) {
	return s.updateProject(ctx, meta, p, ref, authz.ProjectManage, func(ps ProjectState) ([]handlers.Change, error) {
		return DecideRemovePolicy(ps, target)
	})
}

// ModelOf is the model named name in the project ps (live or deleted),
// read from its event-sourced aggregate.
func (s *Service) ModelOf(ctx context.Context, ps ProjectState, name string) (ModelState, error) {
	id, err := s.modelID(ctx, ps.ID, name)
	if err != nil {
		return ModelState{}, err
	}
	m, _, err := s.models.Load(ctx, events.Subject(events.AggModel, id))
	if err != nil {
		return ModelState{}, err
	}
	if !m.Created || m.ProjectID != ps.ID {
		return ModelState{}, modelMissing()
	}
	return m, nil
}

// CarryOut is a decision Maestro takes on the model with id modelID on its
// own behalf (the promotion flow carrying out an approved request: its
// approvals were the authorization). decide gets the project's and the
// model's current state and may append on other subjects, with their
// expected versions, in the same atomic batch.
func (s *Service) CarryOut(ctx context.Context, meta events.Meta, modelID string,
	decide func(ps ProjectState, m ModelState) ([]handlers.Change, map[string]uint64, error)) (ModelState, uint64, error) {
	meta.Now = s.now
	subject := events.Subject(events.AggModel, modelID)
	// Refresh the cached model first: Update's first attempt decides on
	// the cache, and a decision with no event on the model's subject (a
	// request failed, or completed without a move) is appended without the
	// model's expected version, so a stale copy (another process registered
	// the version) would decide it for good.
	if _, _, err := s.models.Load(ctx, subject); err != nil {
		return ModelState{}, 0, err
	}
	return s.models.Update(ctx, subject, meta,
		func(m ModelState, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
			if !m.Created {
				return decide(ProjectState{}, m)
			}
			ps, _, err := s.projects.Load(ctx, events.Subject(events.AggProject, m.ProjectID))
			if err != nil {
				return nil, nil, err
			}
			return decide(ps, m)
		})
}
