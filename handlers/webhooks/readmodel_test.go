package webhooks

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/internal/testnats"
	"github.com/maestro-ml/maestro/internal/testpg"
	"github.com/maestro-ml/maestro/projections"
)

func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }

// fixture is a real Postgres (migrated) and a real JetStream event store
// with a webhook service on them; the webhooks projection runs only when
// the test starts it.
type fixture struct {
	pool  *pgxpool.Pool
	store *events.Store
	svc   *Service
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testpg.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := projections.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	store := testnats.Store(t)
	sealer, err := NewSealer(make([]byte, 32), "test-key")
	if err != nil {
		t.Fatal(err)
	}
	svc := NewService(store, nil, nil, sealer, TargetPolicy{AllowPrivate: true}, nil).WithReadModel(pool)
	return &fixture{pool: pool, store: store, svc: svc}
}

// runProjection runs the webhooks projection, after delay, until the
// test ends.
func (f *fixture) runProjection(t *testing.T, delay time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := projections.NewRunner(f.pool, f.store, projections.Webhooks{},
		projections.RunnerConfig{Standby: 20 * time.Millisecond, Idle: 50 * time.Millisecond})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		_ = r.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

var admin = authz.Principal{UserID: "u-admin", Role: authz.RoleAdmin}

func meta() events.Meta {
	return events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: admin.UserID}}
}

// An event appended right after a subscription's creation can reach the
// matcher before the webhooks projection has applied the creation. The
// matcher must wait for it, not match the event against a read model that
// lacks the subscription (the event would be lost for it: at-least-once
// broken). Here the projection is not even running when the event is
// matched; it starts a little later.
func TestMatcherWaitsForTheSubscriptionsReadModel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	w, _, _, err := f.svc.Create(ctx, meta(), admin, "", Settings{URL: "http://127.0.0.1:1/hook", Events: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := []events.Envelope{f.appendProject(t)}
	d := NewDelivery(DeliveryConfig{Pool: f.pool, Service: f.svc})
	// The projection comes up while the matcher handles the event.
	f.runProjection(t, 300*time.Millisecond)
	if err := d.match(ctx, evs[0]); err != nil {
		t.Fatalf("match: %v", err)
	}
	var n int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND event_id = $2`,
		w.ID, evs[0].ID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("the event appended after the subscription has %d outbox rows for it, want 1", n)
	}
}

// A reset (or rebuild) of the read model empties it and rewinds its
// checkpoint while the matcher's watermark says every subscription is
// there: the matcher notices (the checkpoint went below the one it counted
// on) and waits for the rebuild, instead of matching against an empty
// table and losing the event.
func TestMatcherWaitsOutAReset(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	w, _, _, err := f.svc.Create(ctx, meta(), admin, "", Settings{URL: "http://127.0.0.1:1/hook", Events: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	rows := func(e events.Envelope) int {
		var n int
		if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND event_id = $2`,
			w.ID, e.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	d := NewDelivery(DeliveryConfig{Pool: f.pool, Service: f.svc})
	stop := f.startProjection(t)
	first := f.appendProject(t)
	if err := d.match(ctx, first); err != nil || rows(first) != 1 {
		t.Fatalf("match before the reset: %v, %d rows", err, rows(first))
	}
	stop()
	if err := projections.Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	second := f.appendProject(t)
	// The read model is rebuilt a little later, while the matcher waits.
	f.runProjection(t, 300*time.Millisecond)
	if err := d.match(ctx, second); err != nil {
		t.Fatalf("match after the reset: %v", err)
	}
	if n := rows(second); n != 1 {
		t.Fatalf("the event matched after a reset of the read model has %d outbox rows, want 1", n)
	}
}

// startProjection runs the webhooks projection until stop (or the test's
// end).
func (f *fixture) startProjection(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := projections.NewRunner(f.pool, f.store, projections.Webhooks{},
		projections.RunnerConfig{Standby: 20 * time.Millisecond, Idle: 50 * time.Millisecond})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// The cap: a scope holds at most its limit of subscriptions, counted on
// the read model once it has applied every subscription event, so
// creations one after the other (each answered before the projection
// applied it) and concurrent ones cannot pass it; a deletion frees a
// place; a retried creation (same Idempotency-Key) that went through is
// answered, cap or not.
func TestSubscriptionCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.svc.limits.global = 3
	f.runProjection(t, 0)
	ctx := context.Background()
	in := Settings{URL: "http://127.0.0.1:1/hook", Events: []string{"*"}}
	keyed := func(key string) events.Meta {
		m := meta()
		m.IdempotencyKey, m.Fingerprint = key, "fp"
		return m
	}
	// Six at once: exactly three are created.
	type result struct {
		w   State
		err error
	}
	results := make(chan result, 6)
	for i := range 6 {
		go func() {
			w, _, _, err := f.svc.Create(ctx, keyed("k"+string(rune('a'+i))), admin, "", in)
			results <- result{w, err}
		}()
	}
	var created []State
	for range 6 {
		r := <-results
		switch {
		case r.err == nil:
			created = append(created, r.w)
		case isLimit(r.err):
		default:
			t.Fatalf("create: %v", r.err)
		}
	}
	if len(created) != 3 {
		t.Fatalf("%d of 6 concurrent creations went through, want 3 (the cap)", len(created))
	}
	// A retry of a creation that went through is answered, at the cap.
	var retried State
	for _, k := range []string{"ka", "kb", "kc", "kd", "ke", "kf"} {
		w, secret, _, err := f.svc.Create(ctx, keyed(k), admin, "", in)
		if err == nil && secret != "" {
			retried = w
			break
		}
	}
	if retried.ID == "" {
		t.Fatal("no retry of a created webhook was answered at the cap")
	}
	// A deletion frees a place.
	if _, err := f.svc.Delete(ctx, meta(), admin, "", created[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := f.svc.Create(ctx, meta(), admin, "", in); err != nil {
		t.Fatalf("create after a deletion: %v", err)
	}
	if _, _, _, err := f.svc.Create(ctx, meta(), admin, "", in); !isLimit(err) {
		t.Fatalf("create past the cap: %v, want webhook-limit", err)
	}
}

// isLimit reports whether err is the cap's refusal, naming the limit.
func isLimit(err error) bool {
	e, ok := handlers.AsError(err)
	return ok && e.Kind == handlers.Conflict && e.Code == "webhook-limit" && strings.Contains(e.Detail, "at most 3 webhooks")
}

// appendEvent appends one event and returns it as stored.
func (f *fixture) appendEvent(t *testing.T, subject, typ string, data any) events.Envelope {
	t.Helper()
	ctx := context.Background()
	env, err := events.New(meta(), subject, typ, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := f.store.Append(ctx, events.Append{Event: env, Expect: events.Any})
	if err != nil {
		t.Fatal(err)
	}
	e, err := f.store.Get(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// appendProject appends a new project's creation and returns it as stored.
func (f *fixture) appendProject(t *testing.T) events.Envelope {
	t.Helper()
	pid := uuid.NewString()
	return f.appendEvent(t, events.Subject(events.AggProject, pid), events.ProjectCreated,
		events.ProjectCreatedData{ProjectID: pid, Slug: "p" + pid[:8], Name: "p", OwnerID: admin.UserID})
}

// An event whose data names no project (a model version's registration,
// a run's update, a job's end…) belongs to the project its aggregate was
// created in. The matcher must find that project even when the read model
// of the aggregate lags (here: the models projection does not run at all),
// or the project's subscriptions would silently miss the event.
func TestMatcherFindsTheProjectOfAnEventWithoutOne(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.runProjection(t, 0)
	ctx := context.Background()
	project, hook, model := uuid.NewString(), uuid.NewString(), uuid.NewString()
	sealed := f.svc.Sealer().Seal(hook, NewSecret())
	created := f.appendEvent(t, subject(hook), events.WebhookCreated, events.WebhookCreatedData{WebhookID: hook, ProjectID: project,
		URL: "http://127.0.0.1:1/hook", Events: []string{"maestro.model.*", "maestro.promotion.*"}, SecretSealed: sealed, CreatedBy: admin.UserID})
	modelSubject := events.Subject(events.AggModel, model)
	f.appendEvent(t, modelSubject, events.ModelCreated, events.ModelCreatedData{ModelID: model, ProjectID: project, Name: "m"})
	registered := f.appendEvent(t, modelSubject, events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: model, Version: 1, Source: "s3://b/m"})
	// Another project's model: not this subscription's.
	other := uuid.NewString()
	f.appendEvent(t, events.Subject(events.AggModel, other), events.ModelCreated, events.ModelCreatedData{ModelID: other, ProjectID: uuid.NewString(), Name: "o"})
	theirs := f.appendEvent(t, events.Subject(events.AggModel, other), events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: other, Version: 1, Source: "s3://b/o"})
	// A promotion request names its project; its approval does not.
	promotion := uuid.NewString()
	promoSubject := events.Subject(events.AggPromotion, promotion)
	f.appendEvent(t, promoSubject, events.PromotionRequested, events.PromotionRequestedData{PromotionID: promotion, ProjectID: project,
		ModelID: model, ModelName: "m", Version: 1, Target: "production", RequesterID: admin.UserID})
	approved := f.appendEvent(t, promoSubject, events.PromotionApproved, events.PromotionApprovedData{PromotionID: promotion, ApproverID: admin.UserID, Approvals: 1, Required: 1})
	if err := f.subsApplied(ctx, created.Sequence+1); err != nil {
		t.Fatal(err)
	}
	d := NewDelivery(DeliveryConfig{Pool: f.pool, Service: f.svc})
	for _, e := range []events.Envelope{registered, theirs, approved} {
		if err := d.match(ctx, e); err != nil {
			t.Fatalf("match %s: %v", e.Type, err)
		}
	}
	rows, err := f.pool.Query(ctx, `SELECT event_id FROM webhook_deliveries WHERE webhook_id = $1`, hook)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
	}
	slices.Sort(got)
	want := []string{registered.ID, approved.ID}
	slices.Sort(want)
	if rows.Err() != nil || !slices.Equal(got, want) {
		t.Fatalf("the project's subscription has outbox rows %v (%v), want the version's registration and the promotion's approval %v", got, rows.Err(), want)
	}
}

// A failed request's error quotes the URL, and the reason of an automatic
// disable (an event: the audit trail, MAESTRO_PUBLIC) is made of it: only
// the URL's origin may be in it, never the path or query that incoming-
// webhook URLs keep their credential in.
func TestDeliveryErrorNamesOnlyTheOrigin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	d := NewDelivery(DeliveryConfig{Pool: f.pool, Service: f.svc, Targets: TargetPolicy{AllowPrivate: true}, Timeout: 2 * time.Second})
	_, err := d.post(context.Background(), target{url: "http://127.0.0.1:1/services/T0/B0/S3CR3T?token=abc", secret: NewSecret()},
		claimed{eventID: uuid.NewString(), body: []byte(`{}`)})
	if err == nil {
		t.Fatal("a post to a closed port succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, "S3CR3T") || strings.Contains(msg, "token") || !strings.Contains(msg, "http://127.0.0.1:1/…") {
		t.Fatalf("delivery error %q: want the origin http://127.0.0.1:1/… and nothing of the path or query", msg)
	}
}

// subsApplied waits for the webhooks projection to apply every webhook
// event before seq.
func (f *fixture) subsApplied(ctx context.Context, seq uint64) error {
	_, err := (&readModel{pool: f.pool, store: f.store}).await(ctx, seq, 30*time.Second)
	return err
}
