package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/flows"
)

// DeliveryConfig configures webhook delivery.
type DeliveryConfig struct {
	Pool    *pgxpool.Pool
	Service *Service
	Targets TargetPolicy
	// Timeout bounds one request, connection to last byte (default 10s).
	Timeout time.Duration
	// BackoffBase is the wait before the first retry; each further retry
	// waits twice as long, up to BackoffMax (defaults 5s and 1h), with
	// ±20% jitter so a receiver that comes back is not hit by every
	// delivery at once.
	BackoffBase, BackoffMax time.Duration
	// RetryFor is how long a delivery is retried before it fails (default
	// 25h: "at least a day"). A subscription none of whose deliveries
	// succeeded since a failed delivery was made is disabled.
	RetryFor time.Duration
	// Workers is how many deliveries are in flight at once (default 16).
	Workers int
	// Poll is how often the dispatcher looks for due retries when nothing
	// wakes it (default 1s; never more than BackoffBase).
	Poll time.Duration
	// MaxResponseBytes bounds what is read of a receiver's answer (default
	// 64 KiB; the rest is dropped with the connection).
	MaxResponseBytes int64
	// Retain is how long finished deliveries (succeeded, failed,
	// cancelled) stay in the log (default 30 days): the outbox is bounded.
	Retain time.Duration
	Logger *slog.Logger
}

// Delivery delivers events to webhook subscriptions in two steps. The
// matcher, a watermill reaction on a durable consumer of every event
// subject (rule 11), writes one outbox row per matching subscription and
// event (webhook_deliveries; keyed by both, so a redelivered event adds
// nothing) and acknowledges; the dispatcher claims due rows
// (FOR UPDATE SKIP LOCKED, so several workers and processes share them),
// POSTs them and records the outcome and the next attempt. Both survive a
// restart: the consumer resumes at its first unacknowledged event, and the
// outbox is in Postgres.
type Delivery struct {
	cfg    DeliveryConfig
	client *http.Client
	wake   chan struct{}
	log    *slog.Logger
	// delivered takes the successes, which the recorder writes in batches
	// (one commit for many: most attempts succeed).
	delivered chan success

	mu      sync.Mutex
	targets map[string]cachedTarget
	// projects caches the project of an aggregate (its subject) whose
	// events do not name it (projectOf).
	projects map[string]string

	// subs tells the matcher when the subscriptions' read model has
	// applied every subscription event before the event it matches.
	subs *readModel
}

// cachedTarget is a subscription as read at its projection row's seq (the
// sequence of its last event): a claim names the row's current seq, so a
// change (a rotation, a new URL, a disable) is never delivered past.
type cachedTarget struct {
	t   target
	seq int64
}

// success is a delivery the receiver accepted.
type success struct {
	webhookID, eventID string
	code               int
}

// NewDelivery builds the delivery pipeline.
func NewDelivery(cfg DeliveryConfig) *Delivery {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 5 * time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = time.Hour
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 25 * time.Hour
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	cfg.Poll = min(cfg.Poll, cfg.BackoffBase)
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 64 << 10
	}
	if cfg.Retain <= 0 {
		cfg.Retain = 30 * 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would be dialled instead of the target, past the address check
		DialContext:           cfg.Targets.DialContext(cfg.Timeout),
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConns:          cfg.Workers * 4,
		MaxIdleConnsPerHost:   cfg.Workers,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout,
		// Redirects are not followed: the answer is the 3xx, a failure.
		// (Following one would send the signed event to a target nobody
		// checked when the subscription was made.)
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &Delivery{cfg: cfg, client: client, wake: make(chan struct{}, 1), log: cfg.Logger.With("component", "webhooks"),
		delivered: make(chan success, 1024), targets: map[string]cachedTarget{}, projects: map[string]string{},
		subs: &readModel{pool: cfg.Pool, store: cfg.Service.store}}
}

// matcherWait bounds how long the matcher waits for the subscriptions'
// read model to catch up with an event; past it the event is handled
// again later (redelivered), never matched against a stale read model.
const matcherWait = 15 * time.Second

// MatcherName is the matcher's durable consumer.
const MatcherName = "webhook-match"

// matcherHandlers is how many events the matcher handles at once; one at
// a time, an outbox commit (an fsync) per event bounds it to a few hundred
// events a second. 64 rather than 16: with the stream fsyncing each append
// too, more commits in flight group better (maestro-bench -only webhooks,
// 1,000 events/s, fsync on, alone on the machine, alternated: p99 lag
// 5.05 s / 836 ms with 16, 161 / 96 ms with 64).
const matcherHandlers = 64

// Register adds the matcher to a reactions router.
func (d *Delivery) Register(r *flows.Router) error {
	// Events are matched concurrently (matcherHandlers at a time): each
	// one's outbox rows are its own, and Postgres groups their commits.
	return r.Handle(flows.Consumer{Name: MatcherName, Subjects: []string{events.AllSubjects}, MaxAckPending: 4096,
		Handlers: matcherHandlers}, d.match)
}

// match writes the outbox rows of one event.
func (d *Delivery) match(ctx context.Context, e events.Envelope) error {
	// The subscriptions that exist when e was appended must all be in the
	// read model it is matched against (created_seq < e's sequence).
	floor, err := d.subs.await(ctx, e.Sequence, matcherWait)
	if err != nil {
		return fmt.Errorf("webhooks: match event %d: %w", e.Sequence, err)
	}
	agg, id := events.AggregateOf(e.Subject)
	if agg == events.AggWebhook {
		return d.matchOwn(ctx, e, id)
	}
	project, err := d.projectOf(ctx, e, agg, id)
	if err != nil {
		return err
	}
	body, err := CloudEvent(e)
	if err != nil {
		return flows.Permanent(err)
	}
	var pid *string
	if project != "" {
		pid = &project
	}
	// A subscription gets the events appended after its creation, of its
	// project (global ones: of every project, and those of none), whose
	// type matches one of its patterns. The statement also checks that the
	// read model is not behind the checkpoint the wait above counted on
	// (same snapshot): a reset or rebuild since then (projections.Reset
	// empties it and rewinds its checkpoint in one transaction) would make
	// the join miss subscriptions; then the wait starts over.
	for attempt := 0; ; attempt++ {
		var current bool
		var inserted int64
		err = d.cfg.Pool.QueryRow(ctx, `WITH cp AS (
				SELECT COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = $6), 0) >= $7 AS current),
			ins AS (INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, event_seq, body)
				SELECT w.id, $1, $2, $3, $4 FROM webhooks w, cp
				WHERE cp.current AND w.enabled AND w.created_seq < $3 AND (w.project_id IS NULL OR w.project_id = $5::uuid)
				AND ($2 = ANY (w.exact) OR EXISTS (SELECT 1 FROM unnest(w.prefixes) p WHERE starts_with($2, p)))
				ON CONFLICT DO NOTHING RETURNING 1)
			SELECT (SELECT current FROM cp), (SELECT count(*) FROM ins)`,
			e.ID, e.Type, int64(e.Sequence), body, pid, readModelName, int64(floor)).Scan(&current, &inserted)
		if err != nil {
			return fmt.Errorf("webhooks: match event %d: %w", e.Sequence, err)
		}
		if current {
			if inserted > 0 {
				d.Wake()
			}
			return nil
		}
		d.subs.rewound()
		if attempt > 0 {
			return fmt.Errorf("webhooks: match event %d: the subscriptions' read model was reset; matching again once it is rebuilt", e.Sequence)
		}
		if floor, err = d.subs.await(ctx, e.Sequence, matcherWait); err != nil {
			return fmt.Errorf("webhooks: match event %d after a reset of the read model: %w", e.Sequence, err)
		}
	}
}

// matchOwn handles the webhook aggregate's own events: they are not
// delivered to subscriptions (they describe the subscriptions), except a
// test request, to its webhook; a disabled or deleted subscription's
// pending deliveries are cancelled.
func (d *Delivery) matchOwn(ctx context.Context, e events.Envelope, id string) error {
	switch e.Type {
	case events.WebhookTestRequested:
		body, err := CloudEvent(e)
		if err != nil {
			return flows.Permanent(err)
		}
		tag, err := d.cfg.Pool.Exec(ctx, `INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, event_seq, body)
			SELECT w.id, $1, $2, $3, $4 FROM webhooks w WHERE w.id = $5 AND w.enabled ON CONFLICT DO NOTHING`,
			e.ID, e.Type, int64(e.Sequence), body, id)
		if err != nil {
			return fmt.Errorf("webhooks: match test event %d: %w", e.Sequence, err)
		}
		if tag.RowsAffected() > 0 {
			d.Wake()
		}
	case events.WebhookDisabled, events.WebhookDeleted:
		if _, err := d.cfg.Pool.Exec(ctx, `UPDATE webhook_deliveries SET status = 'cancelled', last_error = $2
			WHERE webhook_id = $1 AND status = 'pending'`, id, "the webhook was "+strings.TrimSuffix(strings.TrimPrefix(e.Type, "maestro.webhook."), ".v1")); err != nil {
			return fmt.Errorf("webhooks: cancel deliveries of %s: %w", id, err)
		}
	}
	return nil
}

// projectOf is the project an event belongs to: its data's project_id,
// else the project its aggregate was created in (a project's own id; a
// model's, experiment's, run's, job's, promotion request's or sweep's creation
// event names it). "" means
// the event belongs to no project and goes to global subscriptions only.
//
// The creation event is read from the stream, not from the aggregate's
// read model: a read model may lag the matcher by any amount (a restart's
// catch-up, a busy projection), and an event matched without its project
// would be lost for the project's subscriptions. An aggregate never moves
// to another project, so the answer is cached.
func (d *Delivery) projectOf(ctx context.Context, e events.Envelope, agg, id string) (string, error) {
	var x struct {
		ProjectID string `json:"project_id"`
	}
	if json.Unmarshal(e.Data, &x) == nil && x.ProjectID != "" {
		return x.ProjectID, nil
	}
	switch agg {
	case events.AggProject:
		return id, nil
	case events.AggModel, events.AggExperiment, events.AggRun, events.AggJob, events.AggPromotion, events.AggSweep:
	default:
		return "", nil
	}
	d.mu.Lock()
	pid, ok := d.projects[e.Subject]
	d.mu.Unlock()
	if ok {
		return pid, nil
	}
	store := d.cfg.Service.store
	first, err := store.NextOn(ctx, 1, e.Subject)
	if err != nil {
		return "", fmt.Errorf("webhooks: the creation of %s: %w", e.Subject, err)
	}
	if first != 0 && first != e.Sequence {
		c, err := store.Get(ctx, first)
		if err != nil {
			return "", fmt.Errorf("webhooks: the creation of %s: %w", e.Subject, err)
		}
		x.ProjectID = ""
		_ = json.Unmarshal(c.Data, &x) // a creation without project_id: no project
		pid = x.ProjectID
	}
	if pid == "" {
		d.log.Warn("webhooks: event's project not found; only global subscriptions get it", "seq", e.Sequence, "type", e.Type)
	}
	d.mu.Lock()
	if len(d.projects) >= 100000 {
		clear(d.projects) // bounded; aggregates are looked up again
	}
	d.projects[e.Subject] = pid
	d.mu.Unlock()
	return pid, nil
}

// CloudEvent renders an event as a CloudEvent in structured mode (JSON):
// the binary mode's attributes as fields, the data (secret fields
// removed, events.SecretFields) under "data".
func CloudEvent(e events.Envelope) ([]byte, error) {
	data := json.RawMessage(e.Data)
	if events.NeedsRedaction(e.Type) {
		b, err := json.Marshal(events.Redacted(e))
		if err != nil {
			return nil, fmt.Errorf("redact event %d: %w", e.Sequence, err)
		}
		data = b
	}
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return json.Marshal(struct {
		SpecVersion     string          `json:"specversion"`
		ID              string          `json:"id"`
		Source          string          `json:"source"`
		Type            string          `json:"type"`
		Subject         string          `json:"subject"`
		Time            string          `json:"time"`
		DataContentType string          `json:"datacontenttype"`
		ActorKind       string          `json:"actorkind"`
		ActorID         string          `json:"actorid,omitempty"`
		CorrelationID   string          `json:"correlationid,omitempty"`
		CausationID     string          `json:"causationid,omitempty"`
		Sequence        string          `json:"sequence"`
		Data            json.RawMessage `json:"data"`
	}{"1.0", e.ID, events.Source, e.Type, e.Subject, e.Time.UTC().Format(time.RFC3339Nano), "application/json",
		string(e.Actor.Kind), e.Actor.ID, e.CorrelationID, e.CausationID, strconv.FormatUint(e.Sequence, 10), data})
}

// Wake tells the dispatcher there is something to deliver now.
func (d *Delivery) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// claimed is a delivery the dispatcher holds for one attempt.
type claimed struct {
	webhookID, eventID string
	// seq is the subscription's row's seq at the claim (nil: the
	// subscription is gone).
	seq       *int64
	body      []byte
	attempts  int
	createdAt time.Time
}

// target is a subscription as a delivery needs it.
type target struct {
	url                    string
	enabled                bool
	secret, previousSecret string
	// previousUntil ends the rotation overlap: previousSecret signs
	// deliveries made before it.
	previousUntil time.Time
}

// Run dispatches until ctx ends; in-flight deliveries finish (bounded by
// Timeout) and record their outcome.
func (d *Delivery) Run(ctx context.Context) error {
	work := make(chan claimed)
	var wg sync.WaitGroup
	for range d.cfg.Workers {
		wg.Go(func() {
			for c := range work {
				d.deliver(c)
			}
		})
	}
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		d.record()
	}()
	defer func() {
		close(work)
		wg.Wait()
		close(d.delivered)
		<-recorded
	}()
	batch := d.cfg.Workers * 4
	var pruned time.Time
	for {
		if time.Since(pruned) > pruneEvery {
			pruned = time.Now()
			d.prune(ctx)
		}
		got, err := d.claim(ctx, batch)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("webhooks: claim deliveries", "err", err)
		}
		for _, c := range got {
			select {
			case work <- c:
			case <-ctx.Done():
				// Claimed and not sent: their lease runs out and the next
				// dispatcher takes them.
				return nil
			}
		}
		if len(got) == batch {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case <-time.After(d.cfg.Poll):
		}
	}
}

// pruneEvery is how often the dispatcher drops finished deliveries older
// than Retain.
const pruneEvery = 10 * time.Minute

// prune drops finished deliveries older than Retain, 10,000 rows a
// statement so no statement holds locks long.
func (d *Delivery) prune(ctx context.Context) {
	for {
		tag, err := d.cfg.Pool.Exec(ctx, `DELETE FROM webhook_deliveries WHERE ctid IN (
			SELECT ctid FROM webhook_deliveries WHERE status <> 'pending' AND created_at < now() - make_interval(secs => $1) LIMIT 10000)`,
			d.cfg.Retain.Seconds())
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("webhooks: prune the delivery log", "err", err)
			}
			return
		}
		if tag.RowsAffected() < 10000 {
			return
		}
	}
}

// lease is how long a claimed delivery is held before another dispatcher
// may take it (its holder died mid-request).
func (d *Delivery) lease() time.Duration { return d.cfg.Timeout + 5*time.Second }

// claim takes up to n due deliveries for one attempt each.
func (d *Delivery) claim(ctx context.Context, n int) ([]claimed, error) {
	rows, err := d.cfg.Pool.Query(ctx, `WITH due AS (
			SELECT o.webhook_id, o.event_id, w.seq FROM webhook_deliveries o LEFT JOIN webhooks w ON w.id = o.webhook_id
			WHERE o.status = 'pending' AND o.next_attempt_at <= now()
			ORDER BY o.next_attempt_at LIMIT $1 FOR UPDATE OF o SKIP LOCKED)
		UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(),
			next_attempt_at = now() + make_interval(secs => $2)
		FROM due WHERE d.webhook_id = due.webhook_id AND d.event_id = due.event_id
		RETURNING d.webhook_id::text, d.event_id, d.body, d.attempts, d.created_at, due.seq`, n, d.lease().Seconds())
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	defer rows.Close()
	var out []claimed
	for rows.Next() {
		var c claimed
		if err := rows.Scan(&c.webhookID, &c.eventID, &c.body, &c.attempts, &c.createdAt, &c.seq); err != nil {
			return out, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// target is a subscription's delivery settings with its secrets opened,
// as of seq (its row's seq at the claim; nil: it is gone).
func (d *Delivery) target(ctx context.Context, id string, seq *int64) (target, bool, error) {
	if seq == nil {
		return target{}, false, nil
	}
	d.mu.Lock()
	c, ok := d.targets[id]
	d.mu.Unlock()
	if ok && c.seq == *seq {
		return c.t, true, nil
	}
	t, at, found, err := d.readTarget(ctx, id)
	if err != nil || !found {
		return t, found, err
	}
	d.mu.Lock()
	if len(d.targets) > 10000 {
		clear(d.targets) // bounded: subscriptions are few, but ids come from the outbox
	}
	d.targets[id] = cachedTarget{t: t, seq: at}
	d.mu.Unlock()
	return t, true, nil
}

// readTarget reads a subscription's delivery settings, opens its secrets
// and answers its row's seq.
func (d *Delivery) readTarget(ctx context.Context, id string) (target, int64, bool, error) {
	var t target
	var sealed, prevSealed string
	var prevUntil *time.Time
	var seq int64
	err := d.cfg.Pool.QueryRow(ctx, `SELECT url, enabled, secret, previous_secret, previous_until, seq
		FROM webhooks WHERE id = $1`, id).Scan(&t.url, &t.enabled, &sealed, &prevSealed, &prevUntil, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, 0, false, nil
	}
	if err != nil {
		return t, 0, false, err
	}
	sealer := d.cfg.Service.Sealer()
	if t.secret, err = sealer.Open(id, sealed); err != nil {
		return t, 0, true, err
	}
	if prevUntil != nil && prevSealed != "" {
		if t.previousSecret, err = sealer.Open(id, prevSealed); err != nil {
			return t, 0, true, err
		}
		t.previousUntil = *prevUntil
	}
	return t, seq, true, nil
}

// deliver makes one attempt and records it.
func (d *Delivery) deliver(c claimed) {
	// The attempt and its record outlive a shutdown's cancellation (they
	// are bounded by Timeout): an answered delivery must not be retried
	// for want of its record.
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout+10*time.Second)
	defer cancel()
	t, found, err := d.target(ctx, c.webhookID, c.seq)
	if err != nil {
		d.log.Warn("webhooks: read subscription", "webhook", c.webhookID, "err", err)
		d.retry(ctx, c, nil, "reading the subscription: "+err.Error())
		return
	}
	if !found || !t.enabled {
		d.finish(ctx, c, "cancelled", nil, "the webhook is disabled or deleted")
		return
	}
	code, err := d.post(ctx, t, c)
	switch {
	case err == nil && code >= 200 && code < 300:
		d.delivered <- success{c.webhookID, c.eventID, code}
	case err != nil:
		d.retry(ctx, c, nil, err.Error())
	default:
		d.retry(ctx, c, &code, "HTTP "+strconv.Itoa(code))
	}
}

// post sends one signed request and answers the response's status.
func (d *Delivery) post(ctx context.Context, t target, c claimed) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(string(c.body)))
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	ts := time.Now().Unix()
	sig, err := Sign(t.secret, c.eventID, ts, c.body)
	if err != nil {
		return 0, err
	}
	if t.previousSecret != "" && time.Now().Before(t.previousUntil) {
		// Rotation overlap: both signatures, so a receiver holding either
		// secret verifies.
		prev, err := Sign(t.previousSecret, c.eventID, ts, c.body)
		if err != nil {
			return 0, err
		}
		sig += " " + prev
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("User-Agent", "Maestro-Webhooks/1")
	req.Header.Set("webhook-id", c.eventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := d.client.Do(req)
	if err != nil {
		// The client's error quotes the whole URL, whose path or query is
		// often the receiver's credential, and the reason of an automatic
		// disable is an event: name only the URL's origin.
		var ue *url.Error
		if errors.As(err, &ue) {
			return 0, fmt.Errorf("%s %s: %s", ue.Op, events.URLOrigin(ue.URL), scrub(ue.Err.Error()))
		}
		return 0, errors.New(scrub(err.Error()))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, d.cfg.MaxResponseBytes))
	return resp.StatusCode, nil
}

// scrub bounds an error text for the delivery log.
func scrub(s string) string {
	if len(s) > 500 {
		s = s[:500]
	}
	return strings.ToValidUTF8(s, "?")
}

// finish records a delivery's final status.
func (d *Delivery) finish(ctx context.Context, c claimed, status string, code *int, msg string) {
	_, err := d.cfg.Pool.Exec(ctx, `UPDATE webhook_deliveries SET status = $3, response_code = COALESCE($4, response_code),
		last_error = $5, delivered_at = CASE WHEN $3 = 'succeeded' THEN now() END WHERE webhook_id = $1 AND event_id = $2`,
		c.webhookID, c.eventID, status, code, scrub(msg))
	if err != nil {
		d.log.Warn("webhooks: record delivery", "webhook", c.webhookID, "event", c.eventID, "err", err)
	}
}

// record writes successes in batches of up to 500, each batch as soon as
// the previous commit is done (a delivery waits at most one commit). A
// batch that cannot be written is logged: its deliveries' leases run out
// and they are delivered again (at least once).
func (d *Delivery) record() {
	batch := make([]success, 0, 500)
	for s := range d.delivered {
		batch = append(batch[:0], s)
	more:
		for len(batch) < cap(batch) {
			select {
			case s, ok := <-d.delivered:
				if !ok {
					break more
				}
				batch = append(batch, s)
			default:
				break more
			}
		}
		ws, es, codes := make([]string, len(batch)), make([]string, len(batch)), make([]int32, len(batch))
		for i, s := range batch {
			ws[i], es[i], codes[i] = s.webhookID, s.eventID, int32(s.code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := d.cfg.Pool.Exec(ctx, `UPDATE webhook_deliveries d SET status = 'succeeded', response_code = x.code,
			last_error = '', delivered_at = now()
			FROM unnest($1::uuid[], $2::text[], $3::int[]) AS x(webhook_id, event_id, code)
			WHERE d.webhook_id = x.webhook_id AND d.event_id = x.event_id`, ws, es, codes)
		cancel()
		if err != nil {
			d.log.Warn("webhooks: record deliveries", "n", len(batch), "err", err)
		}
	}
}

// Backoff is the wait after the n-th failed attempt (n ≥ 1): base·2^(n-1)
// up to max, ±20%.
func Backoff(base, max time.Duration, n int) time.Duration {
	w := base
	for i := 1; i < n && w < max; i++ {
		w *= 2
	}
	w = min(w, max)
	return time.Duration(float64(w) * (0.8 + 0.4*rand.Float64()))
}

// retry schedules the next attempt, or fails the delivery when it has
// been retried for RetryFor (and disables the subscription when nothing
// was delivered to it since).
func (d *Delivery) retry(ctx context.Context, c claimed, code *int, msg string) {
	if time.Since(c.createdAt) < d.cfg.RetryFor {
		wait := Backoff(d.cfg.BackoffBase, d.cfg.BackoffMax, c.attempts)
		_, err := d.cfg.Pool.Exec(ctx, `UPDATE webhook_deliveries SET response_code = $3, last_error = $4,
			next_attempt_at = now() + make_interval(secs => $5) WHERE webhook_id = $1 AND event_id = $2 AND status = 'pending'`,
			c.webhookID, c.eventID, code, scrub(msg), wait.Seconds())
		if err != nil {
			d.log.Warn("webhooks: schedule retry", "webhook", c.webhookID, "event", c.eventID, "err", err)
		}
		return
	}
	_, err := d.cfg.Pool.Exec(ctx, `UPDATE webhook_deliveries SET status = 'failed', response_code = $3, last_error = $4
		WHERE webhook_id = $1 AND event_id = $2`, c.webhookID, c.eventID, code, scrub(msg))
	if err != nil {
		d.log.Warn("webhooks: record failed delivery", "webhook", c.webhookID, "event", c.eventID, "err", err)
		return
	}
	var delivered bool
	if err := d.cfg.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE webhook_id = $1 AND delivered_at >= $2)`,
		c.webhookID, c.createdAt).Scan(&delivered); err != nil || delivered {
		return
	}
	reason := fmt.Sprintf("deliveries failed for %s (%d attempts of event %s; last: %s)", d.cfg.RetryFor, c.attempts, c.eventID, scrub(msg))
	meta := events.Meta{Actor: events.Actor{Kind: events.ActorSystem, ID: "maestro/webhooks"}, CorrelationID: c.eventID,
		CausationID: c.eventID, IdempotencyKey: "webhook-disable/" + c.webhookID + "/" + c.eventID}
	if err := d.cfg.Service.Disable(ctx, meta, c.webhookID, reason, c.eventID); err != nil {
		d.log.Warn("webhooks: disable failing subscription", "webhook", c.webhookID, "err", err)
		return
	}
	d.log.Warn("webhooks: subscription disabled after failed deliveries", "webhook", c.webhookID)
}
