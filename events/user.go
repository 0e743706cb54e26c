package events

// User aggregate events (subject maestro.events.user.<user_id>) and the
// e-mail reservation that makes addresses unique across users.
const (
	UserRegistered         = "maestro.user.registered.v1"
	UserRoleChanged        = "maestro.user.role_changed.v1"
	UserDeactivated        = "maestro.user.deactivated.v1"
	UserReactivated        = "maestro.user.reactivated.v1"
	UserLoginFailed        = "maestro.user.login_failed.v1"
	UserLoginFailuresReset = "maestro.user.login_failures_reset.v1"
	EmailReserved          = "maestro.email.reserved.v1"
	// LoginRejected records a failed login for an e-mail with no account on
	// that e-mail's subject of the bounded security stream
	// (LoginRejectionsSubject): the unknown e-mail's failure streak is
	// folded from them, exactly as an account's is from login_failed.
	// (Before the security stream they were appended to
	// maestro.events.security.logins in MAESTRO_EVENTS; those stay there.)
	LoginRejected = "maestro.security.login_rejected.v1"
)

// UserRegisteredData: a new account. PasswordHash is an argon2id PHC string;
// it never leaves the write side (the audit trail and APIs redact it).
type UserRegisteredData struct {
	UserID       string `json:"user_id"`
	Email        string `json:"email"`
	Name         string `json:"name"`
	Role         string `json:"role"`
	PasswordHash string `json:"password_hash"`
	Source       string `json:"source"` // "self-registration", "admin-cli", "bootstrap", "service-account"
	// Kind is KindServiceAccount for an account that acts only through API
	// tokens (no e-mail, no password, cannot log in); "" for a person.
	Kind string `json:"kind,omitempty"`
}

// KindServiceAccount marks a service account (UserRegisteredData.Kind).
const KindServiceAccount = "service_account"

// UserRoleChangedData: an admin changed a user's global role.
type UserRoleChangedData struct {
	UserID string `json:"user_id"`
	From   string `json:"from"`
	To     string `json:"to"`
}

// UserActivationData: a user was deactivated or reactivated.
type UserActivationData struct {
	UserID string `json:"user_id"`
}

// UserLoginFailedData: a wrong password for an existing account.
type UserLoginFailedData struct {
	UserID   string `json:"user_id"`
	ClientIP string `json:"client_ip,omitempty"`
	Reason   string `json:"reason"` // "wrong_password", "inactive"
}

// UserLoginFailuresResetData: a successful login ended a failure streak.
type UserLoginFailuresResetData struct {
	UserID string `json:"user_id"`
}

// EmailReservedData: an e-mail address (normalised) now belongs to UserID.
type EmailReservedData struct {
	Email  string `json:"email"`
	UserID string `json:"user_id"`
}

// LoginRejectedData: a login for an e-mail that has no account.
type LoginRejectedData struct {
	Email    string `json:"email"`
	ClientIP string `json:"client_ip,omitempty"`
	Reason   string `json:"reason"`
}

// AdminBootstrapped marks that the configured bootstrap admin was created,
// so later starts never create a second one.
const AdminBootstrapped = "maestro.system.admin_bootstrapped.v1"

// BootstrapSubject is appended to with expected sequence 0: at most once.
var BootstrapSubject = Subject(AggSystem, "bootstrap-admin")

// AdminBootstrappedData names the admin created from configuration.
type AdminBootstrappedData struct {
	UserID string `json:"user_id"`
}
