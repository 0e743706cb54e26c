package projections

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/filter"
)

// searchFixture fills the experiments, runs and metrics read models
// through their projections (events appended to the streams, runners
// applying them) for the search tests.
type searchFixture struct {
	f       *fixture
	ms      *events.Store
	q       *Queries
	project string
	user    string
	names   map[string]string // run id → name
	ids     map[string]string // run name → id
	lastM   uint64
}

func newSearchFixture(t *testing.T) *searchFixture {
	t.Helper()
	f := newFixture(t)
	ms, err := events.OpenMetricsStore(testCtx(t), f.store.Conn(), events.MetricsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Projection{Experiments{}, Runs{}} {
		start(t, NewRunner(f.pool, f.store, p, testRunnerConfig()))
	}
	start(t, NewRunner(f.pool, ms, Metrics{}, testRunnerConfig()))
	return &searchFixture{f: f, ms: ms, q: NewQueries(f.pool), project: uuid.NewString(), user: "00000000-0000-4000-8000-0000000000ff",
		names: map[string]string{}, ids: map[string]string{}}
}

// experiment creates an experiment of project (the fixture's if "") at
// time at.
func (s *searchFixture) experiment(t *testing.T, project, name string, at time.Time, tags map[string]string) string {
	t.Helper()
	if project == "" {
		project = s.project
	}
	id := uuid.NewString()
	s.f.append(t, at, [3]any{events.Subject(events.AggExperiment, id), events.ExperimentCreated,
		events.ExperimentCreatedData{ExperimentID: id, ProjectID: project, Name: name, Tags: tags}})
	return id
}

// runSpec is a run to create: its name, start time, params, tags (the
// mlflow.runName tag is added), latest metrics, and changes after.
type runSpec struct {
	name    string
	start   int64
	params  map[string]string
	tags    map[string]string
	metrics map[string]float64
	status  string
	end     *int64
	deleted bool
	user    string
	project string
}

func (s *searchFixture) run(t *testing.T, experiment string, r runSpec) string {
	t.Helper()
	id := uuid.NewString()
	subj := events.Subject(events.AggRun, id)
	tags := map[string]string{"mlflow.runName": r.name}
	for k, v := range r.tags {
		tags[k] = v
	}
	project, user := cmp.Or(r.project, s.project), cmp.Or(r.user, s.user)
	changes := [][3]any{{subj, events.RunCreated, events.RunCreatedData{RunID: id, ExperimentID: experiment, ProjectID: project,
		Name: r.name, UserID: user, StartTime: r.start, Tags: tags}}}
	if len(r.params) > 0 {
		var ps []events.Param
		for k, v := range r.params {
			ps = append(ps, events.Param{Key: k, Value: v})
		}
		changes = append(changes, [3]any{subj, events.RunParamsLogged, events.RunParamsLoggedData{RunID: id, Params: ps}})
	}
	if r.status != "" || r.end != nil {
		changes = append(changes, [3]any{subj, events.RunUpdated, events.RunUpdatedData{RunID: id, Status: r.status, EndTime: r.end}})
	}
	if r.deleted {
		changes = append(changes, [3]any{subj, events.RunDeleted, events.RunLifecycleData{RunID: id, ExperimentID: experiment}})
	}
	s.f.append(t, base, changes...)
	if len(r.metrics) > 0 {
		points := map[string][]events.MetricPoint{}
		for k, v := range r.metrics {
			// An older point first: the latest (highest step) is searched.
			points[k] = []events.MetricPoint{{Value: events.MetricValue(v), Step: 2, Timestamp: 2}, {Value: -1000, Step: 1, Timestamp: 1}}
		}
		e, err := events.New(events.Meta{Actor: events.SystemActor, Time: base}, events.MetricsSubject(id), events.MetricsLogged, 0,
			events.MetricsLoggedData{RunID: id, ExperimentID: experiment, ProjectID: project, Metrics: points})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := queryCtx()
		defer cancel()
		if s.lastM, err = s.ms.Append(ctx, events.Append{Event: e, Expect: events.Any}); err != nil {
			t.Fatal(err)
		}
	}
	s.names[id], s.ids[r.name] = r.name, id
	return id
}

// sync waits until the projections have applied everything appended.
func (s *searchFixture) sync(t *testing.T) {
	t.Helper()
	waitCaughtUp(t, s.f.pool, s.f.lastSeq(t), Experiments{}.Name(), Runs{}.Name())
	if s.lastM > 0 {
		waitCaughtUp(t, s.f.pool, s.lastM, Metrics{}.Name())
	}
}

// search returns the names of the runs one search finds (one page). It
// searches again without probes: the ordered scans must find the same
// page, with the same token.
func (s *searchFixture) search(t *testing.T, rs RunSearch) ([]string, error) {
	t.Helper()
	page, err := s.q.SearchRuns(testCtx(t), s.project, rs)
	if err != nil {
		return nil, err
	}
	for _, mode := range []probeMode{probesOff, probesAlways} {
		other, err := s.q.searchRuns(testCtx(t), s.project, rs, mode)
		if err != nil {
			t.Fatalf("%+v, probe mode %d: %v", rs, mode, err)
		}
		if !slices.EqualFunc(page.Items, other.Items, func(a, b Run) bool { return a.ID == b.ID }) || page.NextPageToken != other.NextPageToken {
			t.Errorf("%+v: %d runs (token %q), with probe mode %d %d (token %q)", rs, len(page.Items), page.NextPageToken, mode, len(other.Items), other.NextPageToken)
		}
	}
	names := []string{}
	for _, r := range page.Items {
		names = append(names, s.names[r.ID])
	}
	return names, nil
}

func ptr[T any](v T) *T { return &v }

// trackingFixture is experiments A (runs alpha … eps) and B (zeta) of the
// fixture's project, and C (eta) of another project.
func trackingFixture(t *testing.T) (s *searchFixture, a, b, c string) {
	s = newSearchFixture(t)
	a = s.experiment(t, "", "A", base, nil)
	b = s.experiment(t, "", "B", base, nil)
	otherProject := uuid.NewString()
	c = s.experiment(t, otherProject, "C", base, nil)
	nan := math.NaN()
	s.run(t, a, runSpec{name: "alpha", start: 1000, params: map[string]string{"lr": "0.01", "opt": "adam"}, tags: map[string]string{"team": "risk-eu"},
		metrics: map[string]float64{"auc": 0.95, "loss": 0.2}, status: "FINISHED", end: ptr(int64(2000)), user: "00000000-0000-4000-8000-00000000000a"})
	s.run(t, a, runSpec{name: "beta", start: 2000, params: map[string]string{"lr": "0.1", "opt": "sgd"}, tags: map[string]string{"team": "risk-us"},
		metrics: map[string]float64{"auc": 0.85, "loss": nan}})
	s.run(t, a, runSpec{name: "gamma", start: 3000, params: map[string]string{"lr": "0.01"}, tags: map[string]string{"team": "Fraud"},
		metrics: map[string]float64{"auc": nan}})
	s.run(t, a, runSpec{name: "delta", start: 4000, metrics: map[string]float64{"loss": 0.5}})
	s.run(t, a, runSpec{name: "eps", start: 5000, metrics: map[string]float64{"auc": 0.99}, deleted: true})
	s.run(t, b, runSpec{name: "zeta", start: 6000, metrics: map[string]float64{"auc": 0.97}})
	s.run(t, c, runSpec{name: "eta", start: 7000, metrics: map[string]float64{"auc": 0.98}, project: otherProject})
	s.sync(t)
	return s, a, b, c
}

// Each operator of each type, against the latest metric values (NaN
// compares false except with !=), params, tags and attributes; a run
// lacking a key never matches.
func TestSearchRunsFilters(t *testing.T) {
	t.Parallel()
	s, a, b, _ := trackingFixture(t)
	alpha, beta := s.ids["alpha"], s.ids["beta"]
	cases := []struct {
		filter string
		want   []string
	}{
		{"", []string{"delta", "gamma", "beta", "alpha"}},
		{"metrics.auc > 0.9", []string{"alpha"}},
		{"metrics.auc >= 0.85", []string{"beta", "alpha"}},
		{"metrics.auc < 0.9", []string{"beta"}},
		{"metrics.auc <= 0.85", []string{"beta"}},
		{"metrics.auc = 0.85", []string{"beta"}},
		{"metrics.auc != 0.95", []string{"gamma", "beta"}},
		{"metrics.loss > 0", []string{"delta", "alpha"}},
		{"metrics.loss > -1 AND metrics.auc > 0", []string{"alpha"}},
		{"metrics.nothing != 1", []string{}},
		{"params.lr = '0.01'", []string{"gamma", "alpha"}},
		{"params.lr != '0.01'", []string{"beta"}},
		{"params.opt LIKE 'a%'", []string{"alpha"}},
		{"params.opt LIKE 'A%'", []string{}},
		{"params.opt ILIKE 'A%'", []string{"alpha"}},
		{"tags.team LIKE 'risk%'", []string{"beta", "alpha"}},
		{"tags.team ILIKE 'fraud'", []string{"gamma"}},
		{"tags.team != 'Fraud'", []string{"beta", "alpha"}},
		{"tags.team = 'Fraud' AND params.lr = '0.01'", []string{"gamma"}},
		{"tags.`mlflow.runName` = 'gamma'", []string{"gamma"}},
		{"attributes.run_name = 'beta'", []string{"beta"}},
		{"`run name` LIKE '%ta'", []string{"delta", "beta"}},
		{"attributes.status = 'FINISHED'", []string{"alpha"}},
		{"attributes.status != 'FINISHED'", []string{"delta", "gamma", "beta"}},
		{"attributes.start_time >= 2000 AND created < 4000", []string{"gamma", "beta"}},
		{"attributes.start_time > 2999.5", []string{"delta", "gamma"}},
		{"attributes.end_time > 0", []string{"alpha"}},
		{"attributes.end_time != 5", []string{"alpha"}},
		{"attributes.run_id = '" + alpha + "'", []string{"alpha"}},
		{"attributes.run_id = '" + strings.ToUpper(alpha) + "'", []string{"alpha"}},
		{"attributes.run_id != '" + alpha + "'", []string{"delta", "gamma", "beta"}},
		{"attributes.run_id IN ('" + alpha + "', '" + beta + "', 'junk')", []string{"beta", "alpha"}},
		{"attributes.run_id NOT IN ('" + alpha + "')", []string{"delta", "gamma", "beta"}},
		{"attributes.run_id NOT IN ('junk')", []string{"delta", "gamma", "beta", "alpha"}},
		{"attributes.run_id = 'junk'", []string{}},
		{"attributes.run_id != 'junk'", []string{"delta", "gamma", "beta", "alpha"}},
		{"attributes.run_id LIKE '" + alpha[:8] + "%'", []string{"alpha"}},
		{"attributes.user_id = '00000000-0000-4000-8000-00000000000a'", []string{"alpha"}},
		{"attributes.user_id LIKE '%0a'", []string{"alpha"}},
	}
	for _, c := range cases {
		got, err := s.search(t, RunSearch{ExperimentIDs: []string{a}, Filter: c.filter})
		if err != nil {
			t.Errorf("%q: %v", c.filter, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q: %v, want %v", c.filter, got, c.want)
		}
	}

	// Views, several experiments, the whole project.
	for _, c := range []struct {
		rs   RunSearch
		want []string
	}{
		{RunSearch{ExperimentIDs: []string{a}, View: ViewDeleted}, []string{"eps"}},
		{RunSearch{ExperimentIDs: []string{a}, View: ViewAll, Filter: "metrics.auc > 0.9"}, []string{"eps", "alpha"}},
		{RunSearch{ExperimentIDs: []string{a, b, a}, Filter: "metrics.auc > 0.9"}, []string{"zeta", "alpha"}},
		{RunSearch{Filter: "metrics.auc > 0.9"}, []string{"zeta", "alpha"}},
		{RunSearch{ExperimentIDs: []string{strings.ToUpper(b)}}, []string{"zeta"}},
	} {
		got, err := s.search(t, c.rs)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v %v, want %v", c.rs, got, err, c.want)
		}
	}
}

// Searches that cannot run: a foreign, unknown or malformed experiment id
// (not found, so another project's experiments stay hidden), a malformed
// filter or order_by (a *filter.Error naming the position), what runs do
// not store yet, and exceeded bounds.
func TestSearchRunsRefusals(t *testing.T) {
	t.Parallel()
	s, a, _, c := trackingFixture(t)
	for _, ids := range [][]string{{c}, {a, c}, {uuid.NewString()}, {"nope"}} {
		if _, err := s.search(t, RunSearch{ExperimentIDs: ids}); !errors.Is(err, ErrNotFound) {
			t.Errorf("experiments %v: %v, want ErrNotFound", ids, err)
		}
	}
	if _, err := s.q.SearchRuns(testCtx(t), uuid.NewString(), RunSearch{ExperimentIDs: []string{a}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("another project's search of A: %v", err)
	}
	for _, c := range []struct {
		rs      RunSearch
		orderBy bool
		pos     int
		msg     string
	}{
		{RunSearch{Filter: "metrics.auc > 0.9 OR metrics.auc < 0.1"}, false, 19, "OR is not supported"},
		{RunSearch{Filter: "params.lr = 0.01"}, false, 13, "quoted"},
		{RunSearch{Filter: "metrics.auc > 0.9 AND attributes.artifact_uri LIKE 's3://%'"}, false, 23, "artifact_uri is not searchable yet"},
		{RunSearch{Filter: "datasets.name = 'train'"}, false, 1, "datasets are not searchable yet"},
		{RunSearch{OrderBy: []string{"metrics.auc", "artifact_uri DESC"}}, true, 1, "artifact_uri"},
		{RunSearch{OrderBy: []string{"metrics.auc", "metrics.auc DESC"}}, true, 1, "duplicate"},
	} {
		_, err := s.search(t, c.rs)
		var fe *filter.Error
		if !errors.As(err, &fe) || fe.OrderBy != c.orderBy || fe.Pos != c.pos || !strings.Contains(fe.Msg, c.msg) {
			t.Errorf("%+v: %v; want position %d %q", c.rs, err, c.pos, c.msg)
		}
	}
	many := make([]string, MaxSearchExperiments+1)
	for i := range many {
		many[i] = a
	}
	for _, rs := range []RunSearch{{ExperimentIDs: many}, {MaxResults: MaxSearchResults + 1}, {MaxResults: -1}} {
		if _, err := s.search(t, rs); !errors.Is(err, ErrInvalidSearch) {
			t.Errorf("%d experiments, max_results %d: %v, want ErrInvalidSearch", len(rs.ExperimentIDs), rs.MaxResults, err)
		}
	}
}

// Ordering by metrics, params, tags and attributes: missing values last
// in both directions, NaN after numbers and before missing, ties by
// start_time DESC then id unless start_time is ordered.
func TestSearchRunsOrder(t *testing.T) {
	t.Parallel()
	s, a, _, _ := trackingFixture(t)
	cases := []struct {
		order  []string
		filter string
		want   []string
	}{
		{nil, "", []string{"delta", "gamma", "beta", "alpha"}},
		{[]string{"metrics.auc DESC"}, "", []string{"alpha", "beta", "gamma", "delta"}},
		{[]string{"metrics.auc"}, "", []string{"beta", "alpha", "gamma", "delta"}},
		{[]string{"metrics.loss ASC"}, "", []string{"alpha", "delta", "beta", "gamma"}},
		{[]string{"metrics.loss DESC"}, "", []string{"delta", "alpha", "beta", "gamma"}},
		{[]string{"metrics.auc ASC"}, "metrics.auc > 0.8", []string{"beta", "alpha"}},
		{[]string{"metrics.auc DESC"}, "metrics.auc != 0.85", []string{"alpha", "gamma"}},
		{[]string{"metrics.auc DESC"}, "params.lr = '0.01'", []string{"alpha", "gamma"}},
		{[]string{"params.lr"}, "", []string{"gamma", "alpha", "beta", "delta"}},
		{[]string{"params.lr DESC"}, "", []string{"beta", "gamma", "alpha", "delta"}},
		{[]string{"params.lr ASC", "metrics.auc DESC"}, "", []string{"alpha", "gamma", "beta", "delta"}},
		{[]string{"params.lr ASC", "metrics.auc ASC"}, "", []string{"alpha", "gamma", "beta", "delta"}},
		{[]string{"params.lr", "created ASC"}, "", []string{"alpha", "gamma", "beta", "delta"}},
		{[]string{"params.opt DESC"}, "params.lr = '0.01'", []string{"alpha", "gamma"}},
		{[]string{"tags.team DESC"}, "", []string{"beta", "alpha", "gamma", "delta"}},
		{[]string{"tags.team ASC"}, "", []string{"gamma", "alpha", "beta", "delta"}},
		{[]string{"start_time ASC"}, "", []string{"alpha", "beta", "gamma", "delta"}},
		{[]string{"attributes.end_time DESC"}, "", []string{"alpha", "delta", "gamma", "beta"}},
		{[]string{"attributes.end_time ASC"}, "", []string{"alpha", "delta", "gamma", "beta"}},
		{[]string{"attributes.run_name"}, "", []string{"alpha", "beta", "delta", "gamma"}},
		{[]string{"`Run Name` DESC"}, "", []string{"gamma", "delta", "beta", "alpha"}},
		{[]string{"status", "metrics.loss DESC"}, "", []string{"alpha", "delta", "beta", "gamma"}},
		{[]string{"metrics.nothing DESC"}, "", []string{"delta", "gamma", "beta", "alpha"}},
	}
	for _, c := range cases {
		got, err := s.search(t, RunSearch{ExperimentIDs: []string{a}, Filter: c.filter, OrderBy: c.order})
		if err != nil {
			t.Errorf("%q %v: %v", c.filter, c.order, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q order by %v: %v, want %v", c.filter, c.order, got, c.want)
		}
	}
	// run_id ordering is uuid order, which is the order of their text.
	page, err := s.q.SearchRuns(testCtx(t), s.project, RunSearch{ExperimentIDs: []string{a}, OrderBy: []string{"attributes.run_id DESC"}})
	if err != nil || len(page.Items) != 4 || !slices.IsSortedFunc(page.Items, func(x, y Run) int { return strings.Compare(y.ID, x.ID) }) {
		t.Fatalf("by run_id DESC: %+v %v", page.Items, err)
	}
	// Runs come with their params, tags and latest metrics.
	page, err = s.q.SearchRuns(testCtx(t), s.project, RunSearch{ExperimentIDs: []string{a}, Filter: "attributes.run_name = 'alpha'"})
	if err != nil || len(page.Items) != 1 {
		t.Fatalf("alpha: %+v %v", page, err)
	}
	if r := page.Items[0]; r.Params["opt"] != "adam" || r.Tags["team"] != "risk-eu" || float64(r.Metrics["auc"].Value) != 0.95 ||
		r.Status != "FINISHED" || r.EndTime == nil || *r.EndTime != 2000 || r.LifecycleStage != "active" {
		t.Fatalf("alpha: %+v", r)
	}
}

// pageRun is what the reference ordering of TestSearchRunsPaging knows of
// a run.
type pageRun struct {
	id    string
	start int64
	m     *float64
	p     *string
}

// Paging: every order, walked a few runs at a time, gives exactly the runs
// of one big page, in the order a reference sort in Go gives them; an
// exactly full last page has no token; a run added between two pages
// neither repeats nor hides another; a token of another search is refused.
func TestSearchRunsPaging(t *testing.T) {
	t.Parallel()
	s := newSearchFixture(t)
	x := s.experiment(t, "", "paging", base, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	var runs []pageRun
	for i := range 37 {
		r := runSpec{name: fmt.Sprintf("run-%02d", i), start: int64(1000 + rng.IntN(10)*100), metrics: map[string]float64{}, params: map[string]string{}}
		pr := pageRun{start: r.start}
		switch k := rng.IntN(10); {
		case k < 6:
			v := float64(rng.IntN(8)) / 4 // ties
			if k == 0 {
				v = math.Inf(1 - 2*rng.IntN(2))
			}
			r.metrics["m"], pr.m = v, &v
		case k < 8:
			nan := math.NaN()
			r.metrics["m"], pr.m = nan, &nan
		}
		if rng.IntN(4) > 0 {
			v := fmt.Sprintf("v%d", rng.IntN(5))
			r.params["p"], pr.p = v, &v
		}
		if len(r.metrics) == 0 {
			r.metrics["other"] = 1
		}
		pr.id = s.run(t, x, r)
		runs = append(runs, pr)
	}
	s.sync(t)

	// rank orders a metric as the search does: numbers, NaN, missing.
	rank := func(m *float64) int {
		switch {
		case m == nil:
			return 2
		case math.IsNaN(*m):
			return 1
		}
		return 0
	}
	byM := func(desc bool) func(a, b pageRun) int {
		return func(a, b pageRun) int {
			if c := cmp.Compare(rank(a.m), rank(b.m)); c != 0 || rank(a.m) > 0 {
				return c
			}
			if desc {
				return cmp.Compare(*b.m, *a.m)
			}
			return cmp.Compare(*a.m, *b.m)
		}
	}
	byP := func(a, b pageRun) int {
		switch {
		case a.p == nil && b.p == nil:
			return 0
		case a.p == nil:
			return 1
		case b.p == nil:
			return -1
		}
		return strings.Compare(*a.p, *b.p)
	}
	tie := func(a, b pageRun) int {
		if c := cmp.Compare(b.start, a.start); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	}
	sorted := func(cmps ...func(a, b pageRun) int) []string {
		rs := slices.Clone(runs)
		slices.SortFunc(rs, func(a, b pageRun) int {
			for _, c := range cmps {
				if r := c(a, b); r != 0 {
					return r
				}
			}
			return 0
		})
		ids := make([]string, len(rs))
		for i, r := range rs {
			ids[i] = r.id
		}
		return ids
	}
	ctx := testCtx(t)
	walk := func(rs RunSearch, size int, probes probeMode) []string {
		t.Helper()
		var ids []string
		rs.MaxResults = size
		for pages := 0; ; pages++ {
			page, err := s.q.searchRuns(ctx, s.project, rs, probes)
			if err != nil {
				t.Fatalf("%+v: %v", rs, err)
			}
			for _, r := range page.Items {
				ids = append(ids, r.ID)
			}
			if page.NextPageToken == "" {
				if len(page.Items) == 0 && pages > 0 {
					t.Errorf("%+v: an empty last page after a token", rs)
				}
				return ids
			}
			if len(page.Items) != size || pages > len(runs) {
				t.Fatalf("%+v: a page of %d with a token", rs, len(page.Items))
			}
			rs.PageToken = page.NextPageToken
		}
	}
	for _, c := range []struct {
		order []string
		want  []string
	}{
		{nil, sorted(tie)},
		{[]string{"metrics.m DESC"}, sorted(byM(true), tie)},
		{[]string{"metrics.m ASC"}, sorted(byM(false), tie)},
		{[]string{"params.p ASC", "metrics.m DESC"}, sorted(byP, byM(true), tie)},
		{[]string{"metrics.m ASC", "params.p"}, sorted(byM(false), byP, tie)},
		{[]string{"start_time ASC"}, sorted(func(a, b pageRun) int { return cmp.Compare(a.start, b.start) }, func(a, b pageRun) int { return strings.Compare(a.id, b.id) })},
	} {
		for _, size := range []int{1, 4, 37, 1000} {
			got := walk(RunSearch{ExperimentIDs: []string{x}, OrderBy: c.order}, size, probesWeighed)
			if !slices.Equal(got, c.want) {
				t.Errorf("order by %v in pages of %d:\n got %v\nwant %v", c.order, size, got, c.want)
			}
		}
	}

	// A filtered search walked in pages.
	rs := RunSearch{ExperimentIDs: []string{x}, Filter: "metrics.m >= 0.5", OrderBy: []string{"metrics.m DESC"}}
	var want []string
	for _, id := range sorted(byM(true), tie) {
		for _, r := range runs {
			if r.id == id && r.m != nil && *r.m >= 0.5 {
				want = append(want, id)
			}
		}
	}
	for _, probes := range []probeMode{probesWeighed, probesOff, probesAlways} {
		if got := walk(rs, 3, probes); !slices.Equal(got, want) {
			t.Errorf("filtered (probe mode %d): %v, want %v", probes, got, want)
		}
	}

	// A token of another search: refused; the same search with another
	// page size: fine.
	first, err := s.q.SearchRuns(ctx, s.project, RunSearch{ExperimentIDs: []string{x}, Filter: "metrics.m > -1", OrderBy: []string{"metrics.m DESC"}, MaxResults: 2})
	if err != nil || first.NextPageToken == "" {
		t.Fatalf("first page: %+v %v", first, err)
	}
	tok := first.NextPageToken
	other := s.experiment(t, "", "other", base, nil)
	s.sync(t)
	for _, bad := range []RunSearch{
		{ExperimentIDs: []string{x}, Filter: "metrics.m > -2", OrderBy: []string{"metrics.m DESC"}, PageToken: tok},
		{ExperimentIDs: []string{x}, Filter: "metrics.m > -1", OrderBy: []string{"metrics.m ASC"}, PageToken: tok},
		{ExperimentIDs: []string{x}, Filter: "metrics.m > -1", PageToken: tok},
		{ExperimentIDs: []string{x, other}, Filter: "metrics.m > -1", OrderBy: []string{"metrics.m DESC"}, PageToken: tok},
		{Filter: "metrics.m > -1", OrderBy: []string{"metrics.m DESC"}, PageToken: tok},
		{ExperimentIDs: []string{x}, Filter: "metrics.m > -1", OrderBy: []string{"metrics.m DESC"}, View: ViewAll, PageToken: tok},
		{ExperimentIDs: []string{x}, Filter: "metrics.m > -1", OrderBy: []string{"metrics.m DESC"}, PageToken: "nope"},
		{ExperimentIDs: []string{x}, Filter: "metrics.m > -1", OrderBy: []string{"metrics.m DESC"}, PageToken: tok[:len(tok)-2]},
	} {
		if _, err := s.q.SearchRuns(ctx, s.project, bad); !errors.Is(err, ErrBadPageToken) {
			t.Errorf("token of another search %+v: %v", bad, err)
		}
	}
	// The same search spelled differently, with another page size.
	if _, err := s.q.SearchRuns(ctx, s.project, RunSearch{ExperimentIDs: []string{x, x}, Filter: "metric.m  >  -1", OrderBy: []string{"metrics.`m` desc"},
		MaxResults: 5, PageToken: tok}); err != nil {
		t.Errorf("the same search: %v", err)
	}
	// Forged tokens of the right search: a 400, never a query error.
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	var st searchToken
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	forge := func(change func(*searchToken)) string {
		c := st
		c.R, c.V = slices.Clone(st.R), slices.Clone(st.V)
		change(&c)
		b, _ := json.Marshal(c)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	junk := "junk"
	for name, f := range map[string]func(*searchToken){
		"segment 9":         func(c *searchToken) { c.S = 9 },
		"segment -1":        func(c *searchToken) { c.S = -1 },
		"value not a float": func(c *searchToken) { c.V[0] = &junk },
		"value missing":     func(c *searchToken) { c.V[0] = nil },
		"id not a uuid":     func(c *searchToken) { c.V[len(c.V)-1] = &junk },
		"one value less":    func(c *searchToken) { c.V = c.V[1:] },
		"a rank too many":   func(c *searchToken) { c.R = append(c.R, 0) },
	} {
		if _, err := s.q.SearchRuns(ctx, s.project, RunSearch{ExperimentIDs: []string{x}, Filter: "metrics.m > -1", OrderBy: []string{"metrics.m DESC"},
			PageToken: forge(f)}); !errors.Is(err, ErrBadPageToken) {
			t.Errorf("forged token (%s): %v", name, err)
		}
	}

	// A run that sorts before the token, added between two pages: the next
	// page goes on where the last ended.
	page1, err := s.q.SearchRuns(ctx, s.project, RunSearch{ExperimentIDs: []string{x}, MaxResults: 5})
	if err != nil {
		t.Fatal(err)
	}
	s.run(t, x, runSpec{name: "late", start: 99999})
	s.sync(t)
	page2, err := s.q.SearchRuns(ctx, s.project, RunSearch{ExperimentIDs: []string{x}, MaxResults: 5, PageToken: page1.NextPageToken})
	if err != nil {
		t.Fatal(err)
	}
	all := sorted(tie)
	for i, r := range append(page1.Items, page2.Items...) {
		if r.ID != all[i] {
			t.Fatalf("item %d of two pages is %s, want %s", i, s.names[r.ID], s.names[all[i]])
		}
	}
}

// Experiment search: filters on name, tags and times, the orders, paging
// and its token check.
func TestSearchExperiments(t *testing.T) {
	t.Parallel()
	s := newSearchFixture(t)
	at := func(min int) time.Time { return base.Add(time.Duration(min) * time.Minute) }
	ids := map[string]string{}
	for i, x := range []struct {
		name string
		tags map[string]string
	}{
		{"churn", map[string]string{"team": "risk"}},
		{"Fraud", map[string]string{"team": "risk", "tier": "1"}},
		{"ads-ctr", map[string]string{"team": "growth"}},
		{"ads-cvr", nil},
		{"old", nil},
	} {
		ids[x.name] = s.experiment(t, "", x.name, at(i), x.tags)
	}
	s.experiment(t, uuid.NewString(), "churn", at(9), nil) // another project's
	old := ids["old"]
	s.f.append(t, at(20), [3]any{events.Subject(events.AggExperiment, old), events.ExperimentDeleted, events.ExperimentLifecycleData{ExperimentID: old, ProjectID: s.project}})
	s.f.append(t, at(30), [3]any{events.Subject(events.AggExperiment, ids["churn"]), events.ExperimentTagsSet, events.TagsSetData{ID: ids["churn"], Tags: map[string]string{"x": "y"}}})
	s.sync(t)
	ctx := testCtx(t)
	names := func(es ExperimentSearch) []string {
		t.Helper()
		page, err := s.q.SearchExperiments(ctx, s.project, es)
		if err != nil {
			t.Fatalf("%+v: %v", es, err)
		}
		out := []string{}
		for _, x := range page.Items {
			out = append(out, x.Name)
		}
		return out
	}
	ms := func(min int) string { return fmt.Sprint(at(min).UnixMilli()) }
	for _, c := range []struct {
		es   ExperimentSearch
		want []string
	}{
		{ExperimentSearch{}, []string{"ads-cvr", "ads-ctr", "Fraud", "churn"}},
		{ExperimentSearch{View: ViewAll}, []string{"old", "ads-cvr", "ads-ctr", "Fraud", "churn"}},
		{ExperimentSearch{View: ViewDeleted}, []string{"old"}},
		{ExperimentSearch{Filter: "name LIKE 'ads-%'"}, []string{"ads-cvr", "ads-ctr"}},
		{ExperimentSearch{Filter: "attributes.name ILIKE 'f%'"}, []string{"Fraud"}},
		{ExperimentSearch{Filter: "name != 'churn'"}, []string{"ads-cvr", "ads-ctr", "Fraud"}},
		{ExperimentSearch{Filter: "tags.team = 'risk'"}, []string{"Fraud", "churn"}},
		{ExperimentSearch{Filter: "tags.team != 'risk'"}, []string{"ads-ctr"}},
		{ExperimentSearch{Filter: "tags.team = 'risk' AND tag.tier LIKE '1%'"}, []string{"Fraud"}},
		{ExperimentSearch{Filter: "creation_time >= " + ms(1) + " AND creation_time < " + ms(3)}, []string{"ads-ctr", "Fraud"}},
		{ExperimentSearch{Filter: "last_update_time > " + ms(10)}, []string{"churn"}},
		{ExperimentSearch{Filter: "creation_time > 1.5"}, []string{"ads-cvr", "ads-ctr", "Fraud", "churn"}},
		{ExperimentSearch{OrderBy: []string{"name"}}, []string{"Fraud", "ads-ctr", "ads-cvr", "churn"}},
		{ExperimentSearch{OrderBy: []string{"name DESC"}}, []string{"churn", "ads-cvr", "ads-ctr", "Fraud"}},
		{ExperimentSearch{OrderBy: []string{"creation_time"}}, []string{"churn", "Fraud", "ads-ctr", "ads-cvr"}},
		{ExperimentSearch{OrderBy: []string{"last_update_time DESC"}}, []string{"churn", "ads-cvr", "ads-ctr", "Fraud"}},
	} {
		if got := names(c.es); !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.es, got, c.want)
		}
	}
	byID := names(ExperimentSearch{OrderBy: []string{"experiment_id"}})
	want := []string{"churn", "Fraud", "ads-ctr", "ads-cvr"}
	slices.SortFunc(want, func(a, b string) int { return strings.Compare(ids[a], ids[b]) })
	if !slices.Equal(byID, want) {
		t.Errorf("by experiment_id: %v, want %v", byID, want)
	}

	// Pages of one, and a token of another search.
	var walked []string
	es := ExperimentSearch{OrderBy: []string{"name"}, MaxResults: 1, View: ViewAll}
	for {
		page, err := s.q.SearchExperiments(ctx, s.project, es)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range page.Items {
			walked = append(walked, x.Name)
		}
		if page.NextPageToken == "" {
			break
		}
		es.PageToken = page.NextPageToken
		if len(walked) > 10 {
			t.Fatal("paging does not end")
		}
	}
	if want := []string{"Fraud", "ads-ctr", "ads-cvr", "churn", "old"}; !slices.Equal(walked, want) {
		t.Errorf("walked %v, want %v", walked, want)
	}
	page, err := s.q.SearchExperiments(ctx, s.project, ExperimentSearch{OrderBy: []string{"name"}, MaxResults: 2})
	if err != nil || page.NextPageToken == "" {
		t.Fatalf("%+v %v", page, err)
	}
	for _, bad := range []ExperimentSearch{
		{OrderBy: []string{"name DESC"}, PageToken: page.NextPageToken},
		{OrderBy: []string{"name"}, Filter: "name != 'x'", PageToken: page.NextPageToken},
		{OrderBy: []string{"name"}, View: ViewDeleted, PageToken: page.NextPageToken},
	} {
		if _, err := s.q.SearchExperiments(ctx, s.project, bad); !errors.Is(err, ErrBadPageToken) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := s.q.SearchExperiments(ctx, uuid.NewString(), ExperimentSearch{OrderBy: []string{"name"}, PageToken: page.NextPageToken}); !errors.Is(err, ErrBadPageToken) {
		t.Errorf("another project's token: %v", err)
	}
	for _, c := range []struct {
		es  ExperimentSearch
		pos int
	}{
		{ExperimentSearch{Filter: "metrics.a > 1"}, 1},
		{ExperimentSearch{Filter: "name = 'a' AND experiment_id = 'x'"}, 16},
		{ExperimentSearch{OrderBy: []string{"tags.team"}}, 1},
	} {
		var fe *filter.Error
		if _, err := s.q.SearchExperiments(ctx, s.project, c.es); !errors.As(err, &fe) || fe.Pos != c.pos {
			t.Errorf("%+v: %v, want an error at %d", c.es, err, c.pos)
		}
	}
}

// A run of a deleted experiment reads as deleted (MLflow deletes an
// experiment's runs with it): the views and lifecycle_stage follow the
// experiment, and its restore brings back each run as it was (a run
// deleted on its own stays deleted).
func TestRunsOfDeletedExperimentReadDeleted(t *testing.T) {
	t.Parallel()
	s, a, b, _ := trackingFixture(t)
	lifecycle := func(exp events.ExperimentLifecycleData, typ string) {
		s.f.append(t, base, [3]any{events.Subject(events.AggExperiment, exp.ExperimentID), typ, exp})
		s.sync(t)
	}
	both := []string{a, b}
	views := func() (active, deleted []string) {
		t.Helper()
		var err error
		if active, err = s.search(t, RunSearch{ExperimentIDs: both, OrderBy: []string{"attributes.start_time"}}); err != nil {
			t.Fatal(err)
		}
		if deleted, err = s.search(t, RunSearch{ExperimentIDs: both, View: ViewDeleted, OrderBy: []string{"attributes.start_time"}}); err != nil {
			t.Fatal(err)
		}
		return active, deleted
	}
	active, deleted := views()
	if !slices.Equal(active, []string{"alpha", "beta", "gamma", "delta", "zeta"}) || !slices.Equal(deleted, []string{"eps"}) {
		t.Fatalf("before: active %v, deleted %v", active, deleted)
	}
	lifecycle(events.ExperimentLifecycleData{ExperimentID: a, ProjectID: s.project}, events.ExperimentDeleted)
	active, deleted = views()
	if !slices.Equal(active, []string{"zeta"}) || !slices.Equal(deleted, []string{"alpha", "beta", "gamma", "delta", "eps"}) {
		t.Fatalf("experiment deleted: active %v, deleted %v", active, deleted)
	}
	ctx := testCtx(t)
	r, err := s.q.Run(ctx, s.project, s.ids["alpha"])
	if err != nil || r.LifecycleStage != "deleted" {
		t.Fatalf("run of a deleted experiment: %+v %v", r, err)
	}
	page, err := s.q.ListRuns(ctx, s.project, a, ViewActive, "", 100)
	if err != nil || len(page.Items) != 0 {
		t.Fatalf("active list of a deleted experiment: %+v %v", page, err)
	}
	lifecycle(events.ExperimentLifecycleData{ExperimentID: a, ProjectID: s.project}, events.ExperimentRestored)
	active, deleted = views()
	if !slices.Equal(active, []string{"alpha", "beta", "gamma", "delta", "zeta"}) || !slices.Equal(deleted, []string{"eps"}) {
		t.Fatalf("restored: active %v, deleted %v", active, deleted)
	}
}
