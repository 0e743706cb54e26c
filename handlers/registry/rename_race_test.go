package registry_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Renames through two processes (services with their own caches): two
// models renamed to one name at once, one model renamed two ways at once,
// a command by a name the model no longer bears, a creation with a name a
// rename left behind, and a rename of a deleted model.
func TestRenameRaces(t *testing.T) {
	t.Parallel()
	svcs, ctx, p, _ := servicesWithModel(t, 2, 1)
	code := func(err error) string {
		if err == nil {
			return ""
		}
		if e, ok := handlers.AsError(err); ok {
			return e.Code
		}
		return err.Error()
	}
	create := func(svc *registry.Service, name string) (registry.ModelState, error) {
		m, _, err := svc.CreateModel(ctx, metaOf(p), p, "vision", registry.CreateModel{Name: name})
		return m, err
	}
	rename := func(svc *registry.Service, from, to string) error {
		_, _, err := svc.RenameModel(ctx, metaOf(p), p, "vision", from, to)
		return err
	}
	bears := func(svc *registry.Service, name, id string) {
		t.Helper()
		_, m, err := svc.Model(ctx, p, "vision", name)
		if err != nil || m.ID != id {
			t.Fatalf("model %q: %s, %v; want %s", name, m.ID, err, id)
		}
	}
	for round := range 10 {
		a, err := create(svcs[0], fmt.Sprint("a", round))
		if err != nil {
			t.Fatal(err)
		}
		b, err := create(svcs[1], fmt.Sprint("b", round))
		if err != nil {
			t.Fatal(err)
		}
		// Warm both caches.
		bears(svcs[0], b.Name, b.ID)
		bears(svcs[1], a.Name, a.ID)
		target := fmt.Sprint("x", round)
		var errs [2]error
		var wg sync.WaitGroup
		wg.Go(func() { errs[0] = rename(svcs[0], a.Name, target) })
		wg.Go(func() { errs[1] = rename(svcs[1], b.Name, target) })
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch code(err) {
			case "":
				if won >= 0 {
					t.Fatalf("round %d: both renames to %s succeeded", round, target)
				}
				won = i
			case "model-exists":
			default:
				t.Fatalf("round %d: rename %d: %v", round, i, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no rename succeeded: %v", round, errs)
		}
		winner, loser := a, b
		if won == 1 {
			winner, loser = b, a
		}
		for _, svc := range svcs {
			bears(svc, target, winner.ID)
			bears(svc, loser.Name, loser.ID)
			if _, _, err := svc.Model(ctx, p, "vision", winner.Name); code(err) != "not-found" {
				t.Fatalf("old name %s after the rename: %v", winner.Name, err)
			}
		}
		// The old name is the winner's for good: nobody else gets it.
		if _, err := create(svcs[1-won], winner.Name); code(err) != "model-exists" {
			t.Fatalf("create %s after its rename: %v", winner.Name, err)
		}
		// One model renamed two ways at once: one wins, the other finds the
		// name gone.
		errs = [2]error{}
		wg.Go(func() { errs[0] = rename(svcs[0], loser.Name, loser.Name+"-p") })
		wg.Go(func() { errs[1] = rename(svcs[1], loser.Name, loser.Name+"-q") })
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) || code(errs[0])+code(errs[1]) != "not-found" {
			t.Fatalf("round %d: concurrent renames of one model: %v", round, errs)
		}
		// A command by the old name through the other process's stale cache.
		if _, _, err := svcs[1-won].UpdateModelFunc(ctx, metaOf(p), p, "vision", winner.Name, authz.ModelWrite,
			func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
				return registry.DecideUpdateModel(m, new("stale"), nil)
			}); code(err) != "not-found" {
			t.Fatalf("update by the old name: %v", err)
		}
	}
	// A deleted model is not renamed.
	if _, _, err := svcs[0].UpdateModelFunc(ctx, metaOf(p), p, "vision", "resnet", authz.ModelWrite,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideDeleteModel(m, true, false)
		}); err != nil {
		t.Fatal(err)
	}
	if err := rename(svcs[1], "resnet", "vit"); code(err) != "not-found" {
		t.Fatalf("rename of a deleted model: %v", err)
	}
	if _, err := create(svcs[0], "vit"); err != nil {
		t.Fatalf("the name a refused rename named is free: %v", err)
	}
}

// A rename whose first attempt died after storing its events is retried
// with the same key and request: it answers the stored rename (its old name
// still resolves, to a model that no longer bears it).
func TestPriorAttemptAnswersStoredRename(t *testing.T) {
	t.Parallel()
	svcs, ctx, owner, _ := servicesWithModel(t, 1, 1)
	started := time.Now()
	meta := metaOf(owner)
	meta.IdempotencyKey, meta.Fingerprint = "rename-key", "fingerprint-1"
	m, seq, err := svcs[0].RenameModel(ctx, meta, owner, "vision", "resnet", "vit")
	if err != nil || m.Name != "vit" {
		t.Fatalf("rename: %+v, %v", m, err)
	}
	if _, _, err := svcs[0].RenameModel(ctx, meta, owner, "vision", "resnet", "vit"); err == nil {
		t.Fatal("renaming by the old name again succeeded without the prior attempt")
	}
	meta.PriorAttempt = started
	m, got, err := svcs[0].RenameModel(ctx, meta, owner, "vision", "resnet", "vit")
	if err != nil || got != seq || m.Name != "vit" {
		t.Fatalf("retry after a dead attempt: %s at %d, %v; want vit at %d", m.Name, got, err, seq)
	}
}
