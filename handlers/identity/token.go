package identity

import (
	"context"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Limits on API tokens.
const (
	MaxTokenNameLen = 100
	// MaxTokenLifetime bounds expires_at: a credential that outlives every
	// rotation policy is one nobody remembers to revoke.
	MaxTokenLifetime = 5 * 365 * 24 * time.Hour
	// TokenAddresses is how many recent client addresses a token remembers
	// (a use from any other is recorded as one from a new address).
	TokenAddresses = 16
	// TokenUseInterval is how often a use from a known address is recorded
	// (the "last used" a listing shows is at most this old).
	TokenUseInterval = time.Hour
	// TokenNewAddressesPerInterval bounds the new-address events of one
	// token per TokenUseInterval: a holder hopping addresses (an IPv6 /64
	// has plenty) must not append without end. Beyond it, uses are recorded
	// hourly like those from known addresses.
	TokenNewAddressesPerInterval = 10
)

// TokenState is an API token aggregate folded from its events.
type TokenState struct {
	Created   bool
	ID        string
	UserID    string
	Name      string
	Prefix    string
	Hash      string
	ProjectID string
	Role      authz.ProjectRole
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	Revoked   bool
	// Addresses are the most recent distinct client addresses, newest last.
	Addresses  []string
	LastUsedAt time.Time
	// RecentNew are the times of the latest new-address uses (at most
	// TokenNewAddressesPerInterval).
	RecentNew []time.Time
}

// Expired reports whether the token has expired at now.
func (t TokenState) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// cloneToken copies the slice evolve appends to (cached states are shared).
func cloneToken(t TokenState) TokenState {
	t.Addresses, t.RecentNew = slices.Clone(t.Addresses), slices.Clone(t.RecentNew)
	return t
}

// EvolveToken folds one event into token state.
func EvolveToken(t TokenState, e events.Envelope) (TokenState, error) {
	switch e.Type {
	case events.TokenCreated:
		var d events.TokenCreatedData
		if err := e.Decode(&d); err != nil {
			return t, err
		}
		t = TokenState{Created: true, ID: d.TokenID, UserID: d.UserID, Name: d.Name, Prefix: d.Prefix, Hash: d.Hash,
			ProjectID: d.ProjectID, Role: authz.ProjectRole(d.Role), CreatedAt: e.Time}
		if d.ExpiresAt != "" {
			at, err := time.Parse(time.RFC3339Nano, d.ExpiresAt)
			if err != nil {
				return t, err
			}
			t.ExpiresAt = at
		}
	case events.TokenRevoked:
		t.Revoked = true
	case events.TokenUsed:
		var d events.TokenUsedData
		if err := e.Decode(&d); err != nil {
			return t, err
		}
		t.LastUsedAt = e.Time
		t.Addresses = rememberAddress(t.Addresses, d.ClientIP)
		if d.NewAddress {
			t.RecentNew = append(t.RecentNew, e.Time)
			if len(t.RecentNew) > TokenNewAddressesPerInterval {
				t.RecentNew = t.RecentNew[1:]
			}
		}
	}
	return t, nil
}

// rememberAddress moves ip to the end of the recent addresses, dropping the
// oldest beyond TokenAddresses.
func rememberAddress(addrs []string, ip string) []string {
	addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == ip })
	addrs = append(addrs, ip)
	if len(addrs) > TokenAddresses {
		addrs = addrs[len(addrs)-TokenAddresses:]
	}
	return addrs
}

// CreateToken is the command to create an API token for a user.
type CreateToken struct {
	TokenID   string
	Owner     UserState
	Name      string
	Secret    auth.APIToken
	ProjectID string
	Role      authz.ProjectRole
	ExpiresAt time.Time // zero: never
	Now       time.Time
}

// DecideCreateToken validates and creates a token.
func DecideCreateToken(t TokenState, c CreateToken) ([]handlers.Change, error) {
	if t.Created {
		// The id is derived from an Idempotency-Key: the key created a
		// token already, whose secret was shown once and is stored nowhere.
		return nil, tokenExists(t.ID)
	}
	if !c.Owner.Registered || !c.Owner.Active {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "user not found")
	}
	name := strings.TrimSpace(c.Name)
	if name == "" || utf8.RuneCountInString(name) > MaxTokenNameLen || !handlers.PlainText(name) || strings.ContainsAny(name, "\t\r\n") {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "name must be 1 to %d characters on one line", MaxTokenNameLen)
	}
	if c.Role != "" && !authz.ValidProjectRole(string(c.Role)) {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "role must be one of viewer, editor, approver, owner")
	}
	d := events.TokenCreatedData{TokenID: c.TokenID, UserID: c.Owner.ID, Name: name, Prefix: c.Secret.Prefix,
		Hash: c.Secret.Hash, ProjectID: c.ProjectID, Role: string(c.Role)}
	if !c.ExpiresAt.IsZero() {
		if !c.ExpiresAt.After(c.Now) {
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "expires_at must be in the future")
		}
		if c.ExpiresAt.Sub(c.Now) > MaxTokenLifetime {
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "expires_at may be at most 5 years ahead")
		}
		d.ExpiresAt = c.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return []handlers.Change{{Subject: events.Subject(events.AggToken, c.TokenID), Type: events.TokenCreated, Data: d}}, nil
}

// tokenExists refuses a retried token creation: its token's secret was
// shown once and is stored nowhere, so the retry cannot answer with it.
func tokenExists(id string) error {
	return handlers.Errorf(handlers.Conflict, "token-exists",
		"this Idempotency-Key already created token %s, whose secret was shown once; revoke it and create another with a new key", id)
}

// DecideRevokeToken revokes a token; revoking it twice is a no-op. Its
// owner, or an admin who may manage service accounts, may revoke it.
func DecideRevokeToken(t TokenState, p authz.Principal) ([]handlers.Change, error) {
	if !t.Created || (t.UserID != p.UserID && !authz.Can(p, authz.ManageServiceAccounts, authz.Resource{})) {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "token not found")
	}
	if t.Revoked {
		return nil, nil
	}
	return []handlers.Change{{Subject: events.Subject(events.AggToken, t.ID), Type: events.TokenRevoked,
		Data: events.TokenRevokedData{TokenID: t.ID, UserID: t.UserID, Reason: "revoked"}}}, nil
}

// DecideTokenUse records a use from a new address (at most
// TokenNewAddressesPerInterval an interval), or the first use after
// TokenUseInterval; nothing otherwise.
func DecideTokenUse(t TokenState, clientIP string, now time.Time) []handlers.Change {
	if !t.Created || t.Revoked || clientIP == "" {
		return nil
	}
	known := slices.Contains(t.Addresses, clientIP)
	if !known && len(t.RecentNew) == TokenNewAddressesPerInterval && now.Sub(t.RecentNew[0]) < TokenUseInterval {
		known = true // too many new addresses lately: record hourly only
	}
	if known && now.Sub(t.LastUsedAt) < TokenUseInterval {
		return nil
	}
	return []handlers.Change{{Subject: events.Subject(events.AggToken, t.ID), Type: events.TokenUsed,
		Data: events.TokenUsedData{TokenID: t.ID, UserID: t.UserID, ClientIP: clientIP, NewAddress: !known}}}
}

// CreateTokenInput is a request for a new API token.
type CreateTokenInput struct {
	Name string
	// ProjectID scopes the token to one project the caller may read
	// (resolved and checked by the caller); "" for every project.
	ProjectID string
	Role      authz.ProjectRole
	ExpiresAt time.Time
	// ServiceAccount, when set, is the service account the token is for
	// (admins only); otherwise the token is the caller's own.
	ServiceAccount string
}

// CreateToken creates an API token and returns it with its secret, which
// is never stored and cannot be shown again.
func (s *Service) CreateToken(ctx context.Context, meta events.Meta, p authz.Principal, in CreateTokenInput) (TokenState, string, uint64, error) {
	p, err := s.Actor(ctx, p)
	if err != nil {
		return TokenState{}, "", 0, err
	}
	owner := p.UserID
	if in.ServiceAccount != "" {
		if !authz.Can(p, authz.ManageServiceAccounts, authz.Resource{}) {
			return TokenState{}, "", 0, handlers.Errorf(handlers.Forbidden, "forbidden", "only admins, signed in, create tokens for service accounts")
		}
		owner = in.ServiceAccount
	} else if !authz.Can(p, authz.ManageTokens, authz.Resource{}) {
		return TokenState{}, "", 0, handlers.Errorf(handlers.Forbidden, "forbidden", "API tokens are managed from a signed-in session, not with a token")
	}
	if !events.ValidToken(owner) {
		return TokenState{}, "", 0, handlers.Errorf(handlers.NotFound, "not-found", "service account not found")
	}
	now := s.cfg.Now()
	meta.Time = now
	id := handlers.IDFor(meta, "token")
	secret := auth.NewAPIToken()
	t, seq, err := s.tokens.Update(ctx, events.Subject(events.AggToken, id), meta,
		func(t TokenState, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if replay {
				// An earlier attempt of this command stored its token, with
				// another secret (shown once, stored nowhere).
				return nil, nil, tokenExists(id)
			}
			u, _, err := s.users.Load(ctx, events.Subject(events.AggUser, owner))
			if err != nil {
				return nil, nil, err
			}
			if in.ServiceAccount != "" && u.Kind != events.KindServiceAccount {
				return nil, nil, handlers.Errorf(handlers.NotFound, "not-found", "service account not found")
			}
			changes, err := DecideCreateToken(t, CreateToken{TokenID: id, Owner: u, Name: in.Name, Secret: secret,
				ProjectID: in.ProjectID, Role: in.Role, ExpiresAt: in.ExpiresAt, Now: now})
			return changes, nil, err
		})
	if err != nil {
		return TokenState{}, "", 0, err
	}
	return t, secret.Secret, seq, nil
}

// RevokeToken revokes a token at once. seq is the revocation, or the
// token's version when it was revoked already, so the caller can wait until
// the revocation is in force before it confirms it.
func (s *Service) RevokeToken(ctx context.Context, meta events.Meta, p authz.Principal, tokenID string) (uint64, error) {
	p, err := s.Actor(ctx, p)
	if err != nil {
		return 0, err
	}
	if !authz.Can(p, authz.ManageTokens, authz.Resource{}) {
		return 0, handlers.Errorf(handlers.Forbidden, "forbidden", "API tokens are managed from a signed-in session, not with a token")
	}
	if !events.ValidToken(tokenID) {
		return 0, handlers.Errorf(handlers.NotFound, "not-found", "token not found")
	}
	meta.Now = s.cfg.Now
	_, seq, err := s.tokens.Update(ctx, events.Subject(events.AggToken, tokenID), meta,
		func(t TokenState, v uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
			changes, err := DecideRevokeToken(t, p)
			return changes, nil, err
		})
	if err != nil {
		return 0, err
	}
	if seq == 0 {
		_, seq, err = s.tokens.Load(ctx, events.Subject(events.AggToken, tokenID))
	}
	return seq, err
}

// NoteTokenUse records, when DecideTokenUse says so, that a token was used
// from clientIP. The authenticator calls it only when the read model
// suggests the use is worth recording, so most requests append nothing.
func (s *Service) NoteTokenUse(ctx context.Context, tokenID, clientIP string) error {
	if !events.ValidToken(tokenID) {
		return nil
	}
	now := s.cfg.Now()
	subj := events.Subject(events.AggToken, tokenID)
	meta := events.Meta{Time: now}
	return handlers.Retry(ctx, func() error {
		t, v, err := s.tokens.Load(ctx, subj)
		if err != nil {
			return err
		}
		changes := DecideTokenUse(t, clientIP, now)
		if len(changes) == 0 {
			return nil
		}
		meta.Actor = events.Actor{Kind: events.ActorUser, ID: t.UserID}
		_, err = s.append(ctx, meta, map[string]uint64{subj: v}, changes)
		return err
	})
}

// Token returns a token's state from the event store.
func (s *Service) Token(ctx context.Context, tokenID string) (TokenState, error) {
	if !events.ValidToken(tokenID) {
		return TokenState{}, nil
	}
	t, _, err := s.tokens.Load(ctx, events.Subject(events.AggToken, tokenID))
	return t, err
}

// CreateServiceAccount creates a service account: a user with a global role
// that acts only through API tokens (no e-mail, no password, no login).
// Admins add it to projects like any user.
func (s *Service) CreateServiceAccount(ctx context.Context, meta events.Meta, p authz.Principal, name string, role authz.Role) (UserState, uint64, error) {
	p, err := s.Actor(ctx, p)
	if err != nil {
		return UserState{}, 0, err
	}
	if !authz.Can(p, authz.ManageServiceAccounts, authz.Resource{}) {
		return UserState{}, 0, handlers.Errorf(handlers.Forbidden, "forbidden", "only admins, signed in, create service accounts")
	}
	if role == authz.RoleAdmin {
		return UserState{}, 0, handlers.Errorf(handlers.Invalid, "validation-failed", "a service account's role is viewer or member")
	}
	meta.Now = s.cfg.Now
	id := handlers.IDFor(meta, "service-account")
	var existing uint64
	u, seq, err := s.users.Update(ctx, events.Subject(events.AggUser, id), meta,
		func(u UserState, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if replay || (u.Registered && meta.IdempotencyKey != "") {
				existing = v
				return nil, nil, nil // this very command already ran
			}
			changes, err := DecideCreateServiceAccount(u, id, name, role)
			return changes, nil, err
		})
	if err != nil {
		return UserState{}, 0, err
	}
	return u, max(seq, existing), nil
}

// DecideCreateServiceAccount creates a service account user.
func DecideCreateServiceAccount(u UserState, id, name string, role authz.Role) ([]handlers.Change, error) {
	if u.Registered {
		return nil, handlers.Errorf(handlers.Conflict, "user-exists", "user %s already exists", id)
	}
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > MaxNameLen || !handlers.PlainText(name) {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "name must be 1 to %d characters", MaxNameLen)
	}
	if role != authz.RoleViewer && role != authz.RoleMember {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "a service account's role is viewer or member")
	}
	return []handlers.Change{{Subject: events.Subject(events.AggUser, id), Type: events.UserRegistered,
		Data: events.UserRegisteredData{UserID: id, Name: name, Role: string(role), Source: "service-account",
			Kind: events.KindServiceAccount}}}, nil
}

// IssueJobToken creates the API token a job's attempt runs with (its
// MLFLOW_TRACKING_TOKEN): owned by the job's submitter, scoped to the job's
// project, capped at editor, expiring at expiresAt as a backstop to its
// revocation when the attempt ends (RevokeJobToken). tokenID is the one the
// claim recorded; the secret is returned once, to the runner, and stored
// nowhere.
func (s *Service) IssueJobToken(ctx context.Context, meta events.Meta, owner, projectID, tokenID, name string, expiresAt time.Time) (string, error) {
	if !events.ValidToken(owner) || !events.ValidToken(tokenID) {
		return "", handlers.Errorf(handlers.NotFound, "not-found", "user not found")
	}
	now := s.cfg.Now()
	meta.Time = now
	secret := auth.NewAPIToken()
	_, _, err := s.tokens.Update(ctx, events.Subject(events.AggToken, tokenID), meta,
		func(t TokenState, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if replay {
				return nil, nil, tokenExists(tokenID)
			}
			u, _, err := s.users.Load(ctx, events.Subject(events.AggUser, owner))
			if err != nil {
				return nil, nil, err
			}
			changes, err := DecideCreateToken(t, CreateToken{TokenID: tokenID, Owner: u, Name: name, Secret: secret,
				ProjectID: projectID, Role: authz.ProjectEditor, ExpiresAt: expiresAt, Now: now})
			return changes, nil, err
		})
	if err != nil {
		return "", err
	}
	return secret.Secret, nil
}

// RevokeJobToken revokes the token of a job's attempt once the attempt has
// ended (a no-op when it is revoked already or was never issued).
func (s *Service) RevokeJobToken(ctx context.Context, meta events.Meta, tokenID string) error {
	if !events.ValidToken(tokenID) {
		return nil
	}
	meta.Now = s.cfg.Now
	_, _, err := s.tokens.Update(ctx, events.Subject(events.AggToken, tokenID), meta,
		func(t TokenState, _ uint64, _ bool) ([]handlers.Change, map[string]uint64, error) {
			if !t.Created || t.Revoked {
				return nil, nil, nil
			}
			return []handlers.Change{{Subject: events.Subject(events.AggToken, tokenID), Type: events.TokenRevoked,
				Data: events.TokenRevokedData{TokenID: tokenID, UserID: t.UserID, Reason: "job attempt ended"}}}, nil, nil
		})
	return err
}
