package api_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// allUsers pages through GET /users to the end.
func allUsers(t testing.TB, e *testenv.Env, adminToken string) []api.UserResponse {
	t.Helper()
	var all []api.UserResponse
	q := url.Values{"max_results": {"200"}}
	for {
		r := send(t, e, "GET", "/api/v1/users?"+q.Encode(), adminToken, nil)
		wantStatus(t, r, http.StatusOK, "list users")
		var page api.UserPage
		r.JSON(t, &page)
		all = append(all, page.Items...)
		if page.NextPageToken == "" {
			return all
		}
		q.Set("page_token", page.NextPageToken)
	}
}

// usersWithEmail counts accounts with email.
func usersWithEmail(t testing.TB, e *testenv.Env, adminToken, email string) int {
	t.Helper()
	n := 0
	for _, u := range allUsers(t, e, adminToken) {
		if strings.EqualFold(u.Email, email) {
			n++
		}
	}
	return n
}

func getUser(t testing.TB, e *testenv.Env, adminToken, id string, headers ...string) testenv.User {
	t.Helper()
	r := send(t, e, "GET", "/api/v1/users/"+id, adminToken, nil, headers...)
	wantStatus(t, r, http.StatusOK, "get user "+id)
	var u testenv.User
	r.JSON(t, &u)
	return u
}

func TestIdempotentRegisterReplays(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@idem.test")
	body := map[string]string{"email": "Once@Idem.test", "password": testenv.Password, "name": "Once"}

	first := send(t, e, "POST", "/api/v1/auth/register", "", body, "Idempotency-Key", "register-once-1")
	wantStatus(t, first, http.StatusCreated, "first register")
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("first response claims to be a replay")
	}
	second := send(t, e, "POST", "/api/v1/auth/register", "", body, "Idempotency-Key", "register-once-1")
	if second.Status != first.Status || !bytes.Equal(second.Body, first.Body) {
		t.Fatalf("replay differs:\nfirst  %d %s\nsecond %d %s", first.Status, first.Body, second.Status, second.Body)
	}
	if got := second.Header.Get("Idempotent-Replayed"); got != "true" {
		t.Fatalf("Idempotent-Replayed = %q, want true", got)
	}
	for _, h := range []string{"Content-Type", "Maestro-Sequence"} {
		if first.Header.Get(h) == "" || second.Header.Get(h) != first.Header.Get(h) {
			t.Errorf("header %s: first %q, replay %q", h, first.Header.Get(h), second.Header.Get(h))
		}
	}
	if n := usersWithEmail(t, e, admin.AccessToken, "once@idem.test"); n != 1 {
		t.Fatalf("%d accounts for once@idem.test, want 1", n)
	}
	// Without a key the same body is a new request, and the address is taken.
	wantProblem(t, send(t, e, "POST", "/api/v1/auth/register", "", body), http.StatusConflict, "email-taken")

	// Outcomes that are errors replay too (only 5xx and 429 are released).
	weak := map[string]string{"email": "weak@idem.test", "password": "short", "name": "Weak"}
	w1 := send(t, e, "POST", "/api/v1/auth/register", "", weak, "Idempotency-Key", "register-weak")
	wantProblem(t, w1, http.StatusBadRequest, "weak-password")
	w2 := send(t, e, "POST", "/api/v1/auth/register", "", weak, "Idempotency-Key", "register-weak")
	if w2.Status != w1.Status || !bytes.Equal(w2.Body, w1.Body) || w2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("error replay: %d %s (replayed=%q), want %d %s", w2.Status, w2.Body, w2.Header.Get("Idempotent-Replayed"), w1.Status, w1.Body)
	}
}

// Reusing a key for a different request is refused and has no effect. For an
// authenticated principal the scope is the user; for anonymous callers it is
// the body itself, so a different body is simply another request and nobody
// can fetch someone else's stored response (e.g. a login's tokens) by key.
func TestIdempotencyKeyReuse(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@reuse.test")
	a := e.Register("a@reuse.test")
	b := e.Register("b@reuse.test")

	r := send(t, e, "PATCH", "/api/v1/users/"+a.ID, admin.AccessToken, map[string]any{"role": "member"}, "Idempotency-Key", "patch-1")
	wantStatus(t, r, http.StatusOK, "first PATCH")
	// Same key, different body.
	wantProblem(t, send(t, e, "PATCH", "/api/v1/users/"+a.ID, admin.AccessToken, map[string]any{"role": "admin"}, "Idempotency-Key", "patch-1"),
		http.StatusUnprocessableEntity, "idempotency-key-reused")
	// Same key and body, different resource.
	wantProblem(t, send(t, e, "PATCH", "/api/v1/users/"+b.ID, admin.AccessToken, map[string]any{"role": "member"}, "Idempotency-Key", "patch-1"),
		http.StatusUnprocessableEntity, "idempotency-key-reused")
	if u := getUser(t, e, admin.AccessToken, a.ID); u.Role != "member" {
		t.Fatalf("a after refused reuse = %+v, want member", u)
	}
	if u := getUser(t, e, admin.AccessToken, b.ID); u.Role != "viewer" {
		t.Fatalf("b after refused reuse = %+v, want viewer", u)
	}

	// Anonymous: a victim's login response cannot be fetched with its key.
	victim := send(t, e, "POST", "/api/v1/auth/login", "", map[string]string{"email": "a@reuse.test", "password": testenv.Password},
		"Idempotency-Key", "login-key")
	wantStatus(t, victim, http.StatusOK, "victim login")
	thief := send(t, e, "POST", "/api/v1/auth/login", "", map[string]string{"email": "a@reuse.test", "password": "guess guess guess"},
		"Idempotency-Key", "login-key")
	wantProblem(t, thief, http.StatusUnauthorized, "invalid-credentials")
	if thief.Header.Get("Idempotent-Replayed") != "" || bytes.Contains(thief.Body, []byte("access_token")) {
		t.Fatalf("a different body with the victim's key got the victim's response: %s", thief.Body)
	}
}

// Keys are scoped per principal: two users sending the same key do not
// collide, and each gets its own effect.
func TestIdempotencyKeyScopedPerPrincipal(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin1 := e.Admin("root1@scope.test")
	_, admin2 := e.UserWithRole(admin1.AccessToken, "root2@scope.test", "admin")
	x := e.Register("x@scope.test")
	y := e.Register("y@scope.test")

	// Same key, same body, two admins, two targets: both apply.
	r1 := send(t, e, "PATCH", "/api/v1/users/"+x.ID, admin1.AccessToken, map[string]any{"role": "member"}, "Idempotency-Key", "shared-key")
	r2 := send(t, e, "PATCH", "/api/v1/users/"+y.ID, admin2.AccessToken, map[string]any{"role": "member"}, "Idempotency-Key", "shared-key")
	for i, r := range []testenv.Response{r1, r2} {
		wantStatus(t, r, http.StatusOK, "PATCH by admin "+strconv.Itoa(i+1))
		if r.Header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("PATCH by admin %d was a replay", i+1)
		}
	}
	for _, id := range []string{x.ID, y.ID} {
		if u := getUser(t, e, admin1.AccessToken, id); u.Role != "member" {
			t.Fatalf("user %s = %+v, want member", id, u)
		}
	}
	// Same principal, same key, same request: a replay.
	r3 := send(t, e, "PATCH", "/api/v1/users/"+x.ID, admin1.AccessToken, map[string]any{"role": "member"}, "Idempotency-Key", "shared-key")
	if r3.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(r3.Body, r1.Body) {
		t.Fatalf("repeat by admin 1: %d %s replayed=%q", r3.Status, r3.Body, r3.Header.Get("Idempotent-Replayed"))
	}

	// Logout has no body: the scope alone keeps two users apart. Were it
	// shared, the second logout would be a replay and its session would live.
	_, tx := e.UserWithRole(admin1.AccessToken, "x2@scope.test", "viewer")
	_, ty := e.UserWithRole(admin1.AccessToken, "y2@scope.test", "viewer")
	for _, tok := range []string{tx.AccessToken, ty.AccessToken} {
		r := send(t, e, "POST", "/api/v1/auth/logout", tok, nil, "Idempotency-Key", "logout-key")
		wantStatus(t, r, http.StatusNoContent, "logout")
		if r.Header.Get("Idempotent-Replayed") != "" {
			t.Fatal("a second user's logout was replayed from the first user's")
		}
		wantProblem(t, send(t, e, "GET", "/api/v1/auth/me", tok, nil), http.StatusUnauthorized, "unauthenticated")
	}
}

func TestInvalidIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@badkey.test")
	body := map[string]string{"email": "k@badkey.test", "password": testenv.Password, "name": "K"}
	for name, key := range map[string]string{
		"300 chars":   strings.Repeat("k", 300),
		"256 chars":   strings.Repeat("k", 256),
		"inner space": "two words",
		"non-ASCII":   "clé",
		"inner tab":   "a\tb",
	} {
		r, err := sendE(e, "POST", "/api/v1/auth/register", "", body, "Idempotency-Key", key)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := checkProblem(r, http.StatusBadRequest, "invalid-idempotency-key"); err != nil {
			t.Errorf("key %s: %v", name, err)
		}
	}
	if n := usersWithEmail(t, e, admin.AccessToken, "k@badkey.test"); n != 0 {
		t.Fatalf("a request with an invalid key created %d accounts", n)
	}
	// 255 visible characters is the longest valid key.
	wantStatus(t, send(t, e, "POST", "/api/v1/auth/register", "", body, "Idempotency-Key", strings.Repeat("~", 255)),
		http.StatusCreated, "register with a 255-char key")
}

// Prefer: respond-async answers 202 with the sequence; a read that asks for
// that sequence (header or query) sees the write.
func TestRespondAsyncAndMinSequence(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@async.test")

	r := send(t, e, "POST", "/api/v1/auth/register", "", map[string]string{"email": "Async@Async.test", "password": testenv.Password, "name": "Async"},
		"Prefer", "respond-async")
	wantStatus(t, r, http.StatusAccepted, "async register")
	seq := asyncSeq(t, r)
	var u testenv.User
	r.JSON(t, &u)
	if u.ID == "" || u.Email != "async@async.test" || u.Role != "viewer" || !u.Active {
		t.Fatalf("202 body = %s, want the created user", r.Body)
	}
	if got := getUser(t, e, admin.AccessToken, u.ID, "Maestro-Min-Sequence", seq); got.ID != u.ID {
		t.Fatalf("read with Maestro-Min-Sequence = %+v", got)
	}

	// A role change, async, then read with ?min_sequence=.
	r = send(t, e, "PATCH", "/api/v1/users/"+u.ID, admin.AccessToken, map[string]any{"role": "member"}, "Prefer", "wait=1, respond-async")
	wantStatus(t, r, http.StatusAccepted, "async PATCH")
	seq = asyncSeq(t, r)
	var patched testenv.User
	r.JSON(t, &patched)
	if patched.Role != "member" {
		t.Fatalf("202 PATCH body = %s", r.Body)
	}
	r = send(t, e, "GET", "/api/v1/users/"+u.ID+"?min_sequence="+seq, admin.AccessToken, nil)
	wantStatus(t, r, http.StatusOK, "read with min_sequence")
	var got testenv.User
	r.JSON(t, &got)
	if got.Role != "member" {
		t.Fatalf("read at min_sequence %s = %+v, want role member", seq, got)
	}
	// The list and the user's own view honour it too.
	r = send(t, e, "GET", "/api/v1/users?min_sequence="+seq, admin.AccessToken, nil)
	wantStatus(t, r, http.StatusOK, "list with min_sequence")
	if !bytes.Contains(r.Body, []byte(`"role":"member"`)) {
		t.Fatalf("list at %s lacks the change: %s", seq, r.Body)
	}
	tok := e.Login("async@async.test", testenv.Password)
	r = send(t, e, "GET", "/api/v1/auth/me", tok.AccessToken, nil, "Maestro-Min-Sequence", seq)
	wantStatus(t, r, http.StatusOK, "me with Maestro-Min-Sequence")

	// An async response replays like any other.
	body := map[string]string{"email": "again@async.test", "password": testenv.Password, "name": "Again"}
	a1 := send(t, e, "POST", "/api/v1/auth/register", "", body, "Prefer", "respond-async", "Idempotency-Key", "async-1")
	a2 := send(t, e, "POST", "/api/v1/auth/register", "", body, "Prefer", "respond-async", "Idempotency-Key", "async-1")
	wantStatus(t, a1, http.StatusAccepted, "async register with key")
	if a2.Status != http.StatusAccepted || !bytes.Equal(a1.Body, a2.Body) || a2.Header.Get("Maestro-Sequence") != a1.Header.Get("Maestro-Sequence") ||
		a2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("async replay: %d %s %v", a2.Status, a2.Body, a2.Header)
	}

	// Bad and unreachable minimum sequences.
	wantProblem(t, send(t, e, "GET", "/api/v1/users?min_sequence=abc", admin.AccessToken, nil), http.StatusBadRequest, "validation-failed")
	wantProblem(t, send(t, e, "GET", "/api/v1/users", admin.AccessToken, nil, "Maestro-Min-Sequence", "-5"), http.StatusBadRequest, "validation-failed")
	far := send(t, e, "GET", "/api/v1/users?min_sequence=999999999", admin.AccessToken, nil)
	wantProblem(t, far, http.StatusServiceUnavailable, "projection-lagging")
	retryAfter(t, far)
}

func asyncSeq(t testing.TB, r testenv.Response) string {
	t.Helper()
	seq := r.Header.Get("Maestro-Sequence")
	if n, err := strconv.ParseUint(seq, 10, 64); err != nil || n == 0 {
		t.Fatalf("Maestro-Sequence = %q", seq)
	}
	if got := r.Header.Get("Preference-Applied"); got != "respond-async" {
		t.Fatalf("Preference-Applied = %q", got)
	}
	return seq
}

// A logout is never "replayed" onto a different session: reusing a key from
// an earlier logout (another session of the same user) must either end this
// session too or be refused as key reuse, never answer 204 and leave the
// session alive.
func TestLogoutKeyReuseAcrossSessions(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Register("twice@logout.test")
	first := e.Login("twice@logout.test", testenv.Password)
	wantStatus(t, send(t, e, "POST", "/api/v1/auth/logout", first.AccessToken, nil, "Idempotency-Key", "logout"), http.StatusNoContent, "first logout")
	second := e.Login("twice@logout.test", testenv.Password)
	r := send(t, e, "POST", "/api/v1/auth/logout", second.AccessToken, nil, "Idempotency-Key", "logout")
	switch {
	case r.Status == http.StatusUnprocessableEntity:
		wantProblem(t, r, http.StatusUnprocessableEntity, "idempotency-key-reused")
	case r.Status >= 200 && r.Status < 300:
		if me := send(t, e, "GET", "/api/v1/auth/me", second.AccessToken, nil); me.Status != http.StatusUnauthorized {
			t.Fatalf("logout answered %d (Idempotent-Replayed=%q) but the session is still alive: me = %d",
				r.Status, r.Header.Get("Idempotent-Replayed"), me.Status)
		}
	default:
		t.Fatalf("second logout: %d %s", r.Status, r.Body)
	}
}
