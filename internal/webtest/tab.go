package webtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// ActionTimeout is the default bound of every Tab action (SetTimeout changes
// it per tab), so that a page that hangs fails its test with the action
// named instead of blocking until `go test -timeout`.
const ActionTimeout = 30 * time.Second

// ShotsEnv names the environment variable with the directory that keeps
// screenshots (one subdirectory per test). Unset, they go to a temporary
// directory that the test removes. A relative path is relative to the
// package directory of the test, as `go test` runs there.
const ShotsEnv = "MAESTRO_UI_SHOTS"

// Tab is one browser tab in its own browser context (cookie jar, storage,
// cache), so tests cannot see each other's sessions. NewTab makes one; it
// closes when its test ends. A Tab belongs to one goroutine at a time.
//
// Every method fails the test (t.Fatalf, naming the action and selector)
// when the browser reports an error or the action timeout passes. Selectors are
// CSS selectors; an action on an element waits for it to exist (or be
// visible, for Click and WaitVisible) until the timeout.
type Tab struct {
	t       testing.TB
	ctx     context.Context
	timeout time.Duration

	mu       sync.Mutex
	problems []Problem
	shotDir  string
}

// ProblemKind says where a Problem came from.
type ProblemKind string

// The kinds of Problem a Tab collects.
const (
	// ProblemException is an uncaught exception or unhandled rejection.
	ProblemException ProblemKind = "exception"
	// ProblemConsole is a console.error or console.assert call.
	ProblemConsole ProblemKind = "console.error"
	// ProblemLog is an error of the browser log: a failed resource load
	// (any 4xx/5xx, the document's own included; not the browser's implicit
	// /favicon.ico request), a blocked request, the CSP's own report text.
	ProblemLog ProblemKind = "log.error"
	// ProblemCSP is a securitypolicyviolation event: the CSP blocked
	// something the page tried to run, load or apply.
	ProblemCSP ProblemKind = "csp"
)

// Problem is something a page did wrong that a user would not see but a
// test must: an error or a CSP violation.
type Problem struct {
	Kind ProblemKind
	// Text says what happened; for ProblemCSP it names the directive, the
	// blocked URI ("inline", "eval" or a URL) and the place.
	Text string
	// URL is the page or script the problem came from, when known.
	URL string
}

// String formats the problem for a test failure.
func (p Problem) String() string {
	if p.URL == "" {
		return fmt.Sprintf("%s: %s", p.Kind, p.Text)
	}
	return fmt.Sprintf("%s: %s (%s)", p.Kind, p.Text, p.URL)
}

// cspBinding is the page-global function the CSP listener calls: a DevTools
// binding, so each call arrives as a Runtime.bindingCalled event, in order
// with the other events of the tab.
const cspBinding = "__webtestCSP"

// cspListener runs in every document before the page's own scripts (Page.
// addScriptToEvaluateOnNewDocument, which the page's CSP does not govern), so
// it sees violations of inline scripts the parser meets first.
const cspListener = `window.addEventListener('securitypolicyviolation', (e) => {
  try {
    window.` + cspBinding + `(JSON.stringify({
      directive: e.effectiveDirective || e.violatedDirective,
      blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber,
      sample: e.sample, disposition: e.disposition, page: e.documentURI}));
  } catch (_) {}
}, true);`

// NewTab opens a tab in a fresh browser context of the shared browser
// (starting it on first use) and closes it when the test ends. It fails the
// test when Chromium is missing or does not start.
func NewTab(t testing.TB) *Tab {
	t.Helper()
	bctx, err := browser()
	if err != nil {
		t.Fatal(err)
	}
	tab := &Tab{t: t, timeout: ActionTimeout}
	// WithListener sees every event of the tab from its first command on,
	// in the order Chrome sent them; it must return fast and run no command.
	ctx, cancel := chromedp.NewContext(bctx,
		chromedp.WithNewBrowserContext(),
		chromedp.WithListener(tab.collect),
	)
	tab.ctx = ctx
	t.Cleanup(cancel)

	// The first Run creates the tab and ties it to ctx, so it runs without
	// a deadline of its own; the watchdog closes the tab if it hangs.
	watchdog := time.AfterFunc(ActionTimeout, cancel)
	err = chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, runtime.AddBinding, runtime.AddBindingParams{Name: cspBinding}); err != nil {
			return fmt.Errorf("add the CSP binding: %w", err)
		}
		if _, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspListener}); err != nil {
			return fmt.Errorf("add the CSP listener: %w", err)
		}
		// Tabs run side by side in windows of their own, and only one window
		// has the real focus: emulate it in every tab, so focus, :focus-visible
		// and the keyboard walk behave as in the window a user looks at.
		if _, err := cdp.Call(ctx, tg, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
			return fmt.Errorf("emulate focus: %w", err)
		}
		return nil
	}))
	if !watchdog.Stop() {
		err = fmt.Errorf("no answer within %s (%v)", ActionTimeout, err)
	}
	if err != nil {
		t.Fatalf("webtest: open a tab: %v", err)
	}
	return tab
}

// collect is the tab's event listener: it records the problems.
func (tab *Tab) collect(ev any) {
	var p Problem
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		p = Problem{Kind: ProblemException, Text: d.Text, URL: d.URL}
		if d.Exception != nil && d.Exception.Description != "" {
			desc, _, _ := strings.Cut(d.Exception.Description, "\n")
			p.Text += " " + desc
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		var args []string
		for _, a := range ev.Args {
			var s string
			if json.Unmarshal(a.Value, &s) == nil {
				args = append(args, s)
			} else if a.Description != "" {
				args = append(args, a.Description)
			} else {
				args = append(args, string(a.Value))
			}
		}
		p = Problem{Kind: ProblemConsole, Text: strings.Join(args, " ")}
		if st := ev.StackTrace; st != nil && len(st.CallFrames) > 0 {
			p.URL = st.CallFrames[0].URL
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level != log.EntryLevelError || implicitFavicon(ev.Entry) {
			return
		}
		p = Problem{Kind: ProblemLog, Text: fmt.Sprintf("[%s] %s", ev.Entry.Source, ev.Entry.Text), URL: ev.Entry.URL}
	case *runtime.EventBindingCalled:
		if ev.Name != cspBinding {
			return
		}
		var v struct {
			Directive, Blocked, Source, Sample, Disposition, Page string
			Line                                                  int
		}
		if err := json.Unmarshal([]byte(ev.Payload), &v); err != nil {
			p = Problem{Kind: ProblemCSP, Text: "unreadable report: " + ev.Payload}
			break
		}
		text := fmt.Sprintf("%s blocked %q", v.Directive, v.Blocked)
		if v.Source != "" {
			text += fmt.Sprintf(" at %s:%d", v.Source, v.Line)
		}
		if v.Sample != "" {
			text += fmt.Sprintf(" (sample %q)", v.Sample)
		}
		if v.Disposition == "report" {
			text += " [report-only]"
		}
		p = Problem{Kind: ProblemCSP, Text: text, URL: v.Page}
	default:
		return
	}
	tab.mu.Lock()
	tab.problems = append(tab.problems, p)
	tab.mu.Unlock()
}

// implicitFavicon reports a failed /favicon.ico request. Chrome makes it on
// its own, after the load event, when a page declares no icon: reporting it
// would make AssertNoProblems depend on whether that request finished first.
func implicitFavicon(e *log.Entry) bool {
	if e.Source != log.EntrySourceNetwork {
		return false
	}
	u, err := url.Parse(e.URL)
	return err == nil && u.Path == "/favicon.ico"
}

// Context returns the tab's chromedp context, for an action this type does
// not offer. Derive a context with a timeout for each call, as the methods do.
func (tab *Tab) Context() context.Context { return tab.ctx }

// SetTimeout changes the bound of each of the tab's actions from
// ActionTimeout to d: longer for a step that legitimately waits (a job's
// log), shorter to prove that something does not happen.
func (tab *Tab) SetTimeout(d time.Duration) { tab.timeout = d }

// do runs steps with the action timeout and fails the test naming what.
func (tab *Tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tab.fail(what, err)
	}
}

// run runs one action that returns a value, like do.
func run[T any](tab *Tab, what string, a chromedp.Action[T]) T {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tab.fail(what, err)
	}
	return v
}

// fail ends the test with the action that failed. A timeout says what it
// usually means: the element never appeared or the page never answered.
func (tab *Tab) fail(what string, err error) {
	tab.t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		tab.t.Fatalf("webtest: %s: nothing within %s (no such element, or the page does not answer): %v", what, tab.timeout, err)
	}
	tab.t.Fatalf("webtest: %s: %v", what, err)
}

// jsString quotes s as a JavaScript string literal (JSON is a subset).
func jsString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// Navigate loads pageURL and waits for its load event. It returns the HTTP
// status of the document (the last one, after redirects).
func (tab *Tab) Navigate(pageURL string) int64 {
	tab.t.Helper()
	resp := run(tab, "navigate to "+pageURL, chromedp.NavigateResponse(pageURL))
	if resp == nil {
		return 0
	}
	return resp.Status
}

// Click clicks the first element that matches sel, once it is visible. It
// does not wait for what the click causes; use ClickNavigate for a link or
// button that loads a new page, WaitVisible for an element that appears.
func (tab *Tab) Click(sel string) {
	tab.t.Helper()
	tab.do(fmt.Sprintf("click %q", sel), chromedp.Click(chromedp.CSS(sel)))
}

// ClickNavigate clicks the first element that matches sel and waits until
// the page it leads to has loaded. It returns the document's HTTP status
// (after redirects).
func (tab *Tab) ClickNavigate(sel string) int64 {
	tab.t.Helper()
	return tab.navigation(fmt.Sprintf("click %q and wait for the next page", sel), chromedp.Click(chromedp.CSS(sel)))
}

// navigation runs a step that loads a page and waits for it.
func (tab *Tab) navigation(what string, step chromedp.Action[chromedp.Void]) int64 {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, tab.timeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, step)
	if err != nil {
		tab.fail(what, err)
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

// Fill empties the input or textarea that matches sel and types value into
// it key by key, so the page sees the keyboard and input events a user
// causes. For a <select> use Select, for a file input Upload.
func (tab *Tab) Fill(sel, value string) {
	tab.t.Helper()
	// Not chromedp.Clear: it fails on an empty <textarea> (no text node).
	clear := fmt.Sprintf(`(() => {
  const el = document.querySelector(%s);
  if (!el) throw new Error('no element matches');
  if (!('value' in el)) throw new Error('the element has no value');
  el.value = '';
  el.dispatchEvent(new Event('input', {bubbles: true}));
})()`, jsString(sel))
	tab.do(fmt.Sprintf("fill %q", sel),
		chromedp.WaitVisible(chromedp.CSS(sel)),
		chromedp.Evaluate[chromedp.Void](clear),
		chromedp.SendKeys(chromedp.CSS(sel), value),
	)
}

// Select chooses the option with the given value in the <select> that
// matches sel and fires input and change, as a user's choice does.
func (tab *Tab) Select(sel, value string) {
	tab.t.Helper()
	js := fmt.Sprintf(`(() => {
  const el = document.querySelector(%s);
  if (!el) throw new Error('no element matches');
  if (!Array.from(el.options || []).some(o => o.value === %s)) throw new Error('no option with that value');
  el.value = %[2]s;
  el.dispatchEvent(new Event('input', {bubbles: true}));
  el.dispatchEvent(new Event('change', {bubbles: true}));
})()`, jsString(sel), jsString(value))
	tab.do(fmt.Sprintf("select %q in %q", value, sel), chromedp.Evaluate[chromedp.Void](js))
}

// Submit submits the form of the element that matches sel (the form
// itself, or a control in it) as a user's click on a submit button does —
// submit handlers and validation run; when sel is a submit button, its
// name, value and formaction count — and waits for the page the server
// answers with. It returns that document's HTTP status (after redirects).
// A form that does not navigate (htmx) or that validation stops fails once
// the timeout passes: for htmx, click the button and WaitVisible the result.
func (tab *Tab) Submit(sel string) int64 {
	tab.t.Helper()
	js := fmt.Sprintf(`(() => {
  const el = document.querySelector(%s);
  if (!el) throw new Error('no element matches');
  const form = el instanceof HTMLFormElement ? el : (el.form || el.closest('form'));
  if (!form) throw new Error('the element is not in a form');
  const submitter = el.type === 'submit' && el.form === form ? el : null;
  form.requestSubmit(submitter);
})()`, jsString(sel))
	return tab.navigation(fmt.Sprintf("submit the form of %q", sel), chromedp.Evaluate[chromedp.Void](js))
}

// Text returns the visible text of the first element that matches sel,
// waiting for it to exist.
func (tab *Tab) Text(sel string) string {
	tab.t.Helper()
	return run(tab, fmt.Sprintf("read the text of %q", sel), chromedp.Text(chromedp.CSS(sel)))
}

// Exists reports whether an element matches sel now, without waiting.
func (tab *Tab) Exists(sel string) bool {
	tab.t.Helper()
	return run(tab, fmt.Sprintf("look for %q", sel),
		chromedp.Evaluate[bool](fmt.Sprintf(`document.querySelector(%s) !== null`, jsString(sel))))
}

// WaitVisible waits until an element that matches sel is visible.
func (tab *Tab) WaitVisible(sel string) {
	tab.t.Helper()
	tab.do(fmt.Sprintf("wait for %q to be visible", sel), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// Eval evaluates the JavaScript expression js in the page and decodes its
// value (JSON) into T; a promise is awaited. Use chromedp.Void for no value.
func Eval[T any](tab *Tab, js string) T {
	tab.t.Helper()
	short := js
	if r := []rune(js); len(r) > 60 {
		short = string(r[:60]) + "…"
	}
	return run(tab, fmt.Sprintf("evaluate %q", short), chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// Upload sets the files of the file input that matches sel (as choosing
// them in the file dialog does). Relative paths are relative to the test's
// working directory.
func (tab *Tab) Upload(sel string, files ...string) {
	tab.t.Helper()
	abs := make([]string, len(files))
	for i, f := range files {
		a, err := filepath.Abs(f)
		if err != nil {
			tab.t.Fatalf("webtest: upload %s to %q: %v", f, sel, err)
		}
		abs[i] = a
	}
	tab.do(fmt.Sprintf("upload %v to %q", files, sel), chromedp.SetUploadFiles(chromedp.CSS(sel), abs))
}

// Cookies returns the cookies the browser would send to the current page,
// HttpOnly ones included, with their flags (Secure, HTTPOnly, SameSite).
func (tab *Tab) Cookies() []*network.Cookie {
	tab.t.Helper()
	return run(tab, "read the cookies", chromedp.Action[[]*network.Cookie](func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
		return res.Cookies, err
	}))
}

// SetCookie stores c in the tab's cookie jar as if a response from siteURL had
// set it without a Domain attribute (host-only, which __Host- cookies need).
// With Cookies, it copies a session from one tab to another, e.g. to replay
// a cookie after sign-out.
func (tab *Tab) SetCookie(siteURL string, c *network.Cookie) {
	tab.t.Helper()
	params := network.SetCookieParams{
		Name: c.Name, Value: c.Value, URL: siteURL, Path: c.Path,
		Secure: &c.Secure, HTTPOnly: &c.HTTPOnly, SameSite: c.SameSite,
	}
	if !c.Session && c.Expires > 0 {
		params.Expires = cdp.TimeSinceEpoch(c.Expires) // both in seconds since the epoch
	}
	tab.do(fmt.Sprintf("set the cookie %s for %s", c.Name, siteURL), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.SetCookie, params)
		return err
	}))
}

// CurrentURL returns the URL of the page the tab shows.
func (tab *Tab) CurrentURL() string {
	tab.t.Helper()
	return run(tab, "read the location", chromedp.Location())
}

// unsafeName matches what may not appear in a screenshot's file name.
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// Screenshot writes a PNG of the whole page (beyond the viewport) as
// name.png into the test's screenshot directory ($MAESTRO_UI_SHOTS/<test>,
// or a temporary directory), logs its path and returns it.
func (tab *Tab) Screenshot(name string) string {
	tab.t.Helper()
	png := run(tab, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := tab.screenshotDir()
	path := filepath.Join(dir, unsafeName.ReplaceAllString(strings.TrimSuffix(name, ".png"), "_")+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tab.t.Fatalf("webtest: screenshot %s: %v", name, err)
	}
	tab.t.Logf("screenshot %s", path)
	return path
}

// screenshotDir makes (once) and returns the directory of the test's
// screenshots.
func (tab *Tab) screenshotDir() string {
	tab.t.Helper()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if tab.shotDir != "" {
		return tab.shotDir
	}
	root := os.Getenv(ShotsEnv)
	if root == "" {
		// Removed with the test; set MAESTRO_UI_SHOTS to keep them.
		tab.shotDir = tab.t.TempDir()
		return tab.shotDir
	}
	dir := filepath.Join(root, unsafeName.ReplaceAllString(tab.t.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tab.t.Fatalf("webtest: screenshot directory: %v", err)
	}
	tab.shotDir = dir
	return dir
}

// Problems returns the errors and CSP violations the tab's pages reported
// since the tab opened (or ClearProblems). It first lets the page run the
// tasks it has queued, so a violation reported by a task that was already
// waiting is in the list: a round trip, not a sleep.
func (tab *Tab) Problems() []Problem {
	tab.t.Helper()
	// Two macrotask turns: a securitypolicyviolation event is dispatched
	// from a task queued when the browser blocked the resource. Its binding
	// call reaches the listener before this evaluation's reply does.
	tab.do("let the page settle", chromedp.Evaluate[chromedp.Void](
		`new Promise(r => setTimeout(() => setTimeout(r, 0), 0))`, chromedp.EvalAwaitPromise))
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]Problem(nil), tab.problems...)
}

// ClearProblems forgets the problems collected so far, e.g. before the step
// a test checks on its own.
func (tab *Tab) ClearProblems() {
	tab.mu.Lock()
	tab.problems = nil
	tab.mu.Unlock()
}

// AssertNoProblems fails the test listing every problem (JavaScript error,
// console error, browser-log error, CSP violation) of the tab's pages.
func (tab *Tab) AssertNoProblems() {
	tab.t.Helper()
	ps := tab.Problems()
	if len(ps) == 0 {
		return
	}
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("\n  " + p.String())
	}
	tab.t.Fatalf("webtest: %d problem(s) on %s:%s", len(ps), tab.CurrentURL(), b.String())
}
