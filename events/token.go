package events

// API token aggregate events (subject maestro.events.token.<token_id>). An
// API token is a long-lived bearer credential for non-interactive clients
// (CI, MLflow clients, service accounts). Its secret is shown once and
// stored only as a SHA-256 digest (a 256-bit random secret needs no slow
// hash: nothing can be guessed from the digest).
const (
	TokenCreated = "maestro.token.created.v1"
	TokenRevoked = "maestro.token.revoked.v1"
	// TokenUsed records a use from an address the token was not seen from
	// before, or the first use after TokenUseInterval: the audit trail
	// shows where a credential is used without an event per request.
	TokenUsed = "maestro.token.used.v1"
)

// AggToken is the API token aggregate type.
const AggToken = "token"

// TokenCreatedData: a new API token. Hash is the hex SHA-256 of the secret;
// it is redacted from the audit trail like a password hash. ProjectID
// scopes the token to one project ("" = every project its owner may use);
// Role is a project-role ceiling ("" = none).
type TokenCreatedData struct {
	TokenID   string `json:"token_id"`
	UserID    string `json:"user_id"`
	Name      string `json:"name"`
	Prefix    string `json:"prefix"`
	Hash      string `json:"hash"`
	ProjectID string `json:"project_id,omitempty"`
	Role      string `json:"role,omitempty"`
	// ExpiresAt is RFC 3339 in UTC, "" for a token that does not expire.
	ExpiresAt string `json:"expires_at,omitempty"`
}

// TokenRevokedData: the token stops working at once.
type TokenRevokedData struct {
	TokenID string `json:"token_id"`
	UserID  string `json:"user_id"`
	Reason  string `json:"reason"` // "revoked"
}

// TokenUsedData: a use worth recording (see TokenUsed).
type TokenUsedData struct {
	TokenID    string `json:"token_id"`
	UserID     string `json:"user_id"`
	ClientIP   string `json:"client_ip"`
	NewAddress bool   `json:"new_address"`
}
