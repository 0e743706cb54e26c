package api_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/runner"
)

// The admin dashboard through plain HTTP: every page for an admin, the
// API's refusal for everyone else (pages and forged forms alike, nothing
// appended), and user-supplied text rendered inert.
func TestUIAdminPagesAdminsOnly(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uiadmin.test").AccessToken
	_, _ = e.UserWithRole(admin, "member@uiadmin.test", "member")
	xss := `<img src=x onerror=alert(1)>"'`
	call(t, e, 201, "POST", "/api/v1/auth/register", "", map[string]string{"email": "xss@uiadmin.test", "password": testenv.Password, "name": "Eve " + xss})
	sa := asJSON[struct{ ID string }](t, call(t, e, 201, "POST", "/api/v1/service-accounts", e.Login("root@uiadmin.test", testenv.Password).AccessToken,
		map[string]string{"name": "ci " + xss}))

	call(t, e, 201, "POST", "/api/v1/webhooks", admin, map[string]any{"url": webhookTarget + "?q=" + url.QueryEscape(xss), "events": []string{"maestro.model.*"}})

	a := newUIClient(t, e)
	a.signIn("root@uiadmin.test", testenv.Password)
	pages := map[string][]string{
		"/admin":                           {"System status", "Event stream last sequence", "Runners and slots", "Request rates", webhookTarget, "<td>enabled</td>", "<td>none yet</td>"},
		"/admin/users":                     {"member@uiadmin.test", `action="/admin/users/`, ">Deactivate<"},
		"/admin/tokens":                    {"New token", `action="/admin/service-accounts"`},
		"/admin/service-accounts/" + sa.ID: {`action="/admin/service-accounts/` + sa.ID + `/tokens"`},
		"/admin/audit":                     {"Hash chain", "Verify now", `href="/admin/audit/export"`, "maestro.user.registered"},
	}
	for path, wants := range pages {
		body := a.get(path).want(t, 200).Body
		for _, want := range wants {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q", path, want)
			}
		}
		if strings.Contains(body, "<img src=x") {
			t.Errorf("%s renders user text unescaped", path)
		}
	}
	if users := a.get("/admin/users").Body; !strings.Contains(users, "Eve &lt;img src=x onerror=alert(1)&gt;") {
		t.Errorf("the XSS name is not shown escaped: %.3000s", users)
	}
	if !strings.Contains(a.get("/admin/service-accounts/"+sa.ID).Body, "ci &lt;img src=x") {
		t.Error("the service account's name is not shown escaped")
	}
	// Request rates: this process's counter, compared with the sample the
	// first view of /admin took.
	a.get("/admin/users")
	if body := a.get("/admin").Body; !regexp.MustCompile(`<th scope="row">GET /admin/users</th><td>[1-9]`).MatchString(body) ||
		!strings.Contains(body, "Counts are over the last") {
		t.Errorf("request rates: %.5000s", body[strings.Index(body, "Request rates"):])
	}
	// The navigation shows Admin to admins only.
	if !strings.Contains(a.get("/projects").Body, `href="/admin"`) {
		t.Error("an admin has no Admin link")
	}

	// A member: every admin page and form is the API's 403, even with the
	// member's own valid CSRF token, and no event is appended.
	m := newUIClient(t, e)
	m.signIn("member@uiadmin.test", testenv.Password)
	if strings.Contains(m.get("/projects").Body, `href="/admin"`) {
		t.Error("a member sees the Admin link")
	}
	ctx := context.Background()
	before, err := e.P.Store.LastSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rt := range e.P.API.UIRoutes() {
		if !strings.HasPrefix(rt.Pattern, "/admin") {
			continue
		}
		n++
		path := concretePath(rt.Pattern)
		var r uiResponse
		if rt.Method == "GET" {
			r = m.get(path)
		} else {
			m.get("/projects")
			r = m.post(path, url.Values{"name": {"x"}, "role": {"admin"}, "active": {"false"}, "account": {sa.ID}})
		}
		if r.Status != http.StatusForbidden && r.Status != http.StatusNotFound {
			t.Errorf("member %s %s: %d, want 403 or 404", rt.Method, path, r.Status)
		}
		if r.Status == http.StatusForbidden && !strings.Contains(r.Body, "admin") {
			t.Errorf("member %s %s: refusal without the API's reason: %.300s", rt.Method, path, r.Body)
		}
	}
	if n < 12 {
		t.Errorf("only %d admin routes checked", n)
	}
	// The member's own session may forge the real ids too.
	m.get("/projects")
	m.post("/admin/users/"+sa.ID, url.Values{"active": {"false"}}).want(t, 403)
	m.get("/projects")
	m.post("/admin/service-accounts/"+sa.ID+"/tokens", url.Values{"name": {"stolen"}}).want(t, 403)
	if after, _ := e.P.Store.LastSequence(ctx); after != before {
		t.Errorf("a member's forms appended events: %d -> %d", before, after)
	}
}

// Users through the forms: a role change is what the API reads back and
// the audit viewer lists; an admin cannot deactivate themselves (the
// service's reason is shown); deactivating someone ends their browser
// session at once, and reactivating lets them sign in again.
func TestUIAdminUsers(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uiadminusers.test").AccessToken
	me := asJSON[struct{ ID string }](t, call(t, e, 200, "GET", "/api/v1/auth/me", admin, nil))
	ann := e.Register("ann@uiadminusers.test")

	a := newUIClient(t, e)
	a.signIn("root@uiadminusers.test", testenv.Password)
	a.get("/admin/users").want(t, 200)
	a.post("/admin/users/"+ann.ID, url.Values{"role": {"member"}}).want(t, 303, "/admin/users?done=user-updated")
	got := asJSON[struct{ Role string }](t, call(t, e, 200, "GET", "/api/v1/users/"+ann.ID, admin, nil))
	if got.Role != "member" {
		t.Fatalf("role after the form: %q", got.Role)
	}
	if !strings.Contains(a.get("/admin/users?done=user-updated").Body, "User saved.") {
		t.Error("no notice after saving a user")
	}
	// A role that does not exist: the API's reason, nothing changed.
	a.post("/admin/users/"+ann.ID, url.Values{"role": {"emperor"}}).want(t, 400)

	// The audit viewer shows the change (the audit projection lingers:
	// poll until it has it).
	filter := "/admin/audit?" + url.Values{"type": {"maestro.user.role_changed.v1"}}.Encode()
	deadline := time.Now().Add(15 * time.Second)
	for {
		body := a.get(filter).want(t, 200).Body
		if strings.Contains(body, "<td>maestro.user.role_changed.v1</td>") && strings.Contains(body, ann.ID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the role change never reached the audit viewer: %.3000s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A bad filter is the API's reason on the page.
	if r := a.get("/admin/audit?since=yesterday").want(t, 400); !strings.Contains(r.Body, "since must be an RFC 3339 timestamp") {
		t.Errorf("bad since: %.800s", r.Body)
	}
	// Users a page at a time (the API's max_results and page tokens).
	p1 := a.get("/admin/users?max_results=1").want(t, 200).Body
	next := regexp.MustCompile(`<input type="hidden" name="page_token" value="([^"]+)">`).FindStringSubmatch(p1)
	if next == nil || strings.Count(p1, `<form method="post" action="/admin/users/`) != 2 || !strings.Contains(p1, `name="max_results" value="1"`) {
		t.Fatalf("first page of one user: %.3000s", p1)
	}
	if p2 := a.get("/admin/users?max_results=1&page_token="+url.QueryEscape(html.UnescapeString(next[1]))).want(t, 200).Body; p2 == p1 {
		t.Error("the next page is the first again")
	}

	// An admin cannot deactivate themselves: the service's reason.
	a.get("/admin/users")
	if r := a.post("/admin/users/"+me.ID, url.Values{"active": {"false"}}).want(t, 409); !strings.Contains(r.Body, "admins cannot deactivate themselves") {
		t.Errorf("self-deactivation page: %.800s", r.Body)
	}

	// Deactivation ends ann's session: her next request goes to sign-in.
	u := newUIClient(t, e)
	u.signIn("ann@uiadminusers.test", testenv.Password)
	a.get("/admin/users")
	a.post("/admin/users/"+ann.ID, url.Values{"active": {"false"}}).want(t, 303, "/admin/users?done=user-updated")
	u.get("/projects").want(t, 303, "/?next=%2Fprojects")
	if !strings.Contains(a.get("/admin/users").Body, ">Reactivate<") {
		t.Error("no reactivate control for a deactivated user")
	}
	a.post("/admin/users/"+ann.ID, url.Values{"active": {"true"}}).want(t, 303, "/admin/users?done=user-updated")
	u.signIn("ann@uiadminusers.test", testenv.Password)
}

var tokenSecret = regexp.MustCompile(`id="new-token" readonly value="([^"]+)"`)

// Tokens through the forms: the secret is on the creating answer only, it
// works against the API, and revoking it from the list stops it.
func TestUIAdminTokens(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@uiadmintok.test")
	a := newUIClient(t, e)
	a.signIn("root@uiadmintok.test", testenv.Password)
	a.get("/admin/tokens").want(t, 200)
	r := a.post("/admin/tokens", url.Values{"name": {"laptop"}}).want(t, 201)
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q on the page with the secret", cc)
	}
	m := tokenSecret.FindStringSubmatch(r.Body)
	if m == nil {
		t.Fatalf("no secret on the creating answer: %.3000s", r.Body)
	}
	secret := m[1]
	if r.Header.Get("Location") != "" {
		t.Error("the creating answer redirects")
	}
	list := a.get("/admin/tokens").want(t, 200).Body
	if strings.Contains(list, secret) || !strings.Contains(list, "laptop") {
		t.Fatalf("the list shows the secret again, or not the token: %.3000s", list)
	}
	call(t, e, 200, "GET", "/api/v1/projects", secret, nil)

	// Revoke it from the list: the API refuses it from then on.
	id := regexp.MustCompile(`action="/admin/tokens/([0-9a-f-]{36})/revoke"`).FindStringSubmatch(list)
	if id == nil {
		t.Fatalf("no revoke form: %.3000s", list)
	}
	a.post("/admin/tokens/"+id[1]+"/revoke", nil).want(t, 303, "/admin/tokens?done=token-revoked")
	call(t, e, 401, "GET", "/api/v1/projects", secret, nil)

	// A service account and its token, made on its page.
	a.get("/admin/tokens")
	r = a.post("/admin/service-accounts", url.Values{"name": {"ci-bot"}, "role": {"member"}}).want(t, 303)
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, "/admin/service-accounts/") {
		t.Fatalf("service account page %q", loc)
	}
	path := strings.TrimSuffix(loc, "?done=service-account-created")
	a.get(loc).want(t, 200)
	r = a.post(path+"/tokens", url.Values{"name": {"deploy"}}).want(t, 201)
	m = tokenSecret.FindStringSubmatch(r.Body)
	if m == nil {
		t.Fatalf("no service account secret: %.3000s", r.Body)
	}
	me := asJSON[struct{ Name, Kind string }](t, call(t, e, 200, "GET", "/api/v1/auth/me", m[1], nil))
	if me.Name != "ci-bot" || me.Kind != "service_account" {
		t.Errorf("the service account's token acts as %+v", me)
	}
	if strings.Contains(a.get(path).Body, m[1]) {
		t.Error("the service account's page shows the secret again")
	}
	// A bad form: the API's reason on the page, nothing created.
	a.get("/admin/tokens")
	a.post("/admin/tokens", url.Values{"name": {"x"}, "project": {"no-such-project"}}).want(t, 404)
}

// The audit export link streams the API's export as an attachment, and
// Verify now runs the platform's verification in the background and shows
// its outcome.
func TestUIAdminAuditExportAndVerify(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uiadminaudit.test").AccessToken
	a := newUIClient(t, e)
	a.signIn("root@uiadminaudit.test", testenv.Password)

	// The export needs a signed checkpoint: poll until one covers the trail.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := a.get("/admin/audit/export")
		if r.Status == 200 {
			if cd := r.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") || !strings.Contains(r.Body, "maestro.user") {
				t.Fatalf("export: %q %.500s", cd, r.Body)
			}
			api := call(t, e, 200, "GET", "/api/v1/audit/export", admin, nil)
			if first := strings.SplitN(string(api.Body), "\n", 2)[0]; !strings.HasPrefix(r.Body, first) {
				t.Errorf("the UI export differs from the API's: %.200s vs %.200s", r.Body, first)
			}
			break
		}
		if r.Status != 503 || time.Now().After(deadline) {
			t.Fatalf("export: %d %.500s", r.Status, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(a.get("/admin/audit").Body, "Latest signed checkpoint: sequence") {
		t.Error("no checkpoint shown")
	}
	a.post("/admin/audit/verify", nil).want(t, 303, "/admin/audit?done=verify-started")
	deadline = time.Now().Add(30 * time.Second)
	for {
		body := a.get("/admin/audit").Body
		if strings.Contains(body, "<strong>intact</strong>") {
			break
		}
		if strings.Contains(body, "could not run") || strings.Contains(body, "<strong>tampered</strong>") || time.Now().After(deadline) {
			t.Fatalf("verification: %.3000s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The runners every process announces (runner.RunnerBucket) are on the
// dashboard with their executor and slots; a stopped runner leaves it.
func TestUIAdminRunners(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.Runner = true
	e := testenv.Start(t, cfg)
	e.Admin("root@uirunners.test")
	u := newUIClient(t, e)
	u.signIn("root@uirunners.test", testenv.Password)
	id := e.P.Runner.ID()
	row := `<tr><th scope="row">` + id + `</th><td>local</td><td>4</td><td>0</td>`
	if b := u.get("/admin").want(t, 200).Body; !strings.Contains(b, row) {
		t.Fatalf("the runner is not on the dashboard (want %s): %.4000s", row, b)
	}
	e.P.Runner.Close()
	listed, err := runner.Runners(context.Background(), e.P.Store.JetStream())
	if err != nil || len(listed) != 0 {
		t.Fatalf("runners after the runner stopped: %+v %v", listed, err)
	}
	if b := u.get("/admin").want(t, 200).Body; strings.Contains(b, row) || !strings.Contains(b, "No runner is running") {
		t.Errorf("a stopped runner is still listed: %.4000s", b)
	}
}
