package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/projections"
)

func projectionNames() []string {
	var out []string
	for _, p := range projections.All() {
		out = append(out, p.Name())
	}
	return out
}

// benchVisible measures command → projection-visible latency (the
// read-your-writes path) on two whole platforms, SyncAlways on and off,
// interleaved in blocks.
func (r *runner) benchVisible(ctx context.Context, plats [2]*platform.Platform) error {
	memstat.ResetPeakRSS()
	names := projectionNames()
	const block = 50
	var total, lag [2]Samples
	var meter [2]allocMeter
	n := r.cfg.Visible
	for b := 0; b*block < n; b++ {
		ops := min(block, n-b*block)
		for k := range 2 {
			i := (b + k) % 2
			p := plats[i]
			evs := make([]events.Envelope, ops)
			for j := range evs {
				evs[j], _ = registered(fmt.Sprintf("v%d", i), b*block+j)
			}
			meter[i].start()
			for _, e := range evs {
				t0 := time.Now()
				seq, err := p.Store.Append(ctx, events.Append{Event: e, Expect: 0})
				if err != nil {
					return err
				}
				t1 := time.Now()
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				ok := p.Waiter.WaitRead(wctx, seq, names...)
				cancel()
				if !ok {
					return fmt.Errorf("visible: seq %d not projected after 10s: %w", seq, errTimeout)
				}
				t2 := time.Now()
				total[i].Add(t2.Sub(t0))
				lag[i].Add(t2.Sub(t1))
			}
			meter[i].stop(ops)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	rss := memstat.PeakRSS()
	for i, on := range []bool{true, false} {
		al, by := meter[i].perOp()
		r.add(Row{Name: "Append → visible in every projection (Waiter.WaitRead, as for Maestro-Min-Sequence)", Fsync: syncName(on), N: n,
			Total: total[i].Sum(), Lat: &total[i], Rate: float64(n) / total[i].Sum().Seconds(), Unit: "cmd/s",
			Allocs: al, Bytes: by, PeakRSS: rss, Note: "sequential; allocs = whole process (runners, pgx, NATS)"})
	}
	for i, on := range []bool{true, false} {
		r.add(Row{Name: "↳ of which ack → visible (projection lag)", Fsync: syncName(on), N: n,
			Total: lag[i].Sum(), Lat: &lag[i], Allocs: -1, Bytes: -1, PeakRSS: rss})
	}
	return nil
}
