package api_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Rule 5: a command waits only for the projections its answer and the next
// natural read need. Every command route names them, and none names audit,
// so with the audit projection stalled (its checkpoint row locked by
// another transaction) identity and registry commands still answer 201 at
// once; before, every command waited 2 s for all projections and answered
// 202 pending.
func TestCommandsWaitOnlyForTheirProjections(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	var lingering []string // projections whose runners hold events back to batch them
	for _, p := range projections.All() {
		if _, ok := p.(projections.Lingering); ok {
			lingering = append(lingering, p.Name())
		}
	}
	if !slices.Contains(lingering, "audit") {
		t.Fatalf("lingering projections %v: audit gates no command, so it batches", lingering)
	}
	for _, rt := range e.P.API.Routes() {
		if !rt.Command {
			continue
		}
		if len(rt.Await) == 0 || slices.ContainsFunc(rt.Await, func(n string) bool { return slices.Contains(lingering, n) }) {
			t.Errorf("%s %s waits for %v: want its family's projections, none that lingers (%v)", rt.Method, rt.Pattern, rt.Await, lingering)
		}
	}
	admin := e.Admin("root@await.test").AccessToken

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, err := e.P.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // the stall ends with the test
	if _, err := tx.Exec(ctx, "SELECT 1 FROM projection_checkpoints WHERE name = 'audit' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		path  string
		token string
		body  any
	}{
		{"/api/v1/auth/register", "", map[string]string{"email": "w@await.test", "password": testenv.Password, "name": "W"}},
		{projectsPath, admin, map[string]any{"name": "Await"}},
		{projectsPath + "/await/models", admin, map[string]any{"name": "m"}},
		{projectsPath + "/await/models/m/versions", admin, map[string]any{"description": "v1"}},
	} {
		start := time.Now()
		r := e.Do("POST", c.path, c.token, c.body)
		if r.Status != http.StatusCreated || r.Header.Get("Maestro-Consistency") != "" {
			t.Fatalf("POST %s with audit stalled: %d %v after %s, want 201 at once", c.path, r.Status, r.Header, time.Since(start))
		}
	}
}
