package api

import (
	"errors"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/api/web"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/projections"
)

func (s *Server) uiModelRoutes() []UIRoute {
	const (
		models  = "/projects/{project}/models"
		model   = models + "/{name}"
		version = model + "/versions/{version}"
	)
	return []UIRoute{
		{Method: "GET", Pattern: "/models", handle: s.uiPickProject("Models", "models")},
		{Method: "GET", Pattern: models, handle: shown(s.modelsPage)},
		{Method: "POST", Pattern: models, handle: s.uiCreateModel},
		{Method: "GET", Pattern: model, handle: shown(s.modelPage)},
		{Method: "GET", Pattern: model + "/compare", handle: s.uiCompareVersions},
		{Method: "GET", Pattern: model + "/history", handle: s.uiModelHistory},
		{Method: "POST", Pattern: model + "/versions", handle: s.uiRegisterVersion},
		{Method: "POST", Pattern: model + "/aliases", handle: s.uiSetAlias},
		{Method: "POST", Pattern: model + "/aliases/{alias}/remove", handle: s.uiDeleteAlias},
		{Method: "GET", Pattern: version, handle: shown(s.versionPage)},
		{Method: "POST", Pattern: version + "/transition", handle: s.uiTransition},
		{Method: "POST", Pattern: version + "/artifacts", MaxBody: s.uploadMaxBody(), Timeout: artifactTransferTimeout, handle: s.uiUploadArtifact},
		{Method: "GET", Pattern: version + "/artifacts/*", Timeout: artifactTransferTimeout, handle: downloadOnly(s.getArtifact)},
	}
}

// pickData is the page that leads into a project's models, experiments or
// jobs from the main navigation.
type pickData struct {
	Items []ProjectResponse
	Next  string
	Leaf  string
}

// uiPickProject is the navigation's Models (Experiments, Jobs) outside a
// project: the caller's projects, each linking to its leaf page.
func (s *Server) uiPickProject(title, leaf string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var q listProjectsQuery
		if err := fillParams(r, &q); err != nil {
			return err
		}
		list, err := s.listProjects(newCall(w, r), q)
		if err != nil {
			return err
		}
		return s.render(w, http.StatusOK, "pick", s.page(r, title, title, pickData{Items: list.Items, Next: list.NextPageToken, Leaf: leaf}))
	}
}

// inProject is a project page's layout data: the project in the
// navigation and the ?done= notice.
func (s *Server) inProject(r *http.Request, proj projections.Project, title, nav string, data any) web.Page {
	pg := s.page(r, title, nav, data)
	pg.Project = &web.ProjectRef{Slug: proj.Slug, Name: proj.Name}
	pg.Notice = notice(r)
	return pg
}

// can reports whether the caller may take action in proj.
func can(r *http.Request, proj projections.Project, action authz.Action) bool {
	p, _ := principal(r.Context())
	return authz.CanInProject(p, proj.ID, authz.ProjectRole(proj.Role), action)
}

// modelsData is the models page's data.
type modelsData struct {
	Slug      string
	Items     []ModelResponse
	Next      string
	Query     url.Values
	CanWrite  bool
	NextQuery string
}

// modelsPage is a project's models, searched by name prefix and tag (the
// same filters as GET .../models), with the form to register one.
func (s *Server) modelsPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, q, err := projectInput[listModelsQuery](s, r)
	if err != nil {
		return err
	}
	list, err := s.listModels(newCall(w, r), q)
	if err != nil {
		return err
	}
	d := modelsData{Slug: proj.Slug, Items: list.Items, Query: r.URL.Query(), CanWrite: can(r, proj, authz.ModelWrite)}
	if list.NextPageToken != "" {
		next := r.URL.Query()
		next.Set("page_token", list.NextPageToken)
		d.NextQuery = "?" + next.Encode()
	}
	pg := s.inProject(r, proj, "Models", "Models", d)
	pg.Error = errText
	return s.render(w, status, "models", pg)
}

// parseTags reads "key=value" lines (a textarea) into tags; a line without
// "=" is an error naming it.
func parseTags(text string) (map[string]string, error) {
	tags := map[string]string{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, problem("validation-failed", "tags: write one key=value per line (not "+strconv.Quote(line)+")")
		}
		tags[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return tags, nil
}

func (s *Server) uiCreateModel(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.modelsPage(w, r, status, detail) }
	tags, err := parseTags(formValue(r, "tags"))
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	m, seq, err := s.createModel(newCall(w, r), createModelRequest{Name: formValue(r, "name"), Description: formValue(r, "description"), Tags: tags})
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, uiModelPath(r, m.Name), "model-created")
	return nil
}

// uiModelPath is the UI path of model name in the request's project.
func uiModelPath(r *http.Request, name string) string {
	return "/projects/" + url.PathEscape(chi.URLParam(r, "project")) + "/models/" + url.PathEscape(name)
}

// modelData is the model page's data.
type modelData struct {
	Slug       string
	Model      ModelResponse
	Versions   []VersionResponse
	Next       string
	AsOf       string
	Aliases    []aliasRow
	CanWrite   bool
	CanPromote bool
}

type aliasRow struct {
	Alias   string
	Version int
}

// modelPage is a model with its versions (newest first, a page at a time)
// and aliases, now or as of a point in time, with the forms the caller may
// use.
func (s *Server) modelPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	m, err := s.readableModel(r)
	if err != nil {
		return err
	}
	d := modelData{Slug: proj.Slug, Model: modelFromProjection(m), CanWrite: can(r, proj, authz.ModelWrite), CanPromote: can(r, proj, authz.VersionPromote)}
	if raw := r.URL.Query().Get("as_of"); raw != "" {
		at, err := uiTime(raw)
		if err != nil {
			return err
		}
		if d.Model, err = s.modelAsOf(r, m.ID, at); err != nil {
			return err
		}
		d.AsOf = at.UTC().Format(time.RFC3339)
		d.Versions = d.Model.Versions
		slices.Reverse(d.Versions)
		d.CanWrite, d.CanPromote = false, false
	} else {
		var q listVersionsQuery
		if err := fillParams(r, &q); err != nil {
			return err
		}
		page, err := s.listVersions(newCall(w, r), q)
		if err != nil {
			return err
		}
		d.Versions, d.Next = page.Items, page.NextPageToken
	}
	for _, a := range slices.Sorted(maps.Keys(d.Model.Aliases)) {
		d.Aliases = append(d.Aliases, aliasRow{a, d.Model.Aliases[a]})
	}
	pg := s.inProject(r, proj, m.Name, "Models", d)
	pg.Error = errText
	return s.render(w, status, "model", pg)
}

// uiTime reads a point in time from a form: RFC 3339, or what an
// <input type="datetime-local"> sends (no zone: UTC).
func uiTime(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, problem("validation-failed", "as_of must be a date and time (RFC 3339, or YYYY-MM-DDTHH:MM in UTC)")
}

func (s *Server) uiRegisterVersion(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.modelPage(w, r, status, detail) }
	tags, err := parseTags(formValue(r, "tags"))
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	v, seq, err := s.createVersion(newCall(w, r), createVersionRequest{Description: formValue(r, "description"), Tags: tags,
		Source: formValue(r, "source"), RunID: strings.TrimSpace(formValue(r, "run_id"))})
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, uiModelPath(r, chi.URLParam(r, "name"))+"/versions/"+strconv.Itoa(v.Version), "version-registered")
	return nil
}

// withParam gives a form's field to a route function that reads it as a
// path parameter (the API's alias routes take the alias from the path).
func withParam(r *http.Request, name, value string) {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		rc.URLParams.Add(name, value)
	}
}

func (s *Server) uiSetAlias(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.modelPage(w, r, status, detail) }
	req := setAliasRequest{}
	v, err := strconv.Atoi(formValue(r, "version"))
	if err != nil {
		return again(http.StatusBadRequest, "version must be a version number")
	}
	req.Version = v
	if err := req.validate(); err != nil {
		return s.formFailed(w, r, err, again)
	}
	withParam(r, "alias", formValue(r, "alias"))
	_, seq, err := s.setAlias(newCall(w, r), req)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, uiModelPath(r, chi.URLParam(r, "name")), "alias-set")
	return nil
}

func (s *Server) uiDeleteAlias(w http.ResponseWriter, r *http.Request) error {
	_, seq, err := s.deleteAlias(newCall(w, r), none{})
	if err != nil {
		return s.formFailed(w, r, err, func(status int, detail string) error { return s.modelPage(w, r, status, detail) })
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, uiModelPath(r, chi.URLParam(r, "name")), "alias-removed")
	return nil
}

// versionData is the version page's data.
type versionData struct {
	Slug       string
	Model      string
	Version    VersionResponse
	Metrics    []kv
	Tags       []kv
	Artifacts  []artifactRow
	ArtNext    string
	Run        *projections.Run
	Job        *projections.Job
	Stages     []string
	CanWrite   bool
	CanPromote bool
	// Explanation is the version's explanation and its comparison with
	// the previous version's (ui_explain.go).
	Explanation explanationView
}

// artifactRow is an artifact with its download link.
type artifactRow struct {
	ArtifactResponse
	Href string
}

// artifactHref is the UI's download path of a version's artifact: each
// segment of its path escaped, for a path may hold "?", "#" or "%".
func artifactHref(slug, model string, version int, apath string) string {
	segs := strings.Split(apath, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return "/projects/" + url.PathEscape(slug) + "/models/" + url.PathEscape(model) + "/versions/" + strconv.Itoa(version) +
		"/artifacts/" + strings.Join(segs, "/")
}

// kv is one row of a name/value table, sorted by name.
type kv struct{ Key, Value string }

func sortedKV[V any](m map[string]V, format func(V) string) []kv {
	out := make([]kv, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, kv{k, format(m[k])})
	}
	return out
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// versionPage is a version: stage, aliases, metrics, tags, its run
// (lineage) and artifacts, with the forms the caller may use.
func (s *Server) versionPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, ref, err := projectInput[versionRef](s, r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	m, err := s.readableModel(r)
	if err != nil {
		return err
	}
	v, err := s.readVersion(r.Context(), m, ref.version)
	if err != nil {
		return err
	}
	d := versionData{Slug: proj.Slug, Model: chi.URLParam(r, "name"), Version: v,
		Metrics: sortedKV(v.Metrics, formatFloat), Tags: sortedKV(v.Tags, func(s string) string { return s }),
		Stages:   []string{events.StageNone, events.StageStaging, events.StageProduction, events.StageArchived},
		CanWrite: can(r, proj, authz.ModelWrite) && !v.Deleted, CanPromote: can(r, proj, authz.VersionPromote) && !v.Deleted}
	if !v.Deleted {
		var q pageQuery
		if err := fillParams(r, &q); err != nil {
			return err
		}
		arts, err := s.listArtifacts(c, q)
		if err != nil {
			return err
		}
		for _, a := range arts.Items {
			d.Artifacts = append(d.Artifacts, artifactRow{a, artifactHref(proj.Slug, d.Model, v.Version, a.Path)})
		}
		d.ArtNext = arts.NextPageToken
	}
	if v.RunID != "" {
		if run, err := s.deps.Queries.Run(r.Context(), proj.ID, v.RunID); err == nil {
			d.Run = &run
			if d.Job, err = s.jobOfRun(c, run); err != nil {
				return err
			}
		} else if !errors.Is(err, projections.ErrNotFound) {
			return err
		}
	}
	d.Explanation = s.versionExplanationView(r.Context(), proj, m, v)
	pg := s.inProject(r, proj, d.Model+" version "+strconv.Itoa(v.Version), "Models", d)
	pg.Error = errText
	return s.render(w, status, "version", pg)
}

func (s *Server) uiTransition(w http.ResponseWriter, r *http.Request) error {
	req := transitionRequest{Stage: formValue(r, "stage"), ArchiveExisting: formValue(r, "archive_existing") == "on"}
	if err := fillParams(r, &req); err != nil {
		return err
	}
	again := func(status int, detail string) error { return s.versionPage(w, r, status, detail) }
	if err := req.validate(); err != nil {
		return s.formFailed(w, r, err, again)
	}
	_, seq, err := s.transitionVersion(newCall(w, r), req)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, r.URL.Path[:len(r.URL.Path)-len("/transition")], "stage-changed")
	return nil
}

// uploadMaxBody is the body limit of an artifact upload form: the artifact
// limit and room for the form's other fields.
func (s *Server) uploadMaxBody() int64 { return s.deps.ArtifactMaxBytes + 1<<20 }

// uiUploadArtifact is the upload form (multipart: csrf, path, file, in that
// order): the file is streamed into the store as a PUT's body is, then
// recorded by the same decision as PUT .../artifacts/{path}.
func (s *Server) uiUploadArtifact(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.versionPage(w, r, status, detail) }
	mr, ok := r.Context().Value(ctxMultipart).(multipartRest)
	if !ok {
		return again(http.StatusBadRequest, "send the upload form (multipart/form-data)")
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "path" {
		return again(http.StatusBadRequest, "the form must send the artifact's path before the file")
	}
	raw, _ := io.ReadAll(io.LimitReader(part, 4096))
	apath := strings.TrimSpace(string(raw))
	file, err := mr.NextPart()
	if err != nil || file.FormName() != "file" || file.FileName() == "" {
		return again(http.StatusBadRequest, "choose a file to upload")
	}
	if apath == "" {
		apath = file.FileName()
	}
	withParam(r, "*", apath)
	if apath, err = artifactPathParam(r); err != nil {
		return s.formFailed(w, r, err, again)
	}
	up := r.Clone(r.Context())
	up.Body, up.ContentLength = io.NopCloser(file), -1
	up.Header = http.Header{}
	if ct := file.Header.Get("Content-Type"); ct != "" && ct != "application/octet-stream" {
		up.Header.Set("Content-Type", ct)
	}
	authorize, record, err := s.versionArtifactWriter(up)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	_, _, seq, err := s.storeArtifact(w, up, apath, authorize, record)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, strings.TrimSuffix(r.URL.Path, "/artifacts"), "artifact-uploaded")
	return nil
}

// downloadOnly serves an artifact's download (get: getArtifact,
// getRunArtifact) for a navigation or a fetch only. An artifact is
// anyone's upload served from the UI's origin with the type it was given,
// so as a <script> or a stylesheet of a page it would pass the CSP's
// script-src 'self' (its own sandbox CSP and attachment do not apply to a
// subresource): browsers say what a request is for in Sec-Fetch-Dest.
func downloadOnly(get routeHandler) routeHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		switch r.Header.Get("Sec-Fetch-Dest") {
		case "", "document", "empty":
		default:
			return problem("forbidden", "an artifact is downloaded, never loaded into a page")
		}
		return get(w, r)
	}
}

// compareData is the version comparison's data: one column per version,
// one row per metric, param and tag any of them has.
type compareData struct {
	Slug     string
	Model    string
	Versions []VersionResponse
	Sections []compareSection
}

type compareSection struct {
	Caption string
	Rows    []compareRow
}

type compareRow struct {
	Key    string
	Values []string
	Differ bool
}

// maxCompare bounds the versions compared side by side.
const maxCompare = 6

// uiCompareVersions is versions ?v=1&v=2… side by side: their metrics,
// their runs' params, and their tags.
func (s *Server) uiCompareVersions(w http.ResponseWriter, r *http.Request) error {
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	m, err := s.readableModel(r)
	if err != nil {
		return err
	}
	nums := r.URL.Query()["v"]
	if len(nums) < 2 || len(nums) > maxCompare {
		return problem("validation-failed", "choose 2 to "+strconv.Itoa(maxCompare)+" versions to compare")
	}
	d := compareData{Slug: proj.Slug, Model: m.Name}
	var metrics, params, tags []map[string]string
	for _, raw := range nums {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > maxVersion {
			return problem("validation-failed", "v must be version numbers")
		}
		v, err := s.readVersion(r.Context(), m, n)
		if err != nil {
			return err
		}
		d.Versions = append(d.Versions, v)
		mm := map[string]string{}
		for k, f := range v.Metrics {
			mm[k] = formatFloat(f)
		}
		metrics, tags = append(metrics, mm), append(tags, v.Tags)
		var ps map[string]string
		if v.RunID != "" {
			if run, err := s.deps.Queries.Run(r.Context(), proj.ID, v.RunID); err == nil {
				ps = run.Params
			} else if !errors.Is(err, projections.ErrNotFound) {
				return err
			}
		}
		params = append(params, ps)
	}
	d.Sections = []compareSection{{"Metrics", compareRows(metrics)}, {"Parameters (of each version's run)", compareRows(params)}, {"Tags", compareRows(tags)}}
	return s.render(w, http.StatusOK, "compare", s.inProject(r, proj, m.Name+": versions compared", "Models", d))
}

// compareRows is one row per key of any of cols, its value in each.
func compareRows(cols []map[string]string) []compareRow {
	keys := map[string]bool{}
	for _, c := range cols {
		for k := range c {
			keys[k] = true
		}
	}
	var rows []compareRow
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		row := compareRow{Key: k}
		for i, c := range cols {
			v, ok := c[k]
			if !ok {
				v = "—"
			}
			row.Values = append(row.Values, v)
			row.Differ = row.Differ || (i > 0 && v != row.Values[0])
		}
		rows = append(rows, row)
	}
	return rows
}

// historyData is the model history page's data.
type historyData struct {
	Slug    string
	Model   string
	Entries []historyRow
	Next    string
}

type historyRow struct {
	Time    time.Time
	Who     string
	Type    string
	Summary string
}

// uiModelHistory is the model's audit trail (modelHistory, as GET
// .../models/{name}/history), with the e-mail of each actor who is a
// member of the project.
func (s *Server) uiModelHistory(w http.ResponseWriter, r *http.Request) error {
	proj, q, err := projectInput[pageQuery](s, r)
	if err != nil {
		return err
	}
	page, err := s.modelHistory(newCall(w, r), q)
	if err != nil {
		return err
	}
	d := historyData{Slug: proj.Slug, Model: chi.URLParam(r, "name"), Next: page.NextPageToken}
	// Members by e-mail (as listMembers shows them to the page's reader),
	// anyone else by id: the API tells other users' addresses to admins only.
	emails, err := s.memberEmails(newCall(w, r))
	if err != nil {
		return err
	}
	for _, e := range page.Items {
		who := e.Actor
		if id, ok := strings.CutPrefix(e.Actor, string(events.ActorUser)+":"); ok && emails[id] != "" {
			who = emails[id]
		}
		d.Entries = append(d.Entries, historyRow{Time: e.Time, Who: who, Type: e.Type, Summary: e.Summary})
	}
	return s.render(w, http.StatusOK, "history", s.inProject(r, proj, d.Model+": history", "Models", d))
}
