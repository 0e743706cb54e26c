package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"

	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/internal/webtest"
)

// The web UI in headless Chromium against a real running platform: the
// flows of issue 12, every page checked on the way — no script error or
// CSP violation, no serious or critical axe violation, every control
// reachable by keyboard — with a screenshot of each (MAESTRO_UI_SHOTS keeps
// them).

// browserPage is a tab on a platform with the checks every page gets.
type browserPage struct {
	t   *testing.T
	e   *testenv.Env
	tab *webtest.Tab
}

func newBrowserPage(t *testing.T, e *testenv.Env) *browserPage {
	return &browserPage{t: t, e: e, tab: webtest.NewTab(t)}
}

// check runs every page's checks on the page shown and screenshots it.
func (b *browserPage) check(shot string) {
	b.t.Helper()
	b.tab.AssertNoProblems()
	webtest.Axe(b.t, b.tab)
	webtest.AssertKeyboardReachable(b.t, b.tab)
	b.tab.Screenshot(shot)
}

// open navigates to path, wants 200, and checks the page.
func (b *browserPage) open(path, shot string) {
	b.t.Helper()
	if status := b.tab.Navigate(b.e.URL + path); status != http.StatusOK {
		b.t.Fatalf("GET %s: %d", path, status)
	}
	b.check(shot)
}

// submit submits the form matched by sel and wants the page it leads to.
func (b *browserPage) submit(sel string, status int64) {
	b.t.Helper()
	if got := b.tab.Submit(sel); got != status {
		b.t.Fatalf("submit %s: %d, want %d; page: %.500s", sel, got, status, b.tab.Text("main"))
	}
}

func (b *browserPage) signIn(email string) {
	b.t.Helper()
	b.open("/", "sign-in")
	b.tab.Fill("#email", email)
	b.tab.Fill("#password", testenv.Password)
	b.submit("form[action='/signin']", 200)
	if !strings.HasSuffix(b.tab.CurrentURL(), "/projects") || !strings.Contains(b.tab.Text("header"), "Sign out") {
		b.t.Fatalf("after sign-in: %s, header %q", b.tab.CurrentURL(), b.tab.Text("header"))
	}
}

// Sign in, create a project, register a model and a version, upload an
// artifact; sign out ends the session: the cookie taken before is refused.
func TestUIBrowserRegistryFlow(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@browser.test")
	b := newBrowserPage(t, e)
	b.signIn("root@browser.test")
	b.check("projects-empty")

	b.tab.Fill("#name", "Fraud detection")
	b.tab.Fill("#description", "<script>window.__xss=1</script>")
	b.submit("form[action='/projects']", 200)
	if !strings.Contains(b.tab.Text("main"), "Project created.") {
		t.Fatalf("project page: %q", b.tab.Text("main"))
	}
	b.check("project")
	b.open("/projects", "projects")

	b.open("/projects/fraud-detection/models", "models-empty")
	b.tab.Fill("#name", "scorer")
	b.tab.Fill("#tags", "team=risk")
	b.submit("form[method='post'][action='/projects/fraud-detection/models']", 200)
	b.check("model-new")
	b.tab.Fill("#v-description", `"><img src=x onerror="window.__xss=1">`)
	b.submit("form[action$='/versions']", 200)
	if !strings.Contains(b.tab.Text("main"), "Version registered.") {
		t.Fatalf("version page: %q", b.tab.Text("main"))
	}
	file := filepath.Join(t.TempDir(), "weights.bin")
	if err := os.WriteFile(file, []byte("model weights"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.tab.Upload("#art-file", file)
	b.submit("form[action$='/artifacts']", 200)
	if main := b.tab.Text("main"); !strings.Contains(main, "weights.bin") || !strings.Contains(main, "Artifact uploaded.") {
		t.Fatalf("after the upload: %q", main)
	}
	b.check("version")
	if webtest.Eval[bool](b.tab, "window.__xss === 1") {
		t.Fatal("user text ran as script")
	}
	b.open("/projects/fraud-detection/models", "models")
	b.open("/projects/fraud-detection/models/scorer", "model")
	b.submit("form[action$='/versions']", 200)
	b.open("/projects/fraud-detection/models/scorer/compare?v=1&v=2", "model-compare")
	b.open("/projects/fraud-detection/models/scorer/history", "model-history")
	b.open("/models", "models-pick")
	// A page that does not exist: the UI's 404 page, checked like the rest.
	if status := b.tab.Navigate(e.URL + "/projects/fraud-detection/nothing-here"); status != http.StatusNotFound {
		t.Fatalf("a missing page: %d", status)
	}
	b.tab.ClearProblems() // the browser reports the 404 itself
	webtest.Axe(t, b.tab)
	webtest.AssertKeyboardReachable(t, b.tab)
	b.tab.Screenshot("not-found")

	// Sign out; the cookie copied before is refused afterwards.
	var session *network.Cookie
	for _, c := range b.tab.Cookies() {
		if c.Name == "__Host-maestro" {
			session = c
		}
	}
	if session == nil || !session.Secure || !session.HTTPOnly || session.SameSite != network.CookieSameSiteStrict {
		t.Fatalf("session cookie: %+v", session)
	}
	b.submit("form[action='/signout']", 200)
	if !b.tab.Exists("#password") {
		t.Fatal("sign-out did not lead to the sign-in form")
	}
	again := newBrowserPage(t, e)
	again.tab.SetCookie(e.URL, session)
	again.tab.Navigate(e.URL + "/projects")
	if !again.tab.Exists("#password") || !strings.Contains(again.tab.CurrentURL(), "/?next=") {
		t.Fatalf("the ended session's cookie still works: %s", again.tab.CurrentURL())
	}
}

// Promotion through an approval as two users: the editor requests it from
// the version page, the approver finds it in the inbox and approves, and
// the version reaches production (the flow is asynchronous: poll).
func TestUIBrowserPromotionFlow(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@browserpromo.test").AccessToken
	ed, edTok := e.UserWithRole(admin, "ed@browserpromo.test", "viewer")
	ap, _ := e.UserWithRole(admin, "ap@browserpromo.test", "viewer")
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Risk"})
	call(t, e, 200, "PUT", "/api/v1/projects/risk/members/"+ed.ID, admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", "/api/v1/projects/risk/members/"+ap.ID, admin, map[string]any{"role": "approver"})
	call(t, e, 201, "POST", "/api/v1/projects/risk/models", edTok.AccessToken, map[string]any{"name": "scorer"})
	call(t, e, 201, "POST", "/api/v1/projects/risk/models/scorer/versions", edTok.AccessToken, map[string]any{"metrics": map[string]float64{"auc": 0.93}})
	call(t, e, 200, "POST", "/api/v1/projects/risk/policies", admin, map[string]any{"target": "production", "required_approvals": 1, "gate": "metrics.auc >= 0.9"})

	editor := newBrowserPage(t, e)
	editor.signIn(ed.Email)
	const version = "/projects/risk/models/scorer/versions/1"
	editor.open(version, "version-editor")
	editor.tab.Select("#promo-target", "production")
	editor.tab.Fill("#promo-comment", "ready: auc 0.93")
	editor.submit("form[action='/projects/risk/promotions']", 200)
	request := editor.tab.CurrentURL()
	if !strings.Contains(request, "/projects/risk/promotions/") || !strings.Contains(editor.tab.Text("main"), "pending") {
		t.Fatalf("after the request: %s %q", request, editor.tab.Text("main"))
	}
	editor.check("promotion-requested")
	path := request[len(e.URL):]
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}

	approver := newBrowserPage(t, e)
	approver.signIn(ap.Email)
	approver.open("/approvals", "approvals-inbox")
	if status := approver.tab.ClickNavigate("a[href='" + path + "']"); status != 200 {
		t.Fatalf("open the request from the inbox: %d", status)
	}
	approver.check("promotion-to-approve")
	approver.tab.Fill("#approve-comment", "looks good")
	approver.submit("form[action$='/approve']", 200)
	eventually(t, 30*time.Second, "the version in production", func() error {
		approver.tab.Navigate(e.URL + version)
		if !strings.Contains(approver.tab.Text("dl.facts"), "production") {
			return fmt.Errorf("version facts %q", approver.tab.Text("dl.facts"))
		}
		return nil
	})
	approver.check("version-production")
	editor.open("/projects/risk/policies", "policies")
	owner := newBrowserPage(t, e)
	owner.signIn("root@browserpromo.test")
	owner.open("/projects/risk/policies", "policies-owner")
	if !owner.tab.Exists("form[method='post'][action='/projects/risk/policies']") {
		t.Error("an owner sees no policy form")
	}
	editor.open("/projects/risk/promotions", "promotions")
	editor.open(path, "promotion-completed")
	if !strings.Contains(editor.tab.Text("main"), "completed") {
		t.Errorf("the requester's view: %q", editor.tab.Text("main"))
	}
}

// Follow a job's log: the page shows the lines printed so far and the
// browser's EventSource appends the rest as the job prints them.
func TestUIBrowserJobLog(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.Runner = true
	e := testenv.Start(t, cfg)
	e.Admin("root@browserjobs.test")
	call(t, e, 201, "POST", "/api/v1/projects", e.Login("root@browserjobs.test", testenv.Password).AccessToken, map[string]any{"name": "Train"})
	gate := filepath.Join(t.TempDir(), "go")
	b := newBrowserPage(t, e)
	b.signIn("root@browserjobs.test")
	b.open("/projects/train/jobs", "jobs-empty")
	b.tab.Fill("#job-experiment", "logs")
	b.tab.Fill("#job-name", "printer")
	b.tab.Fill("#job-command", "sh\n-c\necho first; while [ ! -e "+gate+" ]; do sleep 0.1; done; echo second")
	b.submit("form[method='post'][action='/projects/train/jobs']", 200)
	eventually(t, 60*time.Second, "the first line on the job page", func() error {
		b.tab.Navigate(b.tab.CurrentURL())
		if !strings.Contains(b.tab.Text("#job-log"), "first") {
			return fmt.Errorf("log %q", b.tab.Text("#job-log"))
		}
		return nil
	})
	b.check("job-running")
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// No reload from here: the lines and the end come over the event stream.
	eventually(t, 60*time.Second, "the rest of the log, live", func() error {
		if log, status := b.tab.Text("#job-log"), b.tab.Text("#job-log-status"); !strings.Contains(log, "second") || !strings.Contains(status, "succeeded") {
			return fmt.Errorf("log %q, status %q", log, status)
		}
		return nil
	})
	b.check("job-ended")
	// Its run's page shows the job and its log too.
	if status := b.tab.ClickNavigate("a[href^='/projects/train/runs/']"); status != 200 {
		t.Fatalf("open the job's run: %d", status)
	}
	if log := b.tab.Text("#job-log"); !strings.Contains(log, "first") || !strings.Contains(log, "second") {
		t.Errorf("the run page's job log: %q", log)
	}
	b.check("run-of-job")
	b.open("/projects/train/jobs", "jobs")
}

// The admin changes a user's role and reads the change in the audit
// trail; the admin pages pass the same checks as every other.
func TestUIBrowserAdmin(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	e.Admin("root@browseradmin.test")
	ann := e.Register("ann@browseradmin.test")
	b := newBrowserPage(t, e)
	b.signIn("root@browseradmin.test")
	b.open("/admin", "admin")
	b.open("/admin/users", "admin-users")
	b.tab.Select("#role-"+ann.ID, "member")
	b.submit("form[action='/admin/users/"+ann.ID+"']:has(select)", 200)
	eventually(t, 30*time.Second, "the role change in the audit viewer", func() error {
		b.tab.Navigate(e.URL + "/admin/audit?type=maestro.user.role_changed.v1")
		if !strings.Contains(b.tab.Text("main"), "maestro.user.role_changed.v1") {
			return fmt.Errorf("audit page %q", b.tab.Text("main"))
		}
		return nil
	})
	b.check("admin-audit")
	b.open("/admin/tokens", "admin-tokens")
	// A token: its secret shown once, on the answer to the form.
	b.tab.Fill("#token-name", "ci")
	b.submit("form[method='post'][action='/admin/tokens']", 201)
	if secret := webtest.Eval[string](b.tab, `document.getElementById("new-token").value`); !strings.HasPrefix(secret, "mae_") {
		t.Fatalf("the new token's secret: %q", secret)
	}
	b.check("admin-token-created")
	// A service account and its page.
	b.open("/admin/tokens", "admin-tokens-again")
	b.tab.Fill("#sa-name", "deployer")
	b.submit("form[action='/admin/service-accounts']", 200)
	if !strings.Contains(b.tab.CurrentURL(), "/admin/service-accounts/") {
		t.Fatalf("after creating a service account: %s", b.tab.CurrentURL())
	}
	b.check("admin-service-account")
	b.open("/jobs", "jobs-pick")
	b.open("/experiments", "experiments-pick")
}

// Experiments and a run's charts: the runs table with its column chooser,
// a run's metric chart (2,000 points, downsampled) switched to a log scale,
// and two runs overlaid.
func TestUIBrowserRunCharts(t *testing.T) {
	t.Parallel()
	u := startUIRuns(t, "uibrowserruns")
	e := u.e
	a := u.run(t, "<b>first</b>", 0.9, map[string]string{"lr": "0.1"}, map[string]string{"team": "x"})
	second := u.run(t, "second", 0.8, map[string]string{"lr": "0.2"}, nil)
	points := make([]map[string]any, 2000)
	for i := range points {
		points[i] = map[string]any{"key": "loss", "value": 1 / float64(i+1), "step": i, "timestamp": 1_700_000_000_000 + i}
	}
	call(t, e, 200, "POST", "/api/v1/projects/lab/runs/"+a+"/metrics", u.admin, map[string]any{"metrics": points})
	b := newBrowserPage(t, e)
	b.signIn(u.editorEmail)
	b.open("/experiments", "experiments-pick")
	b.open("/projects/lab/experiments", "experiments")
	b.open("/projects/lab/experiments/"+u.xID, "runs")
	b.tab.Click("details.columns summary")
	b.check("runs-columns")
	b.open("/projects/lab/runs/"+a, "run")
	b.tab.WaitVisible("figure.chart[data-scale='linear'] canvas")
	b.tab.Click("#chart-log")
	b.tab.WaitVisible("figure.chart[data-scale='log'] canvas")
	b.check("run-chart-log")
	b.open("/projects/lab/experiments/"+u.xID+"/compare?run="+a+"&run="+second, "runs-compare")
	b.tab.WaitVisible("figure.chart[data-scale] canvas")
	b.check("runs-compare-charts")
	if strings.Contains(b.tab.Text("main"), "could not be loaded") {
		t.Error("a series failed to load")
	}
	if webtest.Eval[bool](b.tab, "window.__xss === 1") {
		t.Fatal("user text ran as script")
	}
}
