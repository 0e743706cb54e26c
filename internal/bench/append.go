package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/memstat"
)

// benchAppend measures events.Store.Append on two embedded servers, one
// with SyncAlways and one without, interleaved in blocks so both see the
// same machine load.
func (r *runner) benchAppend(ctx context.Context) error {
	memstat.ResetPeakRSS()
	on, err := r.env.startStore(ctx, true)
	if err != nil {
		return err
	}
	defer on.close()
	off, err := r.env.startStore(ctx, false)
	if err != nil {
		return err
	}
	defer off.close()
	targets := []*embeddedStore{on, off}
	syncs := []bool{true, false}

	sample, _ := registered("size", 0)
	dataB, hdrB := wireSize(sample)
	r.logf("append: one event = %d B data + %d B CloudEvents headers", dataB, hdrB)

	// Sequential single appends and 2-event atomic batches, in blocks of
	// 100 ops alternating between the two servers (and which goes first).
	const block = 100
	type acc struct {
		lat   Samples
		alloc allocMeter
	}
	var single, batch [2]acc
	n := r.cfg.Appends
	for b := 0; b*block < n; b++ {
		ops := min(block, n-b*block)
		for k := range 2 {
			i := (b + k) % 2
			st := targets[i].store
			evs := make([]events.Envelope, ops)
			for j := range evs {
				evs[j], _ = registered(fmt.Sprintf("s%d", i), b*block+j)
			}
			a := &single[i]
			a.alloc.start()
			for _, e := range evs {
				t0 := time.Now()
				if _, err := st.Append(ctx, events.Append{Event: e, Expect: 0}); err != nil {
					return err
				}
				a.lat.Add(time.Since(t0))
			}
			a.alloc.stop(ops)

			bs := make([][]events.Append, ops)
			for j := range bs {
				bs[j] = registerBatch(fmt.Sprintf("b%d", i), b*block+j)
			}
			a = &batch[i]
			a.alloc.start()
			for _, x := range bs {
				t0 := time.Now()
				if _, err := st.Append(ctx, x...); err != nil {
					return err
				}
				a.lat.Add(time.Since(t0))
			}
			a.alloc.stop(ops)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	rss := memstat.PeakRSS()
	for i := range 2 {
		al, by := single[i].alloc.perOp()
		r.add(Row{Name: "Append 1 event, expect-seq, sequential", Fsync: syncName(syncs[i]), N: n,
			Total: single[i].lat.Sum(), Lat: &single[i].lat, Rate: float64(n) / single[i].lat.Sum().Seconds(), Unit: "ev/s",
			Allocs: al, Bytes: by, PeakRSS: rss, Note: fmt.Sprintf("%d B data + %d B headers; allocs = client + embedded server", dataB, hdrB)})
	}
	for i := range 2 {
		al, by := batch[i].alloc.perOp()
		r.add(Row{Name: "Append atomic batch of 2 (register: email + user)", Fsync: syncName(syncs[i]), N: n,
			Total: batch[i].lat.Sum(), Lat: &batch[i].lat, Rate: 2 * float64(n) / batch[i].lat.Sum().Seconds(), Unit: "ev/s",
			Allocs: al, Bytes: by, PeakRSS: rss, Note: "per batch"})
	}

	// Concurrent writers: what fsync costs in throughput when appends can
	// share the server. Rounds alternate on/off to share the machine's load.
	memstat.ResetPeakRSS()
	w := r.cfg.Concurrency
	var conc [2]struct {
		lat   Samples
		wall  time.Duration
		alloc allocMeter
	}
	rounds := 4
	per := n / rounds
	for round := range rounds {
		for k := range 2 {
			i := (round + k) % 2
			lat, wall, err := concurrentAppends(ctx, targets[i].store, fmt.Sprintf("c%d-%d", i, round), per, w, &conc[i].alloc)
			if err != nil {
				return err
			}
			conc[i].lat.Merge(lat)
			conc[i].wall += wall
		}
	}
	// Concurrent atomic batches: a quarter as many, they are slow.
	var concB [2]struct {
		lat   Samples
		wall  time.Duration
		alloc allocMeter
	}
	perB := max(1, n/4/rounds)
	for round := range rounds {
		for k := range 2 {
			i := (round + k) % 2
			lat, wall, err := concurrentBatches(ctx, targets[i].store, fmt.Sprintf("cb%d-%d", i, round), perB, w, &concB[i].alloc)
			if err != nil {
				return err
			}
			concB[i].lat.Merge(lat)
			concB[i].wall += wall
		}
	}
	rss = memstat.PeakRSS()
	for i := range 2 {
		al, by := conc[i].alloc.perOp()
		r.add(Row{Name: fmt.Sprintf("Append 1 event, %d concurrent writers", w), Fsync: syncName(syncs[i]), N: conc[i].lat.Len(),
			Total: conc[i].wall, Lat: &conc[i].lat, Rate: float64(conc[i].lat.Len()) / conc[i].wall.Seconds(), Unit: "ev/s",
			Allocs: al, Bytes: by, PeakRSS: rss})
	}
	for i := range 2 {
		al, by := concB[i].alloc.perOp()
		r.add(Row{Name: fmt.Sprintf("Append atomic batch of 2, %d concurrent writers", w), Fsync: syncName(syncs[i]), N: concB[i].lat.Len(),
			Total: concB[i].wall, Lat: &concB[i].lat, Rate: 2 * float64(concB[i].lat.Len()) / concB[i].wall.Seconds(), Unit: "ev/s",
			Allocs: al, Bytes: by, PeakRSS: rss, Note: "per batch"})
	}
	return nil
}

func concurrentAppends(ctx context.Context, st *events.Store, run string, n, workers int, meter *allocMeter) (*Samples, time.Duration, error) {
	return concurrent(ctx, st, n, workers, meter, func(j int) []events.Append {
		e, _ := registered(run, j)
		return []events.Append{{Event: e, Expect: 0}}
	})
}

func concurrentBatches(ctx context.Context, st *events.Store, run string, n, workers int, meter *allocMeter) (*Samples, time.Duration, error) {
	return concurrent(ctx, st, n, workers, meter, func(j int) []events.Append { return registerBatch(run, j) })
}

// concurrent runs n appends (built beforehand by mk) over workers goroutines.
func concurrent(ctx context.Context, st *events.Store, n, workers int, meter *allocMeter, mk func(int) []events.Append) (*Samples, time.Duration, error) {
	ops := make([][]events.Append, n)
	for j := range ops {
		ops[j] = mk(j)
	}
	var next atomic.Int64
	lats := make([]Samples, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	meter.start()
	start := time.Now()
	for k := range workers {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if _, err := st.Append(ctx, ops[j]...); err != nil {
					errs[k] = err
					return
				}
				lats[k].Add(time.Since(t0))
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	meter.stop(n)
	all := &Samples{}
	for k := range lats {
		if errs[k] != nil {
			return nil, 0, errs[k]
		}
		all.Merge(&lats[k])
	}
	return all, wall, ctx.Err()
}
