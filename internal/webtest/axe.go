package webtest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// AxeTags are the rule sets Axe checks: WCAG 2.0 and 2.1, levels A and AA.
var AxeTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa"}

// AxeViolation is one axe-core rule that a page breaks.
type AxeViolation struct {
	// ID is the rule, e.g. "image-alt"; HelpURL explains it.
	ID string `json:"id"`
	// Impact is "minor", "moderate", "serious" or "critical".
	Impact  string `json:"impact"`
	Help    string `json:"help"`
	HelpURL string `json:"helpUrl"`
	// Targets are the CSS selectors of the elements that break the rule.
	Targets []string `json:"targets"`
}

// String formats the violation for a test failure, with the first few
// elements.
func (v AxeViolation) String() string {
	targets := v.Targets
	more := ""
	if len(targets) > 3 {
		more = fmt.Sprintf(" and %d more", len(targets)-3)
		targets = targets[:3]
	}
	return fmt.Sprintf("%s (%s): %s — %s%s", v.ID, v.Impact, v.Help, strings.Join(targets, ", "), more)
}

// axeSource is axe.min.js, read once per process (650 KB).
var axeSource struct {
	once sync.Once
	js   string
	err  error
}

// axeFile is where `make npm-deps` (npm ci) puts axe-core: next to this
// source file, found through the build's file name so that tests of any
// package can use it whatever their working directory.
func axeFile() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "testdata", "axe", "node_modules", "axe-core", "axe.min.js")
}

func loadAxe() (string, error) {
	axeSource.once.Do(func() { axeSource.js, axeSource.err = readAxe(axeFile()) })
	return axeSource.js, axeSource.err
}

// readAxe reads axe.min.js; its error says how to install it.
func readAxe(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("webtest: axe-core is not installed (%v): run make npm-deps (npm ci --prefix internal/webtest/testdata/axe)", err)
	}
	return string(b), nil
}

// axeRunJS runs the checks and keeps what a failure message needs. A
// target is a list of selectors (one per shadow root or frame): joined.
var axeRunJS = `axe.run(document, {runOnly: {type: 'tag', values: ` + jsStrings(AxeTags) + `}})
  .then(r => r.violations.map(v => ({
    id: v.id, impact: v.impact || '', help: v.help, helpUrl: v.helpUrl,
    targets: v.nodes.map(n => [].concat(n.target).flat(Infinity).join(' >>> ')),
  })))`

func jsStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = jsString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// AxeViolations runs axe-core on the tab's current page and returns every
// violation of the AxeTags rules, whatever its impact. axe-core is injected
// with Runtime.evaluate, which the page's Content-Security-Policy does not
// govern, so the page needs no test-only relaxation. It fails the test when
// axe-core is not installed.
func AxeViolations(t testing.TB, tab *Tab) []AxeViolation {
	t.Helper()
	src, err := loadAxe()
	if err != nil {
		t.Fatal(err)
	}
	if !Eval[bool](tab, `typeof window.axe === 'object'`) {
		// Not a plain Eval: the source must not be echoed in a failure.
		tab.do("inject axe-core", chromedp.Evaluate[chromedp.Void](src))
	}
	return run(tab, "run axe-core", chromedp.Evaluate[[]AxeViolation](axeRunJS, chromedp.EvalAwaitPromise))
}

// Axe fails the test listing every violation of the tab's current page
// whose impact is serious or critical (AxeViolations has them all).
func Axe(t testing.TB, tab *Tab) {
	t.Helper()
	var bad []string
	for _, v := range AxeViolations(t, tab) {
		if v.Impact == "serious" || v.Impact == "critical" {
			bad = append(bad, "\n  "+v.String())
		}
	}
	if len(bad) > 0 {
		t.Fatalf("webtest: axe-core: %d serious or critical accessibility violation(s) on %s:%s", len(bad), tab.CurrentURL(), strings.Join(bad, ""))
	}
}
