package identity_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/identity"
)

// Deciders are table-tested: given events (folded with the same Evolve
// functions replay uses), when a command, then events or a typed error.

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	uid   = "11111111-1111-4111-8111-111111111111"
	admin = "22222222-2222-4222-8222-222222222222"
	sid   = "33333333-3333-4333-8333-333333333333"
	email = "ada@example.com"
)

var (
	userSubj    = events.Subject(events.AggUser, uid)
	sessSubj    = events.Subject(events.AggSession, sid)
	emailSubj   = events.ReservationSubject(events.AggEmail, email)
	defaultSess = identity.DefaultSessionPolicy()
)

// ev is a stored event of type typ at time at.
func ev(t *testing.T, at time.Time, subject, typ string, data any) events.Envelope {
	t.Helper()
	e, err := events.New(events.Meta{Actor: events.SystemActor, Time: at}, subject, typ, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func fold[S any](t *testing.T, evolve handlers.Evolve[S], evs []events.Envelope) S {
	t.Helper()
	var s S
	for i, e := range evs {
		e.Sequence = uint64(i + 1)
		var err error
		if s, err = evolve(s, e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Given-event builders.

func registered(t *testing.T, at time.Time, id string, role authz.Role) events.Envelope {
	return ev(t, at, events.Subject(events.AggUser, id), events.UserRegistered, events.UserRegisteredData{
		UserID: id, Email: email, Name: "Ada", Role: string(role), PasswordHash: "$argon2id$x", Source: "test"})
}

func roleChanged(t *testing.T, at time.Time, from, to authz.Role) events.Envelope {
	return ev(t, at, userSubj, events.UserRoleChanged, events.UserRoleChangedData{UserID: uid, From: string(from), To: string(to)})
}

func deactivated(t *testing.T, at time.Time) events.Envelope {
	return ev(t, at, userSubj, events.UserDeactivated, events.UserActivationData{UserID: uid})
}

func reactivated(t *testing.T, at time.Time) events.Envelope {
	return ev(t, at, userSubj, events.UserReactivated, events.UserActivationData{UserID: uid})
}

func loginFailed(t *testing.T, at time.Time) events.Envelope {
	return ev(t, at, userSubj, events.UserLoginFailed, events.UserLoginFailedData{UserID: uid, Reason: "wrong_password"})
}

func failuresReset(t *testing.T, at time.Time) events.Envelope {
	return ev(t, at, userSubj, events.UserLoginFailuresReset, events.UserLoginFailuresResetData{UserID: uid})
}

func sessionStarted(t *testing.T, at time.Time) events.Envelope {
	return ev(t, at, sessSubj, events.SessionStarted, events.SessionStartedData{SessionID: sid, UserID: uid})
}

func sessionRefreshed(t *testing.T, at time.Time, gen int) events.Envelope {
	return ev(t, at, sessSubj, events.SessionRefreshed, events.SessionRefreshedData{SessionID: sid, UserID: uid, Generation: gen})
}

func sessionRevoked(t *testing.T, at time.Time, reason string) events.Envelope {
	return ev(t, at, sessSubj, events.SessionRevoked, events.SessionRevokedData{SessionID: sid, UserID: uid, Reason: reason})
}

func emailReserved(t *testing.T, userID string) events.Envelope {
	return ev(t, t0, emailSubj, events.EmailReserved, events.EmailReservedData{Email: email, UserID: userID})
}

// wantErr is an expected typed failure; the zero value means success.
type wantErr struct {
	kind handlers.Kind
	code string
}

func checkErr(t *testing.T, err error, want wantErr) {
	t.Helper()
	if want.kind == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	e, ok := handlers.AsError(err)
	if !ok {
		t.Fatalf("error = %v, want %d/%s", err, want.kind, want.code)
	}
	if e.Kind != want.kind || e.Code != want.code {
		t.Fatalf("error = kind %d code %q (%s), want kind %d code %q", e.Kind, e.Code, e.Detail, want.kind, want.code)
	}
}

func checkChanges(t *testing.T, got, want []handlers.Change) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got  %+v\n want %+v", got, want)
	}
}

func role(r authz.Role) *authz.Role { return &r }
func boolp(b bool) *bool            { return &b }

func TestDecideRegister(t *testing.T) {
	t.Parallel()
	ok := func(name string) []handlers.Change {
		return []handlers.Change{
			{Subject: emailSubj, Type: events.EmailReserved, Data: events.EmailReservedData{Email: email, UserID: uid}},
			{Subject: userSubj, Type: events.UserRegistered, Data: events.UserRegisteredData{UserID: uid, Email: email,
				Name: name, Role: "viewer", PasswordHash: "hash", Source: "self-registration"}},
		}
	}
	invalid := wantErr{handlers.Invalid, "validation-failed"}
	cases := []struct {
		name       string
		emailGiven []events.Envelope
		userGiven  []events.Envelope
		cmdName    string
		role       authz.Role
		want       []handlers.Change
		err        wantErr
	}{
		{name: "fresh", cmdName: "Ada", role: authz.RoleViewer, want: ok("Ada")},
		{name: "name trimmed", cmdName: "  Ada  ", role: authz.RoleViewer, want: ok("Ada")},
		{name: "name of 200 runes", cmdName: strings.Repeat("é", 200), role: authz.RoleViewer, want: ok(strings.Repeat("é", 200))},
		{name: "email taken", emailGiven: []events.Envelope{emailReserved(t, admin)}, cmdName: "Ada", role: authz.RoleViewer,
			err: wantErr{handlers.Conflict, "email-taken"}},
		{name: "user exists", userGiven: []events.Envelope{registered(t, t0, uid, authz.RoleViewer)}, cmdName: "Ada",
			role: authz.RoleViewer, err: wantErr{handlers.Conflict, "user-exists"}},
		{name: "empty name", cmdName: "", role: authz.RoleViewer, err: invalid},
		{name: "blank name", cmdName: " \t ", role: authz.RoleViewer, err: invalid},
		{name: "name of 201 runes", cmdName: strings.Repeat("é", 201), role: authz.RoleViewer, err: invalid},
		{name: "name not UTF-8", cmdName: "Ada\xff", role: authz.RoleViewer, err: invalid},
		{name: "unknown role", cmdName: "Ada", role: "superuser", err: invalid},
		{name: "empty role", cmdName: "Ada", role: "", err: invalid},
		{name: "role case matters", cmdName: "Ada", role: "Admin", err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			es := fold(t, identity.EvolveEmail, tc.emailGiven)
			us := fold(t, identity.EvolveUser, tc.userGiven)
			got, err := identity.DecideRegister(es, us, identity.Register{UserID: uid, Email: email, Name: tc.cmdName,
				Role: tc.role, PasswordHash: "hash", Source: "self-registration"})
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideRegisterAdminRole(t *testing.T) {
	t.Parallel()
	got, err := identity.DecideRegister(identity.EmailState{}, identity.UserState{}, identity.Register{
		UserID: uid, Email: email, Name: "Root", Role: authz.RoleAdmin, Source: "bootstrap"})
	if err != nil {
		t.Fatal(err)
	}
	// Replaying the decided events yields the state the next command sees.
	var evs []events.Envelope
	for _, c := range got {
		evs = append(evs, ev(t, t0, c.Subject, c.Type, c.Data))
	}
	us := fold(t, identity.EvolveUser, evs[1:])
	es := fold(t, identity.EvolveEmail, evs[:1])
	if !us.Registered || !us.Active || us.Role != authz.RoleAdmin || us.ID != uid || !us.CreatedAt.Equal(t0) {
		t.Fatalf("user state = %+v", us)
	}
	if !es.Taken || es.UserID != uid {
		t.Fatalf("email state = %+v", es)
	}
}

func TestDecideUpdateUser(t *testing.T) {
	t.Parallel()
	member := []events.Envelope{registered(t, t0, uid, authz.RoleMember)}
	inactive := []events.Envelope{registered(t, t0, uid, authz.RoleMember), deactivated(t, t0.Add(time.Hour))}
	selfModification := wantErr{handlers.Conflict, "self-modification"}
	cases := []struct {
		name  string
		given []events.Envelope
		cmd   identity.UpdateUser
		want  []handlers.Change
		err   wantErr
	}{
		{name: "not found", cmd: identity.UpdateUser{ActorID: admin, Role: role(authz.RoleAdmin)},
			err: wantErr{handlers.NotFound, "not-found"}},
		{name: "promote", given: member, cmd: identity.UpdateUser{ActorID: admin, Role: role(authz.RoleAdmin)},
			want: []handlers.Change{{Subject: userSubj, Type: events.UserRoleChanged,
				Data: events.UserRoleChangedData{UserID: uid, From: "member", To: "admin"}}}},
		{name: "demote after earlier change names the current role as from",
			given: append(append([]events.Envelope{}, member...), roleChanged(t, t0, authz.RoleMember, authz.RoleAdmin)),
			cmd:   identity.UpdateUser{ActorID: admin, Role: role(authz.RoleViewer)},
			want: []handlers.Change{{Subject: userSubj, Type: events.UserRoleChanged,
				Data: events.UserRoleChangedData{UserID: uid, From: "admin", To: "viewer"}}}},
		{name: "unknown role", given: member, cmd: identity.UpdateUser{ActorID: admin, Role: role("root")},
			err: wantErr{handlers.Invalid, "validation-failed"}},
		{name: "deactivate", given: member, cmd: identity.UpdateUser{ActorID: admin, Active: boolp(false)},
			want: []handlers.Change{{Subject: userSubj, Type: events.UserDeactivated, Data: events.UserActivationData{UserID: uid}}}},
		{name: "reactivate", given: inactive, cmd: identity.UpdateUser{ActorID: admin, Active: boolp(true)},
			want: []handlers.Change{{Subject: userSubj, Type: events.UserReactivated, Data: events.UserActivationData{UserID: uid}}}},
		{name: "role and activation together", given: member,
			cmd: identity.UpdateUser{ActorID: admin, Role: role(authz.RoleViewer), Active: boolp(false)},
			want: []handlers.Change{
				{Subject: userSubj, Type: events.UserRoleChanged, Data: events.UserRoleChangedData{UserID: uid, From: "member", To: "viewer"}},
				{Subject: userSubj, Type: events.UserDeactivated, Data: events.UserActivationData{UserID: uid}},
			}},
		{name: "no-op: same role", given: member, cmd: identity.UpdateUser{ActorID: admin, Role: role(authz.RoleMember)}},
		{name: "no-op: already active", given: member, cmd: identity.UpdateUser{ActorID: admin, Active: boolp(true)}},
		{name: "no-op: already inactive", given: inactive, cmd: identity.UpdateUser{ActorID: admin, Active: boolp(false)}},
		{name: "no-op: empty patch", given: member, cmd: identity.UpdateUser{ActorID: admin}},
		{name: "self-demotion refused", given: []events.Envelope{registered(t, t0, uid, authz.RoleAdmin)},
			cmd: identity.UpdateUser{ActorID: uid, Role: role(authz.RoleMember)}, err: selfModification},
		{name: "self-deactivation refused", given: []events.Envelope{registered(t, t0, uid, authz.RoleAdmin)},
			cmd: identity.UpdateUser{ActorID: uid, Active: boolp(false)}, err: selfModification},
		{name: "self no-op allowed", given: []events.Envelope{registered(t, t0, uid, authz.RoleAdmin)},
			cmd: identity.UpdateUser{ActorID: uid, Role: role(authz.RoleAdmin), Active: boolp(true)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.DecideUpdateUser(fold(t, identity.EvolveUser, tc.given), tc.cmd)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestEvolveUserActivation(t *testing.T) {
	t.Parallel()
	at := t0.Add(time.Hour)
	s := fold(t, identity.EvolveUser, []events.Envelope{registered(t, t0, uid, authz.RoleMember), deactivated(t, at)})
	if s.Active || !s.DeactivatedAt.Equal(at) || !s.UpdatedAt.Equal(at) {
		t.Fatalf("after deactivation: %+v", s)
	}
	s = fold(t, identity.EvolveUser, []events.Envelope{registered(t, t0, uid, authz.RoleMember), deactivated(t, at),
		reactivated(t, at.Add(time.Hour)), roleChanged(t, at.Add(2*time.Hour), authz.RoleMember, authz.RoleAdmin)})
	if !s.Active || !s.DeactivatedAt.Equal(at) || s.Role != authz.RoleAdmin || !s.UpdatedAt.Equal(at.Add(2*time.Hour)) {
		t.Fatalf("after reactivation and role change: %+v", s)
	}
}

func TestDecideLoginFailure(t *testing.T) {
	t.Parallel()
	active := fold(t, identity.EvolveUser, []events.Envelope{registered(t, t0, uid, authz.RoleMember)})
	inactive := fold(t, identity.EvolveUser, []events.Envelope{registered(t, t0, uid, authz.RoleMember), deactivated(t, t0)})
	for _, tc := range []struct {
		s      identity.UserState
		reason string
	}{{active, "wrong_password"}, {inactive, "inactive"}} {
		got := identity.DecideLoginFailure(tc.s, "10.0.0.1")
		want := handlers.Change{Subject: userSubj, Type: events.UserLoginFailed,
			Data: events.UserLoginFailedData{UserID: uid, ClientIP: "10.0.0.1", Reason: tc.reason}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
}

func TestDecideLogin(t *testing.T) {
	t.Parallel()
	started := handlers.Change{Subject: sessSubj, Type: events.SessionStarted,
		Data: events.SessionStartedData{SessionID: sid, UserID: uid, ClientIP: "10.0.0.1", UserAgent: "ua"}}
	reset := handlers.Change{Subject: userSubj, Type: events.UserLoginFailuresReset, Data: events.UserLoginFailuresResetData{UserID: uid}}
	cases := []struct {
		name    string
		given   []events.Envelope
		want    []handlers.Change
		wantErr bool
	}{
		{name: "clean", given: []events.Envelope{registered(t, t0, uid, authz.RoleMember)}, want: []handlers.Change{started}},
		{name: "after failures resets the streak",
			given: []events.Envelope{registered(t, t0, uid, authz.RoleMember), loginFailed(t, t0), loginFailed(t, t0)},
			want:  []handlers.Change{started, reset}},
		{name: "streak already reset",
			given: []events.Envelope{registered(t, t0, uid, authz.RoleMember), loginFailed(t, t0), failuresReset(t, t0)},
			want:  []handlers.Change{started}},
		{name: "inactive", given: []events.Envelope{registered(t, t0, uid, authz.RoleMember), deactivated(t, t0)}, wantErr: true},
		{name: "unregistered", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.DecideLogin(fold(t, identity.EvolveUser, tc.given), sid, "10.0.0.1", "ua")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			checkChanges(t, got, tc.want)
		})
	}
}

func TestThrottleLockedUntil(t *testing.T) {
	t.Parallel()
	s := time.Second
	policies := []struct {
		name string
		p    identity.ThrottlePolicy
		// want[n] is the back-off after n consecutive failures (0 = none).
		want []time.Duration
	}{
		{"default", identity.DefaultThrottle(),
			[]time.Duration{0, 0, 0, 0, 0, 1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 128 * s}},
		{"capped at 10s", identity.ThrottlePolicy{FreeFailures: 5, Base: s, Max: 10 * s},
			[]time.Duration{0, 0, 0, 0, 0, 1 * s, 2 * s, 4 * s, 8 * s, 10 * s, 10 * s, 10 * s, 10 * s}},
		{"cap below base", identity.ThrottlePolicy{FreeFailures: 5, Base: 3 * s, Max: 2 * s},
			[]time.Duration{0, 0, 0, 0, 0, 2 * s, 2 * s, 2 * s, 2 * s, 2 * s, 2 * s, 2 * s, 2 * s}},
	}
	for _, pc := range policies {
		t.Run(pc.name, func(t *testing.T) {
			for n, want := range pc.want {
				// Fold n failures, one minute apart; the back-off counts from the last.
				given := []events.Envelope{registered(t, t0, uid, authz.RoleMember)}
				for i := range n {
					given = append(given, loginFailed(t, t0.Add(time.Duration(i+1)*time.Minute)))
				}
				u := fold(t, identity.EvolveUser, given)
				if u.Failures != n {
					t.Fatalf("folded %d failures into Failures=%d", n, u.Failures)
				}
				got := pc.p.LockedUntil(u)
				if want == 0 {
					if !got.IsZero() {
						t.Errorf("%d failures: locked until %v, want not locked", n, got)
					}
					continue
				}
				last := t0.Add(time.Duration(n) * time.Minute)
				if !got.Equal(last.Add(want)) {
					t.Errorf("%d failures: locked for %v, want %v", n, got.Sub(last), want)
				}
			}
		})
	}
	// A huge streak stays at the cap (no overflow) and a reset unlocks.
	u := identity.UserState{Registered: true, Failures: 1 << 20, LastFailure: t0}
	if got := identity.DefaultThrottle().LockedUntil(u); !got.Equal(t0.Add(15 * time.Minute)) {
		t.Fatalf("huge streak locked until %v", got)
	}
	given := []events.Envelope{registered(t, t0, uid, authz.RoleMember)}
	for range 8 {
		given = append(given, loginFailed(t, t0))
	}
	given = append(given, failuresReset(t, t0))
	if got := identity.DefaultThrottle().LockedUntil(fold(t, identity.EvolveUser, given)); !got.IsZero() {
		t.Fatalf("after a reset locked until %v", got)
	}
}

func TestDecideRefresh(t *testing.T) {
	t.Parallel()
	p := identity.SessionPolicy{Idle: 2 * time.Hour, Absolute: 10 * time.Hour}
	user := []events.Envelope{registered(t, t0.Add(-time.Hour), uid, authz.RoleMember)}
	session := []events.Envelope{sessionStarted(t, t0)}
	refreshedTo := func(gen int) []handlers.Change {
		return []handlers.Change{{Subject: sessSubj, Type: events.SessionRefreshed,
			Data: events.SessionRefreshedData{SessionID: sid, UserID: uid, Generation: gen}}}
	}
	revokedReuse := []handlers.Change{{Subject: sessSubj, Type: events.SessionRevoked,
		Data: events.SessionRevokedData{SessionID: sid, UserID: uid, Reason: events.RevokedTokenReuse}}}
	invalid := wantErr{handlers.Unauthenticated, "invalid-token"}
	cat := func(lists ...[]events.Envelope) []events.Envelope {
		var out []events.Envelope
		for _, l := range lists {
			out = append(out, l...)
		}
		return out
	}
	cases := []struct {
		name        string
		userGiven   []events.Envelope
		sessGiven   []events.Envelope
		generation  int
		now         time.Time
		want        []handlers.Change
		err         wantErr
		tokenReused bool
	}{
		{name: "first rotation", userGiven: user, sessGiven: session, generation: 1, now: t0.Add(time.Hour), want: refreshedTo(2)},
		{name: "rotation increments generation", userGiven: user,
			sessGiven:  cat(session, []events.Envelope{sessionRefreshed(t, t0.Add(time.Hour), 2), sessionRefreshed(t, t0.Add(2*time.Hour), 3)}),
			generation: 3, now: t0.Add(3 * time.Hour), want: refreshedTo(4)},
		{name: "old generation revokes the session", userGiven: user,
			sessGiven:  cat(session, []events.Envelope{sessionRefreshed(t, t0.Add(time.Hour), 2)}),
			generation: 1, now: t0.Add(90 * time.Minute), want: revokedReuse, tokenReused: true},
		{name: "future generation is reuse too", userGiven: user, sessGiven: session,
			generation: 5, now: t0.Add(time.Minute), want: revokedReuse, tokenReused: true},
		{name: "revoked session", userGiven: user,
			sessGiven:  cat(session, []events.Envelope{sessionRevoked(t, t0.Add(time.Minute), events.RevokedLogout)}),
			generation: 1, now: t0.Add(time.Hour), err: invalid},
		{name: "reused token after revocation stays invalid", userGiven: user,
			sessGiven: cat(session, []events.Envelope{sessionRefreshed(t, t0.Add(time.Minute), 2),
				sessionRevoked(t, t0.Add(2*time.Minute), events.RevokedTokenReuse)}),
			generation: 1, now: t0.Add(time.Hour), err: invalid},
		{name: "unknown session", userGiven: user, generation: 1, now: t0, err: invalid},
		{name: "idle boundary still valid", userGiven: user, sessGiven: session, generation: 1, now: t0.Add(2 * time.Hour), want: refreshedTo(2)},
		{name: "idle expiry", userGiven: user, sessGiven: session, generation: 1, now: t0.Add(2*time.Hour + time.Second), err: invalid},
		{name: "refresh restarts the idle window", userGiven: user,
			sessGiven:  cat(session, []events.Envelope{sessionRefreshed(t, t0.Add(90*time.Minute), 2)}),
			generation: 2, now: t0.Add(3 * time.Hour), want: refreshedTo(3)},
		{name: "absolute expiry despite activity", userGiven: user,
			sessGiven: cat(session, []events.Envelope{sessionRefreshed(t, t0.Add(2*time.Hour), 2), sessionRefreshed(t, t0.Add(4*time.Hour), 3),
				sessionRefreshed(t, t0.Add(6*time.Hour), 4), sessionRefreshed(t, t0.Add(8*time.Hour), 5), sessionRefreshed(t, t0.Add(9*time.Hour), 6)}),
			generation: 6, now: t0.Add(10*time.Hour + time.Second), err: invalid},
		{name: "user unknown", sessGiven: session, generation: 1, now: t0.Add(time.Minute), err: invalid},
		{name: "user deactivated after session start", userGiven: cat(user, []events.Envelope{deactivated(t, t0.Add(time.Minute))}),
			sessGiven: session, generation: 1, now: t0.Add(time.Hour), err: invalid},
		{name: "reactivation does not revive older sessions",
			userGiven: cat(user, []events.Envelope{deactivated(t, t0.Add(time.Minute)), reactivated(t, t0.Add(2*time.Minute))}),
			sessGiven: session, generation: 1, now: t0.Add(time.Hour), err: invalid},
		{name: "old generation of a deactivated user does not revoke",
			userGiven: cat(user, []events.Envelope{deactivated(t, t0.Add(time.Minute))}),
			sessGiven: cat(session, []events.Envelope{sessionRefreshed(t, t0.Add(30*time.Second), 2)}), generation: 1,
			now: t0.Add(time.Hour), err: invalid},
		{name: "session started after reactivation works",
			userGiven: []events.Envelope{registered(t, t0.Add(-3*time.Hour), uid, authz.RoleMember),
				deactivated(t, t0.Add(-2*time.Hour)), reactivated(t, t0.Add(-time.Hour))},
			sessGiven: session, generation: 1, now: t0.Add(time.Hour), want: refreshedTo(2)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, identity.EvolveSession, tc.sessGiven)
			u := fold(t, identity.EvolveUser, tc.userGiven)
			got, err := identity.DecideRefresh(s, u, tc.generation, tc.now, p)
			if tc.tokenReused {
				if !errors.Is(err, identity.ErrTokenReuse) {
					t.Fatalf("err = %v, want ErrTokenReuse", err)
				}
			} else {
				checkErr(t, err, tc.err)
			}
			checkChanges(t, got, tc.want)
		})
	}
}

func TestEvolveSessionAndRefreshExpiry(t *testing.T) {
	t.Parallel()
	s := fold(t, identity.EvolveSession, []events.Envelope{sessionStarted(t, t0), sessionRefreshed(t, t0.Add(time.Hour), 2)})
	if !s.Started || s.ID != sid || s.UserID != uid || s.Generation != 2 || !s.StartedAt.Equal(t0) || !s.LastActivity.Equal(t0.Add(time.Hour)) {
		t.Fatalf("session state = %+v", s)
	}
	s = fold(t, identity.EvolveSession, []events.Envelope{sessionStarted(t, t0), sessionRevoked(t, t0, events.RevokedLogout)})
	if !s.Revoked || s.RevokedReason != events.RevokedLogout {
		t.Fatalf("revoked session state = %+v", s)
	}
	// A refresh token never outlives the session's absolute lifetime.
	st := identity.SessionState{StartedAt: t0}
	if got := defaultSess.RefreshExpiry(st, t0); !got.Equal(t0.Add(72 * time.Hour)) {
		t.Fatalf("fresh session refresh expiry %v", got)
	}
	late := t0.Add(29 * 24 * time.Hour)
	if got := defaultSess.RefreshExpiry(st, late); !got.Equal(t0.Add(30 * 24 * time.Hour)) {
		t.Fatalf("old session refresh expiry %v, want the absolute limit", got)
	}
}

func TestDecideLogout(t *testing.T) {
	t.Parallel()
	session := []events.Envelope{sessionStarted(t, t0)}
	notFound := wantErr{handlers.NotFound, "not-found"}
	cases := []struct {
		name   string
		given  []events.Envelope
		caller string
		want   []handlers.Change
		err    wantErr
	}{
		{name: "own session", given: session, caller: uid, want: []handlers.Change{{Subject: sessSubj, Type: events.SessionRevoked,
			Data: events.SessionRevokedData{SessionID: sid, UserID: uid, Reason: events.RevokedLogout}}}},
		{name: "someone else's session", given: session, caller: admin, err: notFound},
		{name: "unknown session", caller: uid, err: notFound},
		{name: "twice is a no-op", given: append(append([]events.Envelope{}, session...), sessionRevoked(t, t0, events.RevokedLogout)), caller: uid},
		{name: "after reuse revocation is a no-op", given: append(append([]events.Envelope{}, session...),
			sessionRevoked(t, t0, events.RevokedTokenReuse)), caller: uid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.DecideLogout(fold(t, identity.EvolveSession, tc.given), tc.caller)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	cases := []struct {
		in, want string // want "" = invalid
	}{
		{"ada@example.com", "ada@example.com"},
		{"  Ada@Example.COM\t", "ada@example.com"},
		{"first.last+tag@sub.example.org", "first.last+tag@sub.example.org"},
		{long, long}, // 254 characters
		{long + "d", ""},
		{"", ""},
		{"   ", ""},
		{"ada", ""},
		{"ada@", ""},
		{"@example.com", ""},
		{"ada@@example.com", ""},
		{"Ada <ada@example.com>", ""},
		{"<ada@example.com>", ""},
		{"ada@example.com, bob@example.com", ""},
		{"ada @example.com", ""},
		{"ada@exa mple.com", ""},
		{"ada@example.com\nbcc: bob@example.com", ""},
		// Review finding 14: look-alikes normalise alike or are refused.
		{"jos\u00e9@x.io", "jos\u00e9@x.io"},                  // NFC
		{"jose\u0301@x.io", "jos\u00e9@x.io"},                 // NFD is the same address
		{"\uff41\uff44\uff4d\uff49\uff4e@x.io", "admin@x.io"}, // full-width
		{"ADMIN\uff20X.IO", "admin@x.io"},                     // full-width @
		{"\ufb01le@x.io", "file@x.io"},                        // ligature
		{"ad\u200bmin@x.io", ""},                              // zero-width space
		{"admin@x.io\u200b", ""},
		{"admin\u200d@x.io", ""}, // zero-width joiner
		{"\u202eadmin@x.io", ""}, // bidi override
		{"admin\u00ad@x.io", ""}, // soft hyphen
		{"a\ufe0f@x.io", ""},     // variation selector
		{"admin@exa\u2060mple.com", ""},
		{"\u0430dmin@x.io", ""}, // Cyrillic а among Latin letters
		{"\u0430\u0434\u043c\u0438\u043d@x.io", "\u0430\u0434\u043c\u0438\u043d@x.io"}, // all Cyrillic
		{"\u0391\u0394\u039c\u0399\u039d@x.io", "\u03b1\u03b4\u03bc\u03b9\u03bd@x.io"}, // Greek, lower-cased
		{"\u5c71\u7530\u305f\u308d\u3046@x.io", "\u5c71\u7530\u305f\u308d\u3046@x.io"}, // Han + Hiragana
		{"taro\u5c71\u7530@x.io", "taro\u5c71\u7530@x.io"},                             // Latin + Han
		{"admin\u263a@x.io", ""},                       // a symbol
		{"ada@B\u00fccher.DE", "ada@xn--bcher-kva.de"}, // IDNA A-label
		{"ada@xn--bcher-kva.de", "ada@xn--bcher-kva.de"},
		{"ada@\uff58.io", "ada@x.io"},
		{"o'brien+tag@example.com", "o'brien+tag@example.com"},
		{"a!#$%&'*+-/=?^_`{|}~@example.com", "a!#$%&'*+-/=?^_`{|}~@example.com"},
		{"ada@my_host.example", "ada@my_host.example"}, // ASCII domains stay as they were
	}
	if len(long) != 254 {
		t.Fatalf("test setup: long address has %d characters", len(long))
	}
	for _, tc := range cases {
		got, err := identity.NormalizeEmail(tc.in)
		if tc.want == "" {
			e, ok := handlers.AsError(err)
			if !ok || e.Kind != handlers.Invalid || e.Code != "validation-failed" {
				t.Errorf("NormalizeEmail(%q) = %q, %v; want validation-failed", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
