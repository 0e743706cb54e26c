package projections

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Webhooks is the read model of webhook subscriptions: one row per live
// subscription (a deleted one is removed), which the API lists and the
// delivery matcher joins events against. Its delivery log
// (webhook_deliveries) is the dispatcher's own state, not this
// projection's (see migration 00018).
type Webhooks struct{}

// Name implements Projection.
func (Webhooks) Name() string { return "webhooks" }

// Tables implements Projection.
func (Webhooks) Tables() []string { return []string{"webhooks"} }

// Aggregates implements Projection.
func (Webhooks) Aggregates() []string { return []string{events.AggWebhook} }

// Handles implements Projection.
func (Webhooks) Handles(t string) bool {
	switch t {
	case events.WebhookCreated, events.WebhookUpdated, events.WebhookSecretRotated, events.WebhookDisabled, events.WebhookDeleted:
		return true
	}
	return false
}

// splitPatterns is handlers/webhooks Split: exact types, and the prefixes
// of wildcard patterns ("maestro.model.*" → "maestro.model."; "*" → "").
func splitPatterns(patterns []string) (exact, prefixes []string) {
	exact, prefixes = []string{}, []string{}
	for _, p := range patterns {
		if strings.HasSuffix(p, "*") {
			prefixes = append(prefixes, strings.TrimSuffix(p, "*"))
		} else {
			exact = append(exact, p)
		}
	}
	return exact, prefixes
}

// Queue implements Projection.
func (Webhooks) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		seq, at := int64(e.Sequence), e.Time.Truncate(time.Microsecond)
		switch e.Type {
		case events.WebhookCreated:
			var d events.WebhookCreatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			exact, prefixes := splitPatterns(d.Events)
			pats, _ := json.Marshal(nonNilSlice(d.Events))
			var project *string
			if d.ProjectID != "" {
				project = &d.ProjectID
			}
			b.Queue(`INSERT INTO webhooks (id, project_id, url, events, exact, prefixes, description, secret, created_by,
				created_at, updated_at, created_seq, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $11)`,
				d.WebhookID, project, d.URL, pats, exact, prefixes, d.Description, d.SecretSealed, d.CreatedBy, at, seq)
		case events.WebhookUpdated:
			var d events.WebhookUpdatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			exact, prefixes := splitPatterns(d.Events)
			pats, _ := json.Marshal(nonNilSlice(d.Events))
			b.Queue(`UPDATE webhooks SET url = $2, events = $3, exact = $4, prefixes = $5, description = $6, enabled = $7,
				disabled_reason = CASE WHEN $7 THEN '' ELSE disabled_reason END, updated_at = $8, seq = $9 WHERE id = $1`,
				d.WebhookID, d.URL, pats, exact, prefixes, d.Description, d.Enabled, at, seq)
		case events.WebhookSecretRotated:
			var d events.WebhookSecretRotatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE webhooks SET previous_secret = secret, secret = $2, previous_until = $3, updated_at = $4, seq = $5 WHERE id = $1`,
				d.WebhookID, d.SecretSealed, d.PreviousUntil, at, seq)
		case events.WebhookDisabled:
			var d events.WebhookDisabledData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = $3, seq = $4 WHERE id = $1`,
				d.WebhookID, d.Reason, at, seq)
		case events.WebhookDeleted:
			var d events.WebhookDeletedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`DELETE FROM webhooks WHERE id = $1`, d.WebhookID)
		}
	}
	return nil
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Webhook is a subscription as the API shows it (never its secret).
type Webhook struct {
	ID             string    `json:"id"`
	ProjectID      string    `json:"project_id,omitempty"`
	URL            string    `json:"url"`
	Events         []string  `json:"events"`
	Description    string    `json:"description"`
	Enabled        bool      `json:"enabled"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	CreatedBy      string    `json:"created_by"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	// PreviousSecretUntil is when the secret rotated out stops signing
	// (absent when none does).
	PreviousSecretUntil *time.Time `json:"previous_secret_until,omitempty"`
}

const webhookCols = `id, COALESCE(project_id::text, ''), url, events, description, enabled, disabled_reason, created_by, created_at, updated_at,
	CASE WHEN previous_until > now() THEN previous_until END, created_seq`

func scanWebhook(row pgx.Row) (Webhook, int64, error) {
	var w Webhook
	var pats []byte
	var seq int64
	err := row.Scan(&w.ID, &w.ProjectID, &w.URL, &pats, &w.Description, &w.Enabled, &w.DisabledReason, &w.CreatedBy,
		&w.CreatedAt, &w.UpdatedAt, &w.PreviousSecretUntil, &seq)
	if err != nil {
		return w, 0, err
	}
	w.CreatedAt, w.UpdatedAt = w.CreatedAt.UTC(), w.UpdatedAt.UTC()
	if w.PreviousSecretUntil != nil {
		t := w.PreviousSecretUntil.UTC()
		w.PreviousSecretUntil = &t
	}
	if err := json.Unmarshal(pats, &w.Events); err != nil {
		return w, 0, err
	}
	return w, seq, nil
}

// Webhook returns a subscription of the project projectID ("" = a global
// one); ErrNotFound for any other.
func (q *Queries) Webhook(ctx context.Context, projectID, id string) (Webhook, error) {
	if !isUUID(id) {
		return Webhook{}, ErrNotFound
	}
	w, _, err := scanWebhook(q.pool.QueryRow(ctx, "SELECT "+webhookCols+
		" FROM webhooks WHERE id = $1 AND COALESCE(project_id::text, '') = $2", id, projectID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Webhook{}, ErrNotFound
	}
	return w, err
}

// ListWebhooks pages the subscriptions of a project ("" = the global
// ones), newest first.
func (q *Queries) ListWebhooks(ctx context.Context, projectID, pageToken string, limit int) (Page[Webhook], error) {
	c, err := decodeCursor(pageToken, seqCursor)
	if err != nil {
		return Page[Webhook]{}, err
	}
	if c.Seq == 0 {
		c.Seq = 1 << 62
	}
	rows, err := q.pool.Query(ctx, "SELECT "+webhookCols+` FROM webhooks WHERE COALESCE(project_id::text, '') = $1
		AND created_seq < $2 ORDER BY created_seq DESC LIMIT $3`, projectID, c.Seq, limit+1)
	if err != nil {
		return Page[Webhook]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (Webhook, cursor, error) {
		w, seq, err := scanWebhook(r)
		return w, cursor{Seq: seq}, err
	})
}

// WebhookDelivery is one event's delivery to a subscription: its status
// (pending, succeeded, failed: retries ran out, cancelled: the
// subscription was disabled or deleted), how often it was tried and how
// the receiver last answered.
type WebhookDelivery struct {
	EventID       string     `json:"event_id"`
	EventType     string     `json:"event_type"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	ResponseCode  *int       `json:"response_code,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// WebhookDeliveries pages a subscription's delivery log, newest event
// first; status ("" = any) narrows it.
func (q *Queries) WebhookDeliveries(ctx context.Context, webhookID, status, pageToken string, limit int) (Page[WebhookDelivery], error) {
	c, err := decodeCursor(pageToken, seqCursor)
	if err != nil {
		return Page[WebhookDelivery]{}, err
	}
	if c.Seq == 0 {
		c.Seq = 1 << 62
	}
	rows, err := q.pool.Query(ctx, `SELECT event_id, event_type, status, attempts, response_code, last_error, created_at,
		last_attempt_at, CASE WHEN status = 'pending' THEN next_attempt_at END, delivered_at, event_seq
		FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 = '' OR status = $2) AND event_seq < $3
		ORDER BY event_seq DESC LIMIT $4`, webhookID, status, c.Seq, limit+1)
	if err != nil {
		return Page[WebhookDelivery]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (WebhookDelivery, cursor, error) {
		var d WebhookDelivery
		var seq int64
		err := r.Scan(&d.EventID, &d.EventType, &d.Status, &d.Attempts, &d.ResponseCode, &d.LastError, &d.CreatedAt,
			&d.LastAttemptAt, &d.NextAttemptAt, &d.DeliveredAt, &seq)
		d.CreatedAt = d.CreatedAt.UTC()
		d.LastAttemptAt, d.NextAttemptAt, d.DeliveredAt = utcPtr(d.LastAttemptAt), utcPtr(d.NextAttemptAt), utcPtr(d.DeliveredAt)
		return d, cursor{Seq: seq}, err
	})
}
