package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// registryKeys orders each registry table by its primary key for dumps.
var registryKeys = map[string]string{
	"projects": "id", "project_members": "project_id, user_id", "models": "id",
	"model_versions": "model_id, version", "model_aliases": "model_id, alias", "model_artifacts": "model_id, version, path",
}

// dumpRegistry returns every registry table's rows as JSON text in key order.
func dumpRegistry(t *testing.T, pool *pgxpool.Pool) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for table, key := range registryKeys {
		out[table] = dumpOrdered(t, pool, table, key)
		if len(out[table]) == 0 {
			t.Fatalf("%s is empty; the scripted history should fill it", table)
		}
	}
	return out
}

// wantModel is what the scripted history says a model in the first project is.
type wantModel struct {
	name    string
	tags    map[string]string
	deleted bool
	seq     uint64 // its last event
}

// A scripted registry history, written by the real service and applied by
// runners, answers every registry query as the history says; after a reset
// the runners rebuild every registry table row for row.
func TestRegistryProjections(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	q := NewQueries(f.pool)
	for _, p := range All() {
		start(t, NewRunner(f.pool, f.store, p, testRunnerConfig()))
	}
	waitCaughtUp(t, f.pool, f.seed(t, 3), "users")
	var u []string // user ids in e-mail order: user0@, user1@, user2@
	rows, err := f.pool.Query(ctx, "SELECT id::text FROM users ORDER BY email")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		u = append(u, id)
	}
	if rows.Err() != nil || len(u) != 3 {
		t.Fatalf("seeded users: %v, %v", u, rows.Err())
	}
	ext := uuid.NewString() // a member the users projection does not know
	stranger := uuid.NewString()
	p0, p1 := authz.Principal{UserID: u[0], Role: authz.RoleMember}, authz.Principal{UserID: u[1], Role: authz.RoleMember}

	// The service stamps each command with its clock, read once per command:
	// after a command, at is its events' time.
	at := base.Add(24 * time.Hour)
	clock := func() time.Time {
		at = at.Add(time.Second)
		return at
	}
	svc := registry.NewService(f.store, func(context.Context, string) (bool, error) { return true, nil }, nil, clock)
	meta := func(p authz.Principal) events.Meta {
		return events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: p.UserID}}
	}
	noErr := func(what string, seq uint64, err error) {
		t.Helper()
		if err != nil || seq == 0 {
			t.Fatalf("%s: seq %d, %v", what, seq, err)
		}
	}
	project := func(p authz.Principal, name string) registry.ProjectState {
		t.Helper()
		ps, seq, err := svc.CreateProject(ctx, meta(p), p, name, "")
		noErr("create project "+name, seq, err)
		return ps
	}

	// Projects and members.
	cv := project(p0, "Computer Vision")
	cvCreated := at
	nlp := project(p1, "NLP Lab")
	old := project(p0, "Old Stuff")
	restored := project(p0, "Restored")
	for _, m := range []struct {
		user string
		role authz.ProjectRole
	}{{u[1], authz.ProjectEditor}, {u[2], authz.ProjectViewer}, {ext, authz.ProjectApprover}, {u[1], authz.ProjectApprover}} {
		_, seq, err := svc.SetMember(ctx, meta(p0), p0, cv.Slug, m.user, m.role)
		noErr("set member", seq, err)
	}
	_, seq, err := svc.RemoveMember(ctx, meta(p0), p0, cv.Slug, ext)
	noErr("remove member", seq, err)
	_, seq, err = svc.UpdateProject(ctx, meta(p0), p0, cv.Slug, new("images"))
	noErr("update project", seq, err)
	_, seq, err = svc.ArchiveProject(ctx, meta(p0), p0, old.Slug, true)
	noErr("archive", seq, err)
	for _, archive := range []bool{true, false} {
		_, seq, err = svc.ArchiveProject(ctx, meta(p0), p0, restored.Slug, archive)
		noErr("archive/restore", seq, err)
	}

	// Models of the first project; the same name again in another project.
	want := map[string]*wantModel{}
	createModel := func(p authz.Principal, ps registry.ProjectState, name string, tags map[string]string) registry.ModelState {
		t.Helper()
		m, seq, err := svc.CreateModel(ctx, meta(p), p, ps.Slug, registry.CreateModel{Name: name, Description: "about " + name, Tags: tags})
		noErr("create model "+name, seq, err)
		if ps.ID == cv.ID {
			want[strings.ToLower(name)] = &wantModel{name: name, tags: nonNil(tags), seq: seq}
		}
		return m
	}
	modelCmd := func(p authz.Principal, name string, action authz.Action, decide func(registry.ModelState) ([]handlers.Change, error)) uint64 {
		t.Helper()
		_, seq, err := svc.UpdateModelFunc(ctx, meta(p), p, cv.Slug, name, action,
			func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) { return decide(m) })
		noErr(name+" command", seq, err)
		want[strings.ToLower(name)].seq = seq
		return seq
	}
	vision, nlpTag, classify := map[string]string{"team": "vision"}, map[string]string{"team": "nlp"}, map[string]string{"task": "classify"}
	resnet := createModel(p0, cv, "resnet", map[string]string{"team": "vision", "task": "classify"})
	for _, m := range []struct {
		name string
		tags map[string]string
	}{{"alpha", vision}, {"Alpha_2", nlpTag}, {"alphaX", nil}, {"alpha_1", classify}, {"a_b", nil}, {"axb", nil},
		{"beta", vision}, {"gamma", nil}, {"delta", nil}, {"epsilon", vision}, {"zeta", nil}} {
		createModel(p0, cv, m.name, m.tags)
	}
	createModel(p1, nlp, "alpha", vision)
	modelCmd(p0, "epsilon", authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideDeleteModel(m, true, false)
	})
	want["epsilon"].deleted = true
	for _, del := range []bool{true, false} {
		modelCmd(p0, "delta", authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideDeleteModel(m, del, false)
		})
	}
	betaTags := map[string]string{"team": "vision", "x": "y"}
	modelCmd(p0, "beta", authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateModel(m, new("new description"), betaTags)
	})
	want["beta"].tags = betaTags
	modelCmd(p0, "gamma", authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateModel(m, nil, vision)
	})
	want["gamma"].tags = vision
	// A rename: the row follows it (and a rebuild gives it again).
	omega, seq, err := svc.RenameModel(ctx, meta(p0), p0, cv.Slug, "zeta", "Omega")
	noErr("rename zeta", seq, err)
	want["omega"] = want["zeta"]
	want["omega"].name, want["omega"].seq = "Omega", seq
	delete(want, "zeta")

	// Versions of resnet, their stages, aliases and artifacts; version v
	// names run runOf(v) (the service finds runs; here the decider is told).
	runOf := func(v int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", v) }
	sig := json.RawMessage(`{"inputs": [{"name": "x", "type": "float"}]}`)
	for v := 1; v <= 7; v++ {
		modelCmd(p1, "resnet", authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
			c := registry.RegisterVersion{Description: fmt.Sprint("version ", v), Tags: map[string]string{"n": fmt.Sprint(v)},
				Source: fmt.Sprint("s3://runs/", v), RunID: runOf(v), RunFound: true, Metrics: map[string]float64{"acc": 0.5 + float64(v)/100}}
			if v == 1 {
				c.Signature = sig
			}
			return registry.DecideRegisterVersion(m, c)
		})
	}
	v1Created := at
	version := func(v int, decide func(registry.ModelState, int) ([]handlers.Change, error)) uint64 {
		t.Helper()
		return modelCmd(p0, "resnet", authz.VersionPromote, func(m registry.ModelState) ([]handlers.Change, error) { return decide(m, v) })
	}
	version(2, func(m registry.ModelState, v int) ([]handlers.Change, error) {
		return registry.DecideUpdateVersion(m, v, new("second"), map[string]string{"n": "two"})
	})
	version(7, func(m registry.ModelState, v int) ([]handlers.Change, error) {
		return registry.DecideUpdateVersion(m, v, nil, map[string]string{"n": "seven"})
	})
	stage := func(v int, to string, archive bool) {
		version(v, func(m registry.ModelState, v int) ([]handlers.Change, error) {
			return registry.DecideTransition(m, v, to, archive)
		})
	}
	stage(1, events.StageProduction, false)
	stage(2, events.StageStaging, false)
	stage(3, events.StageStaging, false)
	stage(4, events.StageStaging, true)    // archives 2 and 3
	stage(5, events.StageProduction, true) // archives 1
	_, _, err = svc.UpdateModelFunc(ctx, meta(p0), p0, cv.Slug, "resnet", authz.VersionPromote,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideTransition(m, 6, events.StageProduction, false)
		})
	if e, ok := handlers.AsError(err); !ok || e.Code != "production-occupied" {
		t.Fatalf("second production version without archive_existing: %v", err)
	}
	record := func(v int, path, digest string, size int64) time.Time {
		version(v, func(m registry.ModelState, v int) ([]handlers.Change, error) {
			return registry.DecideRecordArtifact(m, v, registry.Artifact{Path: path, Digest: digest, Size: size, ContentType: "application/octet-stream"})
		})
		return at
	}
	d1, d2, d3, d4 := "sha256:d1", "sha256:d2", "sha256:d3", "sha256:d4"
	record(3, "x.bin", d4, 4)
	record(5, "model/weights.bin", d1, 10)
	reRecorded := record(5, "model/weights.bin", d2, 20)
	configAt := record(5, "config.json", d3, 30)
	alias := func(name string, v int) {
		version(v, func(m registry.ModelState, v int) ([]handlers.Change, error) {
			return registry.DecideSetAlias(m, name, v)
		})
	}
	alias("champion", 5)
	alias("challenger", 4)
	alias("old", 3)
	alias("best", 5)
	alias("champion", 6) // reassigned
	version(3, func(m registry.ModelState, v int) ([]handlers.Change, error) {
		return registry.DecideDeleteVersion(m, v, true) // "old" points at it: an approver's call
	})
	version(0, func(m registry.ModelState, _ int) ([]handlers.Change, error) {
		return registry.DecideDeleteAlias(m, "challenger")
	})

	last := f.lastSeq(t)
	names := make([]string, 0, len(All()))
	for _, p := range All() {
		names = append(names, p.Name())
	}
	waitCaughtUp(t, f.pool, last, names...)

	// Projects.
	slugs := func(page Page[Project]) (out []string) {
		for _, p := range page.Items {
			out = append(out, p.Slug+":"+p.Role)
		}
		return out
	}
	listProjects := func(user string, all, archived bool, limit int) []string {
		t.Helper()
		var out []string
		token := ""
		for range 20 {
			page, err := q.ListProjects(ctx, user, all, archived, "", token, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Items) > limit {
				t.Fatalf("page of %d items, limit %d", len(page.Items), limit)
			}
			out = append(out, slugs(page)...)
			if token = page.NextPageToken; token == "" {
				return out
			}
		}
		t.Fatal("ListProjects never ended")
		return nil
	}
	projCases := []struct {
		user          string
		all, archived bool
		want          []string
	}{
		{u[0], false, false, []string{"computer-vision:owner", "restored:owner"}},
		{u[0], false, true, []string{"computer-vision:owner", "old-stuff:owner", "restored:owner"}},
		{u[0], true, false, []string{"computer-vision:owner", "nlp-lab:", "restored:owner"}},
		{u[0], true, true, []string{"computer-vision:owner", "nlp-lab:", "old-stuff:owner", "restored:owner"}},
		{u[1], false, true, []string{"computer-vision:approver", "nlp-lab:owner"}},
		{u[2], false, false, []string{"computer-vision:viewer"}},
		{ext, false, true, nil},
		{stranger, false, true, nil},
		{stranger, true, true, []string{"computer-vision:", "nlp-lab:", "old-stuff:", "restored:"}},
	}
	for _, tc := range projCases {
		for _, limit := range []int{1, 2, 100} {
			if got := listProjects(tc.user, tc.all, tc.archived, limit); !slices.Equal(got, tc.want) {
				t.Errorf("ListProjects(%s, all=%v, archived=%v, limit %d) = %v, want %v", tc.user, tc.all, tc.archived, limit, got, tc.want)
			}
		}
	}
	byRef := []struct {
		ref, user, role string
		err             error
	}{
		{"computer-vision", u[1], "approver", nil},
		{cv.ID, u[2], "viewer", nil},
		{strings.ToUpper(cv.ID), u[0], "owner", nil},
		{"computer-vision", ext, "", nil},
		{"computer-vision", "not-a-uuid", "", nil},
		{"no-such", u[0], "", ErrNotFound},
		{uuid.NewString(), u[0], "", ErrNotFound},
	}
	for _, tc := range byRef {
		p, err := q.ProjectByRef(ctx, tc.ref, tc.user)
		if !errors.Is(err, tc.err) {
			t.Fatalf("ProjectByRef(%s, %s): %v, want %v", tc.ref, tc.user, err, tc.err)
		}
		if err == nil && (p.ID != cv.ID || p.Role != tc.role || p.Name != "Computer Vision" || p.Description != "images" || p.Archived ||
			!p.CreatedAt.Equal(cvCreated) || !p.UpdatedAt.After(p.CreatedAt)) {
			t.Fatalf("ProjectByRef(%s, %s) = %+v, want role %q", tc.ref, tc.user, p, tc.role)
		}
	}
	if p, err := q.ProjectByRef(ctx, old.ID, u[0]); err != nil || !p.Archived {
		t.Fatalf("archived project: %+v, %v", p, err)
	}
	if p, err := q.ProjectByRef(ctx, restored.Slug, u[0]); err != nil || p.Archived {
		t.Fatalf("restored project: %+v, %v", p, err)
	}
	for user, role := range map[string]string{u[0]: "owner", u[1]: "approver", u[2]: "viewer", ext: "", stranger: ""} {
		if got, err := q.MemberRole(ctx, cv.ID, user); err != nil || got != role {
			t.Fatalf("MemberRole(%s) = %q, %v; want %q", user, got, err, role)
		}
	}
	members, err := q.ListMembers(ctx, cv.ID)
	if err != nil {
		t.Fatal(err)
	}
	var gotMembers []string
	for _, m := range members {
		gotMembers = append(gotMembers, fmt.Sprintf("%s %s %s %s", m.UserID, m.Email, m.Name, m.Role))
	}
	wantMembers := []string{u[0] + " user0@example.com User 0 owner", u[1] + " user1@example.com User 1 approver",
		u[2] + " user2@example.com User 2 viewer"}
	if !slices.Equal(gotMembers, wantMembers) {
		t.Fatalf("ListMembers = %v, want %v", gotMembers, wantMembers)
	}

	// Models.
	beta, err := q.Model(ctx, cv.ID, "BETA")
	if err != nil {
		t.Fatal(err)
	}
	if beta.Description != "new description" || !maps.Equal(beta.Tags, betaTags) {
		t.Errorf("model beta after an update: description %q, tags %v", beta.Description, beta.Tags)
	}
	rm, err := q.Model(ctx, cv.ID, "ResNet")
	if err != nil {
		t.Fatal(err)
	}
	if rm.ID != resnet.ID || rm.ProjectID != cv.ID || rm.LatestVersion != 7 || rm.Deleted ||
		!maps.Equal(rm.Aliases, map[string]int{"best": 5, "champion": 6}) || !maps.Equal(rm.Tags, map[string]string{"team": "vision", "task": "classify"}) {
		t.Fatalf("model resnet = %+v", rm)
	}
	if m, err := q.Model(ctx, cv.ID, "epsilon"); err != nil || !m.Deleted {
		t.Fatalf("deleted model: %+v, %v", m, err)
	}
	if _, err := q.Model(ctx, cv.ID, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing model: %v", err)
	}
	if m, err := q.Model(ctx, cv.ID, "OMEGA"); err != nil || m.ID != omega.ID || m.Name != "Omega" {
		t.Fatalf("renamed model: %+v, %v", m, err)
	}
	if _, err := q.Model(ctx, cv.ID, "zeta"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a renamed model's old name: %v", err)
	}
	if m, err := q.Model(ctx, nlp.ID, "alpha"); err != nil || m.ProjectID != nlp.ID {
		t.Fatalf("alpha of the other project: %+v, %v", m, err)
	}

	expect := func(mf ModelFilter) []string {
		var ms []*wantModel
		for key, m := range want {
			if m.deleted && !mf.IncludeDeleted || mf.NamePrefix != "" && !strings.HasPrefix(key, strings.ToLower(mf.NamePrefix)) {
				continue
			}
			if v, ok := m.tags[mf.TagKey]; mf.TagKey != "" && (!ok || mf.TagValue != "" && v != mf.TagValue) {
				continue
			}
			ms = append(ms, m)
		}
		slices.SortFunc(ms, func(a, b *wantModel) int {
			if mf.OrderBy == "updated" {
				return int(b.seq) - int(a.seq)
			}
			return strings.Compare(strings.ToLower(a.name), strings.ToLower(b.name))
		})
		out := []string{}
		for _, m := range ms {
			out = append(out, m.name)
		}
		return out
	}
	listModels := func(mf ModelFilter) []string {
		t.Helper()
		project := mf.ProjectID
		out := []string{}
		seen := map[string]bool{}
		for range 50 {
			page, err := q.ListModels(ctx, mf)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Items) > mf.Limit {
				t.Fatalf("page of %d, limit %d", len(page.Items), mf.Limit)
			}
			for _, m := range page.Items {
				if seen[m.ID] {
					t.Fatalf("%+v: model %s on two pages", mf, m.Name)
				}
				seen[m.ID] = true
				if m.ProjectID != project {
					t.Fatalf("model %s of project %s listed", m.Name, m.ProjectID)
				}
				out = append(out, m.Name)
			}
			if mf.PageToken = page.NextPageToken; mf.PageToken == "" {
				return out
			}
		}
		t.Fatal("ListModels never ended")
		return nil
	}
	filters := []ModelFilter{
		{},
		{IncludeDeleted: true},
		{NamePrefix: "ALPHA"},
		{NamePrefix: "alpha_"}, // '_' is literal: not alphaX
		{NamePrefix: "a_"},     // not axb, not alpha*
		{NamePrefix: "%"},
		{NamePrefix: "a%"},
		{NamePrefix: `a\`},
		{NamePrefix: "zzz"},
		{TagKey: "team"},
		{TagKey: "team", IncludeDeleted: true},
		{TagKey: "team", TagValue: "vision"},
		{TagKey: "task", TagValue: "classify"},
		{TagKey: "team", TagValue: "nope"},
		{TagKey: "nope"},
		{NamePrefix: "a", TagKey: "team"},
	}
	for _, base := range filters {
		for _, order := range []string{"", "name", "updated"} {
			for _, limit := range []int{1, 3, 100} {
				mf := base
				mf.ProjectID, mf.OrderBy, mf.Limit = cv.ID, order, limit
				if got, w := listModels(mf), expect(mf); !slices.Equal(got, w) {
					t.Errorf("ListModels(%+v) = %v, want %v", mf, got, w)
				}
			}
		}
	}
	if got := listModels(ModelFilter{ProjectID: nlp.ID, Limit: 10}); !slices.Equal(got, []string{"alpha"}) {
		t.Errorf("models of the other project: %v", got)
	}
	if _, err := q.ListModels(ctx, ModelFilter{ProjectID: cv.ID, Limit: 10, PageToken: "%%%"}); !errors.Is(err, ErrBadPageToken) {
		t.Errorf("bad page token: %v", err)
	}

	// Versions.
	listVersions := func(st string, deleted bool, limit int) []int {
		t.Helper()
		var out []int
		token := ""
		for range 20 {
			page, err := q.ListVersions(ctx, resnet.ID, st, deleted, token, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Items) > limit {
				t.Fatalf("page of %d, limit %d", len(page.Items), limit)
			}
			for _, v := range page.Items {
				out = append(out, v.Version)
			}
			if token = page.NextPageToken; token == "" {
				return out
			}
		}
		t.Fatal("ListVersions never ended")
		return nil
	}
	verCases := []struct {
		stage   string
		deleted bool
		want    []int
	}{
		{"", false, []int{1, 2, 4, 5, 6, 7}},
		{"", true, []int{1, 2, 3, 4, 5, 6, 7}},
		{events.StageStaging, false, []int{4}},
		{events.StageArchived, false, []int{1, 2}},
		{events.StageArchived, true, []int{1, 2, 3}},
		{events.StageProduction, false, []int{5}},
		{events.StageNone, false, []int{6, 7}},
		{"bogus", true, nil},
	}
	for _, tc := range verCases {
		for _, limit := range []int{1, 2, 3, 100} {
			if got := listVersions(tc.stage, tc.deleted, limit); !slices.Equal(got, tc.want) {
				t.Errorf("ListVersions(stage %q, deleted %v, limit %d) = %v, want %v", tc.stage, tc.deleted, limit, got, tc.want)
			}
		}
	}
	type verWant struct {
		desc, stage string
		tags        map[string]string
		deleted     bool
		aliases     []string
	}
	for v, w := range map[int]verWant{
		1: {"version 1", events.StageArchived, map[string]string{"n": "1"}, false, nil},
		2: {"second", events.StageArchived, map[string]string{"n": "two"}, false, nil},
		3: {"version 3", events.StageArchived, map[string]string{"n": "3"}, true, nil},
		4: {"version 4", events.StageStaging, map[string]string{"n": "4"}, false, nil},
		5: {"version 5", events.StageProduction, map[string]string{"n": "5"}, false, []string{"best"}},
		6: {"version 6", events.StageNone, map[string]string{"n": "6"}, false, []string{"champion"}},
		7: {"version 7", events.StageNone, map[string]string{"n": "seven"}, false, nil},
	} {
		got, err := q.Version(ctx, resnet.ID, v)
		if err != nil {
			t.Fatal(err)
		}
		if got.ModelID != resnet.ID || got.Version != v || got.Description != w.desc || got.Stage != w.stage || got.Deleted != w.deleted ||
			!maps.Equal(got.Tags, w.tags) || len(got.Aliases) != len(w.aliases) || len(w.aliases) > 0 && !slices.Equal(got.Aliases, w.aliases) ||
			got.Source != fmt.Sprint("s3://runs/", v) || got.RunID != runOf(v) ||
			!maps.Equal(got.Metrics, map[string]float64{"acc": 0.5 + float64(v)/100}) {
			t.Errorf("version %d = %+v, want %+v", v, got, w)
		}
	}
	v1, err := q.Version(ctx, resnet.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	var gotSig, wantSig any
	if json.Unmarshal(v1.Signature, &gotSig) != nil || json.Unmarshal(sig, &wantSig) != nil || !reflect.DeepEqual(gotSig, wantSig) {
		t.Errorf("version 1 signature %s, want %s", v1.Signature, sig)
	}
	if v2, err := q.Version(ctx, resnet.ID, 2); err != nil || v2.Signature != nil {
		t.Errorf("version 2 signature %q, %v; want none", v2.Signature, err)
	}
	if v1.CreatedAt.Before(cvCreated) || !v1.UpdatedAt.After(v1.CreatedAt) || v1.CreatedAt.After(v1Created) {
		t.Errorf("version 1 created %v updated %v", v1.CreatedAt, v1.UpdatedAt)
	}
	if _, err := q.Version(ctx, resnet.ID, 8); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing version: %v", err)
	}
	for a, w := range map[string]int{"champion": 6, "best": 5, "old": 0, "challenger": 0, "latest": 0} {
		got, err := q.AliasVersion(ctx, resnet.ID, a)
		if w == 0 && !errors.Is(err, ErrNotFound) || w != 0 && (err != nil || got != w) {
			t.Errorf("AliasVersion(%s) = %d, %v; want %d", a, got, err, w)
		}
	}

	// Artifacts.
	page, err := q.ListArtifacts(ctx, resnet.ID, 5, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	arts := page.Items
	wantArts := []ArtifactEntry{
		{Path: "config.json", Digest: d3, Size: 30, ContentType: "application/octet-stream", RecordedAt: configAt},
		{Path: "model/weights.bin", Digest: d2, Size: 20, ContentType: "application/octet-stream", RecordedAt: reRecorded},
	}
	if len(arts) != len(wantArts) {
		t.Fatalf("artifacts of version 5: %+v", arts)
	}
	for i := range arts {
		if arts[i].Path != wantArts[i].Path || arts[i].Digest != wantArts[i].Digest || arts[i].Size != wantArts[i].Size ||
			arts[i].ContentType != wantArts[i].ContentType || !arts[i].RecordedAt.Equal(wantArts[i].RecordedAt) {
			t.Fatalf("artifact %d = %+v, want %+v", i, arts[i], wantArts[i])
		}
	}
	// One at a time: the cursor is the last path, bytewise.
	first, err := q.ListArtifacts(ctx, resnet.ID, 5, "", 1)
	if err != nil || len(first.Items) != 1 || first.Items[0].Path != "config.json" || first.NextPageToken == "" {
		t.Fatalf("first page of one: %+v, %v", first, err)
	}
	second, err := q.ListArtifacts(ctx, resnet.ID, 5, first.NextPageToken, 1)
	if err != nil || len(second.Items) != 1 || second.Items[0].Path != "model/weights.bin" || second.NextPageToken != "" {
		t.Fatalf("second page of one: %+v, %v", second, err)
	}
	if pg, err := q.ListArtifacts(ctx, resnet.ID, 3, "", 50); err != nil || len(pg.Items) != 1 || pg.Items[0].Digest != d4 {
		t.Fatalf("artifacts of deleted version 3: %+v, %v", pg, err)
	}
	if pg, err := q.ListArtifacts(ctx, resnet.ID, 4, "", 50); err != nil || len(pg.Items) != 0 {
		t.Fatalf("artifacts of version 4: %+v, %v", pg, err)
	}
	if a, err := q.Artifact(ctx, resnet.ID, 5, "model/weights.bin"); err != nil || a.Digest != d2 {
		t.Fatalf("Artifact: %+v, %v", a, err)
	}
	if _, err := q.Artifact(ctx, resnet.ID, 5, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing artifact: %v", err)
	}
	refs, err := q.ReferencedDigests(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for digest, w := range map[string]bool{d1: false, d2: true, d3: true, d4: true, "sha256:none": false} {
		if got := refs[digest]; got != w {
			t.Errorf("ReferencedDigests[%s] = %v; want %v", digest, got, w)
		}
	}
	if _, err := q.ReferencedDigests(ctx, 1<<40); !errors.Is(err, ErrBehind) {
		t.Errorf("ReferencedDigests past the checkpoint: %v, want ErrBehind", err)
	}

	// Rebuild equivalence: reset, let the runners replay, compare row for row.
	before, beforeIdentity := dumpRegistry(t, f.pool), dumpAll(t, f.pool)
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, last, names...)
	sameDump(t, dumpRegistry(t, f.pool), before)
	sameDump(t, dumpAll(t, f.pool), beforeIdentity)
}

// An update that changes only the description leaves the tags alone, in
// the read model as in the event (whose tags are omitted, i.e. unchanged).
func TestModelDescriptionOnlyUpdateKeepsTags(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	start(t, NewRunner(f.pool, f.store, Models{}, testRunnerConfig()))
	owner := authz.Principal{UserID: uuid.NewString(), Role: authz.RoleMember}
	meta := events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: owner.UserID}}
	svc := registry.NewService(f.store, func(context.Context, string) (bool, error) { return true, nil }, nil, nil)
	ps, _, err := svc.CreateProject(ctx, meta, owner, "Tags", "")
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{"team": "vision"}
	m, _, err := svc.CreateModel(ctx, meta, owner, ps.Slug, registry.CreateModel{Name: "m", Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	for _, decide := range []func(registry.ModelState) ([]handlers.Change, error){
		func(m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideRegisterVersion(m, registry.RegisterVersion{Tags: tags})
		},
		func(m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideUpdateModel(m, new("changed"), nil)
		},
		func(m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideUpdateVersion(m, 1, new("changed"), nil)
		},
	} {
		if _, _, err := svc.UpdateModelFunc(ctx, meta, owner, ps.Slug, "m", authz.ModelWrite,
			func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) { return decide(m) }); err != nil {
			t.Fatal(err)
		}
	}
	waitCaughtUp(t, f.pool, f.lastSeq(t), "models")
	q := NewQueries(f.pool)
	got, err := q.Model(ctx, ps.ID, "m")
	if err != nil {
		t.Fatal(err)
	}
	v, err := q.Version(ctx, m.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	var modelTags, versionTags string
	if err := f.pool.QueryRow(ctx, `SELECT m.tags::text, v.tags::text FROM models m JOIN model_versions v ON v.model_id = m.id
		WHERE m.id = $1`, m.ID).Scan(&modelTags, &versionTags); err != nil {
		t.Fatal(err)
	}
	if got.Description != "changed" || !maps.Equal(got.Tags, tags) {
		t.Errorf("model after a description-only update: description %q, tags %v (stored %s); want tags %v", got.Description, got.Tags, modelTags, tags)
	}
	if v.Description != "changed" || !maps.Equal(v.Tags, tags) {
		t.Errorf("version after a description-only update: description %q, tags %v (stored %s); want tags %v", v.Description, v.Tags, versionTags, tags)
	}
	page, err := q.ListModels(ctx, ModelFilter{ProjectID: ps.ID, TagKey: "team", TagValue: "vision", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 {
		t.Errorf("tag filter team=vision finds %d models, want 1", len(page.Items))
	}

	// Empty tags (not nil) clear them.
	if _, _, err := svc.UpdateModelFunc(ctx, meta, owner, ps.Slug, "m", authz.ModelWrite,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideUpdateModel(m, nil, map[string]string{})
		}); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, f.lastSeq(t), "models")
	if err := f.pool.QueryRow(ctx, `SELECT tags::text FROM models WHERE id = $1`, m.ID).Scan(&modelTags); err != nil || modelTags != "{}" {
		t.Errorf("model tags after clearing: %s, %v; want {}", modelTags, err)
	}
}
