package projections

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// The cached session and user rows are dropped by the projections' own
// notifications before the checkpoint that includes the change is seen, so
// a wait for that checkpoint (what logout, deactivation and role changes
// do) is followed by reads of the new rows; and with the listener gone the
// cache is not used at all.
func TestReadCacheFollowsTheProjections(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	w := NewWaiter(f.pool)
	q := NewQueries(f.pool).CacheWith(w)
	stopWaiter := runWaiter(t, w)
	for _, p := range []Projection{Users{}, Sessions{}} {
		start(t, NewRunner(f.pool, f.store, p, testRunnerConfig()))
	}
	wait := func(seq uint64) {
		t.Helper()
		wc, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if !w.Wait(wc, seq, "users", "sessions") {
			t.Fatalf("projections did not reach %d", seq)
		}
	}
	poll(t, 30*time.Second, "the waiter to listen", w.Live)

	uid, sid := uuid.NewString(), uuid.NewString()
	userSubj, sessSubj := events.Subject(events.AggUser, uid), events.Subject(events.AggSession, sid)
	wait(f.append(t, base, [3]any{userSubj, events.UserRegistered, events.UserRegisteredData{UserID: uid, Email: "c@example.com", Role: "viewer"}},
		[3]any{sessSubj, events.SessionStarted, events.SessionStartedData{SessionID: sid, UserID: uid}}))
	read := func() (SessionPrincipal, User) {
		t.Helper()
		sp, err := q.Session(ctx, sid)
		if err != nil {
			t.Fatal(err)
		}
		u, err := q.User(ctx, uid)
		if err != nil {
			t.Fatal(err)
		}
		return sp, u
	}
	if sp, u := read(); sp.Role != "viewer" || sp.Revoked || u.Role != "viewer" {
		t.Fatalf("first read: %+v %+v", sp, u)
	}
	// Cached now: a row changed behind the projections' back (never done
	// outside tests) is not seen while the waiter listens.
	if _, err := f.pool.Exec(ctx, "UPDATE users SET name = 'changed behind its back' WHERE id = $1", uid); err != nil {
		t.Fatal(err)
	}
	if _, u := read(); u.Name == "changed behind its back" {
		t.Fatal("the user was not served from the cache")
	}

	for i, step := range []struct {
		change [3]any
		check  func(SessionPrincipal, User) bool
	}{
		{[3]any{userSubj, events.UserRoleChanged, events.UserRoleChangedData{UserID: uid, From: "viewer", To: "member"}},
			func(sp SessionPrincipal, u User) bool { return sp.Role == "member" && u.Role == "member" }},
		{[3]any{sessSubj, events.SessionRevoked, events.SessionRevokedData{SessionID: sid, UserID: uid, Reason: events.RevokedLogout}},
			func(sp SessionPrincipal, _ User) bool { return sp.Revoked }},
		{[3]any{userSubj, events.UserDeactivated, events.UserActivationData{UserID: uid}},
			func(sp SessionPrincipal, u User) bool { return !sp.Active && !u.Active }},
	} {
		read() // cache both rows
		wait(f.append(t, base.Add(time.Duration(i+1)*time.Minute), step.change))
		if sp, u := read(); !step.check(sp, u) {
			t.Fatalf("step %d (%s): read %+v %+v right after the checkpoint", i, step.change[1], sp, u)
		}
	}

	// Without the listener the cache is bypassed and emptied.
	stopWaiter()
	if w.Live() {
		t.Fatal("the waiter says it listens after Run returned")
	}
	if _, err := f.pool.Exec(ctx, "UPDATE users SET name = 'seen without the cache' WHERE id = $1", uid); err != nil {
		t.Fatal(err)
	}
	if _, u := read(); u.Name != "seen without the cache" {
		t.Fatalf("the cache answered while nobody listened: %+v", u)
	}
}

// A runner passes over events it does not handle without a statement per
// event: the checkpoint advance over them rides along with the next event
// it handles (at once), or is recorded once RunnerConfig.Pass has passed.
func TestRunnerPassesOverEventsItDoesNotHandle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	cfg := testRunnerConfig()
	cfg.Pass = time.Hour // only a handled event records the pass
	r := NewRunner(f.pool, f.store, Projects{}, cfg)
	commits := make(chan uint64, 100)
	r.afterCommit = func(cp uint64) error { commits <- cp; return nil }
	stop := start(t, r)
	unhandled := f.seed(t, 5) // identity events only
	// A reader waiting for those events need not sit out the pass: the
	// runner says it has read past them (AskRunners), though its checkpoint
	// has not moved.
	w := NewWaiter(f.pool).AskRunners(f.store.Conn())
	runWaiter(t, w)
	poll(t, 30*time.Second, "the waiter to listen", w.Live)
	short, cancelS := context.WithTimeout(ctx, 10*time.Second)
	reached := w.WaitRead(short, unhandled, "projects")
	cancelS()
	if !reached {
		t.Fatalf("Wait(%d) on projects timed out though it handles none of those events", unhandled)
	}
	if cp := checkpointOf(t, f.pool, "projects"); cp >= unhandled {
		t.Fatalf("checkpoint %d already at %d: the pass was recorded, not asked for", cp, unhandled)
	}
	pid := uuid.NewString()
	handled := f.append(t, base, [3]any{events.Subject(events.AggProject, pid), events.ProjectCreated,
		events.ProjectCreatedData{ProjectID: pid, Slug: "p", Name: "P", OwnerID: "u"}})
	select {
	case cp := <-commits:
		if cp != handled {
			t.Fatalf("first commit at %d, want %d: the handled event, carrying the pass over the %d before it", cp, handled, unhandled)
		}
	case <-ctx.Done():
		t.Fatal("the handled event was never committed")
	}
	stop()

	// With a short pass, unhandled events on the projection's own subjects
	// (failed logins reach users, which does not apply them) are recorded
	// by the timer, in far fewer commits than events.
	cfg.Pass = 50 * time.Millisecond
	cfg.Idle = time.Hour // no reading through: the pass alone records them
	r = NewRunner(f.pool, f.store, Users{}, cfg)
	var n atomic.Int64
	r.afterCommit = func(uint64) error { n.Add(1); return nil }
	start(t, r)
	first := f.lastSeq(t)
	uid := uuid.NewString()
	var last uint64
	for range 20 {
		last = f.append(t, base, [3]any{events.Subject(events.AggUser, uid), events.UserLoginFailed,
			events.UserLoginFailedData{UserID: uid, Reason: "wrong_password"}})
	}
	poll(t, 30*time.Second, "the pass to be recorded", func() bool { return checkpointOf(t, f.pool, "users") == last })
	if events := last - first; uint64(n.Load()) >= events/2 {
		t.Fatalf("%d commits for %d events the projection does not handle", n.Load(), events)
	}
}

// An event whose later statement has an argument pgx cannot encode (here
// the second archived version of a transition, beyond int4) is quarantined
// like one whose first statement fails: the isolate path sends statements
// singly, so the failing one never leaves the client and the connection and
// savepoint survive.
func TestPoisonInALaterStatementIsQuarantined(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	model := uuid.NewString()
	subj := events.Subject(events.AggModel, model)
	f.appendRaw(t, subj, events.ModelCreated, fmt.Sprintf(`{"model_id":%q,"project_id":%q,"name":"m","description":"","tags":{}}`, model, uuid.NewString()))
	poison := f.appendRaw(t, subj, events.ModelVersionTransition,
		fmt.Sprintf(`{"model_id":%q,"version":1,"from":"none","to":"production","archived":[{"version":2,"from":"production"},{"version":%d,"from":"production"}]}`, model, int64(1)<<40))
	last := f.appendRaw(t, subj, events.ModelUpdated, fmt.Sprintf(`{"model_id":%q,"description":"after the poison"}`, model))
	start(t, NewRunner(f.pool, f.store, Models{}, testRunnerConfig()))
	waitCaughtUp(t, f.pool, last, "models")
	var seq int64
	if err := f.pool.QueryRow(ctx, "SELECT seq FROM projection_quarantine WHERE projection = 'models'").Scan(&seq); err != nil || uint64(seq) != poison {
		t.Fatalf("quarantine: seq %d (%v), want %d", seq, err, poison)
	}
	var desc string
	if err := f.pool.QueryRow(ctx, "SELECT description FROM models WHERE id = $1", model).Scan(&desc); err != nil || desc != "after the poison" {
		t.Fatalf("the event after the poison: %q %v", desc, err)
	}
}

// runWaiter runs w until the test ends or the returned stop is called.
func runWaiter(t *testing.T, w *Waiter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}
