package projections

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// The webhooks read model follows a subscription's life: created, changed,
// rotated, disabled, deleted; project and global subscriptions are listed
// apart, and the matcher's columns (exact, prefixes) follow the patterns.
func TestWebhooksProjection(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start(t, NewRunner(f.pool, f.store, Webhooks{}, testRunnerConfig()))
	q := NewQueries(f.pool)
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	project, w1, w2 := uuid.NewString(), uuid.NewString(), uuid.NewString()
	sub := func(id string) string { return events.Subject(events.AggWebhook, id) }
	f.append(t, at, [3]any{sub(w1), events.WebhookCreated, events.WebhookCreatedData{WebhookID: w1, ProjectID: project,
		URL: "https://a.example.com/", Events: []string{"maestro.model.*", events.JobEnded}, SecretSealed: "v1.k.one", CreatedBy: "u1"}})
	f.append(t, at, [3]any{sub(w2), events.WebhookCreated, events.WebhookCreatedData{WebhookID: w2,
		URL: "https://b.example.com/", Events: []string{"*"}, SecretSealed: "v1.k.two", CreatedBy: "u1"}})
	f.append(t, at.Add(time.Second), [3]any{sub(w1), events.WebhookSecretRotated, events.WebhookSecretRotatedData{WebhookID: w1,
		SecretSealed: "v1.k.three", PreviousUntil: time.Now().Add(time.Hour)}})
	last := f.append(t, at.Add(2*time.Second), [3]any{sub(w1), events.WebhookDisabled, events.WebhookDisabledData{WebhookID: w1, Reason: "failing"}})
	waitCaughtUp(t, f.pool, last, Webhooks{}.Name())

	w, err := q.Webhook(ctx, project, w1)
	if err != nil {
		t.Fatal(err)
	}
	if w.Enabled || w.DisabledReason != "failing" || w.PreviousSecretUntil == nil || !slices.Equal(w.Events, []string{"maestro.model.*", events.JobEnded}) ||
		!w.CreatedAt.Equal(at) || !w.UpdatedAt.Equal(at.Add(2*time.Second)) {
		t.Fatalf("webhook %+v", w)
	}
	var exact, prefixes []string
	var secret, previous string
	if err := f.pool.QueryRow(ctx, "SELECT exact, prefixes, secret, previous_secret FROM webhooks WHERE id = $1", w1).
		Scan(&exact, &prefixes, &secret, &previous); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(exact, []string{events.JobEnded}) || !slices.Equal(prefixes, []string{"maestro.model."}) || secret != "v1.k.three" || previous != "v1.k.one" {
		t.Fatalf("matcher columns %v %v, secrets %q %q", exact, prefixes, secret, previous)
	}
	if _, err := q.Webhook(ctx, "", w1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a project's webhook in the global tree: %v", err)
	}
	global, err := q.ListWebhooks(ctx, "", "", 10)
	if err != nil || len(global.Items) != 1 || global.Items[0].ID != w2 {
		t.Fatalf("global list %+v, %v", global, err)
	}

	// Enabled again, then deleted: gone from the model.
	f.append(t, at.Add(3*time.Second), [3]any{sub(w1), events.WebhookUpdated, events.WebhookUpdatedData{WebhookID: w1,
		URL: "https://c.example.com/", Events: []string{"*"}, Enabled: true}})
	last = f.append(t, at.Add(4*time.Second), [3]any{sub(w2), events.WebhookDeleted, events.WebhookDeletedData{WebhookID: w2}})
	waitCaughtUp(t, f.pool, last, Webhooks{}.Name())
	w, err = q.Webhook(ctx, project, w1)
	if err != nil || !w.Enabled || w.DisabledReason != "" || w.URL != "https://c.example.com/" {
		t.Fatalf("after enabling: %+v, %v", w, err)
	}
	if _, err := q.Webhook(ctx, "", w2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted webhook: %v", err)
	}
}
