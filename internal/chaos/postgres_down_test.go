package chaos

// Scenario 3: PostgreSQL fails under `maestro serve` plus a `maestro
// worker` that competes with it for every projection's lock. Under a burst
// of commands and queries:
//
//   - the sessions holding the projection locks are cut
//     (pg_terminate_backend); a Postgres-side log of every checkpoint move
//     shows each batch was committed by the process that held that
//     projection's lock at that moment — never by an orphan, so two runners
//     never apply at once;
//   - PostgreSQL is stopped with `pg_ctl stop -m immediate` and started
//     again a few seconds later; while it is down every request is answered
//     within 5 s, 2xx or 503 problem+json with Retry-After (never a 500,
//     never a hang, never a reset), and commands and queries work again
//     without a restart of maestro.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/projections"
)

// answerBound is how long any request may take, PostgreSQL down or not.
const answerBound = 5 * time.Second

// pgDownFor is how long PostgreSQL stays down in each repetition.
const pgDownFor = 4 * time.Second

func TestPostgresDown(t *testing.T) {
	dir := dataDir(t)
	env := baseEnv(append(bootstrapAdmin, "MAESTRO_REGISTRATIONS_PER_HOUR=100000")...)
	serve := startProc(t, "serve", env, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
	info, err := platform.ReadRunInfo(dir)
	if err != nil {
		t.Fatalf("run.json: %v", err)
	}
	pg := managedPG(t, filepath.Join(dir, "postgres"), info.DatabaseURL)
	db := connectPG(t, info.DatabaseURL)
	installApplyLog(t, db)

	// A second projection worker on serve's NATS and PostgreSQL: every
	// projection has two runners, one active and one standing by. Its
	// application_name tells its commits from serve's in the apply log.
	worker := startProc(t, "worker", baseEnv("MAESTRO_NATS_URL="+info.NATSURL, "MAESTRO_NATS_USER="+info.NATSUser,
		"MAESTRO_NATS_PASSWORD="+info.NATSPassword, "MAESTRO_NATS_REPLICAS=1",
		"MAESTRO_DATABASE_URL="+withAppName(t, info.DatabaseURL, workerApp)), "worker", "--data-dir", dataDir(t))

	l := &ledger{}
	ws := setupWorkspace(t, serve.url, login(t, serve.url), l)
	w := world{hotModel: ws.hotModel, verifyCmd: verifyDataDir(t, dir)}.with(t, dir)

	for rep := range *reps {
		token := login(t, serve.url)
		start := len(l.entries)
		obs := &observations{}
		ld := startLoad(func(ctx context.Context, acked chan<- struct{}) {
			patientBurst(ctx, l, obs, serve.url, ws.nextCommand("s3", rep, token, false), ws.queries(token), acked)
		})

		// The lock holders' sessions are cut mid-load.
		waitAcks(t, ld.acked, 30)
		cut := cutLockHolders(t, db)
		waitLocksHeld(t, db)
		waitAcks(t, ld.acked, 20)

		// PostgreSQL dies (no shutdown checkpoint, every session dropped)
		// and stays down for pgDownFor while the load goes on.
		down := time.Now()
		pg.ctl(t, "stop", "-m", "immediate", "-w")
		waitUntil(t, down.Add(pgDownFor))
		pg.ctl(t, "start", "-w", "-t", "60", "-l", pg.logFile, "-o", "-p "+pg.port)
		up := time.Now()
		db = connectPG(t, info.DatabaseURL)
		// Back: a new command and a query both succeed again.
		recovery := probeRecovery(t, l, serve.url, token, fmt.Sprintf("s3-r%d-probe", rep)).Sub(up)
		waitAcks(t, ld.acked, 20)
		ld.stop()

		during := obs.check(t, down, up)
		waitReady(t, serve.url)
		waitCaughtUp(t, serve.url, token, l)
		v := checkInvariant(t, w, l, start)
		handovers := checkApplyLog(t, db)
		report(t, result{Scenario: "3 postgres down", Rep: rep + 1, verdict: v, Recovery: recovery,
			Note: fmt.Sprintf("(%d lock sessions cut, %d lock handovers and %d runners that noticed a lost lock so far; while down: %s)",
				cut, handovers, lostLocks(serve, worker), during)})
	}
	worker.stop(t)
	serve.stop(t)
}

// ---- the load ----

// queries is the read mix: the hot model's versions, the project, and
// /readyz (which must say PostgreSQL is down, not hang).
func (w workspace) queries(token string) func(i, n int) command {
	paths := []string{"/api/v1/projects/" + project + "/models/hot/versions?max_results=5", "/api/v1/projects/" + project, "/readyz"}
	return func(i, n int) command {
		return command{Method: "GET", Path: paths[(i+n)%len(paths)], Token: token}
	}
}

// observation is one request of the load: when it was sent, how long its
// answer took, and the answer.
type observation struct {
	what string
	sent time.Time
	took time.Duration
	a    answer
}

// observations is every request the load sent, first attempts and retries.
type observations struct {
	mu  sync.Mutex
	all []observation
}

func (o *observations) send(base string, cmd command) answer {
	start := time.Now()
	a := send(base, cmd)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.all = append(o.all, observation{what: cmd.Method + " " + cmd.Path, sent: start, took: time.Since(start), a: a})
	return a
}

// patientBurst is burst with clients that honour Retry-After: a command
// answered 503, or 409 request-in-progress (its first attempt's key is
// still pending), is sent again with its key after Retry-After until it
// gets another answer (for up to a minute, even after ctx ends: a client
// does not drop a command it was told to retry). Two more clients send
// queries.
func patientBurst(ctx context.Context, l *ledger, obs *observations, base string,
	next, query func(client, n int) command, acked chan<- struct{}) {
	var wg sync.WaitGroup
	for i := range serveClients {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				cmd := next(i, n)
				first := obs.send(base, cmd)
				final, retried := first, false
				for since := time.Now(); retryable(final) && time.Since(since) < time.Minute; {
					time.Sleep(retryAfter(final))
					final, retried = obs.send(base, cmd), true
				}
				l.mu.Lock()
				l.entries = append(l.entries, &entry{cmd: cmd, sentTo: base, first: first, final: final, retried: retried})
				l.mu.Unlock()
				if final.ok() {
					select {
					case acked <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	for i := range 2 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				if a := obs.send(base, query(i, n)); a.Status == http.StatusServiceUnavailable {
					time.Sleep(retryAfter(a))
				}
			}
		})
	}
	wg.Wait()
}

// retryable says a command's answer asks for a retry with the same key.
func retryable(a answer) bool {
	return a.Status == http.StatusServiceUnavailable ||
		a.Status == http.StatusConflict && bytes.Contains(a.Body, []byte("request-in-progress"))
}

// retryAfter is a 503's Retry-After (a second when it has none: the
// contract check reports that).
func retryAfter(a answer) time.Duration {
	if s, err := strconv.Atoi(a.Header.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return time.Second
}

// check holds every request of the repetition to the outage contract:
// answered (no reset, no hang), within answerBound, and 2xx or 503
// problem+json with a Retry-After. Failures are grouped by kind so a
// thousand identical ones read as one line. It returns a summary of the
// requests sent while PostgreSQL was down (from down to up).
func (o *observations) check(t *testing.T, down, up time.Time) string {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	bad := map[string][]observation{}
	var whileDown, ok, unavailable int
	var slowest time.Duration
	for _, ob := range o.all {
		a := ob.a
		if !ob.sent.Before(down) && ob.sent.Before(up) {
			whileDown++
			switch {
			case a.ok():
				ok++
			case a.Status == http.StatusServiceUnavailable:
				unavailable++
			}
			slowest = max(slowest, ob.took)
		}
		if ob.took > answerBound {
			bad[fmt.Sprintf("answered after more than %s", answerBound)] = append(bad[fmt.Sprintf("answered after more than %s", answerBound)], ob)
		}
		switch {
		case a.Err != nil:
			bad["no answer"] = append(bad["no answer"], ob)
		case a.ok():
		case a.Status != http.StatusServiceUnavailable:
			k := fmt.Sprintf("%d (want 2xx or 503)", a.Status)
			bad[k] = append(bad[k], ob)
		case a.Header.Get("Content-Type") != "application/problem+json":
			k := "503 with Content-Type " + strconv.Quote(a.Header.Get("Content-Type"))
			bad[k] = append(bad[k], ob)
		case a.Header.Get("Retry-After") == "":
			var p struct{ Detail string }
			_ = json.Unmarshal(a.Body, &p)
			k := fmt.Sprintf("503 without Retry-After (detail %q)", p.Detail)
			bad[k] = append(bad[k], ob)
		}
	}
	kinds := make([]string, 0, len(bad))
	for k := range bad {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		ex := bad[k][0]
		t.Errorf("%d request(s) %s; e.g. %s sent %s after the stop, took %s: %s",
			len(bad[k]), k, ex.what, ex.sent.Sub(down).Round(time.Millisecond), ex.took.Round(time.Millisecond), ex.a)
	}
	if whileDown == 0 {
		t.Errorf("no request was sent while PostgreSQL was down: the outage was not exercised")
	}
	return fmt.Sprintf("%d requests, %d 2xx, %d 503, slowest %s", whileDown, ok, unavailable, slowest.Round(time.Millisecond))
}

// probeRecovery sends a new keyed command and a query until both answer
// 2xx (a minute at most) and returns when they did. The command is
// recorded: the invariant covers it.
func probeRecovery(t *testing.T, l *ledger, base, token, key string) time.Time {
	t.Helper()
	cmd := versionCmd(token, key)
	query := command{Method: "GET", Path: "/api/v1/projects/" + project + "/models/hot/versions?max_results=1", Token: token}
	deadline := time.Now().Add(time.Minute)
	var c, q answer
	for {
		if !c.ok() {
			c = send(base, cmd)
		}
		if c.ok() {
			if q = send(base, query); q.ok() {
				l.record(base, cmd, c)
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			l.record(base, cmd, c)
			t.Fatalf("a minute after PostgreSQL was back, the command answers %s and the query %s", c, q)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitUntil waits for a point in time: the fault's planned duration, not a
// condition.
func waitUntil(t *testing.T, when time.Time) {
	t.Helper()
	time.Sleep(time.Until(when))
}

// ---- the managed PostgreSQL ----

// pgCluster is the PostgreSQL cluster serve manages in its data dir,
// stopped and started behind its back as an operator or a crash would.
type pgCluster struct {
	dir, pgCtl, port, logFile string
	owner                     *syscall.Credential // pg_ctl refuses root: run as the cluster's owner
}

func managedPG(t *testing.T, dir, dbURL string) pgCluster {
	t.Helper()
	// postmaster.opts starts with the path of the postgres binary that
	// runs; pg_ctl is next to it.
	opts, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.opts"))
	if err != nil {
		t.Fatal(err)
	}
	bin := strings.Trim(strings.Fields(string(opts))[0], `"`)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	c := pgCluster{dir: dir, pgCtl: filepath.Join(filepath.Dir(bin), "pg_ctl"), port: u.Port(), logFile: filepath.Join(dir, "postgres.log")}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(dir, "data"))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		c.owner = &syscall.Credential{Uid: st.Uid, Gid: st.Gid}
	}
	return c
}

// ctl runs pg_ctl args -D <data> as the cluster's owner.
func (c pgCluster) ctl(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(c.pgCtl, append(args, "-D", filepath.Join(c.dir, "data"))...)
	cmd.Dir = c.dir // the owner must be able to read its working directory
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.owner}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func connectPG(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to serve's PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	return db
}

// workerApp is the worker's application_name; serve's connections have
// none.
const workerApp = "chaos-worker"

func withAppName(t *testing.T, dbURL, app string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return u.String()
}

// ---- the projection locks ----

// lockKey is the projection's advisory lock key, as projections/runner.go
// computes it (unexported there; the test must find the lock's holder).
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("maestro.projection." + name))
	return int64(h.Sum64())
}

// lockHolderSQL finds the session holding a projection's lock: a bigint
// advisory key shows in pg_locks as classid (high half), objid (low half)
// and objsubid 1.
const lockHolderSQL = `
SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND ((l.classid::bigint << 32) | l.objid::bigint) = k.key`

// installApplyLog records every committed checkpoint move, with the
// process that made it (its application_name) and the process whose
// session held the projection's lock at that moment, in a schema of its
// own (verify compares the projections' tables only). The row is written
// in the batch's own transaction: a rolled-back batch leaves none.
func installApplyLog(t *testing.T, db *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	// Every projection, from the code: a projection whose checkpoint row
	// does not exist yet (its runner has not committed) must be watched too.
	var names []string
	for _, p := range slices.Concat(projections.All(), projections.Telemetry()) {
		names = append(names, p.Name())
	}
	sql := `
CREATE SCHEMA chaos;
CREATE TABLE chaos.lock_keys (name text PRIMARY KEY, key bigint NOT NULL);
CREATE TABLE chaos.applies (id bigserial PRIMARY KEY, name text, from_seq bigint, to_seq bigint,
    app text, holder_app text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION chaos.log_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos.applies (name, from_seq, to_seq, app, holder_app)
    SELECT NEW.name, OLD.last_seq, NEW.last_seq, current_setting('application_name'),
           (SELECT h.application_name FROM (` + strings.ReplaceAll(lockHolderSQL, "k.key", "(SELECT key FROM chaos.lock_keys WHERE name = NEW.name)") + `) h LIMIT 1);
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_log_apply AFTER UPDATE ON projection_checkpoints
    FOR EACH ROW WHEN (NEW.last_seq > OLD.last_seq) EXECUTE FUNCTION chaos.log_apply();`
	// The keys go in with the trigger, in one transaction: serve's runners
	// are applying already, and a batch logged before its projection's key
	// was there would show "nobody held the lock" (a test race seen twice).
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit: a no-op
	if _, err := tx.Exec(ctx, sql); err != nil {
		t.Fatalf("install the apply log: %v", err)
	}
	for _, n := range names {
		if _, err := tx.Exec(ctx, "INSERT INTO chaos.lock_keys VALUES ($1, $2)", n, lockKey(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("install the apply log: %v", err)
	}
}

// cutLockHolders terminates every session holding a projection's lock
// (the lock and its holder probe go with the session) and returns how
// many it cut.
func cutLockHolders(t *testing.T, db *pgx.Conn) int {
	t.Helper()
	var n int
	err := db.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT DISTINCT h.pid
	  FROM chaos.lock_keys k, LATERAL (`+lockHolderSQL+`) h) x WHERE pg_terminate_backend(x.pid)`).Scan(&n)
	if err != nil || n == 0 {
		t.Fatalf("cut the projection lock holders: %v (%d cut)", err, n)
	}
	return n
}

// waitLocksHeld waits until every projection's lock is held again (a
// standby or the orphan, after its standby wait, took it).
func waitLocksHeld(t *testing.T, db *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var free []string
		rows, err := db.Query(context.Background(), `SELECT k.name FROM chaos.lock_keys k
		  WHERE NOT EXISTS (`+strings.Replace(lockHolderSQL, "SELECT l.pid, a.application_name", "SELECT 1", 1)+`) ORDER BY 1`)
		if err == nil {
			free, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(free) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the lock sessions were cut, nobody holds the lock of %v", free)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lostLocks counts the runners of procs that stood by because their lock
// session was gone (a batch refused with MA002, or an idle check).
func lostLocks(procs ...*proc) int {
	n := 0
	for _, p := range procs {
		b, _ := os.ReadFile(p.log)
		n += bytes.Count(b, []byte("lost its advisory lock"))
	}
	return n
}

// checkApplyLog checks every committed batch was committed by the process
// whose session held the projection's lock at that moment (an orphan whose
// lock session was cut must roll back, MA002) and that each projection's
// batches follow each other (each starts where the previous ended). It
// returns how many times a projection's batches changed hands.
func checkApplyLog(t *testing.T, db *pgx.Conn) int {
	t.Helper()
	type apply struct {
		ID             int64
		Name           string
		FromSeq, ToSeq int64
		App            string
		HolderApp      *string
	}
	rows, err := db.Query(context.Background(), "SELECT id, name, from_seq, to_seq, app, holder_app FROM chaos.applies ORDER BY name, id")
	if err != nil {
		t.Fatal(err)
	}
	applies, err := pgx.CollectRows(rows, pgx.RowToStructByPos[apply])
	if err != nil {
		t.Fatal(err)
	}
	who := func(app string) string { return cmp(app, "serve") }
	handovers, orphans := 0, 0
	for i, a := range applies {
		if a.HolderApp == nil || *a.HolderApp != a.App {
			orphans++
			holder := "nobody"
			if a.HolderApp != nil {
				holder = who(*a.HolderApp)
			}
			t.Errorf("projection %s: %s committed events %d..%d while %s held the lock", a.Name, who(a.App), a.FromSeq+1, a.ToSeq, holder)
		}
		if i == 0 || applies[i-1].Name != a.Name {
			continue
		}
		prev := applies[i-1]
		if a.FromSeq != prev.ToSeq {
			t.Errorf("projection %s: a batch from %d follows one that ended at %d", a.Name, a.FromSeq, prev.ToSeq)
		}
		if a.App != prev.App {
			handovers++
		}
	}
	if len(applies) == 0 {
		t.Errorf("the apply log is empty: no projection committed a batch")
	}
	t.Logf("apply log: %d batches, %d handovers between serve and the worker, %d by a process without the lock", len(applies), handovers, orphans)
	return handovers
}
