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
	Store *events.Store
	// Security is the bounded stream of security signals
	// (events.OpenSecurityStore): rejected logins for unknown e-mails.
	Security *events.Store
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
	tokens   *handlers.Repository[TokenState]
	bootRepo *handlers.Repository[bool]
	address  *addressThrottle
	signups  *addressThrottle
	// loginDecided, when set (tests only), runs after a successful login
	// was decided and before it is appended: the window a concurrent
	// change of the user must not slip through.
	loginDecided func()
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
		tokens:   handlers.NewRepository(cfg.Store, EvolveToken, 10000).WithClone(cloneToken),
		bootRepo: handlers.NewRepository(cfg.Store, func(bool, events.Envelope) (bool, error) { return true, nil }, 1).WithFinal(func(done bool) bool { return done }),
		address:  newAddressThrottle(cfg.AddressFailuresPerHour, 100000),
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
			seq = ev // this very command already ran: answer with where it is
			return nil
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
	u, uv, err := s.users.Load(ctx, userSubj)
	return u, max(seq, uv), err
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

// LoginRetryWindow is how long a login retried with the same
// Idempotency-Key and body gets the session its first attempt started (as
// long as nobody refreshed or ended it); the API replays login answers for
// as long, and JetStream's duplicate window is as long.
const LoginRetryWindow = 2 * time.Minute

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
		return TokenPair{}, 0, s.rejectUnknown(ctx, meta, in, email, emailErr, now)
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
	if meta.Derived() {
		prior, pv, err := s.sessions.Load(ctx, events.Subject(events.AggSession, sessionID))
		if err != nil {
			return TokenPair{}, 0, err
		}
		if prior.Started {
			// This key and request started a session before. A retry whose
			// answer was lost (a crash) gets that session while it is fresh
			// and untouched; later, the same key and body are a new login
			// with a random session id (the derived one is taken), not a
			// conflict on a session that exists (review finding 16).
			if ok && u.Active && prior.UserID == u.ID && !prior.Revoked && prior.Generation == 1 && now.Sub(prior.StartedAt) < LoginRetryWindow {
				pair, err := s.issue(u.ID, prior, now)
				return pair, pv, err
			}
			sessionID = uuid.NewString()
		}
	}
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
		if s.loginDecided != nil {
			s.loginDecided()
		}
		seq, err = s.startSession(ctx, meta, changes, userSubj, uv, sessSubj)
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

// startSession appends a login's changes so that they hold only if the user
// is still at version uv, the state the login was decided on: a login racing
// a deactivation (or a password or role change) conflicts and decides again,
// instead of starting a session after the deactivation that a later
// reactivation would bring back to life (review finding 11). When the login
// also resets a failure streak, that user event carries the check in the
// atomic batch; otherwise the session start is the only event and carries it
// itself, through Nats-Expected-Last-Subject-Sequence-Subject.
func (s *Service) startSession(ctx context.Context, meta events.Meta, changes []handlers.Change, userSubj string, uv uint64, sessSubj string) (uint64, error) {
	batch, err := handlers.Build(meta, map[string]uint64{userSubj: uv, sessSubj: 0}, changes...)
	if err != nil {
		return 0, err
	}
	if len(batch) == 1 {
		// One message carries one expectation, so "the session subject is
		// new" is checked by loading it instead: its id is fresh (random,
		// or derived from an idempotency key, whose concurrent copies
		// JetStream's duplicate window drops), so only a retry after that
		// window can find it taken, and starting it again would reset it.
		if _, sv, err := s.sessions.Load(ctx, sessSubj); err != nil {
			return 0, err
		} else if sv != 0 {
			return 0, handlers.Errorf(handlers.Conflict, "concurrent-modification",
				"this Idempotency-Key already started a session; send the login with a new key")
		}
		batch[0].Expect, batch[0].ExpectSubject = uv, userSubj
	}
	seq, err := s.cfg.Store.Append(ctx, batch...)
	if errors.Is(err, events.ErrDuplicate) {
		return seq, nil // a retried login whose session start is stored already
	}
	return seq, err
}

// rejectUnknown answers a login for an e-mail that has no account exactly as
// for an account with a wrong password, at the same cost (one argon2id
// verification, one append decided on the streak's version): its failures
// are login_rejected events on the e-mail's subject of the security stream,
// and its back-off is folded from them with the accounts' policy. Being in
// the stream, not in one instance's memory, the streak is the same on every
// API instance and after restarts, so spreading guesses over instances
// cannot tell an unknown e-mail from an account (review finding 8).
func (s *Service) rejectUnknown(ctx context.Context, meta events.Meta, in LoginInput, email string, emailErr error, now time.Time) error {
	key, tried := email, email
	if emailErr != nil {
		// Record what was tried only in its normalised form: raw input may
		// hold anything, and events must stay storable in every projection.
		key, tried = strings.ToLower(strings.TrimSpace(truncate(in.Email, MaxEmailLen))), "(not an e-mail address)"
	}
	subj := events.LoginRejectionsSubject(key)
	streak, _, err := s.rejections(ctx, subj)
	if err != nil {
		return err
	}
	if until := s.cfg.Throttle.LockedUntil(streak); now.Before(until) {
		return throttled(until.Sub(now)) // exactly as for a locked account
	}
	s.cfg.Hasher.DummyVerify(ctx, in.Password)
	err = handlers.Retry(ctx, func() error {
		streak, v, err := s.rejections(ctx, subj)
		if err != nil {
			return err
		}
		if until := s.cfg.Throttle.LockedUntil(streak); now.Before(until) {
			return throttled(until.Sub(now))
		}
		batch, err := handlers.Build(meta, map[string]uint64{subj: v}, handlers.Change{Subject: subj, Type: events.LoginRejected,
			Data: events.LoginRejectedData{Email: tried, ClientIP: in.ClientIP, Reason: "unknown_account"}})
		if err != nil {
			return err
		}
		if _, err := s.cfg.Security.Append(ctx, batch...); err != nil && !errors.Is(err, events.ErrDuplicate) {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return invalidCredentials()
}

// rejections folds an unknown e-mail's login_rejected events into the
// failure streak they make, as EvolveUser does with an account's
// login_failed events. The stream keeps enough of them for the lock state
// to be exact (events.SecurityConfig).
func (s *Service) rejections(ctx context.Context, subj string) (UserState, uint64, error) {
	evs, v, err := s.cfg.Security.Load(ctx, subj, 0)
	if err != nil {
		return UserState{}, 0, fmt.Errorf("load login rejections: %w", err)
	}
	var streak UserState
	for _, e := range evs {
		if e.Type == events.LoginRejected {
			streak = countFailure(streak, e.Time)
		}
	}
	return streak, v, nil
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
//
// On a refused token the sequence is not 0 when the session is revoked: it
// is the revocation this call appended, or the session's version when it was
// revoked already, so the caller can wait until the revocation is in force
// on the read side before answering.
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
	var stored []events.Envelope
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
			if sess.Revoked {
				seq = sv
			}
			return derr
		}
		reused = errors.Is(derr, ErrTokenReuse)
		seq, stored, err = handlers.CommitStored(ctx, s.cfg.Store, meta, map[string]uint64{sessSubj: sv}, changes)
		return err
	})
	if err != nil {
		return TokenPair{}, seq, err
	}
	if stored != nil {
		// A retry of a refresh whose rotation is stored: it now looks like
		// reuse of its own token, but the answer is what was stored, the
		// new pair of that rotation (not a revocation that was dropped).
		return s.refreshStored(ctx, claims.Subject, sessSubj, stored, now, seq)
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

// refreshStored answers a retried refresh from the events its first attempt
// stored: tokens for the session as that rotation left it, or the reuse 401
// if what was stored is a revocation.
func (s *Service) refreshStored(ctx context.Context, userID, sessSubj string, stored []events.Envelope, now time.Time, seq uint64) (TokenPair, uint64, error) {
	for _, e := range stored {
		if e.Type == events.SessionRevoked {
			return TokenPair{}, seq, handlers.Errorf(handlers.Unauthenticated, "invalid-token",
				"the refresh token was already used; the session has been revoked")
		}
	}
	sess, _, err := s.sessions.LoadAt(ctx, sessSubj, seq)
	if err != nil {
		return TokenPair{}, 0, err
	}
	pair, err := s.issue(userID, sess, now)
	return pair, seq, err
}

// Logout revokes the caller's session. When it was already revoked, seq is
// the session's version, so the caller still waits until that revocation is
// in force before it confirms the logout.
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
			seq = sv
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

// UpdateUser changes a user's role or activation (admins only). A patch that
// changes nothing returns the user's version as seq: it may repeat a change
// whose answer was lost, and the caller must not confirm it before that
// change is in force.
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
	var changed bool
	err = handlers.Retry(ctx, func() error {
		u, uv, err := s.users.Load(ctx, subj)
		if err != nil {
			return err
		}
		state = u
		changes, err := DecideUpdateUser(u, UpdateUser{ActorID: p.UserID, Role: in.Role, Active: in.Active})
		if err != nil || len(changes) == 0 {
			seq, changed = uv, false
			return err
		}
		seq, err = s.append(ctx, meta, map[string]uint64{subj: uv}, changes)
		changed = err == nil
		return err
	})
	if err != nil {
		return state, 0, err
	}
	if !changed {
		return state, seq, nil
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
// authenticator read), and for an API token its scope and ceiling from the
// token's events. An inactive or unknown user, or a revoked, expired or
// pre-deactivation token, is refused.
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
	if p.TokenID != "" {
		// An API token's limits and life come from its aggregate too, not
		// from the row the authenticator read (which a revocation on
		// another instance may not have reached yet).
		t, _, err := s.tokens.Load(ctx, events.Subject(events.AggToken, p.TokenID))
		if err != nil {
			return p, err
		}
		if !t.Created || t.Revoked || t.UserID != u.ID || t.Expired(s.cfg.Now()) || !t.CreatedAt.After(u.DeactivatedAt) {
			return p, handlers.Errorf(handlers.Unauthenticated, "unauthenticated", "the API token is invalid, expired or revoked")
		}
		p.Project, p.Ceiling = t.ProjectID, t.Role
	}
	return p, nil
}
