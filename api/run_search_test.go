package api_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Run and experiment search through a real server: runs created, given
// params, metrics and tags over HTTP, then found with filters, in order,
// page by page; malformed filters are 400s naming the position.
func TestRunSearchWalk(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	walkRunSearch(t, e, e.Admin("root@example.com").AccessToken)
}

// walkRunSearch exercises POST …/runs:search and the experiment list's
// filter and order_by, and returns the statuses it provoked per operation
// (TestOpenAPIConformance checks them against the document).
func walkRunSearch(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	viewer := regUser(e, admin, "search-viewer@example.com", "viewer")
	outsider := regUser(e, admin, "search-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Run Search Walk"}))
	pp := projectsPath + "/" + proj.Slug
	call(t, e, 200, "PUT", pp+"/members/"+viewer.ID, admin, map[string]any{"role": "viewer"})
	other := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Run Search Elsewhere"}))
	foreign := asJSON[projections.Experiment](t, call(t, e, 201, "POST", projectsPath+"/"+other.Slug+"/experiments", admin, map[string]any{"name": "theirs"}))

	xa := asJSON[projections.Experiment](t, call(t, e, 201, "POST", pp+"/experiments", admin, map[string]any{"name": "search-a", "tags": map[string]string{"team": "risk"}}))
	xb := asJSON[projections.Experiment](t, call(t, e, 201, "POST", pp+"/experiments", admin, map[string]any{"name": "search-b"}))
	names := map[string]string{} // run id → name
	run := func(x projections.Experiment, name string, start int64, params map[string]string, metrics map[string]any, tags map[string]string) {
		create := map[string]any{"name": name, "start_time": start}
		if tags != nil {
			create["tags"] = tags
		}
		r := asJSON[projections.Run](t, call(t, e, 201, "POST", pp+"/experiments/"+x.ID+"/runs", admin, create))
		names[r.ID] = name
		if len(params) > 0 {
			var ps []map[string]string
			for k, v := range params {
				ps = append(ps, map[string]string{"key": k, "value": v})
			}
			call(t, e, 200, "POST", pp+"/runs/"+r.ID+"/params", admin, map[string]any{"params": ps})
		}
		if len(metrics) > 0 {
			var ms []map[string]any
			for k, v := range metrics {
				ms = append(ms, map[string]any{"key": k, "value": v, "step": 1, "timestamp": 1})
			}
			call(t, e, 200, "POST", pp+"/runs/"+r.ID+"/metrics", admin, map[string]any{"metrics": ms})
		}
	}
	run(xa, "r1", 1000, map[string]string{"lr": "0.01"}, map[string]any{"auc": 0.91}, map[string]string{"team": "risk-eu"})
	run(xa, "r2", 2000, map[string]string{"lr": "0.1"}, map[string]any{"auc": 0.75}, map[string]string{"team": "fraud"})
	run(xa, "r3", 3000, map[string]string{"lr": "0.01"}, map[string]any{"auc": "NaN"}, nil)
	run(xb, "r4", 4000, nil, map[string]any{"auc": 0.95}, map[string]string{"team": "risk-us"})

	search := pp + "/runs:search"
	found := func(r testenv.Response) ([]string, string) {
		t.Helper()
		page := asJSON[api.RunPage](t, r)
		out := []string{}
		for _, it := range page.Items {
			out = append(out, names[it.ID])
		}
		return out, page.NextPageToken
	}
	for _, c := range []struct {
		body map[string]any
		want []string
	}{
		{map[string]any{"experiment_ids": []string{xa.ID}, "filter": "metrics.auc > 0.8 AND params.lr = '0.01'"}, []string{"r1"}},
		{map[string]any{"experiment_ids": []string{xa.ID, xb.ID}, "order_by": []string{"metrics.auc DESC"}}, []string{"r4", "r1", "r2", "r3"}},
		{map[string]any{"order_by": []string{"metrics.auc ASC"}}, []string{"r2", "r1", "r4", "r3"}},
		{map[string]any{"filter": "tags.team LIKE 'risk%'"}, []string{"r4", "r1"}},
		{map[string]any{"filter": "params.lr = '0.01' AND attributes.`run name` LIKE 'r_'", "view": "all"}, []string{"r3", "r1"}},
		{map[string]any{"filter": "run_name = 'r1'", "view": "deleted"}, []string{}},
		{map[string]any{"experiment_ids": []string{xb.ID}, "filter": "params.lr = '0.01'"}, []string{}},
	} {
		if got, _ := found(call(t, e, 200, "POST", search, viewer.Token, c.body)); !slices.Equal(got, c.want) {
			t.Errorf("%v: %v, want %v", c.body, got, c.want)
		}
	}

	// Page by page: the same runs, then no token; a token of another search
	// is refused.
	body := map[string]any{"order_by": []string{"metrics.auc DESC"}, "max_results": 1}
	var walked []string
	first := ""
	for i := 0; ; i++ {
		got, next := found(call(t, e, 200, "POST", search, viewer.Token, body))
		walked = append(walked, got...)
		if i == 0 {
			first = next
		}
		if next == "" || i > 5 {
			break
		}
		body["page_token"] = next
	}
	if want := []string{"r4", "r1", "r2", "r3"}; !slices.Equal(walked, want) {
		t.Errorf("pages: %v, want %v", walked, want)
	}
	callProblem(t, e, 400, "invalid-page-token", "POST", search, viewer.Token, map[string]any{"order_by": []string{"metrics.auc ASC"}, "page_token": first})
	callProblem(t, e, 400, "invalid-page-token", "POST", search, viewer.Token, map[string]any{"page_token": "nope"})

	// A malformed filter or order_by: 400 naming the position.
	for _, c := range []struct {
		body   map[string]any
		detail string
	}{
		{map[string]any{"filter": "metrics.auc > 0.8 OR params.lr = '0.01'"}, "filter: at position 19: OR is not supported"},
		{map[string]any{"filter": "params.lr = 0.01"}, "filter: at position 13: "},
		{map[string]any{"filter": "attributes.artifact_uri = 'x'"}, "filter: at position 1: attribute artifact_uri is not searchable yet"},
		{map[string]any{"order_by": []string{"metrics.auc", "metrics.auc DESC"}}, "order_by[1]: at position 1: `order_by` contains duplicate fields"},
		{map[string]any{"max_results": 1001}, "max_results must be between 1 and 1000"},
		{map[string]any{"view": "gone"}, "view must be"},
	} {
		p := callProblemBody(t, e, 400, "validation-failed", "POST", search, viewer.Token, c.body)
		if !strings.HasPrefix(p.Detail, c.detail) && !strings.Contains(p.Detail, c.detail) {
			t.Errorf("%v: detail %q, want %q", c.body, p.Detail, c.detail)
		}
	}
	callProblem(t, e, 400, "malformed-json", "POST", search, viewer.Token, map[string]any{"filters": "x"})
	callProblem(t, e, 415, "unsupported-media-type", "POST", search, viewer.Token, []byte(`{}`), "Content-Type", "text/plain")
	callProblem(t, e, 413, "payload-too-large", "POST", search, viewer.Token, huge)
	callProblem(t, e, 401, "unauthenticated", "POST", search, "", map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", search, outsider.Token, map[string]any{})
	callProblem(t, e, 404, "not-found", "POST", search, viewer.Token, map[string]any{"experiment_ids": []string{foreign.ID}})
	callProblem(t, e, 404, "not-found", "POST", search, viewer.Token, map[string]any{"experiment_ids": []string{"not-an-id"}})
	callProblem(t, e, 404, "not-found", "POST", projectsPath+"/nope/runs:search", viewer.Token, map[string]any{})

	// Experiments: ?filter= and ?order_by=.
	xs := pp + "/experiments"
	list := func(q url.Values) []string {
		t.Helper()
		page := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", xs+"?"+q.Encode(), viewer.Token, nil))
		out := []string{}
		for _, x := range page.Items {
			out = append(out, x.Name)
		}
		return out
	}
	if got := list(url.Values{"filter": {"name LIKE 'search-%'"}, "order_by": {"name DESC"}}); !slices.Equal(got, []string{"search-b", "search-a"}) {
		t.Errorf("experiments by name DESC: %v", got)
	}
	if got := list(url.Values{"filter": {"tags.team = 'risk'"}}); !slices.Equal(got, []string{"search-a"}) {
		t.Errorf("experiments tagged risk: %v", got)
	}
	page := asJSON[api.ExperimentPage](t, call(t, e, 200, "GET", xs+"?order_by=name&max_results=1", viewer.Token, nil))
	if len(page.Items) != 1 || page.Items[0].Name != "search-a" || page.NextPageToken == "" {
		t.Fatalf("first experiment by name: %+v", page)
	}
	if got := list(url.Values{"order_by": {"name"}, "page_token": {page.NextPageToken}}); !slices.Equal(got, []string{"search-b"}) {
		t.Errorf("second page by name: %v", got)
	}
	callProblem(t, e, 400, "invalid-page-token", "GET", xs+"?order_by=name+DESC&page_token="+url.QueryEscape(page.NextPageToken), viewer.Token, nil)
	p := callProblemBody(t, e, 400, "validation-failed", "GET", xs+"?filter="+url.QueryEscape("name = 'a' AND metrics.x > 1"), viewer.Token, nil)
	if !strings.HasPrefix(p.Detail, "filter: at position 16: invalid entity type 'metrics'") {
		t.Errorf("experiment filter: %q", p.Detail)
	}
	callProblem(t, e, 400, "validation-failed", "GET", xs+"?order_by=tags.team", viewer.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", xs+"?name=search-a&filter="+url.QueryEscape("name = 'x'"), viewer.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", xs+"?order_by=name", "", nil)
	callProblem(t, e, 404, "not-found", "GET", xs+"?order_by=name", outsider.Token, nil)
	return map[string][]int{"searchRuns": {200, 400, 401, 404, 413, 415}, "listExperiments": {200, 400, 401, 404}}
}
