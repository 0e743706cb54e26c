package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/filter"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Registry searches page through every match exactly once in the order
// asked for (times, names, numbers; ties broken as MLflow breaks them),
// bind their tokens to the search, and answer the same after a rebuild
// (renames included).
func TestRegistrySearch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	start(t, NewRunner(f.pool, f.store, Models{}, testRunnerConfig()))
	ctx, q := testCtx(t), NewQueries(f.pool)
	at := base
	clock := func() time.Time {
		at = at.Add(time.Second)
		return at
	}
	svc := registry.NewService(f.store, func(context.Context, string) (bool, error) { return true, nil }, nil, clock)
	owner := authz.Principal{UserID: uuid.NewString(), Role: authz.RoleMember}
	meta := events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: owner.UserID}}
	var last uint64 // the sequence of the last command
	must := func(seq uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	proj, _, err := svc.CreateProject(ctx, meta, owner, "Search", "")
	if err != nil {
		t.Fatal(err)
	}
	// Models m0..m5 created in that order; each gets versions, m3 is
	// renamed to "a-renamed", m5 is deleted, m1's version 2 too.
	for i := range 6 {
		name := fmt.Sprint("m", i)
		_, seq, err := svc.CreateModel(ctx, meta, owner, proj.ID, registry.CreateModel{Name: name, Tags: map[string]string{"parity": fmt.Sprint(i % 2)}})
		must(seq, err)
		for v := 1; v <= 1+i%3; v++ {
			_, _, seq, err := svc.RegisterVersion(ctx, meta, owner, proj.ID, name, registry.RegisterVersion{Source: fmt.Sprintf("s3://b/%s/%d", name, v)})
			must(seq, err)
		}
	}
	_, seq, err := svc.RenameModel(ctx, meta, owner, proj.ID, "m3", "a-renamed")
	must(seq, err)
	_, seq, err = svc.DeleteModel(ctx, meta, owner, proj.ID, "m5", true)
	must(seq, err)
	_, seq, err = svc.DeleteVersion(ctx, meta, owner, proj.ID, "m1", 2)
	must(seq, err)
	// m0 changes last.
	_, seq, err = svc.UpdateModelFunc(ctx, meta, owner, proj.ID, "m0", authz.ModelWrite,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
			d := "latest"
			return registry.DecideUpdateModel(m, &d, nil)
		})
	must(seq, err)
	waitCaughtUp(t, f.pool, last, Models{}.Name())

	// every page of a search, two rows a page, as name/version.
	models := func(s RegistrySearch) []string {
		t.Helper()
		return allPages(t, proj.ID, s, q.SearchModels, func(m Model) string { return m.Name })
	}
	versions := func(s RegistrySearch) []string {
		t.Helper()
		return allPages(t, proj.ID, s, q.SearchVersions, func(v FoundVersion) string { return fmt.Sprint(v.Name, "/", v.Version) })
	}
	check := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	searches := func() {
		t.Helper()
		check("models by name", models(RegistrySearch{}), "a-renamed", "m0", "m1", "m2", "m4")
		check("models by creation, newest first", models(RegistrySearch{OrderBy: []string{"creation_timestamp DESC"}}),
			"m4", "a-renamed", "m2", "m1", "m0")
		check("models by last update", models(RegistrySearch{OrderBy: []string{"last_updated_timestamp"}}),
			"m2", "m4", "a-renamed", "m1", "m0")
		check("models of a tag", models(RegistrySearch{Filter: "tags.parity = '1'", OrderBy: []string{"name DESC"}}), "m1", "a-renamed")
		check("versions", versions(RegistrySearch{}),
			"a-renamed/1", "m0/1", "m1/1", "m2/3", "m2/2", "m2/1", "m4/2", "m4/1")
		check("versions by number, then name", versions(RegistrySearch{OrderBy: []string{"version_number DESC"}}),
			"m2/3", "m2/2", "m4/2", "a-renamed/1", "m0/1", "m1/1", "m2/1", "m4/1")
		check("versions by creation", versions(RegistrySearch{Filter: "version_number >= 2", OrderBy: []string{"creation_timestamp ASC"}}),
			"m2/2", "m2/3", "m4/2")
	}
	// A malformed filter is the filter's error, before anything is read.
	if _, err := q.SearchVersions(ctx, proj.ID, RegistrySearch{Filter: "name = 'a' OR name = 'b'"}); !errors.As(err, new(*filter.Error)) {
		t.Fatalf("OR: %v", err)
	}
	check("versions by source (m3's source kept its old name)", versions(RegistrySearch{Filter: "source_path LIKE '%/m3/%'"}), "a-renamed/1")
	searches()

	// Tokens are bound to their search; a forged one is refused.
	page, err := q.SearchModels(ctx, proj.ID, RegistrySearch{MaxResults: 1})
	if err != nil || page.NextPageToken == "" {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	for _, s := range []RegistrySearch{
		{PageToken: page.NextPageToken, OrderBy: []string{"name DESC"}},
		{PageToken: page.NextPageToken, Filter: "name = 'm0'"},
		{PageToken: strings.ToUpper(page.NextPageToken)},
		{PageToken: "e30"},
	} {
		if _, err := q.SearchModels(ctx, proj.ID, s); !errors.Is(err, ErrBadPageToken) {
			t.Errorf("token of another search %+v: %v", s, err)
		}
	}
	if _, err := q.SearchVersions(ctx, proj.ID, RegistrySearch{PageToken: page.NextPageToken}); !errors.Is(err, ErrBadPageToken) {
		t.Errorf("a model search's token for versions: %v", err)
	}

	// A rebuild answers the same.
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, last, Models{}.Name())
	searches()
}

// allPages reads every page of a search, two rows a page, naming each row.
func allPages[T any](t *testing.T, projectID string, s RegistrySearch, search func(context.Context, string, RegistrySearch) (Page[T], error),
	name func(T) string) []string {
	t.Helper()
	var out []string
	s.MaxResults = 2
	for {
		page, err := search(context.Background(), projectID, s)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		for _, it := range page.Items {
			out = append(out, name(it))
		}
		if s.PageToken = page.NextPageToken; s.PageToken == "" {
			return out
		}
	}
}
