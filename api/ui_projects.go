package api

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/api/web"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/projections"
)

func (s *Server) uiProjectRoutes() []UIRoute {
	const project = "/projects/{project}"
	return []UIRoute{
		{Method: "GET", Pattern: "/projects", handle: shown(s.projectsPage)},
		{Method: "POST", Pattern: "/projects", handle: s.uiCreateProject},
		{Method: "GET", Pattern: project, handle: shown(s.projectPage)},
		{Method: "POST", Pattern: project + "/members", handle: s.uiAddMember},
		{Method: "POST", Pattern: project + "/members/{user_id}", handle: s.uiSetMember},
		{Method: "POST", Pattern: project + "/members/{user_id}/remove", handle: s.uiRemoveMember},
	}
}

// projectsData is the projects page's data.
type projectsData struct {
	Items     []ProjectResponse
	Next      string
	CanCreate bool
}

// projectsPage lists the caller's projects (the same listProjects as GET
// /api/v1/projects) with the form to create one.
func (s *Server) projectsPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	var q listProjectsQuery
	if err := fillParams(r, &q); err != nil {
		return err
	}
	c := newCall(w, r)
	list, err := s.listProjects(c, q)
	if err != nil {
		return err
	}
	pg := s.page(r, "Projects", "Projects", projectsData{Items: list.Items, Next: list.NextPageToken,
		CanCreate: authz.Can(c.who, authz.CreateProject, authz.Resource{})})
	pg.Notice, pg.Error = notice(r), errText
	return s.render(w, status, "projects", pg)
}

// uiCreateProject is the new-project form: createProject, as POST
// /api/v1/projects.
func (s *Server) uiCreateProject(w http.ResponseWriter, r *http.Request) error {
	c := newCall(w, r)
	p, seq, err := s.createProject(c, createProjectRequest{Name: formValue(r, "name"), Description: formValue(r, "description")})
	if err != nil {
		return s.formFailed(w, r, err, func(status int, detail string) error { return s.projectsPage(w, r, status, detail) })
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, "/projects/"+p.Slug, "project-created")
	return nil
}

// formFailed shows a refused form's reason on its own page when the
// caller can fix it (bad input, a conflict, not allowed); any other
// failure is the error page.
func (s *Server) formFailed(w http.ResponseWriter, r *http.Request, err error, again func(status int, detail string) error) error {
	pe := s.problemFor(r, err)
	switch status := problemCatalog[pe.code].Status; status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusConflict, http.StatusUnprocessableEntity:
		return again(status, pe.detail)
	}
	return pe
}

// projectData is the project page's data.
type projectData struct {
	Project   ProjectResponse
	Members   []MemberResponse
	Roles     []string
	CanManage bool
}

// projectPage is a project with its members, and for its owners the forms
// that manage them.
func (s *Server) projectPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	c := newCall(w, r)
	members, err := s.listMembers(c, none{})
	if err != nil {
		return err
	}
	d := projectData{Project: projectFromProjection(proj), Members: members.Items,
		Roles:     []string{string(authz.ProjectViewer), string(authz.ProjectEditor), string(authz.ProjectApprover), string(authz.ProjectOwner)},
		CanManage: authz.CanInProject(c.who, proj.ID, authz.ProjectRole(proj.Role), authz.ProjectManage)}
	pg := s.page(r, proj.Name, "Projects", d)
	pg.Project = &web.ProjectRef{Slug: proj.Slug, Name: proj.Name}
	pg.Notice, pg.Error = notice(r), errText
	return s.render(w, status, "project", pg)
}

// uiAddMember adds a member by e-mail address: setMember, as PUT
// /api/v1/projects/{project}/members/{user_id}.
func (s *Server) uiAddMember(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error { return s.projectPage(w, r, status, detail) }
	// Whether an address has an account is for those who may add members
	// to tell (the API tells admins only): the others get the service's
	// refusal, whatever the address.
	proj, err := s.readableProject(r)
	if err != nil {
		return err
	}
	if !can(r, proj, authz.ProjectManage) {
		return again(http.StatusForbidden, "your project role does not allow this")
	}
	email, err := identity.NormalizeEmail(formValue(r, "email"))
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	u, err := s.deps.Queries.UserByEmail(r.Context(), email)
	if errors.Is(err, projections.ErrNotFound) {
		return again(http.StatusBadRequest, "nobody has an account with the e-mail address "+email)
	}
	if err != nil {
		return err
	}
	return s.saveMember(w, r, setMemberRequest{memberRef: memberRef{userID: u.ID}, Role: formValue(r, "role")})
}

// uiSetMember changes a member's role.
func (s *Server) uiSetMember(w http.ResponseWriter, r *http.Request) error {
	req := setMemberRequest{Role: formValue(r, "role")}
	if err := fillParams(r, &req); err != nil {
		return err
	}
	return s.saveMember(w, r, req)
}

func (s *Server) saveMember(w http.ResponseWriter, r *http.Request, req setMemberRequest) error {
	again := func(status int, detail string) error { return s.projectPage(w, r, status, detail) }
	if err := req.validate(); err != nil {
		return s.formFailed(w, r, err, again)
	}
	_, seq, err := s.setMember(newCall(w, r), req)
	if err != nil {
		return s.formFailed(w, r, err, again)
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, "/projects/"+url.PathEscape(chi.URLParam(r, "project")), "member-set")
	return nil
}

// uiRemoveMember removes a member: removeMember, as DELETE
// /api/v1/projects/{project}/members/{user_id}.
func (s *Server) uiRemoveMember(w http.ResponseWriter, r *http.Request) error {
	var ref memberRef
	if err := fillParams(r, &ref); err != nil {
		return err
	}
	_, seq, err := s.removeMember(newCall(w, r), ref)
	if err != nil {
		return s.formFailed(w, r, err, func(status int, detail string) error { return s.projectPage(w, r, status, detail) })
	}
	s.waitApplied(r.Context(), seq, registryViews...)
	seeOther(w, r, "/projects/"+url.PathEscape(chi.URLParam(r, "project")), "member-removed")
	return nil
}
