package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Promotions is the read model of approval policies and promotion requests
// (the approver's inbox).
type Promotions struct{}

// Name implements Projection.
func (Promotions) Name() string { return "promotions" }

// Tables implements Projection.
func (Promotions) Tables() []string { return []string{"project_policies", "promotions"} }

// Aggregates implements Projection: policies live on projects.
func (Promotions) Aggregates() []string { return []string{events.AggProject, events.AggPromotion} }

// Handles implements Projection.
func (Promotions) Handles(t string) bool {
	switch t {
	case events.ProjectPolicySet, events.ProjectPolicyRemoved, events.PromotionRequested, events.PromotionApproved,
		events.PromotionRejected, events.PromotionCancelled, events.PromotionCompleted, events.PromotionFailed:
		return true
	}
	return false
}

// Queue implements Projection.
func (Promotions) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		seq := int64(e.Sequence)
		switch e.Type {
		case events.ProjectPolicySet:
			var d events.ProjectPolicySetData
			if err := e.Decode(&d); err != nil {
				return err
			}
			pol, err := json.Marshal(d.Policy)
			if err != nil {
				return err
			}
			b.Queue(`INSERT INTO project_policies (project_id, target, policy, updated_at, updated_seq) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (project_id, target) DO UPDATE SET policy = EXCLUDED.policy, updated_at = EXCLUDED.updated_at, updated_seq = EXCLUDED.updated_seq`,
				d.ProjectID, d.Policy.Target, pol, e.Time, seq)
		case events.ProjectPolicyRemoved:
			var d events.ProjectPolicyRemovedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`DELETE FROM project_policies WHERE project_id = $1 AND target = $2`, d.ProjectID, d.Target)
		case events.PromotionRequested:
			var d events.PromotionRequestedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			pol, err := json.Marshal(d.Policy)
			if err != nil {
				return err
			}
			gate, err := json.Marshal(d.Gate)
			if err != nil {
				return err
			}
			b.Queue(`INSERT INTO promotions (id, project_id, model_id, model_name, version, target, comment, requester_id, author_id,
				policy, gate, state, requested_at, expires_at, updated_at, created_seq, updated_seq)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $12, $14, $14)`,
				d.PromotionID, d.ProjectID, d.ModelID, d.ModelName, d.Version, d.Target, d.Comment, d.RequesterID, d.AuthorID,
				pol, gate, e.Time, d.ExpiresAt, seq)
		case events.PromotionApproved:
			var d events.PromotionApprovedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			a, err := json.Marshal(PromotionApproval{UserID: d.ApproverID, Comment: d.Comment, At: e.Time})
			if err != nil {
				return err
			}
			b.Queue(`UPDATE promotions SET approvals = approvals || jsonb_build_array($2::jsonb), approver_ids = array_append(approver_ids, $3),
				state = CASE WHEN $4::boolean THEN 'approved' ELSE state END, updated_at = $5, updated_seq = $6 WHERE id = $1`,
				d.PromotionID, a, d.ApproverID, d.Approvals >= d.Required, e.Time, seq)
		case events.PromotionRejected:
			var d events.PromotionRejectedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE promotions SET state = 'rejected', reason = $2, updated_at = $3, updated_seq = $4 WHERE id = $1`,
				d.PromotionID, d.Reason, e.Time, seq)
		case events.PromotionCancelled, events.PromotionCompleted:
			var d struct {
				PromotionID string `json:"promotion_id"`
			}
			if err := e.Decode(&d); err != nil {
				return err
			}
			state := events.PromotionStateCancelled
			if e.Type == events.PromotionCompleted {
				state = events.PromotionStateCompleted
			}
			b.Queue(`UPDATE promotions SET state = $2, updated_at = $3, updated_seq = $4 WHERE id = $1`, d.PromotionID, state, e.Time, seq)
		case events.PromotionFailed:
			var d events.PromotionFailedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE promotions SET state = 'failed', reason = $2, updated_at = $3, updated_seq = $4 WHERE id = $1`,
				d.PromotionID, d.Reason, e.Time, seq)
		}
	}
	return nil
}

// Policy is a project's approval policy of one target.
type Policy struct {
	ProjectID string
	Policy    events.PolicyData
	UpdatedAt time.Time
}

// Policies lists a project's approval policies by target.
func (q *Queries) Policies(ctx context.Context, projectID string) ([]Policy, error) {
	out := []Policy{}
	if !isUUID(projectID) {
		return out, nil
	}
	rows, err := q.pool.Query(ctx, `SELECT project_id, policy, updated_at FROM project_policies WHERE project_id = $1 ORDER BY target`, projectID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var p Policy
		if err := rows.Scan(&p.ProjectID, &p.Policy, &p.UpdatedAt); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PolicyOf is the project's policy of target (ErrNotFound if none).
func (q *Queries) PolicyOf(ctx context.Context, projectID, target string) (Policy, error) {
	var p Policy
	if !isUUID(projectID) {
		return p, ErrNotFound
	}
	err := q.pool.QueryRow(ctx, `SELECT project_id, policy, updated_at FROM project_policies WHERE project_id = $1 AND target = $2`,
		projectID, target).Scan(&p.ProjectID, &p.Policy, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrNotFound
	}
	return p, err
}

// PromotionApproval is one approval of a request.
type PromotionApproval struct {
	UserID  string    `json:"user_id"`
	Comment string    `json:"comment,omitempty"`
	At      time.Time `json:"at"`
}

// Promotion is a promotion request as the read model has it (State as
// stored: see StateAt for expiry).
type Promotion struct {
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
	State       string
	Reason      string
	Approvals   []PromotionApproval
	RequestedAt time.Time
	ExpiresAt   time.Time
	UpdatedAt   time.Time
	CreatedSeq  int64
}

// StateAt is the request's state at now: a pending request past its
// expiry is expired. The write side's clock decides expiry, so callers
// pass it rather than the database's.
func (p Promotion) StateAt(now time.Time) string {
	if p.State == events.PromotionStatePending && !now.Before(p.ExpiresAt) {
		return events.PromotionStateExpired
	}
	return p.State
}

// PromotionStates are the states a request can be listed by.
var PromotionStates = []string{events.PromotionStatePending, events.PromotionStateApproved, events.PromotionStateRejected,
	events.PromotionStateCancelled, events.PromotionStateCompleted, events.PromotionStateFailed, events.PromotionStateExpired}

const promotionCols = `id, project_id, model_id, model_name, version, target, comment, requester_id, author_id, policy, gate,
	state, reason, approvals, requested_at, expires_at, updated_at, created_seq`

func scanPromotion(r pgx.Row) (Promotion, error) {
	var p Promotion
	err := r.Scan(&p.ID, &p.ProjectID, &p.ModelID, &p.ModelName, &p.Version, &p.Target, &p.Comment, &p.RequesterID, &p.AuthorID,
		&p.Policy, &p.Gate, &p.State, &p.Reason, &p.Approvals, &p.RequestedAt, &p.ExpiresAt, &p.UpdatedAt, &p.CreatedSeq)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrNotFound
	}
	return p, err
}

// PromotionOf is request id of the project (ErrNotFound if none).
func (q *Queries) PromotionOf(ctx context.Context, projectID, id string) (Promotion, error) {
	if !isUUID(projectID) || !isUUID(id) {
		return Promotion{}, ErrNotFound
	}
	return scanPromotion(q.pool.QueryRow(ctx, `SELECT `+promotionCols+` FROM promotions WHERE id = $1 AND project_id = $2`, id, projectID))
}

// PromotionFilter narrows a list of requests.
type PromotionFilter struct {
	State string // one of PromotionStates, or "" for all
	// RequesterID keeps the requests of this user (mine=true).
	RequesterID string
	// AwaitingUser keeps the pending, unexpired requests this user may
	// approve and has not: named by the policy or holding one of its
	// roles (AwaitingRole, the user's role in the project), and neither
	// requester nor author when the policy separates duties.
	AwaitingUser string
	AwaitingRole string
	// Now decides which pending requests have expired (the write side's
	// clock).
	Now time.Time
}

// ListPromotions is a page of a project's promotion requests, newest first.
func (q *Queries) ListPromotions(ctx context.Context, projectID string, f PromotionFilter, pageToken string, limit int) (Page[Promotion], error) {
	if f.State != "" && !slices.Contains(PromotionStates, f.State) {
		return Page[Promotion]{}, fmt.Errorf("%w: state %q is not one of %v", ErrInvalidSearch, f.State, PromotionStates)
	}
	if limit < 1 {
		return Page[Promotion]{}, fmt.Errorf("%w: the page size must be at least 1", ErrInvalidSearch)
	}
	c, err := decodeCursor(pageToken, seqCursor)
	if err != nil {
		return Page[Promotion]{}, err
	}
	if !isUUID(projectID) {
		return Page[Promotion]{Items: []Promotion{}}, nil
	}
	args := []any{projectID, limit + 1}
	where := "project_id = $1"
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var nowArg string
	now := func() string { // the parameter only when used: PostgreSQL types every one it gets
		if nowArg == "" {
			nowArg = arg(f.Now)
		}
		return nowArg
	}
	switch f.State {
	case "":
	case events.PromotionStateExpired:
		where += " AND state = 'pending' AND expires_at <= " + now()
	case events.PromotionStatePending:
		where += " AND state = 'pending' AND expires_at > " + now()
	default:
		where += " AND state = " + arg(f.State)
	}
	if f.RequesterID != "" {
		where += " AND requester_id = " + arg(f.RequesterID)
	}
	if f.AwaitingUser != "" {
		u, r := arg(f.AwaitingUser), arg(f.AwaitingRole)
		where += ` AND state = 'pending' AND expires_at > ` + now() + ` AND NOT (` + u + ` = ANY(approver_ids))
			AND (policy->'approver_roles' ? ` + r + ` OR policy->'approver_users' ? ` + u + `)
			AND NOT ((policy->>'separation_of_duties')::boolean AND ` + u + ` IN (requester_id, author_id))`
	}
	if pageToken != "" {
		where += " AND created_seq < " + arg(c.Seq)
	}
	rows, err := q.pool.Query(ctx, "SELECT "+promotionCols+" FROM promotions WHERE "+where+" ORDER BY created_seq DESC LIMIT $2", args...)
	if err != nil {
		return Page[Promotion]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (Promotion, cursor, error) {
		p, err := scanPromotion(r)
		return p, cursor{Seq: p.CreatedSeq}, err
	})
}
