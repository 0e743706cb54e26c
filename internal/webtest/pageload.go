package webtest

import (
	"time"

	"github.com/chromedp/chromedp"
)

// pageLoadJS waits (polled) until the navigation entry has a load end —
// loadEventEnd is 0 while load handlers still run — and then sums the
// sizes. A cached response has transferSize 0, so the encoded (compressed)
// body size counts instead: the result is the page's weight, not what this
// particular load fetched.
const pageLoadJS = `(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  if (!nav || nav.loadEventEnd <= 0) return null;
  const size = e => e.transferSize > 0 ? e.transferSize : e.encodedBodySize;
  let bytes = size(nav);
  for (const r of performance.getEntriesByType('resource')) bytes += size(r);
  return {ms: nav.loadEventEnd - nav.startTime, bytes};
})()`

// PageLoad returns how long the tab's current page took to load, from the
// start of its navigation to the end of its load event (Navigation Timing),
// and its weight: the bytes of the document and every resource it loaded
// (transfer size, headers included; encoded body size when cached).
// Same-origin resources only report sizes, which is what the UI serves.
func PageLoad(tab *Tab) (ms float64, bytes int64) {
	tab.t.Helper()
	type timing struct {
		MS    float64 `json:"ms"`
		Bytes int64   `json:"bytes"`
	}
	v := run(tab, "read the navigation timing", chromedp.Poll[timing](pageLoadJS,
		chromedp.WithPollingInterval(10*time.Millisecond),
		chromedp.WithPollingTimeout(tab.timeout)))
	return v.MS, v.Bytes
}
