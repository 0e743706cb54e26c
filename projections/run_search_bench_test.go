package projections

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testpg"
)

// BenchmarkSearchRuns measures run search over one experiment of
// MAESTRO_BENCH_SEARCH_RUNS runs (default 100,000), each with 20 params,
// 20 metrics and 4 tags, in pages of 100: per search p50, p95 and p99
// (ms). The goal is p95 < 50 ms.
//
//	go test ./projections/ -run '^$' -bench SearchRuns -benchtime 200x -timeout 60m
//
// The read models are filled by the projections' own Queue (the statements
// a runner would send, batch after batch) from generated events, without
// the stream, which would only add the append time. With
// MAESTRO_BENCH_SEARCH_DATABASE_URL (a database of its own: it is
// migrated, filled once and kept) later runs skip the filling; otherwise a
// fresh test database is filled every run (about two minutes at 100,000).
func BenchmarkSearchRuns(b *testing.B) {
	env := searchBench(b)
	ctx := context.Background()
	q := NewQueries(env.pool)
	exp := []string{benchExperiment}
	cases := []struct {
		name  string
		rs    RunSearch
		page  int // 1 = the first page
		items int // expected items on the page (at 100,000 runs; -1: any)
	}{
		{"metric filter, order by metric DESC, page 1", RunSearch{Filter: "metrics.auc > 0.5", OrderBy: []string{"metrics.auc DESC"}}, 1, 100},
		{"metric filter, order by metric DESC, page 10", RunSearch{Filter: "metrics.auc > 0.5", OrderBy: []string{"metrics.auc DESC"}}, 10, 100},
		{"param equality, order by metric DESC, page 1", RunSearch{Filter: "params.lr = '0.01'", OrderBy: []string{"metrics.auc DESC"}}, 1, 100},
		{"param equality, order by metric DESC, page 10", RunSearch{Filter: "params.lr = '0.01'", OrderBy: []string{"metrics.auc DESC"}}, 10, 100},
		{"tag LIKE, default order, page 1", RunSearch{Filter: "tags.team LIKE 'risk%'"}, 1, 100},
		{"tag LIKE, default order, page 10", RunSearch{Filter: "tags.team LIKE 'risk%'"}, 10, 100},
		{"no filter, default order, page 1", RunSearch{}, 1, 100},
		{"no filter, order by metric ASC, page 1", RunSearch{OrderBy: []string{"metrics.loss ASC"}}, 1, 100},
		{"2 metric filters + param, order by metric, page 1", RunSearch{Filter: "metrics.loss < 0.3 AND metrics.acc > 0.5 AND params.optimizer = 'adam'",
			OrderBy: []string{"metrics.auc DESC"}}, 1, 100},
		{"selective metric filter (0.1%), default order", RunSearch{Filter: "metrics.auc > 0.999"}, 1, -1},
		{"order by param, page 1", RunSearch{OrderBy: []string{"params.p05 ASC"}}, 1, 100},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			rs := c.rs
			rs.ExperimentIDs, rs.MaxResults = exp, 100
			for i := range c.page - 1 {
				page, err := q.SearchRuns(ctx, benchProject, rs)
				if err != nil {
					b.Fatalf("paging to %d: %v", c.page, err)
				}
				if page.NextPageToken == "" {
					b.Skipf("only %d pages at %d runs", i+1, env.runs)
				}
				rs.PageToken = page.NextPageToken
			}
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				page, err := q.SearchRuns(ctx, benchProject, rs)
				lat = append(lat, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				if c.items >= 0 && env.runs >= 100_000 && len(page.Items) != c.items {
					b.Fatalf("%d items, want %d", len(page.Items), c.items)
				}
			}
			slices.Sort(lat)
			at := func(q float64) float64 {
				return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(at(0.50), "p50-ms")
			b.ReportMetric(at(0.95), "p95-ms")
			b.ReportMetric(at(0.99), "p99-ms")
		})
	}
}

const (
	benchProject    = "b0000000-0000-4000-8000-000000000001"
	benchExperiment = "b0000000-0000-4000-8000-000000000002"
	benchUser       = "b0000000-0000-4000-8000-000000000003"
)

type searchBenchEnv struct {
	pool *pgxpool.Pool
	runs int
}

var (
	searchBenchOnce sync.Once
	searchBenchVal  *searchBenchEnv
	searchBenchErr  error
)

// searchBench is the filled database, once per process (the benchmark
// function runs more than once).
func searchBench(b *testing.B) *searchBenchEnv {
	b.Helper()
	searchBenchOnce.Do(func() {
		n := 100_000
		if s := os.Getenv("MAESTRO_BENCH_SEARCH_RUNS"); s != "" {
			if n, searchBenchErr = strconv.Atoi(s); searchBenchErr != nil {
				return
			}
		}
		url := os.Getenv("MAESTRO_BENCH_SEARCH_DATABASE_URL")
		if url == "" {
			url = testpg.Database(b) // dropped when this (first) benchmark ends: fine, it runs the others as subtests
		}
		ctx := context.Background()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			searchBenchErr = err
			return
		}
		if err := Migrate(ctx, pool); err != nil {
			searchBenchErr = err
			return
		}
		searchBenchVal = &searchBenchEnv{pool: pool, runs: n}
		searchBenchErr = fillSearchBench(ctx, b, pool, n)
	})
	if searchBenchErr != nil {
		b.Fatal(searchBenchErr)
	}
	return searchBenchVal
}

// fillSearchBench applies n generated runs through the projections' Queue
// unless the experiment already holds them: the runs projection's events
// unless the runs are there, the metrics projection's unless their latest
// values are (a migration may empty latest_metrics for the projection to
// apply its stream again).
func fillSearchBench(ctx context.Context, b *testing.B, pool *pgxpool.Pool, n int) error {
	var haveRuns, haveMetrics int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM runs WHERE experiment_id = $1", benchExperiment).Scan(&haveRuns); err != nil {
		return err
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM latest_metrics m JOIN runs r ON r.id = m.run_id WHERE r.experiment_id = $1 AND m.key = 'loss'",
		benchExperiment).Scan(&haveMetrics); err != nil {
		return err
	}
	if haveRuns == n && haveMetrics == n {
		b.Logf("search bench: %d runs already there", n)
		return nil
	}
	if (haveRuns != 0 && haveRuns != n) || (haveMetrics != 0 && haveMetrics != n) {
		return fmt.Errorf("the bench experiment holds %d runs and %d latest losses, not 0 or %d: use an empty database", haveRuns, haveMetrics, n)
	}
	started := time.Now()
	seq := uint64(1)
	meta := events.Meta{Actor: events.SystemActor, Time: base}
	mk := func(subject, typ string, data any) events.Envelope {
		e, err := events.New(meta, subject, typ, 0, data)
		if err != nil {
			panic(err)
		}
		e.Sequence = seq
		seq++
		return e
	}
	apply := func(p Projection, evs []events.Envelope) error {
		batch := &Batch{}
		if err := p.Queue(batch, evs); err != nil {
			return err
		}
		return pool.SendBatch(ctx, &batch.Batch).Close()
	}
	if haveRuns == 0 {
		if err := apply(Experiments{}, []events.Envelope{mk(events.Subject(events.AggExperiment, benchExperiment), events.ExperimentCreated,
			events.ExperimentCreatedData{ExperimentID: benchExperiment, ProjectID: benchProject, Name: "search bench"})}); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(8, 8))
	teams := []string{"risk-eu", "risk-us", "fraud", "growth", "ads", "search", "infra", "core"}
	lrs := []string{"0.001", "0.01", "0.1", "1"}
	opts := []string{"adam", "sgd", "adamw", "rmsprop", "lion"}
	const chunk = 250
	var runEvs, metricEvs []events.Envelope
	for i := range n {
		id := fmt.Sprintf("c%07x-0000-4000-8000-%012x", i>>4, i) // unique, sorted by i
		subj := events.Subject(events.AggRun, id)
		name := fmt.Sprintf("run-%06d", i)
		runEvs = append(runEvs, mk(subj, events.RunCreated, events.RunCreatedData{RunID: id, ExperimentID: benchExperiment, ProjectID: benchProject,
			Name: name, UserID: benchUser, StartTime: 1_700_000_000_000 + int64(i)*1000,
			Tags: map[string]string{"mlflow.runName": name, "team": teams[i%len(teams)], "stage": []string{"dev", "prod"}[i%2], "seed": strconv.Itoa(i % 97)}}))
		params := []events.Param{{Key: "lr", Value: lrs[i%len(lrs)]}, {Key: "optimizer", Value: opts[(i/4)%len(opts)]}}
		for k := 2; k < 20; k++ {
			params = append(params, events.Param{Key: fmt.Sprintf("p%02d", k), Value: fmt.Sprintf("v%d", rng.IntN(1000))})
		}
		runEvs = append(runEvs, mk(subj, events.RunParamsLogged, events.RunParamsLoggedData{RunID: id, Params: params}))
		metrics := map[string][]events.MetricPoint{}
		for k, key := range []string{"auc", "loss", "acc"} {
			v := rng.Float64()
			if key == "auc" && i%100 == 7 {
				v = math.NaN()
			}
			if key == "auc" && i%100 == 13 {
				continue // 1% of the runs lack auc
			}
			metrics[key] = []events.MetricPoint{{Value: events.MetricValue(v), Step: int64(k), Timestamp: 1}}
		}
		for k := 3; k < 20; k++ {
			metrics[fmt.Sprintf("m%02d", k)] = []events.MetricPoint{{Value: events.MetricValue(rng.NormFloat64()), Step: 1, Timestamp: 1}}
		}
		metricEvs = append(metricEvs, mk(events.MetricsSubject(id), events.MetricsLogged, events.MetricsLoggedData{RunID: id,
			ExperimentID: benchExperiment, ProjectID: benchProject, Metrics: metrics}))
		if len(metricEvs) == chunk || i == n-1 {
			if haveRuns == 0 {
				if err := apply(Runs{}, runEvs); err != nil {
					return err
				}
			}
			if haveMetrics == 0 {
				if err := apply(Metrics{}, metricEvs); err != nil {
					return err
				}
			}
			runEvs, metricEvs = runEvs[:0], metricEvs[:0]
		}
		if (i+1)%20_000 == 0 {
			b.Logf("search bench: %d runs in %s", i+1, time.Since(started).Round(time.Second))
		}
	}
	// What autovacuum would do soon after such a load: statistics for the
	// planner, visibility maps for index-only scans.
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE runs, run_params, run_tags, latest_metrics"); err != nil {
		return err
	}
	b.Logf("search bench: %d runs filled in %s", n, time.Since(started).Round(time.Second))
	return nil
}
