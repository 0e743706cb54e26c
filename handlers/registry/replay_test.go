package registry_test

import (
	"testing"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Review finding 21: the event time was taken before the keyed lock and the
// retries, so a command that conflicted with another process and retried
// stored an event timed before the event it had to wait for. Process A
// decides, process B registers in between, A conflicts and retries: A's
// event comes later in the stream and must not be earlier in time.
func TestEventTimeFollowsStreamOrderAcrossRetries(t *testing.T) {
	t.Parallel()
	svcs, ctx, owner, m := servicesWithModel(t, 2, 0)

	decided, resume := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		first := true
		_, _, err := svcs[0].UpdateModelFunc(ctx, metaOf(owner), owner, "vision", "resnet", authz.ModelWrite,
			func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
				if first {
					first = false
					close(decided)
					<-resume
				}
				return registry.DecideRegisterVersion(m, registry.RegisterVersion{Description: "A"})
			})
		done <- err
	}()
	<-decided
	if _, _, err := register(svcs[1], ctx, owner, "B"); err != nil {
		t.Fatal(err)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	evs, err := svcs[0].ModelHistory(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for _, e := range evs {
		if e.Type == events.ModelVersionRegistered {
			times = append(times, e.Time)
		}
	}
	if len(times) != 2 {
		t.Fatalf("%d registrations stored, want 2", len(times))
	}
	if times[1].Before(times[0]) {
		t.Fatalf("the retried registration is stored after B but timed %s, before B's %s", times[1], times[0])
	}
}

// A command whose first attempt died after storing its events, retried with
// the same key and request (meta.PriorAttempt set by the takeover of the
// dead attempt's pending record), answers from the stored events, even when
// deciding again would now fail: the alias it deleted is gone.
func TestPriorAttemptAnswersStoredEvents(t *testing.T) {
	t.Parallel()
	svcs, ctx, owner, _ := servicesWithModel(t, 1, 1)
	setAlias := func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideSetAlias(m, "champion", 1)
	}
	if _, _, err := svcs[0].UpdateModelFunc(ctx, metaOf(owner), owner, "vision", "resnet", authz.VersionPromote,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) { return setAlias(m) }); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	meta := metaOf(owner)
	meta.IdempotencyKey, meta.Fingerprint = "delete-alias-key", "fingerprint-1"
	deleteAlias := func(meta events.Meta) (registry.ModelState, uint64, error) {
		return svcs[0].UpdateModelFunc(ctx, meta, owner, "vision", "resnet", authz.VersionPromote,
			func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
				return registry.DecideDeleteAlias(m, "champion")
			})
	}
	_, seq, err := deleteAlias(meta)
	if err != nil {
		t.Fatal(err)
	}
	// Another command after it: the answer must be the state right after
	// the stored deletion, not the current one.
	if _, _, err := register(svcs[0], ctx, owner, "v2"); err != nil {
		t.Fatal(err)
	}

	// Without knowing of the dead attempt, deciding again fails (the limit
	// the takeover closes).
	if _, _, err := deleteAlias(meta); err == nil {
		t.Fatal("deleting the deleted alias again succeeded without the prior attempt")
	}
	meta.PriorAttempt = started
	m, got, err := deleteAlias(meta)
	if err != nil {
		t.Fatalf("retry after a dead attempt: %v", err)
	}
	if got != seq {
		t.Fatalf("retry answered sequence %d, the stored deletion is %d", got, seq)
	}
	if _, ok := m.Aliases["champion"]; ok || len(m.Versions) != 1 {
		t.Fatalf("retry answered aliases %v with %d versions, want the state right after the deletion (no alias, 1 version)", m.Aliases, len(m.Versions))
	}
	// Another request under the same key finds nothing of its own.
	meta.Fingerprint = "fingerprint-2"
	if _, _, err := deleteAlias(meta); err == nil {
		t.Fatal("a different request under the key answered from the first request's events")
	}
}

// A deletion of a production version stored by an approver, whose answer
// was lost, is retried after the approver was made an editor: the retry
// must answer the stored deletion, not re-check the now missing approver
// role in the replay and answer 409 deployment-pointer for a deletion that
// happened (on 6f70fe2 the replay decided with the current project).
func TestPriorAttemptDeletionSurvivesRoleChange(t *testing.T) {
	t.Parallel()
	svcs, ctx, owner, _ := servicesWithModel(t, 1, 1)
	if _, _, err := promote(svcs[0], ctx, owner, 1, events.StageProduction, false); err != nil {
		t.Fatal(err)
	}
	approver := principal(authz.RoleMember)
	setRole := func(role authz.ProjectRole) {
		t.Helper()
		if _, _, err := svcs[0].SetMember(ctx, metaOf(owner), owner, "vision", approver.UserID, role); err != nil {
			t.Fatal(err)
		}
	}
	setRole(authz.ProjectApprover)

	started := time.Now()
	meta := metaOf(approver)
	meta.IdempotencyKey, meta.Fingerprint = "delete-version-key", "fingerprint-1"
	_, seq, err := svcs[0].DeleteVersion(ctx, meta, approver, "vision", "resnet", 1)
	if err != nil {
		t.Fatal(err)
	}
	setRole(authz.ProjectEditor)

	meta.PriorAttempt = started
	m, got, err := svcs[0].DeleteVersion(ctx, meta, approver, "vision", "resnet", 1)
	if err != nil {
		t.Fatalf("retry of a stored deletion after a role change: %v", err)
	}
	if got != seq {
		t.Fatalf("retry answered sequence %d, the stored deletion is %d", got, seq)
	}
	if v, ok := m.Version(1); !ok || !v.Deleted {
		t.Fatalf("retry answered version 1 = %+v, want it deleted", v)
	}

	// A new deletion of a production version by the editor is refused.
	if _, _, err := register(svcs[0], ctx, owner, "v2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := promote(svcs[0], ctx, owner, 2, events.StageProduction, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svcs[0].DeleteVersion(ctx, metaOf(approver), approver, "vision", "resnet", 2); err == nil {
		t.Fatal("an editor deleted a production version")
	}
}
