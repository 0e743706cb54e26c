package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/internal/memstat"
)

// The goals of the command path (issue 7), printed next to the rows.
const (
	goalWriteC1     = 400.0 // req/s, one client, one model
	goalWriteC1P50  = 2500 * time.Microsecond
	goalWriteC4     = 1000.0 // req/s, four clients, one model
	goalWriteC4P99  = 15 * time.Millisecond
	goalCPUPerWrite = 1.5    // ms of server CPU per registered version at one client
	goalGetModel    = 5000.0 // req/s, four clients
	goalMe          = 8000.0 // req/s
	goalIdleRSS     = 60     // MiB
	goalLoadRSS     = 100    // MiB
)

// serveProc is `maestro serve` running as its own process, as users run it:
// its CPU time and memory are the server's alone, not the load generator's.
type serveProc struct {
	args     []string // the command line, for restart
	cmd      *exec.Cmd
	pid      string
	base     string // API base URL
	debug    string // admin listener base URL
	logFile  string
	exited   chan struct{}
	waitErr  error
	database string
	// postmaster is the pid of the Postgres cluster serving database
	// (postgresCPU), found once.
	postmaster string
}

func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// maestroBinary is cfg.MaestroBin, or bin/maestro built from this module.
func (r *runner) maestroBinary(ctx context.Context) (string, error) {
	if r.cfg.MaestroBin != "" {
		return r.cfg.MaestroBin, nil
	}
	if r.bin != "" {
		return r.bin, nil
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", fmt.Errorf("serve: find the module to build maestro (run from the repository, or pass -maestro-bin): %v", err)
	}
	bin := filepath.Join(r.env.dir, "maestro")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/maestro")
	build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if b, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("serve: go build ./cmd/maestro: %v\n%s", err, b)
	}
	r.bin = bin
	return bin, nil
}

func (r *runner) startServe(ctx context.Context, bin string) (*serveProc, error) {
	db, err := r.env.database(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := r.env.tempDir("serve-")
	if err != nil {
		return nil, err
	}
	httpPort, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	debugPort, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	s := &serveProc{base: fmt.Sprintf("http://127.0.0.1:%d", httpPort), debug: fmt.Sprintf("http://127.0.0.1:%d", debugPort),
		logFile: filepath.Join(dir, "serve.log"), database: db}
	// The production defaults (fsync before ack, JSON request log at info),
	// with Postgres and the addresses given.
	s.args = []string{bin, "serve", "--data-dir", filepath.Join(dir, "data"),
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort), "--nats-listen", "off",
		"--debug-addr", fmt.Sprintf("127.0.0.1:%d", debugPort)}
	if err := s.launch(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// launch starts the process and waits until it is ready.
func (s *serveProc) launch(ctx context.Context) error {
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.exited = make(chan struct{})
	s.cmd = exec.Command(s.args[0], s.args[1:]...)
	s.cmd.Env = append(os.Environ(), "MAESTRO_DATABASE_URL="+s.database,
		"MAESTRO_BOOTSTRAP_ADMIN_EMAIL="+serveAdmin, "MAESTRO_BOOTSTRAP_ADMIN_PASSWORD="+benchPassword)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("serve: start %s: %w", s.args[0], err)
	}
	s.pid = strconv.Itoa(s.cmd.Process.Pid)
	exited := s.exited
	go func() {
		s.waitErr = s.cmd.Wait()
		logf.Close()
		close(exited)
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("serve: exited during start (%v); log %s:\n%s", s.waitErr, s.logFile, tail(s.logFile))
		case <-ctx.Done():
			s.stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling readiness, bounded by deadline
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("serve: not ready after 2 minutes; log:\n%s", tail(s.logFile))
		}
	}
}

// restart stops the server and starts it again on the same data and
// database (a fresh process: its memory is what it does from now on).
func (s *serveProc) restart(ctx context.Context) error {
	s.stop()
	return s.launch(ctx)
}

const serveAdmin = "serve-admin@example.com"

func tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (s *serveProc) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// cpu is the process's user + system CPU time so far.
func cpuOf(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // CLK_TCK is 100 on Linux
}

// postgresCPU sums the CPU time of the server's Postgres cluster: its
// postmaster and the postmaster's children (backends, walwriter,
// checkpointer…). Other clusters on the machine (tests running beside the
// bench) are not counted. Without the postmaster (serve not started yet)
// it is every process named postgres.
func (s *serveProc) postgresCPU() time.Duration {
	if s.postmaster == "" {
		if pm, err := postmasterOf(s.database); err == nil {
			s.postmaster = pm
		}
	}
	ents, _ := os.ReadDir("/proc")
	var t time.Duration
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if c, _ := os.ReadFile("/proc/" + e.Name() + "/comm"); strings.TrimSpace(string(c)) != "postgres" {
			continue
		}
		if s.postmaster == "" || e.Name() == s.postmaster || parentOf(e.Name()) == s.postmaster {
			t += cpuOf(e.Name())
		}
	}
	return t
}

// postmasterOf finds the postmaster of the cluster serving db: the parent
// of a backend of a connection to it.
func postmasterOf(db string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return "", err
	}
	if pm := parentOf(strconv.Itoa(pid)); pm != "" {
		return pm, nil
	}
	return "", fmt.Errorf("no parent of backend %d", pid)
}

// parentOf is a process's parent pid ("" when unknown).
func parentOf(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// loadFor is drive for d.
func loadFor(ctx context.Context, clients int, d time.Duration, do func(int) (int, error)) (*Samples, int, time.Duration, int, error) {
	end := time.Now().Add(d)
	return drive(ctx, clients, func() bool { return time.Now().Before(end) }, do)
}

// statements reads pg_stat_statements of the serve database (nil when the
// extension is not loaded).
type statements struct {
	conn *pgx.Conn
}

func openStatements(ctx context.Context, db string) *statements {
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		conn.Close(ctx)
		return nil
	}
	if _, err := conn.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		conn.Close(ctx)
		return nil
	}
	return &statements{conn: conn}
}

func (s *statements) reset(ctx context.Context) {
	if s != nil {
		_, _ = s.conn.Exec(ctx, "SELECT pg_stat_statements_reset()")
	}
}

// top returns the statements run since reset, most called first, and the
// total number of calls.
func (s *statements) top(ctx context.Context, n int) ([]string, int64) {
	if s == nil {
		return nil, -1
	}
	rows, err := s.conn.Query(ctx, `SELECT calls, round(total_exec_time::numeric / greatest(calls, 1) * 1000)::bigint, query
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC`)
	if err != nil {
		return nil, -1
	}
	defer rows.Close()
	var out []string
	var total int64
	for rows.Next() {
		var calls, us int64
		var q string
		if rows.Scan(&calls, &us, &q) != nil {
			return nil, -1
		}
		total += calls
		if len(out) < n {
			out = append(out, fmt.Sprintf("%8d calls %6d µs  %s", calls, us, strings.Join(strings.Fields(q), " ")))
		}
	}
	return out, total
}

func (s *statements) close(ctx context.Context) {
	if s != nil {
		s.conn.Close(ctx)
	}
}

// profile saves, when -profile is set, a CPU profile of the server taken
// while f runs (for d) and its allocations before and after f.
func (r *runner) profile(ctx context.Context, s *serveProc, name string, d time.Duration, f func() error) error {
	if r.cfg.ProfileDir == "" {
		return f()
	}
	save := func(path, file string) error {
		resp, err := http.Get(s.debug + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", path, resp.Status)
		}
		out, err := os.Create(filepath.Join(r.cfg.ProfileDir, file))
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, resp.Body)
		return err
	}
	if err := os.MkdirAll(r.cfg.ProfileDir, 0o755); err != nil {
		return err
	}
	if err := save("/debug/pprof/allocs", name+".allocs-before.pprof"); err != nil {
		return err
	}
	cpuErr := make(chan error, 1)
	go func() {
		cpuErr <- save(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds())-1)), name+".cpu.pprof")
	}()
	if err := f(); err != nil {
		return err
	}
	if err := <-cpuErr; err != nil {
		return err
	}
	if err := save("/debug/pprof/allocs", name+".allocs-after.pprof"); err != nil {
		return err
	}
	r.logf("serve: profiles of %s in %s (go tool pprof -top %s; allocations: -diff_base %s)", name, r.cfg.ProfileDir,
		filepath.Join(r.cfg.ProfileDir, name+".cpu.pprof"), filepath.Join(r.cfg.ProfileDir, name+".allocs-before.pprof"))
	return nil
}

func goal(ok bool, what string) string {
	if ok {
		return "goal " + what + " met"
	}
	return "goal " + what + " MISSED"
}

// benchServe measures the command path of issue 7 against `maestro serve`
// in its own process: registering versions of one model with one and four
// clients, GET one model and GET /auth/me with four, the server's CPU time
// per request, its RSS idle and under the write load, and (with
// pg_stat_statements) the SQL statements each registration costs.
func (r *runner) benchServe(ctx context.Context) error {
	bin, err := r.maestroBinary(ctx)
	if err != nil {
		return err
	}
	s, err := r.startServe(ctx, bin)
	if err != nil {
		return err
	}
	defer s.stop()
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8, MaxIdleConns: 8}}
	defer hc.CloseIdleConnections()
	admin := &regClient{hc: hc, base: s.base}
	user := &regClient{hc: hc, base: s.base}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := admin.must(ctx, 200, "POST", "/api/v1/auth/login", map[string]string{"email": serveAdmin, "password": benchPassword}, &tok); err != nil {
		return err
	}
	admin.token = tok.AccessToken
	// A member (not an admin) owns the project, so every request takes the
	// membership path of the authorization policy.
	var u struct {
		ID string `json:"id"`
	}
	if err := user.must(ctx, 201, "POST", "/api/v1/auth/register", map[string]string{"email": "serve-user@example.com", "password": benchPassword, "name": "Serve Bench"}, &u); err != nil {
		return err
	}
	if err := admin.must(ctx, 200, "PATCH", "/api/v1/users/"+u.ID, map[string]string{"role": "member"}, nil); err != nil {
		return err
	}
	if err := user.must(ctx, 200, "POST", "/api/v1/auth/login", map[string]string{"email": "serve-user@example.com", "password": benchPassword}, &tok); err != nil {
		return err
	}
	user.token = tok.AccessToken
	var proj struct {
		Slug string `json:"slug"`
	}
	if err := user.must(ctx, 201, "POST", "/api/v1/projects", map[string]any{"name": "Serve Bench"}, &proj); err != nil {
		return err
	}
	model := "/api/v1/projects/" + proj.Slug + "/models/m0"
	if err := user.must(ctx, 201, "POST", "/api/v1/projects/"+proj.Slug+"/models", map[string]any{"name": "m0"}, nil); err != nil {
		return err
	}

	// Idle: started, set up, then left alone for a few seconds.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second):
	}
	idle := memstat.Status(s.pid, "VmRSS")
	r.add(Row{Name: "maestro serve RSS, idle (embedded NATS; 5 s after setup)", N: 1, PeakRSS: idle, Allocs: -1, Bytes: -1,
		Note: fmt.Sprintf("VmRSS of the server process; %s", goal(idle/1024 <= goalIdleRSS, fmt.Sprintf("≤ %d MiB", goalIdleRSS)))})

	stmts := openStatements(ctx, s.database)
	defer stmts.close(context.WithoutCancel(ctx))
	hwm := memstat.ResetPeakRSSOf(s.pid)
	var created atomic.Int64
	body := map[string]any{"description": "bench", "source": "s3://bench/model", "metrics": map[string]float64{"auc": 0.9}}
	register := func(int) (int, error) {
		code, _, err := user.do(ctx, "POST", model+"/versions", body)
		switch code {
		case http.StatusCreated:
			created.Add(1)
			code = http.StatusOK
		case http.StatusAccepted: // stored; the read-your-writes wait ran out
			created.Add(1)
		}
		return code, err
	}
	phase := r.cfg.Phase
	measure := func(name string, clients int, do func(int) (int, error), check func(rate float64, lat *Samples, cpuMS float64) string) error {
		var lat *Samples
		var n, bad int
		var wall, cpu, pgCPU time.Duration
		stmts.reset(ctx)
		err := r.profile(ctx, s, fmt.Sprintf("%s-c%d", profileName(name), clients), phase, func() error {
			cpu0, pg0 := cpuOf(s.pid), s.postgresCPU()
			var err error
			lat, n, wall, bad, err = loadFor(ctx, clients, phase, do)
			cpu, pgCPU = cpuOf(s.pid)-cpu0, s.postgresCPU()-pg0
			return err
		})
		if err != nil {
			return err
		}
		rate := float64(n) / wall.Seconds()
		cpuMS := float64(cpu) / float64(time.Millisecond) / float64(n)
		note := fmt.Sprintf("server CPU %.2f ms/req, postgres CPU %.2f ms/req", cpuMS, float64(pgCPU)/float64(time.Millisecond)/float64(n))
		if top, calls := stmts.top(ctx, 8); calls >= 0 {
			note += fmt.Sprintf(", %.1f SQL statements/req", float64(calls)/float64(n))
			r.logf("serve: %s, %d clients: top statements of %d requests:\n%s", name, clients, n, strings.Join(top, "\n"))
		}
		if bad > 0 {
			note += fmt.Sprintf("; %d not 2xx as expected", bad)
		}
		note += "; " + check(rate, lat, cpuMS)
		r.add(Row{Name: fmt.Sprintf("serve: %s, %d client(s)", name, clients), Fsync: "on", N: n, Total: wall, Lat: lat,
			Rate: rate, Unit: "req/s", Allocs: -1, Bytes: -1, Note: note})
		return nil
	}
	if err := measure("POST .../versions (one model)", 1, register, func(rate float64, lat *Samples, cpuMS float64) string {
		return goal(rate >= goalWriteC1 && lat.Quantile(.5) < goalWriteC1P50, fmt.Sprintf("≥ %.0f req/s, p50 < %s", goalWriteC1, goalWriteC1P50)) +
			", " + goal(cpuMS <= goalCPUPerWrite, fmt.Sprintf("CPU ≤ %.1f ms/req", goalCPUPerWrite))
	}); err != nil {
		return err
	}
	if err := measure("POST .../versions (one model)", 4, register, func(rate float64, lat *Samples, _ float64) string {
		return goal(rate >= goalWriteC4 && lat.Quantile(.99) < goalWriteC4P99, fmt.Sprintf("≥ %.0f req/s, p99 < %s", goalWriteC4, goalWriteC4P99))
	}); err != nil {
		return err
	}
	peak := memstat.Status(s.pid, "VmHWM")
	peakNote := "VmHWM of the server process over both write phases"
	if !hwm {
		peakNote = "VmHWM since the server started (clear_refs unavailable)"
	}
	r.add(Row{Name: "maestro serve RSS, peak under the write load", N: 1, PeakRSS: peak, Allocs: -1, Bytes: -1,
		Note: peakNote + "; " + goal(peak/1024 <= goalLoadRSS, fmt.Sprintf("≤ %d MiB", goalLoadRSS))})

	// Every registration answered 201 or 202 is there, numbered without gaps.
	want := created.Load()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var m struct {
			LatestVersion int64 `json:"latest_version"`
		}
		if err := user.must(ctx, 200, "GET", model, nil, &m); err != nil {
			return err
		}
		if m.LatestVersion == want {
			break
		}
		if m.LatestVersion > want || time.Now().After(deadline) {
			return fmt.Errorf("serve: m0 has %d versions after %d registrations answered 201 or 202", m.LatestVersion, want)
		}
		time.Sleep(50 * time.Millisecond) // polling the read model, bounded by deadline
	}

	get := func(path string) func(int) (int, error) {
		return func(int) (int, error) {
			code, _, err := user.do(ctx, "GET", path, nil)
			return code, err
		}
	}
	if err := measure("GET one model", 4, get(model), func(rate float64, _ *Samples, _ float64) string {
		return goal(rate >= goalGetModel, fmt.Sprintf("≥ %.0f req/s", goalGetModel))
	}); err != nil {
		return err
	}
	return measure("GET /auth/me", 4, get("/api/v1/auth/me"), func(rate float64, _ *Samples, _ float64) string {
		return goal(rate >= goalMe, fmt.Sprintf("≥ %.0f req/s", goalMe))
	})
}

// profileName turns a row name into a file name: "GET /auth/me" → "GET-auth-me".
func profileName(name string) string {
	f := strings.FieldsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
	return strings.Join(f, "-")
}
