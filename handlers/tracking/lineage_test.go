package tracking_test

import (
	"context"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
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

// Every run write but a delete is refused while the run's experiment is
// deleted (decided on the experiment's events), artifacts and dataset
// inputs too, and works again once it is restored.
func TestRunWritesWaitForTheExperiment(t *testing.T) {
	t.Parallel()
	ctx, reg, svc := services(t)
	owner, om := who(authz.RoleMember)
	ps, run := projectWithRun(ctx, t, reg, svc, owner, om, "Paused")
	art := registry.Artifact{Path: "model.bin", Digest: "sha256:" + strings.Repeat("a", 64), Size: 1, ContentType: "application/octet-stream"}
	input := []events.DatasetInput{{Name: "train", Digest: "d1", SourceType: "local", Source: "{}"}}
	writes := map[string]func() error{
		"params": func() error {
			_, _, err := svc.LogParams(ctx, om, owner, ps.Slug, run.ID, []events.Param{{Key: "lr", Value: "0.1"}})
			return err
		},
		"tags": func() error {
			_, _, err := svc.SetRunTags(ctx, om, owner, ps.Slug, run.ID, map[string]string{"k": "v"})
			return err
		},
		"update": func() error {
			_, _, err := svc.UpdateRun(ctx, om, owner, ps.Slug, run.ID, tracking.UpdateRun{Name: new("renamed")})
			return err
		},
		"batch": func() error {
			_, _, _, err := svc.LogBatch(ctx, om, owner, ps.Slug, run.ID, tracking.Batch{Tags: map[string]string{"b": "1"}})
			return err
		},
		"inputs": func() error {
			_, _, err := svc.LogInputs(ctx, om, owner, ps.Slug, run.ID, input)
			return err
		},
		"artifact check": func() error { return svc.AuthorizeArtifactWrite(ctx, owner, ps.Slug, run.ID) },
		"artifact": func() error {
			_, _, _, err := svc.RecordArtifact(ctx, om, owner, ps.Slug, run.ID, art)
			return err
		},
	}
	if _, _, err := svc.DeleteExperiment(ctx, om, owner, ps.Slug, run.ExperimentID, true); err != nil {
		t.Fatal(err)
	}
	for name, write := range writes {
		if err := write(); err == nil {
			t.Errorf("%s in a deleted experiment succeeded", name)
		} else if e, ok := handlers.AsError(err); !ok || e.Code != "experiment-deleted" {
			t.Errorf("%s in a deleted experiment: %v, want experiment-deleted", name, err)
		}
	}
	// Deleting the run stays possible; restoring it waits for the experiment.
	if _, _, err := svc.DeleteRun(ctx, om, owner, ps.Slug, run.ID, true); err != nil {
		t.Fatalf("delete a run of a deleted experiment: %v", err)
	}
	_, _, err := svc.DeleteRun(ctx, om, owner, ps.Slug, run.ID, false)
	wantCode(t, err, "experiment-deleted")
	if _, _, err := svc.DeleteExperiment(ctx, om, owner, ps.Slug, run.ExperimentID, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.DeleteRun(ctx, om, owner, ps.Slug, run.ID, false); err != nil {
		t.Fatal(err)
	}
	for name, write := range writes {
		if err := write(); err != nil {
			t.Errorf("%s once the experiment is restored: %v", name, err)
		}
	}
	r, err := svc.Run(ctx, owner, ps.Slug, run.ID)
	if err != nil || r.Artifacts[art.Path].Digest != art.Digest || len(r.Inputs) != 1 || r.Params["lr"] != "0.1" {
		t.Fatalf("the run after its writes: %+v, %v", r, err)
	}
}
