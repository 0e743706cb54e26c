package webhooks

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Service handles subscription commands. A project's subscriptions are
// its owners' (authz.WebhookManage, on the project's event-sourced
// membership, through the registry); global ones (no project: every
// event) are admins' (authz.ManageWebhooks).
type Service struct {
	projects *registry.Service
	actor    func(context.Context, authz.Principal) (authz.Principal, error)
	store    *events.Store
	repo     *handlers.Repository[State]
	sealer   *Sealer
	targets  TargetPolicy
	now      func() time.Time

	// subs counts a scope's subscriptions for the cap (WithReadModel; nil:
	// no cap). limits are MaxProjectWebhooks and MaxGlobalWebhooks
	// (tests lower them).
	subs   *readModel
	limits struct{ project, global int }
	// scopes serialises creations per scope (project, or global) in this
	// process, so concurrent requests cannot all pass the count.
	scopes [64]sync.Mutex
}

// Caps on the number of subscriptions: each one costs an outbox row per
// matching event and a share of the dispatcher, so nobody may create
// them without bound.
const (
	MaxProjectWebhooks = 50
	MaxGlobalWebhooks  = 100
)

// NewService builds the webhook service. actor refreshes a principal's
// global role from the event store (identity.Service.Actor); nil trusts
// the principal as given.
func NewService(store *events.Store, projects *registry.Service, actor func(context.Context, authz.Principal) (authz.Principal, error),
	sealer *Sealer, targets TargetPolicy, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	s := &Service{store: store, projects: projects, actor: actor, sealer: sealer, targets: targets, now: now,
		repo: handlers.NewRepository(store, Evolve, 10000).WithClone(Clone)}
	s.limits.project, s.limits.global = MaxProjectWebhooks, MaxGlobalWebhooks
	return s
}

// WithReadModel lets the service count a scope's subscriptions in the
// webhooks read model (pool: the projections' database) to hold creations
// to MaxProjectWebhooks and MaxGlobalWebhooks.
func (s *Service) WithReadModel(pool *pgxpool.Pool) *Service {
	s.subs = &readModel{pool: pool, store: s.store}
	return s
}

// capWait bounds how long a creation waits for the read model to apply
// the subscription events before it counts.
const capWait = 10 * time.Second

// checkCap refuses a new subscription in the scope projectID ("" global)
// when it holds its limit. The count is the read model's once it has
// applied every subscription event appended so far; with creations in a
// scope taken one at a time (scopes) and each waiting for the previous
// one to be applied, a process never passes the limit. Two API processes
// creating in one scope at the same instant may each pass it by one.
func (s *Service) checkCap(ctx context.Context, projectID string) error {
	if s.subs == nil {
		return nil
	}
	head, err := s.store.LastSequence(ctx)
	if err != nil {
		return fmt.Errorf("webhook cap: %w", err)
	}
	if _, err := s.subs.await(ctx, head+1, capWait); err != nil {
		return fmt.Errorf("webhook cap: %w", err)
	}
	var n int
	if err := s.subs.pool.QueryRow(ctx, `SELECT count(*) FROM webhooks WHERE COALESCE(project_id::text, '') = $1`,
		projectID).Scan(&n); err != nil {
		return fmt.Errorf("webhook cap: count: %w", err)
	}
	limit, scope := s.limits.project, "a project"
	if projectID == "" {
		limit, scope = s.limits.global, "Maestro"
	}
	if n >= limit {
		return handlers.Errorf(handlers.Conflict, "webhook-limit",
			"%s holds at most %d webhooks (it has %d): delete one before creating another", scope, limit, n)
	}
	return nil
}

// scope is the creation lock of a scope.
func (s *Service) scope(projectID string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(projectID))
	return &s.scopes[h.Sum32()%uint32(len(s.scopes))]
}

// Sealer is the service's secret sealer (the dispatcher opens with it).
func (s *Service) Sealer() *Sealer { return s.sealer }

// authorize checks that p may manage the subscriptions of the project ref,
// or the global ones when ref is "", and returns the project's id ("" for
// global). mutate refuses an archived project.
func (s *Service) authorize(ctx context.Context, p authz.Principal, ref string, mutate bool) (authz.Principal, string, error) {
	if ref == "" {
		if s.actor != nil {
			var err error
			if p, err = s.actor(ctx, p); err != nil {
				return p, "", err
			}
		}
		if !authz.Can(p, authz.ManageWebhooks, authz.Resource{Kind: "webhooks"}) {
			return p, "", handlers.Errorf(handlers.Forbidden, "forbidden", "global webhooks are for admins")
		}
		return p, "", nil
	}
	p, ps, err := s.projects.AuthorizeProject(ctx, p, ref, authz.WebhookManage)
	if err != nil {
		return p, "", err
	}
	if mutate {
		if err := registry.NotArchived(ps); err != nil {
			return p, "", err
		}
	}
	return p, ps.ID, nil
}

// Authorize checks that p may manage the subscriptions of the project ref
// ("" = the global ones) and returns the project's id ("" for global):
// the read side's check, on the same event-sourced state as commands.
func (s *Service) Authorize(ctx context.Context, p authz.Principal, ref string) (string, error) {
	_, pid, err := s.authorize(ctx, p, ref, false)
	return pid, err
}

// Load returns a subscription's state from the event store (not created:
// no such subscription, or an invalid id).
func (s *Service) Load(ctx context.Context, id string) (State, uint64, error) {
	if !events.ValidToken(id) {
		return State{}, 0, nil
	}
	return s.repo.Load(ctx, subject(id))
}

// webhook loads a live subscription of the project projectID ("" global).
func (s *Service) webhook(ctx context.Context, projectID, id string) (State, error) {
	w, _, err := s.Load(ctx, id)
	if err != nil {
		return w, err
	}
	if !w.Created || w.Deleted || w.ProjectID != projectID {
		return State{}, notFound()
	}
	return w, nil
}

// Webhook returns a subscription of the project ref ("" = a global one)
// that p may manage.
func (s *Service) Webhook(ctx context.Context, p authz.Principal, ref, id string) (State, error) {
	_, pid, err := s.authorize(ctx, p, ref, false)
	if err != nil {
		return State{}, err
	}
	return s.webhook(ctx, pid, id)
}

// Create makes a subscription in the project ref ("" = global) and
// returns it with its signing secret, which is shown this once (a retry
// of the same request, same Idempotency-Key, shows it again).
func (s *Service) Create(ctx context.Context, meta events.Meta, p authz.Principal, ref string, in Settings) (State, string, uint64, error) {
	p, pid, err := s.authorize(ctx, p, ref, true)
	if err != nil {
		return State{}, "", 0, err
	}
	if err := CheckSettings(&in); err != nil {
		return State{}, "", 0, err
	}
	if err := s.checkTarget(ctx, in.URL); err != nil {
		return State{}, "", 0, err
	}
	id := handlers.IDFor(meta, "webhook")
	lock := s.scope(pid)
	lock.Lock()
	defer lock.Unlock()
	if w, _, err := s.Load(ctx, id); err != nil {
		return State{}, "", 0, err
	} else if !w.Created {
		// A retry of a creation that went through is answered below, cap
		// or not.
		if err := s.checkCap(ctx, pid); err != nil {
			return State{}, "", 0, err
		}
	}
	secret := NewSecret()
	c := Create{ID: id, ProjectID: pid, CreatedBy: p.UserID, SecretSealed: s.sealer.Seal(id, secret), Settings: in}
	meta.Now = s.now
	var existing uint64
	w, seq, err := s.repo.Update(ctx, subject(id), meta, func(w State, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
		if w.Created || replay {
			existing = v
			return nil, nil, nil // this very command already ran
		}
		changes, err := DecideCreate(w, c)
		return changes, nil, err
	})
	if err != nil {
		return State{}, "", 0, err
	}
	if w.Secret != c.SecretSealed {
		// A retry (found as already created, or replayed from the events
		// its first attempt stored): answer with the secret stored then.
		if w.CreatedBy != p.UserID || w.ProjectID != pid {
			return State{}, "", 0, handlers.Errorf(handlers.Invalid, "idempotency-key-reused", "this Idempotency-Key already created another webhook")
		}
		if secret, err = s.sealer.Open(w.ID, w.Secret); err != nil {
			return State{}, "", 0, err
		}
		if seq == 0 {
			seq = existing
		}
	}
	return w, secret, seq, nil
}

func (s *Service) checkTarget(ctx context.Context, raw string) error {
	u, err := CheckURL(raw)
	if err != nil {
		return err
	}
	return s.targets.CheckTarget(ctx, u)
}

// Patch is a partial change of a subscription's settings (nil: keep).
type Patch struct {
	URL         *string
	Events      []string // nil: keep
	Description *string
	Enabled     *bool
}

// Update changes a subscription's settings. Enabling a subscription
// Maestro disabled starts its deliveries again with the next event.
func (s *Service) Update(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string, patch Patch) (State, uint64, error) {
	_, pid, err := s.authorize(ctx, p, ref, true)
	if err != nil {
		return State{}, 0, err
	}
	cur, err := s.webhook(ctx, pid, id)
	if err != nil {
		return State{}, 0, err
	}
	in := Settings{URL: cur.URL, Events: cur.Events, Description: cur.Description, Enabled: cur.Enabled}
	if patch.URL != nil {
		in.URL = *patch.URL
	}
	if patch.Events != nil {
		in.Events = patch.Events
	}
	if patch.Description != nil {
		in.Description = *patch.Description
	}
	if patch.Enabled != nil {
		in.Enabled = *patch.Enabled
	}
	if err := CheckSettings(&in); err != nil {
		return State{}, 0, err
	}
	if in.URL != cur.URL {
		if err := s.checkTarget(ctx, in.URL); err != nil {
			return State{}, 0, err
		}
	}
	return s.update(ctx, meta, id, func(w State) ([]handlers.Change, error) { return DecideUpdate(w, in) })
}

// update runs one decision on a subscription and answers its state and
// the sequence (the current one when nothing changed).
func (s *Service) update(ctx context.Context, meta events.Meta, id string, decide func(State) ([]handlers.Change, error)) (State, uint64, error) {
	meta.Now = s.now
	w, seq, err := s.repo.Update(ctx, subject(id), meta, func(w State, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
		if replay {
			// A retry (same Idempotency-Key) of a command whose events are
			// stored: the answer is the state after them. Deciding again
			// would not reproduce them (a rotation draws a new secret and
			// overlap end), and the repository would refuse the retry.
			return nil, nil, nil
		}
		changes, err := decide(w)
		return changes, nil, err
	})
	if err == nil && seq == 0 {
		_, seq, err = s.repo.Load(ctx, subject(id))
	}
	return w, seq, err
}

// Delete ends a subscription: its pending deliveries are dropped.
func (s *Service) Delete(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string) (uint64, error) {
	_, pid, err := s.authorize(ctx, p, ref, false)
	if err != nil {
		return 0, err
	}
	if _, err := s.webhook(ctx, pid, id); err != nil {
		return 0, err
	}
	_, seq, err := s.update(ctx, meta, id, DecideDelete)
	return seq, err
}

// Rotate gives a subscription a new signing secret (returned, shown this
// once); the old one keeps signing deliveries, as a second signature, for
// overlap (0: DefaultRotationOverlap), so receivers can switch without
// dropping a delivery.
func (s *Service) Rotate(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string, overlap time.Duration) (State, string, uint64, error) {
	_, pid, err := s.authorize(ctx, p, ref, true)
	if err != nil {
		return State{}, "", 0, err
	}
	if overlap == 0 {
		overlap = DefaultRotationOverlap
	}
	if overlap < 0 || overlap > MaxRotationOverlap {
		return State{}, "", 0, invalid("overlap must be between 0s and %s", MaxRotationOverlap)
	}
	if _, err := s.webhook(ctx, pid, id); err != nil {
		return State{}, "", 0, err
	}
	secret := NewSecret()
	sealed := s.sealer.Seal(id, secret)
	w, seq, err := s.update(ctx, meta, id, func(w State) ([]handlers.Change, error) {
		return DecideRotate(w, sealed, s.now().Add(overlap))
	})
	if err != nil {
		return State{}, "", 0, err
	}
	if w.Secret != sealed {
		// A retried rotation (same Idempotency-Key): the secret its first
		// attempt stored.
		if secret, err = s.sealer.Open(w.ID, w.Secret); err != nil {
			return State{}, "", 0, err
		}
	}
	return w, secret, seq, nil
}

// Test asks for a test delivery; it answers the test event's id (the
// delivery's webhook-id).
func (s *Service) Test(ctx context.Context, meta events.Meta, p authz.Principal, ref, id string) (string, uint64, error) {
	_, pid, err := s.authorize(ctx, p, ref, false)
	if err != nil {
		return "", 0, err
	}
	if _, err := s.webhook(ctx, pid, id); err != nil {
		return "", 0, err
	}
	_, seq, err := s.update(ctx, meta, id, DecideTest)
	if err != nil {
		return "", 0, err
	}
	e, err := s.lastEvent(ctx, id, seq)
	return e, seq, err
}

// lastEvent is the id of the event at seq on a subscription's subject.
func (s *Service) lastEvent(ctx context.Context, id string, seq uint64) (string, error) {
	evs, _, err := s.store.Load(ctx, subject(id), seq-1)
	if err != nil {
		return "", fmt.Errorf("webhook %s: read test event: %w", id, err)
	}
	for _, e := range evs {
		if e.Sequence == seq {
			return e.ID, nil
		}
	}
	return "", fmt.Errorf("webhook %s: test event %d not found", id, seq)
}

// Disable turns a subscription off on Maestro's behalf (the dispatcher,
// when a delivery's retries ran out), recorded as WebhookDisabled.
func (s *Service) Disable(ctx context.Context, meta events.Meta, id, reason, eventID string) error {
	_, _, err := s.update(ctx, meta, id, func(w State) ([]handlers.Change, error) { return DecideDisable(w, reason, eventID) })
	return err
}
