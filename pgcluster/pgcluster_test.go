package pgcluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// tempDir returns a directory the postgres OS user can traverse when the
// tests run as root (t.TempDir's parents are 0700).
func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != os.TempDir() && p != filepath.Dir(p); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func startCluster(t *testing.T, dir string) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Dir: dir})
	if errors.Is(err, ErrBinariesNotFound) {
		t.Fatal(err) // the machine is expected to have them; don't hide it as a skip
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(context.Background()) })
	return c
}

func TestStartStopPersists(t *testing.T) {
	// A nested, not-yet-existing Dir also exercises parent creation.
	dir := filepath.Join(tempDir(t), "a", "b", "postgres")
	ctx := context.Background()

	c := startCluster(t, dir)
	if strings.Contains(c.URL(), "@127.0.0.1:0/") {
		t.Fatalf("URL has no port: %s", c.URL())
	}
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	var listen, sockets string
	if err := conn.QueryRow(ctx, "SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')").Scan(&listen, &sockets); err != nil {
		t.Fatal(err)
	}
	if listen != "127.0.0.1" || sockets != "" {
		t.Errorf("listen_addresses=%q unix_socket_directories=%q", listen, sockets)
	}
	conn.Close(ctx)
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	fi, err := os.Stat(filepath.Join(dir, "password"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("password file mode %v, want 0600", fi.Mode().Perm())
	}
	if os.Geteuid() == 0 {
		// The server runs as postgres, but the password stays readable only by us.
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
			t.Errorf("password file owned by uid %d, want 0", uid)
		}
		data, err := os.Stat(filepath.Join(dir, "data"))
		if err != nil {
			t.Fatal(err)
		}
		if uid := data.Sys().(*syscall.Stat_t).Uid; uid != postgresUID(t) {
			t.Errorf("data dir owned by uid %d, want the postgres user", uid)
		}
		parent, err := os.Stat(filepath.Dir(dir))
		if err != nil {
			t.Fatal(err)
		}
		if parent.Mode().Perm() != 0o711 {
			t.Errorf("created parent mode %v, want 0711", parent.Mode().Perm())
		}
	}

	c2 := startCluster(t, dir)
	conn, err = pgx.Connect(ctx, c2.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "kept" {
		t.Fatalf("got %q, want kept", v)
	}
}

// A run that died without Stop leaves the postmaster running; the next Start
// must take over instead of failing on the busy data directory.
func TestStartAfterCrash(t *testing.T) {
	dir := filepath.Join(tempDir(t), "postgres")
	ctx := context.Background()

	orphan := startCluster(t, dir)
	// A postmaster whose watchdog died too (or that an older maestro left):
	// kill the watchdog's process group without letting it stop anything,
	// then drop the lock as process death does. The server keeps running.
	if err := syscall.Kill(-orphan.watchdog.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-orphan.watchdog.done
	orphan.lock.Close()

	c := startCluster(t, dir)
	conn, err := pgx.Connect(ctx, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if _, err := pgx.Connect(ctx, orphan.URL()); err == nil && orphan.port != c.port {
		t.Error("orphaned server still accepts connections")
	}
}

func TestDirInUse(t *testing.T) {
	dir := filepath.Join(tempDir(t), "postgres")
	startCluster(t, dir)
	old := lockWait
	lockWait = 200 * time.Millisecond // a live cluster never lets go
	t.Cleanup(func() { lockWait = old })
	_, err := Start(context.Background(), Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Start on a busy dir: %v", err)
	}
}

func TestBinariesNotFound(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := fallbackGlob
	fallbackGlob = filepath.Join(t.TempDir(), "*", "bin")
	t.Cleanup(func() { fallbackGlob = old })

	_, err := Start(context.Background(), Options{Dir: filepath.Join(t.TempDir(), "postgres")})
	if !errors.Is(err, ErrBinariesNotFound) {
		t.Fatalf("err = %v, want ErrBinariesNotFound", err)
	}
	const want = "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: apt-get install postgresql) or set MAESTRO_DATABASE_URL"
	if err.Error() != want {
		t.Fatalf("message:\n got %q\nwant %q", err.Error(), want)
	}
}

func TestFallbackPicksNewest(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	root := t.TempDir()
	for _, v := range []string{"9.6", "16", "10", "17"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		names := []string{"initdb", "pg_ctl", "postgres"}
		if v == "17" {
			names = names[:2] // incomplete install: must be skipped
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(bin, n), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := fallbackGlob
	fallbackGlob = filepath.Join(root, "*", "bin")
	t.Cleanup(func() { fallbackGlob = old })

	b, err := findBinaries(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "16", "bin", "pg_ctl"); b.pgCtl != want {
		t.Fatalf("pg_ctl = %s, want %s", b.pgCtl, want)
	}
}

func postgresUID(t *testing.T) uint32 {
	t.Helper()
	r, err := lookupRunAs()
	if err != nil {
		t.Fatal(err)
	}
	return r.uid
}

// A new cluster's password file and its data/ rename are made durable with
// their directory, not only the file's bytes: a data/ that survives a power
// loss without its password file is a cluster nobody can log in to.
func TestInitSyncsClusterDirectory(t *testing.T) {
	dir := filepath.Join(tempDir(t), "postgres")
	var synced []string
	old := syncDir
	syncDir = func(d string) error { synced = append(synced, d); return old(d) }
	t.Cleanup(func() { syncDir = old })
	c := startCluster(t, dir)
	// The password before initdb, and data/ after the rename.
	var n int
	for _, d := range synced {
		if d == c.dir {
			n++
		}
	}
	if n < 2 {
		t.Fatalf("synced directories %v: want %s synced after the password file and after the rename", synced, c.dir)
	}
}
