package tracking_test

import (
	"context"
	"testing"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// Lineage on the write side: a registration names a run that the registry
// finds through tracking's RunInProject (wired as the platform does), on
// the run's own events; without a lookup no run can be named.
func TestRegisterVersionFindsTheRun(t *testing.T) {
	t.Parallel()
	ctx, reg, svc := services(t)

	owner, om := who(authz.RoleMember)
	project := func(name string) (registry.ProjectState, tracking.RunState) {
		return projectWithRun(ctx, t, reg, svc, owner, om, name)
	}
	ps, run := project("Mine")
	_, foreign := project("Theirs")
	if _, _, err := reg.CreateModel(ctx, om, owner, ps.Slug, registry.CreateModel{Name: "m"}); err != nil {
		t.Fatal(err)
	}
	register := func(c registry.RegisterVersion) (registry.VersionState, error) {
		m, v, _, err := reg.RegisterVersion(ctx, om, owner, ps.Slug, "m", c)
		if err != nil {
			return registry.VersionState{}, err
		}
		ver, _ := m.Version(v)
		return ver, nil
	}

	// No lookup wired: there are no runs to name.
	_, err := register(registry.RegisterVersion{RunID: run.ID})
	wantCode(t, err, "validation-failed")

	reg.WithRuns(svc.RunInProject)
	if v, err := register(registry.RegisterVersion{RunID: run.ID}); err != nil || v.RunID != run.ID || v.Version != 1 {
		t.Fatalf("from the project's run: %+v, %v", v, err)
	}
	if v, err := register(registry.RegisterVersion{Source: "runs:/" + run.ID + "/model"}); err != nil || v.RunID != run.ID {
		t.Fatalf("from runs:/: %+v, %v", v, err)
	}
	for _, id := range []string{foreign.ID, "00000000-0000-4000-8000-000000000000", "not-a-run"} {
		_, err := register(registry.RegisterVersion{RunID: id})
		wantCode(t, err, "validation-failed")
	}
	if _, _, err := svc.DeleteRun(ctx, om, owner, ps.Slug, run.ID, true); err != nil {
		t.Fatal(err)
	}
	if ok, err := svc.RunInProject(ctx, ps.ID, run.ID); !ok || err != nil {
		t.Fatalf("a deleted run is no longer found: %v, %v", ok, err)
	}
	if v, err := register(registry.RegisterVersion{RunID: run.ID}); err != nil || v.Version != 3 {
		t.Fatalf("from a deleted run: %+v, %v", v, err)
	}
}

// projectWithRun creates, as owner, a project with an experiment and a run.
func projectWithRun(ctx context.Context, t *testing.T, reg *registry.Service, svc *tracking.Service, owner authz.Principal, om events.Meta,
	name string) (registry.ProjectState, tracking.RunState) {
	t.Helper()
	ps, _, err := reg.CreateProject(ctx, om, owner, name, "")
	if err != nil {
		t.Fatal(err)
	}
	x, _, err := svc.CreateExperiment(ctx, om, owner, ps.Slug, tracking.CreateExperiment{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := svc.CreateRun(ctx, om, owner, ps.Slug, x.ID, tracking.CreateRun{})
	if err != nil {
		t.Fatal(err)
	}
	return ps, r
}
