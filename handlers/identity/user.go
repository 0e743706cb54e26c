// Package identity is the write side of users and sessions: their deciders
// (pure functions from state and command to events) and the service that
// loads state from the event store, decides, and appends.
package identity

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// UserState is a user aggregate folded from its events.
type UserState struct {
	Registered    bool
	ID            string
	Email         string
	Name          string
	Role          authz.Role
	Active        bool
	Kind          string // events.KindServiceAccount, or "" for a person
	PasswordHash  string
	Failures      int       // consecutive failed logins
	LastFailure   time.Time // time of the latest of them
	DeactivatedAt time.Time // latest deactivation; sessions started before it are dead
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// EvolveUser folds one event into user state.
func EvolveUser(s UserState, e events.Envelope) (UserState, error) {
	switch e.Type {
	case events.UserRegistered:
		var d events.UserRegisteredData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = UserState{Registered: true, ID: d.UserID, Email: d.Email, Name: d.Name,
			Role: authz.Role(d.Role), Active: true, Kind: d.Kind, PasswordHash: d.PasswordHash, CreatedAt: e.Time, UpdatedAt: e.Time}
	case events.UserRoleChanged:
		var d events.UserRoleChangedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Role = authz.Role(d.To)
		s.UpdatedAt = e.Time
	case events.UserDeactivated:
		s.Active = false
		s.DeactivatedAt = e.Time
		s.UpdatedAt = e.Time
	case events.UserReactivated:
		s.Active = true
		s.UpdatedAt = e.Time
	case events.UserLoginFailed:
		s = countFailure(s, e.Time)
	case events.UserLoginFailuresReset:
		s.Failures = 0
	}
	return s, nil
}

// EmailState is an e-mail reservation subject folded from its events.
type EmailState struct {
	Taken  bool
	UserID string
}

// EvolveEmail folds one event into reservation state.
func EvolveEmail(s EmailState, e events.Envelope) (EmailState, error) {
	if e.Type == events.EmailReserved {
		var d events.EmailReservedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = EmailState{Taken: true, UserID: d.UserID}
	}
	return s, nil
}

// Limits on user input, enforced before anything is decided.
const (
	MaxEmailLen = 254
	MaxNameLen  = 200
)

// Register is the command to create an account.
type Register struct {
	UserID       string
	Email        string // normalised
	Name         string
	Role         authz.Role
	PasswordHash string
	Source       string
}

// DecideRegister creates the user and reserves its e-mail in one decision.
func DecideRegister(email EmailState, user UserState, c Register) ([]handlers.Change, error) {
	if email.Taken {
		return nil, handlers.Errorf(handlers.Conflict, "email-taken", "an account with this email already exists")
	}
	if user.Registered {
		return nil, handlers.Errorf(handlers.Conflict, "user-exists", "user %s already exists", c.UserID)
	}
	name := strings.TrimSpace(c.Name)
	if name == "" || utf8.RuneCountInString(name) > MaxNameLen || !handlers.PlainText(name) {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "name must be 1 to %d characters", MaxNameLen)
	}
	if !authz.ValidRole(string(c.Role)) {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "unknown role %q", c.Role)
	}
	return []handlers.Change{
		{Subject: events.ReservationSubject(events.AggEmail, c.Email), Type: events.EmailReserved,
			Data: events.EmailReservedData{Email: c.Email, UserID: c.UserID}},
		{Subject: events.Subject(events.AggUser, c.UserID), Type: events.UserRegistered,
			Data: events.UserRegisteredData{UserID: c.UserID, Email: c.Email, Name: name,
				Role: string(c.Role), PasswordHash: c.PasswordHash, Source: c.Source}},
	}, nil
}

// UpdateUser is an admin's change to another user's role or activation.
type UpdateUser struct {
	ActorID string
	Role    *authz.Role
	Active  *bool
}

// DecideUpdateUser changes role and/or activation. Admins cannot demote or
// deactivate themselves, so the acting admin always remains.
func DecideUpdateUser(s UserState, c UpdateUser) ([]handlers.Change, error) {
	if !s.Registered {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "user not found")
	}
	subject := events.Subject(events.AggUser, s.ID)
	var out []handlers.Change
	if c.Role != nil && *c.Role != s.Role {
		if !authz.ValidRole(string(*c.Role)) {
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "role must be one of viewer, member, admin")
		}
		if c.ActorID == s.ID {
			return nil, handlers.Errorf(handlers.Conflict, "self-modification", "admins cannot change their own role")
		}
		if s.Kind == events.KindServiceAccount && *c.Role == authz.RoleAdmin {
			// Least privilege: a leaked automation credential must not
			// administer the platform; people do that, signed in.
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "a service account's role is viewer or member")
		}
		out = append(out, handlers.Change{Subject: subject, Type: events.UserRoleChanged,
			Data: events.UserRoleChangedData{UserID: s.ID, From: string(s.Role), To: string(*c.Role)}})
	}
	if c.Active != nil && *c.Active != s.Active {
		if c.ActorID == s.ID {
			return nil, handlers.Errorf(handlers.Conflict, "self-modification", "admins cannot deactivate themselves")
		}
		typ := events.UserReactivated
		if !*c.Active {
			typ = events.UserDeactivated
		}
		out = append(out, handlers.Change{Subject: subject, Type: typ, Data: events.UserActivationData{UserID: s.ID}})
	}
	return out, nil
}

// FailureStreakGap ends a failure streak: a failure this long after the
// previous one starts a new streak. Otherwise only a successful login would
// end a streak, which an e-mail without an account never has, and the
// bounded security stream (30 days) would forget an unknown e-mail's streak
// while an account remembers its own: a 429 would then tell them apart.
const FailureStreakGap = 24 * time.Hour

// countFailure adds a failed login at time at to a streak.
func countFailure(s UserState, at time.Time) UserState {
	if at.Sub(s.LastFailure) > FailureStreakGap {
		s.Failures = 0
	}
	s.Failures++
	s.LastFailure = at
	return s
}

// ThrottlePolicy is the per-account login back-off.
type ThrottlePolicy struct {
	FreeFailures int           // consecutive failures allowed without delay
	Base         time.Duration // first back-off after FreeFailures
	Max          time.Duration // back-off cap
}

// DefaultThrottle allows 5 failures, then backs off 1s, 2s, 4s … up to 15 min.
func DefaultThrottle() ThrottlePolicy {
	return ThrottlePolicy{FreeFailures: 5, Base: time.Second, Max: 15 * time.Minute}
}

// LockedUntil is when the account accepts the next login attempt.
func (p ThrottlePolicy) LockedUntil(s UserState) time.Time {
	if s.Failures < p.FreeFailures {
		return time.Time{}
	}
	d := p.Base
	for i := p.FreeFailures; i < s.Failures && d < p.Max; i++ {
		d *= 2
	}
	return s.LastFailure.Add(min(d, p.Max))
}

// DecideLoginFailure records a wrong password (or a login to an inactive
// account, which answers identically).
func DecideLoginFailure(s UserState, clientIP string) handlers.Change {
	reason := "wrong_password"
	if !s.Active {
		reason = "inactive"
	}
	return handlers.Change{Subject: events.Subject(events.AggUser, s.ID), Type: events.UserLoginFailed,
		Data: events.UserLoginFailedData{UserID: s.ID, ClientIP: clientIP, Reason: reason}}
}

// DecideLogin starts a session for a user whose password matched. It also
// ends a failure streak so the back-off starts from zero next time.
func DecideLogin(s UserState, sessionID, clientIP, userAgent string) ([]handlers.Change, error) {
	if !s.Registered || !s.Active {
		return nil, fmt.Errorf("decide login: user %s cannot log in", s.ID)
	}
	out := []handlers.Change{{Subject: events.Subject(events.AggSession, sessionID), Type: events.SessionStarted,
		Data: events.SessionStartedData{SessionID: sessionID, UserID: s.ID, ClientIP: clientIP, UserAgent: userAgent}}}
	if s.Failures > 0 {
		out = append(out, handlers.Change{Subject: events.Subject(events.AggUser, s.ID), Type: events.UserLoginFailuresReset,
			Data: events.UserLoginFailuresResetData{UserID: s.ID}})
	}
	return out, nil
}
