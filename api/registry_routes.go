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
		{Method: "POST", Pattern: projects, Command: true, handle: command(s, http.StatusCreated, s.createProject)},
		{Method: "GET", Pattern: projects, handle: query(s, s.listProjects)},
		{Method: "GET", Pattern: project, handle: query(s, s.getProject)},
		{Method: "PATCH", Pattern: project, Command: true, handle: command(s, http.StatusOK, s.updateProject)},
		{Method: "DELETE", Pattern: project, Command: true, handle: commandNoBody(s, http.StatusOK, s.setProjectArchived(true))},
		{Method: "POST", Pattern: project + ":restore", Command: true, handle: commandNoBody(s, http.StatusOK, s.setProjectArchived(false))},
		{Method: "GET", Pattern: project + "/members", handle: query(s, s.listMembers)},
		{Method: "PUT", Pattern: project + "/members/{user_id}", Command: true, handle: command(s, http.StatusOK, s.setMember)},
		{Method: "DELETE", Pattern: project + "/members/{user_id}", Command: true, handle: commandNoBody(s, http.StatusNoContent, s.removeMember)},
		{Method: "POST", Pattern: models, Command: true, handle: command(s, http.StatusCreated, s.createModel)},
		{Method: "GET", Pattern: models, handle: query(s, s.listModels)},
		{Method: "GET", Pattern: model, handle: query(s, s.getModel)},
		{Method: "GET", Pattern: model + "/history", handle: query(s, s.modelHistory)},
		{Method: "PATCH", Pattern: model, Command: true, handle: command(s, http.StatusOK, s.updateModel)},
		{Method: "DELETE", Pattern: model, Command: true, handle: commandNoBody(s, http.StatusOK, s.setModelDeleted(true))},
		{Method: "POST", Pattern: model + ":restore", Command: true, handle: commandNoBody(s, http.StatusOK, s.setModelDeleted(false))},
		{Method: "POST", Pattern: versions, Command: true, handle: command(s, http.StatusCreated, s.createVersion)},
		{Method: "GET", Pattern: versions, handle: query(s, s.listVersions)},
		{Method: "GET", Pattern: version, handle: query(s, s.getVersion)},
		{Method: "PATCH", Pattern: version, Command: true, handle: command(s, http.StatusOK, s.updateVersion)},
		{Method: "DELETE", Pattern: version, Command: true, handle: commandNoBody(s, http.StatusOK, s.deleteVersion)},
		{Method: "POST", Pattern: version + ":transition", Command: true, handle: command(s, http.StatusOK, s.transitionVersion)},
		{Method: "GET", Pattern: alias, handle: query(s, s.getAlias)},
		{Method: "PUT", Pattern: alias, Command: true, handle: command(s, http.StatusOK, s.setAlias)},
		{Method: "DELETE", Pattern: alias, Command: true, handle: commandNoBody(s, http.StatusNoContent, s.deleteAlias)},
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
	return s.readableProjectRef(r, chi.URLParam(r, "project"))
}

// readableProjectRef is readableProject of the project ref (a slug or an
// id, as the write side resolves it, so reads and commands accept exactly
// the same references), for a request that names it some other way
// (MLflow's bare paths).
func (s *Server) readableProjectRef(r *http.Request, ref string) (projections.Project, error) {
	if !registry.ValidSlug(ref) && !isCanonicalUUID(ref) {
		return projections.Project{}, projectMissing()
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

func (s *Server) createProject(c *call, req createProjectRequest) (ProjectResponse, uint64, error) {
	ps, seq, err := s.deps.Registry.CreateProject(c.ctx, c.meta, c.who, req.Name, req.Description)
	if err != nil {
		return ProjectResponse{}, 0, err
	}
	c.locate("/api/v1/projects/" + ps.Slug)
	return projectFromState(ps, c.who.UserID), seq, nil
}

// listProjectsQuery is a page of projects, archived ones too if asked.
type listProjectsQuery struct {
	pageQuery
	archived bool
}

func (q *listProjectsQuery) readParams(r *http.Request) (err error) {
	if err = q.pageQuery.readParams(r); err != nil {
		return err
	}
	q.archived, err = boolParam(r, "include_archived")
	return err
}

func (s *Server) listProjects(c *call, q listProjectsQuery) (ProjectPage, error) {
	p := c.who
	// Whoever may see a project without being its member (an admin) lists all.
	// A project-scoped API token lists its one project, if it may see it.
	all := authz.SeesAllProjects(p) || (p.Project != "" && p.Role == authz.RoleAdmin)
	page, err := s.deps.Queries.ListProjects(c.ctx, p.UserID, all, q.archived, p.Project, q.token, q.size)
	if err != nil {
		return ProjectPage{}, pageError(err)
	}
	return ProjectPage(pageOf(page, projectFromProjection)), nil
}

func (s *Server) getProject(c *call, _ none) (ProjectResponse, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return ProjectResponse{}, err
	}
	return projectFromProjection(proj), nil
}

type updateProjectRequest struct {
	Description *string `json:"description"`
}

func (req *updateProjectRequest) validate() error {
	if req.Description == nil {
		return problem("validation-failed", "send description")
	}
	return nil
}

func (s *Server) updateProject(c *call, req updateProjectRequest) (ProjectResponse, uint64, error) {
	ps, seq, err := s.deps.Registry.UpdateProject(c.ctx, c.meta, c.who, c.param("project"), req.Description)
	if err != nil {
		return ProjectResponse{}, 0, err
	}
	return projectFromState(ps, c.who.UserID), seq, nil
}

// setProjectArchived is DELETE (archive) and POST :restore of a project.
func (s *Server) setProjectArchived(archive bool) func(*call, none) (ProjectResponse, uint64, error) {
	return func(c *call, _ none) (ProjectResponse, uint64, error) {
		ps, seq, err := s.deps.Registry.ArchiveProject(c.ctx, c.meta, c.who, c.param("project"), archive)
		if err != nil {
			return ProjectResponse{}, 0, err
		}
		return projectFromState(ps, c.who.UserID), seq, nil
	}
}

// ---- members ----

func (s *Server) listMembers(c *call, _ none) (MemberList, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return MemberList{}, err
	}
	ms, err := s.deps.Queries.ListMembers(c.ctx, proj.ID)
	if err != nil {
		return MemberList{}, err
	}
	out := MemberList{Items: make([]MemberResponse, 0, len(ms))}
	for _, m := range ms {
		out.Items = append(out.Items, memberFromProjection(m))
	}
	return out, nil
}

// memberRef is {user_id}: the whole input of DELETE, and embedded in that
// of PUT. Its field is unexported, so a JSON body cannot set it.
type memberRef struct{ userID string }

func (m *memberRef) readParams(r *http.Request) (err error) {
	m.userID, err = memberParam(r)
	return err
}

// setMemberRequest is PUT .../members/{user_id}: the user, read from the
// path before the body, and the role.
type setMemberRequest struct {
	memberRef
	Role string `json:"role"`
}

func (req *setMemberRequest) validate() error {
	if !authz.ValidProjectRole(req.Role) {
		return problem("validation-failed", "role must be one of owner, editor, approver, viewer")
	}
	return nil
}

func (s *Server) setMember(c *call, req setMemberRequest) (MemberResponse, uint64, error) {
	ps, seq, err := s.deps.Registry.SetMember(c.ctx, c.meta, c.who, c.param("project"), req.userID, authz.ProjectRole(req.Role))
	if err != nil {
		return MemberResponse{}, 0, err
	}
	out := MemberResponse{UserID: req.userID, Role: string(ps.RoleOf(req.userID))}
	// E-mail and name are display data from the users read model; the
	// membership itself is what the command decided.
	if u, err := s.deps.Queries.User(c.ctx, req.userID); err == nil {
		out.Email, out.Name = u.Email, u.Name
	}
	return out, seq, nil
}

func (s *Server) removeMember(c *call, req memberRef) (none, uint64, error) {
	_, seq, err := s.deps.Registry.RemoveMember(c.ctx, c.meta, c.who, c.param("project"), req.userID)
	return none{}, seq, err
}

// ---- models ----

type createModelRequest struct {
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Tags        map[string]string `json:"tags"`
}

func (s *Server) createModel(c *call, req createModelRequest) (ModelResponse, uint64, error) {
	m, seq, err := s.deps.Registry.CreateModel(c.ctx, c.meta, c.who, c.param("project"),
		registry.CreateModel{Name: req.Name, Description: req.Description, Tags: req.Tags})
	if err != nil {
		return ModelResponse{}, 0, err
	}
	c.locate(modelPath(m))
	return modelFromState(m), seq, nil
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

// listModelsQuery is the model list's filters; the project comes from the
// read-side check.
type listModelsQuery struct{ filter projections.ModelFilter }

func (lq *listModelsQuery) readParams(r *http.Request) error {
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
	lq.filter = f
	return nil
}

func (s *Server) listModels(c *call, q listModelsQuery) (ModelPage, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return ModelPage{}, err
	}
	f := q.filter
	f.ProjectID = proj.ID
	page, err := s.deps.Queries.ListModels(c.ctx, f)
	if err != nil {
		return ModelPage{}, pageError(err)
	}
	return ModelPage(pageOf(page, modelFromProjection)), nil
}

// asOfQuery is ?as_of=, a point in time (zero: now).
type asOfQuery struct{ asOf time.Time }

func (q *asOfQuery) readParams(r *http.Request) error {
	if v := r.URL.Query().Get("as_of"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return problem("validation-failed", "as_of must be an RFC 3339 timestamp")
		}
		q.asOf = t
	}
	return nil
}

func (s *Server) getModel(c *call, q asOfQuery) (ModelResponse, error) {
	m, err := s.readableModel(c.r)
	if err != nil {
		return ModelResponse{}, err
	}
	if q.asOf.IsZero() {
		return modelFromProjection(m), nil
	}
	return s.modelAsOf(c.r, m.ID, q.asOf)
}

// modelHistory is a model's audit trail, newest first: who changed what,
// when (every event of the model, as the audit trail records it), for
// everyone who may read the model — the admin-only GET /audit filtered to
// the model, for a project's readers.
func (s *Server) modelHistory(c *call, q pageQuery) (AuditPage, error) {
	m, err := s.readableModel(c.r)
	if err != nil {
		return AuditPage{}, err
	}
	// The audit trail lingers (it batches): a minimum sequence waits for it.
	if err := s.awaitMinSequence(c.r, projections.Audit{}.Name()); err != nil {
		return AuditPage{}, err
	}
	page, err := s.deps.Queries.ListAudit(c.ctx, projections.AuditFilter{Subject: events.Subject(events.AggModel, m.ID), PageToken: q.token, Limit: q.size})
	if err != nil {
		return AuditPage{}, pageError(err)
	}
	return page, nil
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

// updateRequest is the body of PATCH on a model.
type updateRequest struct {
	Description *string           `json:"description"`
	Tags        map[string]string `json:"tags"`
}

func (req *updateRequest) validate() error { return checkUpdate(req.Description, req.Tags) }

// checkUpdate refuses a PATCH of a model or a version that changes nothing.
func checkUpdate(description *string, tags map[string]string) error {
	if description == nil && tags == nil {
		return problem("validation-failed", "send description and/or tags")
	}
	return nil
}

// modelCommand runs one model command through the service, which
// authorizes action in the project and refuses archived projects.
func (s *Server) modelCommand(c *call, action authz.Action,
	decide func(registry.ModelState) ([]handlers.Change, error)) (registry.ModelState, uint64, error) {
	return s.modelCommandAt(c, c.param("project"), c.param("name"), action, decide)
}

// modelCommandAt is modelCommand for a request that names the project and
// the model some other way (MLflow's: a body field, a scoped token).
func (s *Server) modelCommandAt(c *call, project, name string, action authz.Action,
	decide func(registry.ModelState) ([]handlers.Change, error)) (registry.ModelState, uint64, error) {
	if action == authz.VersionPromote {
		// A move of a deployment pointer (stage, alias), from either API:
		// an approval policy in force refuses it (registry.MovePointer).
		return s.deps.Registry.MovePointer(c.ctx, c.meta, c.who, project, name, decide)
	}
	return s.deps.Registry.UpdateModelFunc(c.ctx, c.meta, c.who, project, name, action,
		func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) { return decide(m) })
}

func (s *Server) updateModel(c *call, req updateRequest) (ModelResponse, uint64, error) {
	m, seq, err := s.modelCommand(c, authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateModel(m, req.Description, req.Tags)
	})
	if err != nil {
		return ModelResponse{}, 0, err
	}
	return modelFromState(m), seq, nil
}

// setModelDeleted is DELETE and POST :restore of a model. It goes through
// the service's DeleteModel, which also decides whether the caller may take
// deployment pointers offline.
func (s *Server) setModelDeleted(del bool) func(*call, none) (ModelResponse, uint64, error) {
	return func(c *call, _ none) (ModelResponse, uint64, error) {
		m, seq, err := s.deps.Registry.DeleteModel(c.ctx, c.meta, c.who, c.param("project"), c.param("name"), del)
		if err != nil {
			return ModelResponse{}, 0, err
		}
		return modelFromState(m), seq, nil
	}
}

// ---- versions ----

// versionRef is {version}: the whole input of some routes, and embedded
// in that of others. Its field is unexported, so a JSON body cannot set it.
type versionRef struct{ version int }

func (v *versionRef) readParams(r *http.Request) (err error) {
	v.version, err = versionParam(r)
	return err
}

type createVersionRequest struct {
	Description string             `json:"description"`
	Tags        map[string]string  `json:"tags"`
	Source      string             `json:"source"`
	RunID       string             `json:"run_id"`
	Metrics     map[string]float64 `json:"metrics"`
	Signature   json.RawMessage    `json:"signature"`
}

// validate also normalises the signature: a JSON null is none at all.
func (req *createVersionRequest) validate() error {
	sig := bytes.TrimSpace(req.Signature)
	if bytes.Equal(sig, []byte("null")) {
		sig = nil
	}
	if len(sig) > 0 && sig[0] != '{' {
		return problem("validation-failed", "signature must be a JSON object")
	}
	req.Signature = sig
	return nil
}

// versionOf answers with version v of a command's resulting state.
func versionOf(m registry.ModelState, v int) (VersionResponse, error) {
	ver, ok := m.Version(v)
	if !ok {
		return VersionResponse{}, versionMissing()
	}
	return versionFromState(m, ver), nil
}

// versionCommand is modelCommand answered with version v.
func (s *Server) versionCommand(c *call, action authz.Action, v int,
	decide func(registry.ModelState) ([]handlers.Change, error)) (VersionResponse, uint64, error) {
	m, seq, err := s.modelCommand(c, action, decide)
	if err != nil {
		return VersionResponse{}, 0, err
	}
	out, err := versionOf(m, v)
	return out, seq, err
}

func (s *Server) createVersion(c *call, req createVersionRequest) (VersionResponse, uint64, error) {
	cmd := registry.RegisterVersion{Description: req.Description, Tags: req.Tags, Source: req.Source, RunID: req.RunID,
		Metrics: req.Metrics, Signature: req.Signature}
	m, registered, seq, err := s.deps.Registry.RegisterVersion(c.ctx, c.meta, c.who, c.param("project"), c.param("name"), cmd)
	if err != nil {
		return VersionResponse{}, 0, err
	}
	c.locate(modelPath(m) + "/versions/" + strconv.Itoa(registered))
	out, err := versionOf(m, registered)
	return out, seq, err
}

// listVersionsQuery is a page of a model's versions, optionally of one
// stage, deleted ones too if asked.
type listVersionsQuery struct {
	pageQuery
	stage   string
	deleted bool
}

func (q *listVersionsQuery) readParams(r *http.Request) (err error) {
	if err = q.pageQuery.readParams(r); err != nil {
		return err
	}
	q.stage = r.URL.Query().Get("stage")
	if q.stage != "" && !registry.ValidStage(q.stage) {
		return problem("validation-failed", "stage must be one of none, staging, production, archived")
	}
	q.deleted, err = boolParam(r, "include_deleted")
	return err
}

func (s *Server) listVersions(c *call, q listVersionsQuery) (VersionPage, error) {
	m, err := s.readableModel(c.r)
	if err != nil {
		return VersionPage{}, err
	}
	page, err := s.deps.Queries.ListVersions(c.ctx, m.ID, q.stage, q.deleted, q.token, q.size)
	if err != nil {
		return VersionPage{}, pageError(err)
	}
	return VersionPage(pageOf(page, versionFromProjection)), nil
}

// readVersion reads version v of a readable model from the read model.
func (s *Server) readVersion(ctx context.Context, m projections.Model, v int) (VersionResponse, error) {
	ver, err := s.deps.Queries.Version(ctx, m.ID, v)
	if errors.Is(err, projections.ErrNotFound) {
		return VersionResponse{}, versionMissing()
	}
	if err != nil {
		return VersionResponse{}, err
	}
	return versionFromProjection(ver), nil
}

func (s *Server) getVersion(c *call, in versionRef) (VersionResponse, error) {
	m, err := s.readableModel(c.r)
	if err != nil {
		return VersionResponse{}, err
	}
	return s.readVersion(c.ctx, m, in.version)
}

// updateVersionRequest is PATCH on a version: updateRequest's fields, not
// an embedded updateRequest, which encoding/json would name
// "updateRequest.description" in the detail of a type error.
type updateVersionRequest struct {
	versionRef
	Description *string           `json:"description"`
	Tags        map[string]string `json:"tags"`
}

func (req *updateVersionRequest) validate() error { return checkUpdate(req.Description, req.Tags) }

func (s *Server) updateVersion(c *call, req updateVersionRequest) (VersionResponse, uint64, error) {
	return s.versionCommand(c, authz.ModelWrite, req.version, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateVersion(m, req.version, req.Description, req.Tags)
	})
}

func (s *Server) deleteVersion(c *call, req versionRef) (VersionResponse, uint64, error) {
	// The service decides whether the version is a deployment pointer's
	// target that only an approver may delete.
	m, seq, err := s.deps.Registry.DeleteVersion(c.ctx, c.meta, c.who, c.param("project"), c.param("name"), req.version)
	if err != nil {
		return VersionResponse{}, 0, err
	}
	out, err := versionOf(m, req.version)
	return out, seq, err
}

// transitionRequest is POST ...:transition: {version} and the stage.
type transitionRequest struct {
	versionRef
	Stage           string `json:"stage"`
	ArchiveExisting bool   `json:"archive_existing"`
}

func (req *transitionRequest) validate() error {
	if !registry.ValidStage(req.Stage) {
		return problem("validation-failed", "stage must be one of "+strings.Join([]string{events.StageNone, events.StageStaging, events.StageProduction, events.StageArchived}, ", "))
	}
	return nil
}

func (s *Server) transitionVersion(c *call, req transitionRequest) (VersionResponse, uint64, error) {
	return s.versionCommand(c, authz.VersionPromote, req.version, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideTransition(m, req.version, req.Stage, req.ArchiveExisting)
	})
}

// ---- aliases ----

func (s *Server) getAlias(c *call, _ none) (VersionResponse, error) {
	m, err := s.readableModel(c.r)
	if err != nil {
		return VersionResponse{}, err
	}
	alias := c.param("alias")
	if !registry.ValidAlias(alias) {
		return VersionResponse{}, problem("not-found", "alias not found")
	}
	v, err := s.deps.Queries.AliasVersion(c.ctx, m.ID, alias)
	if errors.Is(err, projections.ErrNotFound) {
		return VersionResponse{}, problem("not-found", "alias not found")
	}
	if err != nil {
		return VersionResponse{}, err
	}
	return s.readVersion(c.ctx, m, v)
}

type setAliasRequest struct {
	Version int `json:"version"`
}

func (req *setAliasRequest) validate() error {
	if req.Version < 1 || req.Version > maxVersion {
		return problem("validation-failed", "version must be a positive version number")
	}
	return nil
}

func (s *Server) setAlias(c *call, req setAliasRequest) (VersionResponse, uint64, error) {
	alias := c.param("alias")
	return s.versionCommand(c, authz.VersionPromote, req.Version, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideSetAlias(m, alias, req.Version)
	})
}

func (s *Server) deleteAlias(c *call, _ none) (none, uint64, error) {
	alias := c.param("alias")
	_, seq, err := s.modelCommand(c, authz.VersionPromote, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideDeleteAlias(m, alias)
	})
	return none{}, seq, err
}
