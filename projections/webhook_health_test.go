package projections

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// WebhookHealth lists every subscription (global and of projects) with the
// outcome of its newest delivery and its delivery counts by status; a
// subscription without deliveries has zero counts and no last status.
func TestWebhookHealth(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start(t, NewRunner(f.pool, f.store, Webhooks{}, testRunnerConfig()))
	q := NewQueries(f.pool)
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	project, w1, w2 := uuid.NewString(), uuid.NewString(), uuid.NewString()
	sub := func(id string) string { return events.Subject(events.AggWebhook, id) }
	f.append(t, at, [3]any{sub(w1), events.WebhookCreated, events.WebhookCreatedData{WebhookID: w1, ProjectID: project,
		URL: "https://a.example.com/", Events: []string{"*"}, SecretSealed: "v1.k.one", CreatedBy: "u1"}})
	f.append(t, at, [3]any{sub(w2), events.WebhookCreated, events.WebhookCreatedData{WebhookID: w2,
		URL: "https://b.example.com/", Events: []string{"maestro.model.*"}, SecretSealed: "v1.k.two", CreatedBy: "u1"}})
	last := f.append(t, at.Add(time.Second), [3]any{sub(w1), events.WebhookDisabled, events.WebhookDisabledData{WebhookID: w1, Reason: "failing"}})
	waitCaughtUp(t, f.pool, last, Webhooks{}.Name())

	tried := at.Add(time.Minute)
	for _, d := range []struct {
		seq    int
		status string
		code   any
	}{{1, "succeeded", 200}, {2, "failed", 500}, {3, "failed", nil}, {4, "pending", 503}} {
		if _, err := f.pool.Exec(ctx, `INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, event_seq, body, status,
			attempts, response_code, last_error, last_attempt_at) VALUES ($1, $2, 'maestro.x', $3, '{}', $4, 1, $5, $6, $7)`,
			w1, uuid.NewString(), d.seq, d.status, d.code, "err "+d.status, tried.Add(time.Duration(d.seq)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}

	hs, err := q.WebhookHealth(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].ID != w2 || hs[1].ID != w1 {
		t.Fatalf("health of %+v", hs)
	}
	b, a := hs[0], hs[1]
	if !b.Enabled || b.LastStatus != "" || b.LastAttemptAt != nil || b.Failed+b.Pending+b.Succeeded != 0 || len(b.Events) != 1 {
		t.Errorf("subscription without deliveries: %+v", b)
	}
	if a.Enabled || a.DisabledReason != "failing" || a.ProjectID != project {
		t.Errorf("disabled subscription: %+v", a)
	}
	if a.LastStatus != "pending" || a.LastResponseCode == nil || *a.LastResponseCode != 503 || a.LastError != "err pending" ||
		a.LastAttemptAt == nil || !a.LastAttemptAt.Equal(tried.Add(4*time.Second)) {
		t.Errorf("last delivery: %+v", a)
	}
	if a.Failed != 2 || a.Pending != 1 || a.Succeeded != 1 {
		t.Errorf("counts failed %d pending %d succeeded %d", a.Failed, a.Pending, a.Succeeded)
	}
	if one, err := q.WebhookHealth(ctx, 1); err != nil || len(one) != 1 || one[0].ID != w2 {
		t.Errorf("limit 1: %+v %v", one, err)
	}
}
