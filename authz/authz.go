// Package authz is Maestro's single authorization policy (rule 6): every
// command handler and query asks Can, so the REST API, the MLflow façade and
// the UI cannot disagree. Deny is the default: an action not listed for a
// role is refused.
package authz

// Role is a global role.
type Role string

// Global roles, least to most privileged.
const (
	RoleViewer Role = "viewer"
	RoleMember Role = "member"
	RoleAdmin  Role = "admin"
)

// ValidRole reports whether r is a known global role.
func ValidRole(r string) bool {
	switch Role(r) {
	case RoleViewer, RoleMember, RoleAdmin:
		return true
	}
	return false
}

// Principal is an authenticated caller.
type Principal struct {
	UserID    string
	SessionID string
	Email     string
	Role      Role
}

// Action is something a principal may do.
type Action string

// Actions.
const (
	ReadSelf    Action = "self:read"
	Logout      Action = "session:revoke-own"
	ListUsers   Action = "users:list"
	UpdateUser  Action = "users:update"
	ReadAudit   Action = "audit:read"
	ReadProjSys Action = "projections:read"
)

// Resource is what an action is applied to; empty for global actions.
type Resource struct {
	Kind string
	ID   string
}

// grants lists, per role, the global actions it may take.
var grants = map[Role]map[Action]bool{
	RoleViewer: {ReadSelf: true, Logout: true},
	RoleMember: {ReadSelf: true, Logout: true},
	RoleAdmin:  {ReadSelf: true, Logout: true, ListUsers: true, UpdateUser: true, ReadAudit: true, ReadProjSys: true},
}

// Can reports whether p may take action on r.
func Can(p Principal, action Action, r Resource) bool {
	if p.UserID == "" {
		return false
	}
	return grants[p.Role][action]
}
