package events

import "fmt"

// Summary is a one-line, human-readable account of an event for the audit
// trail. It never includes secrets (password hashes, tokens).
func Summary(e Envelope) string {
	switch e.Type {
	case UserRegistered:
		var d UserRegisteredData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s registered as %s (%s)", d.Email, d.Role, d.Source)
		}
	case UserRoleChanged:
		var d UserRoleChangedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s role changed from %s to %s", d.UserID, d.From, d.To)
		}
	case UserDeactivated:
		var d UserActivationData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s deactivated", d.UserID)
		}
	case UserReactivated:
		var d UserActivationData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s reactivated", d.UserID)
		}
	case UserLoginFailed:
		var d UserLoginFailedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("login failed for user %s (%s) from %s", d.UserID, d.Reason, d.ClientIP)
		}
	case UserLoginFailuresReset:
		return "login failure streak reset by a successful login"
	case EmailReserved:
		var d EmailReservedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("e-mail %s reserved for user %s", d.Email, d.UserID)
		}
	case LoginRejected:
		var d LoginRejectedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("login rejected for %s (%s) from %s", d.Email, d.Reason, d.ClientIP)
		}
	case SessionStarted:
		var d SessionStartedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s logged in (session %s) from %s", d.UserID, d.SessionID, d.ClientIP)
		}
	case SessionRefreshed:
		var d SessionRefreshedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("session %s refreshed (generation %d)", d.SessionID, d.Generation)
		}
	case SessionRevoked:
		var d SessionRevokedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("session %s revoked (%s)", d.SessionID, d.Reason)
		}
	}
	return e.Type
}

// secretFields are event data fields the audit trail and other readers must not see.
var secretFields = map[string][]string{
	UserRegistered: {"password_hash"},
}

// Redacted returns the event data with secret fields removed.
func Redacted(e Envelope) map[string]any {
	var m map[string]any
	if err := e.Decode(&m); err != nil {
		return nil
	}
	for _, f := range secretFields[e.Type] {
		delete(m, f)
	}
	return m
}
