package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testnats"
	"github.com/maestro-ml/maestro/internal/testpg"
)

// fixture is a real event store (embedded NATS) and a fresh, migrated
// Postgres database.
type fixture struct {
	store *events.Store
	pool  *pgxpool.Pool
	// want is the users the seeded events should project to, by id.
	mu   sync.Mutex
	want map[string]wantUser
	n    int // users seeded so far
}

type wantUser struct {
	role   string
	active bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{store: testnats.Store(t), pool: newDB(t), want: map[string]wantUser{}}
}

func newDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := testCtx(t)
	cfg, err := pgxpool.ParseConfig(testpg.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	// Each active runner pins a connection for its advisory lock; size the
	// pool like the platform does so runners never starve each other.
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// queryCtx bounds one helper query; helpers called in polling loops must
// not pile up t.Cleanup registrations.
func queryCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

var base = time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC)

func (f *fixture) append(t *testing.T, at time.Time, changes ...[3]any) uint64 {
	t.Helper()
	batch := make([]events.Append, 0, len(changes))
	for i, c := range changes {
		e, err := events.New(events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: "seed"}, Time: at},
			c[0].(string), c[1].(string), i, c[2])
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, events.Append{Event: e, Expect: events.Any})
	}
	ctx, cancel := queryCtx()
	defer cancel()
	seq, err := f.store.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// seed appends the life of n more users: registration (an atomic batch with
// the e-mail reservation), a login, a refresh, and for some of them a role
// change, a logout, a failed login or a deactivation. It returns the
// stream's last sequence.
func (f *fixture) seed(t *testing.T, n int) uint64 {
	t.Helper()
	var last uint64
	for range n {
		f.mu.Lock()
		i := f.n
		f.n++
		f.mu.Unlock()
		at := base.Add(time.Duration(i) * time.Minute)
		id, sid := uuid.NewString(), uuid.NewString()
		email := fmt.Sprintf("user%d@example.com", i)
		userSubj, sessSubj := events.Subject(events.AggUser, id), events.Subject(events.AggSession, sid)
		w := wantUser{role: "viewer", active: true}
		f.append(t, at,
			[3]any{events.ReservationSubject(events.AggEmail, email), events.EmailReserved, events.EmailReservedData{Email: email, UserID: id}},
			[3]any{userSubj, events.UserRegistered, events.UserRegisteredData{UserID: id, Email: email, Name: fmt.Sprint("User ", i),
				Role: "viewer", PasswordHash: "secret-hash", Source: "test"}})
		if i%2 == 1 {
			f.append(t, at.Add(time.Second), [3]any{userSubj, events.UserLoginFailed,
				events.UserLoginFailedData{UserID: id, ClientIP: "10.0.0.1", Reason: "wrong_password"}})
		}
		f.append(t, at.Add(2*time.Second), [3]any{sessSubj, events.SessionStarted,
			events.SessionStartedData{SessionID: sid, UserID: id, ClientIP: "10.0.0.2", UserAgent: "test"}})
		last = f.append(t, at.Add(3*time.Second), [3]any{sessSubj, events.SessionRefreshed,
			events.SessionRefreshedData{SessionID: sid, UserID: id, Generation: 2}})
		if i%2 == 0 {
			tid := uuid.NewString()
			tokSubj := events.Subject(events.AggToken, tid)
			f.append(t, at.Add(3*time.Second), [3]any{tokSubj, events.TokenCreated, events.TokenCreatedData{TokenID: tid, UserID: id,
				Name: "ci", Prefix: "mae_AAAAAAAA", Hash: fmt.Sprintf("%064x", i), ExpiresAt: at.Add(time.Hour).Format(time.RFC3339Nano)}})
			for j := range 3 {
				last = f.append(t, at.Add(3*time.Second), [3]any{tokSubj, events.TokenUsed,
					events.TokenUsedData{TokenID: tid, UserID: id, ClientIP: fmt.Sprintf("10.0.1.%d", j%2), NewAddress: j < 2}})
			}
			if i%4 == 0 {
				last = f.append(t, at.Add(3*time.Second), [3]any{tokSubj, events.TokenRevoked, events.TokenRevokedData{TokenID: tid, UserID: id, Reason: "revoked"}})
			}
		}
		if i%3 == 1 {
			// A user's experiment with a run: params, tags, updates, deletion.
			xid, rid, pid := uuid.NewString(), uuid.NewString(), uuid.NewString()
			xSubj, rSubj := events.Subject(events.AggExperiment, xid), events.Subject(events.AggRun, rid)
			f.append(t, at.Add(3*time.Second), [3]any{xSubj, events.ExperimentCreated, events.ExperimentCreatedData{ExperimentID: xid,
				ProjectID: pid, Name: fmt.Sprint("exp ", i), Tags: map[string]string{"team": "a"}}})
			f.append(t, at.Add(3*time.Second), [3]any{xSubj, events.ExperimentTagsSet, events.TagsSetData{ID: xid, Tags: map[string]string{"goal": "auc"}}})
			f.append(t, at.Add(3*time.Second), [3]any{xSubj, events.ExperimentRenamed, events.ExperimentRenamedData{ExperimentID: xid,
				ProjectID: pid, Name: fmt.Sprint("renamed ", i), PreviousName: fmt.Sprint("exp ", i)}})
			f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunCreated, events.RunCreatedData{RunID: rid, ExperimentID: xid,
				ProjectID: pid, Name: "r", UserID: id, StartTime: at.UnixMilli(), Tags: map[string]string{"mlflow.runName": "r"}}})
			f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunParamsLogged, events.RunParamsLoggedData{RunID: rid,
				Params: []events.Param{{Key: "lr", Value: "0.1"}, {Key: "depth", Value: "6"}}}})
			f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunTagsSet, events.TagsSetData{ID: rid, Tags: map[string]string{"k": "v", "gone": "x"}}})
			f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunTagDeleted, events.TagDeletedData{ID: rid, Key: "gone"}})
			for j, d := range []string{"a", "b"} { // recorded, then replaced
				f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunArtifactRecorded, events.RunArtifactRecordedData{RunID: rid,
					Path: "model/weights.bin", Digest: "sha256:" + strings.Repeat(d, 64), Size: int64(j + 1), ContentType: "application/octet-stream"}})
			}
			f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunInputsLogged, events.RunInputsLoggedData{RunID: rid,
				Inputs: []events.DatasetInput{{Name: "train", Digest: "d1", SourceType: "local", Source: "{}", Tags: []events.Param{{Key: "mlflow.data.context", Value: "training"}}},
					{Name: "eval", Digest: "d2", SourceType: "local", Source: "{}", Schema: `{"a": 1}`}}}})
			end := at.Add(time.Minute).UnixMilli()
			last = f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunUpdated, events.RunUpdatedData{RunID: rid, Status: "FINISHED", EndTime: &end}})
			if i%2 == 0 {
				f.append(t, at.Add(3*time.Second), [3]any{rSubj, events.RunDeleted, events.RunLifecycleData{RunID: rid, ExperimentID: xid}})
				last = f.append(t, at.Add(3*time.Second), [3]any{xSubj, events.ExperimentDeleted, events.ExperimentLifecycleData{ExperimentID: xid, ProjectID: pid}})
			}
		}
		if i%3 == 0 {
			w.role = "member"
			last = f.append(t, at.Add(4*time.Second), [3]any{userSubj, events.UserRoleChanged,
				events.UserRoleChangedData{UserID: id, From: "viewer", To: "member"}})
		}
		if i%5 == 2 {
			last = f.append(t, at.Add(5*time.Second), [3]any{sessSubj, events.SessionRevoked,
				events.SessionRevokedData{SessionID: sid, UserID: id, Reason: events.RevokedLogout}})
		}
		if i%4 == 1 {
			w.active = false
			last = f.append(t, at.Add(6*time.Second), [3]any{userSubj, events.UserDeactivated, events.UserActivationData{UserID: id}})
		}
		f.mu.Lock()
		f.want[id] = w
		f.mu.Unlock()
	}
	return last
}

func (f *fixture) lastSeq(t *testing.T) uint64 {
	t.Helper()
	n, err := f.store.LastSequence(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) allEvents(t *testing.T) []events.Envelope {
	t.Helper()
	last := f.lastSeq(t)
	out := make([]events.Envelope, 0, last)
	ctx := testCtx(t)
	for seq := uint64(1); seq <= last; seq++ {
		e, err := f.store.Get(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func checkpointOf(t *testing.T, pool *pgxpool.Pool, name string) uint64 {
	t.Helper()
	ctx, cancel := queryCtx()
	defer cancel()
	var cp int64
	if err := pool.QueryRow(ctx, "SELECT COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = $1), 0)", name).Scan(&cp); err != nil {
		t.Fatal(err)
	}
	return uint64(cp)
}

// dump returns a table's rows as JSON text in key order.
func dump(t *testing.T, pool *pgxpool.Pool, table string) []string {
	t.Helper()
	key := map[string]string{"users": "id", "sessions": "id", "audit_entries": "seq"}[table]
	return dumpOrdered(t, pool, table, key)
}

// dumpAll is the identity, token and tracking read models (the ones the
// seed fills) in a stable order.
func dumpAll(t *testing.T, pool *pgxpool.Pool) map[string][]string {
	t.Helper()
	out := map[string][]string{"users": dump(t, pool, "users"), "sessions": dump(t, pool, "sessions"),
		"audit_entries": dump(t, pool, "audit_entries")}
	for table, order := range map[string]string{"api_tokens": "id", "experiments": "id", "runs": "id",
		"run_params": "run_id, key", "run_tags": "run_id, key", "run_artifacts": "run_id, path", "run_inputs": "run_id, name, digest"} {
		out[table] = dumpOrdered(t, pool, table, order)
	}
	return out
}

func sameDump(t *testing.T, got, want map[string][]string) {
	t.Helper()
	for table, w := range want {
		g := got[table]
		if len(g) != len(w) {
			t.Fatalf("%s: %d rows, want %d", table, len(g), len(w))
		}
		for i := range w {
			if g[i] != w[i] {
				t.Fatalf("%s row %d differs:\n got  %s\n want %s", table, i, g[i], w[i])
			}
		}
	}
}

// poll waits until cond holds or the deadline passes.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitCaughtUp(t *testing.T, pool *pgxpool.Pool, last uint64, names ...string) {
	t.Helper()
	for _, n := range names {
		poll(t, time.Minute, fmt.Sprintf("projection %s to reach %d", n, last), func() bool {
			return checkpointOf(t, pool, n) >= last
		})
	}
}

func testRunnerConfig() RunnerConfig {
	return RunnerConfig{BatchSize: 7, Standby: 20 * time.Millisecond, Idle: 50 * time.Millisecond}
}

// start runs r until the test ends or the returned stop is called.
func start(t *testing.T, r *Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("runner %s: %v", r.p.Name(), err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// checkExactlyOnce asserts the projections hold every event up to last
// exactly once: one audit entry per stream sequence (same event id), and
// users and sessions as the seeded history says.
func (f *fixture) checkExactlyOnce(t *testing.T, pool *pgxpool.Pool, last uint64) {
	t.Helper()
	ctx := testCtx(t)
	var count, minSeq, maxSeq int64
	if err := pool.QueryRow(ctx, "SELECT count(*), COALESCE(min(seq), 0), COALESCE(max(seq), 0) FROM audit_entries").
		Scan(&count, &minSeq, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if uint64(count) != last || minSeq != 1 || uint64(maxSeq) != last {
		t.Fatalf("audit_entries: %d rows, seq %d..%d; want %d rows, 1..%d", count, minSeq, maxSeq, last, last)
	}
	ids := map[uint64]string{}
	rows, err := pool.Query(ctx, "SELECT seq, event_id FROM audit_entries")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var seq int64
		var id string
		if err := rows.Scan(&seq, &id); err != nil {
			t.Fatal(err)
		}
		ids[uint64(seq)] = id
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, e := range f.allEvents(t)[:last] {
		if ids[e.Sequence] != e.ID {
			t.Fatalf("audit entry %d has event id %q, want %q", e.Sequence, ids[e.Sequence], e.ID)
		}
	}
	var secrets int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM audit_entries WHERE data ? 'password_hash'").Scan(&secrets); err != nil {
		t.Fatal(err)
	}
	if secrets != 0 {
		t.Fatalf("%d audit entries carry a password hash", secrets)
	}

	f.mu.Lock()
	want := maps.Clone(f.want)
	f.mu.Unlock()
	got := map[string]wantUser{}
	urows, err := pool.Query(ctx, "SELECT id::text, role, active FROM users")
	if err != nil {
		t.Fatal(err)
	}
	for urows.Next() {
		var id string
		var w wantUser
		if err := urows.Scan(&id, &w.role, &w.active); err != nil {
			t.Fatal(err)
		}
		got[id] = w
	}
	if err := urows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("users: %d rows, want %d", len(got), len(want))
	}
	for id, w := range want {
		if got[id] != w {
			t.Fatalf("user %s = %+v, want %+v", id, got[id], w)
		}
	}
	var sessions, revoked, gen2 int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(revoked_at), count(*) FILTER (WHERE generation = 2) FROM sessions`).
		Scan(&sessions, &revoked, &gen2); err != nil {
		t.Fatal(err)
	}
	wantRevoked := 0
	for i := range f.n {
		if i%5 == 2 || i%4 == 1 {
			wantRevoked++
		}
	}
	if sessions != f.n || gen2 != f.n || revoked != wantRevoked {
		t.Fatalf("sessions: %d rows (%d at generation 2), %d revoked; want %d, %d, %d", sessions, gen2, revoked, f.n, f.n, wantRevoked)
	}
}

// (a) Redelivered events are skipped: the same batch applied twice leaves
// tables and checkpoint untouched, an overlapping batch applies only the new
// part, and a batch based on a stale checkpoint is refused.
func TestApplyBatchEffectivelyOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	last := f.seed(t, 12)
	evs := f.allEvents(t)
	ctx := testCtx(t)
	n1, n2 := 10, 25
	for _, p := range All() {
		t.Run(p.Name(), func(t *testing.T) {
			r := NewRunner(f.pool, f.store, p, testRunnerConfig())
			if cp, err := r.checkpoint(ctx); err != nil || cp != 0 {
				t.Fatalf("initial checkpoint %d, %v", cp, err)
			}
			cp, err := r.applyBatch(ctx, 0, slices.Clone(evs[:n1]))
			if err != nil {
				t.Fatal(err)
			}
			if cp != evs[n1-1].Sequence {
				t.Fatalf("checkpoint %d after first batch, want %d", cp, evs[n1-1].Sequence)
			}
			before := dumpAll(t, f.pool)
			var at1 time.Time
			if err := f.pool.QueryRow(ctx, "SELECT updated_at FROM projection_checkpoints WHERE name = $1", p.Name()).Scan(&at1); err != nil {
				t.Fatal(err)
			}

			// Redelivery of the whole batch.
			again, err := r.applyBatch(ctx, cp, slices.Clone(evs[:n1]))
			if err != nil {
				t.Fatalf("redelivery: %v", err)
			}
			if again != cp || checkpointOf(t, f.pool, p.Name()) != cp {
				t.Fatalf("redelivery moved the checkpoint to %d/%d, want %d", again, checkpointOf(t, f.pool, p.Name()), cp)
			}
			var at2 time.Time
			if err := f.pool.QueryRow(ctx, "SELECT updated_at FROM projection_checkpoints WHERE name = $1", p.Name()).Scan(&at2); err != nil {
				t.Fatal(err)
			}
			if !at1.Equal(at2) {
				t.Fatal("redelivery rewrote the checkpoint row")
			}
			sameDump(t, dumpAll(t, f.pool), before)

			// Overlapping redelivery: only the new tail is applied.
			cp2, err := r.applyBatch(ctx, cp, slices.Clone(evs[n1/2:n2]))
			if err != nil {
				t.Fatalf("overlapping batch: %v", err)
			}
			if cp2 != evs[n2-1].Sequence {
				t.Fatalf("checkpoint %d after overlapping batch, want %d", cp2, evs[n2-1].Sequence)
			}

			// A batch decided on a stale checkpoint (another instance moved
			// it) is refused and changes nothing.
			before = dumpAll(t, f.pool)
			if _, err := r.applyBatch(ctx, cp, slices.Clone(evs[n2:])); !errors.Is(err, errRestart) {
				t.Fatalf("stale checkpoint: err = %v, want errRestart", err)
			}
			sameDump(t, dumpAll(t, f.pool), before)
			if got := checkpointOf(t, f.pool, p.Name()); got != cp2 {
				t.Fatalf("stale batch moved the checkpoint to %d", got)
			}

			end, err := r.applyBatch(ctx, cp2, slices.Clone(evs[n2:]))
			if err != nil || end != last {
				t.Fatalf("rest: checkpoint %d, %v; want %d", end, err, last)
			}
		})
	}
	f.checkExactlyOnce(t, f.pool, last)
}

// (b) A worker that dies after committing a batch but before acknowledging
// it (and before the next batch) loses nothing and applies nothing twice.
func TestRunnerCrashBetweenCommitAndAck(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	last := f.seed(t, 15)
	ctx := testCtx(t)

	// First workers: killed right after their first commit.
	for _, p := range All() {
		r := NewRunner(f.pool, f.store, p, testRunnerConfig())
		rctx, cancel := context.WithCancel(ctx)
		commits := 0
		r.afterCommit = func(uint64) error {
			commits++
			cancel()
			return errors.New("worker killed between commit and ack")
		}
		if err := r.Run(rctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		cp := checkpointOf(t, f.pool, p.Name())
		// The seed is identity events: projects, models, jobs and promotions handle none of
		// them and pass over all of them in one checkpoint advance.
		passes := p.Name() == "projects" || p.Name() == "models" || p.Name() == "jobs" || p.Name() == "promotions" || p.Name() == "webhooks" || p.Name() == "sweeps"
		if commits != 1 || cp == 0 || (cp >= last) != passes {
			t.Fatalf("%s: %d commits, checkpoint %d of %d; want one partial batch (or, passing over events it does not handle, all)", p.Name(), commits, cp, last)
		}
	}
	var partial int64
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM audit_entries").Scan(&partial); err != nil {
		t.Fatal(err)
	}
	if uint64(partial) != checkpointOf(t, f.pool, "audit") {
		t.Fatalf("audit has %d rows but checkpoint %d", partial, checkpointOf(t, f.pool, "audit"))
	}

	// Next workers crash after every second commit and are restarted by Run
	// itself, while more events keep arriving.
	var crashes atomic.Int64
	for _, p := range All() {
		r := NewRunner(f.pool, f.store, p, testRunnerConfig())
		var n atomic.Int64
		r.afterCommit = func(uint64) error {
			if n.Add(1)%2 == 0 {
				crashes.Add(1)
				return errors.New("worker crashed after commit")
			}
			return nil
		}
		start(t, r)
	}
	last = f.seed(t, 10)
	waitCaughtUp(t, f.pool, last, "users", "sessions", "audit")
	if crashes.Load() == 0 {
		t.Fatal("no crash was injected")
	}

	// A clean worker takes over where they stopped.
	last = f.seed(t, 3)
	for _, p := range All() {
		start(t, NewRunner(f.pool, f.store, p, testRunnerConfig()))
	}
	waitCaughtUp(t, f.pool, last, "users", "sessions", "audit")
	f.checkExactlyOnce(t, f.pool, last)
}

func advisoryLocks(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	ctx, cancel := queryCtx()
	defer cancel()
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// (c) Two runners of one projection: one holds the lock and applies, the
// other stands by and takes over when the first stops.
func TestTwoRunnersOneActive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	last := f.seed(t, 10)
	var commits [2]atomic.Int64
	var stops [2]func()
	for i := range 2 {
		r := NewRunner(f.pool, f.store, Audit{}, testRunnerConfig())
		r.afterCommit = func(uint64) error {
			commits[i].Add(1)
			return nil
		}
		stops[i] = start(t, r)
	}
	waitCaughtUp(t, f.pool, last, "audit")
	// The active runner's session holds two: the projection's and its
	// holder key (which batches probe).
	if n := advisoryLocks(t, f.pool); n != 2 {
		t.Fatalf("%d advisory locks held, want 2 (one active runner)", n)
	}
	active := 0
	if commits[1].Load() > 0 {
		active = 1
	}
	if commits[1-active].Load() != 0 {
		t.Fatalf("both runners applied batches: %d and %d commits", commits[0].Load(), commits[1].Load())
	}
	// More events, still one writer.
	last = f.seed(t, 3)
	waitCaughtUp(t, f.pool, last, "audit")
	if commits[1-active].Load() != 0 {
		t.Fatal("the standby applied batches while the active runner held the lock")
	}
	// The active one stops; the standby takes over.
	stops[active]()
	last = f.seed(t, 5)
	waitCaughtUp(t, f.pool, last, "audit")
	if commits[1-active].Load() == 0 {
		t.Fatal("the standby never took over")
	}
	poll(t, 10*time.Second, "one runner's advisory locks", func() bool { return advisoryLocks(t, f.pool) == 2 })

	// Only audit ran; check it alone.
	var count, maxSeq int64
	if err := f.pool.QueryRow(testCtx(t), "SELECT count(*), max(seq) FROM audit_entries").Scan(&count, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if uint64(count) != last || uint64(maxSeq) != last {
		t.Fatalf("audit_entries: %d rows up to %d, want %d", count, maxSeq, last)
	}
}

// (d) Reset rewinds every projection; running runners notice and rebuild
// tables equal to what they held before, and equal to a from-scratch build
// elsewhere, even when the reset lands in the middle of a catch-up.
func TestResetRebuildsEqualTables(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	last := f.seed(t, 25)
	ctx := testCtx(t)

	ref := newDB(t)
	for _, p := range All() {
		start(t, NewRunner(ref, f.store, p, testRunnerConfig()))
		start(t, NewRunner(f.pool, f.store, p, testRunnerConfig()))
	}
	// Reset while catching up.
	poll(t, time.Minute, "audit to start", func() bool { return checkpointOf(t, f.pool, "audit") > 0 })
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	names := []string{"users", "sessions", "audit", "tokens", "experiments", "runs"} // what the seed fills
	waitCaughtUp(t, ref, last, names...)
	waitCaughtUp(t, f.pool, last, names...)
	want := dumpAll(t, ref)
	sameDump(t, dumpAll(t, f.pool), want)
	f.checkExactlyOnce(t, f.pool, last)

	// Reset when caught up: tables empty at once, then rebuilt identically.
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, last, names...)
	sameDump(t, dumpAll(t, f.pool), want)

	// The projections with no event in the seed catch up too (their
	// runners read past other aggregates' events at an idle tick).
	var all []string
	for _, p := range All() {
		all = append(all, p.Name())
	}
	waitCaughtUp(t, f.pool, last, all...)
	st, err := Statuses(ctx, f.pool, Heads{Events: last})
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != len(All())+len(Telemetry()) {
		t.Fatalf("statuses: %+v", st)
	}
	for _, s := range st {
		want := last
		if s.Stream == "metrics" {
			want = 0 // the seed logs no metrics
		}
		if s.LastSeq != want || s.Lag != 0 {
			t.Fatalf("status %+v, want caught up at %d", s, want)
		}
	}
	st, err = Statuses(ctx, f.pool, Heads{Events: last + 5, Metrics: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if want := map[string]uint64{"events": 5, "metrics": 3}[s.Stream]; s.Lag != want {
			t.Fatalf("status %+v, want lag %d", s, want)
		}
	}
}

// (e) The waiter answers true once the checkpoint reaches the sequence and
// false when its context ends first.
func TestWaiter(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	last := f.seed(t, 3)
	ctx := testCtx(t)
	w := NewWaiter(f.pool)
	runWaiter(t, w)

	short := func(d time.Duration) context.Context {
		c, cancel := context.WithTimeout(ctx, d)
		t.Cleanup(cancel)
		return c
	}
	if w.Wait(short(200*time.Millisecond), last, "audit") {
		t.Fatal("Wait returned true before any runner ran")
	}
	start(t, NewRunner(f.pool, f.store, Audit{}, testRunnerConfig()))
	if !w.Wait(short(30*time.Second), last, "audit") {
		t.Fatalf("Wait(%d) timed out; checkpoint %d", last, checkpointOf(t, f.pool, "audit"))
	}
	if !w.Reached(last, "audit") || w.Reached(last+1, "audit") {
		t.Fatal("Reached disagrees with the checkpoint")
	}
	if w.Wait(short(300*time.Millisecond), last+1, "audit") {
		t.Fatal("Wait for a sequence not yet produced returned true")
	}
	if w.Wait(short(300*time.Millisecond), last, "audit", "users") {
		t.Fatal("Wait returned true though the users projection never ran")
	}

	// A waiter blocked on a future sequence wakes when it is applied.
	got := make(chan bool, 1)
	go func() { got <- w.Wait(short(30*time.Second), last+1, "audit") }()
	next := f.seed(t, 1)
	select {
	case ok := <-got:
		if !ok {
			t.Fatalf("Wait(%d) timed out; checkpoint %d", last+1, checkpointOf(t, f.pool, "audit"))
		}
	case <-ctx.Done():
		t.Fatal("Wait never returned")
	}
	if !w.Wait(short(30*time.Second), next, "audit") {
		t.Fatalf("Wait(%d) timed out", next)
	}
}

// logRecords is a slog handler that keeps every record, so tests can check
// what a runner logged.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logRecords) WithAttrs(as []slog.Attr) slog.Handler { return &withAttrs{l, as} }
func (l *logRecords) WithGroup(string) slog.Handler         { return l }

// withAttrs keeps the attributes added by Logger.With on every record.
type withAttrs struct {
	l  *logRecords
	as []slog.Attr
}

func (w *withAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (w *withAttrs) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(w.as...)
	return w.l.Handle(ctx, r)
}
func (w *withAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{w.l, append(slices.Clone(w.as), as...)}
}
func (w *withAttrs) WithGroup(string) slog.Handler { return w }

// matching returns the records with msg, each as its attributes.
func (l *logRecords) matching(msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if r.Message != msg {
			continue
		}
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		out = append(out, m)
	}
	return out
}

// dumpOrdered returns a table's rows (or a subquery's, aliased) as JSON
// text, ordered by the given columns.
func dumpOrdered(t *testing.T, pool *pgxpool.Pool, table, order string) []string {
	t.Helper()
	ctx, cancel := queryCtx()
	defer cancel()
	rows, err := pool.Query(ctx, fmt.Sprintf("SELECT row_to_json(x)::text FROM %s x ORDER BY %s", table, order))
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dumpModels is the models projection's tables and the quarantine (without
// the time a row was written).
func dumpModels(t *testing.T, pool *pgxpool.Pool) map[string][]string {
	t.Helper()
	return map[string][]string{
		"models":         dumpOrdered(t, pool, "models", "id"),
		"model_versions": dumpOrdered(t, pool, "model_versions", "model_id, version"),
		"quarantine": dumpOrdered(t, pool, "(SELECT projection, seq, event_id, type, subject, sqlstate, error FROM projection_quarantine)",
			"projection, seq"),
	}
}

// appendRaw appends one event whose data is exactly raw, as a client of
// the stream (not the API) could: nothing canonicalised it.
func (f *fixture) appendRaw(t *testing.T, subject, typ, raw string) uint64 {
	t.Helper()
	e, err := events.New(events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: "seed"}, Time: base}, subject, typ, 0, json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := queryCtx()
	defer cancel()
	seq, err := f.store.Append(ctx, events.Append{Event: e, Expect: events.Any})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// (f) Finding 1: an event Postgres cannot store (a lone surrogate or a
// number beyond numeric in a jsonb column, data of the wrong shape, a value
// pgx cannot encode, a duplicate name) is quarantined, the projection goes
// on past it, status reports it, and a rebuild quarantines the same events
// and builds the same tables, whatever the batch size.
func TestPoisonEventsAreQuarantined(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	project, model, twin := uuid.NewString(), uuid.NewString(), uuid.NewString()
	subj := events.Subject(events.AggModel, model)
	f.appendRaw(t, subj, events.ModelCreated, fmt.Sprintf(`{"model_id":%q,"project_id":%q,"name":"m","description":"","tags":{}}`, model, project))
	version := func(n int, signature string) string {
		return fmt.Sprintf(`{"model_id":%q,"version":%d,"description":"","tags":{},"source":"s","signature":%s}`, model, n, signature)
	}
	want := map[uint64]string{} // poison seq → SQLSTATE ("" for errors found before Postgres)
	want[f.appendRaw(t, subj, events.ModelVersionRegistered, version(1, `{"a":"\ud800"}`))] = "22P02"
	f.appendRaw(t, subj, events.ModelVersionRegistered, version(2, `{"a":1}`))
	want[f.appendRaw(t, subj, events.ModelVersionRegistered, version(3, `{"a":1e200000}`))] = "22003"
	want[f.appendRaw(t, subj, events.ModelVersionRegistered, fmt.Sprintf(`{"model_id":%q,"version":"four"}`, model))] = ""
	want[f.appendRaw(t, subj, events.ModelVersionRegistered, version(1<<40, `{}`))] = ""
	want[f.appendRaw(t, events.Subject(events.AggModel, twin), events.ModelCreated,
		fmt.Sprintf(`{"model_id":%q,"project_id":%q,"name":"M","description":"","tags":{}}`, twin, project))] = "23505"
	f.appendRaw(t, subj, events.ModelVersionRegistered, version(5, `{"b":[1,2]}`))
	last := f.seed(t, 2) // other projections' events after the poison

	logs := &logRecords{}
	cfg := testRunnerConfig()
	cfg.Logger = slog.New(logs)
	for _, p := range All() {
		start(t, NewRunner(f.pool, f.store, p, cfg))
	}
	ref := newDB(t)
	one := testRunnerConfig()
	one.BatchSize = 1
	start(t, NewRunner(ref, f.store, Models{}, one))
	waitCaughtUp(t, f.pool, last, "users", "sessions", "audit", "projects", "models")
	waitCaughtUp(t, ref, last, "models")

	var versions []int
	rows, err := f.pool.Query(ctx, "SELECT version FROM model_versions ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	if versions, err = pgx.CollectRows(rows, pgx.RowTo[int]); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(versions, []int{2, 5}) {
		t.Fatalf("model versions %v, want [2 5]: the good events around the poison must be applied", versions)
	}
	got := map[uint64]string{}
	qrows, err := f.pool.Query(ctx, "SELECT seq, sqlstate FROM projection_quarantine WHERE projection = 'models'")
	if err != nil {
		t.Fatal(err)
	}
	for qrows.Next() {
		var seq int64
		var code string
		if err := qrows.Scan(&seq, &code); err != nil {
			t.Fatal(err)
		}
		got[uint64(seq)] = code
	}
	if err := qrows.Err(); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("quarantined %v, want %v", got, want)
	}
	var others int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM projection_quarantine WHERE projection <> 'models'").Scan(&others); err != nil {
		t.Fatal(err)
	}
	if others != 0 {
		t.Fatalf("%d events quarantined outside models; audit and the others store them", others)
	}

	// One log line per quarantined event, naming it without its data.
	lines := logs.matching("projection quarantined an event it cannot store")
	if len(lines) != len(want) {
		t.Fatalf("%d quarantine log lines, want %d: %v", len(lines), len(want), lines)
	}
	for _, l := range lines {
		seq, _ := strconv.ParseUint(l["seq"], 10, 64)
		code, ok := want[seq]
		if !ok || l["projection"] != "models" || l["sqlstate"] != code || l["event_id"] == "" || l["type"] == "" {
			t.Fatalf("log line %v does not name a quarantined event", l)
		}
		for k, v := range l {
			if strings.Contains(v, "1e200000") || strings.Contains(v, `\ud800`) || strings.Contains(v, "four") {
				t.Fatalf("log attribute %s=%q carries event data", k, v)
			}
		}
	}

	st, err := Statuses(ctx, f.pool, Heads{Events: last})
	if err != nil {
		t.Fatal(err)
	}
	maxPoison := slices.Max(slices.Collect(maps.Keys(want)))
	for _, s := range st {
		switch {
		case s.Lag != 0:
			t.Fatalf("status %+v lags", s)
		case s.Name == "models" && (s.Quarantined != int64(len(want)) || s.LastQuarantined == nil ||
			s.LastQuarantined.Seq != maxPoison || s.LastQuarantined.SQLState != "23505" || s.LastQuarantined.Error == ""):
			t.Fatalf("models status %+v (last %+v), want %d quarantined, latest %d", s, s.LastQuarantined, len(want), maxPoison)
		case s.Name != "models" && (s.Quarantined != 0 || s.LastQuarantined != nil):
			t.Fatalf("status %+v reports quarantine", s)
		}
	}

	// The same events, the same tables: by batches of 7, of 1, and after a
	// reset and rebuild.
	before := dumpModels(t, f.pool)
	sameDump(t, dumpModels(t, ref), before)
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, last, "models")
	sameDump(t, dumpModels(t, f.pool), before)
	if n := len(logs.matching("projection quarantined an event it cannot store")); n != 2*len(want) {
		t.Fatalf("%d quarantine log lines after the rebuild, want %d", n, 2*len(want))
	}
}

// Undeliverable tells events that can never be stored (quarantine them)
// from failures worth retrying.
func TestUndeliverable(t *testing.T) {
	t.Parallel()
	var syn *json.SyntaxError
	synErr := json.Unmarshal([]byte("{"), &struct{}{})
	if !errors.As(synErr, &syn) {
		t.Fatalf("want a syntax error, got %v", synErr)
	}
	typErr := json.Unmarshal([]byte(`{"a":"x"}`), &struct{ A int }{})
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"invalid json for jsonb", &pgconn.PgError{Code: "22P02"}, true},
		{"numeric overflow", &pgconn.PgError{Code: "22003"}, true},
		{"untranslatable character", &pgconn.PgError{Code: "22P05"}, true},
		{"unique violation", fmt.Errorf("batch: %w", &pgconn.PgError{Code: "23505"}), true},
		{"index row too large", &pgconn.PgError{Code: "54000"}, true},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, false},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, false},
		{"too many connections", &pgconn.PgError{Code: "53300"}, false},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, false},
		{"query cancelled", &pgconn.PgError{Code: "57014"}, false},
		{"undefined table (a bug, not data)", &pgconn.PgError{Code: "42P01"}, false},
		{"connection failure", &pgconn.PgError{Code: "08006"}, false},
		{"context cancelled", fmt.Errorf("apply: %w", context.Canceled), false},
		{"deadline", context.DeadlineExceeded, false},
		{"json syntax", fmt.Errorf("decode: %w", synErr), true},
		{"json type", fmt.Errorf("decode: %w", typErr), true},
		{"projection refuses data", fmt.Errorf("model %s: %w", "x", ErrUndecodable), true},
		{"pgx cannot encode", errors.New("batch: failed to encode args[1]: unable to encode 1099511627776 into binary format for int4"), true},
		{"network", errors.New("read tcp: connection reset by peer"), false},
		{"nil", nil, false},
	} {
		if got := Undeliverable(c.err); got != c.want {
			t.Errorf("%s: Undeliverable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// lockHolder is the application_name and backend of the session holding
// the projection's advisory lock ("", 0 when nobody holds it).
func lockHolder(t *testing.T, pool *pgxpool.Pool, name string) (string, int32) {
	t.Helper()
	ctx, cancel := queryCtx()
	defer cancel()
	key := uint64(lockKey(name))
	var app string
	var pid int32
	err := pool.QueryRow(ctx, `SELECT a.application_name, l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		uint32(key>>32), uint32(key)).Scan(&app, &pid)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return app, pid
}

// namedPool is another pool on pool's database whose sessions carry an
// application_name, so pg_stat_activity tells whose a backend is.
func namedPool(t *testing.T, pool *pgxpool.Pool, app string) *pgxpool.Pool {
	t.Helper()
	cfg := pool.Config()
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	p, err := pgxpool.NewWithConfig(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// (g) Finding 10: when the active runner's lock session is killed, the
// runner notices, logs it and stops applying; it commits no batch under the
// lost lock while the standby that took over applies. Repeated, each round
// killing whichever runner is active, with events arriving one by one so the
// orphan, still following the stream, has every chance to commit.
func TestLostLockStopsTheOrphan(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	last := f.seed(t, 3)
	logs := &logRecords{}
	cfg := testRunnerConfig()
	cfg.Logger = slog.New(logs)

	// A runner whose lock session was killed may still commit a batch
	// that checked the lock before the kill (the batch holds the
	// checkpoint row, so the next holder sees its commit): what it must
	// never do is commit a batch that began its check after the kill. So
	// each kill is followed by a read of the checkpoint that waits out any
	// batch in flight (FOR UPDATE); the orphan's commits up to that
	// checkpoint are legitimate, any beyond it is the bug this test looks
	// for. Until that read, the orphan's commits are held back.
	var mu sync.Mutex
	const pending = ^uint64(0)
	killedAt := map[string]uint64{} // orphan runner -> checkpoint when its lock session was gone
	held := map[string][]uint64{}   // commits of an orphan while its checkpoint is pending
	var orphanCommits []string
	judge := func(name string, cp uint64) {
		if cp > killedAt[name] {
			orphanCommits = append(orphanCommits, fmt.Sprintf("%s committed up to %d after its lock session was killed (checkpoint then %d)", name, cp, killedAt[name]))
		}
	}
	for _, name := range []string{"runner-a", "runner-b"} {
		r := NewRunner(namedPool(t, f.pool, name), f.store, Audit{}, cfg)
		r.afterCommit = func(cp uint64) error {
			mu.Lock()
			defer mu.Unlock()
			switch k, ok := killedAt[name]; {
			case ok && k == pending:
				held[name] = append(held[name], cp)
			case ok:
				judge(name, cp)
			}
			return nil
		}
		start(t, r)
	}
	waitCaughtUp(t, f.pool, last, "audit")
	const rounds = 8
	for round := range rounds {
		var holder string
		var pid int32
		poll(t, 30*time.Second, "a lock holder", func() bool { holder, pid = lockHolder(t, f.pool, "audit"); return pid != 0 })
		mu.Lock()
		killedAt[holder] = pending
		mu.Unlock()
		var ok bool
		// Terminate and wait (up to 10 s) until the backend is gone.
		if err := f.pool.QueryRow(testCtx(t), "SELECT pg_terminate_backend($1, 10000)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("round %d: terminate %d: %v %v", round, pid, ok, err)
		}
		tx, err := f.pool.Begin(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		var cp int64
		if err := tx.QueryRow(testCtx(t), "SELECT last_seq FROM projection_checkpoints WHERE name = 'audit' FOR UPDATE").Scan(&cp); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		killedAt[holder] = uint64(cp)
		for _, c := range held[holder] {
			judge(holder, c)
		}
		delete(held, holder)
		mu.Unlock()
		var next string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var p int32
			if next, p = lockHolder(t, f.pool, "audit"); p != 0 && p != pid {
				break
			}
			if time.Now().After(deadline) {
				mu.Lock()
				t.Fatalf("round %d: no runner took the lock within 30s of killing %s's lock session: the other runner "+
					"never stood by again after losing its own lock earlier; orphan commits so far:\n%s",
					round, holder, strings.Join(orphanCommits, "\n"))
			}
		}
		mu.Lock()
		delete(killedAt, next) // it holds the lock (again): its commits are legitimate
		mu.Unlock()
		for range 4 {
			last = f.seed(t, 1)
		}
		waitCaughtUp(t, f.pool, last, "audit")
	}
	mu.Lock()
	if len(orphanCommits) > 0 {
		t.Fatalf("an orphaned runner kept applying after its lock was gone (%d batches):\n%s", len(orphanCommits), strings.Join(orphanCommits, "\n"))
	}
	mu.Unlock()
	poll(t, 30*time.Second, "every orphan to log its lost lock", func() bool {
		return len(logs.matching("projection lost its advisory lock; standing by")) >= rounds
	})
	for _, l := range logs.matching("projection lost its advisory lock; standing by") {
		if l["projection"] != "audit" {
			t.Fatalf("lost-lock log line %v does not name the projection", l)
		}
	}
	// Only audit ran: one entry per event.
	var count, distinct, maxSeq int64
	if err := f.pool.QueryRow(testCtx(t), "SELECT count(*), count(DISTINCT event_id), max(seq) FROM audit_entries").Scan(&count, &distinct, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if uint64(count) != last || uint64(distinct) != last || uint64(maxSeq) != last {
		t.Fatalf("audit_entries: %d rows (%d events) up to %d, want %d", count, distinct, maxSeq, last)
	}
}

// A stream message whose CloudEvents headers do not parse (only a client
// holding the platform's NATS credentials can publish one) used to stop
// every projection for good: the runner retried the batch for ever. It is
// quarantined by every projection that reads its subject, with its broken
// type and id cleaned so the quarantine row itself can be stored, and the
// events after it apply.
func TestUndecodableMessageIsQuarantined(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	before := f.seed(t, 1)
	m := nats.NewMsg(events.Subject(events.AggModel, uuid.NewString()))
	m.Header.Set("ce-specversion", "1.0")
	m.Header.Set("ce-source", events.Source)
	m.Header.Set("ce-time", "yesterday")
	m.Header.Set("ce-type", "maestro.x\x00\xff")
	m.Header.Set("ce-id", "id\x00\xff")
	m.Data = []byte(`{}`)
	ack, err := f.store.JetStream().PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != before+1 {
		t.Fatalf("broken message at %d, want %d", ack.Sequence, before+1)
	}
	last := f.seed(t, 2)
	logs := &logRecords{}
	cfg := testRunnerConfig()
	cfg.Logger = slog.New(logs)
	var names, reading []string // all projections; those reading model subjects
	for _, p := range All() {
		names = append(names, p.Name())
		if aggs := p.Aggregates(); len(aggs) == 0 || slices.Contains(aggs, events.AggModel) {
			reading = append(reading, p.Name())
		}
		start(t, NewRunner(f.pool, f.store, p, cfg))
	}
	waitCaughtUp(t, f.pool, last, names...)
	rows, err := f.pool.Query(ctx, "SELECT projection, type, event_id, error FROM projection_quarantine WHERE seq = $1 ORDER BY projection", int64(ack.Sequence))
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Projection, Type, EventID, Error string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		t.Fatal(err)
	}
	var by []string
	for _, r := range got {
		by = append(by, r.Projection)
	}
	slices.Sort(reading)
	if !slices.Equal(by, reading) {
		t.Fatalf("quarantined by %v (%+v), want those reading model subjects: %v", by, got, reading)
	}
	for _, r := range got {
		if r.Type != "maestro.x \uFFFD" || r.EventID != "id \uFFFD" || !strings.Contains(r.Error, "bad ce-time") {
			t.Fatalf("quarantine row %+v: want the cleaned type and id and the decode error", r)
		}
	}
	if n := len(logs.matching("projection quarantined an event it cannot store")); n != len(reading) {
		t.Fatalf("%d quarantine log lines, want %d", n, len(reading))
	}
}

// readThrough extends a filtered runner's position to the stream's head
// only when no event on its subjects lies between them; a runner that reads
// every subject is never extended (its consumer sees every event).
func TestReadThroughStopsAtAPendingEventOfItsOwn(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	before := f.seed(t, 1)
	pid := uuid.NewString()
	own := f.append(t, base, [3]any{events.Subject(events.AggProject, pid), events.ProjectCreated,
		events.ProjectCreatedData{ProjectID: pid, Slug: "p", Name: "P", OwnerID: "u"}})
	head := f.seed(t, 2)
	r := NewRunner(f.pool, f.store, Projects{}, testRunnerConfig())
	for _, c := range []struct{ pos, want uint64 }{
		{before, before}, // the project event is not read yet
		{own, head},      // read: nothing of its own up to the head
		{head, head},
	} {
		if got := r.readThrough(ctx, func() uint64 { return c.pos }); got != c.want {
			t.Errorf("projects readThrough(head %d, pos %d) = %d, want %d", head, c.pos, got, c.want)
		}
	}
	if got := NewRunner(f.pool, f.store, Audit{}, testRunnerConfig()).readThrough(ctx, func() uint64 { return own }); got != own {
		t.Errorf("audit readThrough(head %d, pos %d) = %d, want %d: it reads every subject", head, own, got, own)
	}
}

// longLinger is the audit projection lingering for long enough that a
// test's appends all fall within one linger, whatever the machine's speed.
type longLinger struct{ Audit }

func (longLinger) Linger() time.Duration { return time.Second }

// A lingering projection's runner gathers the events of a trickle of
// commands into one transaction instead of one per event.
func TestLingeringRunnerBatchesATrickle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := NewRunner(f.pool, f.store, longLinger{}, testRunnerConfig())
	var commits atomic.Int64
	r.afterCommit = func(uint64) error { commits.Add(1); return nil }
	start(t, r)
	first := f.seed(t, 1)
	waitCaughtUp(t, f.pool, first, "audit")
	// afterCommit runs after the checkpoint is visible: let the count settle.
	poll(t, 30*time.Second, "the seed's commits to be counted", func() bool {
		n := commits.Load()
		time.Sleep(50 * time.Millisecond)
		return commits.Load() == n
	})
	before := commits.Load()
	uid := uuid.NewString()
	var last uint64
	const n = 12
	for range n {
		last = f.append(t, base, [3]any{events.Subject(events.AggUser, uid), events.UserLoginFailed,
			events.UserLoginFailedData{UserID: uid, Reason: "wrong_password"}})
		time.Sleep(2 * time.Millisecond) // longer than a commit here: without lingering, one each
	}
	waitCaughtUp(t, f.pool, last, "audit")
	if got := commits.Load() - before; got > 2 {
		t.Fatalf("%d commits for %d events appended one after another: the runner did not linger", got, n)
	}
}

// A Weighty runner's read-ahead is bounded by bytes, not only by the
// channel's count of messages: the consumer's callback waits once the
// messages not yet taken hold the limit, and goes on as they are taken.
func TestReadAheadBoundsBytes(t *testing.T) {
	t.Parallel()
	g := newReadAhead(1000)
	never := make(chan struct{})
	if !g.acquire(600, never) || !g.acquire(400, never) {
		t.Fatal("acquire within the limit waited")
	}
	got := make(chan bool, 1)
	go func() { got <- g.acquire(5000, never) }() // larger than the limit: waits for an empty queue
	select {
	case <-got:
		t.Fatal("acquire beyond the limit did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	g.release(600)
	select {
	case <-got:
		t.Fatal("an oversized message went in beside 400 bytes")
	case <-time.After(50 * time.Millisecond):
	}
	g.release(400)
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("acquire failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("acquire never woke after the queue emptied")
	}
	done := make(chan struct{})
	go func() { got <- g.acquire(1, done) }()
	close(done)
	select {
	case ok := <-got:
		if ok {
			t.Fatal("acquire on a full queue succeeded after done")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("acquire ignored done")
	}
}

// Reset takes its locks while projections and the audit sealer hold theirs
// in other orders: a transaction that read audit_entries and then reads
// projection_quarantine (what the sealer's check does) closes a cycle with
// Reset, which locks the quarantine first. Postgres aborts one of them
// (deadlock_timeout, 1 s by default); Reset takes its turn again and
// succeeds, and the other transaction is not harmed.
func TestResetSurvivesADeadlock(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	ctx := testCtx(t)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // test cleanup
	if _, err := tx.Exec(ctx, "SELECT count(*) FROM audit_entries"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Reset(ctx, pool) }()
	// Wait until Reset holds the quarantine and waits for audit_entries.
	poll(t, 30*time.Second, "Reset waiting for audit_entries", func() bool {
		var waiting bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
			WHERE NOT l.granted AND c.relname = 'audit_entries')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	// Closing the cycle: one of the two is aborted.
	_, qerr := tx.Exec(ctx, "SELECT count(*) FROM projection_quarantine")
	if qerr == nil {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	} else if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Reset after a deadlock: %v (the other side: %v)", err, qerr)
	}
	t.Logf("the other transaction: %v", qerr)
}
