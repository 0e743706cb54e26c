package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// race runs f(i) for i in [0,n) in n goroutines released at once and returns
// their results in order; transport errors fail t.
func race(t *testing.T, n int, f func(i int) (testenv.Response, error)) []testenv.Response {
	t.Helper()
	out := make([]testenv.Response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i], errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Twenty concurrent registrations of one address, in different letter
// cases: the reservation subject makes exactly one win.
func TestConcurrentRegistrationSameEmail(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	const n = 20
	rs := race(t, n, func(i int) (testenv.Response, error) {
		// Race@x.io, rACE@X.IO, ...: every case variant normalises to race@x.io.
		var b strings.Builder
		for j, c := range "race@x.io" {
			if (i>>(j%5))&1 == 1 {
				c = []rune(strings.ToUpper(string(c)))[0]
			}
			b.WriteRune(c)
		}
		return sendE(e, "POST", "/api/v1/auth/register", "",
			map[string]string{"email": b.String(), "password": testenv.Password, "name": fmt.Sprintf("Racer %d", i)})
	})
	var won []testenv.Response
	for i, r := range rs {
		switch r.Status {
		case http.StatusCreated:
			won = append(won, r)
		case http.StatusConflict:
			if _, err := checkProblem(r, http.StatusConflict, "email-taken"); err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		default:
			t.Errorf("request %d: %d %s", i, r.Status, r.Body)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d registrations succeeded, want exactly 1", len(won))
	}
	var u testenv.User
	won[0].JSON(t, &u)
	if u.Email != "race@x.io" {
		t.Fatalf("winner = %+v", u)
	}

	// Exactly one account exists, and it is the winner's.
	admin := e.Admin("root@x.io")
	var found []api.UserResponse
	for _, x := range allUsers(t, e, admin.AccessToken) {
		if strings.EqualFold(x.Email, "race@x.io") {
			found = append(found, x)
		}
	}
	if len(found) != 1 || found[0].ID != u.ID {
		t.Fatalf("accounts for race@x.io = %+v, want only %s", found, u.ID)
	}
	e.Login("RACE@x.io", testenv.Password)
}

// Ten concurrent refreshes of one refresh token: one rotates it, the others
// are reuse, and reuse revokes the session (DecideRefresh), so even the
// winner's new tokens die.
func TestConcurrentRefreshSameToken(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Register("refresh@x.io")
	tok := e.Login("refresh@x.io", testenv.Password)
	const n = 10
	rs := race(t, n, func(int) (testenv.Response, error) {
		return sendE(e, "POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": tok.RefreshToken})
	})
	var won []testenv.Tokens
	for i, r := range rs {
		switch r.Status {
		case http.StatusOK:
			var nt testenv.Tokens
			r.JSON(t, &nt)
			won = append(won, nt)
		default:
			if _, err := checkProblem(r, http.StatusUnauthorized, "invalid-token"); err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d refreshes succeeded, want exactly 1", len(won))
	}
	w := won[0]
	if w.RefreshToken == "" || w.RefreshToken == tok.RefreshToken {
		t.Fatalf("winner did not get a rotated refresh token: %+v", w)
	}

	// The session is revoked: the winner's new refresh token fails (the write
	// side decides on the event stream, so this holds at once) ...
	wantProblem(t, send(t, e, "POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": w.RefreshToken}),
		http.StatusUnauthorized, "invalid-token")
	wantProblem(t, send(t, e, "POST", "/api/v1/auth/refresh", "", map[string]string{"refresh_token": tok.RefreshToken}),
		http.StatusUnauthorized, "invalid-token")
	// ... and every access token of the session is already refused: the
	// losers' 401s went out only after the sessions projection had the
	// revocation.
	for _, at := range []string{tok.AccessToken, w.AccessToken} {
		wantProblem(t, send(t, e, "GET", "/api/v1/auth/me", at, nil), http.StatusUnauthorized, "unauthenticated")
	}
	// The account itself is fine: a new login works.
	nt := e.Login("refresh@x.io", testenv.Password)
	wantStatus(t, send(t, e, "GET", "/api/v1/auth/me", nt.AccessToken, nil), http.StatusOK, "me after a new login")
}

// The login throttles bound the number of password guesses that get an
// answer, however the guesses are timed. Parallel guesses must not each pass
// the "not locked yet" check before any of them is counted.
func TestLoginThrottleHoldsUnderConcurrency(t *testing.T) {
	t.Parallel()
	t.Run("per account", func(t *testing.T) {
		t.Parallel()
		e := testenv.Start(t, testenv.Config(t))
		e.Register("target@parallel.test")
		free := identity.DefaultThrottle().FreeFailures
		rs := race(t, 30, func(i int) (testenv.Response, error) {
			return sendE(e, "POST", "/api/v1/auth/login", "", map[string]string{"email": "target@parallel.test", "password": fmt.Sprintf("guess %d", i)})
		})
		answered := 0
		for i, r := range rs {
			switch r.Status {
			case http.StatusUnauthorized:
				answered++
			case http.StatusTooManyRequests:
			default:
				t.Errorf("guess %d: %d %s", i, r.Status, r.Body)
			}
		}
		if answered > free {
			t.Errorf("%d of 30 parallel wrong guesses were evaluated (401); the account allows %d before backing off", answered, free)
		}
	})
	t.Run("per address", func(t *testing.T) {
		t.Parallel()
		e := testenv.Start(t, testenv.Config(t))
		const budget = 100
		rs := race(t, 150, func(i int) (testenv.Response, error) {
			return sendE(e, "POST", "/api/v1/auth/login", "", map[string]string{"email": fmt.Sprintf("ghost%d@parallel.test", i), "password": "guess"})
		})
		answered := 0
		for i, r := range rs {
			switch r.Status {
			case http.StatusUnauthorized:
				answered++
			case http.StatusTooManyRequests:
			default:
				t.Errorf("attempt %d: %d %s", i, r.Status, r.Body)
			}
		}
		if answered > budget {
			t.Errorf("%d of 150 parallel failed logins from one address were evaluated (401); the budget is %d per hour", answered, budget)
		}
	})
}
