// Package webtest drives Maestro's web UI in a real headless Chromium for
// tests: one browser per `go test` process, an isolated tab (own cookie jar)
// per test, and the checks every page gets — no JavaScript error and no CSP
// violation (Tab.Problems), accessibility (Axe), keyboard reachability
// (TabWalk) and load time and weight (PageLoad).
//
// A package that uses it stops the browser in TestMain:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		webtest.Close()
//		os.Exit(code)
//	}
//
// Chromium is a test dependency like the PostgreSQL server binaries: when it
// is missing the tests fail with the command that installs it, they never
// skip. axe-core comes from testdata/axe, installed by `make npm-deps`.
package webtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/chromedp/chromedp"
)

// ChromiumEnv names the environment variable that points the tests at a
// Chromium binary other than DefaultChromium.
const ChromiumEnv = "MAESTRO_TEST_CHROMIUM"

// DefaultChromium is where Debian's chromium package installs the browser.
const DefaultChromium = "/usr/bin/chromium"

// installHint is the one command that fixes a missing browser on the Debian
// machines the suite runs on (.ci/run runs it too).
const installHint = "install chromium: apt-get install -y --no-install-recommends chromium fonts-liberation"

// Window size of every tab: fixed, so that layouts and screenshots do not
// depend on the machine.
const (
	WindowWidth  = 1280
	WindowHeight = 900
)

// startTimeout bounds the browser start; a healthy start takes ~1.3 s here.
const startTimeout = time.Minute

// shared is the one browser of the test process. Tabs are cheap (a new
// browser context each), a browser start is not, so every test shares it.
var shared struct {
	once    sync.Once
	mu      sync.Mutex // guards closed and the cancel funcs against Close
	closed  bool
	ctx     context.Context // the browser's chromedp context; tabs derive from it
	cancel  func()          // stops the browser (tab of the first Run)
	release func()          // stops the allocator: kills the process, removes its profile dir
	err     error           // why the start failed; every later NewTab reports it again
	took    time.Duration
}

// ExecPath returns the Chromium binary the tests run: $MAESTRO_TEST_CHROMIUM
// or DefaultChromium.
func ExecPath() string {
	if p := os.Getenv(ChromiumEnv); p != "" {
		return p
	}
	return DefaultChromium
}

// browser returns the shared browser's context, starting the browser on the
// first call.
func browser() (context.Context, error) {
	shared.once.Do(func() {
		start := time.Now()
		ctx, err := startBrowser()
		shared.mu.Lock()
		shared.ctx, shared.err, shared.took = ctx, err, time.Since(start)
		shared.mu.Unlock()
	})
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.closed {
		return nil, errors.New("webtest: the browser was closed (webtest.Close ran before this test)")
	}
	return shared.ctx, shared.err
}

// startBrowser starts Chromium. A missing binary is reported before chromedp
// tries, so the message says how to install it rather than "exec: not found".
func startBrowser() (context.Context, error) {
	path := ExecPath()
	if fi, err := os.Stat(path); err != nil || fi.IsDir() {
		return nil, fmt.Errorf("webtest: no Chromium at %s (%s=%q): %s", path, ChromiumEnv, os.Getenv(ChromiumEnv), installHint)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// The tests run as root in containers, where the sandbox cannot start.
		chromedp.NoSandbox,
		// The new headless mode is the real browser without a window; the old
		// one is a separate implementation with its own differences.
		chromedp.Flag("headless", "new"),
		chromedp.WindowSize(WindowWidth, WindowHeight),
	)
	allocCtx, release := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	// The first Run starts the process and binds it to ctx, so it must not
	// run under a timeout context (that would kill the browser when the
	// timeout ends); a timer cancels it instead if the start hangs.
	watchdog := time.AfterFunc(startTimeout, cancel)
	err := chromedp.Do(ctx)
	if !watchdog.Stop() {
		err = fmt.Errorf("no answer within %s (%v)", startTimeout, err)
	}
	if err != nil {
		cancel()
		release()
		return nil, fmt.Errorf("webtest: start %s: %w (if it is not installed: %s)", path, err, installHint)
	}
	shared.mu.Lock()
	shared.cancel, shared.release = cancel, release
	shared.mu.Unlock()
	return ctx, nil
}

// StartTime reports how long the shared browser took to start, or 0 when it
// has not started (or failed to).
func StartTime() time.Duration {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cancel == nil {
		return 0
	}
	return shared.took
}

// Close stops the shared browser and removes its profile directory. Call it
// from TestMain after m.Run; it does nothing when no test started the
// browser, and a second call does nothing either. A NewTab after Close fails.
func Close() {
	// Mark closed first, so that a start racing with Close cannot hand out
	// a browser that is about to die.
	shared.once.Do(func() {})
	shared.mu.Lock()
	shared.closed = true
	cancel, release := shared.cancel, shared.release
	shared.cancel, shared.release = nil, nil
	shared.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if release != nil {
		release()
	}
}
