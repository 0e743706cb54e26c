package events

// Project aggregate events (subject maestro.events.project.<project_id>).
// Membership lives inside the project aggregate, so "a project always keeps
// at least one owner" is decided on one subject.
const (
	ProjectCreated       = "maestro.project.created.v1"
	ProjectUpdated       = "maestro.project.updated.v1"
	ProjectArchived      = "maestro.project.archived.v1"
	ProjectRestored      = "maestro.project.restored.v1"
	ProjectMemberSet     = "maestro.project.member_set.v1"
	ProjectMemberRemoved = "maestro.project.member_removed.v1"
	// NameReserved claims a unique name (a project slug, or a model name in a
	// project) on a reservation subject appended with expected sequence 0.
	NameReserved = "maestro.name.reserved.v1"
)

// Aggregate types added by the registry.
const (
	AggProject     = "project"
	AggProjectSlug = "projectslug" // reservation: sha256(slug)
	AggModel       = "model"
	AggModelName   = "modelname" // reservation: sha256(project_id "/" lower(name))
)

// ProjectCreatedData: a new project; the creator is its first owner.
type ProjectCreatedData struct {
	ProjectID   string `json:"project_id"`
	Slug        string `json:"slug"`
	Name        string `json:"name"`
	Description string `json:"description"`
	OwnerID     string `json:"owner_id"`
}

// ProjectUpdatedData: changed description (nil fields are unchanged).
type ProjectUpdatedData struct {
	ProjectID   string  `json:"project_id"`
	Description *string `json:"description,omitempty"`
}

// ProjectLifecycleData: archived or restored.
type ProjectLifecycleData struct {
	ProjectID string `json:"project_id"`
}

// ProjectMemberSetData: a user got (or changed to) a project role.
type ProjectMemberSetData struct {
	ProjectID    string `json:"project_id"`
	UserID       string `json:"user_id"`
	Role         string `json:"role"`
	PreviousRole string `json:"previous_role,omitempty"`
}

// ProjectMemberRemovedData: a user left the project.
type ProjectMemberRemovedData struct {
	ProjectID string `json:"project_id"`
	UserID    string `json:"user_id"`
	Role      string `json:"role"`
}

// NameReservedData: Name (as given) now belongs to OwnerID (a project or model id).
type NameReservedData struct {
	Kind    string `json:"kind"` // "project", "model"
	Name    string `json:"name"`
	OwnerID string `json:"owner_id"`
	Scope   string `json:"scope,omitempty"` // project id for model names
}
