package api_test

import (
	"net/http"
	"testing"

	"github.com/maestro-ml/maestro/internal/testenv"
)

// A login answered early (Prefer: respond-async) hands out tokens that work
// at once: the authenticator falls back to the event store when the sessions
// projection has not caught up, and a logout is still honoured.
func TestAsyncLoginTokensWorkImmediately(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Register("async@example.com")
	for range 5 {
		r := e.Do("POST", "/api/v1/auth/login", "", map[string]string{"email": "async@example.com", "password": testenv.Password},
			"Prefer", "respond-async")
		if r.Status != http.StatusAccepted {
			t.Fatalf("async login: %d %s", r.Status, r.Body)
		}
		var tok testenv.Tokens
		r.JSON(t, &tok)
		if me := e.Do("POST", "/api/v1/auth/logout", tok.AccessToken, nil); me.Status != http.StatusNoContent {
			t.Fatalf("logout right after async login: %d %s", me.Status, me.Body)
		}
		if me := e.Do("GET", "/api/v1/auth/me", tok.AccessToken, nil); me.Status != http.StatusUnauthorized {
			t.Fatalf("me after logout: %d %s", me.Status, me.Body)
		}
	}
}
