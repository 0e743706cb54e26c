package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

	// Refusals that recorded nothing are not stored (review finding 4): the
	// retry runs again and answers the same, without a replay.
	weak := map[string]string{"email": "weak@idem.test", "password": "short", "name": "Weak"}
	w1 := send(t, e, "POST", "/api/v1/auth/register", "", weak, "Idempotency-Key", "register-weak")
	wantProblem(t, w1, http.StatusBadRequest, "weak-password")
	w2 := send(t, e, "POST", "/api/v1/auth/register", "", weak, "Idempotency-Key", "register-weak")
	wantProblem(t, w2, http.StatusBadRequest, "weak-password")
	if got := w2.Header.Get("Idempotent-Replayed"); got != "" {
		t.Fatalf("a refusal that recorded nothing was replayed (Idempotent-Replayed = %q)", got)
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

	// A role change is a security command: it ignores respond-async (it
	// answers once in force); then read with ?min_sequence=.
	r = send(t, e, "PATCH", "/api/v1/users/"+u.ID, admin.AccessToken, map[string]any{"role": "member"}, "Prefer", "wait=1, respond-async")
	wantStatus(t, r, http.StatusOK, "PATCH with respond-async")
	if got := r.Header.Get("Preference-Applied"); got != "" {
		t.Fatalf("PATCH /users honoured respond-async: Preference-Applied = %q", got)
	}
	seq = r.Header.Get("Maestro-Sequence")
	var patched testenv.User
	r.JSON(t, &patched)
	if patched.Role != "member" {
		t.Fatalf("PATCH body = %s", r.Body)
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
	// Beyond the stream's end: refused at once (TestMinSequenceLagging covers a real lag).
	wantProblem(t, send(t, e, "GET", "/api/v1/users?min_sequence=999999999", admin.AccessToken, nil), http.StatusBadRequest, "validation-failed")
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

// idempotencyBucket is the running platform's idempotency bucket.
func idempotencyBucket(t testing.TB, e *testenv.Env) jetstream.KeyValue {
	t.Helper()
	kv, err := e.P.Store.JetStream().KeyValue(context.Background(), api.IdempotencyBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// bucketUsage is the bucket's message count and bytes.
func bucketUsage(t testing.TB, e *testenv.Env) (uint64, uint64) {
	t.Helper()
	st, err := idempotencyBucket(t, e).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Values(), st.Bytes()
}

// loseAnswers empties the idempotency bucket, as if every stored outcome
// had been lost (a crash between the append and the outcome, or the 24 h
// expiry): what a retry then meets is the event store alone.
func loseAnswers(t testing.TB, e *testenv.Env) {
	t.Helper()
	st, err := e.P.Store.JetStream().Stream(context.Background(), "KV_"+api.IdempotencyBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Review finding 4 (TestReviewIdempotencyBucketGrowth): anonymous refusals
// with fresh keys stored one record each for 24 h at no cost. Refusals that
// recorded nothing now leave the bucket as it was: a body that is not JSON
// never touches it, one that fails validation is released without a trace.
func TestIdempotencyBucketGrowth(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	statuses := map[int]int{}
	for i := range 200 {
		body := []byte(`{"email": "x@growth.test", "password": `) // not JSON
		if i%2 == 1 {
			body = []byte(`{"email": 5, "password": []}`) // JSON, but not a login
		}
		r := send(t, e, "POST", "/api/v1/auth/login", "", body, "Idempotency-Key", fmt.Sprintf("growth-%d", i))
		statuses[r.Status]++
	}
	if statuses[http.StatusBadRequest] != 200 {
		t.Fatalf("statuses %v, want 200 × 400", statuses)
	}
	if values, bytes := bucketUsage(t, e); values != 0 || bytes != 0 {
		t.Fatalf("200 malformed logins left %d records (%d bytes) in the idempotency bucket, want none", values, bytes)
	}
	// The bucket is bounded, and a command that succeeds is still kept.
	st, err := idempotencyBucket(t, e).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if max := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.MaxBytes; max != api.IdempotencyMaxBytes {
		t.Fatalf("bucket MaxBytes = %d, want %d", max, api.IdempotencyMaxBytes)
	}
	wantStatus(t, send(t, e, "POST", "/api/v1/auth/register", "", map[string]string{"email": "kept@growth.test", "password": testenv.Password, "name": "K"},
		"Idempotency-Key", "growth-kept"), http.StatusCreated, "keyed register")
	if values, _ := bucketUsage(t, e); values != 1 {
		t.Fatalf("a keyed 201 left %d records, want 1", values)
	}
}

// A full bucket stores nothing more, but commands still run and answer.
func TestIdempotencyBucketFull(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	ctx := context.Background()
	js := e.P.Store.JetStream()
	st, err := js.Stream(ctx, "KV_"+api.IdempotencyBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxBytes = 4096
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	admin := e.Admin("root@full.test")
	for i := range 12 {
		r := send(t, e, "POST", "/api/v1/projects", admin.AccessToken, map[string]string{"name": fmt.Sprintf("full-%d", i)},
			"Idempotency-Key", fmt.Sprintf("full-%d", i))
		wantStatus(t, r, http.StatusCreated, fmt.Sprintf("create project %d with the bucket filling up", i))
		// The same request again answers the same project, stored or not.
		again := send(t, e, "POST", "/api/v1/projects", admin.AccessToken, map[string]string{"name": fmt.Sprintf("full-%d", i)},
			"Idempotency-Key", fmt.Sprintf("full-%d", i))
		wantStatus(t, again, http.StatusCreated, fmt.Sprintf("retry project %d", i))
		var a, b api.ProjectResponse
		r.JSON(t, &a)
		again.JSON(t, &b)
		if a.ID != b.ID {
			t.Fatalf("retry of project %d answered %s, first %s", i, b.ID, a.ID)
		}
	}
	if _, bytes := bucketUsage(t, e); bytes > 4096 {
		t.Fatalf("bucket holds %d bytes, above its 4096", bytes)
	}
}

// Review finding 16: a key reused (same session) after its record expired
// addressed the aggregate the first request created: 201 with the old
// project, or with a model of another project. Ids now derive from the key
// and the request.
func TestKeyReusedAfterExpiryCreatesAnew(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@expiry.test")
	tok := admin.AccessToken
	create := func(path string, body any) api.ProjectResponse {
		t.Helper()
		r := send(t, e, "POST", path, tok, body, "Idempotency-Key", "reused-key")
		wantStatus(t, r, http.StatusCreated, "POST "+path)
		var p api.ProjectResponse
		r.JSON(t, &p)
		return p
	}
	a := create("/api/v1/projects", map[string]string{"name": "first"})
	loseAnswers(t, e)
	b := create("/api/v1/projects", map[string]string{"name": "second"})
	if b.ID == a.ID || b.Name != "second" {
		t.Fatalf("key reused after expiry answered %+v, want a new project \"second\" (first was %s)", b, a.ID)
	}
	// The same request again is the same project (nothing new).
	loseAnswers(t, e)
	if c := create("/api/v1/projects", map[string]string{"name": "second"}); c.ID != b.ID {
		t.Fatalf("same key and request after expiry: project %s, want %s", c.ID, b.ID)
	}

	// A model: same key, same body, another project.
	modelIn := func(project string) api.ModelResponse {
		t.Helper()
		r := send(t, e, "POST", "/api/v1/projects/"+project+"/models", tok, map[string]string{"name": "m"}, "Idempotency-Key", "model-key")
		wantStatus(t, r, http.StatusCreated, "create model in "+project)
		var m api.ModelResponse
		r.JSON(t, &m)
		return m
	}
	ma := modelIn("first")
	loseAnswers(t, e)
	if mb := modelIn("second"); mb.ProjectID != b.ID || mb.ID == ma.ID {
		t.Fatalf("model in project second = %+v, want a new model of %s (the first is %s of %s)", mb, b.ID, ma.ID, a.ID)
	}
}

// sessionOf reads the session id from an access token's claims.
func sessionOf(t testing.TB, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.SID == "" {
		t.Fatalf("claims %s: %v", raw, err)
	}
	return c.SID
}

// Review finding 16: a login retried with the same key and body after the
// 2-minute replay window re-derived the session id it had already started
// and answered 409. Within the window a retry whose answer was lost gets
// that session; after it, the same request is a new login.
func TestLoginRetriedWithSameKey(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Register("again@login.test")
	body := map[string]string{"email": "again@login.test", "password": testenv.Password}
	login := func(what string) testenv.Tokens {
		t.Helper()
		r := send(t, e, "POST", "/api/v1/auth/login", "", body, "Idempotency-Key", "login-key")
		wantStatus(t, r, http.StatusOK, what)
		var tok testenv.Tokens
		r.JSON(t, &tok)
		return tok
	}
	first := login("first login")
	loseAnswers(t, e) // the answer was lost
	if got, want := sessionOf(t, login("retry within the window").AccessToken), sessionOf(t, first.AccessToken); got != want {
		t.Fatalf("retry within the window started session %s, want the first attempt's %s", got, want)
	}
	e.Clock.Advance(3 * time.Minute)
	loseAnswers(t, e) // the replay window closed
	later := login("same key and body after the window")
	if sessionOf(t, later.AccessToken) == sessionOf(t, first.AccessToken) {
		t.Fatal("a login after the window reused the first session")
	}
	wantStatus(t, send(t, e, "GET", "/api/v1/auth/me", later.AccessToken, nil), http.StatusOK, "me with the new session")
	wantStatus(t, send(t, e, "GET", "/api/v1/auth/me", first.AccessToken, nil), http.StatusOK, "me with the first session")
}

// A refresh whose answer was lost, retried with the same key and token,
// looked like reuse of its own token: 401 "session revoked" while the
// revocation was dropped as a duplicate. It answers the stored rotation.
func TestRefreshRetryAnswersStoredRotation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Register("rot@refresh.test")
	tok := e.Login("rot@refresh.test", testenv.Password)
	body := map[string]string{"refresh_token": tok.RefreshToken}
	r1 := send(t, e, "POST", "/api/v1/auth/refresh", "", body, "Idempotency-Key", "refresh-key")
	wantStatus(t, r1, http.StatusOK, "refresh")
	var p1 testenv.Tokens
	r1.JSON(t, &p1)
	loseAnswers(t, e)
	r2 := send(t, e, "POST", "/api/v1/auth/refresh", "", body, "Idempotency-Key", "refresh-key")
	wantStatus(t, r2, http.StatusOK, "retried refresh")
	var p2 testenv.Tokens
	r2.JSON(t, &p2)
	if sessionOf(t, p2.AccessToken) != sessionOf(t, tok.AccessToken) {
		t.Fatal("the retried refresh answered another session")
	}
	// The session lives on: the rotated refresh token works.
	wantStatus(t, send(t, e, "POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": p2.RefreshToken}), http.StatusOK, "refresh with the rotated token")
}

// The in-process form of issue 6's crash: a registration whose answer was
// lost is retried after another version was registered. The retry decided
// a new number, JetStream dropped it as a duplicate, and the handler
// answered 404 for a version never created. It answers the stored version.
func TestVersionRetryAnswersStoredVersion(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@vretry.test")
	tok := admin.AccessToken
	model, _ := raceModel(t, e, tok, "vretry", "m")
	versions := model + "/versions"
	keyed := map[string]string{"description": "keyed"}
	r1 := send(t, e, "POST", versions, tok, keyed, "Idempotency-Key", "version-key")
	wantStatus(t, r1, http.StatusCreated, "keyed registration")
	wantStatus(t, send(t, e, "POST", versions, tok, map[string]string{"description": "other"}), http.StatusCreated, "another registration")
	loseAnswers(t, e)
	r2 := send(t, e, "POST", versions, tok, keyed, "Idempotency-Key", "version-key")
	wantStatus(t, r2, http.StatusCreated, "retried registration")
	var v1, v2 api.VersionResponse
	r1.JSON(t, &v1)
	r2.JSON(t, &v2)
	if v2.Version != v1.Version || v2.Description != "keyed" || r2.Header.Get("Location") != r1.Header.Get("Location") {
		t.Fatalf("retry answered version %d (%q, %s), want %d (%s)", v2.Version, v2.Description, r2.Header.Get("Location"), v1.Version, r1.Header.Get("Location"))
	}
	if r2.Header.Get("Maestro-Sequence") != r1.Header.Get("Maestro-Sequence") {
		t.Fatalf("retry names sequence %s, the stored registration is %s", r2.Header.Get("Maestro-Sequence"), r1.Header.Get("Maestro-Sequence"))
	}
	r := send(t, e, "GET", versions, tok, nil)
	wantStatus(t, r, http.StatusOK, "list versions")
	var page api.VersionPage
	r.JSON(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("%d versions after the retry, want 2", len(page.Items))
	}
}
