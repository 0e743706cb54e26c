package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/projections"
)

// benchRebuild fills a stream (SyncAlways off, no projection runners), then
// measures the projections building from empty, and a projections.Reset
// replay with the runners running.
func (r *runner) benchRebuild(ctx context.Context) error {
	memstat.ResetPeakRSS()
	p, err := r.env.startPlatform(ctx, false, false, false)
	if err != nil {
		return err
	}
	defer stopPlatform(p)

	// Each "user" is 4 events: the register batch (email + user), a session
	// start and a refresh, so all three projections have work.
	users := max(1, r.cfg.RebuildEvents/4)
	r.logf("rebuild: filling %d events (%d users, %d writers)", users*4, users, r.cfg.FillWorkers)
	var meter allocMeter
	meter.start()
	start := time.Now()
	if err := fill(ctx, p, users, r.cfg.FillWorkers); err != nil {
		return err
	}
	fillTime := time.Since(start)
	meter.stop(users * 4)
	last, err := p.Store.LastSequence(ctx)
	if err != nil {
		return err
	}
	al, by := meter.perOp()
	r.add(Row{Name: fmt.Sprintf("Fill: single appends, %d writers (runners off)", r.cfg.FillWorkers), Fsync: "off", N: int(last),
		Total: fillTime, Rate: float64(last) / fillTime.Seconds(), Unit: "ev/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(),
		Note: "per event"})

	// Build from empty: start the runners (as platform.Start does with
	// Worker) and wait until every checkpoint reaches the last sequence.
	memstat.ResetPeakRSS()
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	meter = allocMeter{}
	meter.start()
	start = time.Now()
	stopProfile, err := r.profileRebuild(ctx, p.Pool, "rebuild-build")
	if err != nil {
		return err
	}
	cpu := newCPUMeter(ctx, p.Pool)
	for _, proj := range projections.All() {
		run := projections.NewRunner(p.Pool, p.Store, proj, projections.RunnerConfig{})
		wg.Go(func() { _ = run.Run(rctx) })
	}
	_, done, err := waitCheckpoints(ctx, p.Pool, last, 0)
	if err != nil {
		return err
	}
	build := time.Since(start)
	stopProfile()
	cpuNote := cpu.note()
	meter.stop(int(last))
	al, by = meter.perOp()
	if err := checkCounts(ctx, p.Pool, last, users); err != nil {
		return err
	}
	r.add(Row{Name: "Projections build from empty (all runners)", Fsync: "off", N: int(last), Total: build,
		Rate: float64(last) / build.Seconds(), Unit: "ev/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(),
		Note: "per event; " + cpuNote + "; done at: " + perProjection(done)})

	// Rebuild: Reset with the runners running, as `maestro projections
	// rebuild` does: Wake has them notice the rewound checkpoint at once.
	memstat.ResetPeakRSS()
	meter = allocMeter{}
	meter.start()
	if stopProfile, err = r.profileRebuild(ctx, p.Pool, "rebuild-reset"); err != nil {
		return err
	}
	cpu = newCPUMeter(ctx, p.Pool)
	start = time.Now()
	if err := projections.Reset(ctx, p.Pool); err != nil {
		return err
	}
	if err := projections.Wake(p.Store.Conn()); err != nil {
		return err
	}
	restart, done, err := waitCheckpoints(ctx, p.Pool, last, 1)
	if err != nil {
		return err
	}
	rebuild := time.Since(start)
	stopProfile()
	cpuNote = cpu.note()
	meter.stop(int(last))
	al, by = meter.perOp()
	if err := checkCounts(ctx, p.Pool, last, users); err != nil {
		return err
	}
	r.add(Row{Name: "projections.Reset → all checkpoints at last seq", Fsync: "off", N: int(last), Total: rebuild,
		Rate: float64(last) / rebuild.Seconds(), Unit: "ev/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(),
		Note: fmt.Sprintf("per event; %s; incl. %s until every runner restarted; done at: %s", cpuNote, fmtDur(restart), perProjection(done))})
	return nil
}

func fill(ctx context.Context, p *platform.Platform, users, workers int) error {
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for k := range workers {
		wg.Go(func() {
			for {
				j := int(next.Add(1)) - 1
				if j >= users || ctx.Err() != nil {
					return
				}
				// Single appends: on a single node every atomic batch stages
				// in a temporary file store (~6 ms, serialised), which would
				// make the fill measure that instead.
				reg := registerBatch("fill", j)
				started, refreshed := sessionEvents(userID(reg[1].Event))
				for _, a := range []events.Append{reg[0], reg[1], {Event: started, Expect: 0}, {Event: refreshed, Expect: events.Any}} {
					if _, err := p.Store.Append(ctx, a); err != nil {
						errs[k] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// waitCheckpoints polls until every projection's checkpoint is at least
// last, and returns when each got there. With first > 0 it also reports
// when every checkpoint had reached first (all runners restarted after a
// reset).
func waitCheckpoints(ctx context.Context, pool *pgxpool.Pool, last, first uint64) (restarted time.Duration, done map[string]time.Duration, err error) {
	names := projectionNames()
	start := time.Now()
	done = map[string]time.Duration{}
	deadline := time.After(30 * time.Minute)
	for {
		rows, err := pool.Query(ctx, "SELECT name, last_seq FROM projection_checkpoints WHERE name = ANY($1)", names)
		if err != nil {
			return 0, nil, err
		}
		seqs := map[string]uint64{}
		for rows.Next() {
			var name string
			var seq int64
			if err := rows.Scan(&name, &seq); err != nil {
				rows.Close()
				return 0, nil, err
			}
			seqs[name] = uint64(seq)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, nil, err
		}
		now := time.Since(start)
		lo := last
		for _, n := range names {
			s, ok := seqs[n]
			if !ok {
				s = 0
			}
			lo = min(lo, s)
			if _, seen := done[n]; !seen && s >= last {
				done[n] = now
			}
		}
		if first > 0 && restarted == 0 && lo >= first {
			restarted = now
		}
		if len(done) == len(names) {
			return restarted, done, nil
		}
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-deadline:
			return 0, nil, fmt.Errorf("projections not at %d after 30 min: %w", last, errTimeout)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func perProjection(done map[string]time.Duration) string {
	var parts []string
	for _, n := range projectionNames() {
		parts = append(parts, n+" "+fmtDur(done[n]))
	}
	return strings.Join(parts, ", ")
}

// checkCounts verifies the read models hold what was appended.
func checkCounts(ctx context.Context, pool *pgxpool.Pool, last uint64, users int) error {
	var audit, us, sess int64
	err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM audit_entries), (SELECT count(*) FROM users), (SELECT count(*) FROM sessions)").
		Scan(&audit, &us, &sess)
	if err != nil {
		return err
	}
	if uint64(audit) != last || int(us) != users || int(sess) != users {
		return fmt.Errorf("rebuild incomplete: audit %d/%d users %d/%d sessions %d/%d", audit, last, us, users, sess, users)
	}
	return nil
}

// profileRebuild, when -profile is set, starts a CPU profile of this
// process (the runners run in it) and resets pg_stat_statements; the
// returned func saves the profile to <ProfileDir>/<name>.cpu.pprof and logs
// the statements that took the most server time.
func (r *runner) profileRebuild(ctx context.Context, pool *pgxpool.Pool, name string) (func(), error) {
	if r.cfg.ProfileDir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(r.cfg.ProfileDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(r.cfg.ProfileDir, name+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	// Without the extension (a server without the module) only the Go
	// profile is taken.
	_, statErr := pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
	if statErr == nil {
		_, statErr = pool.Exec(ctx, "SELECT pg_stat_statements_reset()")
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		r.logf("rebuild: CPU profile in %s (go tool pprof -top %s)", path, path)
		if statErr != nil {
			return
		}
		rows, err := pool.Query(ctx, `SELECT calls, round(total_exec_time)::bigint, rows, query FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			ORDER BY total_exec_time DESC LIMIT 12`)
		if err != nil {
			return
		}
		defer rows.Close()
		for rows.Next() {
			var calls, ms, n int64
			var q string
			if rows.Scan(&calls, &ms, &n, &q) != nil {
				return
			}
			q = strings.Join(strings.Fields(q), " ")
			r.logf("rebuild: sql %8d calls %7d ms %8d rows  %.120s", calls, ms, n, q)
		}
	}, nil
}

// cpuMeter measures the CPU time of this process (the runners, pgx and the
// embedded NATS server) and of the Postgres cluster (the postmaster of the
// pool's backends and its children) over a phase: on a shared 2-core
// machine the wall time alone does not say which side a change relieved.
type cpuMeter struct {
	postmaster    string
	self, cluster time.Duration
}

func newCPUMeter(ctx context.Context, pool *pgxpool.Pool) *cpuMeter {
	m := &cpuMeter{}
	var pid int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err == nil {
		m.postmaster = parentOf(strconv.Itoa(pid))
	}
	m.self, m.cluster = m.read()
	return m
}

func (m *cpuMeter) read() (self, cluster time.Duration) {
	self = cpuOf(strconv.Itoa(os.Getpid()))
	if m.postmaster == "" {
		return self, 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if e.Name() == m.postmaster || parentOf(e.Name()) == m.postmaster {
			cluster += cpuOf(e.Name())
		}
	}
	return self, cluster
}

// note is the CPU used since the meter started, for a row's note.
func (m *cpuMeter) note() string {
	self, cluster := m.read()
	if m.postmaster == "" {
		return "CPU: bench process " + fmtDur(self-m.self)
	}
	return "CPU: bench process " + fmtDur(self-m.self) + ", Postgres " + fmtDur(cluster-m.cluster)
}
