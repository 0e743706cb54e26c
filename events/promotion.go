package events

import "time"

// Approval policies live on the project's subject (maestro.events.project.<id>):
// a transition decides on the project it loads anyway, so a policy in force
// is seen by every decision that could move a deployment pointer.
const (
	// ProjectPolicySet creates or replaces the approval policy of one target
	// (a stage, or an alias written "@name").
	ProjectPolicySet = "maestro.project.policy_set.v1"
	// ProjectPolicyRemoved lifts the policy of one target.
	ProjectPolicyRemoved = "maestro.project.policy_removed.v1"
)

// Promotion requests (subject maestro.events.promotion.<id>): a request to
// move a model version to a governed target, its approvals, and its end.
const (
	// PromotionRequested opens a request; it carries the policy in force
	// when it was made (later policy changes do not move the goal posts of
	// a pending request) and the gate's inputs and result.
	PromotionRequested = "maestro.promotion.requested.v1"
	// PromotionApproved is one approval; Approvals counts the distinct
	// approvers so far, and the request is approved when it reaches
	// Required.
	PromotionApproved = "maestro.promotion.approved.v1"
	// PromotionRejected ends a request: an approver said no, or the gate
	// (or a required artifact) failed when it was made.
	PromotionRejected = "maestro.promotion.rejected.v1"
	// PromotionCancelled ends a request its requester withdrew.
	PromotionCancelled = "maestro.promotion.cancelled.v1"
	// PromotionCompleted: the promotion flow moved the pointer; appended
	// atomically with the model's transition or alias event, which names
	// the request (PromotionID).
	PromotionCompleted = "maestro.promotion.completed.v1"
	// PromotionFailed: the request was approved but the move could not be
	// made (the version was deleted meanwhile, the model is gone).
	PromotionFailed = "maestro.promotion.failed.v1"
)

// AggPromotion is the promotion request aggregate type.
const AggPromotion = "promotion"

// Promotion request states (Expired is computed: a pending request past its
// ExpiresAt).
const (
	PromotionStatePending   = "pending"
	PromotionStateApproved  = "approved"
	PromotionStateRejected  = "rejected"
	PromotionStateCancelled = "cancelled"
	PromotionStateCompleted = "completed"
	PromotionStateFailed    = "failed"
	PromotionStateExpired   = "expired"
)

// PolicyData is an approval policy: who must approve a move to Target, and
// what the version must show.
type PolicyData struct {
	Target            string   `json:"target"`
	RequiredApprovals int      `json:"required_approvals"`
	ApproverRoles     []string `json:"approver_roles"`
	ApproverUsers     []string `json:"approver_users,omitempty"`
	// SeparationOfDuties forbids the requester and the version's author to
	// approve.
	SeparationOfDuties bool     `json:"separation_of_duties"`
	Gate               string   `json:"gate,omitempty"`
	RequiredArtifacts  []string `json:"required_artifacts,omitempty"`
	// RequestTTLSeconds is how long a request stays open for approval.
	RequestTTLSeconds int64 `json:"request_ttl_seconds"`
}

// ProjectPolicySetData: the policy of one target of a project.
type ProjectPolicySetData struct {
	ProjectID string     `json:"project_id"`
	Policy    PolicyData `json:"policy"`
}

// ProjectPolicyRemovedData: the target is no longer governed.
type ProjectPolicyRemovedData struct {
	ProjectID string `json:"project_id"`
	Target    string `json:"target"`
}

// GateResult is what the gate saw and decided when the request was made.
type GateResult struct {
	Passed bool `json:"passed"`
	// Metrics are the values of the metrics the gate names, as it saw
	// them: the source run's latest overlaid with the version's own (NaN
	// and ±Inf as MetricValue writes them).
	Metrics map[string]MetricValue `json:"metrics,omitempty"`
	// MissingArtifacts lists required artifacts the version lacked.
	MissingArtifacts []string `json:"missing_artifacts,omitempty"`
	Reason           string   `json:"reason,omitempty"`
	// Importances are the global importances of the features the gate
	// names (importance.<feature>), as the version's explanation gave them.
	Importances map[string]MetricValue `json:"importances,omitempty"`
	// Explanation is the explanation document the gate and the required
	// artifacts read, when the policy needed one and the version had one.
	Explanation *ExplanationSeen `json:"explanation,omitempty"`
}

// ExplanationSeen names the explanation document a decision read: the
// version's own explanation.json or its source run's, by content digest.
type ExplanationSeen struct {
	// Source is "version" or "run".
	Source string `json:"source"`
	Digest string `json:"digest"`
}

// PromotionRequestedData opens a request.
type PromotionRequestedData struct {
	PromotionID string `json:"promotion_id"`
	ProjectID   string `json:"project_id"`
	ModelID     string `json:"model_id"`
	ModelName   string `json:"model_name"`
	Version     int    `json:"version"`
	Target      string `json:"target"`
	Comment     string `json:"comment,omitempty"`
	// RequesterID and AuthorID (who registered the version) are user ids;
	// separation of duties keeps both from approving.
	RequesterID string     `json:"requester_id"`
	AuthorID    string     `json:"author_id,omitempty"`
	Policy      PolicyData `json:"policy"`
	Gate        GateResult `json:"gate"`
	ExpiresAt   time.Time  `json:"expires_at"`
}

// PromotionApprovedData is one approval.
type PromotionApprovedData struct {
	PromotionID string `json:"promotion_id"`
	ApproverID  string `json:"approver_id"`
	Comment     string `json:"comment,omitempty"`
	Approvals   int    `json:"approvals"`
	Required    int    `json:"required"`
}

// PromotionRejectedData ends a request: by an approver (ByID), or by the
// gate at request time (ByID empty, Reason the gate's).
type PromotionRejectedData struct {
	PromotionID string `json:"promotion_id"`
	ByID        string `json:"by_id,omitempty"`
	Comment     string `json:"comment,omitempty"`
	Reason      string `json:"reason"`
}

// PromotionCancelledData: the requester withdrew the request.
type PromotionCancelledData struct {
	PromotionID string `json:"promotion_id"`
	Comment     string `json:"comment,omitempty"`
}

// PromotionCompletedData: the flow moved the pointer (the model's event is
// appended in the same atomic batch).
type PromotionCompletedData struct {
	PromotionID string `json:"promotion_id"`
	ModelID     string `json:"model_id"`
	Version     int    `json:"version"`
	Target      string `json:"target"`
}

// PromotionFailedData: approved, but the move could not be made.
type PromotionFailedData struct {
	PromotionID string `json:"promotion_id"`
	Reason      string `json:"reason"`
}
