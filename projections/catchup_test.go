package projections

import (
	"sync"
	"testing"
)

// A runner that starts catchUpGap or more behind the head (a rebuild)
// catches up in batches of catchUpBatch; sessions and runs, which have
// several filter subjects, read every subject until the head they saw and
// then follow filtered. The tables must equal those of runners that
// followed the stream as it was written (never catching up), and events
// appended after the catch-up — read by the filtered consumer — must be
// applied too.
func TestCatchUpEqualsFollowing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ref := newDB(t)
	for _, p := range All() {
		start(t, NewRunner(ref, f.store, p, testRunnerConfig()))
	}
	last := f.seed(t, 260)
	if last < catchUpGap+catchUpBatch/2 {
		t.Fatalf("the seed wrote %d events: too few to catch up", last)
	}
	names := []string{"users", "sessions", "audit", "tokens", "experiments", "runs"} // what the seed fills
	waitCaughtUp(t, ref, last, names...)

	// What each multi-filter runner's follows read, in order.
	var mu sync.Mutex
	reads := map[string][]int{}
	for _, p := range All() {
		r := NewRunner(f.pool, f.store, p, testRunnerConfig())
		if len(r.filter) > 1 {
			r.following = func(filter []string) {
				mu.Lock()
				reads[p.Name()] = append(reads[p.Name()], len(filter))
				mu.Unlock()
			}
		}
		start(t, r)
	}
	waitCaughtUp(t, f.pool, last, names...)
	want := dumpAll(t, ref)
	sameDump(t, dumpAll(t, f.pool), want)
	f.checkExactlyOnce(t, f.pool, last)
	mu.Lock()
	for _, name := range []string{"sessions", "runs"} {
		if r := reads[name]; len(r) < 2 || r[0] != 0 || r[len(r)-1] != 2 {
			t.Errorf("%s read %v subjects per follow; want every subject (0), then its 2", name, r)
		}
	}
	mu.Unlock()

	// After the catch-up, filtered.
	last = f.seed(t, 5)
	waitCaughtUp(t, ref, last, names...)
	waitCaughtUp(t, f.pool, last, names...)
	sameDump(t, dumpAll(t, f.pool), dumpAll(t, ref))
	f.checkExactlyOnce(t, f.pool, last)
}
