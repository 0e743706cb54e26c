package chaos

// The driver: the maestro binary and its processes, keyed clients that
// remember every answer, and the one invariant every scenario ends with.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testpg"
)

var reps = flag.Int("chaos.reps", 1, "repetitions of each scenario's fault (make chaos: 20)")

func TestMain(m *testing.M) {
	flag.Parse()
	code := testpg.Main(m)
	printResults(os.Stdout)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// ---- the binary and its processes ----

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// maestroBin builds cmd/maestro once per test process: every scenario runs
// the binary users run.
func maestroBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "maestro-chaos-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "maestro")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/maestro-ml/maestro/cmd/maestro").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// dataDir is a fresh directory for one process. Under root the managed
// PostgreSQL runs as the postgres user, which must traverse to it
// (t.TempDir is 0700).
func dataDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(testpg.TraversableDir(t), "data")
}

// baseEnv is this process's environment without MAESTRO_* variables (a
// developer's settings must not leak into the scenario) plus quiet logs.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAESTRO_") {
			env = append(env, kv)
		}
	}
	return append(append(env, "MAESTRO_LOG_LEVEL=warn"), extra...)
}

// proc is one running maestro process.
type proc struct {
	name string
	args []string
	env  []string
	cmd  *exec.Cmd
	url  string // the API's base URL; empty for a worker
	log  string // its stderr, kept for the failure message
}

// startProc starts `maestro args...` and waits for its banner: the API
// line for roles that serve HTTP, the first line for a worker.
func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, args: args, env: env, log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log (last 4000 bytes):\n%s", p.name, p.tail())
		}
	})
	p.restart(t)
	return p
}

// restart starts the process again with the same arguments (after a kill:
// what a supervisor does; no other step).
func (p *proc) restart(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(maestroBin(t), p.args...)
	cmd.Env = p.env
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd, p.url = cmd, ""
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	wantAPI := p.args[0] != "worker"
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case sent:
			case wantAPI && len(f) >= 2 && f[0] == "API:":
				ready <- strings.TrimSuffix(f[1], "/api/v1")
				sent = true
			case !wantAPI && strings.Contains(sc.Text(), "is running"):
				ready <- ""
				sent = true
			}
		}
		if !sent {
			close(ready)
		}
	}()
	select {
	case u, ok := <-ready:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("%s exited before it was ready:\n%s", p.name, p.tail())
		}
		p.url = u
	case <-time.After(90 * time.Second):
		t.Fatalf("%s was not ready within 90s:\n%s", p.name, p.tail())
	}
}

// kill is kill -9: no shutdown code runs.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	_ = p.cmd.Wait()
}

// stop is an orderly SIGTERM, which must end in a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM:\n%s", p.name, err, p.tail())
		}
	case <-time.After(60 * time.Second):
		t.Errorf("%s did not stop within 60s of SIGTERM", p.name)
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitReady polls /readyz until it answers 200: the "no manual step" part
// of the invariant. It returns when it did.
func waitReady(t *testing.T, base string) time.Time {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz did not answer 200 within 60s (last: %v)", base, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- keyed commands and what they were answered ----

// effect is how a stored command shows in a stream: messages of Type
// whose data field Field is Value (or, for an object, has the key Value).
// Same pairs a field of the answer (dotted path) with a field of the
// event's data: the answer must name what was stored.
type effect struct {
	Stream string // events.StreamName unless set
	Type   string
	Field  string
	Value  string
	Same   map[string]string
}

// command is one request as a client sends it, with its Idempotency-Key
// and the token of the session it belongs to (a retry reuses both).
type command struct {
	Method, Path, Key string
	Token             string // empty: anonymous
	Body              []byte
	ContentType       string
	Effect            effect
}

// answer is what a command got: a status and body, or a transport error
// (the process died: unanswered).
type answer struct {
	Status int
	Body   []byte
	Seq    uint64 // Maestro-Sequence
	Header http.Header
	Err    error
}

func (a answer) ok() bool { return a.Err == nil && a.Status >= 200 && a.Status < 300 }

func (a answer) String() string {
	if a.Err != nil {
		return "unanswered: " + a.Err.Error()
	}
	return fmt.Sprintf("%d %s", a.Status, bytes.TrimSpace(a.Body))
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

// send sends cmd to the API at base.
func send(base string, cmd command) answer {
	req, err := http.NewRequest(cmd.Method, base+cmd.Path, bytes.NewReader(cmd.Body))
	if err != nil {
		return answer{Err: err}
	}
	req.Header.Set("Content-Type", cmp(cmd.ContentType, "application/json"))
	if cmd.Key != "" {
		req.Header.Set("Idempotency-Key", cmd.Key)
	}
	if cmd.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cmd.Token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return answer{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{Err: err}
	}
	seq, _ := strconv.ParseUint(resp.Header.Get("Maestro-Sequence"), 10, 64)
	return answer{Status: resp.StatusCode, Body: body, Seq: seq, Header: resp.Header}
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// jsonBody marshals v (the load's bodies always marshal).
func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// entry is one command and the answer that counts for it: the first, or
// the retry's when the first was lost.
type entry struct {
	cmd      command
	sentTo   string // the API base URL of the first attempt
	first    answer
	final    answer
	retried  bool
	inFlight time.Duration // how long retries waited on 409 request-in-progress
}

// ledger is every command a scenario sent.
type ledger struct {
	mu      sync.Mutex
	entries []*entry
}

func (l *ledger) record(base string, cmd command, a answer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, &entry{cmd: cmd, sentTo: base, first: a, final: a})
}

// unanswered are the commands whose first attempt got no answer and that
// have not been resent yet.
func (l *ledger) unanswered() []*entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*entry
	for _, e := range l.entries {
		if e.first.Err != nil && !e.retried {
			out = append(out, e)
		}
	}
	return out
}

// burst runs clients concurrent clients, each sending next(client, n) to
// target(client) until ctx ends or its process dies under it (a transport
// error: the command is unanswered and that client stops, as a client
// whose server vanished would). acked gets a tick per 2xx answer.
func burst(ctx context.Context, l *ledger, clients int, target func(client int) string,
	next func(client, n int) command, acked chan<- struct{}) {
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				cmd, base := next(i, n), target(i)
				a := send(base, cmd)
				l.record(base, cmd, a)
				if a.Err != nil {
					return
				}
				if a.ok() {
					select {
					case acked <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	wg.Wait()
}

// verifyDataDir is `maestro projections verify` attached to the serve of
// a data dir (world.verifyCmd).
func verifyDataDir(t *testing.T, dir string) func() *exec.Cmd {
	return func() *exec.Cmd { return exec.Command(maestroBin(t), "projections", "verify", "--data-dir", dir) }
}

// load is a burst of clients running in the background (startLoad).
type load struct {
	acked  chan struct{} // a value per acknowledged command
	cancel context.CancelFunc
	done   chan struct{} // closed when every client has returned
}

// startLoad runs run (a burst) in the background until stop.
func startLoad(run func(ctx context.Context, acked chan<- struct{})) *load {
	ctx, cancel := context.WithCancel(context.Background())
	ld := &load{acked: make(chan struct{}, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ld.done)
		run(ctx, ld.acked)
	}()
	return ld
}

// stop ends the load and waits for its clients.
func (ld *load) stop() {
	ld.cancel()
	<-ld.done
}

// waitAcks waits for n acknowledgements of a running burst.
func waitAcks(t *testing.T, acked <-chan struct{}, n int) {
	t.Helper()
	deadline := time.After(90 * time.Second)
	for range n {
		select {
		case <-acked:
		case <-deadline:
			t.Fatalf("the load did not reach %d acknowledged commands within 90s", n)
		}
	}
}

// resend sends every unanswered command again to base, with its key, body
// and token, as a client would, all at once. A 409 request-in-progress is
// retried after its Retry-After for up to inProgress (zero: a 409 is
// final — a restarted sole instance takes over its dead predecessor's keys
// at once); a 503 is retried for up to 30 s (a client honours it too).
func resend(base string, l *ledger, inProgress time.Duration) {
	var wg sync.WaitGroup
	for _, e := range l.unanswered() {
		wg.Go(func() {
			start := time.Now()
			for {
				a := send(base, e.cmd)
				waited := time.Since(start)
				busy := a.Status == http.StatusConflict && bytes.Contains(a.Body, []byte("request-in-progress")) && waited < inProgress
				if busy || (a.Status == http.StatusServiceUnavailable && waited < 30*time.Second) {
					time.Sleep(time.Second) // the Retry-After both name
					continue
				}
				l.mu.Lock()
				e.final, e.retried = a, true
				if a.Status != http.StatusConflict {
					e.inFlight = waited
				}
				l.mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
}

// ---- the invariant ----

// streamMsg is one stored message, decoded.
type streamMsg struct {
	Seq  uint64
	Type string
	Data map[string]any
}

// readStream reads a whole stream in order, the way an outside subscriber
// would (an ordered consumer over the NATS the platform uses).
func readStream(ctx context.Context, nc *nats.Conn, name string) ([]streamMsg, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", name, err)
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", name, err)
	}
	var out []streamMsg
	for len(out) == 0 || out[len(out)-1].Seq < last {
		if last == 0 {
			break
		}
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", name, err)
			}
			sm := streamMsg{Seq: md.Sequence.Stream, Type: m.Headers().Get("ce-type")}
			if name == events.MetricsStreamName && sm.Type == "" {
				sm.Type = events.MetricsLogged
			}
			// A message that is not a JSON object (none should be) is
			// counted with empty data: it matches no effect.
			_ = json.Unmarshal(m.Data(), &sm.Data)
			out = append(out, sm)
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("read %s: nothing after sequence %d of %d within 5s", name, len(out), last)
		}
	}
	return out, nil
}

// matches reports whether m is an effect's message.
func (f effect) matches(m streamMsg) bool {
	if m.Type != f.Type {
		return false
	}
	switch v := m.Data[f.Field].(type) {
	case string:
		return v == f.Value
	case map[string]any:
		_, ok := v[f.Value]
		return ok
	}
	return false
}

// lookup follows a dotted path through decoded JSON.
func lookup(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// verdict is what the invariant found.
type verdict struct {
	Acked, Retried, Lost, Duplicated int
}

// world is how the invariant reaches what a scenario ran.
type world struct {
	nc        *nats.Conn
	hotModel  string           // model id whose versions must be gapless
	verifyCmd func() *exec.Cmd // `maestro projections verify` for this platform
}

// checkInvariant checks the ledger against the streams: every command
// answered 2xx (first time or on its retry) is stored exactly once and its
// answer names what was stored; every command that was refused stored
// nothing; the hot model's versions are 1..n; the read models equal a
// rebuild. It checks the whole ledger and counts, for the results table,
// the entries from index from on (this repetition's).
func checkInvariant(t *testing.T, w world, l *ledger, from int) verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stored := map[string][]streamMsg{}
	for _, name := range []string{events.StreamName, events.MetricsStreamName} {
		// An outside reader retries as any subscriber would: right after a
		// fault its own connection may still be reconnecting, or a stream
		// or consumer leader still being elected (no responders).
		var msgs []streamMsg
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			if msgs, err = readStream(ctx, w.nc, name); err == nil || time.Now().After(deadline) {
				break
			}
			t.Logf("reading %s again: %v", name, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		stored[name] = msgs
	}

	var v verdict
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.entries {
		var found []streamMsg
		for _, m := range stored[cmp(e.cmd.Effect.Stream, events.StreamName)] {
			if e.cmd.Effect.matches(m) {
				found = append(found, m)
			}
		}
		what := fmt.Sprintf("%s %s (key %s)", e.cmd.Method, e.cmd.Path, e.cmd.Key)
		if !e.final.ok() {
			if e.final.Err != nil {
				t.Errorf("%s was never answered, not even on its retry: %v", what, e.final.Err)
			} else {
				t.Errorf("%s was refused: %s", what, e.final)
			}
			if len(found) > 0 && (e.final.Err != nil || e.final.Status < 500) {
				t.Errorf("%s was not acknowledged, yet stored %d time(s)", what, len(found))
			}
			continue
		}
		// An earlier repetition's entry is checked again but was counted there.
		mine := i >= from
		if mine {
			v.Acked++
		}
		if mine && e.retried {
			v.Retried++
		}
		switch {
		case len(found) == 0:
			if mine {
				v.Lost++
			}
			t.Errorf("LOST: %s was answered %s but is not in the stream", what, e.final)
			continue
		case len(found) > 1:
			if mine {
				v.Duplicated++
			}
			t.Errorf("DUPLICATED: %s is stored %d times (sequences %v)", what, len(found), seqs(found))
		}
		var body any
		_ = json.Unmarshal(e.final.Body, &body)
		for af, ef := range e.cmd.Effect.Same {
			if got, want := fmt.Sprint(lookup(body, af)), fmt.Sprint(found[0].Data[ef]); got != want {
				t.Errorf("%s was answered %s=%s, but the stream stored %s=%s", what, af, got, ef, want)
			}
		}
	}

	// Version numbers stay gapless: 1..n, each once.
	var versions []int
	for _, m := range stored[events.StreamName] {
		if m.Type == events.ModelVersionRegistered && m.Data["model_id"] == w.hotModel {
			n, _ := m.Data["version"].(float64)
			versions = append(versions, int(n))
		}
	}
	slices.Sort(versions)
	for i, n := range versions {
		if n != i+1 {
			t.Errorf("the hot model's versions are not 1..%d without gaps or repeats: %v", len(versions), versions)
			break
		}
	}

	// The read models equal a rebuild from the stream.
	if w.verifyCmd != nil {
		cmd := w.verifyCmd()
		out, err := cmd.CombinedOutput()
		switch {
		case err != nil && bytes.Contains(out, []byte("unexpected argument verify")):
			t.Errorf("`maestro projections verify` does not exist in this build: the read models were not compared with a rebuild")
		case err != nil:
			t.Errorf("maestro projections verify: %v\n%s", err, out)
		}
	}
	return v
}

func seqs(ms []streamMsg) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}

// ---- the results table ----

// result is one line of the closing table.
type result struct {
	Scenario string
	Rep      int
	verdict
	Recovery time.Duration // kill → the platform answers again
	Note     string
}

var (
	resultsMu sync.Mutex
	results   []result
)

// report prints one scenario run's line and keeps it for the table.
func report(t *testing.T, r result) {
	t.Helper()
	t.Logf("RESULT %s rep %d: %d acknowledged (%d after a retry), %d lost, %d duplicated, recovery %s %s",
		r.Scenario, r.Rep, r.Acked, r.Retried, r.Lost, r.Duplicated, r.Recovery.Round(time.Millisecond), r.Note)
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results = append(results, r)
}

// printResults prints the table: one row per scenario, summed over its
// repetitions, with the slowest recovery.
func printResults(out io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nscenario\treps\tacknowledged\tretried\tlost\tduplicated\trecovery (max)")
	var order []string
	sum := map[string]*result{}
	for _, r := range results {
		s, ok := sum[r.Scenario]
		if !ok {
			s = &result{Scenario: r.Scenario}
			sum[r.Scenario] = s
			order = append(order, r.Scenario)
		}
		s.Rep++
		s.Acked += r.Acked
		s.Retried += r.Retried
		s.Lost += r.Lost
		s.Duplicated += r.Duplicated
		s.Recovery = max(s.Recovery, r.Recovery)
	}
	for _, name := range order {
		s := sum[name]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", s.Scenario, s.Rep, s.Acked, s.Retried, s.Lost, s.Duplicated, s.Recovery.Round(time.Millisecond))
	}
	_ = tw.Flush()
}

// errProblem decodes a problem+json answer's type and title.
func errProblem(a answer) (typ, title string, err error) {
	var p struct {
		Type  string `json:"type"`
		Title string `json:"title"`
	}
	if err := json.Unmarshal(a.Body, &p); err != nil {
		return "", "", errors.New("not a problem+json body")
	}
	return p.Type, p.Title, nil
}
