package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The metrics crash test's batches: client c logs the points of key
// loss-<c>; its batch b holds steps b*1000 .. b*1000+499 (value step/4,
// timestamp crashTS+b), so every stored point names its batch and a batch
// stored twice, in part or not at all shows in the history.
const (
	metricClients = 8
	// The last metricMLflow clients log through MLflow's runs/log-batch
	// (the run's events first, then the points: two appends a crash can
	// fall between), each batch with one param c<client>-b<batch>.
	metricMLflow = 2
	batchPoints  = 500
	crashTS      = 1_700_000_000_000
)

// metricBatch is one keyed logging request.
type metricBatch struct {
	client int
	b      int64
}

func (mb metricBatch) idempotencyKey() string { return fmt.Sprintf("metrics-%d-%d", mb.client, mb.b) }
func (mb metricBatch) metricKey() string      { return fmt.Sprintf("loss-%d", mb.client) }
func (mb metricBatch) mlflow() bool           { return mb.client >= metricClients-metricMLflow }
func (mb metricBatch) param() string          { return fmt.Sprintf("c%d-b%d", mb.client, mb.b) }
func crashPointValue(step int64) float64      { return float64(step) / 4 } // exact in binary

// body is the request's JSON: Maestro's {metrics} or MLflow's log-batch.
func (mb metricBatch) body(runID string) any {
	points := make([]map[string]any, batchPoints)
	for j := range points {
		step := mb.b*1000 + int64(j)
		points[j] = map[string]any{"key": mb.metricKey(), "value": crashPointValue(step), "step": step, "timestamp": crashTS + mb.b}
	}
	if mb.mlflow() {
		return map[string]any{"run_id": runID, "metrics": points,
			"params": []map[string]string{{"key": mb.param(), "value": strconv.Itoa(mb.client)}}}
	}
	return map[string]any{"metrics": points}
}

// metricsTarget is the run the clients log to.
type metricsTarget struct {
	project, run, token string
}

func (m metricsTarget) logURL(base string, mb metricBatch) string {
	if mb.mlflow() {
		return base + "/mlflow/" + m.project + "/api/2.0/mlflow/runs/log-batch"
	}
	return base + "/api/v1/projects/" + m.project + "/runs/" + m.run + "/metrics"
}

func (m metricsTarget) runURL(base string) string {
	return base + "/api/v1/projects/" + m.project + "/runs/" + m.run
}

// metricsAnswer is what a logging request was answered.
type metricsAnswer struct {
	status   int
	mseq     uint64 // Maestro-Metrics-Sequence
	seq      uint64 // Maestro-Sequence (MLflow's params)
	pending  bool   // Maestro-Consistency: pending
	replayed bool   // Idempotent-Replayed
	body     string
}

// logged reports whether the answer says the points are stored: 200, or
// 202 when the bounded read-your-writes wait ran out on a loaded machine
// (MLflow's answer stays 200 then); either way with the metrics sequence.
func (a metricsAnswer) logged() bool {
	return a.mseq > 0 && (a.status == http.StatusOK || (a.status == http.StatusAccepted && a.pending))
}

// sameOutcome reports whether a replay answers what the first answer said.
func (a metricsAnswer) sameOutcome(b metricsAnswer) bool {
	return a.status == b.status && a.mseq == b.mseq && a.seq == b.seq && a.body == b.body
}

func sendBatch(c *http.Client, base string, m metricsTarget, mb metricBatch) (metricsAnswer, error) {
	b, _ := json.Marshal(mb.body(m.run))
	req, err := http.NewRequest("POST", m.logURL(base, mb), bytes.NewReader(b))
	if err != nil {
		return metricsAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+m.token)
	req.Header.Set("Idempotency-Key", mb.idempotencyKey())
	resp, err := c.Do(req)
	if err != nil {
		return metricsAnswer{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return metricsAnswer{}, err
	}
	a := metricsAnswer{status: resp.StatusCode, body: string(out),
		pending:  resp.Header.Get("Maestro-Consistency") == "pending",
		replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	a.mseq, _ = strconv.ParseUint(resp.Header.Get("Maestro-Metrics-Sequence"), 10, 64)
	a.seq, _ = strconv.ParseUint(resp.Header.Get("Maestro-Sequence"), 10, 64)
	return a, nil
}

// metricsLedger is every batch sent so far and the answer that counts for
// it (the first, or its retry's after a crash).
type metricsLedger struct {
	mu      sync.Mutex
	answers map[metricBatch]metricsAnswer
	maxSeq  uint64 // highest Maestro-Sequence answered (MLflow's params)
	retried int    // batches answered by a retry after a crash
}

func (l *metricsLedger) record(mb metricBatch, a metricsAnswer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answers[mb] = a
	l.maxSeq = max(l.maxSeq, a.seq)
}

// The chaos invariant for metrics (issue 8), the shape of
// TestCrashRetryAnswersStoredVersion: eight clients log keyed 500-point
// batches on one run (six through Maestro's API, two through MLflow's
// log-batch); `maestro serve` is killed with SIGKILL mid-traffic and
// started again on the same data dir; every unanswered batch is resent
// with the same key, body and token. Each retry must answer 2xx at once
// (no lasting 409 request-in-progress) with the metrics sequence its
// points are in fact stored at, whether its first attempt stored them or
// not, and a second retry replays that answer; answered batches replay
// too. Afterwards every key's history holds each batch exactly once (every
// acknowledged one, every retried one, nothing else), the metrics stream
// holds exactly one message per batch, the run's latest value per key is
// the highest step, and the projection rebuilt from the stream with
// `maestro projections rebuild` serves the same histories and latest values.
func TestCrashRetryMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binary and a managed PostgreSQL four times")
	}
	start := time.Now()
	bin, dataDir, env, p, c, tok := startCrashServe(t)
	m := metricsTarget{project: "crashm", token: tok.AccessToken}
	a, err := crashDo(c, "POST", p.url+"/api/v1/projects", m.token, "", map[string]string{"name": m.project})
	if err != nil || a.status != http.StatusCreated {
		t.Fatalf("create project: %v %+v", err, a)
	}
	var created struct {
		ID string `json:"id"`
	}
	a, err = crashDo(c, "POST", p.url+"/api/v1/projects/"+m.project+"/experiments", m.token, "", map[string]string{"name": "chaos"})
	if err != nil || a.status != http.StatusCreated || json.Unmarshal([]byte(a.body), &created) != nil || created.ID == "" {
		t.Fatalf("create experiment: %v %+v", err, a)
	}
	a, err = crashDo(c, "POST", p.url+"/api/v1/projects/"+m.project+"/experiments/"+created.ID+"/runs", m.token, "", map[string]string{"name": "chaos run"})
	if err != nil || a.status != http.StatusCreated || json.Unmarshal([]byte(a.body), &created) != nil || created.ID == "" {
		t.Fatalf("create run: %v %+v", err, a)
	}
	m.run = created.ID

	ledger := &metricsLedger{answers: map[metricBatch]metricsAnswer{}, maxSeq: a.seq}
	// As in the registry test: crash again (at most three times) until some
	// unanswered batch had in fact been stored (killed between its append
	// and its answer), so the retries find stored points at least once.
	storedUnanswered := 0
	for cycle := 0; cycle < 3 && storedUnanswered == 0; cycle++ {
		var n int
		p, n = metricsCrashCycle(t, bin, dataDir, env, p, c, m, int64(cycle), ledger)
		storedUnanswered += n
		if t.Failed() {
			break
		}
	}
	if p.cmd.ProcessState != nil { // a cycle failed before serve was restarted
		return
	}
	if storedUnanswered == 0 && !t.Failed() {
		t.Log("no crash hit a batch between its append and its answer: only the unstored retries were exercised")
	}
	// Also after a failed cycle: what the read side holds is the evidence.
	served := checkMetricsInvariant(t, c, p.url, m, ledger)
	if t.Failed() {
		return
	}

	// The projection is a cache of the stream (rule 1): dropped and rebuilt
	// by the CLI (with serve stopped it starts NATS and PostgreSQL on the
	// data dir itself), it must serve what was served before.
	p.stop(t)
	rebuild := exec.Command(bin, "projections", "rebuild", "--data-dir", dataDir, "--timeout", "2m")
	rebuild.Env = append(os.Environ(), env...)
	out, err := rebuild.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rebuilt") {
		t.Fatalf("projections rebuild: %v\n%s", err, out)
	}
	if want := fmt.Sprintf(" and %d metric batches in ", len(ledger.answers)); !strings.Contains(string(out), want) {
		t.Errorf("projections rebuild did not apply one metrics message per batch (%q):\n%s", want, out)
	}
	p = startServe(t, bin, dataDir, env...)
	metricsCaughtUp(t, c, p.url, m.token, 0)
	rebuilt := readMetricsView(t, c, p.url, m, ledger.maxSeq)
	for k, h := range served.histories {
		if !bytes.Equal(rebuilt.histories[k], h) {
			t.Errorf("the rebuilt projection serves another history of %s: %d bytes, served %d before the rebuild", k, len(rebuilt.histories[k]), len(h))
		}
	}
	if fmt.Sprint(rebuilt.latest) != fmt.Sprint(served.latest) {
		t.Errorf("the rebuilt projection's latest metrics differ:\nrebuilt %v\nserved  %v", rebuilt.latest, served.latest)
	}
	p.stop(t)
	t.Logf("%d batches (%d points) logged, %d retried after crashes, %d of them stored before the crash; %s in all",
		len(ledger.answers), len(ledger.answers)*batchPoints, ledger.retried, storedUnanswered, time.Since(start).Round(time.Second))
}

// metricsCrashCycle runs the logging clients against p until it dies by
// SIGKILL, starts serve again on the same data dir, checks that every
// acknowledged batch survived, and resends every unanswered batch (same
// key, body and token), checking each retry and that answered batches
// replay. It returns the new process and how many unanswered batches had
// been stored.
func metricsCrashCycle(t *testing.T, bin, dataDir string, env []string, p *serveProc, c *http.Client, m metricsTarget,
	cycle int64, ledger *metricsLedger) (*serveProc, int) {
	t.Helper()
	var mu sync.Mutex
	var unanswered, answered []metricBatch
	progress := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	for i := range metricClients {
		wg.Go(func() {
			for n := int64(0); ; n++ {
				mb := metricBatch{client: i, b: cycle*10_000 + n}
				a, err := sendBatch(c, p.url, m, mb)
				mu.Lock()
				if err != nil { // the server died: this one has no answer
					unanswered = append(unanswered, mb)
					mu.Unlock()
					return
				}
				if !a.logged() {
					mu.Unlock()
					t.Errorf("log %s before the crash: %d %s", mb.idempotencyKey(), a.status, a.body)
					return
				}
				answered = append(answered, mb)
				mu.Unlock()
				ledger.record(mb, a)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
	// Kill once traffic runs at full speed (a few answers per client in).
	deadline := time.After(60 * time.Second)
	for n := 0; n < 5*metricClients; n++ {
		select {
		case <-progress:
		case <-deadline:
			t.Fatal("metric logging did not get going within 60s")
		}
	}
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	wg.Wait()
	if t.Failed() {
		return p, 0
	}

	p = startServe(t, bin, dataDir, env...)
	// What the stream holds before any retry, read once the projection has
	// applied all of it.
	lastAtRestart := metricsCaughtUp(t, c, p.url, m.token, 0)
	before := map[int]map[int64]int{}
	for i := range metricClients {
		before[i] = batchesIn(t, i, readHistory(t, c, p.url, m, metricBatch{client: i}.metricKey()).points)
	}
	for _, mb := range answered {
		if before[mb.client][mb.b] == 0 {
			t.Errorf("batch %s was acknowledged (metrics sequence %d) but is not stored after the crash", mb.idempotencyKey(), ledger.answers[mb].mseq)
		}
	}
	storedBefore := map[metricBatch]bool{}
	for _, mb := range unanswered {
		storedBefore[mb] = before[mb.client][mb.b] > 0
	}
	var hit []string
	for mb, s := range storedBefore {
		if s {
			via := "api"
			if mb.mlflow() {
				via = "mlflow"
			}
			hit = append(hit, mb.idempotencyKey()+" ("+via+")")
		}
	}
	n := len(hit)
	slices.Sort(hit)
	t.Logf("crash %d: %d batches answered so far; %d unanswered, of which %d were stored %v; metrics stream at %d",
		cycle, len(ledger.answers), len(unanswered), n, hit, lastAtRestart)

	// Resend every unanswered batch as a client would: same key, body and
	// token.
	retried := resendAll(t, len(unanswered), func(i int) (metricsAnswer, int, error) {
		a, err := sendBatch(c, p.url, m, unanswered[i])
		return a, a.status, err
	})
	for i, mb := range unanswered {
		a := retried[i]
		if !a.logged() {
			t.Errorf("retry %s: %d %s, want 200 with Maestro-Metrics-Sequence", mb.idempotencyKey(), a.status, a.body)
			continue
		}
		// The retry answers with where the points are: the first attempt's
		// message if it was stored, a new one past the restart otherwise.
		if storedBefore[mb] && a.mseq > lastAtRestart {
			t.Errorf("retry %s answered metrics sequence %d, but its first attempt's points are stored at or before %d", mb.idempotencyKey(), a.mseq, lastAtRestart)
		}
		if !storedBefore[mb] && a.mseq <= lastAtRestart {
			t.Errorf("retry %s answered metrics sequence %d, stored before the restart (%d), but its points were not stored", mb.idempotencyKey(), a.mseq, lastAtRestart)
		}
		again, err := sendBatch(c, p.url, m, mb)
		if err != nil || !again.replayed || !again.sameOutcome(a) {
			t.Errorf("second retry %s: %v %+v, want the replay of %+v", mb.idempotencyKey(), err, again, a)
		}
		ledger.record(mb, a)
		ledger.retried++
	}
	// Batches answered before the crash replay their answer (the outcome
	// was stored before it was sent), not a second logging.
	for _, mb := range answered {
		want := ledger.answers[mb]
		again, err := sendBatch(c, p.url, m, mb)
		if err != nil || !again.replayed || !again.sameOutcome(want) {
			t.Errorf("resending answered batch %s after the crash: %v %+v, want the replay of %+v", mb.idempotencyKey(), err, again, want)
		}
	}
	return p, n
}

// metricsView is what the read side serves: each client key's history
// (the raw answer) and the run's latest value per key.
type metricsView struct {
	histories map[string][]byte
	latest    map[string]latestPoint
}

type latestPoint struct {
	Value     json.RawMessage `json:"value"`
	Step      int64           `json:"step"`
	Timestamp int64           `json:"timestamp"`
}

func (p latestPoint) String() string { return fmt.Sprintf("%s@%d/%d", p.Value, p.Step, p.Timestamp) }

type historyPoint struct {
	Key       string          `json:"key"`
	Value     json.RawMessage `json:"value"`
	Step      int64           `json:"step"`
	Timestamp int64           `json:"timestamp"`
}

// history is a key's history answer: as sent, and its points.
type history struct {
	raw    []byte
	points []historyPoint
}

// checkMetricsInvariant checks the read side against the ledger once the
// metrics projection has applied the whole stream, and returns what it
// served.
func checkMetricsInvariant(t *testing.T, c *http.Client, base string, m metricsTarget, ledger *metricsLedger) metricsView {
	t.Helper()
	var answered uint64
	for _, a := range ledger.answers {
		answered = max(answered, a.mseq)
	}
	last := metricsCaughtUp(t, c, base, m.token, answered)
	// The stream holds exactly one message per batch: the answers name
	// sequences 1..last, each once.
	bySeq := map[uint64]metricBatch{}
	for mb, a := range ledger.answers {
		if other, ok := bySeq[a.mseq]; ok {
			t.Errorf("batches %s and %s were both answered metrics sequence %d", mb.idempotencyKey(), other.idempotencyKey(), a.mseq)
		}
		bySeq[a.mseq] = mb
	}
	for s := uint64(1); s <= last; s++ {
		if _, ok := bySeq[s]; !ok {
			t.Errorf("the metrics stream holds message %d, which answers no batch (a batch stored twice?)", s)
		}
	}
	if uint64(len(bySeq)) != last {
		t.Errorf("%d batches answered, the metrics stream holds %d messages", len(bySeq), last)
	}

	view := readMetricsView(t, c, base, m, ledger.maxSeq)
	wantParams := map[string]string{}
	for i := range metricClients {
		key := metricBatch{client: i}.metricKey()
		var h struct {
			Points []historyPoint `json:"points"`
		}
		if err := json.Unmarshal(view.histories[key], &h); err != nil {
			t.Fatalf("history of %s: %v", key, err)
		}
		stored := batchesIn(t, i, h.Points)
		var top metricBatch
		top.b = -1
		for mb := range ledger.answers {
			if mb.client != i {
				continue
			}
			if stored[mb.b] == 0 {
				t.Errorf("batch %s was answered %d (metrics sequence %d) but is not in the history", mb.idempotencyKey(), ledger.answers[mb].status, ledger.answers[mb].mseq)
			}
			if mb.b > top.b {
				top = mb
			}
			if mb.mlflow() {
				wantParams[mb.param()] = strconv.Itoa(i)
			}
		}
		for b := range stored {
			if _, ok := ledger.answers[metricBatch{client: i, b: b}]; !ok {
				t.Errorf("the history of %s holds batch %d, which no client sent", key, b)
			}
		}
		// The latest value is the point with the highest step.
		step := top.b*1000 + batchPoints - 1
		want := fmt.Sprintf("%s@%d/%d", strconv.FormatFloat(crashPointValue(step), 'g', -1, 64), step, crashTS+top.b)
		if got, ok := view.latest[key]; !ok || got.String() != want {
			t.Errorf("the run's latest %s is %v, want %s", key, got, want)
		}
	}
	if len(view.latest) != metricClients {
		t.Errorf("the run has latest values of %d keys, want %d", len(view.latest), metricClients)
	}
	// MLflow's batches stored their param exactly as often as their points.
	params := readRunParams(t, c, base, m, ledger.maxSeq)
	if fmt.Sprint(params) != fmt.Sprint(wantParams) {
		t.Errorf("the run's params are not one per MLflow batch: got %d, want %d", len(params), len(wantParams))
	}
	return view
}

// batchesIn checks a client's history point by point (its key, a step of
// one of its batches, the value and timestamp that batch logged, in step
// order) and counts its points per batch. A batch stored exactly once has
// batchPoints points, each step once; it reports any other batch once.
func batchesIn(t *testing.T, client int, points []historyPoint) map[int64]int {
	t.Helper()
	key := metricBatch{client: client}.metricKey()
	out := map[int64]int{}
	repeated := map[int64]int{} // batch → points at a step seen before
	prev := int64(-1)
	bad, unordered := 0, 0
	for _, pt := range points {
		b, j := pt.Step/1000, pt.Step%1000
		v, err := strconv.ParseFloat(string(pt.Value), 64)
		if pt.Key != key || j >= batchPoints || err != nil || v != crashPointValue(pt.Step) || pt.Timestamp != crashTS+b {
			if bad++; bad <= 3 {
				t.Errorf("%s: a point no batch logged: %+v (value %s)", key, pt, pt.Value)
			}
			continue
		}
		switch {
		case pt.Step == prev:
			repeated[b]++
		case pt.Step < prev:
			if unordered++; unordered <= 3 {
				t.Errorf("%s: step %d comes after step %d", key, pt.Step, prev)
			}
		}
		prev = pt.Step
		out[b]++
	}
	for b, n := range out {
		if n != batchPoints || repeated[b] > 0 {
			t.Errorf("%s: batch %d has %d points stored (%d at a step already stored), want %d, each step once", key, b, n, repeated[b], batchPoints)
		}
	}
	return out
}

// readMetricsView reads every client key's history and the run's latest
// values (GET run, once the event projections reached seq).
func readMetricsView(t *testing.T, c *http.Client, base string, m metricsTarget, seq uint64) metricsView {
	t.Helper()
	v := metricsView{histories: map[string][]byte{}}
	for i := range metricClients {
		key := metricBatch{client: i}.metricKey()
		v.histories[key] = readHistory(t, c, base, m, key).raw
	}
	var run struct {
		Metrics map[string]latestPoint `json:"metrics"`
	}
	getJSON(t, c, m.runURL(base), m.token, seq, &run)
	v.latest = run.Metrics
	return v
}

func readRunParams(t *testing.T, c *http.Client, base string, m metricsTarget, seq uint64) map[string]string {
	t.Helper()
	var run struct {
		Params map[string]string `json:"params"`
	}
	getJSON(t, c, m.runURL(base), m.token, seq, &run)
	return run.Params
}

// readHistory reads a key's whole history (one streamed answer).
func readHistory(t *testing.T, c *http.Client, base string, m metricsTarget, key string) history {
	t.Helper()
	var h struct {
		Key       string         `json:"key"`
		Points    []historyPoint `json:"points"`
		Truncated bool           `json:"truncated"`
	}
	raw := getJSON(t, c, m.runURL(base)+"/metrics/"+url.PathEscape(key), m.token, 0, &h)
	if h.Key != key || h.Truncated {
		t.Fatalf("history of %s: key %q, truncated %v", key, h.Key, h.Truncated)
	}
	return history{raw: raw, points: h.Points}
}

// getJSON GETs u (with min_sequence, an event stream sequence, when seq >
// 0), retrying 503 projection-lagging while the read side catches up
// after a restart, and decodes the answer into v.
func getJSON(t *testing.T, c *http.Client, u, token string, seq uint64, v any) []byte {
	t.Helper()
	if seq > 0 {
		u += "?" + url.Values{"min_sequence": {strconv.FormatUint(seq, 10)}}.Encode()
	}
	catchUp := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(catchUp) {
			continue // the server itself waited ~2 s for the read side
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", u, resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		return body
	}
}

// projectionStatus is a projection's line of GET /api/v1/projections.
type projectionStatus struct {
	Name        string `json:"name"`
	Stream      string `json:"stream"`
	LastSeq     uint64 `json:"last_seq"`
	Quarantined int64  `json:"quarantined"`
}

// metricsCaughtUp polls GET /api/v1/projections (with a deadline) until
// the metrics projection has applied the whole metrics stream (and at
// least atLeast), and returns the stream's last sequence. A metrics read
// has no minimum sequence of its own (min_sequence is the event
// stream's); this is how a client waits for points it did not log itself.
func metricsCaughtUp(t *testing.T, c *http.Client, base, token string, atLeast uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			MetricsStreamLastSeq uint64             `json:"metrics_stream_last_seq"`
			Projections          []projectionStatus `json:"projections"`
		}
		getJSON(t, c, base+"/api/v1/projections", token, 0, &st)
		i := slices.IndexFunc(st.Projections, func(p projectionStatus) bool { return p.Name == "metrics" })
		if i < 0 || st.Projections[i].Stream != "metrics" {
			t.Fatalf("GET /api/v1/projections has no metrics projection on the metrics stream: %+v", st)
		}
		mp := st.Projections[i]
		if mp.LastSeq >= st.MetricsStreamLastSeq && mp.LastSeq >= atLeast {
			if mp.Quarantined > 0 {
				t.Errorf("the metrics projection quarantined %d messages", mp.Quarantined)
			}
			return st.MetricsStreamLastSeq
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics projection is at %d, the metrics stream at %d (want at least %d) after 60s", mp.LastSeq, st.MetricsStreamLastSeq, atLeast)
		}
		time.Sleep(20 * time.Millisecond) // poll; the deadline above bounds it
	}
}
