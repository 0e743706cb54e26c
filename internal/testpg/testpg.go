// Package testpg gives tests a real PostgreSQL: one private cluster per
// `go test` process (via pgcluster), and a fresh database per test so tests
// stay independent and can run in parallel.
//
// Usage:
//
//	func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }
//
//	func TestX(t *testing.T) {
//		t.Parallel()
//		url := testpg.Database(t)
//		...
//	}
//
// Set MAESTRO_TEST_DATABASE_URL (a postgres:// URL of a role allowed to
// CREATE DATABASE) to use an existing server instead.
package testpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/pgcluster"
)

// envURL names the environment variable that points tests at an existing server.
const envURL = "MAESTRO_TEST_DATABASE_URL"

var (
	// The cluster starts on the first Database call rather than in Main, so
	// packages (or -run selections) that never touch the database don't pay
	// for an initdb.
	once     sync.Once
	adminURL *url.URL // database used to issue CREATE/DROP DATABASE
	setupErr error

	mu      sync.Mutex
	inMain  bool
	cluster *pgcluster.Cluster
	tmpDir  string
)

// Main is called from TestMain: starts one cluster per `go test` process (in a fresh os.MkdirTemp dir made traversable 0711, removed at the end), or uses MAESTRO_TEST_DATABASE_URL if set; runs m.Run(); stops the cluster. Returns the exit code.
func Main(m *testing.M) int {
	mu.Lock()
	inMain = true
	mu.Unlock()

	code := m.Run()

	mu.Lock()
	defer mu.Unlock()
	if cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cluster.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "testpg: stopping PostgreSQL:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if tmpDir != "" {
		os.RemoveAll(tmpDir)
	}
	return code
}

// Database creates a fresh, empty database for this test (name from a random suffix), registers t.Cleanup to drop it (WITH (FORCE)), and returns its URL. Safe for t.Parallel().
func Database(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if setupErr != nil {
		t.Fatal(setupErr)
	}

	suffix := make([]byte, 8)
	rand.Read(suffix)
	name := "test_" + hex.EncodeToString(suffix)
	ident := pgx.Identifier{name}.Sanitize()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := adminExec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("testpg: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE: a test that forgot to close its pool must not leak the database.
		if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("testpg: dropping database %s: %v", name, err)
		}
	})

	u := *adminURL
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

func setup() {
	if s := os.Getenv(envURL); s != "" {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			setupErr = fmt.Errorf("testpg: %s must be a postgres:// URL", envURL)
			return
		}
		adminURL = u
		return
	}

	mu.Lock()
	defer mu.Unlock()
	if !inMain {
		// Without Main nobody would stop the cluster or remove its directory.
		setupErr = fmt.Errorf("testpg: call testpg.Main from TestMain before using testpg.Database")
		return
	}
	dir, err := os.MkdirTemp("", "maestro-testpg-")
	if err != nil {
		setupErr = fmt.Errorf("testpg: %w", err)
		return
	}
	tmpDir = dir
	// As root the server runs as the postgres user, which must be able to
	// reach the cluster directory below this one.
	if err := os.Chmod(dir, 0o711); err != nil {
		setupErr = fmt.Errorf("testpg: %w", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "postgres")})
	if errors.Is(err, pgcluster.ErrBinariesNotFound) {
		// Same clear line, but naming the variable that matters for tests.
		setupErr = fmt.Errorf("testpg: PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: apt-get install postgresql) or set %s", envURL)
		return
	}
	if err != nil {
		setupErr = fmt.Errorf("testpg: %w", err)
		return
	}
	cluster = c
	adminURL, err = url.Parse(c.URLFor("postgres"))
	if err != nil {
		setupErr = fmt.Errorf("testpg: %w", err)
	}
}

// adminExec runs one statement on its own connection; CREATE/DROP DATABASE
// cannot run inside a transaction, and one connection per call keeps parallel
// tests from contending for a shared one.
func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL.String())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// TraversableDir is t.TempDir made traversable (0711, up to the system's
// temp dir) for the postgres OS user: under root a managed PostgreSQL runs
// as that user, and t.TempDir and its parent are 0700.
func TraversableDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != filepath.Dir(p); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
