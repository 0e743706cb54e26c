package projections

import (
	"context"
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
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(wctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
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
	cancel()
	<-done
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

	// With a short pass, unhandled events are recorded by the timer, in
	// far fewer commits than events.
	cfg.Pass = 50 * time.Millisecond
	r = NewRunner(f.pool, f.store, Projects{}, cfg)
	var n atomic.Int64
	r.afterCommit = func(uint64) error { n.Add(1); return nil }
	start(t, r)
	first := f.lastSeq(t)
	last := f.seed(t, 10)
	poll(t, 30*time.Second, "the pass to be recorded", func() bool { return checkpointOf(t, f.pool, "projects") == last })
	if events := last - first; uint64(n.Load()) >= events/2 {
		t.Fatalf("%d commits for %d events the projection does not handle", n.Load(), events)
	}
}
