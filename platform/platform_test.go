package platform_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/internal/testpg"
	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/projections"
)

type page[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token"`
}

// audit returns the whole audit trail, oldest first.
func audit(t *testing.T, e *testenv.Env, token string, filter url.Values) []projections.AuditEntry {
	t.Helper()
	var out []projections.AuditEntry
	q := url.Values{"max_results": {"200"}}
	for k, v := range filter {
		q[k] = v
	}
	for {
		r := e.Do("GET", "/api/v1/audit?"+q.Encode(), token, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("audit: %d %s", r.Status, r.Body)
		}
		var p page[projections.AuditEntry]
		r.JSON(t, &p)
		out = append(out, p.Items...)
		if p.NextPageToken == "" {
			break
		}
		q.Set("page_token", p.NextPageToken)
	}
	slices.Reverse(out)
	return out
}

func users(t *testing.T, e *testenv.Env, token string) []testenv.User {
	t.Helper()
	r := e.Do("GET", "/api/v1/users?max_results=200", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("list users: %d %s", r.Status, r.Body)
	}
	var p page[testenv.User]
	r.JSON(t, &p)
	return p.Items
}

// caughtUp waits until every projection has applied the whole stream.
func caughtUp(t *testing.T, e *testenv.Env, token string) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := e.Do("GET", "/api/v1/projections", token, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("projections: %d %s", r.Status, r.Body)
		}
		var st struct {
			StreamLastSeq        uint64               `json:"stream_last_seq"`
			MetricsStreamLastSeq uint64               `json:"metrics_stream_last_seq"`
			Projections          []projections.Status `json:"projections"`
		}
		r.JSON(t, &st)
		lagging := len(st.Projections) == 0
		for _, p := range st.Projections {
			head := map[string]uint64{"events": st.StreamLastSeq, "metrics": st.MetricsStreamLastSeq}[p.Stream]
			if p.Lag > 0 || p.LastSeq != head {
				lagging = true
			}
		}
		if !lagging {
			return st.StreamLastSeq
		}
		if time.Now().After(deadline) {
			t.Fatalf("projections never caught up: %s", r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func refresh(t *testing.T, e *testenv.Env, refreshToken string) testenv.Tokens {
	t.Helper()
	r := e.Do("POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": refreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	var tok testenv.Tokens
	r.JSON(t, &tok)
	return tok
}

func me(t *testing.T, e *testenv.Env, token string) testenv.User {
	t.Helper()
	r := e.Do("GET", "/api/v1/auth/me", token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("me: %d %s", r.Status, r.Body)
	}
	var u testenv.User
	r.JSON(t, &u)
	return u
}

// history is what a first run leaves behind for the next to find.
type history struct {
	admin   testenv.Tokens
	user    testenv.User
	userTok testenv.Tokens
	audit   []projections.AuditEntry
	last    uint64
}

// firstRun registers, logs in and makes an admin change over HTTP.
func firstRun(t *testing.T, e *testenv.Env) history {
	t.Helper()
	var h history
	h.admin = e.Admin("root@example.com")
	h.user = e.Register("ada@example.com")
	h.userTok = e.Login("ada@example.com", testenv.Password)
	if r := e.Do("PATCH", "/api/v1/users/"+h.user.ID, h.admin.AccessToken, map[string]any{"role": "member"}); r.Status != http.StatusOK {
		t.Fatalf("patch user: %d %s", r.Status, r.Body)
	}
	if r := e.Do("POST", "/api/v1/auth/login", "", map[string]string{"email": "ada@example.com", "password": "not the password at all"}); r.Status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d %s", r.Status, r.Body)
	}
	h.last = caughtUp(t, e, h.admin.AccessToken)
	h.audit = audit(t, e, h.admin.AccessToken, nil)
	if uint64(len(h.audit)) != h.last {
		t.Fatalf("audit has %d entries, stream %d events", len(h.audit), h.last)
	}
	return h
}

// checkRestarted asserts a restarted platform kept everything of h.
func checkRestarted(t *testing.T, e *testenv.Env, h history) {
	t.Helper()
	// Tokens issued before the restart still work: the signing key and the
	// sessions survived.
	if got := me(t, e, h.admin.AccessToken); got.Email != "root@example.com" || got.Role != "admin" {
		t.Fatalf("admin after restart: %+v", got)
	}
	if last := caughtUp(t, e, h.admin.AccessToken); last != h.last {
		t.Fatalf("stream has %d events after restart, had %d", last, h.last)
	}
	if got := audit(t, e, h.admin.AccessToken, nil); !slices.EqualFunc(got, h.audit, sameEntry) {
		t.Fatalf("audit trail changed across restart:\n got  %d entries\n want %d", len(got), len(h.audit))
	}
	// The old refresh token rotates.
	tok := refresh(t, e, h.userTok.RefreshToken)
	if got := me(t, e, tok.AccessToken); got.ID != h.user.ID || got.Role != "member" {
		t.Fatalf("user after restart: %+v, want %s as member", got, h.user.ID)
	}
	// A fresh login works and the admin's change is in the read model.
	e.Login("ada@example.com", testenv.Password)
	found := false
	for _, u := range users(t, e, h.admin.AccessToken) {
		if u.ID == h.user.ID {
			found = u.Role == "member" && u.Active
		}
	}
	if !found {
		t.Fatal("user list lost the role change")
	}
	// New events extend the old trail; nothing is replayed twice.
	last := caughtUp(t, e, h.admin.AccessToken)
	all := audit(t, e, h.admin.AccessToken, nil)
	if uint64(len(all)) != last || !slices.EqualFunc(all[:len(h.audit)], h.audit, sameEntry) {
		t.Fatalf("audit after new commands: %d entries for %d events", len(all), last)
	}
	for i, a := range all {
		if a.Sequence != uint64(i+1) {
			t.Fatalf("audit entry %d has sequence %d", i, a.Sequence)
		}
	}
}

func sameEntry(a, b projections.AuditEntry) bool {
	return a.Sequence == b.Sequence && a.EventID == b.EventID && a.Type == b.Type && a.Time.Equal(b.Time) &&
		a.Actor == b.Actor && a.Subject == b.Subject && a.Summary == b.Summary && string(a.Data) == string(b.Data)
}

// A platform restarted on the same data dir and database keeps users,
// sessions and the audit trail.
func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	e := testenv.Start(t, cfg)
	h := firstRun(t, e)
	e.Stop()

	checkRestarted(t, testenv.Start(t, cfg), h)
}

// traversableTempDir is a temp dir the postgres OS user can reach when the
// tests run as root (t.TempDir's parents are 0700).
func traversableTempDir(t *testing.T) string {
	t.Helper()
	return testpg.TraversableDir(t)
}

// `maestro serve` with no database configured runs a managed PostgreSQL in
// the data dir; its data survives restarts too.
func TestRestartManagedPostgres(t *testing.T) {
	t.Parallel()
	cfg := platform.DefaultConfig()
	cfg.DataDir = traversableTempDir(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSListen = ""
	cfg.Argon2 = testenv.FastArgon2
	if cfg.DatabaseURL != "" {
		t.Fatal("default config names a database")
	}
	e := testenv.Start(t, cfg)
	info, err := platform.ReadRunInfo(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if info.DatabaseURL == "" {
		t.Fatal("run info has no database URL for the managed cluster")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "postgres", "data", "PG_VERSION")); err != nil {
		t.Fatalf("managed cluster is not in the data dir: %v", err)
	}
	h := firstRun(t, e)
	e.Stop()

	checkRestarted(t, testenv.Start(t, cfg), h)
}

// The configured bootstrap admin is created once: a second start neither
// creates another nor fails, even with a different address configured.
func TestBootstrapAdminOnce(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.BootstrapAdminEmail = "boot@example.com"
	cfg.BootstrapAdminPassword = testenv.Password

	check := func(e *testenv.Env) {
		t.Helper()
		tok := e.Login("boot@example.com", testenv.Password)
		caughtUp(t, e, tok.AccessToken)
		us := users(t, e, tok.AccessToken)
		if len(us) != 1 || us[0].Email != "boot@example.com" || us[0].Role != "admin" || !us[0].Active {
			t.Fatalf("users = %+v, want the one bootstrap admin", us)
		}
		for typ, want := range map[string]int{events.UserRegistered: 1, events.AdminBootstrapped: 1} {
			if got := audit(t, e, tok.AccessToken, url.Values{"type": {typ}}); len(got) != want {
				t.Fatalf("%d %s events, want %d", len(got), typ, want)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		evs, _, err := e.P.Store.Load(ctx, events.BootstrapSubject, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			t.Fatalf("bootstrap subject has %d events, want 1", len(evs))
		}
	}

	e := testenv.Start(t, cfg)
	check(e)
	e.Stop()

	e = testenv.Start(t, cfg)
	check(e)
	e.Stop()

	// The bootstrap already ran: another address in the configuration does
	// not create a second admin.
	changed := cfg
	changed.BootstrapAdminEmail = "other@example.com"
	e = testenv.Start(t, changed)
	check(e)
	if r := e.Do("POST", "/api/v1/auth/login", "", map[string]string{"email": "other@example.com", "password": testenv.Password}); r.Status != http.StatusUnauthorized {
		t.Fatalf("login as the second configured admin: %d %s", r.Status, r.Body)
	}
}
