package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/internal/testenv"
)

// uiRunsEnv is a project "Lab" with an editor, a viewer and an outsider,
// an experiment and runs with params, tags and metrics, set up through the
// JSON API.
type uiRunsEnv struct {
	e                        *testenv.Env
	admin                    string
	editor, viewer, outsider regClient
	editorEmail, viewerEmail string
	outsiderEmail            string
	xID                      string
	runs                     map[string]string // name -> id
}

type idBody struct {
	ID string `json:"id"`
}

func startUIRuns(t *testing.T, prefix string) *uiRunsEnv {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.Runner = false // a submitted job stays queued
	e := testenv.Start(t, cfg)
	u := &uiRunsEnv{e: e, admin: e.Admin("root@" + prefix + ".test").AccessToken, runs: map[string]string{}}
	u.editorEmail, u.viewerEmail, u.outsiderEmail = "ed@"+prefix+".test", "vi@"+prefix+".test", "out@"+prefix+".test"
	u.editor = regUser(e, u.admin, u.editorEmail, "viewer")
	u.viewer = regUser(e, u.admin, u.viewerEmail, "viewer")
	u.outsider = regUser(e, u.admin, u.outsiderEmail, "viewer")
	call(t, e, 201, "POST", "/api/v1/projects", u.admin, map[string]any{"name": "Lab"})
	call(t, e, 200, "PUT", "/api/v1/projects/lab/members/"+u.editor.ID, u.admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", "/api/v1/projects/lab/members/"+u.viewer.ID, u.admin, map[string]any{"role": "viewer"})
	u.xID = asJSON[idBody](t, call(t, e, 201, "POST", "/api/v1/projects/lab/experiments", u.admin, map[string]any{"name": "baseline"})).ID
	return u
}

// run creates a run of the experiment and logs a batch onto it.
func (u *uiRunsEnv) run(t *testing.T, name string, auc float64, params map[string]string, tags map[string]string) string {
	t.Helper()
	id := asJSON[idBody](t, call(t, u.e, 201, "POST", "/api/v1/projects/lab/experiments/"+u.xID+"/runs", u.admin,
		map[string]any{"name": name, "start_time": 1_700_000_000_000 + int64(len(u.runs))*1000})).ID
	var ps []map[string]string
	for k, v := range params {
		ps = append(ps, map[string]string{"key": k, "value": v})
	}
	body := map[string]any{"metrics": []map[string]any{{"key": "auc", "value": auc, "step": 1, "timestamp": 1_700_000_000_000}}, "params": ps}
	if tags != nil {
		body["tags"] = tags
	}
	call(t, u.e, 200, "POST", "/api/v1/projects/lab/runs/"+id+"/metrics", u.admin, body)
	u.runs[name] = id
	return id
}

// rowOrder is the order in which the runs table lists the runs named.
func rowOrder(t *testing.T, body string, names ...string) []string {
	t.Helper()
	type at struct {
		name string
		i    int
	}
	var found []at
	for _, n := range names {
		if i := strings.Index(body, ">"+n+"</a>"); i >= 0 {
			found = append(found, at{n, i})
		}
	}
	for i := range found {
		for j := i + 1; j < len(found); j++ {
			if found[j].i < found[i].i {
				found[i], found[j] = found[j], found[i]
			}
		}
	}
	out := make([]string, len(found))
	for i, f := range found {
		out[i] = f.name
	}
	return out
}

// headers are the runs table's column headings (their visible text).
var headingRE = regexp.MustCompile(`<th scope="col"[^>]*><a [^>]*>(?:<span class="muted">[A-Za-z]+</span> )?([^<▲▼]*?)(?: [▲▼])?</a></th>`)

func headings(body string) []string {
	var out []string
	for _, m := range headingRE.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return out
}

// The experiments pages: experiments (create through the form), the runs
// table with its filter, order, columns and pages, a bad filter, and who
// sees what.
func TestUIRunsExperimentsAndRunsTable(t *testing.T) {
	t.Parallel()
	u := startUIRuns(t, "uiruns")
	e := u.e
	u.run(t, "alpha", 0.95, map[string]string{"lr": "0.01", "depth": "3"}, map[string]string{"team": "growth"})
	u.run(t, "beta", 0.85, map[string]string{"lr": "0.01", "depth": "5"}, map[string]string{"team": "core"})
	u.run(t, "gamma", 0.92, map[string]string{"lr": "0.1", "depth": "4"}, map[string]string{"team": "growth"})
	u.run(t, "delta", 0.97, map[string]string{"lr": "0.01", "depth": "6"}, nil)

	ed := newUIClient(t, e)
	ed.signIn(u.editorEmail, testenv.Password)
	if b := ed.get("/experiments").want(t, 200).Body; !strings.Contains(b, `href="/projects/lab/experiments"`) {
		t.Errorf("the project picker does not lead to the project's experiments: %.2000s", b)
	}
	xs := "/projects/lab/experiments"
	b := ed.get(xs).want(t, 200).Body
	if !strings.Contains(b, ">baseline</a>") || !strings.Contains(b, "Create an experiment") {
		t.Fatalf("experiments page for an editor: %.2000s", b)
	}
	// Create through the form; the API reads it back.
	r := ed.post(xs, url.Values{"name": {"tuning"}, "tags": {"goal=auc"}}).want(t, 303)
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, xs+"/") || !strings.HasSuffix(loc, "?done=experiment-created") {
		t.Fatalf("Location %q", loc)
	}
	got := asJSON[struct {
		Items []struct {
			ID   string
			Name string
			Tags map[string]string
		}
	}](t, call(t, e, 200, "GET", "/api/v1/projects/lab/experiments?name=tuning", u.admin, nil))
	if len(got.Items) != 1 || got.Items[0].Tags["goal"] != "auc" || loc != xs+"/"+got.Items[0].ID+"?done=experiment-created" {
		t.Fatalf("created experiment through the API: %+v (Location %q)", got, loc)
	}
	if b := ed.get(loc).want(t, 200).Body; !strings.Contains(b, "Experiment created.") || !strings.Contains(b, "No runs match.") {
		t.Errorf("new experiment page: %.2000s", b)
	}
	// User text renders inert: an experiment's name and tag.
	call(t, e, 201, "POST", "/api/v1/projects/lab/experiments", u.admin, map[string]any{"name": "<i>x</i>", "tags": map[string]string{"t": `"><b>y</b>`}})
	if b := ed.get(xs).Body; strings.Contains(b, "<i>x</i>") || strings.Contains(b, "<b>y</b>") || !strings.Contains(b, "&lt;i&gt;x&lt;/i&gt;") {
		t.Errorf("experiment name/tag escaping: %.3000s", b)
	}
	if b := ed.post(xs, url.Values{"name": {"tuning"}}).want(t, 409).Body; !strings.Contains(b, `class="error" role="alert"`) || !strings.Contains(b, ">baseline</a>") {
		t.Errorf("a refused create form: %.3000s", b)
	}
	ed.post(xs, url.Values{"name": {"x"}, "tags": {"no equals"}}).want(t, 400)
	// The search form as a browser sends it (every field, empty ones too).
	if b := ed.get(xs+"?filter=&order_by=&view=active").want(t, 200).Body; !strings.Contains(b, ">baseline</a>") {
		t.Errorf("the empty search form: %.2000s", b)
	}
	if b := ed.get(xs+"?filter=&order_by="+url.QueryEscape("name ASC")+"&view=all").want(t, 200).Body; strings.Index(b, ">baseline</a>") > strings.Index(b, ">tuning</a>") {
		t.Errorf("experiments by name: %.2000s", b)
	}
	// The experiment filter, and a bad one.
	if b := ed.get(xs+"?filter="+url.QueryEscape("name = 'tuning'")).want(t, 200).Body; !strings.Contains(b, ">tuning</a>") || strings.Contains(b, ">baseline</a>") {
		t.Errorf("experiment filter: %.2000s", b)
	}
	if b := ed.get(xs+"?filter="+url.QueryEscape("name = ")).want(t, 400).Body; !strings.Contains(b, "at position") {
		t.Errorf("bad experiment filter: %.2000s", b)
	}

	// The runs table: default order (newest start first), default columns.
	x := xs + "/" + u.xID
	b = ed.get(x).want(t, 200).Body
	if got := rowOrder(t, b, "alpha", "beta", "gamma", "delta"); strings.Join(got, ",") != "delta,gamma,beta,alpha" {
		t.Errorf("default order %v", got)
	}
	if got := strings.Join(headings(b), ","); got != "Run,Status,Started,auc,depth,lr" {
		t.Errorf("default headings %q", got)
	}
	if !strings.Contains(b, `aria-sort="descending"`) || !strings.Contains(b, `>0.95</td>`) {
		t.Errorf("runs table: %.3000s", b)
	}

	// Filter in MLflow's language.
	f := url.QueryEscape("metrics.auc > 0.9 and params.lr = '0.01'")
	b = ed.get(x+"?filter="+f).want(t, 200).Body
	if got := rowOrder(t, b, "alpha", "beta", "gamma", "delta"); strings.Join(got, ",") != "delta,alpha" {
		t.Errorf("filtered runs %v", got)
	}
	// Order by a metric, ascending then descending (the header's link).
	b = ed.get(x+"?filter="+f+"&order_by="+url.QueryEscape("metrics.auc ASC")).want(t, 200).Body
	if got := rowOrder(t, b, "alpha", "beta", "gamma", "delta"); strings.Join(got, ",") != "alpha,delta" {
		t.Errorf("auc ascending %v", got)
	}
	if !strings.Contains(b, `aria-sort="ascending"`) || !strings.Contains(html.UnescapeString(b), "&order_by=metrics.auc+DESC\"") {
		i := strings.Index(b, "<thead>")
		t.Errorf("the auc header does not toggle to descending: %.3000s", b[i:])
	}
	b = ed.get(x+"?order_by="+url.QueryEscape("metrics.auc DESC")).want(t, 200).Body
	if got := rowOrder(t, b, "alpha", "beta", "gamma", "delta"); strings.Join(got, ",") != "delta,alpha,gamma,beta" {
		t.Errorf("auc descending %v", got)
	}
	b = ed.get(x+"?order_by="+url.QueryEscape("params.depth ASC")).want(t, 200).Body
	if got := rowOrder(t, b, "alpha", "beta", "gamma", "delta"); strings.Join(got, ",") != "alpha,gamma,beta,delta" {
		t.Errorf("depth ascending %v", got)
	}

	// Chosen columns: a tag and a param; the metric column is gone.
	b = ed.get(x+"?chosen=1&col=tags.team&col=params.lr").want(t, 200).Body
	if got := strings.Join(headings(b), ","); got != "Run,Status,Started,team,lr" {
		t.Errorf("chosen headings %q", got)
	}
	if strings.Contains(b, ">0.95</td>") || !strings.Contains(b, "<td>growth</td>") {
		t.Errorf("chosen columns' cells: %.3000s", b)
	}
	if !strings.Contains(b, `name="col" value="tags.team" checked`) || !strings.Contains(b, `name="col" value="metrics.auc">`) {
		t.Errorf("column chooser: %.3000s", b)
	}
	// None chosen: only the fixed columns.
	if got := strings.Join(headings(ed.get(x+"?chosen=1").Body), ","); got != "Run,Status,Started" {
		t.Errorf("no chosen columns: %q", got)
	}

	// Pages: two runs a page, in order, the filter and columns kept.
	b = ed.get(x+"?max_results=2&chosen=1&col=params.depth&order_by="+url.QueryEscape("params.depth ASC")).want(t, 200).Body
	if got := rowOrder(t, b, "alpha", "beta", "gamma", "delta"); strings.Join(got, ",") != "alpha,gamma" {
		t.Errorf("page 1 %v", got)
	}
	next := regexp.MustCompile(`href="(\?[^"]*page_token[^"]*)">Next page`).FindStringSubmatch(b)
	if next == nil {
		t.Fatalf("no next page link: %.3000s", b)
	}
	b = ed.get(x+html.UnescapeString(next[1])).want(t, 200).Body
	if got := rowOrder(t, b, "alpha", "beta", "gamma", "delta"); strings.Join(got, ",") != "beta,delta" {
		t.Errorf("page 2 %v", got)
	}
	if got := strings.Join(headings(b), ","); got != "Run,Status,Started,depth" || !strings.Contains(b, "First page") || strings.Contains(b, "Next page") {
		t.Errorf("page 2 headings %q: %.2000s", got, b)
	}

	// Never all the runs: 50 a page unless asked.
	many := asJSON[idBody](t, call(t, e, 201, "POST", "/api/v1/projects/lab/experiments", u.admin, map[string]any{"name": "many"})).ID
	for i := range 51 {
		call(t, e, 201, "POST", "/api/v1/projects/lab/experiments/"+many+"/runs", u.admin, map[string]any{"name": fmt.Sprintf("m%02d", i)})
	}
	b = ed.get(xs+"/"+many).want(t, 200).Body
	next = regexp.MustCompile(`href="(\?[^"]*page_token[^"]*)">Next page`).FindStringSubmatch(b)
	if n := strings.Count(b, `name="run" value=`); n != 50 || next == nil {
		t.Fatalf("first page of 51 runs: %d rows, next %v", n, next)
	}
	if n := strings.Count(ed.get(xs+"/"+many+html.UnescapeString(next[1])).Body, `name="run" value=`); n != 1 {
		t.Errorf("second page of 51 runs: %d rows", n)
	}

	// A bad filter: 400, the page with the parser's error and where.
	b = ed.get(x+"?filter="+url.QueryEscape("metrics.auc > 0.9 OR params.lr = '0.01'")).want(t, 400).Body
	if !strings.Contains(b, "at position 19: OR is not supported") || !strings.Contains(b, `value="metrics.auc &gt; 0.9 OR params.lr = &#39;0.01&#39;"`) {
		t.Errorf("bad filter page: %.3000s", b)
	}
	ed.get(x+"?order_by="+url.QueryEscape("metrics.auc sideways")).want(t, 400)
	ed.get(xs+"/00000000-0000-4000-8000-000000000000").want(t, 404)

	// The viewer reads every page and sees no create form; a forged one
	// is refused and appends nothing.
	vi := newUIClient(t, e)
	vi.signIn(u.viewerEmail, testenv.Password)
	for _, page := range []string{"/experiments", xs, x, "/projects/lab/runs/" + u.runs["alpha"]} {
		if b := vi.get(page).want(t, 200).Body; strings.Contains(b, "Create an experiment") {
			t.Errorf("the viewer sees the create form on %s", page)
		}
	}
	ctx := context.Background()
	seq, _ := e.P.Store.LastSequence(ctx)
	vi.get(xs)
	vi.post(xs, url.Values{"name": {"forged"}}).want(t, 403)
	if after, _ := e.P.Store.LastSequence(ctx); after != seq {
		t.Errorf("the viewer's forged form appended events: %d -> %d", seq, after)
	}
	// An outsider sees none of it.
	out := newUIClient(t, e)
	out.signIn(u.outsiderEmail, testenv.Password)
	out.get(xs).want(t, 404)
	out.get(x).want(t, 404)
	out.get("/projects/lab/runs/"+u.runs["alpha"]).want(t, 404)
}

// A run's page (params, tags, metrics, artifacts, lineage, job), the
// charts' JSON (downsampled, readers only), the comparison of runs, and
// user text rendered inert.
func TestUIRunsRunPageChartsAndCompare(t *testing.T) {
	t.Parallel()
	u := startUIRuns(t, "uirun")
	e := u.e
	xss := `<script>alert(1)</script>`
	a := u.run(t, xss, 0.9, map[string]string{"lr": `<img src=x onerror=alert(1)>`}, map[string]string{"note": `"><svg onload=alert(2)>`})
	b := u.run(t, "second", 0.8, map[string]string{"lr": "0.1"}, nil)
	// A long series on a, and a key with a slash on both.
	points := make([]map[string]any, 3000)
	for i := range points {
		points[i] = map[string]any{"key": "loss", "value": 1.0 / float64(i+1), "step": i, "timestamp": 1_700_000_000_000 + i}
	}
	call(t, e, 200, "POST", "/api/v1/projects/lab/runs/"+a+"/metrics", u.admin, map[string]any{"metrics": points})
	for i, id := range []string{a, b} {
		call(t, e, 200, "POST", "/api/v1/projects/lab/runs/"+id+"/metrics", u.admin, map[string]any{"metrics": []map[string]any{
			{"key": "loss/train", "value": float64(i) - 0.5, "step": 1, "timestamp": 1_700_000_000_000}}})
	}
	// An artifact, a model version from the run, and a job's run.
	r := e.Do("PUT", "/api/v1/projects/lab/runs/"+a+"/artifacts/model/notes%20v1.txt", u.admin, []byte("notes"), octets()...)
	if r.Status >= 300 {
		t.Fatalf("artifact upload: %d %s", r.Status, r.Body)
	}
	call(t, e, 201, "POST", "/api/v1/projects/lab/models", u.admin, map[string]any{"name": "scorer"})
	call(t, e, 201, "POST", "/api/v1/projects/lab/models/scorer/versions", u.admin, map[string]any{"run_id": a})
	sub := asJSON[struct {
		Job struct{ ID string }
		Run struct{ ID string }
	}](t, call(t, e, 201, "POST", "/api/v1/projects/lab/jobs", u.admin, map[string]any{"experiment": "baseline", "name": "trained", "command": []string{"python", "train.py"}}))

	vi := newUIClient(t, e)
	vi.signIn(u.viewerEmail, testenv.Password)
	page := vi.get("/projects/lab/runs/"+a).want(t, 200).Body
	for _, want := range []string{
		"&lt;script&gt;alert(1)&lt;/script&gt;", "<td>lr</td><td>&lt;img src=x onerror=alert(1)&gt;</td>", "&#34;&gt;&lt;svg onload=alert(2)&gt;",
		"<td>auc</td><td>0.9</td>", `href="/projects/lab/runs/` + a + `/artifacts/model/notes%20v1.txt"`,
		`href="/projects/lab/models/scorer/versions/1"`, `data-path="loss%2Ftrain"`, `aria-label="Line chart of the metric loss by step"`,
		`<summary>Values of loss</summary>`, "uPlot.iife.min.js", "uPlot.min.css", "charts.js",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("run page lacks %s", want)
		}
	}
	for _, bad := range []string{xss, "<img src=x", "<svg onload"} {
		if strings.Contains(page, bad) {
			t.Errorf("run page renders %s unescaped", bad)
		}
	}
	if !strings.Contains(page, "Job</dt><dd>none") {
		t.Errorf("a run without a job: %.4000s", page)
	}
	dl := vi.get("/projects/lab/runs/"+a+"/artifacts/model/notes%20v1.txt").want(t, 200)
	if dl.Body != "notes" || !strings.HasPrefix(dl.Header.Get("Content-Disposition"), "attachment") || !strings.Contains(dl.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("artifact download: %q %v", dl.Body, dl.Header)
	}
	jobPage := vi.get("/projects/lab/runs/"+sub.Run.ID).want(t, 200).Body
	if !strings.Contains(jobPage, `href="/projects/lab/jobs/`+sub.Job.ID+`">trained</a> (queued)`) {
		t.Errorf("a job's run does not link its job: %.4000s", jobPage)
	}
	// A run whose maestro.job_id tag names a job that did not run it
	// shows no job.
	call(t, e, 200, "PATCH", "/api/v1/projects/lab/runs/"+b, u.admin, map[string]any{"tags": map[string]string{"maestro.job_id": sub.Job.ID}})
	if p := vi.get("/projects/lab/runs/"+b).want(t, 200).Body; !strings.Contains(p, "Job</dt><dd>none") {
		t.Errorf("a forged job tag is trusted: %.4000s", p)
	}
	// The runs table escapes the same text.
	if p := vi.get("/projects/lab/experiments/"+u.xID+"?chosen=1&col=params.lr&col=tags.note").want(t, 200).Body; strings.Contains(p, xss) || strings.Contains(p, "<img src=x") ||
		!strings.Contains(p, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Errorf("runs table escaping: %.4000s", p)
	}

	// The chart data: downsampled to at most max_points (1,000 unless
	// asked), the API's JSON.
	type history struct {
		Key    string
		Points []struct {
			Value any
			Step  int64
		}
	}
	series := func(path string) history {
		t.Helper()
		r := vi.get(path).want(t, 200)
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", path, ct)
		}
		var h history
		if err := json.Unmarshal([]byte(r.Body), &h); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return h
	}
	base := "/projects/lab/runs/" + a + "/metrics/"
	if h := series(base + "loss"); h.Key != "loss" || len(h.Points) == 0 || len(h.Points) > 1000 || h.Points[0].Step != 0 || h.Points[len(h.Points)-1].Step != 2999 {
		t.Errorf("default downsampling: key %q, %d points", h.Key, len(h.Points))
	}
	if h := series(base + "loss?max_points=100"); len(h.Points) == 0 || len(h.Points) > 100 {
		t.Errorf("max_points=100: %d points", len(h.Points))
	}
	if h := series(base + "loss?max_points=1000000"); len(h.Points) > 1000 {
		t.Errorf("max_points beyond the UI's bound: %d points", len(h.Points))
	}
	if h := series(base + "loss%2Ftrain"); h.Key != "loss/train" || len(h.Points) != 1 {
		t.Errorf("a key with a slash: %+v", h)
	}
	out := newUIClient(t, e)
	out.signIn(u.outsiderEmail, testenv.Password)
	out.get(base+"loss").want(t, 404)
	vi.get("/projects/lab/runs/00000000-0000-4000-8000-000000000000/metrics/loss").want(t, 404)

	// Comparing runs: both in the legend's list, a chart per shared key,
	// metrics and params side by side.
	cmp := "/projects/lab/experiments/" + u.xID + "/compare"
	c := vi.get(cmp+"?run="+a+"&run="+b).want(t, 200).Body
	for _, want := range []string{
		`data-run="` + a + `" data-name="&lt;script&gt;alert(1)&lt;/script&gt;"`, `data-run="` + b + `" data-name="second"`,
		`data-path="auc"`, `data-path="loss%2Ftrain"`, `data-path="loss"`, `<tr class="differ"><th scope="row">auc</th><td>0.9</td><td>0.8</td></tr>`,
		"one line per run",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("comparison lacks %s", want)
		}
	}
	if strings.Contains(c, xss) {
		t.Error("comparison renders a run name unescaped")
	}
	if c := vi.get(cmp + "?run=" + a + "&run=" + b + "&metric=auc").Body; strings.Contains(c, `data-path="loss"`) || !strings.Contains(c, `data-path="auc"`) {
		t.Errorf("a chosen metric: %.3000s", c)
	}
	vi.get(cmp).want(t, 400)
	vi.get(cmp+"?run=nope").want(t, 400)
	many := url.Values{}
	for i := range 11 {
		many.Add("run", fmt.Sprintf("00000000-0000-4000-8000-%012d", i))
	}
	vi.get(cmp+"?"+many.Encode()).want(t, 400)
	// A run of another experiment is not one of this one's.
	other := asJSON[idBody](t, call(t, e, 201, "POST", "/api/v1/projects/lab/experiments", u.admin, map[string]any{"name": "other"})).ID
	vi.get("/projects/lab/experiments/"+other+"/compare?run="+a).want(t, 404)
	out.get(cmp+"?run="+a).want(t, 404)
}
