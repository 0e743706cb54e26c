package authz

// ProjectRole is a member's role in one project.
type ProjectRole string

// Project roles, least to most privileged.
const (
	ProjectViewer   ProjectRole = "viewer"
	ProjectEditor   ProjectRole = "editor"
	ProjectApprover ProjectRole = "approver"
	ProjectOwner    ProjectRole = "owner"
)

// ValidProjectRole reports whether r is a known project role.
func ValidProjectRole(r string) bool {
	switch ProjectRole(r) {
	case ProjectViewer, ProjectEditor, ProjectApprover, ProjectOwner:
		return true
	}
	return false
}

// Project actions.
const (
	CreateProject  Action = "projects:create" // global: members and admins
	ProjectRead    Action = "project:read"
	ProjectManage  Action = "project:manage"  // update, archive, restore, members
	ModelWrite     Action = "model:write"     // models, versions, artifacts, tags
	VersionPromote Action = "version:promote" // stage transitions and aliases
)

// projectGrants: viewers read; editors change models, versions, artifacts
// and tags; approvers also move versions between stages and point aliases;
// owners also manage the project and its members.
var projectGrants = map[ProjectRole]map[Action]bool{
	ProjectViewer:   {ProjectRead: true},
	ProjectEditor:   {ProjectRead: true, ModelWrite: true},
	ProjectApprover: {ProjectRead: true, ModelWrite: true, VersionPromote: true},
	ProjectOwner:    {ProjectRead: true, ModelWrite: true, VersionPromote: true, ProjectManage: true},
}

func init() {
	grants[RoleMember][CreateProject] = true
	grants[RoleAdmin][CreateProject] = true
}

// Member reports whether p may see the project at all: a member (any role)
// or a global admin. Callers answer 404, not 403, to everyone else so a
// project's existence does not leak.
func Member(p Principal, role ProjectRole) bool {
	return p.UserID != "" && (role != "" || p.Role == RoleAdmin)
}

// CanInProject reports whether p, holding role in a project ("" if not a
// member), may take action there. Global admins act as owners everywhere.
func CanInProject(p Principal, role ProjectRole, action Action) bool {
	if p.UserID == "" {
		return false
	}
	if p.Role == RoleAdmin {
		role = ProjectOwner
	}
	return projectGrants[role][action]
}
