// Package platform wires Maestro together: the event store on NATS
// JetStream (embedded or external), Postgres (managed or external), the
// projection runners, the identity service and the HTTP API. The `maestro`
// subcommands and the integration tests start the same Platform.
package platform

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/handlers/approvals"
	"github.com/maestro-ml/maestro/handlers/flows"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/sweeps"
	"github.com/maestro-ml/maestro/handlers/tracking"
	"github.com/maestro-ml/maestro/handlers/webhooks"
	"github.com/maestro-ml/maestro/internal/durable"
	"github.com/maestro-ml/maestro/pgcluster"
	"github.com/maestro-ml/maestro/projections"
	"github.com/maestro-ml/maestro/runner"
)

// Config is everything Maestro can be told; cmd/maestro fills it from flags
// and MAESTRO_* variables.
type Config struct {
	DataDir     string
	HTTPAddr    string
	DatabaseURL string // empty: managed cluster in DataDir/postgres
	NATSURL     string // empty: embedded nats-server in this process
	// NATSListen is the loopback address the embedded server also opens for
	// outside clients; empty disables it.
	NATSListen string
	// SyncAlways makes the embedded server fsync before every ack (rule 9).
	SyncAlways bool
	// NATSUser/NATSPassword authenticate to an external NATS.
	NATSUser, NATSPassword string
	// NATSReplicas is MAESTRO_NATS_REPLICAS, the replicas of the event
	// stream and the idempotency bucket. 0 picks the default: 1 on the
	// embedded server, 3 on an external NATS (a cluster; a single external
	// server must say 1). Existing streams are never lowered, and a start
	// that cannot have this many replicas fails (events.ErrReplicas).
	NATSReplicas int
	// NATSPublicUser is MAESTRO_NATS_PUBLIC_USER: when set, the embedded
	// NATS has a least-privilege user of that name for outside
	// subscribers, in an account of its own where it reads MAESTRO_PUBLIC,
	// the redacted copy of the events the worker role keeps up to date
	// (events.Republisher). Empty: no such user, no copy.
	NATSPublicUser string
	// NATSPublicPassword is MAESTRO_NATS_PUBLIC_PASSWORD, its password;
	// empty: generated once into DataDir/nats-public.password (0600).
	NATSPublicPassword string
	// NATSRepublisherUser and NATSRepublisherPassword are
	// MAESTRO_NATS_REPUBLISHER_USER/_PASSWORD: on an external NATS
	// (NATSURL), the user of the outside subscribers' account (its
	// operator's, deploy/nats-cluster.conf) that Maestro writes
	// MAESTRO_PUBLIC with. Empty: no copy on that server.
	NATSRepublisherUser, NATSRepublisherPassword string

	BootstrapAdminEmail    string
	BootstrapAdminPassword string
	RegistrationOpen       bool
	// RegistrationsPerHour bounds self-registrations per client address.
	RegistrationsPerHour int
	// SecurityStream bounds MAESTRO_SECURITY, the stream of rejected logins
	// for unknown e-mails (zero fields: events.DefaultSecurityConfig).
	SecurityStream events.SecurityConfig

	SigningKeyFile string // default DataDir/keys/signing-key.pem
	TokenIssuer    string
	TokenAudience  string
	AccessTTL      time.Duration
	Sessions       identity.SessionPolicy
	Throttle       identity.ThrottlePolicy
	Argon2         auth.Argon2Params

	// AuditSigningKeyFile is MAESTRO_AUDIT_SIGNING_KEY_FILE, the Ed25519
	// key the worker role signs audit checkpoints with (default
	// DataDir/keys/audit-signing-key.pem, generated on first start like the
	// token key; a key of its own, so rotating the token key leaves the
	// audit trail's signatures alone).
	AuditSigningKeyFile string
	// AuditSealInterval is how often the worker seals the audit trail
	// (default 1s).
	AuditSealInterval time.Duration

	// ArtifactDir is the filesystem blob store (default DataDir/artifacts),
	// used unless S3.Endpoint is set.
	ArtifactDir string
	// S3 configures the S3-compatible blob store.
	S3 artifacts.S3Config
	// ArtifactMaxBytes bounds one artifact upload.
	ArtifactMaxBytes int64

	// DebugAddr is MAESTRO_DEBUG_ADDR: a loopback host:port where an admin
	// listener serves /debug/pprof; empty (the default) opens none.
	DebugAddr string

	// API, Worker and Runner choose the roles of this process (serve runs
	// all three).
	API, Worker, Runner bool
	// Jobs configures training jobs (the runner role and the reactions).
	Jobs JobsConfig
	// Webhooks configures webhook delivery (the worker role).
	Webhooks WebhooksConfig
	// MetricsToken is MAESTRO_METRICS_TOKEN: a bearer token a Prometheus
	// scraper may read /metrics with ("" = admins only).
	MetricsToken string
	// MetricsAddr is MAESTRO_METRICS_ADDR: a host:port where a process
	// without the API role (worker, runner) serves /metrics to the scrape
	// token only (MetricsToken is then required); empty opens none.
	MetricsAddr string
	// TrustedProxies is MAESTRO_TRUSTED_PROXIES (api.ParseTrustedProxies):
	// the peers whose X-Forwarded-For names the client address.
	TrustedProxies []netip.Prefix
	// Blobs opens the artifact store without the API role (`artifacts gc`).
	// The API always opens it; a worker never needs it.
	Blobs bool

	Logger *slog.Logger
	Now    func() time.Time // tests move time; nil = time.Now
}

// JobsConfig configures training jobs.
type JobsConfig struct {
	// Slots is how many attempts the runner runs at once (MAESTRO_RUNNER_SLOTS, default 4).
	Slots int
	// RunnerID names this runner (MAESTRO_RUNNER_ID; default host name + random).
	RunnerID string
	// Executor is "local" (default) or "kubernetes" (MAESTRO_RUNNER_EXECUTOR).
	Executor string
	// Kubernetes configures the kubernetes executor.
	Kubernetes runner.KubernetesConfig
	// Kubeconfig is the kubeconfig file ("" = in-cluster configuration).
	Kubeconfig string
	// Lease is how long a claim holds without heartbeats (MAESTRO_JOB_LEASE, default 15s).
	Lease time.Duration
	// Grace is the time between SIGTERM and SIGKILL (MAESTRO_JOB_GRACE, default 10s).
	Grace time.Duration
	// LogLimit bounds the log bytes kept per attempt (MAESTRO_JOB_LOG_LIMIT, default 10 MiB).
	LogLimit int64
	// PublicURL is the API's base URL as jobs reach it (MAESTRO_PUBLIC_URL;
	// default this process's listener).
	PublicURL string
	// WorkDir holds attempts' directories (default DataDir/jobs).
	WorkDir string
	// SecretsDir holds files the runner resolves secret://NAME from
	// (MAESTRO_SECRETS_DIR), besides MAESTRO_SECRET_<NAME> variables.
	SecretsDir string
}

// Platform is a running Maestro.
type Platform struct {
	cfg      Config
	log      *slog.Logger
	embedded *events.Embedded
	nc       *nats.Conn
	cluster  *pgcluster.Cluster
	// Pool is the Postgres pool of the projections.
	Pool  *pgxpool.Pool
	Store *events.Store
	// Metrics is MAESTRO_METRICS, the stream of metric points.
	Metrics  *events.Store
	Identity *identity.Service
	Registry *registry.Service
	Tracking *tracking.Service
	Jobs     *jobs.Service
	// Sweeps creates and stops hyper-parameter sweeps; its scheduler runs
	// with the reactions (worker role).
	Sweeps *sweeps.Service
	// explanations keeps parsed explanation.json documents by digest (the
	// promotion gates' reads).
	explanations explain.Cache
	// Approvals handles promotion requests under approval policies.
	Approvals *approvals.Service
	Webhooks  *webhooks.Service
	Blobs     artifacts.Store
	Waiter    *projections.Waiter
	Queries   *projections.Queries
	API       *api.Server

	replicas int // of MAESTRO_EVENTS as opened

	// publicNC writes MAESTRO_PUBLIC in the public account (nil when
	// MAESTRO_NATS_PUBLIC_USER is off); public is that stream.
	publicNC *nats.Conn
	public   jetstream.Stream
	// stopPublic ends the republisher (nil when none runs).
	stopPublic context.CancelFunc

	httpSrv  *http.Server
	listener net.Listener

	// Runner is the job runner of the runner role (nil otherwise).
	Runner     *runner.Runner
	reactions  *flows.Router
	metrics    *prometheus.Registry
	jobMetrics *runner.Metrics

	debugSrv      *http.Server
	debugListener net.Listener
	cancel        context.CancelFunc
	rctx          context.Context // cancelled by Shutdown (cancel)
	wg            sync.WaitGroup
	lock          *os.File

	// metricsSrv serves MAESTRO_METRICS_ADDR (nil when off).
	metricsSrv      *http.Server
	metricsListener net.Listener
}

// DefaultConfig is what `maestro serve` uses with no flags or variables.
func DefaultConfig() Config {
	return Config{
		DataDir: ".maestro", HTTPAddr: "127.0.0.1:8080", NATSListen: "127.0.0.1:4222",
		SyncAlways: true, RegistrationOpen: true, TokenIssuer: "maestro", TokenAudience: "maestro-api",
		AccessTTL: 15 * time.Minute, ArtifactMaxBytes: 5 << 30, Sessions: identity.DefaultSessionPolicy(), Throttle: identity.DefaultThrottle(),
		API: true, Worker: true, Runner: true,
	}
}

// Start brings the platform up and returns when it serves.
func Start(ctx context.Context, cfg Config) (_ *Platform, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Platform{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			p.Shutdown(sctx)
			cancel()
		}
	}()
	if cfg.NATSURL == "" || cfg.DatabaseURL == "" || cfg.SigningKeyFile == "" || (cfg.Worker && cfg.AuditSigningKeyFile == "") {
		// 0711: others may traverse (the managed PostgreSQL runs as the postgres
		// user when maestro runs as root) but not list; every secret inside is 0600.
		// Scale-out roles with everything external need no data dir at all.
		if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
			return nil, fmt.Errorf("data dir %s (MAESTRO_DATA_DIR): %w", cfg.DataDir, err)
		}
	}
	if cfg.NATSURL == "" || cfg.DatabaseURL == "" {
		// Embedded NATS and managed Postgres own files in the data dir:
		// only one process may run them.
		if p.lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if err := p.startNATS(ctx); err != nil {
		return nil, err
	}
	if err := p.startPostgres(ctx); err != nil {
		return nil, err
	}
	if p.lock != nil && cfg.API {
		if err := p.writeRunInfo(); err != nil {
			return nil, err
		}
	}
	keyFile := cfg.SigningKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(cfg.DataDir, "keys", "signing-key.pem")
	}
	key, err := auth.LoadOrCreateSigningKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	keys, err := auth.NewKeySet(key)
	if err != nil {
		return nil, err
	}
	tokens, err := auth.NewTokens(keys, auth.TokenConfig{Issuer: cfg.TokenIssuer, Audience: cfg.TokenAudience,
		AccessTTL: cfg.AccessTTL, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	secCfg := cfg.SecurityStream
	secCfg.Replicas = p.configuredReplicas()
	security, err := events.OpenSecurityStore(ctx, p.nc, secCfg)
	if err != nil {
		return nil, err
	}
	p.Identity = identity.NewService(identity.Config{Store: p.Store, Security: security, Hasher: auth.NewHasher(cfg.Argon2), Tokens: tokens,
		Now: cfg.Now, Throttle: cfg.Throttle, Sessions: cfg.Sessions, AddressRegistrationsPerHour: cfg.RegistrationsPerHour})
	p.Registry = registry.NewService(p.Store, p.Identity.UserActive, p.Identity.Actor, cfg.Now)
	p.Tracking = tracking.NewService(p.Store, p.Registry, cfg.Now).WithMetrics(p.Metrics)
	// Lineage: a model version names the run it was made from, which the
	// registry checks on the run's own events through tracking.
	p.Registry.WithRuns(p.Tracking.RunInProject)
	p.Jobs = jobs.NewService(p.Store, p.Registry, p.Tracking, cfg.Now)
	p.Sweeps = sweeps.NewService(p.Store, p.Registry, p.Tracking, p.Jobs, cfg.Now)
	// Gates over a version's source run read its latest metrics from the
	// run's metric events (the write side decides on events, rule 2).
	p.Approvals = approvals.NewService(p.Store, p.Registry, p.Tracking.LatestMetrics, cfg.Now).WithExplanations(p.versionExplanation)
	if p.Webhooks, err = p.webhookService(key); err != nil {
		return nil, err
	}
	if _, err := runner.OpenLogStream(ctx, p.Store.JetStream(), p.configuredReplicas()); err != nil {
		return nil, err
	}
	if cfg.API || cfg.Blobs || cfg.Runner {
		if p.Blobs, err = openBlobs(ctx, cfg); err != nil {
			return nil, err
		}
	}
	p.Waiter = projections.NewWaiter(p.Pool).AskRunners(p.nc)
	p.Queries = projections.NewQueries(p.Pool).CacheWith(p.Waiter)
	p.metrics = prometheus.NewRegistry()
	p.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.jobMetrics = runner.NewMetrics(p.metrics, p.Queries.JobCounts)
	p.registerMetrics()

	rctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.rctx = rctx
	if err := p.serveDebug(); err != nil {
		return nil, err
	}
	if err := p.serveMetricsAddr(); err != nil {
		return nil, err
	}
	p.goRun(func() { p.Waiter.Run(rctx) })
	if cfg.Worker {
		for _, proj := range projections.All() {
			r := projections.NewRunner(p.Pool, p.Store, proj, projections.RunnerConfig{Logger: p.log})
			p.goRun(func() { _ = r.Run(rctx) })
		}
		for _, proj := range projections.Telemetry() {
			r := projections.NewRunner(p.Pool, p.Metrics, proj, projections.RunnerConfig{Logger: p.log})
			p.goRun(func() { _ = r.Run(rctx) })
		}
		sealer, err := p.auditSealer()
		if err != nil {
			return nil, err
		}
		p.goRun(func() { sealer.Run(rctx) })
	}
	if cfg.BootstrapAdminEmail != "" {
		created, err := p.Identity.BootstrapAdmin(ctx, cfg.BootstrapAdminEmail, cfg.BootstrapAdminPassword)
		if err != nil {
			return nil, err
		}
		if created {
			p.log.Info("bootstrap admin created", "email", cfg.BootstrapAdminEmail)
		}
	}
	if cfg.API {
		kv, err := p.openIdempotency(ctx)
		if err != nil {
			return nil, err // api.OpenIdempotency names the bucket
		}
		p.API = api.New(api.Deps{Identity: p.Identity, Registry: p.Registry, Tracking: p.Tracking, Jobs: p.Jobs, Sweeps: p.Sweeps, Approvals: p.Approvals, Webhooks: p.Webhooks, JobLogs: p.Store.JetStream(), Metrics: p.metricsHandler(), MetricsToken: cfg.MetricsToken, Blobs: p.Blobs, ArtifactMaxBytes: cfg.ArtifactMaxBytes, Queries: p.Queries, Waiter: p.Waiter, Tokens: tokens, Keys: keys,
			Idempotency: kv, Logger: p.log, RegistrationOpen: cfg.RegistrationOpen,
			StreamLastSeq: p.Store.LastSequence, Heads: p.Heads, Ready: p.readyChecks(), Now: cfg.Now,
			Registerer: p.metrics, TrustedProxies: cfg.TrustedProxies, VerifyAudit: p.verifyAudit,
			// Embedded NATS lives and dies with this process (data dir locked).
			SoleInstance: p.lock != nil && cfg.NATSURL == ""})
		if err := p.serveHTTP(); err != nil {
			return nil, err
		}
	}
	if err := p.startJobs(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Platform) goRun(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

func (p *Platform) startNATS(ctx context.Context) error {
	var err error
	if p.cfg.NATSURL != "" {
		opts := []nats.Option{nats.Name("maestro"), nats.MaxReconnects(-1)}
		if p.cfg.NATSUser != "" {
			opts = append(opts, nats.UserInfo(p.cfg.NATSUser, p.cfg.NATSPassword))
		}
		if p.nc, err = nats.Connect(p.cfg.NATSURL, opts...); err != nil {
			return fmt.Errorf("connect to MAESTRO_NATS_URL: %w", err)
		}
	} else {
		secret, err := loadOrCreateSecret(filepath.Join(p.cfg.DataDir, "nats.password"))
		if err != nil {
			return err
		}
		pubPass := p.cfg.NATSPublicPassword
		if p.cfg.NATSPublicUser != "" && pubPass == "" {
			if pubPass, err = loadOrCreateSecret(filepath.Join(p.cfg.DataDir, "nats-public.password")); err != nil {
				return err
			}
		}
		p.embedded, err = events.StartEmbedded(events.EmbeddedConfig{StoreDir: filepath.Join(p.cfg.DataDir, "nats"),
			SyncAlways: p.cfg.SyncAlways, Listen: p.cfg.NATSListen, User: "maestro", Password: secret,
			PublicUser: p.cfg.NATSPublicUser, PublicPassword: pubPass})
		if err != nil {
			return err
		}
		if p.nc, err = p.embedded.Connect("maestro"); err != nil {
			return err
		}
	}
	p.Store, err = events.OpenStore(ctx, p.nc, events.StoreConfig{Replicas: p.configuredReplicas(), Logger: p.log})
	if err != nil {
		return err
	}
	s, err := p.Store.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	p.replicas = s.CachedInfo().Config.Replicas
	if p.Metrics, err = events.OpenMetricsStore(ctx, p.nc, events.MetricsConfig{Replicas: p.configuredReplicas()}); err != nil {
		return err
	}
	return p.openPublic(ctx)
}

// openPublic opens MAESTRO_PUBLIC in the outside subscribers' account:
// the embedded server's own (MAESTRO_NATS_PUBLIC_USER), or, on an external
// NATS, the account its operator configured, through the republisher's
// user there (MAESTRO_NATS_REPUBLISHER_USER; deploy/nats-cluster.conf).
func (p *Platform) openPublic(ctx context.Context) error {
	var err error
	switch {
	case p.cfg.NATSPublicUser != "" && p.embedded == nil:
		return errors.New("MAESTRO_NATS_PUBLIC_USER configures the embedded NATS; with MAESTRO_NATS_URL give Maestro the republisher's user of the outside subscribers' account instead (MAESTRO_NATS_REPUBLISHER_USER, deploy/nats-cluster.conf)")
	case p.cfg.NATSRepublisherUser != "" && p.embedded != nil:
		return errors.New("MAESTRO_NATS_REPUBLISHER_USER is for an external NATS (MAESTRO_NATS_URL); the embedded one opens its public account with MAESTRO_NATS_PUBLIC_USER")
	case p.cfg.NATSPublicUser != "":
		p.publicNC, err = p.embedded.ConnectPublic("maestro-republisher")
	case p.cfg.NATSRepublisherUser != "":
		p.publicNC, err = nats.Connect(p.cfg.NATSURL, nats.Name("maestro-republisher"), nats.MaxReconnects(-1),
			nats.UserInfo(p.cfg.NATSRepublisherUser, p.cfg.NATSRepublisherPassword))
		if err != nil {
			err = fmt.Errorf("connect to MAESTRO_NATS_URL as MAESTRO_NATS_REPUBLISHER_USER: %w", err)
		}
	default:
		return nil
	}
	if err != nil {
		return err
	}
	js, err := jetstream.New(p.publicNC)
	if err != nil {
		return fmt.Errorf("jetstream (public account): %w", err)
	}
	if p.public, err = events.OpenPublicStream(ctx, js, p.configuredReplicas()); err != nil {
		return err
	}
	if p.cfg.Worker {
		rep := events.NewRepublisher(p.Store, js, p.public, p.log)
		rctx, cancel := context.WithCancel(context.Background())
		p.stopPublic = cancel
		p.goRun(func() { rep.Run(rctx) })
	}
	return nil
}

// configuredReplicas applies MAESTRO_NATS_REPLICAS's default: the embedded
// server is one node; an external NATS is taken to be the R3 cluster that
// deploy/ describes, so a forgotten setting fails loudly on a single server
// instead of quietly keeping the history on one disk of a cluster.
func (p *Platform) configuredReplicas() int {
	switch {
	case p.cfg.NATSReplicas > 0:
		return p.cfg.NATSReplicas
	case p.cfg.NATSURL == "":
		return 1
	default:
		return 3
	}
}

// openIdempotency opens the idempotency bucket with the event stream's
// replica rule: it shares the stream's fate, so it gets the same copies.
func (p *Platform) openIdempotency(ctx context.Context) (jetstream.KeyValue, error) {
	const stream = "KV_" + api.IdempotencyBucket
	replicas, err := events.StreamReplicas(ctx, p.Store.JetStream(), stream, p.configuredReplicas())
	if err != nil {
		return nil, err
	}
	kv, err := api.OpenIdempotency(ctx, p.Store.JetStream(), replicas)
	if err != nil {
		return nil, events.ExplainReplicasError(stream, replicas, err)
	}
	return kv, nil
}

// Heads is the last sequence of each stream the projections follow.
func (p *Platform) Heads(ctx context.Context) (projections.Heads, error) {
	events, err := p.Store.LastSequence(ctx)
	if err != nil {
		return projections.Heads{}, err
	}
	metrics, err := p.Metrics.LastSequence(ctx)
	if err != nil {
		return projections.Heads{}, err
	}
	return projections.Heads{Events: events, Metrics: metrics}, nil
}

// EventReplicas is the replica count of the event stream as opened.
func (p *Platform) EventReplicas() int { return p.replicas }

// ManagedPostgres names the PostgreSQL binaries the managed cluster runs
// (empty when MAESTRO_DATABASE_URL is used).
func (p *Platform) ManagedPostgres() (binDir, version string) {
	if p.cluster == nil {
		return "", ""
	}
	return p.cluster.BinDir(), p.cluster.Version()
}

func (p *Platform) startPostgres(ctx context.Context) error {
	url := p.cfg.DatabaseURL
	if url == "" {
		c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(p.cfg.DataDir, "postgres"), Logger: p.log})
		if err != nil {
			return err
		}
		p.cluster = c
		url = c.URL()
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return errors.New("MAESTRO_DATABASE_URL is not a valid PostgreSQL URL")
	}
	pcfg.MaxConns = 20
	// Only projections write to Postgres, and what they write is derived:
	// a commit need not wait for its WAL flush. A crash of Postgres can
	// lose the last few hundred milliseconds of projection commits, each
	// atomically with its checkpoint, and the runners apply those events
	// again from the stream (rule 1). It saves a disk flush per batch. (A
	// SET on connect rather than a startup parameter, which poolers such as
	// PgBouncer refuse unless told to ignore it.)
	pcfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SET synchronous_commit = off")
		return err
	}
	if p.Pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := p.Pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres unreachable: %w", err)
	}
	return projections.Migrate(ctx, p.Pool)
}

func (p *Platform) serveHTTP() error {
	ln, err := net.Listen("tcp", p.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (MAESTRO_HTTP_ADDR): %w", p.cfg.HTTPAddr, err)
	}
	p.listener = ln
	p.httpSrv = &http.Server{
		Handler:           p.API,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	// Log follows (server-sent events) end at shutdown instead of holding it.
	p.httpSrv.RegisterOnShutdown(p.API.EndStreams)
	p.goRun(func() {
		if err := p.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("http server", "err", err)
		}
	})
	return nil
}

// URL is the base URL of the HTTP API.
func (p *Platform) URL() string {
	if p.listener == nil {
		return ""
	}
	return "http://" + p.listener.Addr().String()
}

// NATSClientURL is where outside NATS clients connect ("" if nowhere).
func (p *Platform) NATSClientURL() string {
	if p.embedded != nil {
		return p.embedded.ClientURL()
	}
	return p.cfg.NATSURL
}

// Shutdown drains HTTP requests, stops the projection runners after their
// current batch, then closes NATS and stops the managed Postgres.
func (p *Platform) Shutdown(ctx context.Context) {
	// Reactions first: the runner claims nothing more (another runner takes
	// what its own shutdown requeues); then its attempts stop and are
	// recorded as lost.
	if p.reactions != nil {
		if err := p.reactions.Close(); err != nil {
			p.log.Warn("reactions shutdown", "err", err)
		}
	}
	if p.Runner != nil {
		p.Runner.Close()
	}
	if p.httpSrv != nil {
		if err := p.httpSrv.Shutdown(ctx); err != nil {
			p.log.Warn("http shutdown", "err", err)
		}
	}
	if p.debugSrv != nil {
		_ = p.debugSrv.Close() // a running profile is cut short, not waited for
	}
	if p.metricsSrv != nil {
		_ = p.metricsSrv.Close() // a scrape in progress is cut short
	}
	if p.cancel != nil {
		p.cancel()
	}
	if p.stopPublic != nil {
		p.stopPublic()
	}
	p.wg.Wait()
	if p.publicNC != nil {
		p.publicNC.Close()
	}
	if p.Pool != nil {
		p.Pool.Close()
	}
	if p.nc != nil {
		_ = p.nc.Drain()
		for i := 0; i < 100 && !p.nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if p.embedded != nil {
		p.embedded.Shutdown()
	}
	if p.cluster != nil {
		if err := p.cluster.Stop(ctx); err != nil {
			p.log.Warn("postgres stop", "err", err)
		}
	}
	if p.lock != nil {
		if p.cfg.API {
			_ = os.Remove(filepath.Join(p.cfg.DataDir, runInfoFile))
		}
		_ = p.lock.Close()
	}
}

// loadOrCreateSecret reads a random secret from path or creates it (0600).
// An empty or blank file (what a power loss after creating it can leave) is
// never a secret: nats-server would accept an empty password for it, so it
// is regenerated. The file is written durably (temp file, fsync, rename,
// directory fsync) so a crash cannot produce such a file again.
func loadOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw[:])
	if err := durable.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}

// ErrDataDirInUse means a `maestro serve` already runs on the data dir.
var ErrDataDirInUse = errors.New("data dir is in use by a running maestro")

func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "maestro.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", dir, ErrDataDirInUse)
	}
	return f, nil
}

const runInfoFile = "run.json"

// RunInfo tells CLI commands how to reach a running serve's NATS and
// Postgres. It holds credentials, so it is 0600 in the 0700 data dir.
type RunInfo struct {
	NATSURL      string `json:"nats_url"`
	NATSUser     string `json:"nats_user"`
	NATSPassword string `json:"nats_password"`
	DatabaseURL  string `json:"database_url"`
}

func (p *Platform) writeRunInfo() error {
	info := RunInfo{NATSURL: p.NATSClientURL(), DatabaseURL: p.cfg.DatabaseURL}
	if p.cluster != nil {
		info.DatabaseURL = p.cluster.URL()
	}
	if p.embedded != nil {
		info.NATSUser = "maestro"
		info.NATSPassword, _ = loadOrCreateSecret(filepath.Join(p.cfg.DataDir, "nats.password"))
	} else {
		info.NATSUser, info.NATSPassword = p.cfg.NATSUser, p.cfg.NATSPassword
	}
	b, _ := json.Marshal(info)
	return durable.WriteFile(filepath.Join(p.cfg.DataDir, runInfoFile), b, 0o600)
}

// ReadRunInfo returns how to reach the serve running on dataDir.
func ReadRunInfo(dataDir string) (RunInfo, error) {
	var info RunInfo
	b, err := os.ReadFile(filepath.Join(dataDir, runInfoFile))
	if err != nil {
		return info, err
	}
	return info, json.Unmarshal(b, &info)
}

// CreateAdmin registers an admin account (what `maestro admin create` does).
func (p *Platform) CreateAdmin(ctx context.Context, email, password, name string) (identity.UserState, error) {
	u, seq, err := p.Identity.Register(ctx, events.Meta{Actor: events.SystemActor, Time: p.cfg.Now()},
		identity.RegisterInput{Email: email, Password: password, Name: name, Role: "admin", Source: "admin-cli"})
	if err != nil {
		return u, err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p.Waiter.Wait(wctx, seq, "users")
	return u, nil
}

// DataDirBusy reports whether a running maestro holds dataDir's lock.
func DataDirBusy(dataDir string) bool {
	f, err := lockDataDir(dataDir)
	if err != nil {
		return errors.Is(err, ErrDataDirInUse)
	}
	f.Close()
	return false
}

func openBlobs(ctx context.Context, cfg Config) (artifacts.Store, error) {
	if cfg.S3.Endpoint != "" {
		s, err := artifacts.NewS3(ctx, cfg.S3)
		if err != nil {
			return nil, fmt.Errorf("S3 artifact store (MAESTRO_S3_*): %w", err)
		}
		return s, nil
	}
	dir := cfg.ArtifactDir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "artifacts")
	}
	fs, err := artifacts.NewFS(dir)
	if err != nil {
		return nil, fmt.Errorf("artifact dir %s: %w", dir, err)
	}
	return fs, nil
}

// auditSealer loads (or creates) the audit signing key, as the token key
// is kept, and returns the sealer that signs the audit trail's checkpoints.
func (p *Platform) auditSealer() (*projections.AuditSealer, error) {
	keyFile := p.cfg.AuditSigningKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(p.cfg.DataDir, "keys", "audit-signing-key.pem")
	}
	key, err := auth.LoadOrCreateSigningKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("audit signing key (MAESTRO_AUDIT_SIGNING_KEY_FILE): %w", err)
	}
	return projections.NewAuditSealer(p.Pool, projections.AuditSealerConfig{Key: key.Key, KeyID: key.KID,
		Interval: p.cfg.AuditSealInterval, Logger: p.log, Events: p.Store}), nil
}
