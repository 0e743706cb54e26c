package api_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/handlers/identity"
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

// The model history page showed the e-mail address of every actor (read
// with Queries.User), also of people who are not the project's members —
// someone removed from it, an admin — which the API shows admins only (GET
// /api/v1/users/{id}). Like the approvals and jobs pages, it now names
// members by e-mail and anyone else by id.
func TestUIReviewHistoryShowsMembersEmailsOnly(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uireview.test").AccessToken
	gone := e.Register("gone@uireview.test")
	stays := e.Register("stays@uireview.test")
	viewer := e.Register("viewer@uireview.test")
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Gov"})
	pp := "/api/v1/projects/gov"
	for id, role := range map[string]string{gone.ID: "editor", stays.ID: "editor", viewer.ID: "viewer"} {
		call(t, e, 200, "PUT", pp+"/members/"+id, admin, map[string]any{"role": role})
	}
	call(t, e, 201, "POST", pp+"/models", e.Login(gone.Email, testenv.Password).AccessToken, map[string]any{"name": "scorer"})
	call(t, e, 201, "POST", pp+"/models/scorer/versions", e.Login(stays.Email, testenv.Password).AccessToken, map[string]any{})
	call(t, e, 204, "DELETE", pp+"/members/"+gone.ID, admin, nil)
	// What the API tells the viewer about the person who left: nothing.
	vt := e.Login(viewer.Email, testenv.Password).AccessToken
	if r := e.Do("GET", "/api/v1/users/"+gone.ID, vt, nil); r.Status == 200 {
		t.Fatalf("the API shows a viewer another user: %s", r.Body)
	}

	u := newUIClient(t, e)
	u.signIn(viewer.Email, testenv.Password)
	// The audit trail batches: poll until it has both entries.
	var b string
	eventually(t, 30*time.Second, "the model's history", func() error {
		b = u.get("/projects/gov/models/scorer/history").want(t, 200).Body
		if strings.Count(b, "<tr><td>") < 2 {
			return fmt.Errorf("the history has fewer than 2 entries")
		}
		return nil
	})
	if strings.Contains(b, gone.Email) {
		t.Errorf("the history shows a non-member's e-mail address: %.3000s", b)
	}
	if !strings.Contains(b, gone.ID) || !strings.Contains(b, stays.Email) {
		t.Errorf("the history names neither the non-member by id nor the member by e-mail: %.3000s", b)
	}
}

// The promotion requests' next-page link was href="?{{.NextQuery}}":
// html/template escapes a value in a URL's query as one component, so its
// "=" and "&" became %3D and %26 and the link led to the first page again.
func TestUIReviewPromotionsNextPage(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uireview.test").AccessToken
	pp := "/api/v1/projects/gov"
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Gov"})
	call(t, e, 201, "POST", pp+"/models", admin, map[string]any{"name": "scorer"})
	call(t, e, 201, "POST", pp+"/models/scorer/versions", admin, map[string]any{})
	for _, target := range []string{"staging", "production"} {
		call(t, e, 200, "POST", pp+"/policies", admin, map[string]any{"target": target})
		call(t, e, 201, "POST", pp+"/promotions", admin, map[string]any{"model": "scorer", "version": 1, "target": target})
	}

	u := newUIClient(t, e)
	u.signIn("root@uireview.test", testenv.Password)
	first := u.get("/projects/gov/promotions?max_results=1").want(t, 200).Body
	link := regexp.MustCompile(`href="([^"]*)">Next page`).FindStringSubmatch(first)
	if link == nil {
		t.Fatalf("no next-page link: %.3000s", first)
	}
	next := html.UnescapeString(link[1])
	q, err := url.ParseQuery(strings.TrimPrefix(next, "?"))
	if err != nil || q.Get("page_token") == "" || q.Get("max_results") != "1" {
		t.Fatalf("the next-page link %q is not the next page's query", next)
	}
	second := u.get("/projects/gov/promotions"+next).want(t, 200).Body
	targets := func(b string) string {
		return strings.Join(regexp.MustCompile(`version 1 to (\w+)</a>`).FindAllString(b, -1), ",")
	}
	if targets(first) == "" || targets(second) == "" || targets(first) == targets(second) {
		t.Errorf("pages: first %q, second %q", targets(first), targets(second))
	}
}

// An artifact's download link put its path into the URL as it is: a path
// may hold "#", "?" or "%", which cut the link short or named another
// file. Each segment is now escaped.
func TestUIReviewArtifactLinkEscapesThePath(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@uireview.test")
	u := newUIClient(t, e)
	u.signIn("root@uireview.test", testenv.Password)
	u.post("/projects", url.Values{"name": {"Gov"}}).want(t, 303)
	u.post("/projects/gov/models", url.Values{"name": {"scorer"}}).want(t, 303)
	v := "/projects/gov/models/scorer/versions/1"
	u.post("/projects/gov/models/scorer/versions", nil).want(t, 303, v+"?done=version-registered")
	u.get(v)
	for _, apath := range []string{"notes #1?.txt", "100%41 done/r&d.txt"} {
		u.upload(v+"/artifacts", apath, "x.txt", []byte("content of "+apath)).want(t, 303, v+"?done=artifact-uploaded")
	}
	page := u.get(v).want(t, 200).Body
	links := regexp.MustCompile(`<a href="([^"]*)" download>([^<]*)</a>`).FindAllStringSubmatch(page, -1)
	if len(links) != 2 {
		t.Fatalf("artifact links: %q", links)
	}
	for _, l := range links {
		apath := html.UnescapeString(l[2])
		dl := u.get(html.UnescapeString(l[1]))
		if dl.Status != 200 || dl.Body != "content of "+apath {
			t.Errorf("the link %q of %q downloads %d %q", l[1], apath, dl.Status, dl.Body)
		}
	}
}

// An uploaded artifact was served from the UI's origin to any request, a
// <script src> or a stylesheet's included: a JavaScript file uploaded as
// an artifact passed the CSP's script-src 'self', so any HTML injection
// into a page would have run an attacker's script despite the CSP. The
// download answers navigations and fetches only (Sec-Fetch-Dest).
func TestUIReviewArtifactIsNoScriptOfThePage(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@uireview.test")
	u := newUIClient(t, e)
	u.signIn("root@uireview.test", testenv.Password)
	u.post("/projects", url.Values{"name": {"Gov"}}).want(t, 303)
	u.post("/projects/gov/models", url.Values{"name": {"scorer"}}).want(t, 303)
	v := "/projects/gov/models/scorer/versions/1"
	u.post("/projects/gov/models/scorer/versions", nil).want(t, 303, v+"?done=version-registered")
	u.get(v)
	u.upload(v+"/artifacts", "evil.js", "evil.js", []byte("alert(document.cookie)")).want(t, 303, v+"?done=artifact-uploaded")
	for _, dest := range []string{"script", "style", "worker", "image", "object", "embed"} {
		r := u.do("GET", v+"/artifacts/evil.js", nil, "Sec-Fetch-Dest", dest)
		if r.Status == 200 {
			t.Errorf("Sec-Fetch-Dest %s: the artifact is served (%s)", dest, r.Header.Get("Content-Type"))
		}
	}
	// A download (a link followed, or fetched) still works.
	for _, dest := range []string{"", "document", "empty"} {
		if r := u.do("GET", v+"/artifacts/evil.js", nil, "Sec-Fetch-Dest", dest); r.Status != 200 || r.Body != "alert(document.cookie)" {
			t.Errorf("Sec-Fetch-Dest %q: %d %q", dest, r.Status, r.Body)
		}
	}
	// A run's artifacts likewise.
	admin := e.Login("root@uireview.test", testenv.Password).AccessToken
	x := asJSON[idBody](t, call(t, e, 201, "POST", "/api/v1/projects/gov/experiments", admin, map[string]any{"name": "x"}))
	run := asJSON[idBody](t, call(t, e, 201, "POST", "/api/v1/projects/gov/experiments/"+x.ID+"/runs", admin, map[string]any{"name": "r"}))
	call(t, e, 201, "PUT", "/api/v1/projects/gov/runs/"+run.ID+"/artifacts/evil.js", admin, []byte("alert(document.cookie)"), "Content-Type", "text/javascript")
	ra := "/projects/gov/runs/" + run.ID + "/artifacts/evil.js"
	if r := u.do("GET", ra, nil, "Sec-Fetch-Dest", "script"); r.Status == 200 {
		t.Errorf("a run's artifact is served as a script (%s)", r.Header.Get("Content-Type"))
	}
	if r := u.do("GET", ra, nil, "Sec-Fetch-Dest", "document"); r.Status != 200 || r.Body != "alert(document.cookie)" {
		t.Errorf("a run's artifact download: %d %q", r.Status, r.Body)
	}
}

// The web token lasted 12 hours whatever the session policy: with a
// policy whose sessions end sooner (an idle or absolute limit under 12
// hours), the browser's session outlived the session itself, which no API
// client's can. It now ends with the session's refresh token.
func TestUIReviewWebTokenEndsWithTheSession(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.Sessions = identity.SessionPolicy{Idle: time.Hour, Absolute: 2 * time.Hour}
	e := testenv.Start(t, cfg)
	e.Admin("root@uireview.test")
	u := newUIClient(t, e)
	u.get("/").want(t, 200)
	r := u.post("/signin", url.Values{"email": {"root@uireview.test"}, "password": {testenv.Password}}).want(t, 303, "/projects")
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == "__Host-maestro" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no session cookie")
	}
	if cookie.MaxAge <= 0 || cookie.MaxAge > 3600 {
		t.Errorf("cookie Max-Age %d, want at most the session's idle limit (3600)", cookie.MaxAge)
	}
	parts := strings.Split(cookie.Value, ".")
	var claims struct{ Exp int64 }
	if len(parts) != 3 {
		t.Fatalf("the cookie is no JWT: %q", cookie.Value)
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err != nil || json.Unmarshal(b, &claims) != nil {
		t.Fatalf("the web token's claims: %v", err)
	}
	if left := time.Until(time.Unix(claims.Exp, 0)); left > time.Hour+time.Minute {
		t.Errorf("the web token lasts %v, beyond the session's idle limit", left)
	}
	u.get("/projects").want(t, 200)
}

// countingBody is a request body of n bytes after head, counting what the
// server has read of it.
type countingBody struct {
	head []byte
	n    int64
	read atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	off := b.read.Load()
	if off >= int64(len(b.head))+b.n {
		return 0, io.EOF
	}
	k := 0
	for k < len(p) && off+int64(k) < int64(len(b.head))+b.n {
		if i := off + int64(k); i < int64(len(b.head)) {
			p[k] = b.head[i]
		} else {
			p[k] = 'a'
		}
		k++
	}
	b.read.Add(int64(k))
	return k, nil
}

// The upload route's body limit is the artifact limit (5 GiB by default)
// so that a multipart upload streams; but a urlencoded body is parsed
// whole into memory (ParseForm, for the csrf field), and under an
// http.MaxBytesReader Go sets no limit of its own: any signed-in user
// (no project needed) could have the server buffer gigabytes. A body that
// is not multipart is now bounded at 1 MiB on every route.
func TestUIReviewUploadRouteBoundsAURLEncodedBody(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Register("nobody@uireview.test")
	u := newUIClient(t, e)
	u.signIn("nobody@uireview.test", testenv.Password)
	body := &countingBody{head: []byte("csrf=" + url.QueryEscape(u.csrf) + "&pad="), n: 256 << 20}
	req, err := http.NewRequest("POST", e.URL+"/projects/any/models/m/versions/1/artifacts", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body.head)) + body.n
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for name, v := range u.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: v})
	}
	resp, err := u.c.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("status %d", resp.StatusCode)
		}
	}
	if got := body.read.Load(); got > 64<<20 {
		t.Errorf("the server read %d MiB of a urlencoded form before answering", got>>20)
	}
}

// A job log followed from the UI went on after its session ended: the
// follow checked the cookie once, when it opened, and then streamed the
// job's log for as long as the job ran (up to logFollowTimeout, 24 h) —
// after sign-out, revocation or the user's deactivation. The follow now
// checks its session as it goes and ends with it.
func TestUIReviewLogFollowEndsWithTheSession(t *testing.T) {
	t.Parallel()
	j := startUIJobs(t, "uireviewlog.test", true)
	e, vi := j.e, j.viewer
	release := filepath.Join(t.TempDir(), "release")
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o600) })
	live := asJSON[api.JobSubmission](t, call(t, e, 201, "POST", "/api/v1/projects/train/jobs", j.editorAPI, map[string]any{
		"experiment": "logs", "name": "waiter", "params": map[string]any{"release": release},
		"command": []string{"sh", "-c", `echo first; while [ ! -e "$MAESTRO_PARAM_RELEASE" ]; do sleep 0.05; done; echo second`}})).Job
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp := vi.openJobLog(ctx, "/projects/train/jobs/"+live.ID+"/log?follow=true")
	if resp.StatusCode != 200 {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	events := make(chan sseEvent, 64)
	go readSSE(bufio.NewReader(resp.Body), events)
	if ev, ok := nextEvent(t, events); !ok || ev.name != "line" || !strings.Contains(ev.data, `"text":"first"`) {
		t.Fatalf("first event: %+v (ok %v)", ev, ok)
	}

	// The viewer signs out (in another tab): the follow ends.
	vi.get("/projects").want(t, 200)
	vi.post("/signout", nil).want(t, 303, "/")
	if ev, ok := nextEvent(t, events); ok {
		t.Fatalf("the follow goes on after sign-out: %+v", ev)
	}
}

// A browser visiting the address of a form — the address bar after a
// failed sign-in reads /signin, after a refused form the form's action —
// got the JSON API's problem (405, application/problem+json) instead of a
// page. It gets the UI's error page, as for an address with no page; an
// API client still gets the problem.
func TestUIReviewFormAddressVisitedIsAPage(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@uireview.test")
	u := newUIClient(t, e)
	accept := []string{"Accept", "text/html,application/xhtml+xml"}
	r := u.do("GET", "/signin", nil, accept...)
	if r.Status != 405 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") || !strings.Contains(r.Body, `<a href="/">Sign in</a>`) ||
		r.Header.Get("Content-Security-Policy") == "" || r.Header.Get("Allow") != "POST" {
		t.Errorf("GET /signin from a browser: %d %v %.300s", r.Status, r.Header, r.Body)
	}
	u.signIn("root@uireview.test", testenv.Password)
	if r := u.do("GET", "/projects/gov/members", nil, accept...); r.Status != 405 || !strings.Contains(r.Body, ">Sign out<") {
		t.Errorf("GET of a form's address, signed in: %d %.300s", r.Status, r.Body)
	}
	if r := u.do("GET", "/signin", nil); r.Status != 405 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json") {
		t.Errorf("an API client: %d %v", r.Status, r.Header)
	}
}
