package api_test

import (
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/maestro-ml/maestro/internal/testenv"
)

// Text that Postgres cannot store (NUL, control characters) is refused at
// the door, so no event can stop a projection; a login with such an e-mail
// is an ordinary failure, and the projections keep up afterwards.
func TestControlCharactersNeverReachTheStream(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("hardening-admin@example.com")

	callProblem(t, e, 400, "validation-failed", "POST", "/api/v1/auth/register", "",
		map[string]string{"email": "nul@example.com", "password": testenv.Password, "name": "a\u0000b"})
	callProblem(t, e, 400, "validation-failed", "POST", "/api/v1/auth/register", "",
		map[string]string{"email": "bell@example.com", "password": testenv.Password, "name": "a\u0007b"})
	callProblem(t, e, 401, "invalid-credentials", "POST", "/api/v1/auth/login", "",
		map[string]string{"email": "a\u0000@example.com", "password": testenv.Password})

	call(t, e, 201, "POST", "/api/v1/projects", admin.AccessToken, map[string]any{"name": "Hardening"})
	pp := "/api/v1/projects/hardening"
	callProblem(t, e, 400, "validation-failed", "POST", "/api/v1/projects", admin.AccessToken, map[string]any{"name": "x\u0000y"})
	callProblem(t, e, 400, "validation-failed", "PATCH", pp, admin.AccessToken, map[string]any{"description": "\u0000"})
	call(t, e, 201, "POST", pp+"/models", admin.AccessToken, map[string]any{"name": "m"})
	callProblem(t, e, 400, "validation-failed", "POST", pp+"/models", admin.AccessToken,
		map[string]any{"name": "m2", "tags": map[string]string{"k": "v\u0000"}})
	callProblem(t, e, 400, "validation-failed", "POST", pp+"/models/m/versions", admin.AccessToken,
		map[string]any{"source": "s3://\u0000"})
	callProblem(t, e, 400, "validation-failed", "POST", pp+"/models/m/versions", admin.AccessToken,
		map[string]any{"signature": map[string]string{"inputs": "\u0000"}})
	callProblem(t, e, 400, "validation-failed", "POST", pp+"/models/m/versions", admin.AccessToken,
		map[string]any{"metrics": map[string]float64{"a\u0000": 1}})

	// Query parameters and page tokens with NUL are client errors, not 500s.
	callProblem(t, e, 400, "validation-failed", "GET", pp+"/models?name_prefix=%00", admin.AccessToken, nil)
	callProblem(t, e, 400, "validation-failed", "GET", "/api/v1/audit?actor=%00", admin.AccessToken, nil)
	forged := base64.RawURLEncoding.EncodeToString([]byte(`{"k":"\u0000","i":"x"}`))
	callProblem(t, e, 400, "invalid-page-token", "GET", pp+"/models?page_token="+forged, admin.AccessToken, nil)

	// Every projection is still applying events: a write answers 201 (its
	// read-your-writes wait succeeded) and is visible.
	r := e.Do("POST", "/api/v1/auth/register", "", map[string]string{"email": "after@example.com", "password": testenv.Password, "name": "After"})
	if r.Status != http.StatusCreated {
		t.Fatalf("register after the hostile inputs: %d %s (a projection may be stuck)", r.Status, r.Body)
	}
	var u testenv.User
	r.JSON(t, &u)
	call(t, e, 200, "GET", "/api/v1/users/"+u.ID, admin.AccessToken, nil)
}

// An e-mail with no account locks exactly like a real account after the
// same number of failures, so a 429 does not reveal that an account exists.
func TestUnknownEmailThrottledLikeAnAccount(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Register("known@example.com")
	statuses := func(email string) []int {
		var out []int
		for range 7 {
			r := e.Do("POST", "/api/v1/auth/login", "", map[string]string{"email": email, "password": "wrong password here"})
			out = append(out, r.Status)
		}
		return out
	}
	known, unknown := statuses("known@example.com"), statuses("nobody@example.com")
	for i := range known {
		if known[i] != unknown[i] {
			t.Fatalf("known account %v, unknown e-mail %v: the answers differ", known, unknown)
		}
	}
	if known[5] != http.StatusTooManyRequests {
		t.Fatalf("statuses %v: want 429 from the sixth attempt", known)
	}
}

// Self-registration is budgeted per client address (each one is stored
// forever); the budget is a setting.
func TestRegistrationBudgetPerAddress(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.RegistrationsPerHour = 3
	e := testenv.Start(t, cfg)
	for _, m := range []string{"r1@example.com", "r2@example.com", "r3@example.com"} {
		e.Register(m)
	}
	r := e.Do("POST", "/api/v1/auth/register", "", map[string]string{"email": "r4@example.com", "password": testenv.Password, "name": "Four"})
	wantProblem(t, r, http.StatusTooManyRequests, "too-many-attempts")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
}
