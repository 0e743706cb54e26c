package api_test

import (
	"net/http"
	"testing"

	"github.com/maestro-ml/maestro/internal/testenv"
)

// The whole auth flow over HTTP: register → login → me → refresh → logout →
// refresh fails, and the old access token is dead at once.
func TestAuthFlow(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	u := e.Register("Ada@Example.com")
	if u.Email != "ada@example.com" || u.Role != "viewer" || !u.Active {
		t.Fatalf("registered user = %+v", u)
	}
	tok := e.Login("ada@example.com", testenv.Password)
	if tok.TokenType != "Bearer" || tok.ExpiresIn <= 0 || tok.ExpiresIn > 900 {
		t.Fatalf("tokens = %+v", tok)
	}
	me := e.Do("GET", "/api/v1/auth/me", tok.AccessToken, nil)
	if me.Status != http.StatusOK {
		t.Fatalf("me: %d %s", me.Status, me.Body)
	}
	var got testenv.User
	me.JSON(t, &got)
	if got.ID != u.ID {
		t.Fatalf("me = %+v, want id %s", got, u.ID)
	}
	r := e.Do("POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": tok.RefreshToken})
	if r.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	var tok2 testenv.Tokens
	r.JSON(t, &tok2)
	if tok2.RefreshToken == tok.RefreshToken || tok2.AccessToken == "" {
		t.Fatal("refresh did not rotate the tokens")
	}
	if r := e.Do("POST", "/api/v1/auth/logout", tok2.AccessToken, nil); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	if r := e.Do("POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": tok2.RefreshToken}); r.Status != http.StatusUnauthorized {
		t.Fatalf("refresh after logout: %d %s", r.Status, r.Body)
	}
	for _, at := range []string{tok.AccessToken, tok2.AccessToken} {
		if r := e.Do("GET", "/api/v1/auth/me", at, nil); r.Status != http.StatusUnauthorized {
			t.Fatalf("me after logout: %d %s", r.Status, r.Body)
		}
	}
}
