package identity_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/identity"
)

const tid = "44444444-4444-4444-8444-444444444444"

var tokSubj = events.Subject(events.AggToken, tid)

func tokenCreated(t *testing.T, at time.Time, owner string) events.Envelope {
	return ev(t, at, tokSubj, events.TokenCreated, events.TokenCreatedData{TokenID: tid, UserID: owner, Name: "ci", Prefix: "mae_ABCDEFGH", Hash: "h"})
}

func tokenUsed(t *testing.T, at time.Time, ip string) events.Envelope {
	return ev(t, at, tokSubj, events.TokenUsed, events.TokenUsedData{TokenID: tid, UserID: uid, ClientIP: ip})
}

func wantKind(t *testing.T, err error, kind handlers.Kind, code string) {
	t.Helper()
	e, ok := handlers.AsError(err)
	if !ok || e.Kind != kind || e.Code != code {
		t.Fatalf("error = %v, want kind %d code %s", err, kind, code)
	}
}

func TestDecideCreateToken(t *testing.T) {
	owner := fold(t, identity.EvolveUser, []events.Envelope{registered(t, t0, uid, authz.RoleMember)})
	secret := auth.NewAPIToken()
	base := identity.CreateToken{TokenID: tid, Owner: owner, Name: " ci ", Secret: secret, Now: t0}

	changes, err := identity.DecideCreateToken(identity.TokenState{}, base)
	if err != nil || len(changes) != 1 {
		t.Fatalf("create = %v, %v", changes, err)
	}
	d := changes[0].Data.(events.TokenCreatedData)
	if changes[0].Subject != tokSubj || d.Name != "ci" || d.Hash != secret.Hash || d.Prefix != secret.Prefix || d.UserID != uid || d.ExpiresAt != "" {
		t.Fatalf("created = %+v", d)
	}
	if strings.Contains(fmt.Sprint(d), secret.Secret) {
		t.Fatal("the event carries the secret")
	}
	expiring := base
	expiring.ExpiresAt = t0.Add(time.Hour)
	if changes, err := identity.DecideCreateToken(identity.TokenState{}, expiring); err != nil || changes[0].Data.(events.TokenCreatedData).ExpiresAt != "2025-01-01T13:00:00Z" {
		t.Fatalf("expiring = %v, %v", changes, err)
	}

	for name, tc := range map[string]struct {
		edit func(*identity.CreateToken)
		code string
	}{
		"empty name":     {func(c *identity.CreateToken) { c.Name = "  " }, "validation-failed"},
		"long name":      {func(c *identity.CreateToken) { c.Name = strings.Repeat("é", identity.MaxTokenNameLen+1) }, "validation-failed"},
		"control chars":  {func(c *identity.CreateToken) { c.Name = "a\nb" }, "validation-failed"},
		"unknown role":   {func(c *identity.CreateToken) { c.Role = "admin" }, "validation-failed"},
		"expired":        {func(c *identity.CreateToken) { c.ExpiresAt = t0 }, "validation-failed"},
		"too long lived": {func(c *identity.CreateToken) { c.ExpiresAt = t0.Add(identity.MaxTokenLifetime + time.Second) }, "validation-failed"},
		"no owner":       {func(c *identity.CreateToken) { c.Owner = identity.UserState{} }, "not-found"},
	} {
		t.Run(name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			_, err := identity.DecideCreateToken(identity.TokenState{}, c)
			if e, ok := handlers.AsError(err); !ok || e.Code != tc.code {
				t.Fatalf("error = %v, want %s", err, tc.code)
			}
		})
	}
	inactive := fold(t, identity.EvolveUser, []events.Envelope{registered(t, t0, uid, authz.RoleMember),
		ev(t, t0, userSubj, events.UserDeactivated, events.UserActivationData{UserID: uid})})
	c := base
	c.Owner = inactive
	_, err = identity.DecideCreateToken(identity.TokenState{}, c)
	wantKind(t, err, handlers.NotFound, "not-found")

	existing := fold(t, identity.EvolveToken, []events.Envelope{tokenCreated(t, t0, uid)})
	_, err = identity.DecideCreateToken(existing, base)
	wantKind(t, err, handlers.Conflict, "token-exists")
}

func TestDecideRevokeToken(t *testing.T) {
	tok := fold(t, identity.EvolveToken, []events.Envelope{tokenCreated(t, t0, uid)})
	owner := authz.Principal{UserID: uid, Role: authz.RoleMember}
	stranger := authz.Principal{UserID: admin, Role: authz.RoleMember}
	admins := authz.Principal{UserID: admin, Role: authz.RoleAdmin}

	if _, err := identity.DecideRevokeToken(identity.TokenState{}, owner); err == nil {
		t.Fatal("revoked a token that does not exist")
	}
	_, err := identity.DecideRevokeToken(tok, stranger)
	wantKind(t, err, handlers.NotFound, "not-found")
	for _, p := range []authz.Principal{owner, admins} {
		changes, err := identity.DecideRevokeToken(tok, p)
		if err != nil || len(changes) != 1 || changes[0].Type != events.TokenRevoked {
			t.Fatalf("revoke by %s = %v, %v", p.Role, changes, err)
		}
	}
	revoked := fold(t, identity.EvolveToken, []events.Envelope{tokenCreated(t, t0, uid),
		ev(t, t0, tokSubj, events.TokenRevoked, events.TokenRevokedData{TokenID: tid, UserID: uid})})
	if changes, err := identity.DecideRevokeToken(revoked, owner); err != nil || len(changes) != 0 {
		t.Fatalf("second revocation = %v, %v; want a no-op", changes, err)
	}
}

func TestDecideTokenUse(t *testing.T) {
	given := []events.Envelope{tokenCreated(t, t0, uid)}
	tok := fold(t, identity.EvolveToken, given)
	// First use: a new address.
	ch := identity.DecideTokenUse(tok, "10.0.0.1", t0)
	if len(ch) != 1 || !ch[0].Data.(events.TokenUsedData).NewAddress {
		t.Fatalf("first use = %v", ch)
	}
	given = append(given, tokenUsed(t, t0, "10.0.0.1"))
	tok = fold(t, identity.EvolveToken, given)
	if ch := identity.DecideTokenUse(tok, "10.0.0.1", t0.Add(identity.TokenUseInterval-time.Second)); len(ch) != 0 {
		t.Fatalf("a known address within the interval recorded %v", ch)
	}
	if ch := identity.DecideTokenUse(tok, "10.0.0.1", t0.Add(identity.TokenUseInterval)); len(ch) != 1 || ch[0].Data.(events.TokenUsedData).NewAddress {
		t.Fatalf("a known address after the interval = %v", ch)
	}
	if ch := identity.DecideTokenUse(tok, "10.0.0.2", t0); len(ch) != 1 || !ch[0].Data.(events.TokenUsedData).NewAddress {
		t.Fatalf("another address = %v", ch)
	}
	// The remembered addresses are bounded; the oldest goes first.
	for i := range identity.TokenAddresses + 5 {
		given = append(given, tokenUsed(t, t0, fmt.Sprintf("10.1.0.%d", i)))
	}
	tok = fold(t, identity.EvolveToken, given)
	if len(tok.Addresses) != identity.TokenAddresses || tok.Addresses[len(tok.Addresses)-1] != fmt.Sprintf("10.1.0.%d", identity.TokenAddresses+4) {
		t.Fatalf("addresses = %v", tok.Addresses)
	}
	// New addresses are recorded at most TokenNewAddressesPerInterval times an
	// interval; then hourly, like known ones.
	hop := []events.Envelope{tokenCreated(t, t0, uid)}
	for i := range identity.TokenNewAddressesPerInterval {
		hop = append(hop, ev(t, t0.Add(time.Duration(i)*time.Minute), tokSubj, events.TokenUsed,
			events.TokenUsedData{TokenID: tid, UserID: uid, ClientIP: fmt.Sprintf("10.2.0.%d", i), NewAddress: true}))
	}
	hopper := fold(t, identity.EvolveToken, hop)
	if ch := identity.DecideTokenUse(hopper, "10.3.0.1", t0.Add(30*time.Minute)); len(ch) != 0 {
		t.Fatalf("an address hopper's 11th new address within the hour recorded %v", ch)
	}
	if ch := identity.DecideTokenUse(hopper, "10.3.0.1", t0.Add(identity.TokenUseInterval+10*time.Minute)); len(ch) != 1 {
		t.Fatalf("a new address after the interval = %v", ch)
	}
	revoked := fold(t, identity.EvolveToken, append(given, ev(t, t0, tokSubj, events.TokenRevoked, events.TokenRevokedData{TokenID: tid})))
	if ch := identity.DecideTokenUse(revoked, "10.9.9.9", t0); len(ch) != 0 {
		t.Fatalf("a revoked token's use recorded %v", ch)
	}
}

func TestDecideCreateServiceAccount(t *testing.T) {
	changes, err := identity.DecideCreateServiceAccount(identity.UserState{}, uid, "deployer", authz.RoleMember)
	if err != nil || len(changes) != 1 {
		t.Fatalf("create = %v, %v", changes, err)
	}
	d := changes[0].Data.(events.UserRegisteredData)
	if d.Kind != events.KindServiceAccount || d.Email != "" || d.PasswordHash != "" {
		t.Fatalf("service account = %+v", d)
	}
	u := fold(t, identity.EvolveUser, []events.Envelope{ev(t, t0, userSubj, events.UserRegistered, d)})
	if u.Kind != events.KindServiceAccount || !u.Active {
		t.Fatalf("folded = %+v", u)
	}
	role := authz.RoleAdmin
	_, err = identity.DecideUpdateUser(u, identity.UpdateUser{ActorID: admin, Role: &role})
	wantKind(t, err, handlers.Invalid, "validation-failed")
	_, err = identity.DecideCreateServiceAccount(identity.UserState{}, uid, "root", authz.RoleAdmin)
	wantKind(t, err, handlers.Invalid, "validation-failed")
	_, err = identity.DecideCreateServiceAccount(u, uid, "again", authz.RoleMember)
	wantKind(t, err, handlers.Conflict, "user-exists")
}
