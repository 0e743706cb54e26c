// Package webhooks is the write side of webhook subscriptions (the webhook
// aggregate's state, its deciders, the service that authorizes and appends
// them) and their delivery: a reaction that matches events to
// subscriptions into a durable outbox in Postgres, and a dispatcher that
// POSTs them as signed CloudEvents with retries, refusing private targets.
package webhooks

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Limits on a subscription (rule 10: every string and list is bounded).
const (
	MaxURLLen         = 2048
	MaxPatterns       = 32
	MaxPatternLen     = 200
	MaxDescriptionLen = 1000
	// MaxRotationOverlap bounds how long a rotated-out secret still signs.
	MaxRotationOverlap = 7 * 24 * time.Hour
	// DefaultRotationOverlap is the overlap of a rotation that names none.
	DefaultRotationOverlap = 24 * time.Hour
)

// State is a subscription folded from its events.
type State struct {
	Created     bool
	Deleted     bool
	ID          string
	ProjectID   string
	URL         string
	Events      []string
	Description string
	Enabled     bool
	// DisabledReason is why Maestro disabled it ("" when a user did, or
	// it is enabled).
	DisabledReason string
	CreatedBy      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// Secret and PreviousSecret are sealed (Sealer); PreviousSecret
	// signs too until PreviousUntil.
	Secret         string
	PreviousSecret string
	PreviousUntil  time.Time
}

// Clone copies a state (its pattern list) before it is folded further.
func Clone(s State) State {
	s.Events = slices.Clone(s.Events)
	return s
}

// Evolve folds one event into a subscription.
func Evolve(s State, e events.Envelope) (State, error) {
	switch e.Type {
	case events.WebhookCreated:
		var d events.WebhookCreatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = State{Created: true, ID: d.WebhookID, ProjectID: d.ProjectID, URL: d.URL, Events: d.Events,
			Description: d.Description, Enabled: true, CreatedBy: d.CreatedBy, CreatedAt: e.Time, UpdatedAt: e.Time, Secret: d.SecretSealed}
	case events.WebhookUpdated:
		var d events.WebhookUpdatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.URL, s.Events, s.Description, s.Enabled, s.UpdatedAt = d.URL, d.Events, d.Description, d.Enabled, e.Time
		if d.Enabled {
			s.DisabledReason = ""
		}
	case events.WebhookSecretRotated:
		var d events.WebhookSecretRotatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.PreviousSecret, s.PreviousUntil, s.Secret, s.UpdatedAt = s.Secret, d.PreviousUntil, d.SecretSealed, e.Time
	case events.WebhookDisabled:
		var d events.WebhookDisabledData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Enabled, s.DisabledReason, s.UpdatedAt = false, d.Reason, e.Time
	case events.WebhookDeleted:
		s.Deleted, s.UpdatedAt = true, e.Time
	}
	return s, nil
}

func subject(id string) string { return events.Subject(events.AggWebhook, id) }

func invalid(format string, args ...any) error {
	return handlers.Errorf(handlers.Invalid, "validation-failed", format, args...)
}

func notFound() error { return handlers.Errorf(handlers.NotFound, "not-found", "webhook not found") }

// Settings are what a user sets on a subscription.
type Settings struct {
	URL         string
	Events      []string
	Description string
	Enabled     bool
}

// CheckSettings holds settings to the limits and canonicalises them: the
// URL parsed and re-rendered, patterns deduplicated in their order. Each
// pattern is an event type of the catalogue, a prefix ending in ".*"
// ("maestro.model.*": every type under it) or "*" (everything), and must
// match at least one catalogued type. The target's addresses are
// TargetPolicy's concern.
func CheckSettings(s *Settings) error {
	u, err := CheckURL(s.URL)
	if err != nil {
		return err
	}
	s.URL = u.String()
	if len(s.Events) == 0 {
		return invalid("events must name at least one event type pattern (such as \"maestro.model.*\")")
	}
	if len(s.Events) > MaxPatterns {
		return invalid("events may name at most %d patterns", MaxPatterns)
	}
	var out []string
	for _, p := range s.Events {
		if err := CheckPattern(p); err != nil {
			return err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	s.Events = out
	if len(s.Description) > MaxDescriptionLen || !handlers.PlainText(s.Description) {
		return invalid("description must be at most %d bytes of text without control characters", MaxDescriptionLen)
	}
	return nil
}

// CheckURL parses a subscription's URL: absolute http or https, a host, no
// user information (it would sit in the event stream in clear), no
// fragment, at most MaxURLLen bytes.
func CheckURL(raw string) (*url.URL, error) {
	if raw == "" || len(raw) > MaxURLLen || !handlers.PlainText(raw) || strings.ContainsAny(raw, " \t") {
		return nil, invalid("url must be an http or https URL of at most %d bytes", MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" || u.Opaque != "" {
		return nil, invalid("url must be an absolute http or https URL with a host")
	}
	if u.User != nil {
		return nil, invalid("url may not carry user information (credentials would be stored in the event stream in clear)")
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return nil, invalid("url may not have a fragment")
	}
	if p := u.Port(); p != "" {
		var n int
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n < 1 || n > 65535 {
			return nil, invalid("url has an invalid port")
		}
	}
	return u, nil
}

// CheckPattern checks one event type pattern against the catalogue.
func CheckPattern(p string) error {
	if p == "" || len(p) > MaxPatternLen || !handlers.PlainText(p) {
		return invalid("each events pattern must be 1 to %d characters", MaxPatternLen)
	}
	if strings.Count(p, "*") > 1 || (strings.Contains(p, "*") && p != "*" && !strings.HasSuffix(p, ".*")) {
		return invalid("events pattern %q: a wildcard may only end a pattern, as in \"maestro.model.*\" (or \"*\" alone)", p)
	}
	for _, t := range events.Types() {
		if Match(p, t) {
			return nil
		}
	}
	return invalid("events pattern %q matches no event type of the catalogue", p)
}

// Match reports whether event type t matches pattern p (see CheckSettings).
func Match(p, t string) bool {
	switch {
	case p == "*":
		return true
	case strings.HasSuffix(p, ".*"):
		return strings.HasPrefix(t, p[:len(p)-1])
	}
	return p == t
}

// Split separates patterns into exact types and prefixes (a wildcard
// pattern without its "*"; "*" is the empty prefix), the form the
// delivery matcher's SQL takes.
func Split(patterns []string) (exact, prefixes []string) {
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

// Create is a checked creation command.
type Create struct {
	ID, ProjectID, CreatedBy, SecretSealed string
	Settings
}

// DecideCreate creates a subscription (once).
func DecideCreate(s State, c Create) ([]handlers.Change, error) {
	if s.Created {
		return nil, handlers.Errorf(handlers.Conflict, "conflict", "webhook %s exists", c.ID)
	}
	return []handlers.Change{{Subject: subject(c.ID), Type: events.WebhookCreated, Data: events.WebhookCreatedData{
		WebhookID: c.ID, ProjectID: c.ProjectID, URL: c.URL, Events: c.Events, Description: c.Description,
		SecretSealed: c.SecretSealed, CreatedBy: c.CreatedBy}}}, nil
}

func live(s State) error {
	if !s.Created || s.Deleted {
		return notFound()
	}
	return nil
}

// DecideUpdate sets the subscription's settings; no change, no event.
func DecideUpdate(s State, in Settings) ([]handlers.Change, error) {
	if err := live(s); err != nil {
		return nil, err
	}
	if in.URL == s.URL && slices.Equal(in.Events, s.Events) && in.Description == s.Description && in.Enabled == s.Enabled {
		return nil, nil
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.WebhookUpdated, Data: events.WebhookUpdatedData{
		WebhookID: s.ID, URL: in.URL, Events: in.Events, Description: in.Description, Enabled: in.Enabled}}}, nil
}

// DecideRotate replaces the secret; the current one signs too until until.
func DecideRotate(s State, sealed string, until time.Time) ([]handlers.Change, error) {
	if err := live(s); err != nil {
		return nil, err
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.WebhookSecretRotated, Data: events.WebhookSecretRotatedData{
		WebhookID: s.ID, SecretSealed: sealed, PreviousUntil: until.UTC()}}}, nil
}

// DecideDisable turns an enabled subscription off for reason; a disabled
// or deleted one is left as it is (a redelivered reaction decides again).
func DecideDisable(s State, reason, eventID string) ([]handlers.Change, error) {
	if !s.Created || s.Deleted || !s.Enabled {
		return nil, nil
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.WebhookDisabled, Data: events.WebhookDisabledData{
		WebhookID: s.ID, Reason: reason, EventID: eventID}}}, nil
}

// DecideDelete ends the subscription.
func DecideDelete(s State) ([]handlers.Change, error) {
	if err := live(s); err != nil {
		return nil, err
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.WebhookDeleted, Data: events.WebhookDeletedData{WebhookID: s.ID}}}, nil
}

// DecideTest asks for a test delivery to an enabled subscription.
func DecideTest(s State) ([]handlers.Change, error) {
	if err := live(s); err != nil {
		return nil, err
	}
	if !s.Enabled {
		return nil, handlers.Errorf(handlers.Conflict, "webhook-disabled", "the webhook is disabled: enable it before sending a test event")
	}
	return []handlers.Change{{Subject: subject(s.ID), Type: events.WebhookTestRequested, Data: events.WebhookTestRequestedData{
		WebhookID: s.ID, ProjectID: s.ProjectID}}}, nil
}
