package registry_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// The service against a real event store: an embedded nats-server per test.
// Two Service instances on two connections stand for two API processes:
// they share nothing but the stream.

func serviceCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func anyUser(context.Context, string) (bool, error) { return true, nil }

// newServices starts an embedded nats-server and returns n services, each on
// its own connection and store.
func newServices(t *testing.T, n int) []*registry.Service {
	t.Helper()
	emb, err := events.StartEmbedded(events.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	out := make([]*registry.Service, n)
	for i := range n {
		nc, err := emb.Connect(fmt.Sprint("test-", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		store, err := events.OpenStore(serviceCtx(t), nc, events.StoreConfig{})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = registry.NewService(store, anyUser, nil, nil)
	}
	return out
}

func principal(role authz.Role) authz.Principal {
	return authz.Principal{UserID: uuid.NewString(), Role: role}
}

func metaOf(p authz.Principal) events.Meta {
	return events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: p.UserID}}
}

// setupModel creates project "vision" owned by p with model "resnet".
func setupModel(t *testing.T, svc *registry.Service, p authz.Principal) (registry.ProjectState, registry.ModelState) {
	t.Helper()
	ctx := serviceCtx(t)
	ps, _, err := svc.CreateProject(ctx, metaOf(p), p, "Vision", "")
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := svc.CreateModel(ctx, metaOf(p), p, ps.Slug, registry.CreateModel{Name: "resnet"})
	if err != nil {
		t.Fatal(err)
	}
	return ps, m
}

func register(svc *registry.Service, ctx context.Context, p authz.Principal, desc string) (registry.ModelState, uint64, error) {
	return svc.UpdateModelFunc(ctx, metaOf(p), p, "vision", "resnet", authz.ModelWrite,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideRegisterVersion(m, registry.RegisterVersion{Description: desc})
		})
}

func promote(svc *registry.Service, ctx context.Context, p authz.Principal, v int, to string, archive bool) (registry.ModelState, uint64, error) {
	return svc.UpdateModelFunc(ctx, metaOf(p), p, "vision", "resnet", authz.VersionPromote,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideTransition(m, v, to, archive)
		})
}

// servicesWithModel starts n services (newServices) and, through the first,
// sets up project "vision" with model "resnet" (setupModel) owned by a new
// member, with versions "v1".."vN" registered.
func servicesWithModel(t *testing.T, n, versions int) ([]*registry.Service, context.Context, authz.Principal, registry.ModelState) {
	t.Helper()
	svcs := newServices(t, n)
	ctx := serviceCtx(t)
	owner := principal(authz.RoleMember)
	_, m := setupModel(t, svcs[0], owner)
	for i := range versions {
		if _, _, err := register(svcs[0], ctx, owner, fmt.Sprint("v", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	return svcs, ctx, owner, m
}

// 50 clients register versions of one model at once, through two processes:
// every command gets its own version, numbered 1..50 with no gap.
func TestConcurrentRegisterVersionIsGapless(t *testing.T) {
	t.Parallel()
	svcs, ctx, p, m := servicesWithModel(t, 2, 0)

	const n = 50
	// decisions counts decider runs: more runs than commands means appends
	// conflicted and were decided again on reloaded state.
	var decisions atomic.Int64
	seqs := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, seqs[i], errs[i] = svcs[i%2].UpdateModelFunc(ctx, metaOf(p), p, "vision", "resnet", authz.ModelWrite,
				func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
					decisions.Add(1)
					return registry.DecideRegisterVersion(m, registry.RegisterVersion{Description: fmt.Sprint("cmd-", i)})
				})
		})
	}
	wg.Wait()
	t.Logf("%d commands took %d decisions (the rest were retries after cross-process conflicts)", n, decisions.Load())
	seen := map[uint64]int{}
	for i, err := range errs {
		if err != nil {
			t.Errorf("command %d: %v", i, err)
			continue
		}
		if prev, dup := seen[seqs[i]]; dup || seqs[i] == 0 {
			t.Errorf("command %d committed at sequence %d (also command %d)", i, seqs[i], prev)
		}
		seen[seqs[i]] = i
	}
	if t.Failed() {
		t.FailNow()
	}

	history, err := svcs[1].ModelHistory(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	byDesc := map[string]int{}
	next := 1
	for _, e := range history {
		if e.Type != events.ModelVersionRegistered {
			continue
		}
		var d events.ModelVersionRegisteredData
		if err := e.Decode(&d); err != nil {
			t.Fatal(err)
		}
		if d.Version != next {
			t.Fatalf("event %d registers version %d, want %d", e.Sequence, d.Version, next)
		}
		if prev, dup := byDesc[d.Description]; dup {
			t.Fatalf("%s registered twice: versions %d and %d", d.Description, prev, d.Version)
		}
		byDesc[d.Description] = d.Version
		next++
	}
	if next-1 != n || len(byDesc) != n {
		t.Fatalf("%d versions registered, want %d", next-1, n)
	}
	for _, svc := range svcs {
		_, got, err := svc.Model(ctx, p, "vision", "resnet")
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Versions) != n {
			t.Fatalf("model has %d versions, want %d", len(got.Versions), n)
		}
		for i, v := range got.Versions {
			if v.Version != i+1 || byDesc[v.Description] != v.Version {
				t.Fatalf("Versions[%d] = %d %q", i, v.Version, v.Description)
			}
		}
	}
}

// Two processes promote different versions to production with
// archive_existing at once, round after round: at no point of the model's
// history are two live versions in production.
func TestConcurrentPromotionKeepsOneProductionVersion(t *testing.T) {
	t.Parallel()
	const rounds = 10
	svcs, ctx, p, m := servicesWithModel(t, 2, 2*rounds)
	for r := range rounds {
		a, b := 2*r+1, 2*r+2
		var wg sync.WaitGroup
		var errA, errB error
		wg.Go(func() { _, _, errA = promote(svcs[0], ctx, p, a, events.StageProduction, true) })
		wg.Go(func() { _, _, errB = promote(svcs[1], ctx, p, b, events.StageProduction, true) })
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatalf("round %d: %v / %v", r, errA, errB)
		}
	}

	history, err := svcs[0].ModelHistory(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	var s registry.ModelState
	promotions := 0
	for _, e := range history {
		if s, err = registry.EvolveModel(s, e); err != nil {
			t.Fatal(err)
		}
		var inProd []int
		for _, v := range s.Versions {
			if v.Stage == events.StageProduction && !v.Deleted {
				inProd = append(inProd, v.Version)
			}
		}
		if len(inProd) > 1 {
			t.Fatalf("after event %d (%s) versions %v are all in production", e.Sequence, e.Type, inProd)
		}
		if e.Type == events.ModelVersionTransition {
			var d events.ModelVersionTransitionData
			if err := e.Decode(&d); err != nil {
				t.Fatal(err)
			}
			if promotions > 0 && (len(d.Archived) != 1 || d.Archived[0].From != events.StageProduction) {
				t.Fatalf("promotion at %d archived %+v, want the previous production version", e.Sequence, d.Archived)
			}
			promotions++
		}
	}
	if promotions != 2*rounds {
		t.Fatalf("%d promotions recorded, want %d", promotions, 2*rounds)
	}
	archived := 0
	for _, v := range s.Versions {
		if v.Stage == events.StageArchived {
			archived++
		}
	}
	if archived != 2*rounds-1 {
		t.Fatalf("%d versions archived, want %d", archived, 2*rounds-1)
	}
	// Without archive_existing the occupied stage is refused.
	_, err = registry.DecideTransition(s, 1, events.StageProduction, false)
	checkErr(t, err, prodOccupied)
	_, _, err = promote(svcs[1], ctx, p, 1, events.StageProduction, false)
	checkErr(t, err, prodOccupied)
}

// Many callers create projects whose names share one slug at once: exactly
// one wins, the rest are told the project exists.
func TestConcurrentCreateProjectSameSlug(t *testing.T) {
	t.Parallel()
	svcs := newServices(t, 2)
	ctx := serviceCtx(t)
	const n = 20
	names := []string{"Shared Name", "shared-name", "SHARED  name!"}
	ps := make([]authz.Principal, n)
	states := make([]registry.ProjectState, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ps[i] = principal(authz.RoleMember)
		wg.Go(func() {
			states[i], _, errs[i] = svcs[i%2].CreateProject(ctx, metaOf(ps[i]), ps[i], names[i%len(names)], "")
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("commands %d and %d both created %q", winner, i, states[i].Slug)
			}
			winner = i
			continue
		}
		checkErr(t, err, projectExists)
	}
	if winner < 0 {
		t.Fatal("no command created the project")
	}
	for _, svc := range svcs {
		got, err := svc.Project(ctx, ps[winner], "shared-name")
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != states[winner].ID || got.RoleOf(ps[winner].UserID) != authz.ProjectOwner || len(got.Members) != 1 {
			t.Fatalf("project = %+v, want the winner's", got)
		}
		// A loser is not a member of it.
		loser := ps[(winner+1)%n]
		checkErr(t, func() error { _, err := svc.Project(ctx, loser, "shared-name"); return err }(), notFound)
	}
}

// The project-role policy as the service enforces it: non-members (and
// references to projects that do not exist) get NotFound, members get
// Forbidden for what their role does not allow.
func TestServiceAuthorization(t *testing.T) {
	t.Parallel()
	svcs := newServices(t, 1)
	svc := svcs[0]
	ctx := serviceCtx(t)
	own := principal(authz.RoleMember)
	ps, _ := setupModel(t, svc, own)
	if _, _, err := register(svc, ctx, own, "first"); err != nil {
		t.Fatal(err)
	}
	users := map[string]authz.Principal{"owner": own}
	for _, r := range []authz.ProjectRole{authz.ProjectViewer, authz.ProjectEditor, authz.ProjectApprover} {
		u := principal(authz.RoleMember)
		if _, _, err := svc.SetMember(ctx, metaOf(own), own, "vision", u.UserID, r); err != nil {
			t.Fatal(err)
		}
		users[string(r)] = u
	}
	users["stranger"] = principal(authz.RoleMember)
	users["admin"] = principal(authz.RoleAdmin)
	users["anonymous"] = authz.Principal{}

	noop := func(registry.ProjectState, registry.ModelState) ([]handlers.Change, error) { return nil, nil }
	do := map[authz.Action]func(p authz.Principal, ref string) error{
		authz.ProjectRead: func(p authz.Principal, ref string) error { _, err := svc.Project(ctx, p, ref); return err },
		authz.ProjectManage: func(p authz.Principal, ref string) error {
			_, _, err := svc.UpdateProject(ctx, metaOf(p), p, ref, nil)
			return err
		},
		authz.ModelWrite: func(p authz.Principal, ref string) error {
			_, _, err := svc.UpdateModelFunc(ctx, metaOf(p), p, ref, "resnet", authz.ModelWrite, noop)
			return err
		},
		authz.VersionPromote: func(p authz.Principal, ref string) error {
			_, _, err := svc.UpdateModelFunc(ctx, metaOf(p), p, ref, "resnet", authz.VersionPromote, noop)
			return err
		},
	}
	ok, forbidden := wantErr{}, wantErr{handlers.Forbidden, "forbidden"}
	want := map[string]map[authz.Action]wantErr{
		"owner":     {authz.ProjectRead: ok, authz.ModelWrite: ok, authz.VersionPromote: ok, authz.ProjectManage: ok},
		"approver":  {authz.ProjectRead: ok, authz.ModelWrite: ok, authz.VersionPromote: ok, authz.ProjectManage: forbidden},
		"editor":    {authz.ProjectRead: ok, authz.ModelWrite: ok, authz.VersionPromote: forbidden, authz.ProjectManage: forbidden},
		"viewer":    {authz.ProjectRead: ok, authz.ModelWrite: forbidden, authz.VersionPromote: forbidden, authz.ProjectManage: forbidden},
		"stranger":  {authz.ProjectRead: notFound, authz.ModelWrite: notFound, authz.VersionPromote: notFound, authz.ProjectManage: notFound},
		"anonymous": {authz.ProjectRead: notFound, authz.ModelWrite: notFound, authz.VersionPromote: notFound, authz.ProjectManage: notFound},
		"admin":     {authz.ProjectRead: ok, authz.ModelWrite: ok, authz.VersionPromote: ok, authz.ProjectManage: ok},
	}
	for who, actions := range want {
		for action, w := range actions {
			for _, ref := range []string{"vision", ps.ID} {
				t.Run(fmt.Sprintf("%s/%s/%s", who, action, ref), func(t *testing.T) {
					checkErr(t, do[action](users[who], ref), w)
				})
			}
			// A project that does not exist looks like one you cannot see.
			t.Run(fmt.Sprintf("%s/%s/missing", who, action), func(t *testing.T) {
				checkErr(t, do[action](users[who], "no-such-project"), notFound)
				checkErr(t, do[action](users[who], uuid.NewString()), notFound)
			})
		}
	}

	// Real commands: the editor writes, the approver promotes, the editor
	// and the viewer cannot promote or write beyond their role.
	if _, _, err := register(svc, ctx, users["editor"], "by editor"); err != nil {
		t.Fatal(err)
	}
	checkErr(t, func() error { _, _, err := register(svc, ctx, users["viewer"], "x"); return err }(), forbidden)
	checkErr(t, func() error {
		_, _, err := promote(svc, ctx, users["editor"], 1, events.StageStaging, false)
		return err
	}(), forbidden)
	checkErr(t, func() error {
		_, _, err := promote(svc, ctx, users["stranger"], 1, events.StageStaging, false)
		return err
	}(), notFound)
	m, seq, err := promote(svc, ctx, users["approver"], 1, events.StageStaging, false)
	if err != nil || seq == 0 {
		t.Fatalf("approver promotion: seq %d, %v", seq, err)
	}
	if v, _ := m.Version(1); v.Stage != events.StageStaging {
		t.Fatalf("version 1 stage %q after promotion", v.Stage)
	}
	// Creating projects needs the member or admin global role.
	checkErr(t, func() error {
		v := principal(authz.RoleViewer)
		_, _, err := svc.CreateProject(ctx, metaOf(v), v, "Mine", "")
		return err
	}(), forbidden)
	// A demoted member loses the right at once.
	if _, _, err := svc.SetMember(ctx, metaOf(own), own, "vision", users["approver"].UserID, authz.ProjectViewer); err != nil {
		t.Fatal(err)
	}
	checkErr(t, func() error {
		_, _, err := promote(svc, ctx, users["approver"], 1, events.StageNone, false)
		return err
	}(), forbidden)
	// An archived project refuses model commands even from its owner.
	if _, _, err := svc.ArchiveProject(ctx, metaOf(own), own, "vision", true); err != nil {
		t.Fatal(err)
	}
	checkErr(t, func() error { _, _, err := register(svc, ctx, own, "late"); return err }(), archivedErr)
}
