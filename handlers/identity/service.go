package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Config wires the identity service.
type Config struct {
	Store    *events.Store
	Hasher   *auth.Hasher
	Tokens   *auth.Tokens
	Now      func() time.Time
	Throttle ThrottlePolicy
	Sessions SessionPolicy
	// AddressFailuresPerHour is the per-client-address failed-login budget.
	AddressFailuresPerHour int
	// AddressRegistrationsPerHour bounds self-registrations per client
	// address: each one is stored forever, so it must not be free to spam.
	AddressRegistrationsPerHour int
}

// Service handles identity commands: load state from events, decide, append.
type Service struct {
	cfg      Config
	users    *handlers.Repository[UserState]
	emails   *handlers.Repository[EmailState]
	sessions *handlers.Repository[SessionState]
	bootRepo *handlers.Repository[bool]
	address  *addressThrottle
	unknown  *unknownAccounts
	signups  *addressThrottle
}

// NewService builds the identity service.
func NewService(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Throttle == (ThrottlePolicy{}) {
		cfg.Throttle = DefaultThrottle()
	}
	if cfg.Sessions == (SessionPolicy{}) {
		cfg.Sessions = DefaultSessionPolicy()
	}
	if cfg.AddressFailuresPerHour == 0 {
		cfg.AddressFailuresPerHour = 100
	}
	if cfg.AddressRegistrationsPerHour == 0 {
		cfg.AddressRegistrationsPerHour = 30
	}
	return &Service{
		cfg:      cfg,
		users:    handlers.NewRepository(cfg.Store, EvolveUser, 10000),
		emails:   handlers.NewRepository(cfg.Store, EvolveEmail, 10000).WithFinal(func(e EmailState) bool { return e.Taken }),
		sessions: handlers.NewRepository(cfg.Store, EvolveSession, 10000),
		bootRepo: handlers.NewRepository(cfg.Store, func(bool, events.Envelope) (bool, error) { return true, nil }, 1).WithFinal(func(done bool) bool { return done }),
		address:  newAddressThrottle(cfg.AddressFailuresPerHour, 100000),
		unknown:  newUnknownAccounts(100000),
		signups:  newAddressThrottle(cfg.AddressRegistrationsPerHour, 100000),
	}
}

func (s *Service) append(ctx context.Context, meta events.Meta, versions map[string]uint64, changes []handlers.Change) (uint64, error) {
	return handlers.Commit(ctx, s.cfg.Store, meta, versions, changes)
}

// RegisterInput is a new account's details.
type RegisterInput struct {
	Email, Password, Name string
	Role                  authz.Role
	Source                string
	// ClientIP is set for self-registration, which is budgeted per address.
	ClientIP string
}

// Register creates a user. The e-mail reservation and the user are one
// atomic append, so under any number of concurrent registrations of one
// address exactly one succeeds.
func (s *Service) Register(ctx context.Context, meta events.Meta, in RegisterInput) (UserState, uint64, error) {
	meta.Time = s.cfg.Now()
	if in.ClientIP != "" {
		if d := s.signups.take(addressKey(in.ClientIP), meta.Time); d > 0 {
			secs := max(int(d.Round(time.Second)/time.Second), 1)
			return UserState{}, 0, &handlers.Error{Kind: handlers.Throttled, Code: "too-many-attempts",
				Detail: fmt.Sprintf("too many registrations from this address; try again in %d seconds", secs), RetryAfter: time.Duration(secs) * time.Second}
		}
	}
	return s.register(ctx, meta, in, nil)
}

func (s *Service) register(ctx context.Context, meta events.Meta, in RegisterInput, extra []handlers.Change) (UserState, uint64, error) {
	email, err := NormalizeEmail(in.Email)
	if err != nil {
		return UserState{}, 0, err
	}
	if err := auth.CheckPolicy(in.Password, email); err != nil {
		return UserState{}, 0, handlers.Errorf(handlers.Invalid, "weak-password", "%s", err.Error())
	}
	hash, err := s.cfg.Hasher.Hash(ctx, in.Password)
	if err != nil {
		return UserState{}, 0, fmt.Errorf("hash password: %w", err)
	}
	userID := handlers.IDFor(meta, "user")
	emailSubj := events.ReservationSubject(events.AggEmail, email)
	userSubj := events.Subject(events.AggUser, userID)
	var seq uint64
	err = handlers.Retry(ctx, func() error {
		es, ev, err := s.emails.Load(ctx, emailSubj)
		if err != nil {
			return err
		}
		if meta.IdempotencyKey != "" && es.Taken && es.UserID == userID {
			return nil // this very command already ran
		}
		us, uv, err := s.users.Load(ctx, userSubj)
		if err != nil {
			return err
		}
		changes, err := DecideRegister(es, us, Register{UserID: userID, Email: email, Name: in.Name,
			Role: in.Role, PasswordHash: hash, Source: in.Source})
		if err != nil {
			return err
		}
		versions := map[string]uint64{emailSubj: ev, userSubj: uv}
		for _, c := range extra {
			versions[c.Subject] = 0
		}
		seq, err = s.append(ctx, meta, versions, append(changes, extra...))
		return err
	})
	if err != nil {
		return UserState{}, 0, err
	}
	u, _, err := s.users.Load(ctx, userSubj)
	return u, seq, err
}

// BootstrapAdmin creates the configured admin once, ever: a marker subject
// appended with expected sequence 0 in the same atomic batch makes a second
// start (or a second instance) skip it. created is false when it already ran.
func (s *Service) BootstrapAdmin(ctx context.Context, email, password string) (created bool, err error) {
	done, _, err := s.bootRepo.Load(ctx, events.BootstrapSubject)
	if err != nil || done {
		return false, err
	}
	meta := events.Meta{Actor: events.SystemActor, Time: s.cfg.Now()}
	_, _, err = s.register(ctx, meta, RegisterInput{Email: email, Password: password, Name: "Administrator",
		Role: authz.RoleAdmin, Source: "bootstrap"}, []handlers.Change{{Subject: events.BootstrapSubject,
		Type: events.AdminBootstrapped, Data: events.AdminBootstrappedData{}}})
	if err != nil {
		if e, ok := handlers.AsError(err); ok && e.Kind == handlers.Conflict {
			if done, _, lerr := s.bootRepo.Load(ctx, events.BootstrapSubject); lerr == nil && done {
				return false, nil // another instance bootstrapped concurrently
			}
		}
		return false, fmt.Errorf("bootstrap admin: %w", err)
	}
	return true, nil
}

// TokenPair is what a login or refresh returns.
type TokenPair struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    int // seconds until the access token expires
	SessionID    string
	UserID       string
}

func invalidCredentials() error {
	return handlers.Errorf(handlers.Unauthenticated, "invalid-credentials", "email or password is incorrect")
}

func throttled(d time.Duration) error {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	return &handlers.Error{Kind: handlers.Throttled, Code: "too-many-attempts",
		Detail: fmt.Sprintf("too many failed logins; try again in %d seconds", secs), RetryAfter: time.Duration(secs) * time.Second}
}

// LoginInput is a login attempt.
type LoginInput struct {
	Email, Password, ClientIP, UserAgent string
}

// Login verifies a password and starts a session. An unknown e-mail, a wrong
// password and an inactive account answer identically and cost the same
// (one argon2id verification and one append).
func (s *Service) Login(ctx context.Context, meta events.Meta, in LoginInput) (TokenPair, uint64, error) {
	now := s.cfg.Now()
	meta.Time = now
	addr := addressKey(in.ClientIP)
	if d := s.address.take(addr, now); d > 0 {
		return TokenPair{}, 0, throttled(d)
	}
	pair, seq, err := s.login(ctx, meta, in, now)
	if err == nil {
		s.address.refund(addr, now)
	}
	return pair, seq, err
}

func (s *Service) login(ctx context.Context, meta events.Meta, in LoginInput, now time.Time) (TokenPair, uint64, error) {
	email, emailErr := NormalizeEmail(in.Email)
	var es EmailState
	if emailErr == nil {
		var err error
		if es, _, err = s.emails.Load(ctx, events.ReservationSubject(events.AggEmail, email)); err != nil {
			return TokenPair{}, 0, err
		}
	}
	if !es.Taken {
		key := strings.ToLower(strings.TrimSpace(truncate(in.Email, MaxEmailLen)))
		if until := s.cfg.Throttle.LockedUntil(s.unknown.state(key)); now.Before(until) {
			return TokenPair{}, 0, throttled(until.Sub(now)) // exactly as for a locked account
		}
		s.cfg.Hasher.DummyVerify(ctx, in.Password)
		s.unknown.fail(key, now, s.cfg.Throttle)
		// Record what was tried only in its normalised form: raw input may
		// hold anything, and events must stay storable in every projection.
		tried := email
		if emailErr != nil {
			tried = "(not an e-mail address)"
		}
		rec := handlers.Change{Subject: events.SecurityLoginsSubject, Type: events.LoginRejected,
			Data: events.LoginRejectedData{Email: tried, ClientIP: in.ClientIP, Reason: "unknown_account"}}
		if _, err := s.append(ctx, meta, nil, []handlers.Change{rec}); err != nil {
			return TokenPair{}, 0, err
		}
		return TokenPair{}, 0, invalidCredentials()
	}
	userSubj := events.Subject(events.AggUser, es.UserID)
	u, _, err := s.users.Load(ctx, userSubj)
	if err != nil {
		return TokenPair{}, 0, err
	}
	if until := s.cfg.Throttle.LockedUntil(u); now.Before(until) {
		return TokenPair{}, 0, throttled(until.Sub(now))
	}
	ok, err := s.cfg.Hasher.Verify(ctx, u.PasswordHash, in.Password)
	if err != nil {
		return TokenPair{}, 0, fmt.Errorf("verify password: %w", err)
	}
	passwordHash := u.PasswordHash
	sessionID := handlers.IDFor(meta, "session")
	sessSubj := events.Subject(events.AggSession, sessionID)
	var seq uint64
	// Both outcomes are decided on the user's current version and re-check
	// the lock after a conflict: parallel guesses cannot all be answered
	// before the failures that should have locked the account are counted.
	err = handlers.Retry(ctx, func() error {
		u, uv, err := s.users.Load(ctx, userSubj)
		if err != nil {
			return err
		}
		if until := s.cfg.Throttle.LockedUntil(u); now.Before(until) {
			return throttled(until.Sub(now))
		}
		if u.PasswordHash != passwordHash {
			return invalidCredentials() // the password changed while we checked it
		}
		versions := map[string]uint64{userSubj: uv}
		if !ok || !u.Active {
			if _, err := s.append(ctx, meta, versions, []handlers.Change{DecideLoginFailure(u, in.ClientIP)}); err != nil {
				return err
			}
			return invalidCredentials()
		}
		// The session is started by the user who just proved who they are.
		meta := meta
		meta.Actor = events.Actor{Kind: events.ActorUser, ID: u.ID}
		ua := truncate(in.UserAgent, 256)
		if !handlers.PlainText(ua) {
			ua = ""
		}
		changes, err := DecideLogin(u, sessionID, in.ClientIP, ua)
		if err != nil {
			return err
		}
		versions[sessSubj] = 0
		seq, err = s.append(ctx, meta, versions, changes)
		return err
	})
	if err != nil {
		return TokenPair{}, 0, err
	}
	sess, _, err := s.sessions.Load(ctx, sessSubj)
	if err != nil {
		return TokenPair{}, 0, err
	}
	pair, err := s.issue(u.ID, sess, now)
	return pair, seq, err
}

func (s *Service) issue(userID string, sess SessionState, now time.Time) (TokenPair, error) {
	access, claims, err := s.cfg.Tokens.Issue(auth.TokenAccess, userID, sess.ID, 0, time.Time{})
	if err != nil {
		return TokenPair{}, fmt.Errorf("issue access token: %w", err)
	}
	refresh, _, err := s.cfg.Tokens.Issue(auth.TokenRefresh, userID, sess.ID, sess.Generation, s.cfg.Sessions.RefreshExpiry(sess, now))
	if err != nil {
		return TokenPair{}, fmt.Errorf("issue refresh token: %w", err)
	}
	return TokenPair{AccessToken: access, RefreshToken: refresh, SessionID: sess.ID, UserID: userID,
		ExpiresIn: int(claims.ExpiresAt.Sub(now).Round(time.Second) / time.Second)}, nil
}

// Refresh rotates a refresh token. Presenting a token that was already
// rotated revokes the whole session (reuse detection): of two concurrent
// refreshes with one token, one wins and the other ends the session.
func (s *Service) Refresh(ctx context.Context, meta events.Meta, token string) (TokenPair, uint64, error) {
	now := s.cfg.Now()
	meta.Time = now
	claims, err := s.cfg.Tokens.Verify(token, auth.TokenRefresh)
	if err != nil {
		return TokenPair{}, 0, sessionInvalid()
	}
	sessSubj := events.Subject(events.AggSession, claims.SessionID)
	if !events.ValidToken(claims.SessionID) || !events.ValidToken(claims.Subject) {
		return TokenPair{}, 0, sessionInvalid()
	}
	meta.Actor = events.Actor{Kind: events.ActorUser, ID: claims.Subject}
	var seq uint64
	var reused bool
	err = handlers.Retry(ctx, func() error {
		sess, sv, err := s.sessions.Load(ctx, sessSubj)
		if err != nil {
			return err
		}
		if sess.UserID != claims.Subject {
			return sessionInvalid()
		}
		u, _, err := s.users.Load(ctx, events.Subject(events.AggUser, claims.Subject))
		if err != nil {
			return err
		}
		changes, derr := DecideRefresh(sess, u, claims.Generation, now, s.cfg.Sessions)
		if derr != nil && !errors.Is(derr, ErrTokenReuse) {
			return derr
		}
		reused = errors.Is(derr, ErrTokenReuse)
		seq, err = s.append(ctx, meta, map[string]uint64{sessSubj: sv}, changes)
		return err
	})
	if err != nil {
		return TokenPair{}, 0, err
	}
	if reused {
		return TokenPair{}, seq, handlers.Errorf(handlers.Unauthenticated, "invalid-token",
			"the refresh token was already used; the session has been revoked")
	}
	sess, _, err := s.sessions.Load(ctx, sessSubj)
	if err != nil {
		return TokenPair{}, 0, err
	}
	pair, err := s.issue(claims.Subject, sess, now)
	return pair, seq, err
}

// Logout revokes the caller's session. seq is 0 when it was already revoked.
func (s *Service) Logout(ctx context.Context, meta events.Meta, p authz.Principal) (uint64, error) {
	if !authz.Can(p, authz.Logout, authz.Resource{}) {
		return 0, handlers.Errorf(handlers.Forbidden, "forbidden", "not allowed")
	}
	meta.Time = s.cfg.Now()
	subj := events.Subject(events.AggSession, p.SessionID)
	var seq uint64
	err := handlers.Retry(ctx, func() error {
		sess, sv, err := s.sessions.Load(ctx, subj)
		if err != nil {
			return err
		}
		changes, err := DecideLogout(sess, p.UserID)
		if err != nil || len(changes) == 0 {
			return err
		}
		seq, err = s.append(ctx, meta, map[string]uint64{subj: sv}, changes)
		return err
	})
	return seq, err
}

// UpdateUserInput is an admin's patch of a user.
type UpdateUserInput struct {
	Role   *authz.Role
	Active *bool
}

// UpdateUser changes a user's role or activation (admins only).
func (s *Service) UpdateUser(ctx context.Context, meta events.Meta, p authz.Principal, userID string, in UpdateUserInput) (UserState, uint64, error) {
	p, err := s.Actor(ctx, p)
	if err != nil {
		return UserState{}, 0, err
	}
	if !authz.Can(p, authz.UpdateUser, authz.Resource{Kind: "user", ID: userID}) {
		return UserState{}, 0, handlers.Errorf(handlers.Forbidden, "forbidden", "only admins can change users")
	}
	if _, err := uuid.Parse(userID); err != nil {
		return UserState{}, 0, handlers.Errorf(handlers.NotFound, "not-found", "user not found")
	}
	meta.Time = s.cfg.Now()
	subj := events.Subject(events.AggUser, userID)
	var seq uint64
	var state UserState
	err = handlers.Retry(ctx, func() error {
		u, uv, err := s.users.Load(ctx, subj)
		if err != nil {
			return err
		}
		state = u
		changes, err := DecideUpdateUser(u, UpdateUser{ActorID: p.UserID, Role: in.Role, Active: in.Active})
		if err != nil || len(changes) == 0 {
			return err
		}
		seq, err = s.append(ctx, meta, map[string]uint64{subj: uv}, changes)
		return err
	})
	if err != nil || seq == 0 {
		return state, seq, err
	}
	state, _, err = s.users.Load(ctx, subj)
	return state, seq, err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Session returns a session and its user from the event store (the truth),
// for callers that cannot wait for the sessions projection.
func (s *Service) Session(ctx context.Context, sessionID string) (SessionState, UserState, error) {
	sess, _, err := s.sessions.Load(ctx, events.Subject(events.AggSession, sessionID))
	if err != nil || !sess.Started {
		return sess, UserState{}, err
	}
	u, _, err := s.users.Load(ctx, events.Subject(events.AggUser, sess.UserID))
	return sess, u, err
}

// UserActive reports whether a user exists and is active, from the event store.
func (s *Service) UserActive(ctx context.Context, userID string) (bool, error) {
	if !events.ValidToken(userID) {
		return false, nil
	}
	u, _, err := s.users.Load(ctx, events.Subject(events.AggUser, userID))
	return u.Registered && u.Active, err
}

// Actor returns p with its global role as the event store has it (rule 2:
// the write side decides on event-sourced state, not on the projection the
// authenticator read). An inactive or unknown user is refused.
func (s *Service) Actor(ctx context.Context, p authz.Principal) (authz.Principal, error) {
	if !events.ValidToken(p.UserID) {
		return p, handlers.Errorf(handlers.Unauthenticated, "unauthenticated", "the session has ended")
	}
	u, _, err := s.users.Load(ctx, events.Subject(events.AggUser, p.UserID))
	if err != nil {
		return p, err
	}
	if !u.Registered || !u.Active {
		return p, handlers.Errorf(handlers.Unauthenticated, "unauthenticated", "the session has ended")
	}
	p.Role = u.Role
	return p, nil
}
