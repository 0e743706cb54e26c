package api_test

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// Point-in-time reads (GET .../models/{name}?as_of=) over a scripted
// history, one step per minute of the test clock: after every step the
// model's updated_at is the step's time, and as_of at that time (or any
// time before the next step) shows exactly the state after the step.

// asofVersion is what a point-in-time read must show of one version.
type asofVersion struct {
	Stage   string
	Deleted bool
	Aliases string // comma-joined, sorted
}

type asofState struct {
	Description string
	Deleted     bool
	Latest      int
	Aliases     map[string]int
	Versions    []asofVersion
}

func asofOf(m api.ModelResponse) asofState {
	s := asofState{Description: m.Description, Deleted: m.Deleted, Latest: m.LatestVersion, Aliases: m.Aliases}
	for i, v := range m.Versions {
		if v.Version != i+1 {
			s.Versions = append(s.Versions, asofVersion{Stage: fmt.Sprintf("version %d at index %d", v.Version, i)})
			continue
		}
		s.Versions = append(s.Versions, asofVersion{Stage: v.Stage, Deleted: v.Deleted, Aliases: strings.Join(v.Aliases, ",")})
	}
	return s
}

func (s asofState) String() string {
	return fmt.Sprintf("{description %q deleted %v latest %d aliases %v versions %+v}", s.Description, s.Deleted, s.Latest, s.Aliases, s.Versions)
}

func (s asofState) equal(o asofState) bool {
	return s.Description == o.Description && s.Deleted == o.Deleted && s.Latest == o.Latest &&
		maps.Equal(s.Aliases, o.Aliases) && slices.Equal(s.Versions, o.Versions)
}

func TestRegistryAsOfHistory(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@asof.test").AccessToken
	u := regUser(e, admin, "u@asof.test", "member")
	call(t, e, 201, "POST", projectsPath, u.Token, map[string]any{"name": "History"})
	models := projectsPath + "/history/models"
	m := models + "/clf"

	none := asofVersion{Stage: "none"}
	type step struct {
		what   string
		method string
		path   string
		body   any
		status int
		want   asofState
	}
	steps := []step{
		{"create model", "POST", models, map[string]any{"name": "clf", "description": "first"}, 201,
			asofState{Description: "first", Aliases: map[string]int{}}},
		{"register v1", "POST", m + "/versions", map[string]any{}, 201,
			asofState{Description: "first", Latest: 1, Aliases: map[string]int{}, Versions: []asofVersion{none}}},
		{"register v2", "POST", m + "/versions", map[string]any{}, 201,
			asofState{Description: "first", Latest: 2, Aliases: map[string]int{}, Versions: []asofVersion{none, none}}},
		{"v1 → staging", "POST", m + "/versions/1:transition", map[string]any{"stage": "staging"}, 200,
			asofState{Description: "first", Latest: 2, Aliases: map[string]int{}, Versions: []asofVersion{{Stage: "staging"}, none}}},
		{"v1 → production", "POST", m + "/versions/1:transition", map[string]any{"stage": "production"}, 200,
			asofState{Description: "first", Latest: 2, Aliases: map[string]int{}, Versions: []asofVersion{{Stage: "production"}, none}}},
		{"champion → v1", "PUT", m + "/aliases/champion", map[string]any{"version": 1}, 200,
			asofState{Description: "first", Latest: 2, Aliases: map[string]int{"champion": 1},
				Versions: []asofVersion{{Stage: "production", Aliases: "champion"}, none}}},
		{"describe the model", "PATCH", m, map[string]any{"description": "second"}, 200,
			asofState{Description: "second", Latest: 2, Aliases: map[string]int{"champion": 1},
				Versions: []asofVersion{{Stage: "production", Aliases: "champion"}, none}}},
		{"v2 → production, archiving v1", "POST", m + "/versions/2:transition", map[string]any{"stage": "production", "archive_existing": true}, 200,
			asofState{Description: "second", Latest: 2, Aliases: map[string]int{"champion": 1},
				Versions: []asofVersion{{Stage: "archived", Aliases: "champion"}, {Stage: "production"}}}},
		{"champion → v2", "PUT", m + "/aliases/champion", map[string]any{"version": 2}, 200,
			asofState{Description: "second", Latest: 2, Aliases: map[string]int{"champion": 2},
				Versions: []asofVersion{{Stage: "archived"}, {Stage: "production", Aliases: "champion"}}}},
		{"legacy → v1", "PUT", m + "/aliases/legacy", map[string]any{"version": 1}, 200,
			asofState{Description: "second", Latest: 2, Aliases: map[string]int{"champion": 2, "legacy": 1},
				Versions: []asofVersion{{Stage: "archived", Aliases: "legacy"}, {Stage: "production", Aliases: "champion"}}}},
		{"delete v1 (takes legacy with it)", "DELETE", m + "/versions/1", nil, 200,
			asofState{Description: "second", Latest: 2, Aliases: map[string]int{"champion": 2},
				Versions: []asofVersion{{Stage: "archived", Deleted: true}, {Stage: "production", Aliases: "champion"}}}},
		{"delete the model", "DELETE", m, nil, 200,
			asofState{Description: "second", Deleted: true, Latest: 2, Aliases: map[string]int{"champion": 2},
				Versions: []asofVersion{{Stage: "archived", Deleted: true}, {Stage: "production", Aliases: "champion"}}}},
	}

	asOf := func(ts time.Time) testenv.Response {
		t.Helper()
		return e.Do("GET", m+"?as_of="+url.QueryEscape(ts.Format(time.RFC3339Nano)), u.Token, nil)
	}
	// A step's time is the model's updated_at after it (registry events take
	// the platform clock, which the steps move a minute apart).
	start := e.Clock.Now()
	times := make([]time.Time, len(steps))
	for i, s := range steps {
		e.Clock.Advance(time.Minute)
		before := e.Clock.Now()
		call(t, e, s.status, s.method, s.path, u.Token, s.body)
		after := e.Clock.Now()
		mr := asJSON[api.ModelResponse](t, call(t, e, 200, "GET", m, u.Token, nil))
		times[i] = mr.UpdatedAt
		if times[i].Before(before.Truncate(time.Microsecond)) || times[i].After(after) {
			t.Fatalf("step %q: model updated_at %s, not within the step [%s, %s]", s.what, times[i], before, after)
		}
		if i > 0 && !times[i].After(times[i-1]) {
			t.Fatalf("step %q: updated_at %s does not move past the previous step's %s", s.what, times[i], times[i-1])
		}
	}

	// Before the model existed: 404.
	for _, ts := range []time.Time{start, times[0].Add(-time.Microsecond)} {
		if _, err := checkProblem(asOf(ts), 404, "not-found"); err != nil {
			t.Errorf("as_of %s (before creation): %v", ts.Format(time.RFC3339Nano), err)
		}
	}
	for i, s := range steps {
		// At the step's own time, half-way to the next step, and just before
		// the next step: the state after this step.
		probes := []time.Time{times[i], times[i].Add(30 * time.Second)}
		if i+1 < len(steps) {
			probes = append(probes, times[i+1].Add(-time.Microsecond))
		} else {
			probes = append(probes, e.Clock.Now().Add(time.Hour))
		}
		for _, ts := range probes {
			r := asOf(ts)
			if r.Status != 200 {
				t.Errorf("as_of %s (after %q): %d %s", ts.Format(time.RFC3339Nano), s.what, r.Status, r.Body)
				continue
			}
			got := asJSON[api.ModelResponse](t, r)
			if st := asofOf(got); !st.equal(s.want) {
				t.Errorf("as_of %s (after %q):\n got  %s\n want %s", ts.Format(time.RFC3339Nano), s.what, st, s.want)
			}
			if got.AsOf == nil || !got.AsOf.Equal(ts.Truncate(time.Microsecond)) && !got.AsOf.Equal(ts) {
				t.Errorf("as_of %s answered as_of %v", ts.Format(time.RFC3339Nano), got.AsOf)
			}
			if !got.UpdatedAt.Equal(times[i]) {
				t.Errorf("as_of %s (after %q): updated_at %s, want the step's %s", ts.Format(time.RFC3339Nano), s.what, got.UpdatedAt, times[i])
			}
		}
	}
	// Other time zones name the same instant.
	ist := time.FixedZone("IST", 5*3600+1800)
	if r := asOf(times[4].In(ist)); r.Status != 200 || !asofOf(asJSON[api.ModelResponse](t, r)).equal(steps[4].want) {
		t.Errorf("as_of in +05:30 after %q: %d %s", steps[4].what, r.Status, r.Body)
	}

	// Invalid as_of: 400, whatever the model.
	for _, bad := range []string{"yesterday", "2025-13-01T00:00:00Z", "2025-01-01T00:00:00", "2025-01-01", "1735689600",
		"2025-01-01T00:00:00Z " + "x", "2025-01-01 00:00:00Z"} {
		for _, path := range []string{m, models + "/no-such-model"} {
			r := e.Do("GET", path+"?as_of="+url.QueryEscape(bad), u.Token, nil)
			if _, err := checkProblem(r, 400, "validation-failed"); err != nil {
				t.Errorf("%s?as_of=%q: %v", path, bad, err)
			}
		}
	}
}
