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
	TrackingWrite  Action = "tracking:write"  // experiments, runs, params, tags, metrics
	JobRun         Action = "job:run"         // submit and cancel training jobs
	// ExportAudit is exporting the audit trail with its hashes and signed
	// checkpoints: the whole trail for admins (a global grant), a
	// project's entries for its owners.
	ExportAudit Action = "audit:export"
	// WebhookManage is creating, reading, changing and testing the
	// project's webhook subscriptions: owners only, since a subscription
	// sends every matching event of the project out of Maestro.
	WebhookManage Action = "webhook:manage"
)

// projectGrants: viewers read; editors change models, versions, artifacts
// and tags, track experiments and runs, and submit and cancel jobs; approvers also move versions between stages and point aliases;
// owners also manage the project and its members.
var projectGrants = map[ProjectRole]map[Action]bool{
	ProjectViewer:   {ProjectRead: true},
	ProjectEditor:   {ProjectRead: true, ModelWrite: true, TrackingWrite: true, JobRun: true},
	ProjectApprover: {ProjectRead: true, ModelWrite: true, TrackingWrite: true, JobRun: true, VersionPromote: true},
	ProjectOwner:    {ProjectRead: true, ModelWrite: true, TrackingWrite: true, JobRun: true, VersionPromote: true, ProjectManage: true},
}

func init() {
	// Webhook subscriptions of a project: its owners.
	projectGrants[ProjectOwner][WebhookManage] = true
}

func init() {
	grants[RoleMember][CreateProject] = true
	grants[RoleAdmin][CreateProject] = true
	grants[RoleAdmin][ExportAudit] = true
	projectGrants[ProjectOwner][ExportAudit] = true
}

// rank orders project roles; "" (not a member) ranks lowest.
var rank = map[ProjectRole]int{ProjectViewer: 1, ProjectEditor: 2, ProjectApprover: 3, ProjectOwner: 4}

// Effective is the role p acts with in the project with id projectID, where
// it is a member with role ("" if not a member): global admins act as
// owners everywhere (through a token: an unlimited one, or one scoped to
// this project; an admin's token with only a ceiling keeps no global
// power, so it acts with the admin's memberships); a project-scoped token
// is a stranger outside its project; a token's ceiling caps the role.
func Effective(p Principal, projectID string, role ProjectRole) ProjectRole {
	if p.UserID == "" || (p.Project != "" && p.Project != projectID) {
		return ""
	}
	if p.Role == RoleAdmin && (!p.limited() || p.Project != "") {
		role = ProjectOwner
	}
	if p.Ceiling != "" && rank[role] > rank[p.Ceiling] {
		role = p.Ceiling
	}
	return role
}

// Member reports whether p may see the project with id projectID at all
// (where it holds role, "" if not a member). Callers answer 404, not 403,
// to everyone else so a project's existence does not leak.
func Member(p Principal, projectID string, role ProjectRole) bool {
	return Effective(p, projectID, role) != ""
}

// CanInProject reports whether p, holding role in the project with id
// projectID ("" if not a member), may take action there.
func CanInProject(p Principal, projectID string, role ProjectRole, action Action) bool {
	return projectGrants[Effective(p, projectID, role)][action]
}

// SeesAllProjects reports whether p may see projects it is not a member of
// (a global admin through a session or an unlimited token).
func SeesAllProjects(p Principal) bool {
	return p.UserID != "" && p.Role == RoleAdmin && !p.limited()
}
