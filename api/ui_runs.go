package api

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/filter"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/projections"
)

// The web UI's experiments: a project's experiments, an experiment's runs
// (MLflow's filter language, sortable and chosen columns, a page at a
// time), a run with its params, tags, metrics, artifacts, lineage and job,
// and metric charts (static/charts.js, uPlot) over a run's or several
// runs' downsampled series. Every read goes through the JSON API's route
// functions (listExperiments, searchRuns, getRun, listRunArtifacts,
// metricHistory, getRunArtifact, getJob), so the UI shows what the API
// would answer to the same caller.

func init() {
	maps.Copy(uiNotices, map[string]string{"experiment-created": "Experiment created."})
}

const (
	// uiRunsPage is the runs table's page size (?max_results= up to
	// twice that): an experiment of thousands of runs is read a page at a
	// time, never whole.
	uiRunsPage = 50
	// uiMaxCompare bounds the runs a comparison overlays.
	uiMaxCompare = 10
	// uiChartPoints is a chart series' default downsampling (max_points),
	// uiMaxChartPoints the most a chart may ask for.
	uiChartPoints    = 1000
	uiMaxChartPoints = 5000
	// uiMaxCharts is how many metric charts a page draws unless the caller
	// chooses the keys (?metric=).
	uiMaxCharts = 12
	// uiMaxColumns bounds the chosen columns of the runs table, and
	// uiMaxKeyChoices the keys of each kind the column chooser offers.
	uiMaxColumns    = 30
	uiMaxKeyChoices = 200
)

func (s *Server) uiRunRoutes() []UIRoute {
	const (
		experiments = "/projects/{project}/experiments"
		experiment  = experiments + "/{experiment}"
		run         = "/projects/{project}/runs/{run}"
	)
	return []UIRoute{
		{Method: "GET", Pattern: "/experiments", handle: s.uiPickProject("Experiments", "experiments")},
		{Method: "GET", Pattern: experiments, handle: shown(s.experimentsPage)},
		{Method: "POST", Pattern: experiments, handle: s.uiCreateExperiment},
		{Method: "GET", Pattern: experiment, handle: s.uiExperiment},
		{Method: "GET", Pattern: experiment + "/compare", handle: s.uiCompareRuns},
		{Method: "GET", Pattern: run, handle: s.uiRun},
		{Method: "GET", Pattern: run + "/metrics/{key}", handle: s.uiMetricSeries},
		{Method: "GET", Pattern: run + "/artifacts/*", Timeout: artifactTransferTimeout, handle: downloadOnly(s.getRunArtifact)},
	}
}

// ---- experiments ----

// experimentsData is the experiments page's data.
type experimentsData struct {
	Slug      string
	Items     []projections.Experiment
	Filter    string
	OrderBy   string
	View      string
	Orders    []option
	NextQuery string
	CanWrite  bool
}

// option is a <select>'s option.
type option struct{ Value, Text string }

var experimentOrders = []option{
	{"", "recently created"},
	{"name ASC", "by name"},
	{"last_update_time DESC", "recently updated"},
	{"creation_time ASC", "oldest first"},
}

// experimentsPage is a project's experiments, searched with the
// experiment filter language (GET …/experiments?filter=&order_by=), with
// the form that creates one for those who may.
func (s *Server) experimentsPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	v := r.URL.Query()
	d := experimentsData{Slug: proj.Slug, Filter: v.Get("filter"), OrderBy: v.Get("order_by"), View: v.Get("view"),
		Orders: experimentOrders, CanWrite: can(r, proj, authz.TrackingWrite)}
	show := func(status int, errText string) error {
		pg := s.inProject(r, proj, "Experiments", "Experiments", d)
		pg.Error = errText
		return s.render(w, status, "experiments", pg)
	}
	// The search form sends its empty fields too; to the API an empty
	// order_by is a malformed one.
	dropEmpty(r, "filter", "order_by", "view")
	var q listExperimentsQuery
	err = fillParams(r, &q)
	var list ExperimentPage
	if err == nil {
		list, err = s.listExperiments(newCall(w, r), q)
	}
	switch {
	case err != nil && errText != "":
		// A refused form's page: its error, not the list's.
	case err != nil:
		// A malformed filter is the page again, with the parser's error
		// (its position) above it.
		return s.formFailed(w, r, err, show)
	default:
		d.Items = list.Items
		if list.NextPageToken != "" {
			next := r.URL.Query()
			next.Set("page_token", list.NextPageToken)
			d.NextQuery = "?" + next.Encode()
		}
	}
	return show(status, errText)
}

// dropEmpty removes the empty values of the named query parameters.
func dropEmpty(r *http.Request, names ...string) {
	q := r.URL.Query()
	for _, name := range names {
		if vals := slices.DeleteFunc(q[name], func(v string) bool { return strings.TrimSpace(v) == "" }); len(vals) > 0 {
			q[name] = vals
		} else {
			delete(q, name)
		}
	}
	r.URL.RawQuery = q.Encode()
}

func (s *Server) uiCreateExperiment(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.experimentsPage(w, r, status, detail) }
	tags, err := parseTags(formValue(r, "tags"))
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	x, seq, err := s.createExperiment(newCall(w, r), createExperimentRequest{Name: formValue(r, "name"), Tags: tags})
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, trackingViews...)
	seeOther(w, r, "/projects/"+url.PathEscape(chi.URLParam(r, "project"))+"/experiments/"+x.ID, "experiment-created")
	return nil
}

// ---- an experiment's runs ----

// runsData is the runs table's page.
type runsData struct {
	Slug       string
	Experiment projections.Experiment
	Filter     string
	View       string
	Fixed      []runColumn // name, status, start: always shown
	Columns    []runColumn // the chosen metric, param and tag columns
	Choices    []keyChoices
	Rows       []runRow
	NextQuery  string
	First      string // the first page's query, when this is a later one
	// Orders are the order_by entries the forms keep; ColsChosen says the
	// columns are a choice (the filter form keeps them).
	Orders     []string
	ColsChosen bool
	MaxResults string // ?max_results=, kept by the forms
	MaxRuns    int
	Span       int // the table's columns
}

// runColumn is a column of the runs table: an order_by identifier, its
// heading, and the link that sorts by it (the other way round when it is
// the current order).
type runColumn struct {
	ID      string // metrics.auc, params.lr, tags.team (chosen columns)
	Label   string
	Kind    string // Metric, Param, Tag
	Href    string
	Sort    string // aria-sort: ascending, descending or ""
	NextDir string // what the link does, for its accessible name
	typ     filter.Type
	key     string
}

// keyChoices are the keys of one kind the column chooser offers.
type keyChoices struct {
	Kind    string
	Keys    []keyChoice
	Omitted int
}

type keyChoice struct {
	ID, Key string
	Checked bool
}

// runRow is a run and its chosen columns' cells.
type runRow struct {
	Run     projections.Run
	Started string
	Cells   []string
}

// columnTypes are the keyed types a column may show, by their order_by
// prefix.
var columnTypes = map[string]filter.Type{"metrics": filter.Metric, "params": filter.Param, "tags": filter.Tag}

func typeLabel(t filter.Type) string {
	switch t {
	case filter.Metric:
		return "Metric"
	case filter.Param:
		return "Param"
	}
	return "Tag"
}

// parseColumn reads a chosen column (?col=metrics.auc): a keyed type's
// prefix and a key.
func parseColumn(id string) (runColumn, bool) {
	prefix, key, ok := strings.Cut(id, ".")
	t, known := columnTypes[prefix]
	if !ok || !known || key == "" || len(key) > 1000 || !handlers.PlainText(key) {
		return runColumn{}, false
	}
	return runColumn{ID: id, Label: key, Kind: typeLabel(t), typ: t, key: key}, true
}

func (s *Server) uiExperiment(w http.ResponseWriter, r *http.Request) error {
	proj, ref, err := projectInput[experimentRef](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	x, err := s.getExperiment(c, ref)
	if err != nil {
		return err
	}
	v := r.URL.Query()
	d := runsData{Slug: proj.Slug, Experiment: x, Filter: v.Get("filter"), View: v.Get("view"), MaxRuns: uiMaxCompare}
	show := func(status int, errText string) error {
		pg := s.inProject(r, proj, x.Name, "Experiments", d)
		pg.Error = errText
		return s.render(w, status, "experiment", pg)
	}

	// The search: the filter as written, the order of the clicked column
	// (or any order_by entries a link carries), a page of runs.
	orderBy := slices.DeleteFunc(slices.Clone(v["order_by"]), func(o string) bool { return strings.TrimSpace(o) == "" })
	d.Orders = orderBy
	size := uiRunsPage
	if n, err := strconv.Atoi(v.Get("max_results")); err == nil && n >= 1 && n <= 2*uiRunsPage {
		size = n
	}
	var q runSearchQuery
	err = q.set(runSearchRequest{ExperimentIDs: []string{x.ID}, Filter: d.Filter, OrderBy: orderBy,
		View: projections.View(d.View), MaxResults: &size, PageToken: v.Get("page_token")})
	var page RunPage
	if err == nil {
		page, err = s.searchRuns(c, q)
	}
	var current []filter.OrderKey
	if err == nil {
		current, _ = filter.ParseOrderBy(filter.Runs, orderBy)
	}

	// Columns: the chosen ones (?col=, with chosen=1 from the chooser, so
	// that choosing none is a choice), else a few of the keys the page's
	// runs have. The keys offered are those of the runs shown: no query
	// reads an experiment's distinct keys.
	present := map[filter.Type]map[string]bool{filter.Metric: {}, filter.Param: {}, filter.Tag: {}}
	for _, run := range page.Items {
		for k := range run.Metrics {
			present[filter.Metric][k] = true
		}
		for k := range run.Params {
			present[filter.Param][k] = true
		}
		for k := range run.Tags {
			present[filter.Tag][k] = true
		}
	}
	chosen := map[string]bool{}
	if v.Get("chosen") != "" || len(v["col"]) > 0 {
		for _, id := range v["col"] {
			if col, ok := parseColumn(id); ok && !chosen[id] && len(d.Columns) < uiMaxColumns {
				chosen[id] = true
				d.Columns = append(d.Columns, col)
			}
		}
	} else {
		for _, def := range []struct {
			t filter.Type
			n int
		}{{filter.Metric, 3}, {filter.Param, 2}} {
			for _, k := range slices.Sorted(maps.Keys(present[def.t]))[:min(def.n, len(present[def.t]))] {
				col, ok := parseColumn(def.t.String() + "." + k)
				if !ok {
					continue
				}
				chosen[col.ID] = true
				d.Columns = append(d.Columns, col)
			}
		}
	}
	for _, t := range []filter.Type{filter.Metric, filter.Param, filter.Tag} {
		keys := present[t]
		for _, col := range d.Columns {
			if col.typ == t {
				keys[col.key] = true
			}
		}
		kc := keyChoices{Kind: typeLabel(t) + "s"}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			id := t.String() + "." + k
			if len(kc.Keys) >= uiMaxKeyChoices && !chosen[id] {
				kc.Omitted++
				continue
			}
			kc.Keys = append(kc.Keys, keyChoice{ID: id, Key: k, Checked: chosen[id]})
		}
		d.Choices = append(d.Choices, kc)
	}

	// The query the page's links keep: search, view, columns.
	keep := url.Values{}
	for _, name := range []string{"filter", "view", "max_results"} {
		if v.Get(name) != "" {
			keep.Set(name, v.Get(name))
		}
	}
	if v.Get("chosen") != "" || len(v["col"]) > 0 {
		keep.Set("chosen", "1")
		for _, col := range d.Columns {
			keep.Add("col", col.ID)
		}
	}
	d.ColsChosen, d.MaxResults = keep.Has("chosen"), keep.Get("max_results")
	sortable := func(col runColumn) runColumn {
		dir := "ASC"
		if len(current) == 0 && col.typ == filter.Attribute && col.key == "start_time" {
			col.Sort, dir = "descending", "ASC" // the search's own order
		}
		if len(current) > 0 && current[0].Type == col.typ && current[0].Key == col.key {
			if current[0].Desc {
				col.Sort = "descending"
			} else {
				col.Sort, dir = "ascending", "DESC"
			}
		}
		link := cloneValues(keep)
		link.Set("order_by", filter.OrderKey{Type: col.typ, Key: col.key, Desc: dir == "DESC"}.String())
		col.Href, col.NextDir = "?"+link.Encode(), map[string]string{"ASC": "ascending", "DESC": "descending"}[dir]
		return col
	}
	d.Fixed = []runColumn{
		sortable(runColumn{Label: "Run", typ: filter.Attribute, key: "run_name"}),
		sortable(runColumn{Label: "Status", typ: filter.Attribute, key: "status"}),
		sortable(runColumn{Label: "Started", typ: filter.Attribute, key: "start_time"}),
	}
	for i := range d.Columns {
		d.Columns[i] = sortable(d.Columns[i])
	}
	d.Span = 1 + len(d.Fixed) + len(d.Columns)
	if err != nil {
		return s.formFailed(w, r, err, show)
	}

	for _, run := range page.Items {
		row := runRow{Run: run, Started: msTime(run.StartTime)}
		for _, col := range d.Columns {
			row.Cells = append(row.Cells, runCell(run, col.typ, col.key))
		}
		d.Rows = append(d.Rows, row)
	}
	withOrder := cloneValues(keep)
	for _, o := range orderBy {
		withOrder.Add("order_by", o)
	}
	if page.NextPageToken != "" {
		next := cloneValues(withOrder)
		next.Set("page_token", page.NextPageToken)
		d.NextQuery = "?" + next.Encode()
	}
	if v.Get("page_token") != "" {
		d.First = "?" + withOrder.Encode()
	}
	return show(http.StatusOK, "")
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vals := range v {
		out[k] = slices.Clone(vals)
	}
	return out
}

// runCell is a run's value of a metric (latest), param or tag; "" if it
// has none.
func runCell(run projections.Run, t filter.Type, key string) string {
	switch t {
	case filter.Metric:
		if m, ok := run.Metrics[key]; ok {
			return formatFloat(float64(m.Value))
		}
	case filter.Param:
		return run.Params[key]
	case filter.Tag:
		return run.Tags[key]
	}
	return ""
}

// msTime is a time in milliseconds since the epoch, as the UI shows times.
func msTime(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC")
}

// ---- a run ----

// runData is the run page's data.
type runData struct {
	Slug       string
	Run        projections.Run
	Experiment projections.Experiment
	Started    string
	Ended      string
	Duration   string
	Params     []kv
	Tags       []kv
	Metrics    []metricRow
	Artifacts  []runArtifact
	ArtNext    string
	Job        *projections.Job
	// JobLog is the log of the job that ran the run (live while it runs).
	JobLog jobLogView
	Charts chartsData
	// Explanation is the run's explanation.json (ui_explain.go).
	Explanation explanationView
}

// runArtifact is an artifact and its download path (each segment
// escaped).
type runArtifact struct {
	ArtifactResponse
	Href string
}

// metricRow is a run's latest point of a metric.
type metricRow struct {
	Key, Value string
	Step       int64
	When       string
}

// chartsData is what a page's charts need: the runs they overlay (a
// legend, and where charts.js fetches each series), the metric keys to
// draw, and the chooser of keys.
type chartsData struct {
	Base   string // "/projects/<slug>/runs/": + <run>/metrics/<key>
	Runs   []chartRun
	Keys   []chartKey // drawn
	All    []keyChoice
	Points int
}

type chartRun struct {
	ID, Name string
	Latest   map[string]*metricRow // by key
}

// chartKey is a metric key and its path segment.
type chartKey struct{ Key, Path string }

func (s *Server) uiRun(w http.ResponseWriter, r *http.Request) error {
	proj, ref, err := projectInput[runRef](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	run, err := s.getRun(c, ref)
	if err != nil {
		return err
	}
	x, err := s.getExperiment(c, experimentRef{experiment: run.ExperimentID})
	if err != nil {
		return err
	}
	d := runData{Slug: proj.Slug, Run: run, Experiment: x, Started: msTime(run.StartTime),
		Params: sortedKV(run.Params, func(s string) string { return s }), Tags: sortedKV(run.Tags, func(s string) string { return s })}
	if run.EndTime != nil {
		d.Ended = msTime(*run.EndTime)
		d.Duration = (time.Duration(*run.EndTime-run.StartTime) * time.Millisecond).String()
	}
	for _, k := range slices.Sorted(maps.Keys(run.Metrics)) {
		m := run.Metrics[k]
		d.Metrics = append(d.Metrics, metricRow{Key: k, Value: formatFloat(float64(m.Value)), Step: m.Step, When: msTime(m.Timestamp)})
	}
	d.Charts = chartsFor(r, proj.Slug, []projections.Run{run})

	// Artifacts: the API's list, a page at a time.
	aq := runArtifactsQuery{runRef: ref}
	if err := aq.pageQuery.readParams(r); err != nil {
		return err
	}
	arts, err := s.listRunArtifacts(c, aq)
	if err != nil {
		return err
	}
	if list, ok := arts.(ArtifactList); ok {
		for _, a := range list.Items {
			segs := strings.Split(a.Path, "/")
			for i, seg := range segs {
				segs[i] = url.PathEscape(seg)
			}
			d.Artifacts = append(d.Artifacts, runArtifact{a, strings.Join(segs, "/")})
		}
		d.ArtNext = list.NextPageToken
	}

	if d.Job, err = s.jobOfRun(c, run); err != nil {
		return err
	}
	if d.Job != nil {
		d.JobLog = s.jobLog(r, *d.Job)
	}
	ex, err := s.runExplanation(r.Context(), proj.ID, run.ID)
	d.Explanation = s.explanationFor(r.Context(), ex, err)
	d.Explanation.From, d.Explanation.Href = "this run", "/projects/"+url.PathEscape(proj.Slug)+"/runs/"+run.ID+"/artifacts/"+explain.FileName
	title := run.Name
	if title == "" {
		title = "Run " + run.ID
	}
	return s.render(w, http.StatusOK, "run", s.inProject(r, proj, title, "Experiments", d))
}

// chartsFor is the charts of runs: the metric keys any of them has, those
// the caller chose (?metric=) or the first few drawn.
func chartsFor(r *http.Request, slug string, runs []projections.Run) chartsData {
	d := chartsData{Base: "/projects/" + slug + "/runs/", Points: uiChartPoints}
	keys := map[string]bool{}
	for _, run := range runs {
		cr := chartRun{ID: run.ID, Name: run.Name, Latest: map[string]*metricRow{}}
		if cr.Name == "" {
			cr.Name = run.ID
		}
		for k, m := range run.Metrics {
			keys[k] = true
			cr.Latest[k] = &metricRow{Key: k, Value: formatFloat(float64(m.Value)), Step: m.Step, When: msTime(m.Timestamp)}
		}
		d.Runs = append(d.Runs, cr)
	}
	want := map[string]bool{}
	for _, k := range r.URL.Query()["metric"] {
		want[k] = keys[k]
	}
	all := slices.Sorted(maps.Keys(keys))
	for _, k := range all {
		draw := want[k] || (len(want) == 0 && len(d.Keys) < uiMaxCharts)
		if draw {
			d.Keys = append(d.Keys, chartKey{Key: k, Path: url.PathEscape(k)})
		}
		d.All = append(d.All, keyChoice{ID: k, Key: k, Checked: draw})
	}
	return d
}

// uiMetricSeries is a chart's data: the run's series of one metric,
// downsampled (max_points, uiChartPoints unless asked), as GET
// …/runs/{run}/metrics/{key}?max_points= answers it (metricHistory: the
// same read check, the same JSON).
func (s *Server) uiMetricSeries(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	n, err := strconv.Atoi(q.Get("max_points"))
	if err != nil || n < 4 || n > uiMaxChartPoints {
		n = uiChartPoints
	}
	q.Set("max_points", strconv.Itoa(n))
	r.URL.RawQuery = q.Encode()
	return s.metricHistory(w, r)
}

// ---- comparing runs ----

// compareRunsData is the comparison page's data.
type compareRunsData struct {
	Slug       string
	Experiment projections.Experiment
	Runs       []projections.Run
	Sections   []compareSection // latest metrics, params
	Charts     chartsData
	Span       int
}

// uiCompareRuns overlays the metrics of up to uiMaxCompare runs of an
// experiment (?run=, repeated), found by the run search (run_id IN …), and
// sets their latest metrics and params side by side.
func (s *Server) uiCompareRuns(w http.ResponseWriter, r *http.Request) error {
	proj, ref, err := projectInput[experimentRef](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	x, err := s.getExperiment(c, ref)
	if err != nil {
		return err
	}
	var ids []string
	for _, id := range r.URL.Query()["run"] {
		u, err := uuid.Parse(id)
		if err != nil || len(id) != 36 {
			return problem("validation-failed", "run must be a run id")
		}
		if !slices.Contains(ids, u.String()) {
			ids = append(ids, u.String())
		}
	}
	if len(ids) == 0 || len(ids) > uiMaxCompare {
		return problem("validation-failed", "choose between 1 and "+strconv.Itoa(uiMaxCompare)+" runs to compare")
	}
	quoted := make([]string, len(ids))
	for i, id := range ids {
		quoted[i] = "'" + id + "'" // a canonical uuid: nothing to escape
	}
	size := uiMaxCompare
	var q runSearchQuery
	if err := q.set(runSearchRequest{ExperimentIDs: []string{x.ID}, Filter: "attributes.run_id IN (" + strings.Join(quoted, ", ") + ")",
		View: projections.ViewAll, MaxResults: &size}); err != nil {
		return err
	}
	page, err := s.searchRuns(c, q)
	if err != nil {
		return err
	}
	byID := map[string]projections.Run{}
	for _, run := range page.Items {
		byID[run.ID] = run
	}
	d := compareRunsData{Slug: proj.Slug, Experiment: x}
	for _, id := range ids {
		run, ok := byID[id]
		if !ok {
			return problem("not-found", "run "+id+" is not a run of this experiment")
		}
		d.Runs = append(d.Runs, run)
	}
	d.Charts = chartsFor(r, proj.Slug, d.Runs)
	d.Span = 1 + len(d.Runs)
	metricKeys, paramKeys := map[string]bool{}, map[string]bool{}
	for _, run := range d.Runs {
		for k := range run.Metrics {
			metricKeys[k] = true
		}
		for k := range run.Params {
			paramKeys[k] = true
		}
	}
	row := func(k string, value func(projections.Run) (string, bool)) compareRow {
		cr := compareRow{Key: k}
		for i, run := range d.Runs {
			v, ok := value(run)
			if !ok {
				v = "—"
			}
			cr.Values = append(cr.Values, v)
			cr.Differ = cr.Differ || (i > 0 && v != cr.Values[0])
		}
		return cr
	}
	metrics, params := compareSection{Caption: "Latest metrics"}, compareSection{Caption: "Parameters"}
	for _, k := range slices.Sorted(maps.Keys(metricKeys)) {
		metrics.Rows = append(metrics.Rows, row(k, func(run projections.Run) (string, bool) {
			m, ok := run.Metrics[k]
			return formatFloat(float64(m.Value)), ok
		}))
	}
	for _, k := range slices.Sorted(maps.Keys(paramKeys)) {
		params.Rows = append(params.Rows, row(k, func(run projections.Run) (string, bool) {
			v, ok := run.Params[k]
			return v, ok
		}))
	}
	d.Sections = []compareSection{metrics, params}
	return s.render(w, http.StatusOK, "runcompare", s.inProject(r, proj, "Compare runs of "+x.Name, "Experiments", d))
}

// jobOfRun is the job that ran run, if one did. A job's run carries the
// job's id as a tag, which the run's editors could change, so the job
// counts only when its own record names this run.
func (s *Server) jobOfRun(c *call, run projections.Run) (*projections.Job, error) {
	id := run.Tags["maestro.job_id"]
	if u, err := uuid.Parse(id); id == "" || err != nil || u.String() != id {
		return nil, nil
	}
	j, err := s.getJob(c, jobRef{job: id})
	if err != nil {
		if s.problemFor(c.r, err).code == "not-found" {
			return nil, nil
		}
		return nil, err
	}
	if j.RunID != run.ID {
		return nil, nil
	}
	return &j, nil
}
