package api_test

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/internal/testenv"
)

func login(t testing.TB, e *testenv.Env, email, password string) testenv.Response {
	t.Helper()
	return send(t, e, "POST", "/api/v1/auth/login", "", map[string]string{"email": email, "password": password})
}

// retryAfter parses a 429's Retry-After and requires it to be at least 1s.
func retryAfter(t testing.TB, r testenv.Response) time.Duration {
	t.Helper()
	v := r.Header.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("Retry-After = %q, want an integer >= 1", v)
	}
	return time.Duration(n) * time.Second
}

// sameProblem compares what a client can see of two failures.
func sameProblem(t testing.TB, a, b testenv.Response, what string) {
	t.Helper()
	pa, err := problemOf(a)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := problemOf(b)
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != b.Status || pa.Type != pb.Type || pa.Title != pb.Title || pa.Detail != pb.Detail || pa.Status != pb.Status {
		t.Fatalf("%s: responses differ:\n%d %+v\n%d %+v", what, a.Status, pa, b.Status, pb)
	}
	for _, h := range []string{"Content-Type", "WWW-Authenticate", "Retry-After", "Cache-Control"} {
		if a.Header.Get(h) != b.Header.Get(h) {
			t.Fatalf("%s: header %s differs: %q vs %q", what, h, a.Header.Get(h), b.Header.Get(h))
		}
	}
}

// Per-account back-off: five failures are free and indistinguishable from
// an unknown e-mail; the sixth attempt is refused even with the right
// password until Retry-After has passed; other accounts are unaffected.
func TestLoginThrottlePerAccount(t *testing.T) {
	t.Parallel()
	if p := identity.DefaultThrottle(); p.FreeFailures != 5 || p.Base != time.Second {
		t.Fatalf("default throttle = %+v; this test is written for 5 free failures and a 1s base", p)
	}
	e := testenv.Start(t, testenv.Config(t))
	a := e.Register("alice@throttle.test")
	e.Register("bob@throttle.test")

	for i := range 5 {
		wrong := login(t, e, "alice@throttle.test", fmt.Sprintf("wrong password %d", i))
		wantProblem(t, wrong, http.StatusUnauthorized, "invalid-credentials")
		unknown := login(t, e, fmt.Sprintf("nobody%d@throttle.test", i), fmt.Sprintf("wrong password %d", i))
		sameProblem(t, wrong, unknown, fmt.Sprintf("attempt %d: wrong password vs unknown e-mail", i+1))
	}
	// The sixth attempt is throttled even with the right password (the
	// default back-off after 5 failures is 1s, so it must come quickly).
	locked := login(t, e, "alice@throttle.test", testenv.Password)
	wantProblem(t, locked, http.StatusTooManyRequests, "too-many-attempts")
	wait := retryAfter(t, locked)

	// Failures on Alice never lock Bob.
	wantStatus(t, login(t, e, "bob@throttle.test", testenv.Password), http.StatusOK, "bob logs in while alice is locked")
	wantProblem(t, login(t, e, "bob@throttle.test", "not bob's password"), http.StatusUnauthorized, "invalid-credentials")

	e.Clock.Advance(wait + time.Second)
	ok := login(t, e, "alice@throttle.test", testenv.Password)
	wantStatus(t, ok, http.StatusOK, "alice after Retry-After")

	// The success reset the streak: one more failure is an ordinary 401.
	wantProblem(t, login(t, e, "alice@throttle.test", "wrong again"), http.StatusUnauthorized, "invalid-credentials")

	// Every failure was recorded on Alice's stream; the reset too.
	admin := e.Admin("root@throttle.test")
	seq := ok.Header.Get("Maestro-Sequence")
	page := auditPage(t, e, admin.AccessToken, url.Values{"subject": {events.Subject(events.AggUser, a.ID)},
		"type": {events.UserLoginFailed}, "min_sequence": {seq}, "max_results": {"200"}})
	if n := len(page.Items); n < 5 {
		t.Fatalf("login_failed entries for alice = %d, want >= 5", n)
	}
}

// Per-address budget: 100 failed logins per hour from one client address,
// spread over real accounts and unknown e-mails, and then even a correct
// login from that address is refused; another address is not.
func TestLoginThrottlePerAddress(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	const budget = 100 // identity.Config.AddressFailuresPerHour default
	accounts := []string{"a@addr.test", "b@addr.test", "c@addr.test", "d@addr.test"}
	for _, a := range accounts {
		e.Register(a)
	}
	start := time.Now()
	n := 0
	// Four wrong passwords per account stays below the per-account limit.
	for _, a := range accounts {
		for range 4 {
			n++
			wantProblem(t, login(t, e, a, fmt.Sprintf("spray %d", n)), http.StatusUnauthorized, "invalid-credentials")
		}
	}
	for n < budget {
		n++
		wantProblem(t, login(t, e, fmt.Sprintf("ghost%d@addr.test", n), "spray"), http.StatusUnauthorized, "invalid-credentials")
	}
	// The budget refills at 100/h (one failure per 36s of real time), so a
	// very slow run may legitimately get a few extra attempts; never fewer.
	extra := int(time.Since(start) / (time.Hour / budget))
	var refused testenv.Response
	for i := 0; ; i++ {
		r := login(t, e, accounts[0], testenv.Password)
		if r.Status == http.StatusTooManyRequests {
			refused = r
			break
		}
		if i >= extra {
			t.Fatalf("attempt %d after %d failures: %d %s, want 429", i+1, budget, r.Status, r.Body)
		}
		wantProblem(t, login(t, e, "ghost-extra@addr.test", "spray"), http.StatusUnauthorized, "invalid-credentials")
	}
	wantProblem(t, refused, http.StatusTooManyRequests, "too-many-attempts")
	wait := retryAfter(t, refused)
	if wait > time.Hour {
		t.Fatalf("Retry-After %v exceeds the one-hour window", wait)
	}

	// Another loopback address has its own budget.
	other := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext,
	}}
	oe := *e
	oe.Client = other
	r, err := sendE(&oe, "POST", "/api/v1/auth/login", "", map[string]string{"email": accounts[1], "password": testenv.Password})
	if err != nil {
		t.Fatalf("login from 127.0.0.2 (needs the 127/8 loopback route): %v", err)
	}
	wantStatus(t, r, http.StatusOK, "login from another address")

	// Once Retry-After has passed the address may try again.
	e.Clock.Advance(wait + time.Second)
	wantStatus(t, login(t, e, accounts[0], testenv.Password), http.StatusOK, "login after the address Retry-After")
}

func auditPage(t testing.TB, e *testenv.Env, token string, q url.Values) api.AuditPage {
	t.Helper()
	r := send(t, e, "GET", "/api/v1/audit?"+q.Encode(), token, nil)
	wantStatus(t, r, http.StatusOK, "audit "+q.Encode())
	var p api.AuditPage
	r.JSON(t, &p)
	return p
}

// auditAll follows next_page_token to the end.
func auditAll(t testing.TB, e *testenv.Env, token string, q url.Values) []auditItem {
	t.Helper()
	var all []auditItem
	q = cloneValues(q)
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("audit paging does not end")
		}
		p := auditPage(t, e, token, q)
		for _, it := range p.Items {
			all = append(all, auditItem{it.Sequence, it.Type, it.Actor, it.Subject, it.Time})
		}
		if p.NextPageToken == "" {
			return all
		}
		q.Set("page_token", p.NextPageToken)
	}
}

type auditItem struct {
	Seq                  uint64
	Type, Actor, Subject string
	Time                 time.Time
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// Failed logins are in the audit trail, and its filters and paging work.
func TestLoginFailuresInAuditAndFilters(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@audit.test")
	adminID := meID(t, e, admin.AccessToken)
	u := e.Register("carol@audit.test")
	for i := range 3 {
		wantProblem(t, login(t, e, "carol@audit.test", fmt.Sprintf("bad %d", i)), http.StatusUnauthorized, "invalid-credentials")
		wantProblem(t, login(t, e, "nobody@audit.test", "bad"), http.StatusUnauthorized, "invalid-credentials")
	}
	r := send(t, e, "PATCH", "/api/v1/users/"+u.ID, admin.AccessToken, map[string]any{"role": "member"})
	wantStatus(t, r, http.StatusOK, "promote carol")
	seq := r.Header.Get("Maestro-Sequence")
	if seq == "" {
		t.Fatal("PATCH has no Maestro-Sequence")
	}
	base := url.Values{"min_sequence": {seq}}
	all := auditAll(t, e, admin.AccessToken, base)

	// Newest first, no duplicates.
	for i := 1; i < len(all); i++ {
		if all[i].Seq >= all[i-1].Seq {
			t.Fatalf("audit not strictly newest first at %d: %d then %d", i, all[i-1].Seq, all[i].Seq)
		}
	}
	count := func(f func(auditItem) bool) int {
		n := 0
		for _, it := range all {
			if f(it) {
				n++
			}
		}
		return n
	}
	carolSubj := events.Subject(events.AggUser, u.ID)
	if n := count(func(it auditItem) bool {
		return it.Type == events.UserLoginFailed && it.Subject == carolSubj && it.Actor == "anonymous"
	}); n != 3 {
		t.Errorf("login_failed entries for carol = %d, want 3", n)
	}
	// Rejected logins for e-mails with no account are security signals in
	// the bounded MAESTRO_SECURITY stream, not history: the audit trail
	// (which follows MAESTRO_EVENTS) has none, the stream has all three.
	if n := count(func(it auditItem) bool { return it.Type == events.LoginRejected }); n != 0 {
		t.Errorf("login_rejected entries in the audit trail = %d, want 0", n)
	}
	sec, err := e.P.Store.JetStream().Stream(t.Context(), events.SecurityStreamName)
	if err != nil {
		t.Fatal(err)
	}
	nobody := events.LoginRejectionsSubject("nobody@audit.test")
	info, err := sec.Info(t.Context(), jetstream.WithSubjectFilter(nobody))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[nobody]; n != 3 {
		t.Errorf("login_rejected signals for nobody@audit.test = %d, want 3", n)
	}

	// Each filter returns exactly the matching subset of the whole trail,
	// across pages of 2.
	check := func(name string, q url.Values, match func(auditItem) bool) {
		t.Helper()
		var want []uint64
		for _, it := range all {
			if match(it) {
				want = append(want, it.Seq)
			}
		}
		if len(want) == 0 {
			t.Fatalf("%s: the fixture has no matching entries", name)
		}
		q = cloneValues(q)
		q.Set("max_results", "2")
		var got []uint64
		for _, it := range auditAll(t, e, admin.AccessToken, q) {
			got = append(got, it.Seq)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got seqs %v, want %v", name, got, want)
		}
	}
	check("type login_failed", url.Values{"type": {events.UserLoginFailed}}, func(it auditItem) bool { return it.Type == events.UserLoginFailed })
	check("actor admin", url.Values{"actor": {"user:" + adminID}}, func(it auditItem) bool { return it.Actor == "user:"+adminID })
	check("actor anonymous", url.Values{"actor": {"anonymous"}}, func(it auditItem) bool { return it.Actor == "anonymous" })
	check("subject carol", url.Values{"subject": {carolSubj}}, func(it auditItem) bool { return it.Subject == carolSubj })
	check("subject+type", url.Values{"subject": {carolSubj}, "type": {events.UserRoleChanged}},
		func(it auditItem) bool { return it.Subject == carolSubj && it.Type == events.UserRoleChanged })
	check("no filter", url.Values{}, func(auditItem) bool { return true })

	// since is inclusive, until exclusive.
	times := make([]time.Time, 0, len(all))
	for _, it := range all {
		times = append(times, it.Time)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	since, until := times[len(times)/4], times[3*len(times)/4]
	if !since.Before(until) {
		t.Fatalf("fixture times too close: %v .. %v", since, until)
	}
	check("since/until", url.Values{"since": {since.Format(time.RFC3339Nano)}, "until": {until.Format(time.RFC3339Nano)}},
		func(it auditItem) bool { return !it.Time.Before(since) && it.Time.Before(until) })
	check("since+type", url.Values{"since": {since.Format(time.RFC3339Nano)}, "type": {events.UserLoginFailed}},
		func(it auditItem) bool { return !it.Time.Before(since) && it.Type == events.UserLoginFailed })

	// A filter that matches nothing is an empty page, not an error.
	if p := auditPage(t, e, admin.AccessToken, url.Values{"actor": {"user:nobody"}}); len(p.Items) != 0 || p.NextPageToken != "" {
		t.Errorf("unmatched filter = %+v", p)
	}
	// Bad parameters are 400 problems.
	for _, q := range []url.Values{
		{"max_results": {"0"}}, {"max_results": {"201"}}, {"max_results": {"x"}},
		{"since": {"yesterday"}}, {"until": {"2024-13-01T00:00:00Z"}}, {"min_sequence": {"-1"}},
	} {
		wantProblem(t, send(t, e, "GET", "/api/v1/audit?"+q.Encode(), admin.AccessToken, nil), http.StatusBadRequest, "validation-failed")
	}
	for _, tok := range []string{"garbage!", "eyJzIjotMX0"} {
		wantProblem(t, send(t, e, "GET", "/api/v1/audit?page_token="+url.QueryEscape(tok), admin.AccessToken, nil),
			http.StatusBadRequest, "invalid-page-token")
	}
}

func meID(t testing.TB, e *testenv.Env, token string) string {
	t.Helper()
	r := send(t, e, "GET", "/api/v1/auth/me", token, nil)
	wantStatus(t, r, http.StatusOK, "me")
	var u testenv.User
	r.JSON(t, &u)
	return u.ID
}

// Review finding 8: an unknown e-mail's failure streak is event-sourced
// (login_rejected on its subject of MAESTRO_SECURITY), like an account's
// (login_failed on the user). It used to live in one API instance's memory:
// after a restart (or on another instance) the unknown e-mail answered 401
// where an account with the same history answered 429, which told them
// apart. Now both stay locked across a restart.
func TestUnknownEmailStreakSurvivesRestart(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	// The default first back-off (1 s) can lapse while a loaded machine
	// restarts the platform, after which both answer 401 and the test says
	// nothing (it failed that way in CI); a minute outlasts any restart.
	cfg.Throttle.Base = time.Minute
	e := testenv.Start(t, cfg)
	e.Register("known@restart.test")
	free := cfg.Throttle.FreeFailures
	for i := range free {
		for _, email := range []string{"known@restart.test", "ghost@restart.test"} {
			wantProblem(t, login(t, e, email, fmt.Sprintf("wrong password %d", i)), http.StatusUnauthorized, "invalid-credentials")
		}
	}
	e.Stop()
	e = testenv.Start(t, cfg) // same data dir and database: a restarted (or another) instance
	known := login(t, e, "known@restart.test", "wrong password again")
	unknown := login(t, e, "ghost@restart.test", "wrong password again")
	wantProblem(t, known, http.StatusTooManyRequests, "too-many-attempts")
	sameProblem(t, known, unknown, "after a restart: account vs unknown e-mail")
}
