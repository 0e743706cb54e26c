package api_test

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/testenv"
)

// The web UI through a plain HTTP client, as a browser would send it: the
// cookie session, CSRF, headers and the generated route checks. The browser
// tests (api/ui_browser_test.go) drive the same pages in Chromium.

// uiClient is a browser-like client: it keeps the cookies the UI sets
// (Go's cookie jar does not send Secure cookies over http, browsers do from
// 127.0.0.1) and does not follow redirects, so tests see them.
type uiClient struct {
	t       *testing.T
	e       *testenv.Env
	c       *http.Client
	cookies map[string]string
	// csrf is the form token of the last page read.
	csrf string
}

func newUIClient(t *testing.T, e *testenv.Env) *uiClient {
	return &uiClient{t: t, e: e, cookies: map[string]string{}, c: &http.Client{
		Timeout:       e.Client.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type uiResponse struct {
	Status int
	Header http.Header
	Body   string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (u *uiClient) do(method, path string, form url.Values, headers ...string) uiResponse {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u.e.URL+path, body)
	if err != nil {
		u.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for name, v := range u.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: v})
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		u.t.Fatal(err)
	}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(u.cookies, c.Name)
		} else {
			u.cookies[c.Name] = c.Value
		}
	}
	if m := csrfField.FindStringSubmatch(string(b)); m != nil {
		u.csrf = html.UnescapeString(m[1])
	}
	return uiResponse{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
}

func (u *uiClient) get(path string) uiResponse { u.t.Helper(); return u.do("GET", path, nil) }

// post sends a form with the last page's CSRF token.
func (u *uiClient) post(path string, form url.Values) uiResponse {
	u.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if !form.Has("csrf") {
		form.Set("csrf", u.csrf)
	}
	return u.do("POST", path, form)
}

// want fails the test unless r has status (and, for a redirect, location).
func (r uiResponse) want(t *testing.T, status int, location ...string) uiResponse {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body: %.600s", r.Status, status, r.Body)
	}
	if len(location) > 0 && r.Header.Get("Location") != location[0] {
		t.Fatalf("Location %q, want %q", r.Header.Get("Location"), location[0])
	}
	return r
}

// signIn signs in through the form and fails the test unless it worked.
func (u *uiClient) signIn(email, password string) {
	u.t.Helper()
	u.get("/").want(u.t, 200)
	u.post("/signin", url.Values{"email": {email}, "password": {password}}).want(u.t, 303, "/projects")
	u.get("/projects").want(u.t, 200)
}

func TestUISignInCookieAndSignOut(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@ui.test")
	u := newUIClient(t, e)

	// Signed out, / is the sign-in form: an e-mail and a password field.
	r := u.get("/").want(t, 200)
	for _, want := range []string{`type="email"`, `type="password"`, `action="/signin"`} {
		if !strings.Contains(r.Body, want) {
			t.Errorf("sign-in page lacks %s", want)
		}
	}
	if got := r.Header.Get("Content-Security-Policy"); !strings.Contains(got, "script-src 'self'") || strings.Contains(got, "unsafe-inline") {
		t.Errorf("CSP %q", got)
	}

	// A wrong password: the form again, 401, no cookie.
	u.post("/signin", url.Values{"email": {"root@ui.test"}, "password": {"wrong password!"}}).want(t, 401)
	if _, ok := u.cookies["__Host-maestro"]; ok {
		t.Fatal("a failed sign-in set the session cookie")
	}

	// Signing in sets the session cookie with every protective flag.
	u.get("/")
	form := url.Values{"email": {"root@ui.test"}, "password": {testenv.Password}, "csrf": {u.csrf}}
	req, _ := http.NewRequest("POST", e.URL+"/signin", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "__Host-maestro-pre", Value: u.cookies["__Host-maestro-pre"]})
	resp, err := u.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/projects" {
		t.Fatalf("sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-maestro" {
			session = c
		}
	}
	if session == nil || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/" || session.Domain != "" {
		t.Fatalf("session cookie %+v", session)
	}
	u.cookies["__Host-maestro"] = session.Value

	// Signed in: every page shows Sign out and the navigation.
	r = u.get("/projects").want(t, 200)
	for _, link := range []string{">Projects<", ">Models<", ">Experiments<", ">Jobs<", ">Approvals<", ">Admin<", ">Audit<", ">Sign out<"} {
		if !strings.Contains(r.Body, link) {
			t.Errorf("the projects page lacks %s", link)
		}
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.Header.Get("Cache-Control"))
	}
	u.get("/").want(t, 303, "/projects")

	// The cookie is no API credential, neither as a cookie nor as a token.
	api := u.do("GET", "/api/v1/auth/me", nil)
	if api.Status != 401 {
		t.Errorf("the API accepted the UI's cookie: %d", api.Status)
	}
	if r := e.Do("GET", "/api/v1/auth/me", session.Value, nil); r.Status != 401 {
		t.Errorf("the API accepted the web token as a bearer token: %d", r.Status)
	}

	// Sign out ends the session: the old cookie is refused afterwards.
	u.post("/signout", nil).want(t, 303, "/")
	if _, ok := u.cookies["__Host-maestro"]; ok {
		t.Error("sign-out left the cookie")
	}
	u.cookies["__Host-maestro"] = session.Value
	u.get("/projects").want(t, 303, "/?next=%2Fprojects")
}

// Signing in again in the same browser (another tab) ends the session its
// old cookie held: no session lives on that nobody can sign out of.
func TestUISignInAgainEndsThePreviousSession(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@uiagain.test")
	u := newUIClient(t, e)
	u.signIn("root@uiagain.test", testenv.Password)
	first := u.cookies["__Host-maestro"]
	// A sign-in form the browser had loaded before (its pre-session
	// cookie), submitted while the browser holds a session.
	delete(u.cookies, "__Host-maestro")
	u.get("/").want(t, 200)
	u.cookies["__Host-maestro"] = first
	u.post("/signin", url.Values{"email": {"root@uiagain.test"}, "password": {testenv.Password}}).want(t, 303, "/projects")
	if u.cookies["__Host-maestro"] == first {
		t.Fatal("the second sign-in kept the first cookie")
	}
	u.get("/projects").want(t, 200)
	old := newUIClient(t, e)
	old.cookies["__Host-maestro"] = first
	eventually(t, 10*time.Second, "the first session ended", func() error {
		if r := old.get("/projects"); r.Status != 303 {
			return fmt.Errorf("the first session's cookie: %d", r.Status)
		}
		return nil
	})
}

// Deactivating a user (through the API) ends their browser session on the
// next request, as it ends their access tokens.
func TestUISessionEndsWithDeactivation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uideact.test").AccessToken
	user := e.Register("ann@uideact.test")
	u := newUIClient(t, e)
	u.signIn("ann@uideact.test", testenv.Password)
	if r := e.Do("PATCH", "/api/v1/users/"+user.ID, admin, map[string]any{"active": false}); r.Status != 200 {
		t.Fatalf("deactivate: %d %s", r.Status, r.Body)
	}
	u.get("/projects").want(t, 303, "/?next=%2Fprojects")
}

// Generated from the UI's route table: deny by default, the exact public
// list, CSRF before anything is decided, and the CSP on every answer.
func TestUIRouteTableDeniesByDefault(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@uiroutes.test")
	routes := e.P.API.UIRoutes()
	var public []string
	for _, rt := range routes {
		if rt.Public {
			public = append(public, rt.Method+" "+rt.Pattern)
		}
	}
	slices.Sort(public)
	if want := []string{"GET /", "GET /static/*", "POST /signin"}; !slices.Equal(public, want) {
		t.Fatalf("public UI routes %q, want exactly %q", public, want)
	}

	signedIn := newUIClient(t, e)
	signedIn.signIn("root@uiroutes.test", testenv.Password)
	other := newUIClient(t, e)
	other.signIn("root@uiroutes.test", testenv.Password)
	ctx := context.Background()
	for _, rt := range routes {
		if rt.Public {
			continue
		}
		path := concretePath(rt.Pattern)
		t.Run(rt.Method+" "+rt.Pattern, func(t *testing.T) {
			for _, cookie := range []string{"", "garbage", "eyJhbGciOiJub25lIn0.e30."} {
				anon := newUIClient(t, e)
				if cookie != "" {
					anon.cookies["__Host-maestro"] = cookie
				}
				r := anon.do(rt.Method, path, url.Values{})
				want := "/"
				if rt.Method == "GET" {
					want = "/?next=" + url.QueryEscape(path)
				}
				r.want(t, 303, want)
				if !strings.Contains(r.Header.Get("Content-Security-Policy"), "default-src 'none'") {
					t.Errorf("no CSP on %s %s", rt.Method, path)
				}
			}
			if rt.Method == "GET" {
				return
			}
			before, err := e.P.Store.LastSequence(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// No token, another session's token, a token in the wrong place.
			for _, form := range []url.Values{{}, {"csrf": {other.csrf}}, {"csrf": {signedIn.csrf + "x"}}} {
				r := signedIn.do(rt.Method, path, form)
				r.want(t, 403)
				if !strings.Contains(r.Body, "did not come from this site") {
					t.Errorf("CSRF refusal page: %.300s", r.Body)
				}
			}
			if after, err := e.P.Store.LastSequence(ctx); err != nil || after != before {
				t.Errorf("a refused form appended events: sequence %d -> %d (%v)", before, after, err)
			}
		})
	}
	// A browser asking for a page that does not exist gets the UI's 404
	// page; an API client, the problem.
	if r := signedIn.do("GET", "/no/such/page", nil, "Accept", "text/html,application/xhtml+xml"); r.Status != 404 ||
		!strings.Contains(r.Body, "there is no page at /no/such/page") || !strings.Contains(r.Body, ">Sign out<") {
		t.Errorf("404 page: %d %.500s", r.Status, r.Body)
	}
	if r := signedIn.do("GET", "/no/such/page", nil); r.Status != 404 || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("404 for an API client: %d %v", r.Status, r.Header)
	}
	// A cross-origin browser request is refused even with the right token.
	r := signedIn.do("POST", "/projects", url.Values{"csrf": {signedIn.csrf}, "name": {"x"}}, "Sec-Fetch-Site", "cross-site")
	if r.Status != 403 {
		t.Errorf("cross-site POST: %d", r.Status)
	}
}

// Projects and members through the forms: the same commands and policy as
// the API. A viewer sees no write controls, and a forged form is refused
// anyway; user-supplied text renders inert.
func TestUIProjectsAndMembers(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uiproj.test").AccessToken
	owner, _ := e.UserWithRole(admin, "owner@uiproj.test", "member")
	viewer := e.Register("viewer@uiproj.test")
	ctx := context.Background()

	o := newUIClient(t, e)
	o.signIn(owner.Email, testenv.Password)
	if !strings.Contains(o.get("/projects").Body, `action="/projects"`) {
		t.Fatal("a member sees no new-project form")
	}
	xss := `<img src=x onerror=alert(1)>"'`
	r := o.post("/projects", url.Values{"name": {"Fraud " + xss}, "description": {"desc " + xss}}).want(t, 303)
	loc := r.Header.Get("Location")
	if !strings.HasPrefix(loc, "/projects/fraud-") || !strings.HasSuffix(loc, "?done=project-created") {
		t.Fatalf("created project at %q", loc)
	}
	page := o.get(loc).want(t, 200).Body
	if strings.Contains(page, "<img src=x") || !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Fatalf("user text is not escaped: %.2000s", page)
	}
	if !strings.Contains(page, "Project created.") {
		t.Error("no notice after creating the project")
	}
	slug := strings.TrimSuffix(strings.TrimPrefix(loc, "/projects/"), "?done=project-created")
	pp := "/projects/" + slug

	// A bad form is shown again with its reason, nothing created.
	o.get("/projects")
	if r := o.post("/projects", url.Values{"name": {""}}).want(t, 400); !strings.Contains(r.Body, `role="alert"`) {
		t.Errorf("no error shown for an empty name: %.500s", r.Body)
	}
	o.get(pp)
	if r := o.post(pp+"/members", url.Values{"email": {"nobody@uiproj.test"}, "role": {"viewer"}}).want(t, 400); !strings.Contains(r.Body, "nobody has an account") {
		t.Errorf("unknown member: %.500s", r.Body)
	}

	// Add the viewer by e-mail; the API sees the same membership.
	o.post(pp+"/members", url.Values{"email": {"Viewer@UIProj.test"}, "role": {"viewer"}}).want(t, 303, pp+"?done=member-set")
	if r := e.Do("GET", "/api/v1/projects/"+slug+"/members", admin, nil); !strings.Contains(string(r.Body), `"user_id":"`+viewer.ID+`","email":"viewer@uiproj.test","name":"Test User","role":"viewer"`) {
		t.Fatalf("members after the form: %s", r.Body)
	}

	// The viewer reads the project but sees no member or project forms…
	v := newUIClient(t, e)
	v.signIn(viewer.Email, testenv.Password)
	vp := v.get(pp).want(t, 200).Body
	for _, control := range []string{`action="` + pp + `/members"`, ">Set role<", ">Remove<"} {
		if strings.Contains(vp, control) {
			t.Errorf("the viewer sees %s", control)
		}
	}
	if strings.Contains(v.get("/projects").Body, `action="/projects"`) {
		t.Error("a global viewer sees the new-project form")
	}
	// …and a forged form with the viewer's own valid CSRF token is refused
	// by the service, with nothing appended.
	before, _ := e.P.Store.LastSequence(ctx)
	v.post(pp+"/members/"+viewer.ID, url.Values{"role": {"owner"}}).want(t, 403)
	v.post(pp+"/members/"+owner.ID+"/remove", nil).want(t, 403)
	if after, _ := e.P.Store.LastSequence(ctx); after != before {
		t.Errorf("forged forms appended events: %d -> %d", before, after)
	}

	// The owner changes the role and removes the member.
	o.get(pp)
	o.post(pp+"/members/"+viewer.ID, url.Values{"role": {"editor"}}).want(t, 303, pp+"?done=member-set")
	if !strings.Contains(o.get(pp).Body, `<option value="editor" selected>`) {
		t.Error("the role change is not shown")
	}
	o.post(pp+"/members/"+viewer.ID, url.Values{"role": {"emperor"}}).want(t, 400)
	o.get(pp)
	o.post(pp+"/members/"+viewer.ID+"/remove", nil).want(t, 303, pp+"?done=member-removed")
	v.get(pp).want(t, 404)
	// An outsider's request for a project is a 404 page, as in the API.
	if r := v.get("/projects/no-such-project").want(t, 404); !strings.Contains(r.Body, "project not found") {
		t.Errorf("missing project page: %.300s", r.Body)
	}
}
