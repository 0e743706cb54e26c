package projections

import (
	"reflect"
	"testing"
	"time"
)

// After Reset, Wake has active runners start over at once: with an idle
// tick of an hour, only the wake can have them notice the rewind (no event
// comes after the reset to fail a batch's checkpoint check).
func TestWakeStartsARebuildAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	last := f.seed(t, 10)
	var stops []func()
	for _, p := range All() {
		stops = append(stops, start(t, NewRunner(f.pool, f.store, p, testRunnerConfig())))
	}
	waitCaughtUp(t, f.pool, last, "users", "sessions", "audit", "tokens", "experiments", "runs") // what the seed fills
	want := dumpAll(t, f.pool)
	for _, stop := range stops {
		stop()
	}

	cfg := testRunnerConfig()
	cfg.Idle = time.Hour
	for _, p := range All() {
		start(t, NewRunner(f.pool, f.store, p, cfg))
	}
	ctx := testCtx(t)
	// Active, each has looked at its checkpoint: it would see a reset
	// made before (and a standby would wait out its retry).
	for _, p := range All() {
		poll(t, time.Minute, p.Name()+" to be active", func() bool {
			_, err := f.store.Conn().Request(PositionSubject(p.Name()), nil, time.Second) // only the active runner answers
			return err == nil
		})
	}
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	if err := Wake(f.store.Conn()); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "the rebuild after the wake", func() bool { return reflect.DeepEqual(dumpAll(t, f.pool), want) })
	f.checkExactlyOnce(t, f.pool, last)
}
