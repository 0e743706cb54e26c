package projections

import (
	"github.com/maestro-ml/maestro/events"
)

// Users is the read model of accounts (no credentials).
type Users struct{}

// Name implements Projection.
func (Users) Name() string { return "users" }

// Tables implements Projection.
func (Users) Tables() []string { return []string{"users"} }

// Aggregates implements Projection.
func (Users) Aggregates() []string { return []string{events.AggUser} }

// Handles implements Projection.
func (Users) Handles(t string) bool {
	switch t {
	case events.UserRegistered, events.UserRoleChanged, events.UserDeactivated, events.UserReactivated:
		return true
	}
	return false
}

// Queue implements Projection.
func (Users) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		switch e.Type {
		case events.UserRegistered:
			var d events.UserRegisteredData
			if err := e.Decode(&d); err != nil {
				return err
			}
			kind := "user"
			if d.Kind == events.KindServiceAccount {
				kind = d.Kind
			}
			b.Queue(`INSERT INTO users (id, email, name, role, active, kind, created_at, updated_at, created_seq, updated_seq)
				VALUES ($1, NULLIF($2, ''), $3, $4, true, $7, $5, $5, $6, $6)`, d.UserID, d.Email, d.Name, d.Role, e.Time, int64(e.Sequence), kind)
			b.Invalidate("user", d.UserID)
		case events.UserRoleChanged:
			var d events.UserRoleChangedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE users SET role = $2, updated_at = $3, updated_seq = $4 WHERE id = $1`, d.UserID, d.To, e.Time, int64(e.Sequence))
			b.Invalidate("user", d.UserID)
		case events.UserDeactivated, events.UserReactivated:
			var d events.UserActivationData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE users SET active = $2, updated_at = $3, updated_seq = $4,
				deactivated_at = CASE WHEN $2 THEN deactivated_at ELSE $3 END WHERE id = $1`,
				d.UserID, e.Type == events.UserReactivated, e.Time, int64(e.Sequence))
			b.Invalidate("user", d.UserID)
		}
	}
	return nil
}

// Sessions is the read model the authenticator checks on every request.
type Sessions struct{}

// Name implements Projection.
func (Sessions) Name() string { return "sessions" }

// Tables implements Projection.
func (Sessions) Tables() []string { return []string{"sessions"} }

// Aggregates implements Projection.
func (Sessions) Aggregates() []string { return []string{events.AggSession, events.AggUser} }

// Handles implements Projection.
func (Sessions) Handles(t string) bool {
	switch t {
	case events.SessionStarted, events.SessionRefreshed, events.SessionRevoked, events.UserDeactivated:
		return true
	}
	return false
}

// Queue implements Projection.
func (Sessions) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		switch e.Type {
		case events.SessionStarted:
			var d events.SessionStartedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`INSERT INTO sessions (id, user_id, generation, started_at, last_refreshed_at, client_ip, user_agent)
				VALUES ($1, $2, 1, $3, $3, $4, $5)`, d.SessionID, d.UserID, e.Time, d.ClientIP, d.UserAgent)
		case events.SessionRefreshed:
			var d events.SessionRefreshedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE sessions SET generation = $2, last_refreshed_at = $3 WHERE id = $1`, d.SessionID, d.Generation, e.Time)
		case events.SessionRevoked:
			var d events.SessionRevokedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL`, d.SessionID, e.Time, d.Reason)
			b.Invalidate("session", d.SessionID)
		case events.UserDeactivated:
			// Deactivation ends every session of the user at once.
			var d events.UserActivationData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL`,
				d.UserID, e.Time, events.RevokedUserDisabled)
			b.Invalidate("user", d.UserID)
		}
	}
	return nil
}
