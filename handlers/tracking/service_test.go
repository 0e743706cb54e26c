package tracking_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/internal/testnats"
)

// The tracking service against a real event store (an embedded nats-server
// per test), authorizing through the registry's project membership.

func anyUser(context.Context, string) (bool, error) { return true, nil }

func who(role authz.Role) (authz.Principal, events.Meta) {
	p := authz.Principal{UserID: uuid.NewString(), Role: role}
	return p, events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: p.UserID}}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var e *handlers.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error = %v, want %s", err, code)
	}
}

// services is a registry and a tracking service on a fresh event store,
// and a context that ends with the test (at most a minute).
func services(t *testing.T) (context.Context, *registry.Service, *tracking.Service) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	store := testnats.Store(t)
	reg := registry.NewService(store, anyUser, nil, nil)
	return ctx, reg, tracking.NewService(store, reg, nil)
}

func TestTrackingService(t *testing.T) {
	t.Parallel()
	ctx, reg, svc := services(t)

	owner, om := who(authz.RoleMember)
	ps, _, err := reg.CreateProject(ctx, om, owner, "Tracking", "")
	if err != nil {
		t.Fatal(err)
	}
	viewer, vm := who(authz.RoleMember)
	if _, _, err := reg.SetMember(ctx, om, owner, ps.Slug, viewer.UserID, authz.ProjectViewer); err != nil {
		t.Fatal(err)
	}
	stranger, sm := who(authz.RoleMember)

	x, seq, err := svc.CreateExperiment(ctx, om, owner, ps.Slug, tracking.CreateExperiment{Name: "baseline", Tags: map[string]string{"team": "a"}})
	if err != nil || seq == 0 || x.Name != "baseline" || x.ProjectID != ps.ID || x.Tags["team"] != "a" {
		t.Fatalf("create experiment = %+v, %d, %v", x, seq, err)
	}
	_, _, err = svc.CreateExperiment(ctx, om, owner, ps.ID, tracking.CreateExperiment{Name: "baseline"})
	wantCode(t, err, "experiment-exists")
	_, _, err = svc.CreateExperiment(ctx, vm, viewer, ps.Slug, tracking.CreateExperiment{Name: "viewer's"})
	wantCode(t, err, "forbidden")
	_, _, err = svc.CreateExperiment(ctx, sm, stranger, ps.Slug, tracking.CreateExperiment{Name: "stranger's"})
	wantCode(t, err, "not-found")
	if _, err := svc.Experiment(ctx, stranger, ps.Slug, x.ID); err == nil {
		t.Fatal("a stranger reads the experiment")
	}

	// Rename frees the old name.
	if x, _, err = svc.RenameExperiment(ctx, om, owner, ps.Slug, x.ID, "baseline v2"); err != nil || x.Name != "baseline v2" {
		t.Fatalf("rename = %+v, %v", x, err)
	}
	if _, _, err := svc.CreateExperiment(ctx, om, owner, ps.Slug, tracking.CreateExperiment{Name: "baseline"}); err != nil {
		t.Fatalf("the old name is not free after the rename: %v", err)
	}

	r, _, err := svc.CreateRun(ctx, om, owner, ps.Slug, x.ID, tracking.CreateRun{Name: "first", StartTime: 1_700_000_000_000})
	if err != nil || r.Name != "first" || r.Tags[tracking.RunNameTag] != "first" || r.Status != tracking.StatusRunning || r.UserID != owner.UserID {
		t.Fatalf("create run = %+v, %v", r, err)
	}
	params := []events.Param{{Key: "lr", Value: "0.1"}, {Key: "depth", Value: "6"}}
	if r, _, err = svc.LogParams(ctx, om, owner, ps.Slug, r.ID, params); err != nil || r.Params["lr"] != "0.1" {
		t.Fatalf("log params = %+v, %v", r, err)
	}
	if _, seq, err := svc.LogParams(ctx, om, owner, ps.Slug, r.ID, params[:1]); err != nil || seq != 0 {
		t.Fatalf("the same param again = %d, %v; want a no-op", seq, err)
	}
	_, _, err = svc.LogParams(ctx, om, owner, ps.Slug, r.ID, []events.Param{{Key: "lr", Value: "0.2"}})
	wantCode(t, err, "param-overwrite")
	_, _, err = svc.LogParams(ctx, vm, viewer, ps.Slug, r.ID, []events.Param{{Key: "x", Value: "1"}})
	wantCode(t, err, "forbidden")

	end := int64(1_700_000_060_000)
	if r, _, err = svc.UpdateRun(ctx, om, owner, ps.Slug, r.ID, tracking.UpdateRun{Status: tracking.StatusFinished, EndTime: &end}); err != nil ||
		r.Status != tracking.StatusFinished || r.EndTime == nil || *r.EndTime != end {
		t.Fatalf("finish = %+v, %v", r, err)
	}

	// A deleted experiment takes no runs; a deleted run takes no writes.
	if _, _, err := svc.DeleteRun(ctx, om, owner, ps.Slug, r.ID, true); err != nil {
		t.Fatal(err)
	}
	_, _, err = svc.SetRunTags(ctx, om, owner, ps.Slug, r.ID, map[string]string{"k": "v"})
	wantCode(t, err, "run-deleted")
	if _, _, err := svc.DeleteExperiment(ctx, om, owner, ps.Slug, x.ID, true); err != nil {
		t.Fatal(err)
	}
	_, _, err = svc.CreateRun(ctx, om, owner, ps.Slug, x.ID, tracking.CreateRun{})
	wantCode(t, err, "experiment-deleted")
	if _, _, err := svc.DeleteExperiment(ctx, om, owner, ps.Slug, x.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.CreateRun(ctx, om, owner, ps.Slug, x.ID, tracking.CreateRun{}); err != nil {
		t.Fatalf("a run in the restored experiment: %v", err)
	}

	// A run is found only in its own project.
	other, _, err := reg.CreateProject(ctx, sm, stranger, "Elsewhere", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Run(ctx, stranger, other.Slug, r.ID); err == nil {
		t.Fatal("a run is visible through another project")
	}
	// An Idempotency-Key retry answers with the run it created.
	km := om
	km.IdempotencyKey, km.Fingerprint = "run-key", "fp"
	r1, s1, err := svc.CreateRun(ctx, km, owner, ps.Slug, x.ID, tracking.CreateRun{Name: "keyed"})
	if err != nil {
		t.Fatal(err)
	}
	r2, s2, err := svc.CreateRun(ctx, km, owner, ps.Slug, x.ID, tracking.CreateRun{Name: "keyed"})
	if err != nil || r2.ID != r1.ID || s2 != s1 {
		t.Fatalf("retried run = %s at %d (%v), first %s at %d", r2.ID, s2, err, r1.ID, s1)
	}
}

// Metric points go to the run's subject of MAESTRO_METRICS, one message per
// request, after the same checks as every run write.
func TestLogMetrics(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := testnats.Store(t)
	metrics, err := events.OpenMetricsStore(ctx, store.Conn(), events.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.NewService(store, anyUser, nil, nil)
	svc := tracking.NewService(store, reg, nil).WithMetrics(metrics)
	owner, om := who(authz.RoleMember)
	ps, r := projectWithRun(ctx, t, reg, svc, owner, om, "Metrics")
	points := []tracking.Metric{{Key: "loss", Value: 0.5, Step: 1, Timestamp: 1}, {Key: "acc", Value: 0.9, Step: 1, Timestamp: 1},
		{Key: "loss", Value: events.MetricValue(math.NaN()), Step: 2, Timestamp: 2}}
	seq, err := svc.LogMetrics(ctx, om, owner, ps.Slug, r.ID, points)
	if err != nil || seq != 1 {
		t.Fatalf("log metrics = %d, %v", seq, err)
	}
	stored, _, err := metrics.Load(ctx, events.MetricsSubject(r.ID), 0)
	if err != nil || len(stored) != 1 || stored[0].Type != events.MetricsLogged {
		t.Fatalf("stored = %+v, %v", stored, err)
	}
	var d events.MetricsLoggedData
	if err := stored[0].Decode(&d); err != nil {
		t.Fatal(err)
	}
	if len(d.Metrics["loss"]) != 2 || !math.IsNaN(float64(d.Metrics["loss"][1].Value)) || d.Metrics["acc"][0].Value != 0.9 || d.ProjectID != ps.ID {
		t.Fatalf("stored points = %+v", d)
	}
	// A refused point logs nothing; a deleted run takes none.
	_, err = svc.LogMetrics(ctx, om, owner, ps.Slug, r.ID, []tracking.Metric{{Key: "ok", Value: 1}, {Key: "../bad", Value: 1}})
	wantCode(t, err, "validation-failed")
	if last, _ := metrics.LastSequence(ctx); last != 1 {
		t.Fatalf("a refused request appended: last sequence %d", last)
	}
	// A retried request (same Idempotency-Key; its first answer lost) gets
	// the stored outcome, not a second copy of the points.
	km := om
	km.IdempotencyKey, km.Fingerprint = "points-1", "fp"
	first, err := svc.LogMetrics(ctx, km, owner, ps.Slug, r.ID, points)
	if err != nil {
		t.Fatal(err)
	}
	km.PriorAttempt = time.Now()
	if again, err := svc.LogMetrics(ctx, km, owner, ps.Slug, r.ID, points); err != nil || again != first {
		t.Fatalf("retry = %d, %v; first %d", again, err, first)
	}
	if last, _ := metrics.LastSequence(ctx); last != first {
		t.Fatalf("the retry appended: last %d, first %d", last, first)
	}
	// The latest value per key, folded from the events (what a promotion
	// gate sees): by step, then timestamp, then value, NaN above numbers,
	// whatever order the requests came in.
	if _, err := svc.LogMetrics(ctx, om, owner, ps.Slug, r.ID, []tracking.Metric{{Key: "acc", Value: 0.7, Step: 1, Timestamp: 0},
		{Key: "acc", Value: 0.8, Step: 1, Timestamp: 5}, {Key: "f1", Value: 0.3, Step: 9, Timestamp: 9}, {Key: "f1", Value: 0.4, Step: 9, Timestamp: 9}}); err != nil {
		t.Fatal(err)
	}
	latest, err := svc.LatestMetrics(ctx, strings.ToUpper(r.ID))
	if err != nil || len(latest) != 3 || !math.IsNaN(latest["loss"]) || latest["acc"] != 0.8 || latest["f1"] != 0.4 {
		t.Fatalf("latest metrics = %v, %v; want loss NaN (step 2), acc 0.8 (later timestamp), f1 0.4 (higher value)", latest, err)
	}
	// One point per request, more requests than one batched read holds.
	for i := range events.ScanBatch + 100 {
		if _, err := svc.LogMetrics(ctx, om, owner, ps.Slug, r.ID, []tracking.Metric{{Key: "stepwise", Value: events.MetricValue(i), Step: int64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if latest, err := svc.LatestMetrics(ctx, r.ID); err != nil || latest["stepwise"] != float64(events.ScanBatch+99) || latest["acc"] != 0.8 {
		t.Fatalf("latest metrics over %d requests = stepwise %v, acc %v (%v)", events.ScanBatch+100, latest["stepwise"], latest["acc"], err)
	}
	if none, err := svc.LatestMetrics(ctx, "not-a-run"); err != nil || len(none) != 0 {
		t.Fatalf("latest metrics of no run = %v, %v", none, err)
	}
	if _, _, err := svc.DeleteRun(ctx, om, owner, ps.Slug, r.ID, true); err != nil {
		t.Fatal(err)
	}
	_, err = svc.LogMetrics(ctx, om, owner, ps.Slug, r.ID, points)
	wantCode(t, err, "run-deleted")
	stranger, sm := who(authz.RoleMember)
	_, err = svc.LogMetrics(ctx, sm, stranger, ps.Slug, r.ID, points)
	wantCode(t, err, "not-found")
}
