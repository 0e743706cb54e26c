package api_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/internal/testenv"
)

// Findings of the web UI's security and correctness review, each a test
// that failed before its fix.

// A request without the session cookie must not delete it. A browser sends
// no SameSite=Strict cookie on a navigation from another site (a link in a
// mail or a chat), yet applies the Set-Cookie of that navigation's answer:
// clearing the cookie there signed the user out of every tab whenever they
// followed a link to Maestro, and let any page sign its visitors out. An
// invalid cookie is still cleared.
func TestUIReviewCookielessRequestKeepsTheSession(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@uireview.test")
	u := newUIClient(t, e)
	u.signIn("root@uireview.test", testenv.Password)

	// The navigation from another site: no cookie sent.
	req, err := http.NewRequest("GET", e.URL+"/projects", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := u.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/?next=%2Fprojects" {
		t.Fatalf("cookieless page: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-maestro" {
			t.Errorf("a request without the session cookie answers Set-Cookie %s (MaxAge %d): the browser's session is dropped", c.Name, c.MaxAge)
		}
	}
	// The browser's next same-site request is still signed in.
	u.get("/projects").want(t, 200)

	// A cookie that is no session is cleared.
	bad := newUIClient(t, e)
	bad.cookies["__Host-maestro"] = "not-a-token"
	r := bad.get("/projects").want(t, 303)
	if !strings.Contains(strings.Join(r.Header.Values("Set-Cookie"), "\n"), "__Host-maestro=;") {
		t.Errorf("an invalid cookie is not cleared: %v", r.Header.Values("Set-Cookie"))
	}
}

// The add-member form looked the e-mail address up before anything was
// authorized: any member of any project (a viewer is enough) learnt from
// "nobody has an account with the e-mail address …" (400) against the
// service's refusal (403) whether an address has an account, which the API
// tells admins only (GET /api/v1/users). Now a caller who may not manage
// the project's members gets the same answer whatever the address (and a
// non-member, as before, the same 404).
func TestUIReviewAddMemberRevealsNoAccount(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uireview.test").AccessToken
	owner := e.Register("owner@uireview.test")
	viewer := e.Register("viewer@uireview.test")
	outsider := e.Register("outsider@uireview.test")
	e.Register("secret@uireview.test")
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Gov"})
	call(t, e, 200, "PUT", "/api/v1/projects/gov/members/"+owner.ID, admin, map[string]any{"role": "owner"})
	call(t, e, 200, "PUT", "/api/v1/projects/gov/members/"+viewer.ID, admin, map[string]any{"role": "viewer"})

	probe := func(who, project string) {
		t.Helper()
		u := newUIClient(t, e)
		u.signIn(who, testenv.Password)
		before, err := e.P.Store.LastSequence(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		path := "/projects/" + project + "/members"
		known := u.post(path, url.Values{"email": {"secret@uireview.test"}, "role": {"viewer"}})
		unknown := u.post(path, url.Values{"email": {"nobody@uireview.test"}, "role": {"viewer"}})
		if known.Status != unknown.Status || known.Status < 400 || strings.Contains(unknown.Body, "nobody has an account") {
			t.Errorf("%s on %s: an existing address answers %d, an unknown one %d: %.400s", who, project, known.Status, unknown.Status, unknown.Body)
		}
		if after, _ := e.P.Store.LastSequence(context.Background()); after != before {
			t.Errorf("%s on %s: the refused form appended events", who, project)
		}
	}
	probe(outsider.Email, "gov")     // not a member
	probe(outsider.Email, "no-such") // no such project
	probe(viewer.Email, "gov")       // a member who may not manage members

	// The owner is still told when an address has no account.
	o := newUIClient(t, e)
	o.signIn(owner.Email, testenv.Password)
	o.get("/projects/gov")
	if b := o.post("/projects/gov/members", url.Values{"email": {"nobody@uireview.test"}, "role": {"viewer"}}).want(t, 400).Body; !strings.Contains(b, "nobody has an account") {
		t.Errorf("the owner's form: %.600s", b)
	}
	o.post("/projects/gov/members", url.Values{"email": {"secret@uireview.test"}, "role": {"viewer"}}).want(t, 303, "/projects/gov?done=member-set")
}
