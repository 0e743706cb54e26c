package registry_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Deciders are table-tested: given events (folded with the same Evolve
// functions replay uses), when a command, then events or a typed error.

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	projID  = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	modelID = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	owner   = "11111111-1111-4111-8111-111111111111"
	alice   = "22222222-2222-4222-8222-222222222222"
	bob     = "33333333-3333-4333-8333-333333333333"
	runID   = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
)

var (
	projSubj  = events.Subject(events.AggProject, projID)
	modelSubj = events.Subject(events.AggModel, modelID)
)

// ev is a stored event of type typ.
func ev(t *testing.T, subject, typ string, data any) events.Envelope {
	t.Helper()
	e, err := events.New(events.Meta{Actor: events.SystemActor, Time: t0}, subject, typ, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fold replays evs (one minute apart) into a zero state.
func fold[S any](t *testing.T, evolve handlers.Evolve[S], evs []events.Envelope) S {
	t.Helper()
	var s S
	return foldInto(t, evolve, s, evs)
}

func foldInto[S any](t *testing.T, evolve handlers.Evolve[S], s S, evs []events.Envelope) S {
	t.Helper()
	for i, e := range evs {
		e.Sequence = uint64(i + 1)
		e.Time = t0.Add(time.Duration(i) * time.Minute)
		var err error
		if s, err = evolve(s, e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// applied turns decided changes into stored events, so the next command
// sees what replay would.
func applied(t *testing.T, changes []handlers.Change) []events.Envelope {
	t.Helper()
	out := make([]events.Envelope, 0, len(changes))
	for _, c := range changes {
		out = append(out, ev(t, c.Subject, c.Type, c.Data))
	}
	return out
}

func cat(a []events.Envelope, b ...events.Envelope) []events.Envelope {
	return append(append([]events.Envelope{}, a...), b...)
}

// Given-event builders.

func reserved(t *testing.T, kind, name, ownerID string) events.Envelope {
	return ev(t, events.ReservationSubject(events.AggProjectSlug, name), events.NameReserved,
		events.NameReservedData{Kind: kind, Name: name, OwnerID: ownerID})
}

func projectCreated(t *testing.T) events.Envelope {
	return ev(t, projSubj, events.ProjectCreated, events.ProjectCreatedData{ProjectID: projID, Slug: "vision",
		Name: "Vision", Description: "old", OwnerID: owner})
}

func memberSet(t *testing.T, user string, role, prev authz.ProjectRole) events.Envelope {
	return ev(t, projSubj, events.ProjectMemberSet, events.ProjectMemberSetData{ProjectID: projID, UserID: user,
		Role: string(role), PreviousRole: string(prev)})
}

func memberRemoved(t *testing.T, user string, role authz.ProjectRole) events.Envelope {
	return ev(t, projSubj, events.ProjectMemberRemoved, events.ProjectMemberRemovedData{ProjectID: projID, UserID: user, Role: string(role)})
}

func projArchived(t *testing.T) events.Envelope {
	return ev(t, projSubj, events.ProjectArchived, events.ProjectLifecycleData{ProjectID: projID})
}

func projRestored(t *testing.T) events.Envelope {
	return ev(t, projSubj, events.ProjectRestored, events.ProjectLifecycleData{ProjectID: projID})
}

func modelCreated(t *testing.T) events.Envelope {
	return ev(t, modelSubj, events.ModelCreated, events.ModelCreatedData{ModelID: modelID, ProjectID: projID, Name: "resnet",
		Description: "d", Tags: map[string]string{"team": "vision"}})
}

func modelDeleted(t *testing.T) events.Envelope {
	return ev(t, modelSubj, events.ModelDeleted, events.ModelLifecycleData{ModelID: modelID, ProjectID: projID})
}

func versionRegistered(t *testing.T, v int) events.Envelope {
	return ev(t, modelSubj, events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: modelID, Version: v,
		Description: "v", Tags: map[string]string{"k": "v"}, Source: "s3://x"})
}

func versionUpdated(t *testing.T, v int, desc string, tags map[string]string) events.Envelope {
	return ev(t, modelSubj, events.ModelVersionUpdated, events.ModelVersionUpdatedData{ModelID: modelID, Version: v, Description: &desc, Tags: tags})
}

func versionDeleted(t *testing.T, v int, aliases ...string) events.Envelope {
	return ev(t, modelSubj, events.ModelVersionDeleted, events.ModelVersionDeletedData{ModelID: modelID, Version: v, RemovedAliases: aliases})
}

func transitioned(t *testing.T, v int, from, to string, archived ...events.ArchivedVersion) events.Envelope {
	return ev(t, modelSubj, events.ModelVersionTransition, events.ModelVersionTransitionData{ModelID: modelID, Version: v,
		From: from, To: to, Archived: archived})
}

func aliasSet(t *testing.T, alias string, v, prev int) events.Envelope {
	return ev(t, modelSubj, events.ModelAliasSet, events.ModelAliasSetData{ModelID: modelID, Alias: alias, Version: v, PreviousVersion: prev})
}

func aliasDeleted(t *testing.T, alias string, v int) events.Envelope {
	return ev(t, modelSubj, events.ModelAliasDeleted, events.ModelAliasDeletedData{ModelID: modelID, Alias: alias, Version: v})
}

func artifactRecorded(t *testing.T, v int, path, digest string) events.Envelope {
	return ev(t, modelSubj, events.ModelArtifactRecorded, events.ModelArtifactRecordedData{ModelID: modelID, Version: v, Path: path,
		Digest: digest, Size: int64(len(digest)), ContentType: "application/octet-stream"})
}

// withVersions is a created model with versions 1..n, all in stage none.
func withVersions(t *testing.T, n int) []events.Envelope {
	evs := []events.Envelope{modelCreated(t)}
	for v := 1; v <= n; v++ {
		evs = append(evs, versionRegistered(t, v))
	}
	return evs
}

// wantErr is an expected typed failure; the zero value means success.
type wantErr struct {
	kind handlers.Kind
	code string
}

var (
	invalid       = wantErr{handlers.Invalid, "validation-failed"}
	notFound      = wantErr{handlers.NotFound, "not-found"}
	archivedErr   = wantErr{handlers.Conflict, "project-archived"}
	lastOwner     = wantErr{handlers.Conflict, "last-owner"}
	prodOccupied  = wantErr{handlers.Conflict, "production-occupied"}
	projectExists = wantErr{handlers.Conflict, "project-exists"}
	modelExists   = wantErr{handlers.Conflict, "model-exists"}
	forbiddenErr  = wantErr{handlers.Forbidden, "forbidden"}
	artifactLimit = wantErr{handlers.Conflict, "artifact-limit"}
)

func checkErr(t *testing.T, err error, want wantErr) {
	t.Helper()
	if want.kind == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	e, ok := handlers.AsError(err)
	if !ok {
		t.Fatalf("error = %v, want %d/%s", err, want.kind, want.code)
	}
	if e.Kind != want.kind || e.Code != want.code {
		t.Fatalf("error = kind %d code %q (%s), want kind %d code %q", e.Kind, e.Code, e.Detail, want.kind, want.code)
	}
}

func checkChanges(t *testing.T, got, want []handlers.Change) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got  %+v\n want %+v", got, want)
	}
}

func strp(s string) *string { return &s }

func nTags(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[strings.Repeat("k", i+1)] = "v"
	}
	return m
}

func TestSlug(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, slug string }{
		{"My Project!", "my-project"},
		{"  Hello   World  ", "hello-world"},
		{"ABC_123", "abc-123"},
		{"--a--b--", "a-b"},
		{"Café crème", "caf-cr-me"},
		{"!!!", ""},
		{"日本", ""},
	}
	for _, tc := range cases {
		if got := registry.Slug(tc.name); got != tc.slug {
			t.Errorf("Slug(%q) = %q, want %q", tc.name, got, tc.slug)
		}
	}
	valid := map[string]bool{
		"a": true, "my-project": true, "a1": true, strings.Repeat("a", 63): true,
		"": false, "-a": false, "a-": false, "A": false, "a_b": false, strings.Repeat("a", 64): false,
	}
	for s, want := range valid {
		if got := registry.ValidSlug(s); got != want {
			t.Errorf("ValidSlug(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestDecideCreateProject(t *testing.T) {
	t.Parallel()
	ok := func(name, slug, desc string) []handlers.Change {
		return []handlers.Change{
			{Subject: events.ReservationSubject(events.AggProjectSlug, slug), Type: events.NameReserved,
				Data: events.NameReservedData{Kind: "project", Name: slug, OwnerID: projID}},
			{Subject: projSubj, Type: events.ProjectCreated, Data: events.ProjectCreatedData{ProjectID: projID, Slug: slug,
				Name: name, Description: desc, OwnerID: owner}},
		}
	}
	long := strings.Repeat("é", 99) + "a" // 100 runes, slug "a"
	cases := []struct {
		name    string
		given   []events.Envelope // on the slug's reservation subject
		cmdName string
		desc    string
		want    []handlers.Change
		err     wantErr
	}{
		{name: "slug derived", cmdName: "My Project!", want: ok("My Project!", "my-project", "")},
		{name: "name trimmed", cmdName: "  Vision  ", desc: "d", want: ok("Vision", "vision", "d")},
		{name: "name of 100 runes", cmdName: long, want: ok(long, "a", "")},
		{name: "description of 5000 runes", cmdName: "x", desc: strings.Repeat("é", 5000), want: ok("x", "x", strings.Repeat("é", 5000))},
		{name: "slug taken", given: []events.Envelope{reserved(t, "project", "my-project", alice)}, cmdName: "my project",
			err: projectExists},
		{name: "empty name", cmdName: "", err: invalid},
		{name: "blank name", cmdName: " \t ", err: invalid},
		{name: "name of 101 runes", cmdName: strings.Repeat("é", 100) + "a", err: invalid},
		{name: "name not UTF-8", cmdName: "a\xff", err: invalid},
		{name: "name without letters or digits", cmdName: "!!!", err: invalid},
		{name: "slug longer than 63", cmdName: strings.Repeat("a", 64), err: invalid},
		{name: "description of 5001 runes", cmdName: "x", desc: strings.Repeat("é", 5001), err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := fold(t, registry.EvolveReservation, tc.given)
			got, err := registry.DecideCreateProject(res, registry.CreateProject{ProjectID: projID, Name: tc.cmdName,
				Description: tc.desc, OwnerID: owner})
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}

	// Replaying the decided events yields an owned project and a taken slug.
	got, err := registry.DecideCreateProject(registry.ReservationState{}, registry.CreateProject{ProjectID: projID, Name: "Vision", OwnerID: owner})
	if err != nil {
		t.Fatal(err)
	}
	evs := applied(t, got)
	res := fold(t, registry.EvolveReservation, evs[:1])
	ps := fold(t, registry.EvolveProject, evs[1:])
	if !res.Taken || res.OwnerID != projID {
		t.Fatalf("reservation = %+v", res)
	}
	if !ps.Created || ps.ID != projID || ps.Slug != "vision" || ps.RoleOf(owner) != authz.ProjectOwner || len(ps.Members) != 1 {
		t.Fatalf("project = %+v", ps)
	}
}

func TestDecideUpdateProject(t *testing.T) {
	t.Parallel()
	live := []events.Envelope{projectCreated(t)}
	archived := cat(live, projArchived(t))
	cases := []struct {
		name  string
		given []events.Envelope
		desc  *string
		want  []handlers.Change
		err   wantErr
	}{
		{name: "change", given: live, desc: strp("new"), want: []handlers.Change{{Subject: projSubj, Type: events.ProjectUpdated,
			Data: events.ProjectUpdatedData{ProjectID: projID, Description: strp("new")}}}},
		{name: "clear", given: live, desc: strp(""), want: []handlers.Change{{Subject: projSubj, Type: events.ProjectUpdated,
			Data: events.ProjectUpdatedData{ProjectID: projID, Description: strp("")}}}},
		{name: "no-op: same", given: live, desc: strp("old")},
		{name: "no-op: nil", given: live},
		{name: "too long", given: live, desc: strp(strings.Repeat("x", 5001)), err: invalid},
		{name: "archived", given: archived, desc: strp("new"), err: archivedErr},
		{name: "archived even for a no-op", given: archived, err: archivedErr},
		{name: "restored", given: cat(archived, projRestored(t)), desc: strp("new"), want: []handlers.Change{{Subject: projSubj,
			Type: events.ProjectUpdated, Data: events.ProjectUpdatedData{ProjectID: projID, Description: strp("new")}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideUpdateProject(fold(t, registry.EvolveProject, tc.given), tc.desc)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if s := foldInto(t, registry.EvolveProject, fold(t, registry.EvolveProject, tc.given), applied(t, got)); tc.desc != nil &&
				tc.err.kind == 0 && s.Description != *tc.desc {
				t.Fatalf("description after evolve = %q, want %q", s.Description, *tc.desc)
			}
		})
	}
}

func TestDecideArchive(t *testing.T) {
	t.Parallel()
	live := []events.Envelope{projectCreated(t)}
	archived := cat(live, projArchived(t))
	data := events.ProjectLifecycleData{ProjectID: projID}
	cases := []struct {
		name    string
		given   []events.Envelope
		archive bool
		want    []handlers.Change
	}{
		{name: "archive", given: live, archive: true, want: []handlers.Change{{Subject: projSubj, Type: events.ProjectArchived, Data: data}}},
		{name: "archive again is a no-op", given: archived, archive: true},
		{name: "restore", given: archived, want: []handlers.Change{{Subject: projSubj, Type: events.ProjectRestored, Data: data}}},
		{name: "restore a live project is a no-op", given: live},
		{name: "restore again is a no-op", given: cat(archived, projRestored(t))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, registry.EvolveProject, tc.given)
			got := registry.DecideArchive(s, tc.archive)
			checkChanges(t, got, tc.want)
			if s = foldInto(t, registry.EvolveProject, s, applied(t, got)); s.Archived != tc.archive {
				t.Fatalf("archived = %v after evolve, want %v", s.Archived, tc.archive)
			}
		})
	}
}

func TestDecideMembers(t *testing.T) {
	t.Parallel()
	live := []events.Envelope{projectCreated(t), memberSet(t, alice, authz.ProjectEditor, "")}
	twoOwners := cat(live, memberSet(t, bob, authz.ProjectOwner, ""))
	archived := cat(live, projArchived(t))
	set := func(user string, role, prev authz.ProjectRole) []handlers.Change {
		return []handlers.Change{{Subject: projSubj, Type: events.ProjectMemberSet, Data: events.ProjectMemberSetData{
			ProjectID: projID, UserID: user, Role: string(role), PreviousRole: string(prev)}}}
	}
	removed := func(user string, role authz.ProjectRole) []handlers.Change {
		return []handlers.Change{{Subject: projSubj, Type: events.ProjectMemberRemoved, Data: events.ProjectMemberRemovedData{
			ProjectID: projID, UserID: user, Role: string(role)}}}
	}
	cases := []struct {
		name   string
		given  []events.Envelope
		remove bool
		user   string
		role   authz.ProjectRole
		want   []handlers.Change
		err    wantErr
		// members after the decided events are folded (nil: don't check)
		after map[string]authz.ProjectRole
	}{
		{name: "add", given: live, user: bob, role: authz.ProjectViewer, want: set(bob, authz.ProjectViewer, ""),
			after: map[string]authz.ProjectRole{owner: authz.ProjectOwner, alice: authz.ProjectEditor, bob: authz.ProjectViewer}},
		{name: "change role", given: live, user: alice, role: authz.ProjectApprover, want: set(alice, authz.ProjectApprover, authz.ProjectEditor),
			after: map[string]authz.ProjectRole{owner: authz.ProjectOwner, alice: authz.ProjectApprover}},
		{name: "same role is a no-op", given: live, user: alice, role: authz.ProjectEditor},
		{name: "unknown role", given: live, user: bob, role: "admin", err: invalid},
		{name: "empty role", given: live, user: bob, role: "", err: invalid},
		{name: "last owner cannot be demoted", given: live, user: owner, role: authz.ProjectEditor, err: lastOwner},
		{name: "one of two owners can be demoted", given: twoOwners, user: owner, role: authz.ProjectViewer,
			want:  set(owner, authz.ProjectViewer, authz.ProjectOwner),
			after: map[string]authz.ProjectRole{owner: authz.ProjectViewer, alice: authz.ProjectEditor, bob: authz.ProjectOwner}},
		{name: "set refused when archived", given: archived, user: bob, role: authz.ProjectViewer, err: archivedErr},

		{name: "remove", given: live, remove: true, user: alice, want: removed(alice, authz.ProjectEditor),
			after: map[string]authz.ProjectRole{owner: authz.ProjectOwner}},
		{name: "remove non-member", given: live, remove: true, user: bob, err: notFound},
		{name: "remove a removed member", given: cat(live, memberRemoved(t, alice, authz.ProjectEditor)), remove: true, user: alice, err: notFound},
		{name: "last owner cannot be removed", given: live, remove: true, user: owner, err: lastOwner},
		{name: "one of two owners can be removed", given: twoOwners, remove: true, user: bob, want: removed(bob, authz.ProjectOwner),
			after: map[string]authz.ProjectRole{owner: authz.ProjectOwner, alice: authz.ProjectEditor}},
		{name: "remove refused when archived", given: archived, remove: true, user: alice, err: archivedErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, registry.EvolveProject, tc.given)
			var got []handlers.Change
			var err error
			if tc.remove {
				got, err = registry.DecideRemoveMember(s, tc.user)
			} else {
				got, err = registry.DecideSetMember(s, tc.user, tc.role)
			}
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.after != nil {
				if s = foldInto(t, registry.EvolveProject, s, applied(t, got)); !reflect.DeepEqual(s.Members, tc.after) {
					t.Fatalf("members after evolve = %v, want %v", s.Members, tc.after)
				}
			}
		})
	}
}

func TestDecideCreateModel(t *testing.T) {
	t.Parallel()
	live := []events.Envelope{projectCreated(t)}
	nameSubj := func(name string) string {
		return events.ReservationSubject(events.AggModelName, registry.ModelNameKey(projID, name))
	}
	ok := func(name string, tags map[string]string) []handlers.Change {
		return []handlers.Change{
			{Subject: nameSubj(name), Type: events.NameReserved, Data: events.NameReservedData{Kind: "model", Name: name, OwnerID: modelID, Scope: projID}},
			{Subject: modelSubj, Type: events.ModelCreated, Data: events.ModelCreatedData{ModelID: modelID, ProjectID: projID, Name: name, Tags: tags}},
		}
	}
	takenRes := []events.Envelope{ev(t, nameSubj("ResNet"), events.NameReserved, events.NameReservedData{Kind: "model", Name: "resnet", OwnerID: "other", Scope: projID})}
	cases := []struct {
		name    string
		project []events.Envelope
		res     []events.Envelope
		cmdName string
		tags    map[string]string
		want    []handlers.Change
		err     wantErr
	}{
		{name: "create", project: live, cmdName: "resnet", want: ok("resnet", map[string]string{})},
		{name: "dots, dashes, underscores", project: live, cmdName: "Res.Net_v-2", tags: map[string]string{"a": ""},
			want: ok("Res.Net_v-2", map[string]string{"a": ""})},
		{name: "100 characters", project: live, cmdName: strings.Repeat("m", 100), want: ok(strings.Repeat("m", 100), map[string]string{})},
		{name: "50 tags", project: live, cmdName: "m", tags: nTags(50), want: ok("m", nTags(50))},
		{name: "empty name", project: live, cmdName: "", err: invalid},
		{name: "101 characters", project: live, cmdName: strings.Repeat("m", 101), err: invalid},
		{name: "leading dash", project: live, cmdName: "-m", err: invalid},
		{name: "leading dot", project: live, cmdName: ".m", err: invalid},
		{name: "space", project: live, cmdName: "res net", err: invalid},
		{name: "slash", project: live, cmdName: "res/net", err: invalid},
		{name: "non-ASCII", project: live, cmdName: "modèle", err: invalid},
		{name: "51 tags", project: live, cmdName: "m", tags: nTags(51), err: invalid},
		{name: "empty tag key", project: live, cmdName: "m", tags: map[string]string{"": "v"}, err: invalid},
		{name: "tag key of 251", project: live, cmdName: "m", tags: map[string]string{strings.Repeat("k", 251): "v"}, err: invalid},
		{name: "tag value of 5001", project: live, cmdName: "m", tags: map[string]string{"k": strings.Repeat("v", 5001)}, err: invalid},
		{name: "name taken (case-insensitive)", project: live, res: takenRes, cmdName: "ResNet", err: modelExists},
		{name: "archived project", project: cat(live, projArchived(t)), cmdName: "resnet", err: archivedErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideCreateModel(fold(t, registry.EvolveProject, tc.project), fold(t, registry.EvolveReservation, tc.res),
				registry.CreateModel{ModelID: modelID, Name: tc.cmdName, Tags: tc.tags})
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
	if registry.ModelNameKey(projID, " ResNet ") != registry.ModelNameKey(projID, "resnet") {
		t.Fatal("model name keys differ by case or surrounding space")
	}
}

func TestDecideUpdateAndDeleteModel(t *testing.T) {
	t.Parallel()
	live := []events.Envelope{modelCreated(t)}
	deleted := cat(live, modelDeleted(t))
	updated := func(desc *string, tags map[string]string) []handlers.Change {
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelUpdated, Data: events.ModelUpdatedData{ModelID: modelID, Description: desc, Tags: tags}}}
	}
	cases := []struct {
		name  string
		given []events.Envelope
		desc  *string
		tags  map[string]string
		want  []handlers.Change
		err   wantErr
	}{
		{name: "description", given: live, desc: strp("new"), want: updated(strp("new"), nil)},
		{name: "tags replace", given: live, tags: map[string]string{"x": "y"}, want: updated(nil, map[string]string{"x": "y"})},
		{name: "same values drop out", given: live, desc: strp("d"), tags: map[string]string{"x": "y"}, want: updated(nil, map[string]string{"x": "y"})},
		{name: "no-op", given: live, desc: strp("d"), tags: map[string]string{"team": "vision"}},
		{name: "too many tags", given: live, tags: nTags(51), err: invalid},
		{name: "missing", desc: strp("x"), err: notFound},
		{name: "deleted", given: deleted, desc: strp("x"), err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideUpdateModel(fold(t, registry.EvolveModel, tc.given), tc.desc, tc.tags)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
	lc := events.ModelLifecycleData{ModelID: modelID, ProjectID: projID}
	deleteEv := []handlers.Change{{Subject: modelSubj, Type: events.ModelDeleted, Data: lc}}
	withV := cat(live, versionRegistered(t, 1), versionRegistered(t, 2))
	inProd := cat(withV, transitioned(t, 2, events.StageNone, events.StageProduction))
	inStaging := cat(withV, transitioned(t, 1, events.StageNone, events.StageStaging))
	aliased := cat(withV, aliasSet(t, "champion", 1, 0))
	archived := cat(withV, transitioned(t, 1, events.StageNone, events.StageArchived))
	prodDeleted := cat(inProd, versionDeleted(t, 2))
	del := []struct {
		name    string
		given   []events.Envelope
		del     bool
		promote bool // the caller may promote (approver, owner, admin)
		want    []handlers.Change
		err     wantErr
	}{
		{name: "delete", given: live, del: true, want: deleteEv},
		{name: "delete again is a no-op", given: deleted, del: true},
		{name: "restore", given: deleted, want: []handlers.Change{{Subject: modelSubj, Type: events.ModelRestored, Data: lc}}},
		{name: "restore a live model is a no-op", given: live},
		{name: "missing", del: true, err: notFound},
		// Deployment pointers: only whoever may move them may take them offline.
		{name: "plain versions, editor", given: withV, del: true, want: deleteEv},
		{name: "archived version, editor", given: archived, del: true, want: deleteEv},
		{name: "production version, editor", given: inProd, del: true, err: forbiddenErr},
		{name: "staging version, editor", given: inStaging, del: true, err: forbiddenErr},
		{name: "aliased version, editor", given: aliased, del: true, err: forbiddenErr},
		{name: "deleted production version, editor", given: prodDeleted, del: true, want: deleteEv},
		{name: "production version, approver", given: inProd, del: true, promote: true, want: deleteEv},
		{name: "aliased version, approver", given: aliased, del: true, promote: true, want: deleteEv},
		// Restoring brings the pointers back online: the same rule.
		{name: "restore with production version, editor", given: cat(inProd, modelDeleted(t)), err: forbiddenErr},
		{name: "restore with aliased version, editor", given: cat(aliased, modelDeleted(t)), err: forbiddenErr},
		{name: "restore with production version, approver", given: cat(inProd, modelDeleted(t)), promote: true,
			want: []handlers.Change{{Subject: modelSubj, Type: events.ModelRestored, Data: lc}}},
		{name: "restore with plain versions, editor", given: cat(withV, modelDeleted(t)),
			want: []handlers.Change{{Subject: modelSubj, Type: events.ModelRestored, Data: lc}}},
	}
	for _, tc := range del {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, registry.EvolveModel, tc.given)
			got, err := registry.DecideDeleteModel(s, tc.del, tc.promote)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.err.kind == 0 {
				if s = foldInto(t, registry.EvolveModel, s, applied(t, got)); s.Deleted != tc.del {
					t.Fatalf("deleted = %v after evolve, want %v", s.Deleted, tc.del)
				}
			}
		})
	}
}

func TestDecideRegisterVersion(t *testing.T) {
	t.Parallel()
	reg := func(v int, c registry.RegisterVersion) []handlers.Change {
		tags := c.Tags
		if tags == nil {
			tags = map[string]string{}
		}
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelVersionRegistered, Data: events.ModelVersionRegisteredData{
			ModelID: modelID, Version: v, Description: c.Description, Tags: tags, Source: c.Source, RunID: c.RunID,
			Metrics: c.Metrics, Signature: c.Signature}}}
	}
	metrics := func(n int) map[string]float64 {
		m := map[string]float64{}
		for i := range n {
			m[strings.Repeat("m", i+1)] = float64(i)
		}
		return m
	}
	sig := func(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("s", n-2) + `"`) }
	full := registry.RegisterVersion{Description: "d", Tags: map[string]string{"a": "b"}, Source: "s3://b/k", RunID: runID, RunFound: true,
		Metrics: metrics(200), Signature: sig(registry.MaxSignatureLen)}
	withRun := func(source, run string) []handlers.Change {
		return reg(1, registry.RegisterVersion{Source: source, RunID: run})
	}
	cases := []struct {
		name  string
		given []events.Envelope
		cmd   registry.RegisterVersion
		want  []handlers.Change
		err   wantErr
	}{
		{name: "first is 1", given: withVersions(t, 0), want: reg(1, registry.RegisterVersion{})},
		{name: "after two is 3", given: withVersions(t, 2), cmd: full, want: reg(3, full)},
		{name: "a deleted version keeps its number", given: cat(withVersions(t, 2), versionDeleted(t, 2)), want: reg(3, registry.RegisterVersion{})},
		{name: "missing model", err: notFound},
		{name: "deleted model", given: cat(withVersions(t, 1), modelDeleted(t)), err: notFound},
		{name: "201 metrics", given: withVersions(t, 0), cmd: registry.RegisterVersion{Metrics: metrics(201)}, err: invalid},
		{name: "empty metric name", given: withVersions(t, 0), cmd: registry.RegisterVersion{Metrics: map[string]float64{"": 1}}, err: invalid},
		{name: "signature over 64 KiB", given: withVersions(t, 0), cmd: registry.RegisterVersion{Signature: sig(registry.MaxSignatureLen + 1)}, err: invalid},
		{name: "source too long", given: withVersions(t, 0), cmd: registry.RegisterVersion{Source: strings.Repeat("s", 2049)}, err: invalid},
		{name: "run id too long", given: withVersions(t, 0), cmd: registry.RegisterVersion{RunID: strings.Repeat("r", 257)}, err: invalid},
		// Lineage: a named run must have been found by the service; the
		// event names it in its canonical form.
		{name: "a run the service found", given: withVersions(t, 0), cmd: registry.RegisterVersion{RunID: runID, RunFound: true}, want: withRun("", runID)},
		{name: "a run not found", given: withVersions(t, 0), cmd: registry.RegisterVersion{RunID: runID}, err: invalid},
		{name: "a run id that is no uuid", given: withVersions(t, 0), cmd: registry.RegisterVersion{RunID: "run-1", RunFound: true}, err: invalid},
		{name: "MLflow's 32-digit run id", given: withVersions(t, 0), cmd: registry.RegisterVersion{RunID: strings.ReplaceAll(strings.ToUpper(runID), "-", ""), RunFound: true},
			want: withRun("", runID)},
		{name: "a runs:/ source names the run", given: withVersions(t, 0), cmd: registry.RegisterVersion{Source: "runs:/" + runID + "/model", RunFound: true},
			want: withRun("runs:/"+runID+"/model", runID)},
		{name: "a runs:/ source of a run not found", given: withVersions(t, 0), cmd: registry.RegisterVersion{Source: "runs:/" + runID + "/model"}, err: invalid},
		{name: "a runs:/ source and the same run_id", given: withVersions(t, 0), cmd: registry.RegisterVersion{Source: "runs:/" + runID, RunID: runID, RunFound: true},
			want: withRun("runs:/"+runID, runID)},
		{name: "a runs:/ source and another run_id", given: withVersions(t, 0),
			cmd: registry.RegisterVersion{Source: "runs:/" + runID + "/m", RunID: "00000000-0000-4000-8000-000000000001", RunFound: true}, err: invalid},
		{name: "a runs:/ source without a run", given: withVersions(t, 0), cmd: registry.RegisterVersion{Source: "runs://model", RunFound: true}, err: invalid},
		{name: "a runs:/ source escaping the run", given: withVersions(t, 0), cmd: registry.RegisterVersion{Source: "runs:/" + runID + "/../x", RunFound: true}, err: invalid},
		{name: "a source that is no runs:/ names no run", given: withVersions(t, 0), cmd: registry.RegisterVersion{Source: "s3://b/runs:/x"},
			want: withRun("s3://b/runs:/x", "")},
		{name: "51 tags", given: withVersions(t, 0), cmd: registry.RegisterVersion{Tags: nTags(51)}, err: invalid},
		{name: "description too long", given: withVersions(t, 0), cmd: registry.RegisterVersion{Description: strings.Repeat("d", 5001)}, err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideRegisterVersion(fold(t, registry.EvolveModel, tc.given), tc.cmd)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}

	// Deciding and folding in turn numbers versions 1, 2, 3 with no gap.
	evs := []events.Envelope{modelCreated(t)}
	for want := 1; want <= 3; want++ {
		got, err := registry.DecideRegisterVersion(fold(t, registry.EvolveModel, evs), registry.RegisterVersion{})
		if err != nil {
			t.Fatal(err)
		}
		if v := got[0].Data.(events.ModelVersionRegisteredData).Version; v != want {
			t.Fatalf("registered version %d, want %d", v, want)
		}
		evs = append(evs, applied(t, got)...)
	}
	s := fold(t, registry.EvolveModel, evs)
	for i, v := range s.Versions {
		if v.Version != i+1 || v.Stage != events.StageNone {
			t.Fatalf("Versions[%d] = version %d stage %q", i, v.Version, v.Stage)
		}
	}
}

func TestDecideUpdateVersion(t *testing.T) {
	t.Parallel()
	given := withVersions(t, 2)
	upd := func(v int, desc *string, tags map[string]string) []handlers.Change {
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelVersionUpdated, Data: events.ModelVersionUpdatedData{
			ModelID: modelID, Version: v, Description: desc, Tags: tags}}}
	}
	cases := []struct {
		name  string
		given []events.Envelope
		v     int
		desc  *string
		tags  map[string]string
		want  []handlers.Change
		err   wantErr
	}{
		{name: "description", given: given, v: 2, desc: strp("new"), want: upd(2, strp("new"), nil)},
		{name: "tags", given: given, v: 1, tags: map[string]string{}, want: upd(1, nil, map[string]string{})},
		{name: "no-op", given: given, v: 1, desc: strp("v"), tags: map[string]string{"k": "v"}},
		{name: "missing version", given: given, v: 3, desc: strp("x"), err: notFound},
		{name: "version 0", given: given, v: 0, desc: strp("x"), err: notFound},
		{name: "deleted version", given: cat(given, versionDeleted(t, 1)), v: 1, desc: strp("x"), err: notFound},
		{name: "deleted model", given: cat(given, modelDeleted(t)), v: 1, desc: strp("x"), err: notFound},
		{name: "too many tags", given: given, v: 1, tags: nTags(51), err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideUpdateVersion(fold(t, registry.EvolveModel, tc.given), tc.v, tc.desc, tc.tags)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideDeleteVersion(t *testing.T) {
	t.Parallel()
	given := cat(withVersions(t, 3), aliasSet(t, "zeta", 2, 0), aliasSet(t, "alpha", 2, 0), aliasSet(t, "other", 3, 0))
	del := func(v int, aliases ...string) []handlers.Change {
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelVersionDeleted, Data: events.ModelVersionDeletedData{
			ModelID: modelID, Version: v, RemovedAliases: aliases}}}
	}
	staged := cat(given, transitioned(t, 1, events.StageNone, events.StageStaging))
	prod := cat(given, transitioned(t, 1, events.StageNone, events.StageProduction))
	cases := []struct {
		name    string
		given   []events.Envelope
		v       int
		promote bool // the caller may promote (approver, owner, admin)
		want    []handlers.Change
		err     wantErr
	}{
		{name: "with aliases, listed in order", given: given, v: 2, promote: true, want: del(2, "alpha", "zeta")},
		{name: "without aliases", given: given, v: 1, want: del(1)},
		{name: "already deleted", given: cat(given, versionDeleted(t, 1)), v: 1, err: notFound},
		{name: "missing", given: given, v: 4, err: notFound},
		{name: "deleted model", given: cat(given, modelDeleted(t)), v: 1, err: notFound},
		// Deployment pointers: deleting clears them, so it needs the right to move them.
		{name: "aliased, editor", given: given, v: 2, err: forbiddenErr},
		{name: "staging, editor", given: staged, v: 1, err: forbiddenErr},
		{name: "production, editor", given: prod, v: 1, err: forbiddenErr},
		{name: "production, approver", given: prod, v: 1, promote: true, want: del(1)},
		{name: "staging, approver", given: staged, v: 1, promote: true, want: del(1)},
		{name: "archived, editor", given: cat(prod, transitioned(t, 1, events.StageProduction, events.StageArchived)), v: 1, want: del(1)},
		{name: "aliased version next to production, editor", given: prod, v: 3, err: forbiddenErr}, // "other" names v3
		{name: "plain version next to production, editor", given: cat(prod, versionRegistered(t, 4)), v: 4, want: del(4)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideDeleteVersion(fold(t, registry.EvolveModel, tc.given), tc.v, tc.promote)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
	// Evolve drops the removed aliases and keeps the rest.
	got, err := registry.DecideDeleteVersion(fold(t, registry.EvolveModel, given), 2, true)
	if err != nil {
		t.Fatal(err)
	}
	s := fold(t, registry.EvolveModel, cat(given, applied(t, got)...))
	if !reflect.DeepEqual(s.Aliases, map[string]int{"other": 3}) {
		t.Fatalf("aliases after delete = %v", s.Aliases)
	}
	if v, _ := s.Version(2); !v.Deleted {
		t.Fatal("version 2 not deleted after evolve")
	}
	if _, err := registry.DecideSetAlias(s, "alpha", 2); err == nil {
		t.Fatal("an alias could point at the deleted version")
	}
}

func TestDecideTransition(t *testing.T) {
	t.Parallel()
	tr := func(v int, from, to string, archived ...events.ArchivedVersion) []handlers.Change {
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelVersionTransition, Data: events.ModelVersionTransitionData{
			ModelID: modelID, Version: v, From: from, To: to, Archived: archived}}}
	}
	const (
		none, staging, prod, arch = events.StageNone, events.StageStaging, events.StageProduction, events.StageArchived
	)
	v4 := withVersions(t, 4)
	prodV1 := cat(v4, transitioned(t, 1, none, prod))
	staged := cat(v4, transitioned(t, 1, none, staging), transitioned(t, 3, none, staging), transitioned(t, 4, none, staging), versionDeleted(t, 4))
	cases := []struct {
		name    string
		given   []events.Envelope
		v       int
		to      string
		archive bool
		want    []handlers.Change
		err     wantErr
		stages  []string // stages of versions 1.. after evolve (nil: don't check)
	}{
		{name: "none to staging", given: v4, v: 1, to: staging, want: tr(1, none, staging)},
		{name: "none to production", given: v4, v: 2, to: prod, want: tr(2, none, prod)},
		{name: "production to none", given: prodV1, v: 1, to: none, want: tr(1, prod, none)},
		{name: "production to archived", given: prodV1, v: 1, to: arch, archive: true, want: tr(1, prod, arch),
			stages: []string{arch, none, none, none}},
		{name: "archived to staging", given: cat(v4, transitioned(t, 2, none, arch)), v: 2, to: staging, want: tr(2, arch, staging)},
		{name: "same stage is a no-op", given: prodV1, v: 1, to: prod},
		{name: "same stage with archive_existing is a no-op", given: prodV1, v: 1, to: prod, archive: true},
		{name: "unknown stage", given: v4, v: 1, to: "Production", err: invalid},
		{name: "missing version", given: v4, v: 5, to: staging, err: notFound},
		{name: "deleted version", given: cat(v4, versionDeleted(t, 2)), v: 2, to: staging, err: notFound},
		{name: "deleted model", given: cat(v4, modelDeleted(t)), v: 2, to: staging, err: notFound},
		{name: "production occupied", given: prodV1, v: 2, to: prod, err: prodOccupied},
		{name: "production replaced with archive_existing, in one event", given: prodV1, v: 2, to: prod, archive: true,
			want: tr(2, none, prod, events.ArchivedVersion{Version: 1, From: prod}), stages: []string{arch, prod, none, none}},
		{name: "production held by a deleted version is free", given: cat(prodV1, versionDeleted(t, 1)), v: 2, to: prod,
			want: tr(2, none, prod)},
		{name: "staging with archive_existing archives the other live staging versions", given: staged, v: 2, to: staging, archive: true,
			want:   tr(2, none, staging, events.ArchivedVersion{Version: 1, From: staging}, events.ArchivedVersion{Version: 3, From: staging}),
			stages: []string{arch, staging, arch, staging}},
		{name: "staging without archive_existing keeps the others", given: staged, v: 2, to: staging, want: tr(2, none, staging),
			stages: []string{staging, staging, staging, staging}},
		{name: "none with archive_existing archives nothing", given: cat(v4, transitioned(t, 1, none, staging)), v: 1, to: none,
			archive: true, want: tr(1, staging, none)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, registry.EvolveModel, tc.given)
			got, err := registry.DecideTransition(s, tc.v, tc.to, tc.archive)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.stages != nil {
				s = foldInto(t, registry.EvolveModel, s, applied(t, got))
				var stages []string
				for _, v := range s.Versions {
					stages = append(stages, v.Stage)
				}
				if !reflect.DeepEqual(stages, tc.stages) {
					t.Fatalf("stages after evolve = %v, want %v", stages, tc.stages)
				}
			}
		})
	}
}

func TestValidAlias(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"champion": true, "_x": true, "v": true, "v3a": true, "version": true, "Prod-2": true, strings.Repeat("a", 63): true,
		"latest": false, "LATEST": false, "Latest": false, "v3": false, "V12": false, "v0": false,
		"": false, "1abc": false, "-x": false, "a.b": false, "a b": false, strings.Repeat("a", 64): false,
	}
	for a, want := range cases {
		if got := registry.ValidAlias(a); got != want {
			t.Errorf("ValidAlias(%q) = %v, want %v", a, got, want)
		}
	}
}

func TestDecideAliases(t *testing.T) {
	t.Parallel()
	given := cat(withVersions(t, 3), aliasSet(t, "champion", 1, 0))
	set := func(alias string, v, prev int) []handlers.Change {
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelAliasSet, Data: events.ModelAliasSetData{
			ModelID: modelID, Alias: alias, Version: v, PreviousVersion: prev}}}
	}
	cases := []struct {
		name    string
		given   []events.Envelope
		delete  bool
		alias   string
		v       int
		want    []handlers.Change
		err     wantErr
		aliases map[string]int // after evolve (nil: don't check)
	}{
		{name: "new alias", given: given, alias: "challenger", v: 2, want: set("challenger", 2, 0),
			aliases: map[string]int{"champion": 1, "challenger": 2}},
		{name: "reassign names old and new in one event", given: given, alias: "champion", v: 3, want: set("champion", 3, 1),
			aliases: map[string]int{"champion": 3}},
		{name: "same target is a no-op", given: given, alias: "champion", v: 1},
		{name: "reserved latest", given: given, alias: "latest", v: 1, err: invalid},
		{name: "reserved v3", given: given, alias: "v3", v: 1, err: invalid},
		{name: "malformed", given: given, alias: "9lives", v: 1, err: invalid},
		{name: "deleted version", given: cat(given, versionDeleted(t, 2)), alias: "x", v: 2, err: notFound},
		{name: "missing version", given: given, alias: "x", v: 4, err: notFound},
		{name: "deleted model", given: cat(given, modelDeleted(t)), alias: "x", v: 1, err: notFound},

		{name: "delete", given: given, delete: true, alias: "champion", want: []handlers.Change{{Subject: modelSubj, Type: events.ModelAliasDeleted,
			Data: events.ModelAliasDeletedData{ModelID: modelID, Alias: "champion", Version: 1}}}, aliases: map[string]int{}},
		{name: "delete missing", given: given, delete: true, alias: "nope", err: notFound},
		{name: "delete deleted", given: cat(given, aliasDeleted(t, "champion", 1)), delete: true, alias: "champion", err: notFound},
		{name: "delete on a deleted model", given: cat(given, modelDeleted(t)), delete: true, alias: "champion", err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, registry.EvolveModel, tc.given)
			var got []handlers.Change
			var err error
			if tc.delete {
				got, err = registry.DecideDeleteAlias(s, tc.alias)
			} else {
				got, err = registry.DecideSetAlias(s, tc.alias, tc.v)
			}
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.aliases != nil {
				if s = foldInto(t, registry.EvolveModel, s, applied(t, got)); !reflect.DeepEqual(s.Aliases, tc.aliases) {
					t.Fatalf("aliases after evolve = %v, want %v", s.Aliases, tc.aliases)
				}
			}
		})
	}
}

func TestValidArtifactPath(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"a/b.bin": true, "model.pkl": true, "a/.hidden": true, "a/..b": true, strings.Repeat("p", 1024): true,
		"": false, "/x": false, "x/": false, "a/../b": false, "./a": false, "a//b": false, `a\b`: false, "..": false, ".": false,
		"a/./b": false, "a\x00b": false, strings.Repeat("p", 1025): false,
		// Plain text only: the event must store exactly the path asked for.
		"a\xffb": false, "x\ny": false, "x\ty": false, "x\ry": false, "x\x7fy": false, "x\u0085y": false, "\xc0\xae\xc0\xae": false,
		"ünïcode/模型.bin": true, "a b/c d": true,
	}
	for p, want := range cases {
		if got := registry.ValidArtifactPath(p); got != want {
			t.Errorf("ValidArtifactPath(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestDecideRecordArtifact(t *testing.T) {
	t.Parallel()
	given := withVersions(t, 2)
	art := registry.Artifact{Path: "a/b.bin", Digest: "sha256:1", Size: 3, ContentType: "application/octet-stream"}
	rec := func(v int, a registry.Artifact) []handlers.Change {
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelArtifactRecorded, Data: events.ModelArtifactRecordedData{
			ModelID: modelID, Version: v, Path: a.Path, Digest: a.Digest, Size: a.Size, ContentType: a.ContentType}}}
	}
	cases := []struct {
		name  string
		given []events.Envelope
		v     int
		path  string
		ctype string // replaces art's content type when set
		want  []handlers.Change
		err   wantErr
	}{
		{name: "record", given: given, v: 1, path: "a/b.bin", want: rec(1, art)},
		{name: "content type not plain text", given: given, v: 1, path: "a/b.bin", ctype: "text/plain; charset=\"\xff\"", err: invalid},
		{name: "content type too long", given: given, v: 1, path: "a/b.bin", ctype: "text/" + strings.Repeat("x", 256), err: invalid},
		{name: "invalid path", given: given, v: 1, path: "a/../b", err: invalid},
		{name: "absolute path", given: given, v: 1, path: "/etc/passwd", err: invalid},
		{name: "missing version", given: given, v: 3, path: "a/b.bin", err: notFound},
		{name: "deleted version", given: cat(given, versionDeleted(t, 1)), v: 1, path: "a/b.bin", err: notFound},
		{name: "deleted model", given: cat(given, modelDeleted(t)), v: 1, path: "a/b.bin", err: notFound},
		{name: "invalid UTF-8", given: given, v: 1, path: "a\xffb", err: invalid},
		{name: "newline", given: given, v: 1, path: "x\ny", err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := art
			a.Path = tc.path
			if tc.ctype != "" {
				a.ContentType = tc.ctype
			}
			got, err := registry.DecideRecordArtifact(fold(t, registry.EvolveModel, tc.given), tc.v, a)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
	// Recording the same path again replaces the artifact.
	s := fold(t, registry.EvolveModel, cat(given, artifactRecorded(t, 1, "a/b.bin", "sha256:old"), artifactRecorded(t, 1, "c", "sha256:c")))
	again := art
	again.Digest = "sha256:new"
	got, err := registry.DecideRecordArtifact(s, 1, again)
	if err != nil {
		t.Fatal(err)
	}
	s = foldInto(t, registry.EvolveModel, s, applied(t, got))
	v1, _ := s.Version(1)
	if len(v1.Artifacts) != 2 || v1.Artifacts["a/b.bin"].Digest != "sha256:new" || v1.Artifacts["c"].Digest != "sha256:c" {
		t.Fatalf("artifacts after re-record = %+v", v1.Artifacts)
	}
	// The same bytes at the same path again change nothing.
	if got, err := registry.DecideRecordArtifact(s, 1, again); err != nil || len(got) != 0 {
		t.Fatalf("re-recording identical bytes: %+v, %v; want a no-op", got, err)
	}
	if v2, _ := s.Version(2); len(v2.Artifacts) != 0 {
		t.Fatalf("version 2 got artifacts: %+v", v2.Artifacts)
	}
}

// A repository caches folded states and folds new events into a CloneModel
// copy: evolving the copy must leave the cached state exactly as it was.
func TestEvolveModelLeavesClonedStateUntouched(t *testing.T) {
	t.Parallel()
	history := cat(withVersions(t, 3), aliasSet(t, "champion", 1, 0), aliasSet(t, "old", 3, 0),
		artifactRecorded(t, 1, "w.bin", "sha256:a"), transitioned(t, 2, events.StageNone, events.StageProduction))
	a := fold(t, registry.EvolveModel, history)
	pristine := fold(t, registry.EvolveModel, history)
	// Spare capacity, so an append that forgot to copy would write into a's array.
	a.Versions = append(make([]*registry.VersionState, 0, 16), a.Versions...)

	more := []events.Envelope{
		versionUpdated(t, 1, "changed", map[string]string{"new": "tag"}),
		artifactRecorded(t, 1, "w.bin", "sha256:b"),
		artifactRecorded(t, 1, "x.bin", "sha256:c"),
		transitioned(t, 1, events.StageNone, events.StageProduction, events.ArchivedVersion{Version: 2, From: events.StageProduction}),
		aliasSet(t, "champion", 2, 1),
		aliasDeleted(t, "champion", 2),
		versionDeleted(t, 3, "old"),
		versionRegistered(t, 4),
	}
	b := registry.CloneModel(a)
	for _, e := range more {
		var err error
		if b, err = registry.EvolveModel(b, e); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(a, pristine) {
		t.Fatalf("cached state changed by evolving its clone:\n got  %+v\n want %+v", a, pristine)
	}
	// And the clone did change.
	v1, _ := b.Version(1)
	if len(b.Versions) != 4 || v1.Description != "changed" || v1.Stage != events.StageProduction || len(v1.Artifacts) != 2 ||
		len(b.Aliases) != 0 {
		t.Fatalf("clone after evolve = %+v", b)
	}

	// Project state: membership maps are replaced, never written.
	p := fold(t, registry.EvolveProject, []events.Envelope{projectCreated(t), memberSet(t, alice, authz.ProjectEditor, "")})
	members := map[string]authz.ProjectRole{owner: authz.ProjectOwner, alice: authz.ProjectEditor}
	for _, e := range []events.Envelope{memberSet(t, bob, authz.ProjectViewer, ""), memberRemoved(t, alice, authz.ProjectEditor)} {
		if _, err := registry.EvolveProject(p, e); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(p.Members, members) {
		t.Fatalf("project members changed by evolve: %v", p.Members)
	}
}

// A version holds at most MaxArtifactsPerVersion paths: one more is a 409,
// replacing a path that exists is still allowed, and other versions are not
// affected.
func TestDecideRecordArtifactLimit(t *testing.T) {
	t.Parallel()
	evs := withVersions(t, 2)
	for i := range registry.MaxArtifactsPerVersion {
		evs = append(evs, artifactRecorded(t, 1, fmt.Sprintf("f/%05d", i), "sha256:a"))
	}
	s := fold(t, registry.EvolveModel, evs)
	a := registry.Artifact{Path: "one-more", Digest: "sha256:b", Size: 1, ContentType: "application/octet-stream"}
	cases := []struct {
		name string
		v    int
		path string
		err  wantErr
		n    int
	}{
		{name: "one path too many", v: 1, path: "one-more", err: artifactLimit},
		{name: "replace an existing path", v: 1, path: "f/00042", n: 1},
		{name: "another version", v: 2, path: "one-more", n: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := a
			a.Path = tc.path
			got, err := registry.DecideRecordArtifact(s, tc.v, a)
			checkErr(t, err, tc.err)
			if len(got) != tc.n {
				t.Fatalf("got %d changes, want %d", len(got), tc.n)
			}
		})
	}
}

// Two copies cloned from one cached state fold their own artifacts and
// aliases without seeing each other's, and the cached state sees neither:
// maps are copied on the first write of each fold, then written in place.
func TestEvolveModelClonesDoNotShareMaps(t *testing.T) {
	t.Parallel()
	base := fold(t, registry.EvolveModel, cat(withVersions(t, 2), artifactRecorded(t, 1, "base", "sha256:0"), aliasSet(t, "a", 1, 0)))
	evolve := func(s registry.ModelState, evs ...events.Envelope) registry.ModelState {
		for _, e := range evs {
			var err error
			if s, err = registry.EvolveModel(s, e); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	b1 := evolve(registry.CloneModel(base), artifactRecorded(t, 1, "one", "sha256:1"), artifactRecorded(t, 1, "uno", "sha256:1"), aliasSet(t, "b1", 2, 0))
	b2 := evolve(registry.CloneModel(base), artifactRecorded(t, 1, "two", "sha256:2"), aliasDeleted(t, "a", 1))
	// A snapshot kept while folding goes on in its clone (as point-in-time reads do).
	snap := b1
	b3 := evolve(registry.CloneModel(b1), artifactRecorded(t, 1, "three", "sha256:3"), aliasSet(t, "b3", 1, 0))
	paths := func(s registry.ModelState) string {
		v, _ := s.Version(1)
		return strings.Join(slices.Sorted(maps.Keys(v.Artifacts)), ",") + " " + fmt.Sprint(s.Aliases)
	}
	for _, c := range []struct {
		name string
		s    registry.ModelState
		want string
	}{
		{"base", base, "base map[a:1]"},
		{"b1", b1, "base,one,uno map[a:1 b1:2]"},
		{"b2", b2, "base,two map[]"},
		{"snapshot of b1", snap, "base,one,uno map[a:1 b1:2]"},
		{"b3", b3, "base,one,three,uno map[a:1 b1:2 b3:1]"},
	} {
		if got := paths(c.s); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// BenchmarkEvolveArtifacts20000 folds 20,000 artifact events of one
// version, what a point-in-time read or a cold load of such a model pays.
// The review measured 17.4 s when every event copied the version's map.
func BenchmarkEvolveArtifacts20000(b *testing.B) {
	benchmarkEvolveArtifacts(b, 20000)
}

// BenchmarkEvolveArtifacts5000 is the same at a quarter of the size: the
// ratio of the two shows the fold is linear.
func BenchmarkEvolveArtifacts5000(b *testing.B) {
	benchmarkEvolveArtifacts(b, 5000)
}

func benchmarkEvolveArtifacts(b *testing.B, n int) {
	meta := events.Meta{Actor: events.SystemActor, Time: t0}
	mk := func(typ string, data any) events.Envelope {
		e, err := events.New(meta, modelSubj, typ, 0, data)
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	evs := []events.Envelope{
		mk(events.ModelCreated, events.ModelCreatedData{ModelID: modelID, ProjectID: projID, Name: "m", Tags: map[string]string{}}),
		mk(events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: modelID, Version: 1, Tags: map[string]string{}}),
	}
	for i := range n {
		evs = append(evs, mk(events.ModelArtifactRecorded, events.ModelArtifactRecordedData{ModelID: modelID, Version: 1,
			Path: fmt.Sprintf("dir/file-%06d.bin", i), Digest: "sha256:" + strings.Repeat("a", 64), Size: 1, ContentType: "application/octet-stream"}))
	}
	b.ReportAllocs()
	for b.Loop() {
		var s registry.ModelState
		var err error
		for _, e := range evs {
			if s, err = registry.EvolveModel(s, e); err != nil {
				b.Fatal(err)
			}
		}
		if v, _ := s.Version(1); len(v.Artifacts) != n {
			b.Fatalf("%d artifacts, want %d", len(v.Artifacts), n)
		}
	}
}
