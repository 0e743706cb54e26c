// Command maestro is the Maestro ML platform control plane: one binary
// that runs everything (serve) or one role of a scaled-out deployment
// (api, worker), plus admin commands. Wiring only; the work is elsewhere.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/pgcluster"
	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/runner"
)

var version = "dev"

// Common is the configuration every subcommand shares. Each flag has a
// MAESTRO_* variable; flags win over variables, unknown variables are ignored.
type Common struct {
	DataDir     string `name:"data-dir" env:"MAESTRO_DATA_DIR" default:".maestro" help:"Directory for the embedded NATS store, the managed PostgreSQL cluster and keys."`
	DatabaseURL string `name:"database-url" env:"MAESTRO_DATABASE_URL" help:"Use this PostgreSQL server instead of a managed cluster in the data dir."`
	NATSURL     string `name:"nats-url" env:"MAESTRO_NATS_URL" help:"Use this NATS server (with JetStream) instead of the embedded one."`
	NATSUser    string `name:"nats-user" env:"MAESTRO_NATS_USER" help:"User for MAESTRO_NATS_URL."`
	NATSPass    string `name:"nats-password" env:"MAESTRO_NATS_PASSWORD" hidden:"" help:"Password for MAESTRO_NATS_URL (prefer the variable: flags show in ps)."`
	NATSReplica int    `name:"nats-replicas" env:"MAESTRO_NATS_REPLICAS" help:"Replicas of the event stream and the idempotency bucket (1-5); default 1 on the embedded NATS, 3 with MAESTRO_NATS_URL. Never lowers an existing stream; refuses to start if the cluster or an existing stream has fewer."`
	ArtifactDir string `name:"artifact-dir" env:"MAESTRO_ARTIFACT_DIR" help:"Filesystem artifact store; default <data-dir>/artifacts (ignored when MAESTRO_S3_ENDPOINT is set)."`
	S3Endpoint  string `name:"s3-endpoint" env:"MAESTRO_S3_ENDPOINT" help:"S3-compatible endpoint (host:port) for artifacts, e.g. MinIO."`
	S3Bucket    string `name:"s3-bucket" env:"MAESTRO_S3_BUCKET" help:"Bucket for artifacts (created if missing)."`
	S3Region    string `name:"s3-region" env:"MAESTRO_S3_REGION" help:"S3 region."`
	S3AccessKey string `name:"s3-access-key" env:"MAESTRO_S3_ACCESS_KEY" help:"S3 access key."`
	S3SecretKey string `name:"s3-secret-key" env:"MAESTRO_S3_SECRET_KEY" hidden:"" help:"S3 secret key (prefer the variable)."`
	S3TLS       bool   `name:"s3-tls" env:"MAESTRO_S3_TLS" default:"true" negatable:"" help:"Use HTTPS to reach S3."`
	S3Prefix    string `name:"s3-prefix" env:"MAESTRO_S3_PREFIX" help:"Key prefix inside the bucket."`
	LogLevel    string `name:"log-level" env:"MAESTRO_LOG_LEVEL" enum:"debug,info,warn,error" default:"info" help:"Log level."`
	LogFormat   string `name:"log-format" env:"MAESTRO_LOG_FORMAT" enum:"json,text" default:"json" help:"Log format."`
	// AuditKeyFile is in Common because workers (serve, worker, and the
	// CLI commands that start a private platform) sign the audit trail.
	AuditKeyFile string `name:"audit-signing-key-file" env:"MAESTRO_AUDIT_SIGNING_KEY_FILE" help:"Ed25519 PKCS#8 PEM key signing the audit trail's checkpoints; default <data-dir>/keys/audit-signing-key.pem, generated on first start. Share it between worker instances."`
	WebhookFlags
}

// WebhookFlags configure webhook delivery; the API checks targets with
// the same policy when a subscription is made, so every role reads them.
type WebhookFlags struct {
	WebhookAllowPrivate bool          `name:"webhook-allow-private-targets" env:"MAESTRO_WEBHOOK_ALLOW_PRIVATE_TARGETS" help:"Let webhooks reach loopback, private and link-local addresses (off: such targets are refused, SSRF)."`
	WebhookTimeout      time.Duration `name:"webhook-timeout" env:"MAESTRO_WEBHOOK_TIMEOUT" default:"10s" help:"Time limit of one webhook delivery request."`
	WebhookBackoff      time.Duration `name:"webhook-backoff-base" env:"MAESTRO_WEBHOOK_BACKOFF_BASE" default:"5s" help:"Wait before a failed webhook delivery's first retry; doubled each retry up to 1h."`
	WebhookRetryFor     time.Duration `name:"webhook-retry-for" env:"MAESTRO_WEBHOOK_RETRY_FOR" default:"25h" help:"How long a webhook delivery is retried before it fails (and its webhook is disabled if nothing was delivered since)."`
}

func (w WebhookFlags) apply(cfg *platform.Config) {
	cfg.Webhooks = platform.WebhooksConfig{AllowPrivateTargets: w.WebhookAllowPrivate, Timeout: w.WebhookTimeout,
		BackoffBase: w.WebhookBackoff, RetryFor: w.WebhookRetryFor}
}

// ServerFlags configure processes that serve (serve, api, worker).
type ServerFlags struct {
	HTTPAddr        string        `name:"http-addr" env:"MAESTRO_HTTP_ADDR" default:"127.0.0.1:8080" help:"Address the HTTP API listens on."`
	NATSListen      string        `name:"nats-listen" env:"MAESTRO_NATS_LISTEN" default:"127.0.0.1:4222" help:"Loopback address where the embedded NATS also accepts outside clients; 'off' disables."`
	NATSPublicUser  string        `name:"nats-public-user" env:"MAESTRO_NATS_PUBLIC_USER" help:"Open a least-privilege user of this name on the embedded NATS for outside subscribers: it reads MAESTRO_PUBLIC (maestro.public.>), the events with secret fields removed, and nothing else (see /api/v1/asyncapi.json). Empty: none."`
	NATSPublicPass  string        `name:"nats-public-password" env:"MAESTRO_NATS_PUBLIC_PASSWORD" hidden:"" help:"Its password (variable only in practice); default generated into <data-dir>/nats-public.password."`
	NATSRepubUser   string        `name:"nats-republisher-user" env:"MAESTRO_NATS_REPUBLISHER_USER" help:"With MAESTRO_NATS_URL: the user of the outside subscribers' account on that NATS (deploy/nats-cluster.conf) through which workers keep MAESTRO_PUBLIC, the events with secret fields removed. Empty: no copy."`
	NATSRepubPass   string        `name:"nats-republisher-password" env:"MAESTRO_NATS_REPUBLISHER_PASSWORD" hidden:"" help:"Its password (variable only in practice)."`
	NATSSync        string        `name:"nats-sync" env:"MAESTRO_NATS_SYNC" enum:"always,interval" default:"always" help:"Embedded JetStream durability: fsync before every ack (always) or every 2 minutes (interval)."`
	AdminEmail      string        `name:"bootstrap-admin-email" env:"MAESTRO_BOOTSTRAP_ADMIN_EMAIL" help:"Create this admin on start if none was bootstrapped yet."`
	AdminPassword   string        `name:"bootstrap-admin-password" env:"MAESTRO_BOOTSTRAP_ADMIN_PASSWORD" hidden:"" help:"Password of the bootstrap admin (variable only in practice)."`
	SignupsPerHour  int           `name:"registrations-per-hour" env:"MAESTRO_REGISTRATIONS_PER_HOUR" default:"30" help:"Self-registrations allowed per client address and hour."`
	Registration    bool          `name:"registration" env:"MAESTRO_REGISTRATION" default:"true" negatable:"" help:"Allow self-registration (POST /api/v1/auth/register)."`
	SigningKeyFile  string        `name:"signing-key-file" env:"MAESTRO_SIGNING_KEY_FILE" help:"Ed25519 PKCS#8 PEM key for tokens; default <data-dir>/keys/signing-key.pem, generated on first start. Share it between API instances."`
	AccessTTL       time.Duration `name:"access-token-ttl" env:"MAESTRO_ACCESS_TOKEN_TTL" default:"15m" help:"Access token lifetime (at most 15m)."`
	RefreshIdle     time.Duration `name:"refresh-idle-ttl" env:"MAESTRO_REFRESH_IDLE_TTL" default:"72h" help:"A refresh token unused this long expires."`
	ArtifactMax     int64         `name:"artifact-max-bytes" env:"MAESTRO_ARTIFACT_MAX_BYTES" default:"5368709120" help:"Largest artifact upload in bytes (default 5 GiB)."`
	DebugAddr       string        `name:"debug-addr" env:"MAESTRO_DEBUG_ADDR" help:"Loopback host:port of an admin listener serving /debug/pprof (Go profiles); off when empty."`
	RefreshAbsolute time.Duration `name:"refresh-absolute-ttl" env:"MAESTRO_REFRESH_ABSOLUTE_TTL" default:"720h" help:"No session lives longer than this."`
	MetricsToken    string        `name:"metrics-token" env:"MAESTRO_METRICS_TOKEN" hidden:"" help:"Bearer token a Prometheus scraper may read /metrics with (admins always may); variable only in practice."`
	TrustedProxies  string        `name:"trusted-proxies" env:"MAESTRO_TRUSTED_PROXIES" help:"Comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client address (rightmost untrusted hop); empty: the TCP peer is the client."`
}

// RunnerFlags configure the job runner (serve, runner) and the job
// reactions (serve, worker).
type RunnerFlags struct {
	Slots      int           `name:"runner-slots" env:"MAESTRO_RUNNER_SLOTS" default:"4" help:"Job attempts this runner runs at once."`
	RunnerID   string        `name:"runner-id" env:"MAESTRO_RUNNER_ID" help:"Name of this runner in job attempts (default: host name and a random suffix)."`
	Executor   string        `name:"runner-executor" env:"MAESTRO_RUNNER_EXECUTOR" enum:"local,kubernetes" default:"local" help:"Where attempts run: local processes or Kubernetes Jobs."`
	Namespace  string        `name:"kube-namespace" env:"MAESTRO_KUBE_NAMESPACE" default:"maestro-jobs" help:"Namespace of the Kubernetes Jobs (kubernetes executor)."`
	Image      string        `name:"kube-image" env:"MAESTRO_KUBE_IMAGE" help:"Image of jobs that name none (kubernetes executor)."`
	Kubeconfig string        `name:"kubeconfig" env:"MAESTRO_KUBECONFIG" help:"Kubeconfig file (default: the in-cluster service account)."`
	Lease      time.Duration `name:"job-lease" env:"MAESTRO_JOB_LEASE" default:"15s" help:"A claimed job whose runner sends no heartbeat this long is lost and retried."`
	Grace      time.Duration `name:"job-grace" env:"MAESTRO_JOB_GRACE" default:"10s" help:"Time between SIGTERM and SIGKILL when a job is cancelled or times out."`
	LogLimit   int64         `name:"job-log-limit" env:"MAESTRO_JOB_LOG_LIMIT" default:"10485760" help:"Log bytes kept per attempt; lines beyond are dropped and counted."`
	PublicURL  string        `name:"public-url" env:"MAESTRO_PUBLIC_URL" help:"The API's base URL as jobs reach it (MLFLOW_TRACKING_URI); default this process's listener."`
	SecretsDir string        `name:"secrets-dir" env:"MAESTRO_SECRETS_DIR" help:"Directory of job secrets: a job's secret://NAME is the file <dir>/<project id>/NAME (each project reaches only its own)."`
}

func (f RunnerFlags) apply(cfg *platform.Config) error {
	if f.Slots < 1 || f.Slots > 256 {
		return fmt.Errorf("MAESTRO_RUNNER_SLOTS (--runner-slots) %d: must be between 1 and 256", f.Slots)
	}
	if f.Lease < time.Second {
		return fmt.Errorf("MAESTRO_JOB_LEASE (--job-lease) %s: must be at least 1s", f.Lease)
	}
	if f.Grace < 0 || f.LogLimit < 1 {
		return errors.New("MAESTRO_JOB_GRACE must not be negative and MAESTRO_JOB_LOG_LIMIT must be at least 1")
	}
	cfg.Jobs = platform.JobsConfig{Slots: f.Slots, RunnerID: f.RunnerID, Executor: f.Executor, Kubeconfig: f.Kubeconfig,
		Kubernetes: runner.KubernetesConfig{Namespace: f.Namespace, DefaultImage: f.Image}, Lease: f.Lease, Grace: f.Grace,
		LogLimit: f.LogLimit, PublicURL: f.PublicURL, SecretsDir: f.SecretsDir}
	return nil
}

type cli struct {
	Common
	Serve       serveCmd       `cmd:"" default:"withargs" help:"Run the whole platform in one process (embedded NATS, managed PostgreSQL, projections, API)."`
	API         apiCmd         `cmd:"" name:"api" help:"Run only the HTTP API (scale-out; needs MAESTRO_NATS_URL and MAESTRO_DATABASE_URL)."`
	Worker      workerCmd      `cmd:"" help:"Run only the projection workers and reactions (scale-out; needs MAESTRO_NATS_URL and MAESTRO_DATABASE_URL)."`
	Runner      runnerCmd      `cmd:"" help:"Run only a job runner (scale-out; needs MAESTRO_NATS_URL, MAESTRO_DATABASE_URL and MAESTRO_PUBLIC_URL)."`
	Admin       adminCmd       `cmd:"" help:"Administer users."`
	Artifacts   artifactsCmd   `cmd:"" help:"Maintain the artifact store."`
	Projections projectionsCmd `cmd:"" help:"Inspect and rebuild projections."`
	Audit       auditCmd       `cmd:"" help:"Verify and export the hash-chained audit trail."`
	Version     versionCmd     `cmd:"" help:"Print the version."`
}

func main() {
	var c cli
	parser := kong.Must(&c, kong.Name("maestro"),
		kong.Description("Maestro: the ML platform control plane."),
		kong.UsageOnError(), kong.ConfigureHelp(kong.HelpOptions{Compact: true}))
	kctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "maestro: %s\n", explainParseError(err))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := c.Common.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "maestro: %s\n", err)
		os.Exit(2)
	}
	kctx.BindTo(ctx, (*context.Context)(nil))
	if err := kctx.Run(&c.Common); err != nil {
		fmt.Fprintf(os.Stderr, "maestro: %s\n", explain(err))
		os.Exit(1)
	}
}

// flagEnv maps flags to their variables so a bad value names both.
var flagEnv = map[string]string{
	"--data-dir": "MAESTRO_DATA_DIR", "--database-url": "MAESTRO_DATABASE_URL", "--nats-url": "MAESTRO_NATS_URL", "--nats-replicas": "MAESTRO_NATS_REPLICAS",
	"--http-addr": "MAESTRO_HTTP_ADDR", "--nats-listen": "MAESTRO_NATS_LISTEN", "--nats-sync": "MAESTRO_NATS_SYNC",
	"--registration": "MAESTRO_REGISTRATION", "--registrations-per-hour": "MAESTRO_REGISTRATIONS_PER_HOUR", "--access-token-ttl": "MAESTRO_ACCESS_TOKEN_TTL",
	"--refresh-idle-ttl": "MAESTRO_REFRESH_IDLE_TTL", "--refresh-absolute-ttl": "MAESTRO_REFRESH_ABSOLUTE_TTL",
	"--log-level": "MAESTRO_LOG_LEVEL", "--debug-addr": "MAESTRO_DEBUG_ADDR", "--artifact-max-bytes": "MAESTRO_ARTIFACT_MAX_BYTES", "--s3-tls": "MAESTRO_S3_TLS", "--log-format": "MAESTRO_LOG_FORMAT",
}

func explainParseError(err error) string {
	msg := err.Error()
	for flag, env := range flagEnv {
		if (strings.HasPrefix(msg, flag+":") || strings.HasPrefix(msg, flag+" ")) && !strings.Contains(msg, env) {
			return env + " (" + msg + ")"
		}
	}
	return msg
}

// explain turns well-known failures into one clear line.
func explain(err error) string {
	switch {
	case errors.Is(err, pgcluster.ErrBinariesNotFound):
		return pgcluster.ErrBinariesNotFound.Error()
	case errors.Is(err, platform.ErrDataDirInUse):
		return err.Error() + " (stop it, or use another --data-dir)"
	}
	return err.Error()
}

func (c *Common) logger() *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if c.LogFormat == "text" {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	return slog.New(h)
}

func (c *Common) config() platform.Config {
	cfg := platform.DefaultConfig()
	cfg.DataDir = c.DataDir
	cfg.DatabaseURL = c.DatabaseURL
	cfg.NATSURL = c.NATSURL
	cfg.NATSUser, cfg.NATSPassword = c.NATSUser, c.NATSPass
	cfg.NATSReplicas = c.NATSReplica
	cfg.Logger = c.logger()
	cfg.ArtifactDir = c.ArtifactDir
	cfg.AuditSigningKeyFile = c.AuditKeyFile
	cfg.S3 = artifacts.S3Config{Endpoint: c.S3Endpoint, Bucket: c.S3Bucket, Region: c.S3Region,
		AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey, UseTLS: c.S3TLS, Prefix: c.S3Prefix}
	c.WebhookFlags.apply(&cfg)
	return cfg
}

func (c *Common) validate() error {
	// JetStream's own limit is 5; 0 means the default for the NATS in use.
	if c.NATSReplica < 0 || c.NATSReplica > 5 {
		return fmt.Errorf("MAESTRO_NATS_REPLICAS (--nats-replicas) %d: must be between 1 and 5", c.NATSReplica)
	}
	if c.NATSReplica > 1 && c.NATSURL == "" {
		return fmt.Errorf("MAESTRO_NATS_REPLICAS (--nats-replicas) %d needs a NATS cluster (MAESTRO_NATS_URL): the embedded server is one node", c.NATSReplica)
	}
	if c.S3Endpoint != "" && (c.S3Bucket == "" || c.S3AccessKey == "" || c.S3SecretKey == "") {
		return errors.New("MAESTRO_S3_ENDPOINT needs MAESTRO_S3_BUCKET, MAESTRO_S3_ACCESS_KEY and MAESTRO_S3_SECRET_KEY")
	}
	if c.WebhookTimeout < time.Second || c.WebhookTimeout > 5*time.Minute || c.WebhookBackoff < 100*time.Millisecond ||
		c.WebhookRetryFor < time.Minute {
		return errors.New("MAESTRO_WEBHOOK_TIMEOUT must be 1s to 5m, MAESTRO_WEBHOOK_BACKOFF_BASE at least 100ms, MAESTRO_WEBHOOK_RETRY_FOR at least 1m")
	}
	return nil
}

func (s *ServerFlags) apply(cfg *platform.Config) error {
	if _, _, err := net.SplitHostPort(s.HTTPAddr); err != nil {
		return fmt.Errorf("MAESTRO_HTTP_ADDR (--http-addr) %q: want host:port", s.HTTPAddr)
	}
	cfg.HTTPAddr = s.HTTPAddr
	switch strings.ToLower(s.NATSListen) {
	case "off", "":
		cfg.NATSListen = ""
	default:
		// The embedded server is for this machine's subscribers only; a
		// network-facing broker is a NATS cluster (MAESTRO_NATS_URL).
		if err := platform.LoopbackAddr(s.NATSListen); err != nil {
			return fmt.Errorf("MAESTRO_NATS_LISTEN (--nats-listen) %w (or off)", err)
		}
		cfg.NATSListen = s.NATSListen
	}
	cfg.SyncAlways = s.NATSSync == "always"
	if s.NATSPublicUser != "" {
		// The outside subscribers' user lives on the embedded server's
		// listener, beside the internal user "maestro" (never the same).
		switch {
		case cfg.NATSListen == "":
			return errors.New("MAESTRO_NATS_PUBLIC_USER (--nats-public-user) needs MAESTRO_NATS_LISTEN: outside subscribers connect there")
		case s.NATSPublicUser == "maestro" || s.NATSPublicUser == "maestro-republisher" || strings.ContainsAny(s.NATSPublicUser, " \t\r\n"):
			return fmt.Errorf("MAESTRO_NATS_PUBLIC_USER (--nats-public-user) %q: a name of its own, without spaces, please", s.NATSPublicUser)
		}
	}
	cfg.NATSPublicUser, cfg.NATSPublicPassword = s.NATSPublicUser, s.NATSPublicPass
	if s.NATSRepubUser != "" && cfg.NATSURL == "" {
		return errors.New("MAESTRO_NATS_REPUBLISHER_USER (--nats-republisher-user) is for an external NATS (MAESTRO_NATS_URL); the embedded one takes MAESTRO_NATS_PUBLIC_USER")
	}
	cfg.NATSRepublisherUser, cfg.NATSRepublisherPassword = s.NATSRepubUser, s.NATSRepubPass
	if s.DebugAddr != "" {
		if err := platform.LoopbackAddr(s.DebugAddr); err != nil {
			return fmt.Errorf("MAESTRO_DEBUG_ADDR (--debug-addr) %w", err)
		}
	}
	cfg.DebugAddr = s.DebugAddr
	if (s.AdminEmail == "") != (s.AdminPassword == "") {
		return errors.New("MAESTRO_BOOTSTRAP_ADMIN_EMAIL and MAESTRO_BOOTSTRAP_ADMIN_PASSWORD must be set together")
	}
	cfg.BootstrapAdminEmail, cfg.BootstrapAdminPassword = s.AdminEmail, s.AdminPassword
	cfg.RegistrationOpen = s.Registration
	if s.SignupsPerHour < 1 {
		return errors.New("MAESTRO_REGISTRATIONS_PER_HOUR (--registrations-per-hour) must be at least 1")
	}
	cfg.RegistrationsPerHour = s.SignupsPerHour
	cfg.SigningKeyFile = s.SigningKeyFile
	if s.AccessTTL <= 0 || s.AccessTTL > 15*time.Minute {
		return fmt.Errorf("MAESTRO_ACCESS_TOKEN_TTL (--access-token-ttl) %s: must be between 1s and 15m", s.AccessTTL)
	}
	cfg.AccessTTL = s.AccessTTL
	if s.RefreshIdle <= 0 || s.RefreshAbsolute < s.RefreshIdle {
		return errors.New("MAESTRO_REFRESH_IDLE_TTL must be positive and at most MAESTRO_REFRESH_ABSOLUTE_TTL")
	}
	cfg.Sessions = identity.SessionPolicy{Idle: s.RefreshIdle, Absolute: s.RefreshAbsolute}
	if s.ArtifactMax < 1 {
		return errors.New("MAESTRO_ARTIFACT_MAX_BYTES (--artifact-max-bytes) must be at least 1")
	}
	cfg.ArtifactMaxBytes = s.ArtifactMax
	cfg.MetricsToken = s.MetricsToken
	proxies, err := api.ParseTrustedProxies(s.TrustedProxies)
	if err != nil {
		return fmt.Errorf("%w (--trusted-proxies)", err)
	}
	cfg.TrustedProxies = proxies
	return nil
}

type serveCmd struct {
	ServerFlags
	RunnerFlags
}

func (s *serveCmd) Run(ctx context.Context, c *Common) error {
	cfg := c.config()
	if err := s.ServerFlags.apply(&cfg); err != nil {
		return err
	}
	if err := s.RunnerFlags.apply(&cfg); err != nil {
		return err
	}
	return run(ctx, cfg, os.Stdout)
}

type apiCmd struct {
	ServerFlags
}

func requireExternal(c *Common, role string) error {
	if c.NATSURL == "" || c.DatabaseURL == "" {
		return fmt.Errorf("maestro %s needs MAESTRO_NATS_URL and MAESTRO_DATABASE_URL (use `maestro serve` for a single process)", role)
	}
	return nil
}

// ErrNoSharedArtifacts means `maestro api` was started without S3: a
// filesystem store per instance would make an artifact uploaded through one
// instance a 500 on the next.
var ErrNoSharedArtifacts = errors.New("maestro api needs shared artifact storage: set MAESTRO_S3_ENDPOINT, MAESTRO_S3_BUCKET, " +
	"MAESTRO_S3_ACCESS_KEY and MAESTRO_S3_SECRET_KEY (a filesystem store is per instance; use `maestro serve` for a single process)")

func (a *apiCmd) Run(ctx context.Context, c *Common) error {
	if err := requireExternal(c, "api"); err != nil {
		return err
	}
	if c.S3Endpoint == "" {
		return ErrNoSharedArtifacts
	}
	cfg := c.config()
	if err := a.apply(&cfg); err != nil {
		return err
	}
	cfg.Worker, cfg.Runner = false, false
	return run(ctx, cfg, os.Stdout)
}

type workerCmd struct {
	Lease time.Duration `name:"job-lease" env:"MAESTRO_JOB_LEASE" default:"15s" help:"A claimed job whose runner sends no heartbeat this long is lost and retried."`
	ScrapeFlags
}

// ScrapeFlags let a process without the API role (worker, runner) serve
// its Prometheus metrics on a listener of its own.
type ScrapeFlags struct {
	MetricsAddr  string `name:"metrics-addr" env:"MAESTRO_METRICS_ADDR" help:"host:port where this process serves /metrics to the scrape token (MAESTRO_METRICS_TOKEN, required); off when empty."`
	MetricsToken string `name:"metrics-token" env:"MAESTRO_METRICS_TOKEN" hidden:"" help:"Bearer token a Prometheus scraper reads /metrics with; variable only in practice."`
}

func (s ScrapeFlags) apply(cfg *platform.Config) error {
	if s.MetricsAddr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s.MetricsAddr); err != nil {
		return fmt.Errorf("MAESTRO_METRICS_ADDR (--metrics-addr) %q: want host:port", s.MetricsAddr)
	}
	cfg.MetricsAddr, cfg.MetricsToken = s.MetricsAddr, s.MetricsToken
	return nil
}

func (w workerCmd) Run(ctx context.Context, c *Common) error {
	if err := requireExternal(c, "worker"); err != nil {
		return err
	}
	cfg := c.config()
	cfg.API, cfg.Runner = false, false // and so no artifact store: projections never touch blobs
	cfg.Jobs.Lease = w.Lease
	if err := w.ScrapeFlags.apply(&cfg); err != nil {
		return err
	}
	return run(ctx, cfg, os.Stdout)
}

type runnerCmd struct {
	RunnerFlags
	ScrapeFlags
}

func (r *runnerCmd) Run(ctx context.Context, c *Common) error {
	if err := requireExternal(c, "runner"); err != nil {
		return err
	}
	if r.PublicURL == "" {
		return errors.New("maestro runner needs MAESTRO_PUBLIC_URL: the API's base URL as the jobs it runs reach it")
	}
	if c.S3Endpoint == "" && c.ArtifactDir == "" {
		return errors.New("maestro runner needs the artifact store the API uses, to fetch job artifacts and keep job logs: " +
			"MAESTRO_S3_* (or MAESTRO_ARTIFACT_DIR for a directory the API shares on this machine)")
	}
	cfg := c.config()
	if err := r.RunnerFlags.apply(&cfg); err != nil {
		return err
	}
	if err := r.ScrapeFlags.apply(&cfg); err != nil {
		return err
	}
	cfg.API, cfg.Worker = false, false
	return run(ctx, cfg, os.Stdout)
}

// run starts the platform, prints how to use it, and waits for a signal.
func run(ctx context.Context, cfg platform.Config, out io.Writer) error {
	log := cfg.Logger
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		return err
	}
	printBanner(out, cfg, p)
	<-ctx.Done()
	log.Info("shutting down: draining requests and consumers")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.Shutdown(sctx)
	log.Info("stopped")
	return nil
}

func printBanner(out io.Writer, cfg platform.Config, p *platform.Platform) {
	fmt.Fprintf(out, "Maestro %s is running (data dir %s).\n", version, cfg.DataDir)
	if u := p.URL(); u != "" {
		fmt.Fprintf(out, "  API:      %s/api/v1   OpenAPI: %s/api/v1/openapi.json\n", u, u)
	}
	if cfg.NATSURL == "" {
		if nu := p.NATSClientURL(); nu != "" {
			fmt.Fprintf(out, "  NATS:     %s (user maestro, password in %s/nats.password)\n", nu, cfg.DataDir)
		} else {
			fmt.Fprintln(out, "  NATS:     embedded, in-process only (MAESTRO_NATS_LISTEN=off)")
		}
		sync := "fsync before every ack"
		if !cfg.SyncAlways {
			sync = "fsync every 2 minutes (MAESTRO_NATS_SYNC=interval)"
		}
		fmt.Fprintf(out, "  Events:   JetStream stream MAESTRO_EVENTS, %s\n", sync)
	} else {
		// Not the URL itself: it may carry credentials.
		fmt.Fprintf(out, "  Events:   JetStream stream MAESTRO_EVENTS on MAESTRO_NATS_URL, %d replicas\n", p.EventReplicas())
	}
	if binDir, pgVersion := p.ManagedPostgres(); binDir != "" {
		fmt.Fprintf(out, "  Postgres: managed cluster in %s/postgres, PostgreSQL %s from %s\n", cfg.DataDir, pgVersion, binDir)
	}
	if u := p.URL(); u != "" {
		fmt.Fprintln(out, "Log in:")
		fmt.Fprintf(out, "  curl -s -X POST %s/api/v1/auth/login -H 'Content-Type: application/json' \\\n", u)
		fmt.Fprintln(out, `       -d '{"email":"you@example.com","password":"..."}'`)
		fmt.Fprintf(out, "  No admin yet? echo 'a-long-password' | maestro admin create --data-dir %s --email you@example.com --password-stdin\n", cfg.DataDir)
		if cfg.RegistrationOpen {
			fmt.Fprintf(out, "  Or register (role viewer): POST %s/api/v1/auth/register {email, password, name}\n", u)
		}
	}
}
