package identity

import (
	"errors"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// SessionState is a session aggregate folded from its events.
type SessionState struct {
	Started       bool
	ID            string
	UserID        string
	StartedAt     time.Time
	LastActivity  time.Time
	Generation    int // current refresh-token generation, 1 after login
	Revoked       bool
	RevokedReason string
}

// EvolveSession folds one event into session state.
func EvolveSession(s SessionState, e events.Envelope) (SessionState, error) {
	switch e.Type {
	case events.SessionStarted:
		var d events.SessionStartedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = SessionState{Started: true, ID: d.SessionID, UserID: d.UserID, StartedAt: e.Time, LastActivity: e.Time, Generation: 1}
	case events.SessionRefreshed:
		var d events.SessionRefreshedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Generation = d.Generation
		s.LastActivity = e.Time
	case events.SessionRevoked:
		var d events.SessionRevokedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Revoked = true
		s.RevokedReason = d.Reason
	}
	return s, nil
}

// SessionPolicy bounds refresh-token lifetimes.
type SessionPolicy struct {
	Idle     time.Duration // a refresh token unused this long is dead
	Absolute time.Duration // no session outlives this, however active
}

// DefaultSessionPolicy: 72 h idle, 30 days absolute.
func DefaultSessionPolicy() SessionPolicy {
	return SessionPolicy{Idle: 72 * time.Hour, Absolute: 30 * 24 * time.Hour}
}

// RefreshExpiry is when a refresh token issued at now for s stops working.
func (p SessionPolicy) RefreshExpiry(s SessionState, now time.Time) time.Time {
	idle := now.Add(p.Idle)
	abs := s.StartedAt.Add(p.Absolute)
	if abs.Before(idle) {
		return abs
	}
	return idle
}

// ErrTokenReuse reports an old refresh token presented again; the session
// is revoked as a precaution (the token may have been stolen).
var ErrTokenReuse = errors.New("refresh token reused")

func sessionInvalid() error {
	return handlers.Errorf(handlers.Unauthenticated, "invalid-token", "the refresh token is invalid or expired")
}

// DecideRefresh rotates the refresh token, or revokes the session when an
// already-rotated generation is presented.
func DecideRefresh(s SessionState, u UserState, generation int, now time.Time, p SessionPolicy) ([]handlers.Change, error) {
	if !s.Started || s.Revoked {
		return nil, sessionInvalid()
	}
	subject := events.Subject(events.AggSession, s.ID)
	if !u.Registered || !u.Active || !s.StartedAt.After(u.DeactivatedAt) {
		return nil, sessionInvalid()
	}
	if generation != s.Generation {
		return []handlers.Change{{Subject: subject, Type: events.SessionRevoked,
			Data: events.SessionRevokedData{SessionID: s.ID, UserID: s.UserID, Reason: events.RevokedTokenReuse}}}, ErrTokenReuse
	}
	if now.After(s.LastActivity.Add(p.Idle)) || now.After(s.StartedAt.Add(p.Absolute)) {
		return nil, sessionInvalid()
	}
	return []handlers.Change{{Subject: subject, Type: events.SessionRefreshed,
		Data: events.SessionRefreshedData{SessionID: s.ID, UserID: s.UserID, Generation: s.Generation + 1}}}, nil
}

// DecideLogout revokes the caller's own session. Logging out twice is a no-op.
func DecideLogout(s SessionState, userID string) ([]handlers.Change, error) {
	if !s.Started || s.UserID != userID {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "session not found")
	}
	if s.Revoked {
		return nil, nil
	}
	return []handlers.Change{{Subject: events.Subject(events.AggSession, s.ID), Type: events.SessionRevoked,
		Data: events.SessionRevokedData{SessionID: s.ID, UserID: s.UserID, Reason: events.RevokedLogout}}}, nil
}
