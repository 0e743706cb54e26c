package events

import "time"

// Webhook subscriptions (subject maestro.events.webhook.<id>). A
// subscription asks for the events whose type matches one of its patterns
// to be POSTed to its URL as CloudEvents; its signing secret is recorded
// sealed (encrypted with a key derived from the platform's signing key,
// handlers/webhooks Sealer), never in clear: events are immutable and read
// by other systems.
const (
	WebhookCreated = "maestro.webhook.created.v1"
	// WebhookUpdated records a subscription's settings after a change (all
	// of them, not a patch).
	WebhookUpdated = "maestro.webhook.updated.v1"
	// WebhookSecretRotated replaces the signing secret; the previous one
	// still signs deliveries (a second signature) until PreviousUntil.
	WebhookSecretRotated = "maestro.webhook.secret_rotated.v1"
	// WebhookDisabled is Maestro turning a subscription off after its
	// deliveries failed for the whole retry window (the audit trail's
	// record of it).
	WebhookDisabled = "maestro.webhook.disabled.v1"
	// WebhookDeleted ends a subscription.
	WebhookDeleted = "maestro.webhook.deleted.v1"
	// WebhookTestRequested asks for a test delivery to one subscription:
	// the event itself is what is delivered.
	WebhookTestRequested = "maestro.webhook.test_requested.v1"
)

// AggWebhook is the webhook subscription aggregate type.
const AggWebhook = "webhook"

// WebhookCreatedData: a new subscription. ProjectID is empty for a global
// one (admins'). SecretSealed is the signing secret sealed for the webhook
// (never the secret itself).
type WebhookCreatedData struct {
	WebhookID    string   `json:"webhook_id"`
	ProjectID    string   `json:"project_id,omitempty"`
	URL          string   `json:"url"`
	Events       []string `json:"events"`
	Description  string   `json:"description,omitempty"`
	SecretSealed string   `json:"secret_sealed"`
	CreatedBy    string   `json:"created_by"`
}

// WebhookUpdatedData: the subscription's settings after a change.
type WebhookUpdatedData struct {
	WebhookID   string   `json:"webhook_id"`
	URL         string   `json:"url"`
	Events      []string `json:"events"`
	Description string   `json:"description,omitempty"`
	Enabled     bool     `json:"enabled"`
}

// WebhookSecretRotatedData: the new sealed secret; the previous one signs
// too until PreviousUntil.
type WebhookSecretRotatedData struct {
	WebhookID     string    `json:"webhook_id"`
	SecretSealed  string    `json:"secret_sealed"`
	PreviousUntil time.Time `json:"previous_until"`
}

// WebhookDisabledData: why Maestro turned the subscription off, and the
// delivery (an event id) whose retries ran out.
type WebhookDisabledData struct {
	WebhookID string `json:"webhook_id"`
	Reason    string `json:"reason"`
	EventID   string `json:"event_id,omitempty"`
}

// WebhookDeletedData: the subscription is gone.
type WebhookDeletedData struct {
	WebhookID string `json:"webhook_id"`
}

// WebhookTestRequestedData: a test delivery to the subscription.
type WebhookTestRequestedData struct {
	WebhookID string `json:"webhook_id"`
	ProjectID string `json:"project_id,omitempty"`
}
