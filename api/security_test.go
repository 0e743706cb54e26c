package api_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// ---- helpers shared by the security, concurrency, throttle and idempotency tests ----

// sendE is testenv.Env.Send, named for the goroutine-safe call sites.
func sendE(e *testenv.Env, method, path, token string, body any, headers ...string) (testenv.Response, error) {
	return e.Send(method, path, token, body, headers...)
}

// send is sendE failing t (the calling test or subtest) on transport errors.
func send(t testing.TB, e *testenv.Env, method, path, token string, body any, headers ...string) testenv.Response {
	t.Helper()
	r, err := sendE(e, method, path, token, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// problemOf decodes a problem response, or explains why it is not one.
func problemOf(r testenv.Response) (api.Problem, error) {
	var p api.Problem
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/problem+json" {
		return p, fmt.Errorf("Content-Type %q, want application/problem+json (status %d, body %s)", r.Header.Get("Content-Type"), r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		return p, fmt.Errorf("decode problem %s: %w", r.Body, err)
	}
	return p, nil
}

// checkProblem reports whether r is the problem code with status.
func checkProblem(r testenv.Response, status int, code string) (api.Problem, error) {
	if r.Status != status {
		return api.Problem{}, fmt.Errorf("status %d, want %d (%s); body %s", r.Status, status, code, r.Body)
	}
	p, err := problemOf(r)
	if err != nil {
		return p, err
	}
	if p.Type != api.ProblemTypePrefix+code || p.Status != status || p.Title == "" {
		return p, fmt.Errorf("problem %+v, want type %s%s and status %d", p, api.ProblemTypePrefix, code, status)
	}
	return p, nil
}

// checkMLflowError reports whether r is MLflow's error body with code and
// status (the MLflow façade's routes answer in MLflow's shape).
func checkMLflowError(r testenv.Response, status int, code string) error {
	var e api.MLflowError
	if err := json.Unmarshal(r.Body, &e); err != nil || r.Status != status || e.ErrorCode != code || e.Message == "" {
		return fmt.Errorf("status %d body %s, want %d with MLflow error_code %s", r.Status, r.Body, status, code)
	}
	return nil
}

// wantProblem fails t unless r is the problem code with status.
func wantProblem(t testing.TB, r testenv.Response, status int, code string) api.Problem {
	t.Helper()
	p, err := checkProblem(r, status, code)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wantStatus fails t unless r has status.
func wantStatus(t testing.TB, r testenv.Response, status int, what string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.Status, status, r.Body)
	}
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// concretePath fills every {param} of a route pattern with a random uuid.
func concretePath(pattern string) string {
	return pathParam.ReplaceAllStringFunc(pattern, func(string) string { return uuid.NewString() })
}

// requestBody is a syntactically valid body for methods that take one.
func requestBody(method string) any {
	switch method {
	case http.MethodPost, http.MethodPatch, http.MethodPut:
		return map[string]any{"role": "admin", "active": true}
	}
	return nil
}

// ---- route table: deny by default ----

// The exact public list (ARCHITECTURE rule 6). A new route is authenticated
// unless someone deliberately adds it here too.
var wantPublic = []string{
	"GET /healthz",
	"GET /readyz",
	"GET /.well-known/jwks.json",
	"GET /api/v1/openapi.json",
	"GET /api/v1/asyncapi.json",
	// The explanation document's JSON Schema (holds no data).
	"GET /api/v1/schemas/explanation.json",
	"GET /api/v1/auth/health",
	"POST /api/v1/auth/register",
	"POST /api/v1/auth/login",
	"POST /api/v1/auth/refresh",
	// Public keys, for third parties verifying an audit export.
	"GET /api/v1/audit/keys",
}

func TestPublicRoutesAreExactlyTheAllowList(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	var public []string
	seen := map[string]bool{}
	for _, rt := range e.P.API.Routes() {
		k := rt.Method + " " + rt.Pattern
		if seen[k] {
			t.Errorf("route %s is declared twice", k)
		}
		seen[k] = true
		if rt.Public {
			public = append(public, k)
		}
	}
	slices.Sort(public)
	want := slices.Sorted(slices.Values(wantPublic))
	if !slices.Equal(public, want) {
		t.Fatalf("public routes = %q\nwant exactly      %q", public, want)
	}
	// The public routes really answer without a token (no 401).
	for _, k := range wantPublic {
		method, path, _ := strings.Cut(k, " ")
		r := send(t, e, method, path, "", requestBody(method))
		if r.Status == http.StatusUnauthorized {
			t.Errorf("public %s answered 401: %s", k, r.Body)
		}
	}
}

// forger crafts tokens with the platform's real signing key.
type forger struct {
	key   *auth.SigningKey
	keys  *auth.KeySet
	iss   string
	aud   string
	sub   string // a live session's user
	sid   string // a live session
	token func(t *testing.T, aud string, now func() time.Time) string
}

func newForger(t *testing.T, e *testenv.Env, liveAccess string) *forger {
	t.Helper()
	key, err := auth.LoadOrCreateSigningKey(filepath.Join(e.Config.DataDir, "keys", "signing-key.pem"))
	if err != nil {
		t.Fatalf("load signing key: %v", err)
	}
	keys, err := auth.NewKeySet(key)
	if err != nil {
		t.Fatal(err)
	}
	var claims auth.Claims
	parsed, _, err := jwt.NewParser().ParseUnverified(liveAccess, &claims)
	if err != nil {
		t.Fatalf("parse live token: %v", err)
	}
	if kid, _ := parsed.Header["kid"].(string); kid != key.KID {
		t.Fatalf("live token kid %q, but the key file's kid is %q: the forger would use the wrong key", kid, key.KID)
	}
	f := &forger{key: key, keys: keys, iss: e.Config.TokenIssuer, aud: e.Config.TokenAudience, sub: claims.Subject, sid: claims.SessionID}
	f.token = func(t *testing.T, aud string, now func() time.Time) string {
		t.Helper()
		tk, err := auth.NewTokens(keys, auth.TokenConfig{Issuer: f.iss, Audience: aud, AccessTTL: 15 * time.Minute, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := tk.Issue(auth.TokenAccess, f.sub, f.sid, 0, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return f
}

// claimsJSON is a valid-looking access-token payload for the live session.
func (f *forger) claimsJSON() auth.Claims {
	now := time.Now()
	return auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: f.iss, Subject: f.sub, Audience: jwt.ClaimStrings{f.aud},
			ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)), NotBefore: jwt.NewNumericDate(now),
			IssuedAt: jwt.NewNumericDate(now), ID: uuid.NewString(),
		},
		Kind: auth.TokenAccess, SessionID: f.sid,
	}
}

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// tamper flips one character in the middle of the payload segment (a middle
// character carries 6 full bits, so the decoded payload really changes).
func tamper(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	p := []byte(parts[1])
	i := len(p) / 2
	if p[i] == 'A' {
		p[i] = 'B'
	} else {
		p[i] = 'A'
	}
	before, _ := base64.RawURLEncoding.DecodeString(parts[1])
	after, _ := base64.RawURLEncoding.DecodeString(string(p))
	if bytes.Equal(before, after) {
		t.Fatal("tampering did not change the payload")
	}
	return parts[0] + "." + string(p) + "." + parts[2]
}

// Every non-public route, from the route table, refuses every kind of bad
// credential with the same 401 problem; a valid token gets past the
// authenticator on each of them (so the 401s are not an accident).
func TestEveryProtectedRouteRejectsBadTokens(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@sec.test")
	e.Register("victim@sec.test")
	live := send(t, e, "POST", "/api/v1/auth/login", "", map[string]string{"email": "victim@sec.test", "password": testenv.Password})
	wantStatus(t, live, http.StatusOK, "login")
	var tok testenv.Tokens
	live.JSON(t, &tok)
	f := newForger(t, e, tok.AccessToken)

	// Positive control: a token forged with the right key, issuer, audience
	// and a live session is accepted, so each bad token below fails for its
	// one defect only.
	good := f.token(t, f.aud, time.Now)
	wantStatus(t, send(t, e, "GET", "/api/v1/auth/me", good, nil), http.StatusOK, "control: correctly forged token")

	// A second session of the victim, logged out.
	ended := e.Login("victim@sec.test", testenv.Password)
	wantStatus(t, send(t, e, "POST", "/api/v1/auth/logout", ended.AccessToken, nil), http.StatusNoContent, "logout")

	// alg:none with valid-looking claims, and an EdDSA header with no signature.
	claims := f.claimsJSON()
	algNone := b64JSON(t, map[string]string{"alg": "none", "typ": "at+jwt", "kid": f.key.KID}) + "." + b64JSON(t, claims) + "."
	unsigned := b64JSON(t, map[string]string{"alg": "EdDSA", "typ": "at+jwt", "kid": f.key.KID}) + "." + b64JSON(t, claims) + "."

	// Signed by another Ed25519 key that claims the platform key's kid.
	_, otherPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jt := jwt.NewWithClaims(jwt.SigningMethodEdDSA, f.claimsJSON())
	jt.Header["kid"] = f.key.KID
	jt.Header["typ"] = "at+jwt"
	otherKey, err := jt.SignedString(otherPriv)
	if err != nil {
		t.Fatal(err)
	}

	// Right key, wrong issuer.
	wrongIss, err := auth.NewTokens(f.keys, auth.TokenConfig{Issuer: "not-maestro", Audience: f.aud, AccessTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	wrongIssTok, _, err := wrongIss.Issue(auth.TokenAccess, f.sub, f.sid, 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}

	// A token whose payload was re-encoded with a longer expiry, keeping the
	// original signature.
	parts := strings.Split(good, ".")
	var payload map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatal(err)
	}
	payload["exp"] = time.Now().Add(24 * time.Hour).Unix()
	extended := parts[0] + "." + b64JSON(t, payload) + "." + parts[2]

	bad := []struct{ name, auth string }{
		{"no token", ""},
		{"expired", "Bearer " + f.token(t, f.aud, func() time.Time { return time.Now().Add(-2 * time.Hour) })},
		{"tampered payload", "Bearer " + tamper(t, good)},
		{"payload re-encoded with a later exp", "Bearer " + extended},
		{"alg none", "Bearer " + algNone},
		{"no signature", "Bearer " + unsigned},
		{"wrong audience", "Bearer " + f.token(t, "not-maestro-api", time.Now)},
		{"wrong issuer", "Bearer " + wrongIssTok},
		{"other key same kid", "Bearer " + otherKey},
		{"refresh token as access token", "Bearer " + tok.RefreshToken},
		{"logged-out session", "Bearer " + ended.AccessToken},
		{"not bearer", "Basic " + base64.StdEncoding.EncodeToString([]byte("victim@sec.test:"+testenv.Password))},
		{"empty bearer", "Bearer "},
		{"garbage", "Bearer not.a.jwt"},
		{"oversized", "Bearer " + strings.Repeat("a", 5000)},
	}

	routes := 0
	mlflowAdmin := e.Login("root@sec.test", testenv.Password)
	for _, rt := range e.P.API.Routes() {
		if rt.Public {
			continue
		}
		routes++
		t.Run(rt.Method+" "+rt.Pattern, func(t *testing.T) {
			for _, b := range bad {
				path := concretePath(rt.Pattern)
				var hdr []string
				if b.auth != "" {
					hdr = []string{"Authorization", b.auth}
				}
				r := send(t, e, rt.Method, path, "", requestBody(rt.Method), hdr...)
				if rt.Method == "HEAD" { // no body to carry the problem
					if r.Status != http.StatusUnauthorized {
						t.Errorf("%s: status %d, want 401", b.name, r.Status)
					}
				} else if rt.MLflow {
					if err := checkMLflowError(r, http.StatusUnauthorized, "UNAUTHENTICATED"); err != nil {
						t.Errorf("%s: %v", b.name, err)
						continue
					}
				} else if _, err := checkProblem(r, http.StatusUnauthorized, "unauthenticated"); err != nil {
					t.Errorf("%s: %v", b.name, err)
					continue
				}
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: WWW-Authenticate = %q", b.name, r.Header.Get("WWW-Authenticate"))
				}
			}
			// Control: a fresh admin session gets past the authenticator
			// (MLflow's routes share one: none of them ends a session, and
			// there are many).
			admin := mlflowAdmin
			if !rt.MLflow {
				admin = e.Login("root@sec.test", testenv.Password)
			}
			if r := send(t, e, rt.Method, concretePath(rt.Pattern), admin.AccessToken, requestBody(rt.Method)); r.Status == http.StatusUnauthorized {
				t.Errorf("control: valid admin token got 401: %s", r.Body)
			}
		})
	}
	if routes < 7 {
		t.Fatalf("only %d protected routes in the table; the generator is not seeing them", routes)
	}
	// None of the bad tokens ended the victim's live session.
	wantStatus(t, send(t, e, "GET", "/api/v1/auth/me", tok.AccessToken, nil), http.StatusOK, "victim still logged in")
}

// Admin-only routes: viewer and member are refused, admin is served.
func TestAdminRoutesRoleMatrix(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@roles.test")
	target := e.Register("target@roles.test")
	_, viewer := e.UserWithRole(admin.AccessToken, "viewer@roles.test", "viewer")
	_, member := e.UserWithRole(admin.AccessToken, "member@roles.test", "member")

	type call struct {
		method, path string
		body         any
	}
	calls := []call{
		{"GET", "/api/v1/users", nil},
		{"GET", "/api/v1/users/" + target.ID, nil},
		{"PATCH", "/api/v1/users/" + target.ID, map[string]any{"role": "member"}},
		{"GET", "/api/v1/audit", nil},
		{"GET", "/api/v1/projections", nil},
	}
	for _, c := range calls {
		for _, who := range []struct {
			role, token string
		}{{"viewer", viewer.AccessToken}, {"member", member.AccessToken}} {
			r := send(t, e, c.method, c.path, who.token, c.body)
			if _, err := checkProblem(r, http.StatusForbidden, "forbidden"); err != nil {
				t.Errorf("%s %s as %s: %v", c.method, c.path, who.role, err)
			}
		}
	}
	// The refused PATCHes changed nothing.
	r := send(t, e, "GET", "/api/v1/users/"+target.ID, admin.AccessToken, nil)
	wantStatus(t, r, http.StatusOK, "get target")
	var got testenv.User
	r.JSON(t, &got)
	if got.Role != "viewer" {
		t.Fatalf("target role = %q after refused PATCHes, want viewer", got.Role)
	}
	for _, c := range calls {
		r := send(t, e, c.method, c.path, admin.AccessToken, c.body)
		if r.Status < 200 || r.Status > 299 {
			t.Errorf("%s %s as admin: %d %s", c.method, c.path, r.Status, r.Body)
		}
	}
}

func TestRequestBodyLimitsAndDecoding(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	const reg = "/api/v1/auth/register"
	huge := []byte(`{"email":"big@body.test","name":"Big","password":"` + strings.Repeat("a", 1<<20) + `"}`)
	wantProblem(t, send(t, e, "POST", reg, "", huge), http.StatusRequestEntityTooLarge, "payload-too-large")
	// Also through the idempotency middleware, which buffers the body itself.
	wantProblem(t, send(t, e, "POST", reg, "", huge, "Idempotency-Key", "huge-1"), http.StatusRequestEntityTooLarge, "payload-too-large")

	wantProblem(t, send(t, e, "POST", reg, "", []byte(`{"email":"u@body.test","password":"`+testenv.Password+`","name":"U","role":"admin"}`)),
		http.StatusBadRequest, "malformed-json")
	wantProblem(t, send(t, e, "POST", reg, "", []byte(`{"email":"u@body.test","password":"`+testenv.Password+`","name":"U"} {"x":1}`)),
		http.StatusBadRequest, "malformed-json")
	wantProblem(t, send(t, e, "POST", reg, "", []byte(`{"email":"u@body.test","password":"`+testenv.Password+`","name":"U"}x`)),
		http.StatusBadRequest, "malformed-json")
	wantProblem(t, send(t, e, "POST", reg, "", []byte(`{"email":`)), http.StatusBadRequest, "malformed-json")
	wantProblem(t, send(t, e, "POST", reg, "", []byte(``), "Content-Type", "application/json"), http.StatusBadRequest, "malformed-json")
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""} {
		r := send(t, e, "POST", reg, "", []byte(`{"email":"u@body.test","password":"`+testenv.Password+`","name":"U"}`), "Content-Type", ct)
		if _, err := checkProblem(r, http.StatusUnsupportedMediaType, "unsupported-media-type"); err != nil {
			t.Errorf("Content-Type %q: %v", ct, err)
		}
	}
	// None of the refused bodies created the account; a correct one does.
	r := send(t, e, "POST", reg, "", []byte(`{"email":"u@body.test","password":"`+testenv.Password+`","name":"U"}`),
		"Content-Type", "application/json; charset=utf-8")
	wantStatus(t, r, http.StatusCreated, "well-formed register")
}

// Deactivation ends the user's access and refresh tokens at once.
func TestDeactivationKillsTokensImmediately(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@deact.test")
	u, tok := e.UserWithRole(admin.AccessToken, "leaver@deact.test", "member")
	wantStatus(t, send(t, e, "GET", "/api/v1/auth/me", tok.AccessToken, nil), http.StatusOK, "me before")

	r := send(t, e, "PATCH", "/api/v1/users/"+u.ID, admin.AccessToken, map[string]any{"active": false})
	wantStatus(t, r, http.StatusOK, "deactivate")
	var got testenv.User
	r.JSON(t, &got)
	if got.Active {
		t.Fatalf("deactivated user = %+v", got)
	}
	wantProblem(t, send(t, e, "GET", "/api/v1/auth/me", tok.AccessToken, nil), http.StatusUnauthorized, "unauthenticated")
	wantProblem(t, send(t, e, "POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": tok.RefreshToken}),
		http.StatusUnauthorized, "invalid-token")
	wantProblem(t, send(t, e, "POST", "/api/v1/auth/login", "", map[string]string{"email": u.Email, "password": testenv.Password}),
		http.StatusUnauthorized, "invalid-credentials")

	// Reactivation lets the user log in again, but does not bring the
	// sessions that existed at deactivation back to life.
	wantStatus(t, send(t, e, "PATCH", "/api/v1/users/"+u.ID, admin.AccessToken, map[string]any{"active": true}), http.StatusOK, "reactivate")
	fresh := e.Login(u.Email, testenv.Password)
	wantStatus(t, send(t, e, "GET", "/api/v1/auth/me", fresh.AccessToken, nil), http.StatusOK, "me with a new session")
	wantProblem(t, send(t, e, "POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": tok.RefreshToken}),
		http.StatusUnauthorized, "invalid-token")
	wantProblem(t, send(t, e, "GET", "/api/v1/auth/me", tok.AccessToken, nil), http.StatusUnauthorized, "unauthenticated")
}

// A role change applies to the next request of an existing token.
func TestRoleChangeEffectiveOnNextRequest(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@promote.test")
	u, tok := e.UserWithRole(admin.AccessToken, "riser@promote.test", "viewer")
	wantProblem(t, send(t, e, "GET", "/api/v1/users", tok.AccessToken, nil), http.StatusForbidden, "forbidden")

	wantStatus(t, send(t, e, "PATCH", "/api/v1/users/"+u.ID, admin.AccessToken, map[string]any{"role": "admin"}), http.StatusOK, "promote")
	r := send(t, e, "GET", "/api/v1/users", tok.AccessToken, nil)
	wantStatus(t, r, http.StatusOK, "list users with the same token after promotion")
	var page api.UserPage
	r.JSON(t, &page)
	if len(page.Items) < 2 {
		t.Fatalf("users = %+v", page.Items)
	}

	wantStatus(t, send(t, e, "PATCH", "/api/v1/users/"+u.ID, admin.AccessToken, map[string]any{"role": "viewer"}), http.StatusOK, "demote")
	wantProblem(t, send(t, e, "GET", "/api/v1/users", tok.AccessToken, nil), http.StatusForbidden, "forbidden")
}
