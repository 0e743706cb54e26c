package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

const testPassword = "correct horse battery staple"

// newTestService runs the identity service on a real event store (an
// embedded nats-server per test) with small argon2 parameters.
func newTestService(t *testing.T) (*Service, *events.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	nc := embeddedConn(t, "identity-test")
	store, err := events.OpenStore(ctx, nc, events.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	security, err := events.OpenSecurityStore(ctx, nc, events.SecurityConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := auth.NewSigningKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.NewKeySet(key)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(keys, auth.TokenConfig{Issuer: "test", Audience: "test", AccessTTL: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	svc := NewService(Config{Store: store, Security: security, Tokens: tokens,
		Hasher: auth.NewHasher(auth.Argon2Params{Memory: 1024, Iterations: 1, Parallelism: 1})})
	return svc, store
}

// embeddedConn starts an embedded nats-server in a temporary directory and
// returns a connection to it, both closed when the test ends.
func embeddedConn(t *testing.T, name string) *nats.Conn {
	t.Helper()
	emb, err := events.StartEmbedded(events.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func registerTest(t *testing.T, svc *Service, email string, role authz.Role) UserState {
	t.Helper()
	u, _, err := svc.Register(t.Context(), events.Meta{Actor: events.SystemActor}, RegisterInput{
		Email: email, Password: testPassword, Name: "Test", Role: role, Source: "test"})
	if err != nil {
		t.Fatalf("register %s: %v", email, err)
	}
	return u
}

// Review finding 11: a successful login decided on the user's version must
// not be appended after the user changed. An admin's deactivation slipped
// in between the decision and the append used to start a session after the
// deactivation, unrevoked (the deactivation had revoked only the sessions
// that existed), which a reactivation within the access-token lifetime then
// brought to life. Now the login conflicts, decides again on the inactive
// user, and fails like any login to an inactive account. Both shapes of a
// successful login are covered: the session start alone, and the session
// start with the reset of a failure streak (an atomic batch).
func TestLoginRacingDeactivationStartsNoSession(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		priorFailures int
	}{
		{"session start alone", 0},
		{"session start with failure-streak reset", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			svc, store := newTestService(t)
			ctx := t.Context()
			admin := registerTest(t, svc, "root@race.test", authz.RoleAdmin)
			adminP := authz.Principal{UserID: admin.ID, Role: authz.RoleAdmin}
			u := registerTest(t, svc, "racer@race.test", authz.RoleViewer)
			for range tc.priorFailures {
				if _, _, err := svc.Login(ctx, events.Meta{}, LoginInput{Email: u.Email, Password: "wrong password!!", ClientIP: "192.0.2.1"}); err == nil {
					t.Fatal("a wrong password logged in")
				}
			}

			var once sync.Once
			var deactivatedAt uint64
			svc.loginDecided = func() {
				once.Do(func() {
					off := false
					_, seq, err := svc.UpdateUser(ctx, events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: admin.ID}},
						adminP, u.ID, UpdateUserInput{Active: &off})
					if err != nil {
						t.Errorf("deactivate: %v", err)
					}
					deactivatedAt = seq
				})
			}
			pair, _, err := svc.Login(ctx, events.Meta{}, LoginInput{Email: u.Email, Password: testPassword, ClientIP: "192.0.2.1"})
			svc.loginDecided = nil
			if deactivatedAt == 0 {
				t.Fatal("the deactivation did not run inside the login")
			}
			on := true
			if _, _, err := svc.UpdateUser(ctx, events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: admin.ID}},
				adminP, u.ID, UpdateUserInput{Active: &on}); err != nil {
				t.Fatalf("reactivate: %v", err)
			}

			if err == nil {
				sess, _, serr := svc.Session(ctx, pair.SessionID)
				t.Fatalf("a login racing the deactivation (at %d) started session %s (started %v, revoked %v, err %v)",
					deactivatedAt, pair.SessionID, sess.Started, sess.Revoked, serr)
			}
			if he, ok := handlers.AsError(err); !ok || he.Code != "invalid-credentials" {
				t.Fatalf("login racing a deactivation: %v, want invalid-credentials (as for an inactive account)", err)
			}
			// The stream holds no session for this user at all.
			last, err := store.LastSequence(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for seq := uint64(1); seq <= last; seq++ {
				env, err := store.Get(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				if env.Type == events.SessionStarted {
					t.Fatalf("session started at %d (deactivation at %d): %s", seq, deactivatedAt, env.Data)
				}
			}
			// After reactivation the user logs in normally.
			if _, _, err := svc.Login(ctx, events.Meta{}, LoginInput{Email: u.Email, Password: testPassword, ClientIP: "192.0.2.1"}); err != nil {
				t.Fatalf("login after reactivation: %v", err)
			}
		})
	}
}

// A login retried with the same Idempotency-Key derives the same session id.
// Once that session has ended, the retry must not start it again: the login
// no longer carries "session subject is empty" in its append (the check is
// on the user's version), and a second start would reset the session to live.
func TestLoginNeverRestartsAnEndedSession(t *testing.T) {
	t.Parallel()
	svc, _ := newTestService(t)
	ctx := t.Context()
	u := registerTest(t, svc, "again@race.test", authz.RoleViewer)
	in := LoginInput{Email: u.Email, Password: testPassword, ClientIP: "192.0.2.1"}
	first, _, err := svc.Login(ctx, events.Meta{IdempotencyKey: "login-1"}, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Logout(ctx, events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: u.ID}},
		authz.Principal{UserID: u.ID, SessionID: first.SessionID, Role: authz.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	second, _, err := svc.Login(ctx, events.Meta{IdempotencyKey: "login-1", CorrelationID: "retry"}, in)
	var he *handlers.Error
	if err != nil && !errors.As(err, &he) {
		t.Fatalf("retried login: %v", err)
	}
	sess, _, serr := svc.Session(ctx, first.SessionID)
	if serr != nil || !sess.Started || !sess.Revoked {
		t.Fatalf("the logged-out session %s after a retried login: started %v revoked %v err %v (second login %+v, %v)",
			first.SessionID, sess.Started, sess.Revoked, serr, second.SessionID, err)
	}
}

// Review finding 4 (related): rejected logins for unknown e-mails are
// appended by anonymous clients, so they live in MAESTRO_SECURITY, which is
// bounded: per e-mail (the newest MaxMsgsPerSubject) and in total
// (MaxBytes, oldest dropped first). A flood stays under the bounds and the
// newest signals are kept.
func TestLoginRejectionsAreBounded(t *testing.T) {
	t.Parallel()
	svc, _ := newTestService(t)
	ctx := t.Context()
	const maxBytes, perSubject = 16 << 10, 8
	security, err := events.OpenSecurityStore(ctx, embeddedConn(t, "bounded"), events.SecurityConfig{MaxBytes: maxBytes, MaxMsgsPerSubject: perSubject})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	svc.cfg.Security = security
	svc.cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	svc.address = newAddressThrottle(1<<20, 1000)

	// One e-mail, many failures (each after its back-off has passed).
	for i := range 40 {
		_, _, err := svc.Login(ctx, events.Meta{}, LoginInput{Email: "ghost@bounded.test", Password: "wrong password!!", ClientIP: "192.0.2.9"})
		if he, ok := handlers.AsError(err); !ok || he.Code != "invalid-credentials" {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		advance(16 * time.Minute)
	}
	st, err := security.JetStream().Stream(ctx, events.SecurityStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.LoginRejectionsSubject("ghost@bounded.test")))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[events.LoginRejectionsSubject("ghost@bounded.test")]; n != perSubject {
		t.Fatalf("one e-mail's rejections stored: %d, want the newest %d", n, perSubject)
	}
	// The fold of what is kept still locks like an account with 40 failures
	// spaced 16 minutes apart would (one streak, saturated back-off).
	streak, _, err := svc.rejections(ctx, events.LoginRejectionsSubject("ghost@bounded.test"))
	if err != nil {
		t.Fatal(err)
	}
	if streak.Failures != perSubject {
		t.Fatalf("folded streak = %d failures", streak.Failures)
	}

	// Many e-mails: the stream stays under MaxBytes and keeps the newest.
	const flood = 400
	for i := range flood {
		email := fmt.Sprintf("ghost%d@bounded.test", i)
		if _, _, err := svc.Login(ctx, events.Meta{}, LoginInput{Email: email, Password: "wrong password!!", ClientIP: "192.0.2.9"}); err == nil {
			t.Fatalf("%s logged in", email)
		}
	}
	info, err = st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > maxBytes || info.State.Msgs >= flood {
		t.Fatalf("after %d rejections the stream holds %d messages, %d bytes (max %d)", flood+40, info.State.Msgs, info.State.Bytes, maxBytes)
	}
	last, err := st.GetLastMsgForSubject(ctx, events.LoginRejectionsSubject(fmt.Sprintf("ghost%d@bounded.test", flood-1)))
	if err != nil {
		t.Fatalf("the newest rejection was dropped: %v", err)
	}
	t.Logf("%d rejections: %d kept, %d bytes (MaxBytes %d); newest at %d", flood+40, info.State.Msgs, info.State.Bytes, maxBytes, last.Sequence)
}

// A keyed registration retried after its answer was lost (the idempotency
// record gone with a crash) finds its own user and answers with the
// sequence where it is stored, so the API's read-your-writes wait still
// has something to wait for.
func TestRegisterRetryAnswersWithItsSequence(t *testing.T) {
	t.Parallel()
	svc, _ := newTestService(t)
	meta := events.Meta{Actor: events.SystemActor, IdempotencyKey: "register-retry", Fingerprint: "f"}
	in := RegisterInput{Email: "retry@example.com", Password: testPassword, Name: "R", Role: authz.RoleViewer}
	first, seq1, err := svc.Register(t.Context(), meta, in)
	if err != nil || seq1 == 0 {
		t.Fatalf("register: %v (seq %d)", err, seq1)
	}
	again, seq2, err := svc.Register(t.Context(), meta, in)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if again.ID != first.ID || seq2 != seq1 {
		t.Fatalf("retry answered user %s at %d, want %s at %d", again.ID, seq2, first.ID, seq1)
	}
}
