package projections

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// WebhookHealth is a subscription's delivery health as the admin dashboard
// shows it: whether it is enabled (and why not), how its last delivery
// went and how many of its deliveries failed (retries ran out) or are
// still pending.
type WebhookHealth struct {
	Webhook
	// LastStatus is the status of the delivery of the newest event given
	// to the subscription ("" when it has had none); LastAttemptAt when it
	// was last tried (nil: not yet) and LastResponseCode what the receiver
	// answered then (nil: no answer, e.g. a connection error).
	LastStatus       string
	LastAttemptAt    *time.Time
	LastResponseCode *int
	LastError        string
	// Failed counts deliveries whose retries ran out; Pending those not
	// delivered yet; Succeeded those delivered.
	Failed, Pending, Succeeded int64
}

// WebhookHealth lists every subscription, global and of every project,
// newest first (at most limit), each with its delivery health from the
// dispatcher's delivery log (webhook_deliveries).
func (q *Queries) WebhookHealth(ctx context.Context, limit int) ([]WebhookHealth, error) {
	rows, err := q.pool.Query(ctx, "SELECT "+webhookCols+`,
		COALESCE(d.status, ''), d.last_attempt_at, d.response_code, COALESCE(d.last_error, ''),
		COALESCE(c.failed, 0), COALESCE(c.pending, 0), COALESCE(c.succeeded, 0)
		FROM webhooks w
		LEFT JOIN LATERAL (SELECT status, last_attempt_at, response_code, last_error FROM webhook_deliveries
			WHERE webhook_id = w.id ORDER BY event_seq DESC LIMIT 1) d ON true
		LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE status = 'failed') AS failed,
			count(*) FILTER (WHERE status = 'pending') AS pending,
			count(*) FILTER (WHERE status = 'succeeded') AS succeeded
			FROM webhook_deliveries WHERE webhook_id = w.id) c ON true
		ORDER BY w.created_seq DESC LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (WebhookHealth, error) {
		var h WebhookHealth
		var pats []byte
		var seq int64
		err := r.Scan(&h.ID, &h.ProjectID, &h.URL, &pats, &h.Description, &h.Enabled, &h.DisabledReason, &h.CreatedBy,
			&h.CreatedAt, &h.UpdatedAt, &h.PreviousSecretUntil, &seq,
			&h.LastStatus, &h.LastAttemptAt, &h.LastResponseCode, &h.LastError, &h.Failed, &h.Pending, &h.Succeeded)
		if err != nil {
			return h, err
		}
		h.CreatedAt, h.UpdatedAt, h.LastAttemptAt = h.CreatedAt.UTC(), h.UpdatedAt.UTC(), utcPtr(h.LastAttemptAt)
		return h, json.Unmarshal(pats, &h.Events)
	})
}
