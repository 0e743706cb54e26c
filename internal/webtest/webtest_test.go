package webtest_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"

	"github.com/maestro-ml/maestro/internal/webtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	webtest.Close()
	os.Exit(code)
}

// csp is the policy of every test page: the UI's rules in small. Inline
// scripts and style attributes are refused; files from the origin are not.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'"

// layout wraps a body in an accessible page that loads /app.js.
func layout(title, body string) string {
	return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>` + title +
		`</title><link rel="stylesheet" href="/app.css"><script src="/app.js" defer></script></head><body><main>` +
		body + `</main></body></html>`
}

// pages is the test site. Each page shows one thing the harness must see.
var pages = map[string]string{
	// A form with every kind of control Tab must reach (a radio group is
	// reached once), and a button that reveals an element later.
	"/": layout("Good", `<h1>Form</h1>
<form method="post" action="/submit" enctype="multipart/form-data">
<p><label for="name">Name</label> <input id="name" name="name" value="placeholder"></p>
<p><label for="color">Colour</label> <select id="color" name="color"><option value="red">Red</option><option value="green">Green</option></select></p>
<fieldset><legend>Size</legend>
<input type="radio" id="s" name="size" value="s" checked><label for="s">Small</label>
<input type="radio" id="l" name="size" value="l"><label for="l">Large</label></fieldset>
<p><label for="file">File</label> <input type="file" id="file" name="file"></p>
<p><label for="note">Note</label> <textarea id="note" name="note"></textarea></p>
<input type="hidden" name="csrf" value="x">
<button type="button" disabled>Disabled</button>
<button type="submit" id="send" name="via" value="send-button">Send</button>
</form>
<details><summary>More</summary><p>Hidden until opened: <a href="/other">hidden link</a></p></details>
<p><button type="button" id="reveal">Reveal</button> <a href="/other" id="other">Other page</a></p>
<p id="later" hidden>Revealed</p>`),
	"/other": layout("Other", `<h1 id="title">Other page</h1>`),
	// An inline script the CSP must block: if it ran, the title would change.
	"/inline": layout("Inline", `<h1>Inline</h1><script>document.title = 'inline ran';</script>`),
	// app.js throws on this page (data-fail) and logs a console error.
	"/broken": strings.Replace(layout("Broken", `<h1>Broken</h1>`), `<html lang="en">`, `<html lang="en" data-fail="yes">`, 1),
	// Accessibility: an image without alt and an input without a label,
	// both "critical" in axe-core 4.14.
	"/bad-a11y": layout("Bad", `<h1>Bad</h1><img src="/pic.png"><form><input id="q" name="q"></form>`),
	// A button taken out of the tab order: the keyboard walk must name it.
	// The autofocus must not change where the walk starts.
	"/trap": layout("Trap", `<h1>Trap</h1><p><a href="/other">first</a>
<button type="button" id="unreachable" tabindex="-1">Mouse only</button>
<button type="button" id="last" autofocus>last</button>
<a href="/other" hidden>hidden</a></p>`),
}

// appJS proves external scripts run under the CSP and provides the
// behaviour the tests drive.
const appJS = `document.documentElement.dataset.js = 'ok';
const reveal = document.getElementById('reveal');
if (reveal) reveal.addEventListener('click', () => setTimeout(() => { document.getElementById('later').hidden = false; }, 100));
if (document.documentElement.dataset.fail) { console.error('app.js: broken on purpose'); throw new Error('broken on purpose'); }
`

// newSite serves pages with the CSP, plus the form handler and cookies.
func newSite(t *testing.T) *httptest.Server {
	t.Helper()
	var pic bytes.Buffer
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	img.Set(1, 1, color.Black)
	if err := png.Encode(&pic, img); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{path...}", func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, body)
	})
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		io.WriteString(w, appJS)
	})
	mux.HandleFunc("GET /app.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		io.WriteString(w, "body { font-family: sans-serif; margin: 2rem; }\n")
	})
	mux.HandleFunc("GET /pic.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(pic.Bytes())
	})
	// The form answers the way the UI will: set the session cookie, then
	// POST → 303 → GET.
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		file := "none"
		if f, h, err := r.FormFile("file"); err == nil {
			n, _ := io.Copy(io.Discard, f)
			f.Close()
			file = fmt.Sprintf("%s (%d bytes)", h.Filename, n)
		}
		http.SetCookie(w, &http.Cookie{Name: "__Host-sess", Value: "s3cr3t", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.SetCookie(w, &http.Cookie{Name: "pref", Value: "dark", Path: "/", SameSite: http.SameSiteLaxMode})
		msg := fmt.Sprintf("%s likes %s, size %s, file %s, note %q, via %s", r.FormValue("name"), r.FormValue("color"), r.FormValue("size"), file, r.FormValue("note"), r.FormValue("via"))
		http.Redirect(w, r, "/result?msg="+url.QueryEscape(msg), http.StatusSeeOther)
	})
	// /result and /whoami use html/template-free escaping: the values are
	// test data, but keep the habit.
	mux.HandleFunc("GET /result", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		io.WriteString(w, layout("Result", `<p id="result">`+htmlEscape(r.URL.Query().Get("msg"))+`</p>`))
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		who := "nobody"
		if c, err := r.Cookie("__Host-sess"); err == nil {
			who = "session " + c.Value
		}
		w.Header().Set("Content-Security-Policy", csp)
		io.WriteString(w, layout("Who", `<p id="who">`+htmlEscape(who)+`</p>`))
	})
	// /hang never answers (until the test ends), like a stuck handler.
	release := make(chan struct{})
	mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: Close waits for handlers
	return srv
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// timed logs how long a step took, so `go test -v` shows the harness's cost.
func timed(t *testing.T, what string) func() {
	start := time.Now()
	return func() { t.Logf("timing: %s took %s", what, time.Since(start).Round(time.Millisecond)) }
}

// newTab opens a tab and logs the browser's start time when this test
// started it.
func newTab(t *testing.T) *webtest.Tab {
	t.Helper()
	before := webtest.StartTime()
	done := timed(t, "NewTab")
	tab := webtest.NewTab(t)
	done()
	if before == 0 {
		t.Logf("timing: the shared browser started in %s (this NewTab waited for it)", webtest.StartTime().Round(time.Millisecond))
	}
	return tab
}

// fatalOf runs f with a testing.TB whose Fatal ends f (like the real one)
// and returns the failure message, "" when f did not fail.
func fatalOf(t *testing.T, f func(tb testing.TB)) string {
	t.Helper()
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func kinds(ps []webtest.Problem) []webtest.ProblemKind {
	var ks []webtest.ProblemKind
	for _, p := range ps {
		ks = append(ks, p.Kind)
	}
	return ks
}

// A page that follows the CSP reports nothing; an inline script, a script
// that throws and a blocked image each show up with their kind.
func TestProblems(t *testing.T) {
	t.Parallel()
	site := newSite(t)
	tab := newTab(t)

	done := timed(t, "Navigate + Problems on a clean page")
	if status := tab.Navigate(site.URL + "/"); status != http.StatusOK {
		t.Fatalf("GET / status %d", status)
	}
	if got := webtest.Eval[string](tab, `document.documentElement.dataset.js`); got != "ok" {
		t.Fatalf("the external script did not run under the CSP: data-js = %q", got)
	}
	tab.AssertNoProblems()
	done()

	tab.Navigate(site.URL + "/inline")
	if title := webtest.Eval[string](tab, `document.title`); title != "Inline" {
		t.Fatalf("the inline script ran despite the CSP: title %q", title)
	}
	ps := tab.Problems()
	var csp []webtest.Problem
	for _, p := range ps {
		if p.Kind == webtest.ProblemCSP {
			csp = append(csp, p)
		}
	}
	if len(csp) != 1 || !strings.Contains(csp[0].Text, "script-src") || !strings.Contains(csp[0].Text, `"inline"`) || !strings.HasSuffix(csp[0].URL, "/inline") {
		t.Fatalf("want one script-src violation of an inline script on /inline, got %v", ps)
	}
	t.Logf("the inline script gave: %v", ps)

	// A violation after load (an image from another origin, added by a
	// script) arrives too.
	tab.ClearProblems()
	webtest.Eval[bool](tab, `(() => { const i = document.createElement('img'); i.alt = ''; i.src = 'https://elsewhere.invalid/x.png'; document.body.append(i); return true; })()`)
	ps = tab.Problems()
	if !slices.ContainsFunc(ps, func(p webtest.Problem) bool {
		return p.Kind == webtest.ProblemCSP && strings.Contains(p.Text, "img-src") && strings.Contains(p.Text, "elsewhere.invalid")
	}) {
		t.Fatalf("want an img-src violation for elsewhere.invalid, got %v", ps)
	}

	tab.ClearProblems()
	tab.Navigate(site.URL + "/broken")
	ps = tab.Problems()
	if !slices.Contains(kinds(ps), webtest.ProblemException) || !slices.Contains(kinds(ps), webtest.ProblemConsole) {
		t.Fatalf("want an exception and a console error from /broken, got %v", ps)
	}
	msg := fatalOf(t, func(tb testing.TB) {
		// AssertNoProblems fails through the tab's own t: give it the recorder.
		bt := webtest.NewTab(tb)
		bt.Navigate(site.URL + "/broken")
		bt.AssertNoProblems()
	})
	if !strings.Contains(msg, "Error: broken on purpose") || !strings.Contains(msg, "app.js: broken on purpose") {
		t.Fatalf("AssertNoProblems should list the exception and the console error: %q", msg)
	}
}

// Fill, Select, Upload and Submit drive a multipart form through
// POST → 303 → GET; cookies come back with their flags, and a copied session
// cookie works in another, isolated tab.
func TestFormAndCookies(t *testing.T) {
	t.Parallel()
	site := newSite(t)
	tab := newTab(t)
	tab.Navigate(site.URL + "/")

	if !tab.Exists("#name") || tab.Exists("#no-such-element") {
		t.Fatal("Exists is wrong")
	}
	upload := filepath.Join(t.TempDir(), "weights.bin")
	if err := os.WriteFile(upload, make([]byte, 1234), 0o644); err != nil {
		t.Fatal(err)
	}
	done := timed(t, "fill, select, upload and submit the form")
	tab.Fill("#name", "Ada <Lovelace>")
	tab.Select("#color", "green")
	tab.Click("#l")
	tab.Fill("#note", "two words")
	tab.Upload("#file", upload)
	status := tab.Submit("#send")
	done()
	if status != http.StatusOK {
		t.Fatalf("the page after the submit has status %d", status)
	}
	if u := tab.CurrentURL(); !strings.HasPrefix(u, site.URL+"/result?") {
		t.Fatalf("after the submit the tab shows %s", u)
	}
	// "via" is the button's name=value: Submit on a button submits with it.
	want := `Ada <Lovelace> likes green, size l, file weights.bin (1234 bytes), note "two words", via send-button`
	if got := tab.Text("#result"); got != want {
		t.Fatalf("result\n got %q\nwant %q", got, want)
	}

	cookies := map[string]*network.Cookie{}
	for _, c := range tab.Cookies() {
		cookies[c.Name] = c
	}
	sess, pref := cookies["__Host-sess"], cookies["pref"]
	if sess == nil || pref == nil {
		t.Fatalf("want cookies __Host-sess and pref, got %v", cookies)
	}
	if !sess.Secure || !sess.HTTPOnly || sess.SameSite != network.CookieSameSiteStrict || sess.Path != "/" || sess.Value != "s3cr3t" {
		t.Fatalf("__Host-sess over http://127.0.0.1: %+v", *sess)
	}
	if pref.Secure || pref.HTTPOnly || pref.SameSite != network.CookieSameSiteLax {
		t.Fatalf("pref: %+v", *pref)
	}
	if got := webtest.Eval[string](tab, `document.cookie`); got != "pref=dark" {
		t.Fatalf("document.cookie = %q: an HttpOnly cookie is visible to scripts", got)
	}

	other := newTab(t)
	other.Navigate(site.URL + "/whoami")
	if got := other.Text("#who"); got != "nobody" {
		t.Fatalf("a new tab shares the first tab's cookies: %q", got)
	}
	other.SetCookie(site.URL, sess)
	other.Navigate(site.URL + "/whoami")
	if got := other.Text("#who"); got != "session s3cr3t" {
		t.Fatalf("the copied cookie was not sent: %q", got)
	}

	// Click does not wait; WaitVisible polls for what the click causes
	// (the page shows it 100 ms later). ClickNavigate waits for the page.
	tab.Navigate(site.URL + "/")
	tab.Click("#reveal")
	tab.WaitVisible("#later")
	if got := tab.Text("#later"); got != "Revealed" {
		t.Fatalf("revealed text %q", got)
	}
	if status := tab.ClickNavigate("#other"); status != http.StatusOK || tab.Text("#title") != "Other page" {
		t.Fatalf("ClickNavigate: status %d, url %s", status, tab.CurrentURL())
	}
}

// axe-core finds the missing alt text and label on the bad page, and
// nothing serious or critical on the good one.
func TestAxe(t *testing.T) {
	t.Parallel()
	site := newSite(t)
	tab := newTab(t)

	tab.Navigate(site.URL + "/bad-a11y")
	done := timed(t, "AxeViolations (inject + run)")
	vs := webtest.AxeViolations(t, tab)
	done()
	impact := map[string]string{}
	for _, v := range vs {
		impact[v.ID] = v.Impact
	}
	if impact["image-alt"] != "critical" || impact["label"] != "critical" {
		t.Fatalf("want image-alt and label, both critical; got %v", vs)
	}
	msg := fatalOf(t, func(tb testing.TB) { webtest.Axe(tb, tab) })
	if !strings.Contains(msg, "image-alt (critical)") || !strings.Contains(msg, "label (critical)") || !strings.Contains(msg, "#q") {
		t.Fatalf("Axe's failure should name both rules and the input: %q", msg)
	}
	t.Logf("Axe on the bad page: %s", msg)

	tab.Navigate(site.URL + "/")
	done = timed(t, "Axe on the good page")
	webtest.Axe(t, tab)
	done()
	if vs := webtest.AxeViolations(t, tab); len(vs) != 0 {
		// Axe passed, so these are minor or moderate; the good page should
		// have none at all, or it is not the example it claims to be.
		t.Fatalf("the good page has violations: %v", vs)
	}
}

// The keyboard walk reaches every control of the good page (the radio
// group once, the hidden input, disabled button and closed <details>'s link
// not at all) and names the button a tabindex of -1 hides.
func TestKeyboard(t *testing.T) {
	t.Parallel()
	site := newSite(t)
	tab := newTab(t)

	tab.Navigate(site.URL + "/")
	done := timed(t, "TabWalk on the form page")
	order, unreached := webtest.TabWalk(t, tab)
	done()
	if len(unreached) != 0 {
		t.Fatalf("unreached on the good page: %v", unreached)
	}
	want := []string{"input#name", "select#color", "input#s", "input#file", "textarea#note", "button#send", "summary", "button#reveal", "a#other"}
	if len(order) != len(want) {
		t.Fatalf("focus order\n got %q\nwant prefixes %q", order, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(order[i], w) {
			t.Fatalf("focus order\n got %q\nwant prefixes %q", order, want)
		}
	}
	webtest.AssertKeyboardReachable(t, tab)

	tab.Navigate(site.URL + "/trap")
	order, unreached = webtest.TabWalk(t, tab)
	if len(unreached) != 1 || !strings.HasPrefix(unreached[0], "button#unreachable") {
		t.Fatalf("want only button#unreachable unreached, got %q", unreached)
	}
	if len(order) != 2 || !strings.HasPrefix(order[0], "a[") || !strings.HasPrefix(order[1], "button#last") {
		t.Fatalf("the walk should start at the top despite the autofocus: %q", order)
	}
	msg := fatalOf(t, func(tb testing.TB) { webtest.AssertKeyboardReachable(tb, tab) })
	if !strings.Contains(msg, `button#unreachable[type="button"] "Mouse only"`) {
		t.Fatalf("AssertKeyboardReachable should name the button: %q", msg)
	}
}

// A screenshot is a PNG of the whole 1280-pixel-wide page; the load
// numbers are positive and count the page's resources.
func TestScreenshotAndPageLoad(t *testing.T) {
	t.Parallel()
	site := newSite(t)
	tab := newTab(t)
	tab.Navigate(site.URL + "/")

	done := timed(t, "Screenshot")
	path := tab.Screenshot("form page")
	done()
	if filepath.Base(path) != "form_page.png" {
		t.Fatalf("screenshot file %s", path)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if cfg.Width != webtest.WindowWidth || cfg.Height < 200 {
		t.Fatalf("screenshot is %dx%d, want %d wide", cfg.Width, cfg.Height, webtest.WindowWidth)
	}

	ms, n := webtest.PageLoad(tab)
	t.Logf("PageLoad: %.1f ms, %d bytes", ms, n)
	if ms <= 0 || ms > float64(webtest.ActionTimeout.Milliseconds()) {
		t.Fatalf("load time %v ms", ms)
	}
	// The document alone is ~1.5 KB of body; with app.js and app.css the
	// sum must exceed the body (headers add to the transfer sizes).
	if n <= int64(len(pages["/"])) {
		t.Fatalf("page weight %d bytes, the HTML alone is %d", n, len(pages["/"]))
	}
}

// A page that never answers and an element that never appears fail the
// action that waits for them once the tab's timeout passes, naming it.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	site := newSite(t)
	msg := fatalOf(t, func(tb testing.TB) {
		tab := webtest.NewTab(tb)
		tab.SetTimeout(time.Second)
		tab.Navigate(site.URL + "/hang")
	})
	if !strings.Contains(msg, "navigate to "+site.URL+"/hang: nothing within 1s") {
		t.Fatalf("a hung navigation should fail after 1s: %q", msg)
	}
	msg = fatalOf(t, func(tb testing.TB) {
		tab := webtest.NewTab(tb)
		tab.Navigate(site.URL + "/")
		tab.SetTimeout(500 * time.Millisecond)
		tab.WaitVisible("#never")
	})
	if !strings.Contains(msg, `wait for "#never" to be visible: nothing within 500ms`) {
		t.Fatalf("waiting for a missing element should fail after 500ms: %q", msg)
	}
}

// With MAESTRO_UI_SHOTS set, screenshots are kept there, one directory per
// test (not parallel: it sets the environment).
func TestScreenshotsKept(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(webtest.ShotsEnv, dir)
	site := newSite(t)
	tab := newTab(t)
	tab.Navigate(site.URL + "/other")
	path := tab.Screenshot("step-1.png")
	if want := filepath.Join(dir, "TestScreenshotsKept", "step-1.png"); path != want {
		t.Fatalf("screenshot at %s, want %s", path, want)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
}
