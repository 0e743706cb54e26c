// Package pgcluster runs a private PostgreSQL cluster inside maestro's data
// directory, using the PostgreSQL server binaries installed on the machine.
//
// It exists so that `maestro serve` works with no configuration: nobody has to
// provision a database, create a role or hand out a password first.
//
// Layout of Options.Dir:
//
//	data/          PGDATA (created by initdb; owned by the OS user postgres runs as)
//	password       superuser password, mode 0600, owned by the maestro process' user
//	postgres.log   server log (pg_ctl -l)
//	lock           flock held by the running Cluster (and its watchdog)
//
// A watchdog process stops the server when the maestro process dies, even by
// kill -9 (watchdog.go); binaries.go picks which installed PostgreSQL to run.
package pgcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/maestro-ml/maestro/internal/durable"
)

// ErrBinariesNotFound is returned (wrapped) when initdb/pg_ctl/postgres cannot be found.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: apt-get install postgresql) or set MAESTRO_DATABASE_URL")

// fallbackGlob is where distribution packages put the server binaries when
// they are not on PATH (Debian/Ubuntu never put initdb on PATH). A variable so
// tests can point it somewhere empty.
var fallbackGlob = "/usr/lib/postgresql/*/bin"

const (
	superuser = "maestro"
	database  = "maestro"
	// runAsName is the OS account used when we are root, because initdb and
	// postgres refuse to run as root.
	runAsName = "postgres"

	startTimeout = 60 * time.Second
	// portAttempts bounds retries when a picked free port is taken by someone
	// else between our probe and postgres binding it.
	portAttempts = 3
)

// Options configures Start.
type Options struct {
	// Dir is the cluster directory, e.g. <data-dir>/postgres; created if missing.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free loopback port at each start.
	Port int
	// Logger receives progress messages; may be nil.
	Logger *slog.Logger
	// Settings are extra server settings for this start (-c name=value),
	// e.g. shared_preload_libraries for a benchmark. Names and values must
	// be plain words: pg_ctl passes them through a shell.
	Settings map[string]string
}

// Cluster is a running PostgreSQL cluster started by Start.
type Cluster struct {
	dir      string
	dataDir  string
	logFile  string
	port     int
	password string
	bins     binaries
	run      *runAs
	log      *slog.Logger
	lock     *os.File
	watchdog *watchdog
	settings string // Options.Settings as -c flags

	stopOnce sync.Once
	stopErr  error
}

// runAs is the identity the server binaries run under; nil means the current user.
type runAs struct {
	uid, gid uint32
	groups   []uint32
	home     string
}

// Start initialises the cluster on first use (initdb) and starts it; returns when it accepts connections.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Dir == "" {
		return nil, errors.New("pgcluster: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	// pg_ctl hands -D and -l to /bin/sh inside double quotes; refuse paths
	// that would be reinterpreted by the shell rather than fail obscurely.
	if strings.ContainsAny(dir, "\"$`\\\n") {
		return nil, fmt.Errorf("pgcluster: cluster directory %q contains characters pg_ctl cannot quote", dir)
	}

	bins, err := findBinaries(filepath.Join(dir, "data"))
	if err != nil {
		return nil, err
	}
	run, err := lookupRunAs()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, run); err != nil {
		return nil, err
	}

	c := &Cluster{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "postgres.log"),
		bins:    bins,
		run:     run,
		log:     log.With("dir", dir),
	}
	// The lock tells a crashed run's orphaned postmaster (safe to stop) apart
	// from one another live maestro is using (not ours to touch).
	if c.lock, err = lockDir(dir, lockWait); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			// Releasing the watchdog also stops a server that started but
			// failed later: none is left behind that nobody would stop.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
			c.watchdog.release(sctx)
			cancel()
			c.lock.Close()
		}
	}()

	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	pw, err := os.ReadFile(filepath.Join(dir, "password"))
	if err != nil {
		return nil, fmt.Errorf("pgcluster: cluster exists but its password file is unreadable: %w", err)
	}
	c.password = strings.TrimSpace(string(pw))

	if err := c.stopLeftover(ctx); err != nil {
		return nil, err
	}
	// The watchdog stops the server if this process dies without Stop.
	if c.watchdog, err = c.startWatchdog(); err != nil {
		return nil, err
	}
	for k, v := range opts.Settings {
		if !plainSetting(k) || !plainSetting(v) {
			return nil, fmt.Errorf("pgcluster: setting %q = %q: only letters, digits, '_', '.' and ',' are allowed", k, v)
		}
		c.settings += fmt.Sprintf(" -c %s=%s", k, v)
	}
	if err := c.start(ctx, opts.Port); err != nil {
		return nil, err
	}
	if err := c.ensureDatabase(ctx); err != nil {
		return nil, err
	}
	ok = true
	c.log.Info("PostgreSQL cluster ready", "port", c.port)
	return c, nil
}

// URL is a postgres:// URL for the superuser "maestro" over TCP 127.0.0.1 with the generated password, database "maestro" (created on first start).
func (c *Cluster) URL() string { return c.URLFor(database) }

// URLFor returns the URL of another database name on the same cluster.
func (c *Cluster) URLFor(db string) string {
	u := url.URL{
		Scheme: "postgres",
		User:   url.UserPassword(superuser, c.password),
		Host:   net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:   "/" + db,
		// The server has no TLS and is loopback-only; being explicit also
		// stops a PGSSLMODE in the environment from breaking connections.
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Stop performs a fast shutdown and waits for it, then lets the watchdog go.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() {
		defer func() {
			// After PostgreSQL is down: the watchdog finds nothing to stop.
			c.watchdog.release(ctx)
			c.lock.Close()
		}()
		running, err := c.running(ctx)
		if err != nil {
			c.stopErr = err
			return
		}
		if !running {
			// Already gone (killed, or stopped by hand): nothing to do.
			return
		}
		if err := c.pgCtl(ctx, "stop", "-m", "fast", "-w", "-D", c.dataDir); err != nil {
			c.stopErr = fmt.Errorf("pgcluster: stop: %w", err)
			return
		}
		c.log.Info("PostgreSQL cluster stopped")
	})
	return c.stopErr
}

// lookupRunAs returns nil when not root: the binaries then run as whoever we are.
func lookupRunAs() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(runAsName)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: running as root, so PostgreSQL must run as OS user %q, but looking it up failed: %w", runAsName, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: user %q: bad uid %q", runAsName, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: user %q: bad gid %q", runAsName, u.Gid)
	}
	r := &runAs{uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
	// Supplementary groups matter both for the credential we hand the child
	// (otherwise it would keep root's) and for the traversability check.
	gids, _ := u.GroupIds()
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			r.groups = append(r.groups, uint32(n))
		}
	}
	if !slices.Contains(r.groups, r.gid) {
		r.groups = append(r.groups, r.gid)
	}
	return r, nil
}

// prepareDir creates dir and its missing parents. As root it makes the
// parents we create traversable, hands dir to the postgres user and checks
// that the postgres user can reach dir at all, because otherwise initdb or
// pg_ctl fail later with a much less helpful message.
func prepareDir(dir string, run *runAs) error {
	var created []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pgcluster: %w", err)
		}
		created = append(created, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	slices.Reverse(created)
	for _, p := range created {
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pgcluster: %w", err)
		}
		if run != nil {
			// Explicit chmod: the umask may have stripped the x bits.
			if err := os.Chmod(p, 0o711); err != nil {
				return fmt.Errorf("pgcluster: %w", err)
			}
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if run == nil {
		return nil
	}
	if err := os.Chown(dir, int(run.uid), int(run.gid)); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if err := checkTraversable(p, run); err != nil {
			return err
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// checkTraversable applies the POSIX permission rule (owner bits, else group
// bits, else other bits) for the postgres user. ACLs are not considered.
func checkTraversable(p string, run *runAs) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	mode := fi.Mode().Perm()
	var okX bool
	switch {
	case st.Uid == run.uid:
		okX = mode&0o100 != 0
	case slices.Contains(run.groups, st.Gid):
		okX = mode&0o010 != 0
	default:
		okX = mode&0o001 != 0
	}
	if !okX {
		return fmt.Errorf("pgcluster: directory %s is not traversable by OS user %q, which PostgreSQL must run as under root: chmod o+x %s (or choose another data dir)", p, runAsName, p)
	}
	return nil
}

// lockWait bounds how long Start waits for the directory lock. A live
// Cluster holds it for good, but a dead maestro's watchdog holds it only
// while it stops that maestro's PostgreSQL, and a restart right after a
// crash should wait for that rather than fail. A variable for tests.
var lockWait = 30 * time.Second

func lockDir(dir string, wait time.Duration) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("pgcluster: cluster directory %s is in use by another process "+
				"(a running maestro, or the watchdog of one that died still stopping its PostgreSQL): %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// initdb creates the cluster in a scratch directory and renames it into
// place, so an interrupted initdb never leaves a half-made data/ that would
// block the next attempt (initdb insists on an empty directory).
func (c *Cluster) initdb(ctx context.Context) error {
	c.log.Info("initialising PostgreSQL cluster", "initdb", c.bins.initdb)
	scratch := filepath.Join(c.dir, "data.init")
	if err := os.RemoveAll(scratch); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}

	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	password := hex.EncodeToString(buf)
	// Written before initdb: if we crash after it, the next run sees no data/
	// and simply regenerates both.
	if err := writeFile(filepath.Join(c.dir, "password"), password+"\n", nil); err != nil {
		return err
	}
	// initdb reads --pwfile as the postgres user, while the persistent copy
	// stays owned by us; hence a separate, short-lived copy.
	pwfile := filepath.Join(c.dir, "initdb.pw")
	if err := writeFile(pwfile, password+"\n", c.run); err != nil {
		return err
	}
	defer os.Remove(pwfile)

	cmd := c.command(ctx, c.bins.initdb,
		"-D", scratch,
		"--auth=scram-sha-256",
		"--username="+superuser,
		"--pwfile="+pwfile,
		"--encoding=UTF8",
		"--locale=C",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(scratch)
		return fmt.Errorf("pgcluster: initdb failed: %w\n%s", err, lastLines(out, 20))
	}

	// Settings live in postgresql.conf (not only on the command line) so a
	// manual `pg_ctl start` for debugging is equally private, and so the
	// sizing ones can still be tuned with ALTER SYSTEM.
	conf := `
# --- added by maestro (pgcluster) ---
# listen_addresses and unix_socket_directories are also forced on the command
# line at every start; port is chosen at start.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
shared_buffers = 128MB
max_connections = 200
`
	f, err := os.OpenFile(filepath.Join(scratch, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		os.RemoveAll(scratch)
		return fmt.Errorf("pgcluster: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.RemoveAll(scratch)
		return fmt.Errorf("pgcluster: %w", err)
	}
	if err := os.Rename(scratch, c.dataDir); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	// The rename and the password file's entry reach the disk together: a
	// data/ that survives a power loss without its password is a cluster
	// nobody can log in to.
	if err := syncDir(c.dir); err != nil {
		return fmt.Errorf("pgcluster: sync %s: %w", c.dir, err)
	}
	return nil
}

// syncDir makes new entries of a directory durable (a variable for tests).
var syncDir = durable.SyncDir

// writeFile writes a 0600 file, chowned to run when given, and makes it and
// its directory entry durable.
func writeFile(path, content string, run *runAs) error {
	os.Remove(path) // O_CREATE would keep an old file's owner and mode
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && run != nil {
		err = os.Chown(path, int(run.uid), int(run.gid))
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// running reports whether a postmaster is alive for our data dir. pg_ctl
// status exits 3 when it is not running (including a stale postmaster.pid).
func (c *Cluster) running(ctx context.Context) (bool, error) {
	err := c.pgCtl(ctx, "status", "-D", c.dataDir)
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		return false, nil
	}
	return false, fmt.Errorf("pgcluster: pg_ctl status: %w", err)
}

// stopLeftover stops a postmaster left by a previous run that crashed. We hold
// the directory lock, so no live Cluster owns it.
func (c *Cluster) stopLeftover(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); err != nil {
		return nil
	}
	running, err := c.running(ctx)
	if err != nil || !running {
		return err
	}
	c.log.Warn("stopping PostgreSQL left running by a previous run")
	if err := c.pgCtl(ctx, "stop", "-m", "fast", "-w", "-D", c.dataDir); err != nil {
		return fmt.Errorf("pgcluster: stopping leftover server: %w", err)
	}
	return nil
}

func (c *Cluster) start(ctx context.Context, port int) error {
	for attempt := 1; ; attempt++ {
		p := port
		if p == 0 {
			var err error
			if p, err = freePort(); err != nil {
				return fmt.Errorf("pgcluster: picking a port: %w", err)
			}
		}
		logStart := fileSize(c.logFile)
		opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", p) + c.settings
		err := c.pgCtl(ctx, "start", "-w", "-t", strconv.Itoa(int(startTimeout/time.Second)),
			"-D", c.dataDir, "-l", c.logFile, "-o", opts)
		if err == nil {
			c.port = p
			return nil
		}
		tail := c.logTail(logStart)
		if port == 0 && attempt < portAttempts && strings.Contains(tail, "already in use") {
			c.log.Warn("port taken before PostgreSQL could bind it; retrying", "port", p)
			continue
		}
		return fmt.Errorf("pgcluster: starting PostgreSQL failed: %w; last lines of %s:\n%s", err, c.logFile, tail)
	}
}

// plainSetting reports whether s can go through pg_ctl's shell unquoted.
func plainSetting(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,") == ""
}

// freePort asks the kernel for an unused loopback port. Racy by nature;
// start retries if someone else grabs it first.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the last lines written to postgres.log since offset, so the
// error shows this attempt rather than old history.
func (c *Cluster) logTail(offset int64) string {
	f, err := os.Open(c.logFile)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return lastLines(b, 20)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ensureDatabase creates the "maestro" database on first start. pg_ctl -w
// already waited for readiness, but we still poll until a deadline in case
// the server needs a moment more (e.g. after crash recovery).
func (c *Cluster) ensureDatabase(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var conn *pgx.Conn
	var err error
	for {
		conn, err = pgx.Connect(ctx, c.URLFor("postgres"))
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: connecting to the new cluster: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", database).Scan(&exists); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{database}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		err = nil
	}
	if err != nil {
		return fmt.Errorf("pgcluster: creating database %q: %w", database, err)
	}
	c.log.Info("created database", "database", database)
	return nil
}

func (c *Cluster) pgCtl(ctx context.Context, args ...string) error {
	out, err := c.command(ctx, c.bins.pgCtl, args...).CombinedOutput()
	if err != nil {
		if msg := bytes.TrimSpace(out); len(msg) > 0 {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}

// command builds an exec.Cmd for a server binary, dropping to the postgres
// user when we are root.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	// Our cwd may be unreadable to the postgres user (e.g. /root), which
	// initdb and postgres complain about.
	cmd.Dir = c.dir
	// Only what the server binaries need: PG* variables (PGPORT, PGDATA,
	// PGOPTIONS, ...) must not leak into our private cluster, and maestro's
	// credentials (MAESTRO_*, S3 keys) must not sit in a process that is
	// dumpable again after its exec (a job of the local runner, same user,
	// could read them from /proc/<pid>/environ).
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return !slices.Contains([]string{"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME"}, name) && !strings.HasPrefix(name, "LC_")
	})
	// Own process group: a Ctrl-C on maestro's terminal must not reach the
	// postmaster, so maestro decides the shutdown order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.run != nil {
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "HOME=") })
		env = append(env, "HOME="+c.run.home)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: c.run.uid, Gid: c.run.gid, Groups: c.run.groups}
	}
	cmd.Env = env
	// pg_ctl's postmaster redirects its output to the log, but guard against
	// a descendant holding our pipes open forever.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}
