package webtest

import (
	"strings"
	"testing"

	"github.com/chromedp/cdproto/log"
)

// A missing browser is a failure that says how to install it. startBrowser
// is called directly: the shared browser of this process may be running.
func TestMissingChromium(t *testing.T) {
	t.Setenv(ChromiumEnv, "/nonexistent/chromium")
	ctx, err := startBrowser()
	if ctx != nil || err == nil || !strings.Contains(err.Error(), installHint) || !strings.Contains(err.Error(), "/nonexistent/chromium") {
		t.Fatalf("startBrowser with no binary: ctx %v, err %v", ctx, err)
	}
}

// Without node_modules, the axe checks fail saying which command installs
// axe-core; with it (make npm-deps ran), the file is axe-core itself.
func TestAxeInstall(t *testing.T) {
	if _, err := readAxe("/nonexistent/axe.min.js"); err == nil || !strings.Contains(err.Error(), "make npm-deps") {
		t.Fatalf("readAxe of a missing file: %v", err)
	}
	js, err := loadAxe()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(js[:500], "axe v4.14.1") {
		t.Fatalf("%s does not start with axe-core 4.14.1's banner: %.200q", axeFile(), js)
	}
}

// The browser's own /favicon.ico request is not the page's problem; any
// other failed load is.
func TestImplicitFavicon(t *testing.T) {
	for _, c := range []struct {
		source log.EntrySource
		url    string
		want   bool
	}{
		{log.EntrySourceNetwork, "http://127.0.0.1:8080/favicon.ico", true},
		{log.EntrySourceNetwork, "http://127.0.0.1:8080/static/favicon.ico", false},
		{log.EntrySourceNetwork, "http://127.0.0.1:8080/missing", false},
		{log.EntrySourceSecurity, "http://127.0.0.1:8080/favicon.ico", false},
	} {
		if got := implicitFavicon(&log.Entry{Source: c.source, URL: c.url, Level: log.EntryLevelError}); got != c.want {
			t.Errorf("implicitFavicon(%s %s) = %v, want %v", c.source, c.url, got, c.want)
		}
	}
}
