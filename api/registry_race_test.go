package api_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Concurrent registry commands through HTTP: version numbers, alias chains,
// the single-production rule and project-name uniqueness hold under races.

// raceModel creates a project and a model as token's user and returns the model's path and id.
func raceModel(t *testing.T, e *testenv.Env, token, project, model string) (string, string) {
	t.Helper()
	p := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, token, map[string]any{"name": project}))
	path := projectsPath + "/" + p.Slug + "/models/" + model
	m := asJSON[api.ModelResponse](t, call(t, e, 201, "POST", projectsPath+"/"+p.Slug+"/models", token, map[string]any{"name": model}))
	return path, m.ID
}

// accepted reports whether a command was applied: 201/200, or 202 when the
// read-your-writes wait timed out on a loaded machine (the body is the same).
func accepted(r testenv.Response, status int) bool {
	return r.Status == status || (r.Status == 202 && r.Header.Get("Maestro-Consistency") == "pending")
}

// maxSeq is the highest Maestro-Sequence among responses.
func maxSeq(t *testing.T, rs []testenv.Response) string {
	t.Helper()
	var hi uint64
	for _, r := range rs {
		if s := r.Header.Get("Maestro-Sequence"); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("Maestro-Sequence %q", s)
			}
			hi = max(hi, n)
		}
	}
	return strconv.FormatUint(hi, 10)
}

// modelAudit is a model's audit entries of one type, oldest first.
func modelAudit(t *testing.T, e *testenv.Env, admin, modelID, typ, minSeq string) []projections.AuditEntry {
	t.Helper()
	q := url.Values{"subject": {events.Subject(events.AggModel, modelID)}, "type": {typ}, "max_results": {"200"}, "min_sequence": {minSeq}}
	var out []projections.AuditEntry
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("audit paging does not end")
		}
		p := auditPage(t, e, admin, q)
		out = append(out, p.Items...)
		if p.NextPageToken == "" {
			break
		}
		q.Set("page_token", p.NextPageToken)
	}
	slices.Reverse(out) // newest first → oldest first
	for i := 1; i < len(out); i++ {
		if out[i].Sequence <= out[i-1].Sequence {
			t.Fatalf("audit entries out of order: %d then %d", out[i-1].Sequence, out[i].Sequence)
		}
	}
	return out
}

func TestRegistryRaceVersionNumbers(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@race-versions.test").AccessToken
	u := regUser(e, admin, "u@race-versions.test", "member")
	m, _ := raceModel(t, e, u.Token, "Race Versions", "clf")

	const n = 50
	rs := race(t, n, func(i int) (testenv.Response, error) {
		return sendE(e, "POST", m+"/versions", u.Token, map[string]any{"description": fmt.Sprint("client ", i)})
	})
	var got []int
	for i, r := range rs {
		if !accepted(r, 201) {
			t.Fatalf("client %d: %d %s", i, r.Status, r.Body)
		}
		v := asJSON[api.VersionResponse](t, r)
		if v.Description != fmt.Sprint("client ", i) {
			t.Errorf("client %d got version %d described %q: the answer is someone else's", i, v.Version, v.Description)
		}
		if loc := r.Header.Get("Location"); loc == "" || loc[len(loc)-len(strconv.Itoa(v.Version))-1:] != "/"+strconv.Itoa(v.Version) {
			t.Errorf("client %d: version %d but Location %q", i, v.Version, loc)
		}
		got = append(got, v.Version)
	}
	slices.Sort(got)
	want := make([]int, n)
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(got, want) {
		t.Fatalf("versions returned = %v, want each of 1..%d once", got, n)
	}

	pg := asJSON[api.VersionPage](t, call(t, e, 200, "GET", m+"/versions?max_results=200&min_sequence="+maxSeq(t, rs), u.Token, nil))
	var listed []int
	for _, v := range pg.Items {
		listed = append(listed, v.Version)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, want) || pg.NextPageToken != "" {
		t.Fatalf("listed versions = %v (next %q), want 1..%d", listed, pg.NextPageToken, n)
	}
	if mr := asJSON[api.ModelResponse](t, call(t, e, 200, "GET", m, u.Token, nil)); mr.LatestVersion != n {
		t.Fatalf("latest_version = %d, want %d", mr.LatestVersion, n)
	}
}

func TestRegistryRaceAliasChain(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@race-alias.test").AccessToken
	u := regUser(e, admin, "u@race-alias.test", "member")
	m, id := raceModel(t, e, u.Token, "Race Alias", "clf")
	const n = 20
	for range n {
		call(t, e, 201, "POST", m+"/versions", u.Token, map[string]any{})
	}

	rs := race(t, n, func(i int) (testenv.Response, error) {
		return sendE(e, "PUT", m+"/aliases/champion", u.Token, map[string]any{"version": i + 1})
	})
	for i, r := range rs {
		if !accepted(r, 200) {
			t.Fatalf("PUT champion → %d: %d %s", i+1, r.Status, r.Body)
		}
		if v := asJSON[api.VersionResponse](t, r); v.Version != i+1 {
			t.Fatalf("PUT champion → %d answered version %d", i+1, v.Version)
		}
	}
	seq := maxSeq(t, rs)
	final := asJSON[api.VersionResponse](t, call(t, e, 200, "GET", m+"/aliases/champion?min_sequence="+seq, u.Token, nil)).Version
	if final < 1 || final > n {
		t.Fatalf("champion → %d, not one of the versions set", final)
	}

	// The audit trail is a chain: each set names the version it replaced.
	entries := modelAudit(t, e, admin, id, events.ModelAliasSet, seq)
	if len(entries) != n {
		t.Fatalf("%d alias.set events, want %d (every PUT named a different version)", len(entries), n)
	}
	prev, seen := 0, map[int]bool{}
	for _, en := range entries {
		var d events.ModelAliasSetData
		if err := json.Unmarshal(en.Data, &d); err != nil {
			t.Fatalf("seq %d: %v (%s)", en.Sequence, err, en.Data)
		}
		if d.Alias != "champion" || d.PreviousVersion != prev {
			t.Fatalf("seq %d: alias %s → %d with previous_version %d, but the previous event set %d", en.Sequence, d.Alias, d.Version, d.PreviousVersion, prev)
		}
		if seen[d.Version] {
			t.Fatalf("seq %d: version %d set twice", en.Sequence, d.Version)
		}
		seen[d.Version] = true
		prev = d.Version
	}
	if prev != final {
		t.Fatalf("the chain ends at %d but the alias is %d", prev, final)
	}
	if mr := asJSON[api.ModelResponse](t, call(t, e, 200, "GET", m, u.Token, nil)); mr.Aliases["champion"] != final {
		t.Fatalf("model aliases %v, alias read %d", mr.Aliases, final)
	}
}

func TestRegistryRaceSingleProduction(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@race-prod.test").AccessToken
	u := regUser(e, admin, "u@race-prod.test", "member")

	// With archive_existing: rounds of every version racing to production.
	m, id := raceModel(t, e, u.Token, "Race Production", "clf")
	const versions, rounds = 6, 3
	for range versions {
		call(t, e, 201, "POST", m+"/versions", u.Token, map[string]any{})
	}
	var all []testenv.Response
	for round := range rounds {
		rs := race(t, versions, func(i int) (testenv.Response, error) {
			return sendE(e, "POST", m+"/versions/"+strconv.Itoa(i+1)+":transition", u.Token,
				map[string]any{"stage": "production", "archive_existing": true})
		})
		for i, r := range rs {
			if !accepted(r, 200) {
				t.Fatalf("round %d, v%d → production: %d %s", round, i+1, r.Status, r.Body)
			}
		}
		all = append(all, rs...)
	}
	seq := maxSeq(t, all)
	stages := map[int]string{}
	for v := 1; v <= versions; v++ {
		stages[v] = events.StageNone
	}
	entries := modelAudit(t, e, admin, id, events.ModelVersionTransition, seq)
	if len(entries) < rounds {
		t.Fatalf("%d transitions for %d rounds", len(entries), rounds)
	}
	production := func() []int {
		var out []int
		for v, s := range stages {
			if s == events.StageProduction {
				out = append(out, v)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, en := range entries {
		var d events.ModelVersionTransitionData
		if err := json.Unmarshal(en.Data, &d); err != nil {
			t.Fatalf("seq %d: %v", en.Sequence, err)
		}
		if stages[d.Version] != d.From {
			t.Fatalf("seq %d: v%d moves from %s, but the fold has it in %s", en.Sequence, d.Version, d.From, stages[d.Version])
		}
		for _, a := range d.Archived {
			if stages[a.Version] != a.From {
				t.Fatalf("seq %d: archives v%d from %s, but the fold has it in %s", en.Sequence, a.Version, a.From, stages[a.Version])
			}
			stages[a.Version] = events.StageArchived
		}
		stages[d.Version] = d.To
		if p := production(); len(p) > 1 {
			t.Fatalf("after seq %d, versions %v are all in production", en.Sequence, p)
		}
	}
	if p := production(); len(p) != 1 {
		t.Fatalf("after the races, production = %v, want exactly one version", p)
	}
	pg := asJSON[api.VersionPage](t, call(t, e, 200, "GET", m+"/versions?min_sequence="+seq, u.Token, nil))
	for _, v := range pg.Items {
		if v.Stage != stages[v.Version] {
			t.Errorf("v%d is %s, but the audit trail folds to %s", v.Version, v.Stage, stages[v.Version])
		}
	}

	// Without archive_existing: exactly one wins, the others are refused.
	m2, _ := raceModel(t, e, u.Token, "Race Production Strict", "clf")
	for range versions {
		call(t, e, 201, "POST", m2+"/versions", u.Token, map[string]any{})
	}
	rs := race(t, versions, func(i int) (testenv.Response, error) {
		return sendE(e, "POST", m2+"/versions/"+strconv.Itoa(i+1)+":transition", u.Token, map[string]any{"stage": "production"})
	})
	winner := 0
	for i, r := range rs {
		if accepted(r, 200) {
			if winner != 0 {
				t.Fatalf("v%d and v%d both moved to production without archive_existing", winner, i+1)
			}
			winner = i + 1
			continue
		}
		if _, err := checkProblem(r, 409, "production-occupied"); err != nil {
			t.Fatalf("v%d: %v", i+1, err)
		}
	}
	if winner == 0 {
		t.Fatal("no version reached production")
	}
	pg = asJSON[api.VersionPage](t, call(t, e, 200, "GET", m2+"/versions?stage=production&min_sequence="+maxSeq(t, rs), u.Token, nil))
	if len(pg.Items) != 1 || pg.Items[0].Version != winner {
		t.Fatalf("production versions %+v, want only v%d", pg.Items, winner)
	}
}

func TestRegistryRaceProjectName(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@race-project.test").AccessToken
	const n = 20
	users := make([]regClient, 4)
	for i := range users {
		users[i] = regUser(e, admin, fmt.Sprintf("u%d@race-project.test", i), "member")
	}
	// Different spellings of one name: they share the slug.
	names := []string{"Race Project", "race project", "RACE-PROJECT", "race  project!"}
	rs := race(t, n, func(i int) (testenv.Response, error) {
		return sendE(e, "POST", projectsPath, users[i%len(users)].Token, map[string]any{"name": names[i%len(names)]})
	})
	created, winner := 0, ""
	for i, r := range rs {
		if accepted(r, 201) {
			created++
			winner = users[i%len(users)].ID
			continue
		}
		if _, err := checkProblem(r, 409, "project-exists"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if created != 1 {
		t.Fatalf("%d projects created, want exactly 1", created)
	}
	pg := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", projectsPath+"?max_results=200&min_sequence="+maxSeq(t, rs), admin, nil))
	if len(pg.Items) != 1 || pg.Items[0].Slug != "race-project" {
		t.Fatalf("projects %+v, want one race-project", pg.Items)
	}
	ms := asJSON[api.MemberList](t, call(t, e, 200, "GET", projectsPath+"/race-project/members", admin, nil))
	if len(ms.Items) != 1 || ms.Items[0].UserID != winner || ms.Items[0].Role != "owner" {
		t.Fatalf("members %+v, want the winner %s as the only owner", ms.Items, winner)
	}
}
