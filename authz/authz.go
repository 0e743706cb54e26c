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

// Principal is an authenticated caller: a user through a login session, or
// a user (or service account) through an API token.
type Principal struct {
	UserID    string
	SessionID string
	Email     string
	Role      Role
	// TokenID is set when the caller authenticated with an API token; it
	// then may not manage tokens or service accounts (a stolen token must
	// not mint itself successors).
	TokenID string
	// Project scopes an API token to one project (its id): everywhere else
	// the caller is a stranger, and it has no global powers.
	Project string
	// Ceiling caps an API token's role in every project ("" = none). A
	// token with a ceiling has no global powers either.
	Ceiling ProjectRole
}

// limited reports whether p is a token with a scope or a ceiling: it acts
// only inside projects, within them.
func (p Principal) limited() bool { return p.TokenID != "" && (p.Project != "" || p.Ceiling != "") }

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
	// ManageTokens is creating, listing and revoking one's own API tokens.
	ManageTokens Action = "tokens:manage-own"
	// ManageServiceAccounts is creating service accounts and their tokens,
	// and revoking anyone's token.
	ManageServiceAccounts Action = "service-accounts:manage"
	// OverridePolicy is an emergency move of a deployment pointer past the
	// project's approval policy, with a mandatory reason the event keeps.
	OverridePolicy Action = "policy:override"
	// DecidePromotion is approving or rejecting a promotion request (the
	// request's policy says whose decision counts): a person's act,
	// through a login session.
	DecidePromotion Action = "promotion:decide"
	// ManageWebhooks is managing global webhook subscriptions (every
	// event of every project goes out through them): admins only.
	ManageWebhooks Action = "webhooks:manage"
)

// sessionOnly actions need a login session: an API token may not take them.
// Changing users is among them: a stolen admin token must not be able to
// make (or reactivate) an admin who then mints new credentials.
// Overriding an approval policy is among them: separation of duties must
// not be one leaked admin token away.
var sessionOnly = map[Action]bool{Logout: true, ManageTokens: true, ManageServiceAccounts: true, UpdateUser: true, OverridePolicy: true, DecidePromotion: true}

// Resource is what an action is applied to; empty for global actions.
type Resource struct {
	Kind string
	ID   string
}

// grants lists, per role, the global actions it may take.
var grants = map[Role]map[Action]bool{
	RoleViewer: {ReadSelf: true, Logout: true, ManageTokens: true, DecidePromotion: true},
	RoleMember: {ReadSelf: true, Logout: true, ManageTokens: true, DecidePromotion: true},
	RoleAdmin: {ReadSelf: true, Logout: true, ManageTokens: true, ListUsers: true, UpdateUser: true, ReadAudit: true,
		ReadProjSys: true, ManageServiceAccounts: true, OverridePolicy: true, ManageWebhooks: true, DecidePromotion: true},
}

// Can reports whether p may take the global action on r. An API token may
// do what its owner may, except the session-only actions; a scoped or
// capped token only reads its owner.
func Can(p Principal, action Action, r Resource) bool {
	if p.UserID == "" {
		return false
	}
	if p.TokenID != "" && sessionOnly[action] {
		return false
	}
	if p.limited() && action != ReadSelf {
		return false
	}
	return grants[p.Role][action]
}
