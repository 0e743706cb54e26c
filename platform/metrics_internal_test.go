package platform

import (
	"testing"
	"time"

	"github.com/maestro-ml/maestro/projections"
)

// The projections readiness rule: far behind and not moving for
// readyStuckFor is stuck; far behind but moving, or quarantined events,
// is degraded (both are ready: /readyz answers 200); anything else is ok.
func TestLagWatch(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	w := newLagWatch(func() time.Time { return now })
	judge := func(sts ...projections.Status) string { return w.judge(sts).Status }
	st := func(name string, seq, lag uint64, quarantined int64) projections.Status {
		return projections.Status{Name: name, Stream: "events", LastSeq: seq, Lag: lag, Quarantined: quarantined}
	}
	steps := []struct {
		advance time.Duration
		status  projections.Status
		want    string
	}{
		{0, st("models", 100, 5, 0), "ok"},
		{time.Hour, st("models", 100, 5, 0), "ok"},           // idle, barely behind
		{0, st("models", 100, readyMaxLag+1, 0), "degraded"}, // a burst: not stuck for having idled
		{readyStuckFor - time.Second, st("models", 100, readyMaxLag+1, 0), "degraded"},
		{time.Second, st("models", 100, readyMaxLag+1, 0), "stuck"},
		{0, st("models", 101, readyMaxLag+1, 0), "degraded"}, // moving again
		{readyStuckFor - time.Second, st("models", 101, readyMaxLag+1, 0), "degraded"},
		{time.Second, st("models", 101, readyMaxLag+1, 0), "stuck"},
		{0, st("models", 20_000, 0, 0), "ok"},
		{0, st("models", 20_000, 0, 2), "degraded"},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := judge(s.status); got != s.want {
			t.Errorf("step %d (%+v): %s, want %s", i, s.status, got, s.want)
		}
	}
	// One stuck projection is enough, whatever the others do.
	now = now.Add(2 * readyStuckFor)
	if got := judge(st("models", 20_000, readyMaxLag+5, 0), st("runs", 7, 0, 1)); got != "stuck" {
		t.Errorf("one stuck projection: %s, want stuck", got)
	}
	res := w.judge([]projections.Status{st("models", 20_000, 3, 0), st("runs", 7, 0, 1)})
	if res.Lag["models"] != 3 || res.Lag["runs"] != 0 || res.Quarantined["runs"] != 1 || len(res.Quarantined) != 1 {
		t.Errorf("result %+v, want the lag of each and runs' quarantine", res)
	}
}
