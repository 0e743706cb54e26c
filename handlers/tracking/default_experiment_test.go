package tracking_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/internal/testnats"
)

// MLflow's experiment "0": the first requests that need the project's
// Default experiment create it, racing ones (here on two services, as two
// API processes) all end with the same one, and a reader finds it by name.
func TestDefaultExperimentRace(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store := testnats.Store(t)
	reg := registry.NewService(store, anyUser, nil, nil)
	svcs := []*tracking.Service{tracking.NewService(store, reg, nil), tracking.NewService(store, reg, nil)}
	owner, om := who(authz.RoleMember)
	ps, _, err := reg.CreateProject(ctx, om, owner, "Defaults", "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = svcs[0].ExperimentNamed(ctx, owner, ps.Slug, tracking.DefaultExperimentName)
	wantCode(t, err, "not-found")

	const n = 8
	ids := make([]string, n)
	var created int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			x, seq, err := svcs[i%2].DefaultExperiment(ctx, om, owner, ps.Slug)
			if err != nil {
				t.Errorf("DefaultExperiment %d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[i] = x.ID
			if seq != 0 {
				created++
			}
		})
	}
	wg.Wait()
	for i := range ids {
		if ids[i] == "" || ids[i] != ids[0] {
			t.Fatalf("Default experiments %v: want one", ids)
		}
	}
	if created != 1 {
		t.Fatalf("%d requests created the Default experiment, want 1", created)
	}
	x, err := svcs[1].ExperimentNamed(ctx, owner, ps.Slug, tracking.DefaultExperimentName)
	if err != nil || x.ID != ids[0] || x.Name != tracking.DefaultExperimentName {
		t.Fatalf("ExperimentNamed = %+v, %v", x, err)
	}

	// A viewer may not create it; once deleted it stays (runs are refused).
	viewer, vm := who(authz.RoleMember)
	if _, _, err := reg.SetMember(ctx, om, owner, ps.Slug, viewer.UserID, authz.ProjectViewer); err != nil {
		t.Fatal(err)
	}
	other, _, err := reg.CreateProject(ctx, om, owner, "Defaults Two", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.SetMember(ctx, om, owner, other.Slug, viewer.UserID, authz.ProjectViewer); err != nil {
		t.Fatal(err)
	}
	_, _, err = svcs[0].DefaultExperiment(ctx, vm, viewer, other.Slug)
	wantCode(t, err, "forbidden")
	if _, _, err := svcs[0].DeleteExperiment(ctx, om, owner, ps.Slug, x.ID, true); err != nil {
		t.Fatal(err)
	}
	d, _, err := svcs[1].DefaultExperiment(ctx, om, owner, ps.Slug)
	if err != nil || d.ID != x.ID || !d.Deleted {
		t.Fatalf("deleted Default = %+v, %v", d, err)
	}
	_, _, err = svcs[1].CreateRun(ctx, om, owner, ps.Slug, d.ID, tracking.CreateRun{})
	wantCode(t, err, "experiment-deleted")
}
