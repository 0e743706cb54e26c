package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maestro-ml/maestro/internal/memstat"
)

// Sizes of the tracking scenario (issue 8).
const (
	trackClients      = 8           // concurrent clients of the ingest rows
	trackBatch        = 10_000      // points per logging request
	trackKeys         = 10          // series per ingest request
	trackHistory      = 1_000_000   // points of the one long series
	trackHistoryFull  = 3           // full reads of it
	trackHistoryChart = 20          // max_points=1000 reads of it
	goalIngestPoints  = 500_000.0   // points/s at 8 clients
	trackHistoryKey   = "hist/loss" // the long series' key ("/" travels as %2F)
)

// trackingBench is the tracking scenario against `maestro serve` in its own
// process (as the serve scenario runs it, so the server's CPU is its own):
// a project, an experiment and one run per client, set up through the API.
// Each row is one method; a new row (the MLflow façade's log-batch and
// runs/create) is a method and a line in benchTracking.
type trackingBench struct {
	r       *runner
	s       *serveProc
	admin   *regClient
	user    *regClient
	project string // slug
	exp     string // experiment id
	runs    []string
}

// benchTracking measures experiment tracking (issue 8): metric ingest
// through the batch API at trackClients clients, with and without the
// read-your-writes wait, the lag until ingested points are searchable, and
// the history of one trackHistory-point series, whole and downsampled.
func (r *runner) benchTracking(ctx context.Context) error {
	bin, err := r.maestroBinary(ctx)
	if err != nil {
		return err
	}
	s, err := r.startServe(ctx, bin)
	if err != nil {
		return err
	}
	defer s.stop()
	t := &trackingBench{r: r, s: s}
	if err := t.setup(ctx); err != nil {
		return err
	}
	for _, row := range []func(context.Context) error{
		func(ctx context.Context) error { return t.ingest(ctx, false) },
		func(ctx context.Context) error { return t.ingest(ctx, true) },
		t.mlflowLogBatch,
		t.mlflowCreateRun,
		t.history,
	} {
		if err := row(ctx); err != nil {
			return err
		}
	}
	return nil
}

// setup logs in the bootstrap admin (projection status), registers a
// member who owns the project (every request takes the membership path of
// the policy) and creates the experiment and one run per client.
func (t *trackingBench) setup(ctx context.Context) error {
	hc := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: trackClients, MaxIdleConns: trackClients}}
	t.admin = &regClient{hc: hc, base: t.s.base}
	t.user = &regClient{hc: hc, base: t.s.base}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := t.admin.must(ctx, 200, "POST", "/api/v1/auth/login", map[string]string{"email": serveAdmin, "password": benchPassword}, &tok); err != nil {
		return err
	}
	t.admin.token = tok.AccessToken
	var u struct {
		ID string `json:"id"`
	}
	email := "tracking-user@example.com"
	if err := t.user.must(ctx, 201, "POST", "/api/v1/auth/register", map[string]string{"email": email, "password": benchPassword, "name": "Tracking Bench"}, &u); err != nil {
		return err
	}
	if err := t.admin.must(ctx, 200, "PATCH", "/api/v1/users/"+u.ID, map[string]string{"role": "member"}, nil); err != nil {
		return err
	}
	if err := t.user.must(ctx, 200, "POST", "/api/v1/auth/login", map[string]string{"email": email, "password": benchPassword}, &tok); err != nil {
		return err
	}
	t.user.token = tok.AccessToken
	var proj struct {
		Slug string `json:"slug"`
	}
	if err := t.user.must(ctx, 201, "POST", "/api/v1/projects", map[string]any{"name": "Tracking Bench"}, &proj); err != nil {
		return err
	}
	t.project = proj.Slug
	var x struct {
		ID string `json:"id"`
	}
	if err := t.user.must(ctx, 201, "POST", "/api/v1/projects/"+t.project+"/experiments", map[string]any{"name": "bench"}, &x); err != nil {
		return err
	}
	t.exp = x.ID
	for i := range trackClients + 1 { // the last one holds the long series
		var run struct {
			ID string `json:"id"`
		}
		if err := t.user.must(ctx, 201, "POST", "/api/v1/projects/"+t.project+"/experiments/"+t.exp+"/runs",
			map[string]any{"name": fmt.Sprintf("run-%d", i)}, &run); err != nil {
			return err
		}
		t.runs = append(t.runs, run.ID)
	}
	return nil
}

func (t *trackingBench) runPath(run string) string {
	return "/api/v1/projects/" + t.project + "/runs/" + run
}

// metricsBody appends a logging request of n points to buf: keys in turn,
// steps from step0 (one step per round of keys), values that move.
func metricsBody(buf []byte, keys []string, step0 int64, n int) []byte {
	buf = append(buf, `{"metrics":[`...)
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		step := step0 + int64(i/len(keys))
		buf = append(buf, `{"key":"`...)
		buf = append(buf, keys[i%len(keys)]...)
		buf = append(buf, `","value":`...)
		buf = strconv.AppendFloat(buf, 1/(1+float64(step)*0.001)+float64(i%len(keys))*0.01, 'g', -1, 64)
		buf = append(buf, `,"step":`...)
		buf = strconv.AppendInt(buf, step, 10)
		buf = append(buf, `,"timestamp":`...)
		buf = strconv.AppendInt(buf, 1_700_000_000_000+step, 10)
		buf = append(buf, '}')
	}
	return append(buf, "]}"...)
}

// post sends a prepared JSON body; it returns the status and the metrics
// sequence of the answer.
func (c *regClient) post(ctx context.Context, path string, body []byte, header ...string) (int, uint64, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode, 0, fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, out)
	}
	seq, _ := strconv.ParseUint(resp.Header.Get("Maestro-Metrics-Sequence"), 10, 64)
	return resp.StatusCode, seq, nil
}

// ingest logs trackBatch-point requests from trackClients clients, each to
// its own run, for a phase. Without async each answer waits until its
// points are readable (the default, read-your-writes); with async
// (Prefer: respond-async) the answer comes once the points are durable, and
// the row after it is the lag until the projection has them all.
func (t *trackingBench) ingest(ctx context.Context, async bool) error {
	keys := make([]string, trackKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("train/metric_%d", i)
	}
	var header []string
	mode := "waits until readable"
	if async {
		header = []string{"Prefer", "respond-async"}
		mode = "Prefer: respond-async"
	}
	bufs := make([][]byte, trackClients)
	steps := make([]int64, trackClients)
	var ackMu sync.Mutex
	var lastSeq uint64    // the highest sequence answered
	var lastAck time.Time // when it was
	var accepted atomic.Int64
	do := func(i int) (int, error) {
		// The body is built per request (a few ms of the load generator's
		// CPU), so every request logs new steps.
		bufs[i] = metricsBody(bufs[i][:0], keys, steps[i], trackBatch)
		steps[i] += trackBatch / trackKeys
		code, seq, err := t.user.post(ctx, t.runPath(t.runs[i])+"/metrics", bufs[i], header...)
		if err != nil {
			return code, err
		}
		now := time.Now()
		ackMu.Lock()
		if seq > lastSeq {
			lastSeq, lastAck = seq, now
		}
		ackMu.Unlock()
		if code == http.StatusAccepted {
			accepted.Add(1)
		}
		// Both are stored points: 202 is the async answer, or the
		// read-your-writes wait ran out (counted in the note).
		return http.StatusOK, nil
	}
	cpu0, pg0 := cpuOf(t.s.pid), t.s.postgresCPU()
	hwm := memstat.ResetPeakRSSOf(t.s.pid)
	var lat *Samples
	var n, bad int
	var wall time.Duration
	err := t.r.profile(ctx, t.s, fmt.Sprintf("metrics-ingest-async-%v", async), t.r.cfg.Phase, func() error {
		var err error
		lat, n, wall, bad, err = loadFor(ctx, trackClients, t.r.cfg.Phase, do)
		return err
	})
	if err != nil {
		return err
	}
	cpu, pgCPU := cpuOf(t.s.pid)-cpu0, t.s.postgresCPU()-pg0
	points := n * trackBatch
	rate := float64(points) / wall.Seconds()
	note := fmt.Sprintf("%s; %d points/request in %d series; server CPU %.2f ms/1k points, postgres CPU %.2f ms/1k points",
		mode, trackBatch, trackKeys, float64(cpu)/float64(time.Millisecond)/float64(points/1000), float64(pgCPU)/float64(time.Millisecond)/float64(points/1000))
	if !async && accepted.Load() > 0 {
		note += fmt.Sprintf("; %d answered 202 (the read-your-writes wait ran out)", accepted.Load())
	}
	if bad > 0 {
		note += fmt.Sprintf("; %d answered otherwise than expected", bad)
	}
	peak := memstat.Status(t.s.pid, "VmHWM")
	if !hwm {
		note += "; peak RSS since the server started"
	}
	note += "; " + goal(rate >= goalIngestPoints, fmt.Sprintf("≥ %.0f points/s", goalIngestPoints))
	t.r.add(Row{Name: fmt.Sprintf("tracking: POST .../runs/{run}/metrics, %d clients", trackClients), Fsync: "on", N: n, Total: wall, Lat: lat,
		Rate: rate, Unit: "points/s", Allocs: -1, Bytes: -1, PeakRSS: peak, Note: note})
	if !async {
		return nil
	}
	lag, err := t.searchable(ctx, lastSeq, lastAck)
	if err != nil {
		return err
	}
	t.r.add(Row{Name: "tracking: metrics searchable after the last acknowledged request", N: 1, Total: lag, Allocs: -1, Bytes: -1,
		Note: fmt.Sprintf("from the answer of metrics sequence %d until the metrics projection's checkpoint reaches it (GET /api/v1/projections, polled every 5 ms)", lastSeq)})
	return nil
}

// searchable waits until the metrics projection has applied seq and
// returns how long after ack that was.
func (t *trackingBench) searchable(ctx context.Context, seq uint64, ack time.Time) (time.Duration, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var st struct {
			Projections []struct {
				Name    string `json:"name"`
				LastSeq uint64 `json:"last_seq"`
			} `json:"projections"`
		}
		if err := t.admin.must(ctx, 200, "GET", "/api/v1/projections", nil, &st); err != nil {
			return 0, err
		}
		for _, p := range st.Projections {
			if p.Name == "metrics" && p.LastSeq >= seq {
				return time.Since(ack), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("tracking: metrics sequence %d not projected after 5 minutes", seq)
		}
		time.Sleep(5 * time.Millisecond) // polling the checkpoint, bounded by deadline
	}
}

// history logs one trackHistory-point series (through the API, async,
// then waits until it is projected) and reads it whole and downsampled
// from a restarted server (rows after it run on that fresh process).
func (t *trackingBench) history(ctx context.Context) error {
	run := t.runs[len(t.runs)-1]
	path := t.runPath(run)
	var next, sent atomic.Int64
	bufs := make([][]byte, trackClients)
	var lastSeq atomic.Uint64
	var ackMu sync.Mutex
	_, _, _, _, err := drive(ctx, trackClients, func() bool { return next.Add(1) <= trackHistory/trackBatch }, func(i int) (int, error) {
		step := (sent.Add(1) - 1) * trackBatch
		bufs[i] = metricsBody(bufs[i][:0], []string{trackHistoryKey}, step, trackBatch)
		_, seq, err := t.user.post(ctx, path+"/metrics", bufs[i], "Prefer", "respond-async")
		ackMu.Lock()
		lastSeq.Store(max(lastSeq.Load(), seq))
		ackMu.Unlock()
		return http.StatusOK, err
	})
	if err != nil {
		return err
	}
	if _, err := t.searchable(ctx, lastSeq.Load(), time.Now()); err != nil {
		return err
	}
	// A fresh server process: its peak RSS is the reads', not what the
	// ingest left in the heap and in NATS's block cache.
	if err := t.s.restart(ctx); err != nil {
		return err
	}
	key := "/metrics/" + "hist%2Floss"
	read := func(query string) (*Samples, int64, int, int64, error) {
		var lat Samples
		var size int64
		var points int
		hwm := memstat.ResetPeakRSSOf(t.s.pid)
		reps := trackHistoryFull
		if query != "" {
			reps = trackHistoryChart
		}
		for range reps {
			t0 := time.Now()
			code, out, err := t.user.do(ctx, "GET", path+key+query, nil)
			if err != nil {
				return nil, 0, 0, 0, err
			}
			if code != http.StatusOK {
				return nil, 0, 0, 0, fmt.Errorf("GET %s%s: %d %.200s", key, query, code, out)
			}
			lat.Add(time.Since(t0))
			var h struct {
				Points []json.RawMessage `json:"points"`
			}
			if err := json.Unmarshal(out, &h); err != nil {
				return nil, 0, 0, 0, fmt.Errorf("GET %s%s: %w", key, query, err)
			}
			size, points = int64(len(out)), len(h.Points)
		}
		peak := int64(0)
		if hwm {
			peak = memstat.Status(t.s.pid, "VmHWM")
		}
		return &lat, size, points, peak, nil
	}
	for _, q := range []struct{ query, name string }{
		{"", fmt.Sprintf("tracking: GET .../metrics/{key}, whole series of %d points", trackHistory)},
		{"?max_points=1000", fmt.Sprintf("tracking: GET .../metrics/{key}?max_points=1000 of %d points", trackHistory)},
	} {
		lat, size, points, peak, err := read(q.query)
		if err != nil {
			return err
		}
		// The rate is of the series' points read: those answered for the
		// whole series, all of them for a downsampled one.
		read := points
		if q.query != "" {
			read = trackHistory
		}
		t.r.add(Row{Name: q.name, N: lat.Len(), Total: lat.Sum(), Lat: lat, Rate: float64(read) * float64(lat.Len()) / lat.Sum().Seconds(), Unit: "points read/s",
			Allocs: -1, Bytes: -1, PeakRSS: peak, Note: fmt.Sprintf("one client, sequential; %d points, %.1f MiB answered; peak RSS is the server's over these reads (restarted after the ingest)", points, float64(size)/(1<<20))})
	}
	return nil
}

// mlflowBatch is the points per MLflow log-batch request (MLflow's limit).
const mlflowBatch = 1000

// mlflowPath is an MLflow RPC under the project's tracking URI.
func (t *trackingBench) mlflowPath(rpc string) string {
	return "/mlflow/" + t.project + "/api/2.0/mlflow/" + rpc
}

// mlflowLogBatch logs mlflowBatch-point runs/log-batch requests (MLflow's
// wire shape: run_id, metrics with key, value, timestamp, step) from
// trackClients clients, each to its own run, for a phase.
func (t *trackingBench) mlflowLogBatch(ctx context.Context) error {
	keys := make([]string, trackKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("mlflow/metric_%d", i)
	}
	points, bufs := make([][]byte, trackClients), make([][]byte, trackClients)
	steps := make([]int64, trackClients)
	do := func(i int) (int, uint64, error) {
		// {"metrics":[...]} with the run id in front: MLflow's shape.
		points[i] = metricsBody(points[i][:0], keys, steps[i], mlflowBatch)
		bufs[i] = append(append(bufs[i][:0], `{"run_id":"`+t.runs[i]+`",`...), points[i][1:]...)
		steps[i] += mlflowBatch / trackKeys
		return t.user.post(ctx, t.mlflowPath("runs/log-batch"), bufs[i])
	}
	return t.load(ctx, "mlflow-log-batch", do, func(n int, wall time.Duration) Row {
		return Row{Name: fmt.Sprintf("tracking: MLflow runs/log-batch (%d metrics), %d clients", mlflowBatch, trackClients),
			Rate: float64(n) / wall.Seconds(), Unit: "req/s",
			Note: fmt.Sprintf("%.0f points/s; each answer waits until its points are readable", float64(n*mlflowBatch)/wall.Seconds())}
	})
}

// mlflowCreateRun creates runs through MLflow's runs/create from
// trackClients clients for a phase.
func (t *trackingBench) mlflowCreateRun(ctx context.Context) error {
	var seq atomic.Int64
	do := func(int) (int, uint64, error) {
		n := seq.Add(1)
		body := fmt.Sprintf(`{"experiment_id":%q,"start_time":%d,"run_name":"bench-%d","tags":[{"key":"mlflow.user","value":"bench"}]}`,
			t.exp, 1_700_000_000_000+n, n)
		return t.user.post(ctx, t.mlflowPath("runs/create"), []byte(body))
	}
	return t.load(ctx, "mlflow-runs-create", do, func(n int, wall time.Duration) Row {
		return Row{Name: fmt.Sprintf("tracking: MLflow runs/create, %d clients", trackClients), Rate: float64(n) / wall.Seconds(), Unit: "req/s",
			Note: "each answer waits until the run is readable"}
	})
}

// load runs do from trackClients clients for a phase and adds the row
// that row makes of it, with the server's CPU per request.
func (t *trackingBench) load(ctx context.Context, name string, do func(int) (int, uint64, error), row func(n int, wall time.Duration) Row) error {
	cpu0 := cpuOf(t.s.pid)
	var lat *Samples
	var n, bad int
	var wall time.Duration
	err := t.r.profile(ctx, t.s, name, t.r.cfg.Phase, func() error {
		var err error
		lat, n, wall, bad, err = loadFor(ctx, trackClients, t.r.cfg.Phase, func(i int) (int, error) {
			code, _, err := do(i)
			if code == http.StatusAccepted {
				code = http.StatusOK // stored; the read-your-writes wait ran out
			}
			return code, err
		})
		return err
	})
	if err != nil {
		return err
	}
	r := row(n, wall)
	r.Fsync, r.N, r.Total, r.Lat, r.Allocs, r.Bytes = "on", n, wall, lat, -1, -1
	r.Note += fmt.Sprintf("; server CPU %.2f ms/request", float64(cpuOf(t.s.pid)-cpu0)/float64(time.Millisecond)/float64(max(n, 1)))
	if bad > 0 {
		r.Note += fmt.Sprintf("; %d answered otherwise than expected", bad)
	}
	t.r.add(r)
	return nil
}
