package webtest

import (
	"strings"
	"testing"
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
