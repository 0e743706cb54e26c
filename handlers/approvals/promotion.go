// Package approvals is the write side of governed promotion: requests to
// move a model version to a target an approval policy governs (a stage, or
// an alias "@name"), their approvals under the policy's rules (eligible
// approvers, separation of duties, expiry), and the decision that carries
// an approved request out — the model's transition and the request's
// completion appended in one atomic batch, so it happens exactly once.
// Policies themselves live on the project (registry.DecideSetPolicy).
package approvals

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/filter"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Approval is one approver's yes.
type Approval struct {
	UserID  string
	Comment string
	At      time.Time
}

// PromotionState is a promotion request folded from its events.
type PromotionState struct {
	Created     bool
	ID          string
	ProjectID   string
	ModelID     string
	ModelName   string
	Version     int
	Target      string
	Comment     string
	RequesterID string
	AuthorID    string
	Policy      events.PolicyData
	Gate        events.GateResult
	RequestedAt time.Time
	ExpiresAt   time.Time
	Approvals   []Approval // replaced, never written in place
	// State is pending, approved, rejected, cancelled, completed or failed
	// (expiry is computed: StateAt).
	State  string
	Reason string
}

// StateAt is the request's state at now: a pending request past its
// expiry is expired.
func (s PromotionState) StateAt(now time.Time) string {
	if s.State == events.PromotionStatePending && !now.Before(s.ExpiresAt) {
		return events.PromotionStateExpired
	}
	return s.State
}

// approvedBy reports whether user already approved.
func (s PromotionState) approvedBy(user string) bool {
	return slices.ContainsFunc(s.Approvals, func(a Approval) bool { return a.UserID == user })
}

// Evolve folds one event into a promotion request.
func Evolve(s PromotionState, e events.Envelope) (PromotionState, error) {
	switch e.Type {
	case events.PromotionRequested:
		var d events.PromotionRequestedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = PromotionState{Created: true, ID: d.PromotionID, ProjectID: d.ProjectID, ModelID: d.ModelID, ModelName: d.ModelName,
			Version: d.Version, Target: d.Target, Comment: d.Comment, RequesterID: d.RequesterID, AuthorID: d.AuthorID,
			Policy: d.Policy, Gate: d.Gate, RequestedAt: e.Time, ExpiresAt: d.ExpiresAt, State: events.PromotionStatePending}
	case events.PromotionApproved:
		var d events.PromotionApprovedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Approvals = append(slices.Clip(s.Approvals), Approval{UserID: d.ApproverID, Comment: d.Comment, At: e.Time})
		if d.Approvals >= d.Required {
			s.State = events.PromotionStateApproved
		}
	case events.PromotionRejected:
		var d events.PromotionRejectedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.State, s.Reason = events.PromotionStateRejected, d.Reason
	case events.PromotionCancelled:
		s.State = events.PromotionStateCancelled
	case events.PromotionCompleted:
		s.State = events.PromotionStateCompleted
	case events.PromotionFailed:
		var d events.PromotionFailedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.State, s.Reason = events.PromotionStateFailed, d.Reason
	}
	return s, nil
}

func subject(id string) string { return events.Subject(events.AggPromotion, id) }

func errorf(kind handlers.Kind, code, format string, args ...any) error {
	return handlers.Errorf(kind, code, format, args...)
}

func missing() error { return errorf(handlers.NotFound, "not-found", "promotion request not found") }

// Request is a promotion request as the requester gives it.
type Request struct {
	Model   string
	Version int
	Target  string
	Comment string
}

// GateInputs are the values a gate and the required artifacts are checked
// against.
type GateInputs struct {
	// Metrics are the source run's latest metrics overlaid with the
	// version's own (a version's metric wins).
	Metrics map[string]float64
	// Explanation is the version's explanation (explanation.json: its own,
	// else its source run's), loaded when the policy needs it (a gate
	// naming importance.<feature>, or explanation.json required); nil when
	// it has none.
	Explanation *VersionExplanation
}

// VersionExplanation is a model version's explanation document as the
// event-sourced state and the blob store hold it.
type VersionExplanation struct {
	// Source is "version" (the version's own artifact) or "run" (its
	// source run's, which the version carries).
	Source string
	// Digest is the blob's content digest.
	Digest string
	// Doc is the parsed document; nil when Problem says why it is not a
	// valid explanation (one stored before uploads were validated).
	Doc *explain.Explanation
	// Problem is why the stored bytes are not a valid explanation.
	Problem string
}

// Explanation sources.
const (
	SourceVersion = "version"
	SourceRun     = "run"
)

// needsExplanation reports whether evaluating pol needs the version's
// explanation.
func needsExplanation(pol events.PolicyData) bool {
	if slices.Contains(pol.RequiredArtifacts, explain.FileName) {
		return true
	}
	if pol.Gate == "" {
		return false
	}
	gate, err := registry.ParseGate(pol.Gate)
	return err == nil && registry.GateNamesImportance(gate)
}

// DecideRequest opens a request for version v of m to the target of pol,
// evaluating the gate and required artifacts at once: a failure records the
// request rejected with the reason (both events in one append).
func DecideRequest(id string, ps registry.ProjectState, m registry.ModelState, req Request, requester string, in GateInputs, now time.Time) ([]handlers.Change, error) {
	pol, ok := ps.Policies[req.Target]
	if !ok {
		return nil, errorf(handlers.Conflict, "no-policy",
			"no approval policy governs %s in this project: make the change directly", req.Target)
	}
	ver, ok := m.Version(req.Version)
	if !m.Created || m.Deleted || !ok || ver.Deleted {
		return nil, errorf(handlers.NotFound, "not-found", "model version not found")
	}
	if alias, isAlias := strings.CutPrefix(req.Target, "@"); isAlias {
		if m.Aliases[alias] == req.Version {
			return nil, errorf(handlers.Conflict, "already-promoted", "alias %s already points at version %d", alias, req.Version)
		}
	} else if ver.Stage == req.Target {
		return nil, errorf(handlers.Conflict, "already-promoted", "version %d is already in %s", req.Version, req.Target)
	}
	if move, err := plannedMove(req.Target, req.Version, m); err == nil {
		if other, governed := registry.GoverningBesides(ps, m, move, req.Target); governed {
			return nil, errorf(handlers.Forbidden, "approval-required",
				"moving version %d to %s would also change %s, which its own approval policy governs: request that move (or have an administrator override)",
				req.Version, req.Target, other.Target)
		}
	}
	gate := evaluate(pol, ver, in)
	d := events.PromotionRequestedData{PromotionID: id, ProjectID: ps.ID, ModelID: m.ID, ModelName: m.Name, Version: req.Version,
		Target: req.Target, Comment: req.Comment, RequesterID: requester, AuthorID: ver.Author, Policy: pol, Gate: gate,
		ExpiresAt: now.Add(time.Duration(pol.RequestTTLSeconds) * time.Second).UTC()}
	changes := []handlers.Change{{Subject: subject(id), Type: events.PromotionRequested, Data: d}}
	if !gate.Passed {
		changes = append(changes, handlers.Change{Subject: subject(id), Type: events.PromotionRejected,
			Data: events.PromotionRejectedData{PromotionID: id, Reason: gate.Reason}})
	}
	return changes, nil
}

// evaluate checks the policy's gate over the inputs and the required
// artifacts over the version's files. The version carries its source run's
// explanation: a required explanation.json is present when the version has
// one or in.Explanation is set (the version's own or its run's), and then
// must be a valid one.
// A gate naming a feature's importance refuses a version without a valid
// explanation, whatever its other comparisons say.
func evaluate(pol events.PolicyData, ver registry.VersionState, in GateInputs) events.GateResult {
	res := events.GateResult{Passed: true}
	if in.Explanation != nil {
		res.Explanation = &events.ExplanationSeen{Source: in.Explanation.Source, Digest: in.Explanation.Digest}
	}
	var reasons []string
	if pol.Gate != "" {
		gate, err := registry.ParseGate(pol.Gate)
		switch {
		case err != nil: // a stored policy parsed when it was set; a newer parser may differ
			res.Passed = false
			reasons = append(reasons, "gate cannot be evaluated: "+err.Error())
		case registry.GateNamesImportance(gate) && (in.Explanation == nil || in.Explanation.Doc == nil):
			res.Passed = false
			res.Metrics = seen(gate, in.Metrics)
			reasons = append(reasons, "gate not met: "+pol.Gate+" (it compares feature importances and "+explanationMissing(in.Explanation)+")")
		default:
			res.Metrics = seen(gate, in.Metrics)
			importances := importancesSeen(gate, in.Explanation)
			if len(importances) > 0 {
				res.Importances = map[string]events.MetricValue{}
				for k, v := range importances {
					res.Importances[k] = events.MetricValue(v)
				}
			}
			if !gate.Match(filter.Values{Metrics: in.Metrics, Importances: importances}) {
				res.Passed = false
				reasons = append(reasons, "gate not met: "+pol.Gate+" ("+describe(res.Metrics, importances)+")")
			}
		}
	}
	for _, a := range pol.RequiredArtifacts {
		if a == explain.FileName && in.Explanation != nil {
			if in.Explanation.Doc == nil {
				res.Passed = false
				reasons = append(reasons, "required artifact "+a+" is not a valid explanation: "+in.Explanation.Problem)
			}
			continue
		}
		if _, ok := ver.Artifacts[a]; !ok {
			res.MissingArtifacts = append(res.MissingArtifacts, a)
		}
	}
	if len(res.MissingArtifacts) > 0 {
		res.Passed = false
		reasons = append(reasons, "required artifacts missing: "+strings.Join(res.MissingArtifacts, ", "))
	}
	res.Reason = strings.Join(reasons, "; ")
	return res
}

// explanationMissing says why a gate has no importances to compare.
func explanationMissing(x *VersionExplanation) string {
	if x == nil {
		return "the version has no explanation (explanation.json of the version or of its source run)"
	}
	return "the version's explanation.json is not a valid explanation: " + x.Problem
}

// seen is the values of the metrics gate names (those the inputs have).
func seen(gate filter.Expr, metrics map[string]float64) map[string]events.MetricValue {
	out := map[string]events.MetricValue{}
	for _, c := range gate.Clauses {
		if v, ok := metrics[c.Key]; ok && c.Type == filter.Metric {
			out[c.Key] = events.MetricValue(v)
		}
	}
	return out
}

// importancesSeen is the importances of the features gate names that the
// explanation has (explain.Explanation.ImportanceOf).
func importancesSeen(gate filter.Expr, x *VersionExplanation) map[string]float64 {
	out := map[string]float64{}
	if x == nil || x.Doc == nil {
		return out
	}
	for _, c := range gate.Clauses {
		if c.Type != filter.Importance {
			continue
		}
		if v, ok := x.Doc.ImportanceOf(c.Key); ok {
			out[c.Key] = v
		}
	}
	return out
}

// describe lists the values a gate saw.
func describe(metrics map[string]events.MetricValue, importances map[string]float64) string {
	keys := slices.Sorted(maps.Keys(metrics))
	parts := make([]string, 0, len(keys)+len(importances))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s = %g", k, float64(metrics[k])))
	}
	for _, k := range slices.Sorted(maps.Keys(importances)) {
		parts = append(parts, fmt.Sprintf("importance of %s = %g", k, importances[k]))
	}
	if len(parts) == 0 {
		return "the version has none of its metrics or features"
	}
	return strings.Join(parts, ", ")
}

// plannedMove is the model change that moves version v to target: the
// stage transition (a promotion to production replaces the version there,
// as archive_existing; staging holds several) or the alias set.
func plannedMove(target string, v int, m registry.ModelState) ([]handlers.Change, error) {
	if alias, isAlias := strings.CutPrefix(target, "@"); isAlias {
		return registry.DecideSetAlias(m, alias, v)
	}
	return registry.DecideTransition(m, v, target, target == events.StageProduction)
}

// Approver is who approves or rejects: a user, with the role they hold in
// the request's project as its event-sourced membership says (admins act as
// owners: authz.Effective).
type Approver struct {
	UserID string
	Role   authz.ProjectRole
	// checked is set on a replay: the decision was stored, so its checks
	// held then (the approver's role may have changed since).
	checked bool
}

// eligible checks that a may decide on s under its policy.
func eligible(s PromotionState, a Approver) error {
	if a.checked {
		return nil
	}
	pol := s.Policy
	if !slices.Contains(pol.ApproverRoles, string(a.Role)) && !slices.Contains(pol.ApproverUsers, a.UserID) {
		return errorf(handlers.Forbidden, "forbidden", "the policy for %s does not name you as an approver", pol.Target)
	}
	if pol.SeparationOfDuties && a.UserID == s.RequesterID {
		return errorf(handlers.Forbidden, "separation-of-duties", "you requested this promotion: someone else must approve it")
	}
	if pol.SeparationOfDuties && a.UserID == s.AuthorID {
		return errorf(handlers.Forbidden, "separation-of-duties", "you registered this version: someone else must approve its promotion")
	}
	return nil
}

// open refuses decisions on a request that is no longer pending.
func open(s PromotionState, now time.Time) error {
	if !s.Created {
		return missing()
	}
	switch st := s.StateAt(now); st {
	case events.PromotionStatePending:
		return nil
	case events.PromotionStateExpired:
		return errorf(handlers.Conflict, "promotion-expired", "the promotion request expired at %s", s.ExpiresAt.Format(time.RFC3339))
	default:
		return errorf(handlers.Conflict, "promotion-closed", "the promotion request is %s", st)
	}
}

// DecideApprove records a's approval; the one that reaches the policy's
// required count approves the request (and the promotion flow carries it
// out).
func DecideApprove(s PromotionState, a Approver, comment string, now time.Time) ([]handlers.Change, error) {
	if err := open(s, now); err != nil {
		return nil, err
	}
	if err := eligible(s, a); err != nil {
		return nil, err
	}
	if s.approvedBy(a.UserID) {
		return nil, errorf(handlers.Conflict, "already-approved", "you have already approved this request")
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.PromotionApproved,
		Data: events.PromotionApprovedData{PromotionID: s.ID, ApproverID: a.UserID, Comment: comment,
			Approvals: len(s.Approvals) + 1, Required: s.Policy.RequiredApprovals}}}, nil
}

// DecideReject ends the request with an eligible approver's no.
func DecideReject(s PromotionState, a Approver, comment string, now time.Time) ([]handlers.Change, error) {
	if err := open(s, now); err != nil {
		return nil, err
	}
	if err := eligible(s, a); err != nil {
		return nil, err
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.PromotionRejected,
		Data: events.PromotionRejectedData{PromotionID: s.ID, ByID: a.UserID, Comment: comment, Reason: "rejected by an approver"}}}, nil
}

// DecideCancel withdraws a pending request: its requester may, while
// their role still lets them request (editor and up), and so may a project
// owner (clearing stale requests is managing the project).
func DecideCancel(s PromotionState, a Approver, comment string, now time.Time) ([]handlers.Change, error) {
	if err := open(s, now); err != nil {
		return nil, err
	}
	requester := a.UserID == s.RequesterID && slices.Contains([]authz.ProjectRole{authz.ProjectEditor, authz.ProjectApprover, authz.ProjectOwner}, a.Role)
	if !a.checked && !requester && a.Role != authz.ProjectOwner {
		return nil, errorf(handlers.Forbidden, "forbidden", "only the requester or a project owner may cancel a promotion request")
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.PromotionCancelled,
		Data: events.PromotionCancelledData{PromotionID: s.ID, Comment: comment}}}, nil
}

// DecideComplete carries out an approved request on the model: the stage
// transition (archiving the version that held production, as a promotion
// replaces it) or the alias set, stamped with the request's id, and the
// request's completion, both to be appended in one batch. A version that
// reached the target some other way meanwhile (an override) completes the
// request without a move. A request that is
// not approved yields nothing (already carried out, or never approved);
// one that cannot be carried out any more fails with the reason.
//
// digest is the version's explanation document now ("" when it has none),
// for a request whose gate read one: a document that changed since the
// request (a run's explanation can be replaced) fails the request, which
// must be made again — an approval covers what the approvers saw.
func DecideComplete(s PromotionState, ps registry.ProjectState, m registry.ModelState, digest string) ([]handlers.Change, error) {
	if seen := s.Gate.Explanation; seen != nil && s.State == events.PromotionStateApproved && seen.Digest != digest {
		now := digest
		if now == "" {
			now = "none"
		}
		return []handlers.Change{{Subject: subject(s.ID), Type: events.PromotionFailed,
			Data: events.PromotionFailedData{PromotionID: s.ID, Reason: fmt.Sprintf(
				"the version's explanation changed since the request (%s, now %s): request the promotion again", seen.Digest, now)}}}, nil
	}
	if s.State != events.PromotionStateApproved {
		return nil, nil
	}
	failed := func(reason string) ([]handlers.Change, error) {
		return []handlers.Change{{Subject: subject(s.ID), Type: events.PromotionFailed,
			Data: events.PromotionFailedData{PromotionID: s.ID, Reason: reason}}}, nil
	}
	if ps.Archived {
		return failed("the project is archived")
	}
	move, err := plannedMove(s.Target, s.Version, m)
	if err != nil {
		reason := err.Error()
		if he, ok := handlers.AsError(err); ok {
			reason = he.Detail
		}
		return failed(reason)
	}
	if pol, governed := registry.GoverningBesides(ps, m, move, s.Target); governed {
		return failed("the move would also change " + pol.Target + ", which its own approval policy governs")
	}
	move = registry.WithAuthority(move, events.Authority{PromotionID: s.ID})
	return append(move, handlers.Change{Subject: subject(s.ID), Type: events.PromotionCompleted,
		Data: events.PromotionCompletedData{PromotionID: s.ID, ModelID: s.ModelID, Version: s.Version, Target: s.Target}}), nil
}
