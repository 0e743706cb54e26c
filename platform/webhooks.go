package platform

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/handlers/webhooks"
)

// WebhooksConfig configures webhook delivery.
type WebhooksConfig struct {
	// AllowPrivateTargets is MAESTRO_WEBHOOK_ALLOW_PRIVATE_TARGETS: let
	// webhooks reach loopback, private and link-local addresses (a
	// receiver inside the platform's own network; tests).
	AllowPrivateTargets bool
	// Timeout bounds one delivery request (MAESTRO_WEBHOOK_TIMEOUT,
	// default 10s).
	Timeout time.Duration
	// BackoffBase and BackoffMax shape the retries (MAESTRO_WEBHOOK_BACKOFF_BASE,
	// default 5s, doubling up to 1h); RetryFor is how long a delivery is
	// retried (MAESTRO_WEBHOOK_RETRY_FOR, default 25h).
	BackoffBase, BackoffMax, RetryFor time.Duration
	// Workers is how many deliveries a worker makes at once (default 16).
	Workers int
	// Resolver replaces DNS for webhook targets (tests play DNS
	// rebinding with it); nil is the system's.
	Resolver webhooks.Resolver
}

// webhookPoolConns bounds the delivery's own Postgres connections: the
// matcher's handlers, the dispatcher's claims and workers, the recorder.
const webhookPoolConns = 24

// webhookService builds the webhook service: its secrets are sealed with
// a key derived from the platform's signing key (the secret every process
// already holds, loaded and created like the JWT key: keys/signing-key.pem,
// 0600), so no second key file needs distributing to API and workers.
func (p *Platform) webhookService(key *auth.SigningKey) (*webhooks.Service, error) {
	sealer, err := webhooks.NewSealer(key.Key.Seed(), key.KID)
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	// The read model (the projections' database) counts a scope's subscriptions for the caps.
	return webhooks.NewService(p.Store, p.Registry, p.Identity.Actor, sealer, p.webhookTargets(), p.cfg.Now).WithReadModel(p.Pool), nil
}

func (p *Platform) webhookTargets() webhooks.TargetPolicy {
	return webhooks.TargetPolicy{AllowPrivate: p.cfg.Webhooks.AllowPrivateTargets, Resolver: p.cfg.Webhooks.Resolver}
}

// startWebhookDelivery adds the webhook matcher to the reactions and
// starts the dispatcher (worker role), which stops at Shutdown.
func (p *Platform) startWebhookDelivery() error {
	wc := p.cfg.Webhooks
	// A pool of its own: the matcher's concurrent handlers and the
	// dispatcher's workers would otherwise queue for the connections the
	// projections (each holding one for its lock) and the API use.
	pcfg := p.Pool.Config().Copy()
	pcfg.MaxConns = webhookPoolConns
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return fmt.Errorf("webhooks: postgres pool: %w", err)
	}
	d := webhooks.NewDelivery(webhooks.DeliveryConfig{Pool: pool, Service: p.Webhooks, Targets: p.webhookTargets(),
		Timeout: wc.Timeout, BackoffBase: wc.BackoffBase, BackoffMax: wc.BackoffMax, RetryFor: wc.RetryFor, Workers: wc.Workers,
		Logger: p.log})
	if err := d.Register(p.reactions); err != nil {
		pool.Close()
		return fmt.Errorf("webhooks: %w", err)
	}
	ctx := p.rctx
	p.goRun(func() {
		_ = d.Run(ctx)
		// Shutdown closed the reactions (the matcher) before it ended
		// the dispatcher: nothing uses the pool any more.
		pool.Close()
	})
	return nil
}
