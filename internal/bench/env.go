package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/pgcluster"
	"github.com/maestro-ml/maestro/platform"
)

// EnvDatabaseURL points the benchmark at an existing server: a postgres://
// URL of a role allowed to CREATE DATABASE. Unset, a private cluster starts.
const EnvDatabaseURL = "MAESTRO_BENCH_DATABASE_URL"

// fastArgon2 matches testenv.FastArgon2: real argon2id, tiny parameters, so
// login numbers measure the platform rather than the password hash.
var fastArgon2 = auth.Argon2Params{Memory: 1024, Iterations: 1, Parallelism: 1}

// env owns everything the run starts: a scratch directory, Postgres and
// the databases created on it.
type env struct {
	dir     string
	cluster *pgcluster.Cluster
	admin   *url.URL
	dbs     []string
}

func newEnv(ctx context.Context, logf func(string, ...any)) (_ *env, err error) {
	dir, err := os.MkdirTemp("", "maestro-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	// As root the server runs as postgres, which must traverse this dir.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	if s := os.Getenv(EnvDatabaseURL); s != "" {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("%s must be a postgres:// URL", EnvDatabaseURL)
		}
		e.admin = u
		logf("postgres: %s (%s)", u.Redacted(), EnvDatabaseURL)
		return e, nil
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// pg_stat_statements counts the SQL of each command (serve scenario);
	// a server without the module starts without it.
	pgDir := filepath.Join(dir, "postgres")
	c, err := pgcluster.Start(sctx, pgcluster.Options{Dir: pgDir, Settings: map[string]string{"shared_preload_libraries": "pg_stat_statements"}})
	if err != nil {
		logf("postgres: no pg_stat_statements (%v); starting without it", err)
		c, err = pgcluster.Start(sctx, pgcluster.Options{Dir: pgDir})
	}
	if err != nil {
		return nil, err
	}
	e.cluster = c
	if e.admin, err = url.Parse(c.URLFor("postgres")); err != nil {
		return nil, err
	}
	logf("postgres: private cluster started in %s", time.Since(start).Round(time.Millisecond))
	return e, nil
}

func (e *env) adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, e.admin.String())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// database creates a fresh database and returns its URL.
func (e *env) database(ctx context.Context) (string, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "bench_" + hex.EncodeToString(b[:])
	if err := e.adminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	e.dbs = append(e.dbs, name)
	u := *e.admin
	u.Path, u.RawPath = "/"+name, ""
	return u.String(), nil
}

// tempDir makes a fresh directory under the run's scratch dir.
func (e *env) tempDir(prefix string) (string, error) {
	return os.MkdirTemp(e.dir, prefix)
}

func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if e.admin != nil && e.cluster == nil {
		for _, db := range e.dbs {
			_ = e.adminExec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
		}
	}
	if e.cluster != nil {
		_ = e.cluster.Stop(ctx)
	}
	_ = os.RemoveAll(e.dir)
}

// startPlatform starts a whole Maestro (as testenv.Start does, without a
// testing.T) on a fresh database and data dir; mods adjust the config.
func (e *env) startPlatform(ctx context.Context, syncAlways, api, worker bool, mods ...func(*platform.Config)) (*platform.Platform, error) {
	db, err := e.database(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := e.tempDir("platform-")
	if err != nil {
		return nil, err
	}
	cfg := platform.DefaultConfig()
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSListen = ""
	cfg.DatabaseURL = db
	cfg.Argon2 = fastArgon2
	cfg.SyncAlways = syncAlways
	cfg.API, cfg.Worker = api, worker
	cfg.Runner = false // only the jobs scenario runs one (a mod)
	for _, m := range mods {
		m(&cfg)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return platform.Start(sctx, cfg)
}

func stopPlatform(p *platform.Platform) {
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.Shutdown(ctx)
}

// embeddedStore is a bare event store on its own embedded nats-server.
type embeddedStore struct {
	srv   *events.Embedded
	store *events.Store
}

func (e *env) startStore(ctx context.Context, syncAlways bool) (*embeddedStore, error) {
	dir, err := e.tempDir("nats-")
	if err != nil {
		return nil, err
	}
	srv, err := events.StartEmbedded(events.EmbeddedConfig{StoreDir: dir, SyncAlways: syncAlways})
	if err != nil {
		return nil, err
	}
	nc, err := srv.Connect("maestro-bench")
	if err != nil {
		srv.Shutdown()
		return nil, err
	}
	st, err := events.OpenStore(ctx, nc, events.StoreConfig{Replicas: 1})
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, err
	}
	return &embeddedStore{srv: srv, store: st}, nil
}

func (s *embeddedStore) close() {
	if s == nil {
		return
	}
	if nc := s.store.Conn(); nc != nil {
		_ = nc.Drain()
		for i := 0; i < 100 && !nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	s.srv.Shutdown()
}

var errTimeout = errors.New("timed out")
