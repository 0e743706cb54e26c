package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

// Projects, members, models, versions and aliases. Commands go through
// registry.Service, which authorizes on the project's event-sourced
// membership; queries read the projections and authorize with the same
// policy (authz.Member, authz.CanInProject) on the projected membership.
// Anyone who may not see a project gets the 404 a missing project gets.

func (s *Server) registryRoutes() []Route {
	const (
		projects = "/api/v1/projects"
		project  = projects + "/{project}"
		models   = project + "/models"
		model    = models + "/{name}"
		versions = model + "/versions"
		version  = versions + "/{version}"
		alias    = model + "/aliases/{alias}"
	)
	return []Route{
		{Method: "POST", Pattern: projects, Command: true, handle: s.createProject},
		{Method: "GET", Pattern: projects, handle: s.listProjects},
		{Method: "GET", Pattern: project, handle: s.getProject},
		{Method: "PATCH", Pattern: project, Command: true, handle: s.updateProject},
		{Method: "DELETE", Pattern: project, Command: true, handle: s.archiveProject},
		{Method: "POST", Pattern: project + ":restore", Command: true, handle: s.restoreProject},
		{Method: "GET", Pattern: project + "/members", handle: s.listMembers},
		{Method: "PUT", Pattern: project + "/members/{user_id}", Command: true, handle: s.setMember},
		{Method: "DELETE", Pattern: project + "/members/{user_id}", Command: true, handle: s.removeMember},
		{Method: "POST", Pattern: models, Command: true, handle: s.createModel},
		{Method: "GET", Pattern: models, handle: s.listModels},
		{Method: "GET", Pattern: model, handle: s.getModel},
		{Method: "PATCH", Pattern: model, Command: true, handle: s.updateModel},
		{Method: "DELETE", Pattern: model, Command: true, handle: s.deleteModel},
		{Method: "POST", Pattern: model + ":restore", Command: true, handle: s.restoreModel},
		{Method: "POST", Pattern: versions, Command: true, handle: s.createVersion},
		{Method: "GET", Pattern: versions, handle: s.listVersions},
		{Method: "GET", Pattern: version, handle: s.getVersion},
		{Method: "PATCH", Pattern: version, Command: true, handle: s.updateVersion},
		{Method: "DELETE", Pattern: version, Command: true, handle: s.deleteVersion},
		{Method: "POST", Pattern: version + ":transition", Command: true, handle: s.transitionVersion},
		{Method: "GET", Pattern: alias, handle: s.getAlias},
		{Method: "PUT", Pattern: alias, Command: true, handle: s.setAlias},
		{Method: "DELETE", Pattern: alias, Command: true, handle: s.deleteAlias},
	}
}

// ---- path and query parameters ----

func projectMissing() error { return problem("not-found", "project not found") }
func modelMissing() error   { return problem("not-found", "model not found") }
func versionMissing() error { return problem("not-found", "model version not found") }

func isCanonicalUUID(s string) bool {
	id, err := uuid.Parse(s)
	return err == nil && id.String() == s
}

// projectRef is {project}: a slug or a project id, as the write side
// resolves it (so reads and commands accept exactly the same references).
func projectRef(r *http.Request) (string, error) {
	ref := chi.URLParam(r, "project")
	if !registry.ValidSlug(ref) && !isCanonicalUUID(ref) {
		return "", projectMissing()
	}
	return ref, nil
}

func modelNameParam(r *http.Request) (string, error) {
	name := chi.URLParam(r, "name")
	if !registry.ValidModelName(name) {
		return "", modelMissing()
	}
	return name, nil
}

// maxVersion bounds {version} (a Postgres int).
const maxVersion = 1<<31 - 1

func versionParam(r *http.Request) (int, error) {
	v := chi.URLParam(r, "version")
	if v == "" || len(v) > 10 || strings.Trim(v, "0123456789") != "" {
		return 0, versionMissing()
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxVersion {
		return 0, versionMissing()
	}
	return n, nil
}

func memberParam(r *http.Request) (string, error) {
	id := chi.URLParam(r, "user_id")
	if !isCanonicalUUID(id) {
		return "", problem("not-found", "user not found")
	}
	return id, nil
}

// boolParam reads an optional boolean query parameter: "true" or "false".
func boolParam(r *http.Request, name string) (bool, error) {
	switch r.URL.Query().Get(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, problem("validation-failed", name+" must be true or false")
}

// textParam reads an optional query parameter of at most max characters.
func textParam(q url.Values, name string, max int) (string, error) {
	v := q.Get(name)
	if !handlers.PlainText(v) {
		return "", problem("validation-failed", name+" must be valid UTF-8 without control characters")
	}
	if len([]rune(v)) > max {
		return "", problem("validation-failed", name+" must be at most "+strconv.Itoa(max)+" characters")
	}
	return v, nil
}

// ---- read-side authorization ----

// readableProject resolves {project} in the read model and checks that the
// caller may read it; a non-member gets the same 404 as a missing project.
func (s *Server) readableProject(r *http.Request) (projections.Project, error) {
	ref, err := projectRef(r)
	if err != nil {
		return projections.Project{}, err
	}
	p, _ := principal(r.Context())
	proj, err := s.deps.Queries.ProjectByRef(r.Context(), ref, p.UserID)
	if errors.Is(err, projections.ErrNotFound) {
		return projections.Project{}, projectMissing()
	}
	if err != nil {
		return projections.Project{}, err
	}
	role := authz.ProjectRole(proj.Role)
	if !authz.Member(p, proj.ID, role) || !authz.CanInProject(p, proj.ID, role, authz.ProjectRead) {
		return projections.Project{}, projectMissing()
	}
	return proj, nil
}

// readableModel is readableProject plus {name} (deleted models too).
func (s *Server) readableModel(r *http.Request) (projections.Model, error) {
	proj, err := s.readableProject(r)
	if err != nil {
		return projections.Model{}, err
	}
	name, err := modelNameParam(r)
	if err != nil {
		return projections.Model{}, err
	}
	m, err := s.deps.Queries.Model(r.Context(), proj.ID, name)
	if errors.Is(err, projections.ErrNotFound) {
		return m, modelMissing()
	}
	return m, err
}

// ---- projects ----

type createProjectRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) error {
	var req createProjectRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p, _ := principal(r.Context())
	ps, seq, err := s.deps.Registry.CreateProject(r.Context(), meta(r), p, req.Name, req.Description)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/projects/"+ps.Slug)
	s.respondCommand(w, r, http.StatusCreated, seq, projectFromState(ps, p.UserID))
	return nil
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) error {
	n, err := pageSize(r)
	if err != nil {
		return err
	}
	archived, err := boolParam(r, "include_archived")
	if err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	p, _ := principal(r.Context())
	// Whoever may see a project without being its member (an admin) lists all.
	// A project-scoped API token lists its one project, if it may see it.
	all := authz.SeesAllProjects(p) || (p.Project != "" && p.Role == authz.RoleAdmin)
	page, err := s.deps.Queries.ListProjects(r.Context(), p.UserID, all, archived, p.Project, pageTokenParam(r), n)
	if err != nil {
		return pageError(err)
	}
	out := ProjectPage{Items: make([]ProjectResponse, 0, len(page.Items)), NextPageToken: page.NextPageToken}
	for _, it := range page.Items {
		out.Items = append(out.Items, projectFromProjection(it))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) error {
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, projectFromProjection(proj))
	return nil
}

type updateProjectRequest struct {
	Description *string `json:"description"`
}

func (s *Server) updateProject(w http.ResponseWriter, r *http.Request) error {
	var req updateProjectRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Description == nil {
		return problem("validation-failed", "send description")
	}
	p, _ := principal(r.Context())
	ps, seq, err := s.deps.Registry.UpdateProject(r.Context(), meta(r), p, chi.URLParam(r, "project"), req.Description)
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusOK, seq, projectFromState(ps, p.UserID))
	return nil
}

func (s *Server) archiveProject(w http.ResponseWriter, r *http.Request) error {
	return s.setProjectArchived(w, r, true)
}

func (s *Server) restoreProject(w http.ResponseWriter, r *http.Request) error {
	return s.setProjectArchived(w, r, false)
}

func (s *Server) setProjectArchived(w http.ResponseWriter, r *http.Request, archive bool) error {
	p, _ := principal(r.Context())
	ps, seq, err := s.deps.Registry.ArchiveProject(r.Context(), meta(r), p, chi.URLParam(r, "project"), archive)
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusOK, seq, projectFromState(ps, p.UserID))
	return nil
}

// ---- members ----

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) error {
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	ms, err := s.deps.Queries.ListMembers(r.Context(), proj.ID)
	if err != nil {
		return err
	}
	out := MemberList{Items: make([]MemberResponse, 0, len(ms))}
	for _, m := range ms {
		out.Items = append(out.Items, memberFromProjection(m))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type setMemberRequest struct {
	Role string `json:"role"`
}

func (s *Server) setMember(w http.ResponseWriter, r *http.Request) error {
	userID, err := memberParam(r)
	if err != nil {
		return err
	}
	var req setMemberRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if !authz.ValidProjectRole(req.Role) {
		return problem("validation-failed", "role must be one of owner, editor, approver, viewer")
	}
	p, _ := principal(r.Context())
	ps, seq, err := s.deps.Registry.SetMember(r.Context(), meta(r), p, chi.URLParam(r, "project"), userID, authz.ProjectRole(req.Role))
	if err != nil {
		return err
	}
	out := MemberResponse{UserID: userID, Role: string(ps.RoleOf(userID))}
	// E-mail and name are display data from the users read model; the
	// membership itself is what the command decided.
	if u, err := s.deps.Queries.User(r.Context(), userID); err == nil {
		out.Email, out.Name = u.Email, u.Name
	}
	s.respondCommand(w, r, http.StatusOK, seq, out)
	return nil
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) error {
	userID, err := memberParam(r)
	if err != nil {
		return err
	}
	p, _ := principal(r.Context())
	_, seq, err := s.deps.Registry.RemoveMember(r.Context(), meta(r), p, chi.URLParam(r, "project"), userID)
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusNoContent, seq, nil)
	return nil
}

// ---- models ----

type createModelRequest struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Tags        map[string]string `json:"tags"`
}

func (s *Server) createModel(w http.ResponseWriter, r *http.Request) error {
	var req createModelRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p, _ := principal(r.Context())
	m, seq, err := s.deps.Registry.CreateModel(r.Context(), meta(r), p, chi.URLParam(r, "project"),
		registry.CreateModel{Name: req.Name, Description: req.Description, Tags: req.Tags})
	if err != nil {
		return err
	}
	w.Header().Set("Location", modelPath(m))
	s.respondCommand(w, r, http.StatusCreated, seq, modelFromState(m))
	return nil
}

func modelPath(m registry.ModelState) string {
	return "/api/v1/projects/" + m.ProjectID + "/models/" + m.Name
}

// Bounds of the model list's filters (those of the fields they match).
const (
	maxNamePrefix = registry.MaxNameLen
	maxTagKey     = registry.MaxTagKeyLen
	maxTagValue   = registry.MaxTagValueLen
)

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	n, err := pageSize(r)
	if err != nil {
		return err
	}
	f := projections.ModelFilter{PageToken: pageTokenParam(r), Limit: n}
	if f.NamePrefix, err = textParam(q, "name_prefix", maxNamePrefix); err != nil {
		return err
	}
	if f.TagKey, err = textParam(q, "tag_key", maxTagKey); err != nil {
		return err
	}
	if f.TagValue, err = textParam(q, "tag_value", maxTagValue); err != nil {
		return err
	}
	if f.TagValue != "" && f.TagKey == "" {
		return problem("validation-failed", "tag_value needs tag_key")
	}
	switch f.OrderBy = q.Get("order_by"); f.OrderBy {
	case "", "name", "updated":
	default:
		return problem("validation-failed", "order_by must be name or updated")
	}
	if f.IncludeDeleted, err = boolParam(r, "include_deleted"); err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	f.ProjectID = proj.ID
	page, err := s.deps.Queries.ListModels(r.Context(), f)
	if err != nil {
		return pageError(err)
	}
	out := ModelPage{Items: make([]ModelResponse, 0, len(page.Items)), NextPageToken: page.NextPageToken}
	for _, m := range page.Items {
		out.Items = append(out.Items, modelFromProjection(m))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) error {
	var asOf time.Time
	if v := r.URL.Query().Get("as_of"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return problem("validation-failed", "as_of must be an RFC 3339 timestamp")
		}
		asOf = t
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	m, err := s.readableModel(r)
	if err != nil {
		return err
	}
	if asOf.IsZero() {
		writeJSON(w, http.StatusOK, modelFromProjection(m))
		return nil
	}
	out, err := s.modelAsOf(r, m.ID, asOf)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// asOfTimeout bounds one point-in-time read; the fold keeps its progress,
// so a retry goes on from where a timed-out read stopped.
const asOfTimeout = 10 * time.Second

// modelAsOf answers a point-in-time read from the model's event history
// (not the projection): the events up to asOf folded by the write side's
// own EvolveModel (registry.Service.ModelAsOf: batched reads, checkpoints,
// bounded work). Times compare at the microsecond precision the API shows,
// so a timestamp read from a response selects that change.
func (s *Server) modelAsOf(r *http.Request, modelID string, asOf time.Time) (ModelResponse, error) {
	ctx, cancel := context.WithTimeout(r.Context(), asOfTimeout)
	defer cancel()
	st, err := s.deps.Registry.ModelAsOf(ctx, modelID, asOf)
	switch {
	case errors.Is(err, registry.ErrModelNotYetCreated):
		return ModelResponse{}, problem("not-found", "the model did not exist at as_of")
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		return ModelResponse{}, &problemError{code: "unavailable", retryAfter: time.Second,
			detail: "the point-in-time read took too long; retry and it goes on from where this one stopped"}
	case err != nil:
		return ModelResponse{}, err
	}
	out := modelFromState(st)
	at := asOf.UTC()
	out.AsOf = &at
	out.Versions = make([]VersionResponse, 0, len(st.Versions))
	for _, v := range st.Versions {
		out.Versions = append(out.Versions, versionFromState(st, *v))
	}
	return out, nil
}

type updateRequest struct {
	Description *string           `json:"description"`
	Tags        map[string]string `json:"tags"`
}

func decodeUpdate(r *http.Request) (updateRequest, error) {
	var req updateRequest
	if err := decodeJSON(r, &req); err != nil {
		return req, err
	}
	if req.Description == nil && req.Tags == nil {
		return req, problem("validation-failed", "send description and/or tags")
	}
	return req, nil
}

// modelCommand runs one model command through the service (which
// authorizes action in the project and refuses archived projects) and
// answers with what respond makes of the resulting state.
func (s *Server) modelCommand(w http.ResponseWriter, r *http.Request, action authz.Action, status int,
	decide func(registry.ModelState) ([]handlers.Change, error), respond func(registry.ModelState) (any, error)) error {
	p, _ := principal(r.Context())
	m, seq, err := s.deps.Registry.UpdateModelFunc(r.Context(), meta(r), p, chi.URLParam(r, "project"), chi.URLParam(r, "name"), action,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) { return decide(m) })
	if err != nil {
		return err
	}
	var body any
	if respond != nil {
		if body, err = respond(m); err != nil {
			return err
		}
	}
	s.respondCommand(w, r, status, seq, body)
	return nil
}

func respondModel(m registry.ModelState) (any, error) { return modelFromState(m), nil }

func (s *Server) updateModel(w http.ResponseWriter, r *http.Request) error {
	req, err := decodeUpdate(r)
	if err != nil {
		return err
	}
	return s.modelCommand(w, r, authz.ModelWrite, http.StatusOK, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateModel(m, req.Description, req.Tags)
	}, respondModel)
}

func (s *Server) deleteModel(w http.ResponseWriter, r *http.Request) error {
	return s.setModelDeleted(w, r, true)
}

func (s *Server) restoreModel(w http.ResponseWriter, r *http.Request) error {
	return s.setModelDeleted(w, r, false)
}

// setModelDeleted goes through the service's DeleteModel, which also
// decides whether the caller may take deployment pointers offline.
func (s *Server) setModelDeleted(w http.ResponseWriter, r *http.Request, del bool) error {
	p, _ := principal(r.Context())
	m, seq, err := s.deps.Registry.DeleteModel(r.Context(), meta(r), p, chi.URLParam(r, "project"), chi.URLParam(r, "name"), del)
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusOK, seq, modelFromState(m))
	return nil
}

// ---- versions ----

type createVersionRequest struct {
	Description string             `json:"description"`
	Tags        map[string]string  `json:"tags"`
	Source      string             `json:"source"`
	RunID       string             `json:"run_id"`
	Metrics     map[string]float64 `json:"metrics"`
	Signature   json.RawMessage    `json:"signature"`
}

// respondVersion answers with version v of the resulting state.
func respondVersion(v int) func(registry.ModelState) (any, error) {
	return func(m registry.ModelState) (any, error) {
		ver, ok := m.Version(v)
		if !ok {
			return nil, versionMissing()
		}
		return versionFromState(m, ver), nil
	}
}

func (s *Server) createVersion(w http.ResponseWriter, r *http.Request) error {
	var req createVersionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	sig := bytes.TrimSpace(req.Signature)
	if bytes.Equal(sig, []byte("null")) {
		sig = nil
	}
	if len(sig) > 0 && sig[0] != '{' {
		return problem("validation-failed", "signature must be a JSON object")
	}
	c := registry.RegisterVersion{Description: req.Description, Tags: req.Tags, Source: req.Source, RunID: req.RunID,
		Metrics: req.Metrics, Signature: sig}
	// The number is decided on the state the append expected; a retry
	// after a conflict decides again, so the last decision is the one stored.
	var registered int
	return s.modelCommand(w, r, authz.ModelWrite, http.StatusCreated, func(m registry.ModelState) ([]handlers.Change, error) {
		registered = len(m.Versions) + 1
		return registry.DecideRegisterVersion(m, c)
	}, func(m registry.ModelState) (any, error) {
		w.Header().Set("Location", modelPath(m)+"/versions/"+strconv.Itoa(registered))
		return respondVersion(registered)(m)
	})
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request) error {
	n, err := pageSize(r)
	if err != nil {
		return err
	}
	stage := r.URL.Query().Get("stage")
	if stage != "" && !registry.ValidStage(stage) {
		return problem("validation-failed", "stage must be one of none, staging, production, archived")
	}
	deleted, err := boolParam(r, "include_deleted")
	if err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	m, err := s.readableModel(r)
	if err != nil {
		return err
	}
	page, err := s.deps.Queries.ListVersions(r.Context(), m.ID, stage, deleted, pageTokenParam(r), n)
	if err != nil {
		return pageError(err)
	}
	out := VersionPage{Items: make([]VersionResponse, 0, len(page.Items)), NextPageToken: page.NextPageToken}
	for _, v := range page.Items {
		out.Items = append(out.Items, versionFromProjection(v))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// readVersion answers version v of a readable model from the read model.
func (s *Server) readVersion(w http.ResponseWriter, r *http.Request, m projections.Model, v int) error {
	ver, err := s.deps.Queries.Version(r.Context(), m.ID, v)
	if errors.Is(err, projections.ErrNotFound) {
		return versionMissing()
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, versionFromProjection(ver))
	return nil
}

func (s *Server) getVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	m, err := s.readableModel(r)
	if err != nil {
		return err
	}
	return s.readVersion(w, r, m, v)
}

func (s *Server) updateVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	req, err := decodeUpdate(r)
	if err != nil {
		return err
	}
	return s.modelCommand(w, r, authz.ModelWrite, http.StatusOK, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateVersion(m, v, req.Description, req.Tags)
	}, respondVersion(v))
}

func (s *Server) deleteVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	// The service decides whether the version is a deployment pointer's
	// target that only an approver may delete.
	p, _ := principal(r.Context())
	m, seq, err := s.deps.Registry.DeleteVersion(r.Context(), meta(r), p, chi.URLParam(r, "project"), chi.URLParam(r, "name"), v)
	if err != nil {
		return err
	}
	body, err := respondVersion(v)(m)
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusOK, seq, body)
	return nil
}

type transitionRequest struct {
	Stage           string `json:"stage"`
	ArchiveExisting bool   `json:"archive_existing"`
}

func (s *Server) transitionVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := versionParam(r)
	if err != nil {
		return err
	}
	var req transitionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if !registry.ValidStage(req.Stage) {
		return problem("validation-failed", "stage must be one of "+strings.Join([]string{events.StageNone, events.StageStaging, events.StageProduction, events.StageArchived}, ", "))
	}
	return s.modelCommand(w, r, authz.VersionPromote, http.StatusOK, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideTransition(m, v, req.Stage, req.ArchiveExisting)
	}, respondVersion(v))
}

// ---- aliases ----

func (s *Server) getAlias(w http.ResponseWriter, r *http.Request) error {
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	m, err := s.readableModel(r)
	if err != nil {
		return err
	}
	alias := chi.URLParam(r, "alias")
	if !registry.ValidAlias(alias) {
		return problem("not-found", "alias not found")
	}
	v, err := s.deps.Queries.AliasVersion(r.Context(), m.ID, alias)
	if errors.Is(err, projections.ErrNotFound) {
		return problem("not-found", "alias not found")
	}
	if err != nil {
		return err
	}
	return s.readVersion(w, r, m, v)
}

type setAliasRequest struct {
	Version int `json:"version"`
}

func (s *Server) setAlias(w http.ResponseWriter, r *http.Request) error {
	var req setAliasRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Version < 1 || req.Version > maxVersion {
		return problem("validation-failed", "version must be a positive version number")
	}
	alias := chi.URLParam(r, "alias")
	return s.modelCommand(w, r, authz.VersionPromote, http.StatusOK, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideSetAlias(m, alias, req.Version)
	}, respondVersion(req.Version))
}

func (s *Server) deleteAlias(w http.ResponseWriter, r *http.Request) error {
	alias := chi.URLParam(r, "alias")
	return s.modelCommand(w, r, authz.VersionPromote, http.StatusNoContent, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideDeleteAlias(m, alias)
	}, nil)
}
