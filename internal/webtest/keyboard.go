package webtest

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// FocusableSelector matches the controls a keyboard user must be able to
// reach with Tab (TabWalk keeps the visible, enabled ones).
const FocusableSelector = `a[href], button, input:not([type=hidden]), select, textarea, summary`

// markControlsJS tags each visible, enabled control with a number (an
// expando property, invisible to the page's markup and CSS) and returns
// their descriptions. The radio buttons of one group share a number: Tab
// enters a group once, arrow keys move inside it. It also moves focus to
// the top of the document, so the walk starts where a user's would.
const markControlsJS = `(() => {
  const describe = el => {
    let d = el.tagName.toLowerCase();
    if (el.id) d += '#' + el.id;
    for (const a of ['name', 'type', 'href']) {
      if (el.hasAttribute(a)) d += '[' + a + '=' + JSON.stringify(el.getAttribute(a)) + ']';
    }
    const text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().replace(/\s+/g, ' ');
    if (text) d += ' "' + text.slice(0, 40) + '"';
    return d;
  };
  const visible = el => el.getClientRects().length > 0 &&
    el.checkVisibility({visibilityProperty: true, contentVisibilityAuto: true});
  // A walk number tells this walk's marks from those of an earlier walk on
  // the same document, whose controls may have changed since.
  const walk = window.__webtestWalk = (window.__webtestWalk || 0) + 1;
  const out = [];
  const groups = new Map();
  for (const el of document.querySelectorAll(` + "`" + FocusableSelector + "`" + `)) {
    if (!visible(el) || el.matches(':disabled')) continue;
    if (el.type === 'radio' && el.name) {
      const key = (el.form ? 'form' + Array.from(document.forms).indexOf(el.form) : 'doc') + ':' + el.name;
      if (groups.has(key)) { el.__webtestFocus = [walk, groups.get(key)]; continue; }
      groups.set(key, out.length);
    }
    el.__webtestFocus = [walk, out.length];
    out.push(describe(el));
  }
  // Start where a user's first Tab starts, at the top of the document, even
  // when a control has the focus (autofocus): blur alone leaves the browser's
  // starting point at that control. The body becomes focusable until the
  // first Tab has left it (restoreBodyJS).
  const body = document.body;
  body.__webtestTabindex = body.getAttribute('tabindex');
  body.setAttribute('tabindex', '-1');
  body.focus();
  window.scrollTo(0, 0);
  return out;
})()`

// restoreBodyJS undoes the body's temporary tabindex after the first Tab.
const restoreBodyJS = `(() => {
  const body = document.body, was = body.__webtestTabindex;
  if (was === undefined) return;
  if (was === null) body.removeAttribute('tabindex'); else body.setAttribute('tabindex', was);
  delete body.__webtestTabindex;
})()`

// activeJS names the control that has the focus: its number, -1 for an
// element this walk did not mark, -2 for none (focus left the page).
const activeJS = `(() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return -2;
  const m = el.__webtestFocus;
  return m && m[0] === window.__webtestWalk ? m[1] : -1;
})()`

// TabWalk presses Tab through the tab's current page, as a keyboard user
// does, and returns the controls (FocusableSelector, visible and enabled) in
// the order they received focus, and those that never did. It presses at
// most five more times than there are tab stops (a date or time input is
// one control but up to eight stops: its fields and its picker button), so
// that a focus trap or a stray tabindex ends the walk rather than the test.
func TabWalk(t testing.TB, tab *Tab) (order, unreached []string) {
	t.Helper()
	controls := Eval[[]string](tab, markControlsJS)
	stops := len(controls) + 8*Eval[int](tab, `document.querySelectorAll('input[type=date], input[type=datetime-local], input[type=time], input[type=month], input[type=week]').length`)
	seen := make([]bool, len(controls))
	left := len(controls)
	for i := 0; i < stops+5 && left > 0; i++ {
		tab.do("press Tab", chromedp.KeyEvent("\t"))
		if i == 0 {
			tab.do("restore the body's tabindex", chromedp.Evaluate[chromedp.Void](restoreBodyJS))
		}
		n := Eval[int](tab, activeJS)
		if n < 0 || n >= len(seen) || seen[n] {
			continue
		}
		seen[n] = true
		left--
		order = append(order, controls[n])
	}
	for i, ok := range seen {
		if !ok {
			unreached = append(unreached, controls[i])
		}
	}
	return order, unreached
}

// AssertKeyboardReachable fails the test naming every control of the tab's
// current page that Tab never reaches (see TabWalk).
func AssertKeyboardReachable(t testing.TB, tab *Tab) {
	t.Helper()
	_, unreached := TabWalk(t, tab)
	if len(unreached) > 0 {
		t.Fatalf("webtest: %d control(s) on %s never get the keyboard focus:\n  %s", len(unreached), tab.CurrentURL(), strings.Join(unreached, "\n  "))
	}
}
