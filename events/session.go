package events

// Session aggregate events (subject maestro.events.session.<session_id>).
// A session is one login: its refresh-token generation advances on every
// refresh, and presenting an older generation revokes it (reuse detection).
const (
	SessionStarted   = "maestro.session.started.v1"
	SessionRefreshed = "maestro.session.refreshed.v1"
	SessionRevoked   = "maestro.session.revoked.v1"
)

// Session revocation reasons.
const (
	RevokedLogout       = "logout"
	RevokedTokenReuse   = "refresh_token_reuse"
	RevokedUserDisabled = "user_deactivated"
)

// SessionStartedData: a successful login.
type SessionStartedData struct {
	SessionID string `json:"session_id"`
	UserID    string `json:"user_id"`
	ClientIP  string `json:"client_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

// SessionRefreshedData: the refresh token was rotated to Generation.
type SessionRefreshedData struct {
	SessionID  string `json:"session_id"`
	UserID     string `json:"user_id"`
	Generation int    `json:"generation"`
}

// SessionRevokedData: the session ended before its lifetime.
type SessionRevokedData struct {
	SessionID string `json:"session_id"`
	UserID    string `json:"user_id"`
	Reason    string `json:"reason"`
}
