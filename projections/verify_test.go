package projections

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// verifyFixture is every projection's live runners over a representative
// history: the seeded users, sessions, tokens, experiments and runs, a
// project with a model and versions, metric requests (several merging
// into chunks), and poison events each projection quarantines.
type verifyFixture struct {
	f       *fixture
	metrics *events.Store
	run     string
	log     func(map[string][]events.MetricPoint) uint64
	stops   []func()
}

func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	f, ms, run, log := metricsFixture(t)
	vf := &verifyFixture{f: f, metrics: ms, run: run, log: log}
	cfg := testRunnerConfig()
	for _, p := range All() {
		vf.stops = append(vf.stops, start(t, NewRunner(f.pool, f.store, p, cfg)))
	}
	vf.stops = append(vf.stops, start(t, NewRunner(f.pool, ms, Metrics{}, cfg)))
	f.seed(t, 6)
	pid, mid, owner := uuid.NewString(), uuid.NewString(), uuid.NewString()
	f.append(t, base, [3]any{events.Subject(events.AggProject, pid), events.ProjectCreated,
		events.ProjectCreatedData{ProjectID: pid, Slug: "p", Name: "P", OwnerID: owner}})
	f.append(t, base, [3]any{events.Subject(events.AggModel, mid), events.ModelCreated,
		events.ModelCreatedData{ModelID: mid, ProjectID: pid, Name: "m", Tags: map[string]string{"a": "b"}}})
	for v := 1; v <= 2; v++ {
		f.append(t, base, [3]any{events.Subject(events.AggModel, mid), events.ModelVersionRegistered,
			events.ModelVersionRegisteredData{ModelID: mid, Version: v, Source: "s3://x", Metrics: map[string]float64{"auc": 0.9}}})
	}
	// Poison: a run status the runs table refuses, a second job
	// submission of one id (both quarantined by their projections).
	f.appendRaw(t, events.Subject(events.AggJob, "not-a-uuid"), events.JobSubmitted,
		fmt.Sprintf(`{"job_id":"not-a-uuid","project_id":%q,"experiment_id":%q,"run_id":%q,"name":"n","command":["x"],"timeout_ms":1,"max_retries":0,"submitted_by":"u"}`,
			pid, uuid.NewString(), uuid.NewString()))
	for i := range 5 {
		log(map[string][]events.MetricPoint{"loss": {{Value: events.MetricValue(float64(i)), Step: int64(i), Timestamp: 1}},
			"acc": {{Value: 0.5, Step: 1, Timestamp: int64(i)}, {Value: 0.6, Step: 0, Timestamp: int64(i)}}})
	}
	e, err := events.New(events.Meta{Actor: events.SystemActor, Time: base}, events.MetricsSubject(run), events.MetricsLogged, 0,
		[]byte(`{"run_id":"not-a-uuid","metrics":{"k":[[1,2,3]]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Append(testCtx(t), events.Append{Event: e, Expect: events.Any}); err != nil {
		t.Fatal(err)
	}
	vf.sync(t)
	return vf
}

// sync waits for every live projection to reach both streams' heads.
func (vf *verifyFixture) sync(t *testing.T) {
	t.Helper()
	last := vf.f.lastSeq(t)
	for _, p := range All() {
		waitCaughtUp(t, vf.f.pool, last, p.Name())
	}
	mlast, err := vf.metrics.LastSequence(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, vf.f.pool, mlast, "metrics")
}

func (vf *verifyFixture) verify(t *testing.T) *VerifyResult {
	t.Helper()
	res, err := Verify(testCtx(t), vf.f.pool, VerifyConfig{Events: vf.f.store, Metrics: vf.metrics, LagTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := vf.f.pool.QueryRow(testCtx(t), "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'maestro_verify_%'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d scratch schemas left behind (%v)", n, err)
	}
	return res
}

func exec(t *testing.T, vf *verifyFixture, sql string) {
	t.Helper()
	tag, err := vf.f.pool.Exec(testCtx(t), sql)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("%s: %v rows, %v", sql, tag.RowsAffected(), err)
	}
}

func TestVerifyFindsEveryCorruption(t *testing.T) {
	t.Parallel()
	vf := newVerifyFixture(t)
	ctx := testCtx(t)
	var quarantined int
	if err := vf.f.pool.QueryRow(ctx, "SELECT count(*) FROM projection_quarantine").Scan(&quarantined); err != nil || quarantined < 2 {
		t.Fatalf("the fixture quarantined %d events (%v), want some of jobs and metrics", quarantined, err)
	}
	// The live runners stop (caught up), so no notification below can be
	// theirs: the scratch runners must send none either.
	for _, stop := range vf.stops {
		stop()
	}
	listen, err := vf.f.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Release()
	if _, err := listen.Exec(ctx, "LISTEN "+NotifyChannel+"; LISTEN "+InvalidateChannel); err != nil {
		t.Fatal(err)
	}

	res := vf.verify(t)
	if !res.Equal() || res.Projections != len(All())+len(Telemetry()) || res.Rows == 0 {
		t.Fatalf("verify of an intact read model: %+v", res)
	}
	// Notifications arrive in commit order: anything the scratch runners
	// sent comes before this sentinel.
	if _, err := vf.f.pool.Exec(ctx, "SELECT pg_notify($1, 'sentinel')", NotifyChannel); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := listen.Conn().WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Payload == "sentinel" {
			break
		}
		t.Fatalf("a scratch runner notified %s: %q", n.Channel, n.Payload)
	}

	var user, runID, tagRun string
	if err := vf.f.pool.QueryRow(ctx, "SELECT id::text FROM users ORDER BY id LIMIT 1").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if err := vf.f.pool.QueryRow(ctx, "SELECT run_id::text FROM run_params WHERE key = 'lr' ORDER BY run_id LIMIT 1").Scan(&runID); err != nil {
		t.Fatal(err)
	}
	if err := vf.f.pool.QueryRow(ctx, "SELECT run_id::text FROM run_tags ORDER BY run_id LIMIT 1").Scan(&tagRun); err != nil {
		t.Fatal(err)
	}
	exec(t, vf, "UPDATE users SET name = 'Mallory' WHERE id = '"+user+"'")
	exec(t, vf, "DELETE FROM run_params WHERE key = 'lr' AND run_id = '"+runID+"'")
	exec(t, vf, "INSERT INTO run_tags (run_id, key, value) VALUES ('"+tagRun+"', 'extra', 'x')")
	exec(t, vf, "UPDATE latest_metrics SET value = 42 WHERE key = 'loss'")
	exec(t, vf, "UPDATE metric_chunks SET points = overlay(points PLACING '\\x4045000000000000'::bytea FROM 17 FOR 8) WHERE key = 'loss' AND seq = 1")
	// The failure's wording and time are not compared (a new build words
	// it otherwise); its event is.
	exec(t, vf, "UPDATE projection_quarantine SET error = 'edited', quarantined_at = now() - interval '1 day', type = 'maestro.job.edited.v1' WHERE projection = 'jobs'")

	res = vf.verify(t)
	type want struct{ projection, table, key, column, live, rebuilt string }
	wants := []want{
		{"users", "users", "id=" + user, "name", "Mallory", ""},
		{"runs", "run_params", "run_id=" + runID + ", key=lr", "(row)", "(missing)", "(present)"},
		{"runs", "run_tags", "run_id=" + tagRun + ", key=extra", "(row)", "(present)", "(missing)"},
		{"metrics", "latest_metrics", "run_id=" + vf.run + ", key=loss", "value", "42", "4"},
		{"metrics", "metric_chunks", "run_id=" + vf.run + ", key=loss, point=1", "point", "step=0 ts=1 value=42", "step=0 ts=1 value=0"},
		{"jobs", "projection_quarantine", "projection=jobs, seq=", "type", "maestro.job.edited.v1", ""},
	}
	if len(res.Diffs) != len(wants) {
		t.Fatalf("%d tables differ, want %d: %+v", len(res.Diffs), len(wants), res.Diffs)
	}
	for _, w := range wants {
		found := false
		for _, d := range res.Diffs {
			if d.Projection != w.projection || d.Table != w.table {
				continue
			}
			if d.Rows != 1 || len(d.Shown) != 1 {
				t.Fatalf("%s.%s: %d rows differ, shown %+v; want one", w.projection, w.table, d.Rows, d.Shown)
			}
			s := d.Shown[0]
			found = strings.HasPrefix(s.Key, w.key) && s.Column == w.column && s.Live == w.live &&
				(w.rebuilt == "" || s.Rebuilt == w.rebuilt) && s.Rebuilt != s.Live
			if !found {
				t.Fatalf("%s.%s: difference %+v, want %+v", w.projection, w.table, s, w)
			}
		}
		if !found {
			t.Fatalf("no difference reported in %s.%s: %+v", w.projection, w.table, res.Diffs)
		}
	}
}

// Verify while both streams keep growing and the live runners keep
// applying: no difference may show, and the comparison must reach events
// appended after it started.
func TestVerifyUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	vf := newVerifyFixture(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			vf.f.seed(t, 1)
			vf.log(map[string][]events.MetricPoint{"loss": {{Value: 1, Step: int64(100 + i), Timestamp: 5}}})
		}
	}()
	for range 3 {
		res := vf.verify(t)
		if !res.Equal() {
			cancel()
			wg.Wait()
			t.Fatalf("differences under concurrent writes: %+v", res.Diffs)
		}
	}
	cancel()
	wg.Wait()
}

// The scratch schema is dropped when Verify fails too (here: the live
// projection never catches up, as with no worker running).
func TestVerifyDropsScratchOnError(t *testing.T) {
	t.Parallel()
	vf := newVerifyFixture(t)
	for _, stop := range vf.stops {
		stop()
	}
	vf.f.seed(t, 1) // the stopped live projections stay behind
	_, err := Verify(testCtx(t), vf.f.pool, VerifyConfig{Events: vf.f.store, Metrics: vf.metrics, LagTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "behind sequence") {
		t.Fatalf("verify against stopped runners: %v", err)
	}
	var n int
	if err := vf.f.pool.QueryRow(testCtx(t), "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'maestro_verify_%'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d scratch schemas left behind (%v)", n, err)
	}
}
