package platform

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/flows"
	"github.com/maestro-ml/maestro/runner"
)

// startJobs starts what training jobs need in this process's roles: the
// reactions (worker role: runs follow jobs, tokens revoked, leases
// watched, approved promotions carried out, sweeps scheduled) and the runner (runner role: dispatch and attempts), on one
// watermill router.
func (p *Platform) startJobs(ctx context.Context) error {
	if !p.cfg.Worker && !p.cfg.Runner {
		return nil
	}
	js := p.Store.JetStream()
	leases, err := runner.OpenLeases(ctx, js, p.configuredReplicas())
	if err != nil {
		return err
	}
	if p.reactions, err = flows.NewRouter(ctx, js, flows.Config{Connect: p.connectNATS, Replicas: p.configuredReplicas(), Logger: p.log}); err != nil {
		return err
	}
	jc := p.cfg.Jobs
	if p.cfg.Worker {
		x := &runner.Reactions{Jobs: p.Jobs, Tracking: p.Tracking, Identity: p.Identity, Leases: leases, Metrics: p.jobMetrics,
			Lease: jc.Lease, Now: p.cfg.Now}
		if err := x.Register(p.reactions); err != nil {
			return err
		}
		if err := p.Approvals.Register(p.reactions); err != nil {
			return err
		}
		if err := p.Sweeps.Register(p.reactions); err != nil {
			return err
		}
		if err := p.startWebhookDelivery(); err != nil {
			return err
		}
	}
	if p.cfg.Runner {
		if jc.RunnerID != "" && !events.ValidToken(jc.RunnerID) {
			return fmt.Errorf("MAESTRO_RUNNER_ID %q: at most 128 characters, no dots, spaces or wildcards", jc.RunnerID)
		}
		exec, err := p.executor()
		if err != nil {
			return err
		}
		if exec.Name() == "local" {
			if err := runner.HideFromJobs(); err != nil {
				return fmt.Errorf("runner: hide the process from its jobs: %w", err)
			}
		}
		publicURL := jc.PublicURL
		if publicURL == "" {
			publicURL = p.loopbackURL()
		}
		if publicURL == "" {
			return fmt.Errorf("the runner needs MAESTRO_PUBLIC_URL: the API's base URL as jobs reach it")
		}
		workDir := jc.WorkDir
		if workDir == "" && p.cfg.DataDir != "" {
			workDir = filepath.Join(p.cfg.DataDir, "jobs")
		}
		if err := mkdirPrivate(workDir); err != nil {
			return err
		}
		runners, err := runner.OpenRunners(ctx, js, p.configuredReplicas())
		if err != nil {
			return err
		}
		p.Runner = runner.New(runner.Config{ID: jc.RunnerID, Slots: jc.Slots, Executor: exec, Lease: jc.Lease, Grace: jc.Grace,
			TrackingURL: publicURL, LogLimit: jc.LogLimit, WorkDir: workDir, Secrets: runner.DirSecrets(jc.SecretsDir), Logger: p.log, Now: p.cfg.Now},
			runner.Deps{Jobs: p.Jobs, Identity: p.Identity, Tracking: p.Tracking, Blobs: p.Blobs, Leases: leases, Logs: js, Metrics: p.jobMetrics, Runners: runners})
		if err := p.Runner.Register(p.reactions); err != nil {
			return err
		}
	}
	failed := make(chan error, 1)
	p.goRun(func() {
		if err := p.reactions.Run(context.Background()); err != nil {
			p.log.Error("reactions", "err", err)
			failed <- err
		}
	})
	select {
	case <-p.reactions.Running():
		return nil
	case err := <-failed:
		return fmt.Errorf("reactions: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// executor is the runner's executor as configured.
func (p *Platform) executor() (runner.Executor, error) {
	switch p.cfg.Jobs.Executor {
	case "", "local":
		return runner.NewLocal(runner.LocalConfig{}), nil
	case "kubernetes":
		return runner.NewKubernetesFromConfig(p.cfg.Jobs.Kubeconfig, p.cfg.Jobs.Kubernetes)
	default:
		return nil, fmt.Errorf("MAESTRO_RUNNER_EXECUTOR is %q: it must be local or kubernetes", p.cfg.Jobs.Executor)
	}
}

// connectNATS opens another connection to the platform's NATS (the
// reactions need one per consumer).
func (p *Platform) connectNATS(name string) (*nats.Conn, error) {
	if p.embedded != nil {
		return p.embedded.Connect(name)
	}
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1)}
	if p.cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(p.cfg.NATSUser, p.cfg.NATSPassword))
	}
	return nats.Connect(p.cfg.NATSURL, opts...)
}

// loopbackURL is this process's API as a job on the same machine reaches
// it: its listener, with a wildcard host made the loopback address.
func (p *Platform) loopbackURL() string {
	if p.listener == nil {
		return ""
	}
	host, port, err := net.SplitHostPort(p.listener.Addr().String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// metricsHandler serves the Prometheus registry.
func (p *Platform) metricsHandler() http.Handler {
	return promhttp.HandlerFor(p.metrics, promhttp.HandlerOpts{Registry: p.metrics, ErrorHandling: promhttp.ContinueOnError})
}

// mkdirPrivate creates dir for this user only ("" = nothing to create).
func mkdirPrivate(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("job work dir %s: %w", dir, err)
	}
	return nil
}
