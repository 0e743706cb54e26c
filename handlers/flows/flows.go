// Package flows runs process managers: reactions that turn events into
// commands (dispatching queued jobs, following a job with its run, losing
// attempts whose lease expired). They run on watermill's Router and
// middleware over JetStream durable consumers of MAESTRO_EVENTS (rule 11);
// projections keep their own runner because their checkpoint lives in the
// read model's transaction, which watermill's ack cannot join.
//
// Every reaction must be idempotent under redelivery: it decides on the
// aggregate's current state with optimistic concurrency, and its commands
// carry an idempotency key derived from the event that caused them
// (Meta), so a redelivered event's append is a JetStream duplicate or a
// decision that changes nothing.
package flows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

const (
	// PoisonStream keeps the events a reaction could not handle after its
	// retries (outside maestro.events.>, so nothing mistakes them for
	// events): `nats stream view MAESTRO_POISON` shows them with the
	// reason, and the reaction's consumer has moved on.
	PoisonStream = "MAESTRO_POISON"
	// PoisonSubject is where reactions' poisoned events go.
	PoisonSubject = "maestro.poison.reactions"

	metaSubject = "maestro-subject"
	metaSeq     = "maestro-seq"
)

// Config is what a Router needs.
type Config struct {
	// Connect opens a NATS connection of its own for each consumer and
	// for the poison publisher: watermill drains (closes) a subscriber's
	// connection when it stops, so none may be shared.
	Connect  func(name string) (*nats.Conn, error)
	Replicas int
	Logger   *slog.Logger
}

// Router runs reactions.
type Router struct {
	cfg    Config
	router *message.Router
	wlog   watermill.LoggerAdapter

	mu      sync.Mutex
	conns   []*nats.Conn
	started bool
}

// Consumer configures the durable consumer of one reaction.
type Consumer struct {
	// Name is the durable consumer's name (and the reaction's): every
	// process running the reaction shares it, so each event is handled by
	// one of them.
	Name string
	// Stream is the stream the consumer reads (default MAESTRO_EVENTS;
	// the sweep scheduler follows MAESTRO_METRICS too).
	Stream string
	// Subjects filter the stream (e.g. maestro.events.job.>).
	Subjects []string
	// FromNow makes a consumer created on a stream with a history start at
	// its end rather than its beginning (the sweep scheduler's metrics:
	// points logged before it existed concern no sweep). Only its creation
	// differs: a durable consumer remembers where it is.
	FromNow bool
	// AckWait is how long a delivery may take before it is redelivered
	// (default 30s).
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one event (default -1: no bound; see
	// Handler).
	MaxDeliver int
	// MaxAckPending bounds events in flight (default 1000).
	MaxAckPending int
	// NakDelay is how long a Nacked event waits for redelivery (default 1s).
	NakDelay time.Duration
	// Handlers is how many events of the consumer this process handles at
	// once (default 1): that many subscribers pull from the one durable
	// consumer, each handling one event at a time. Only for reactions
	// whose events need no order among themselves (webhook matching: each
	// event's outbox rows are its own), so one slow commit does not hold
	// up the others.
	Handlers int
}

// Handler reacts to one event. An error is retried in process with
// backoff, then the event is delivered again after the consumer's
// NakDelay, without bound: an outage of NATS or Postgres must not make a
// reaction skip an event (a lease never watched, a token never revoked).
// Only an error marked Permanent (an event no retry can handle) and a
// panic are poisoned, after the in-process retries, and acknowledged. A
// handler that wants the event again later calls Later and returns nil.
type Handler func(ctx context.Context, e events.Envelope) error

// permanent marks an error no retry can cure.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as one no retry can cure (an undecodable event):
// the event is poisoned instead of delivered again.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// poisoned tells which errors go to the poison queue: permanent ones and
// panics; shutting down is neither.
func poisoned(err error) bool {
	var p permanent
	var panicked middleware.RecoveredPanicError
	return !errors.Is(err, context.Canceled) && (errors.As(err, &p) || errors.As(err, &panicked))
}

type laterKey struct{}

// Later asks, from inside a Handler, for the event to be delivered again
// after the consumer's NakDelay instead of acknowledged: a timer that
// survives restarts, since the event stays unacknowledged on the server.
func Later(ctx context.Context) {
	if m, ok := ctx.Value(laterKey{}).(*message.Message); ok {
		m.Nack()
	}
}

// NewRouter creates the poison stream and a router with the middleware
// every reaction shares: correlation ids carried over, the poison queue
// outside in-process retries with backoff, and panics recovered into
// errors the retries see.
func NewRouter(ctx context.Context, js jetstream.JetStream, cfg Config) (*Router, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: PoisonStream, Description: "Maestro events reactions could not handle",
		Subjects: []string{"maestro.poison.>"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
		Discard: jetstream.DiscardOld, MaxAge: 30 * 24 * time.Hour, MaxBytes: 256 << 20, MaxMsgSize: 2 << 20,
		Replicas: max(cfg.Replicas, 1),
	}); err != nil {
		return nil, events.ExplainReplicasError(PoisonStream, cfg.Replicas, fmt.Errorf("poison stream: %w", err))
	}
	// watermill logs every delivery at Info: Maestro's Info is for
	// operators, so its Info and Debug become Debug.
	wlog := watermill.NewSlogLoggerWithLevelMapping(cfg.Logger.With("component", "reactions"),
		map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	r := &Router{cfg: cfg, wlog: wlog}
	mr, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	pubConn, err := r.connect("maestro-poison")
	if err != nil {
		return nil, err
	}
	pub, err := wmjs.NewPublisher(wmjs.PublisherConfig{Conn: pubConn, Logger: wlog})
	if err != nil {
		return nil, err
	}
	poison, err := middleware.PoisonQueueWithFilter(pub, PoisonSubject, poisoned)
	if err != nil {
		return nil, err
	}
	retry := middleware.Retry{MaxRetries: 5, InitialInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second,
		Multiplier: 2, RandomizationFactor: 0.2, Logger: wlog}
	mr.AddMiddleware(middleware.CorrelationID, poison, retry.Middleware, middleware.Recoverer)
	r.router = mr
	return r, nil
}

func (r *Router) connect(name string) (*nats.Conn, error) {
	nc, err := r.cfg.Connect(name)
	if err != nil {
		return nil, fmt.Errorf("reactions: connect %s: %w", name, err)
	}
	r.mu.Lock()
	r.conns = append(r.conns, nc)
	r.mu.Unlock()
	return nc, nil
}

// Handle adds a reaction on its durable consumer.
func (r *Router) Handle(c Consumer, h Handler) error {
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = -1
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 1000
	}
	if c.NakDelay == 0 {
		c.NakDelay = time.Second
	}
	if c.Stream == "" {
		c.Stream = events.StreamName
	}
	for i := range max(c.Handlers, 1) {
		name := c.Name
		if i > 0 {
			name = fmt.Sprintf("%s-%d", c.Name, i)
		}
		if err := r.handle(c, name, h); err != nil {
			return err
		}
	}
	return nil
}

// handle adds one subscriber of c's durable consumer, as handler name.
func (r *Router) handle(c Consumer, name string, h Handler) error {
	nc, err := r.connect("maestro-reaction-" + name)
	if err != nil {
		return err
	}
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn: nc, Logger: r.wlog,
		// The client gives up on a delivery a little before the server
		// redelivers it.
		AckWaitTimeout: c.AckWait - c.AckWait/10,
		ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, _ string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			// Bind a durable consumer of our own on the existing stream;
			// never create or change the stream (watermill's defaults
			// would make a stream named after the topic).
			deliver := jetstream.DeliverAllPolicy
			if c.FromNow {
				deliver = jetstream.DeliverNewPolicy
			}
			cons, err := js.CreateOrUpdateConsumer(ctx, c.Stream, jetstream.ConsumerConfig{
				Durable: c.Name, FilterSubjects: c.Subjects, AckPolicy: jetstream.AckExplicitPolicy,
				DeliverPolicy: deliver, AckWait: c.AckWait, MaxDeliver: c.MaxDeliver, MaxAckPending: c.MaxAckPending,
			})
			return cons, nil, err // no closer: the durable outlives the process
		},
		// One delivery at a time in the client: a slow handler's next
		// events are not prefetched while their server-side AckWait runs
		// (watermill#609).
		ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(1)},
		NakDelay:       wmjs.NewStaticDelay(c.NakDelay),
		Unmarshaler:    unmarshaler{},
	})
	if err != nil {
		return err
	}
	r.router.AddConsumerHandler(name, c.Name, sub, func(m *message.Message) error {
		e, err := Envelope(m)
		if err != nil {
			return Permanent(err) // no retry makes it readable
		}
		ctx := context.WithValue(m.Context(), laterKey{}, m)
		return h(ctx, e)
	})
	return nil
}

// Run runs the reactions until ctx ends or Close.
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	r.started = true
	r.mu.Unlock()
	return r.router.Run(ctx)
}

// Running is closed once every reaction has started.
func (r *Router) Running() <-chan struct{} { return r.router.Running() }

// Close stops the reactions (waiting for those in flight) and closes
// their connections.
func (r *Router) Close() error {
	r.mu.Lock()
	started := r.started
	r.mu.Unlock()
	var err error
	if started {
		// A router that never ran would wait its CloseTimeout for
		// handlers that never started.
		err = r.router.Close()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, nc := range r.conns {
		nc.Close()
	}
	return err
}

// unmarshaler turns a JetStream message of MAESTRO_EVENTS into a watermill
// message whose metadata holds its headers (the CloudEvents attributes),
// its subject and stream sequence. It never fails: watermill-nats'
// jetstream subscriber dereferences a nil message when an unmarshaler
// errs, so an unreadable event is found (and poisoned) by Envelope.
type unmarshaler struct{}

func (unmarshaler) Unmarshal(m jetstream.Msg) (*message.Message, error) {
	h := m.Headers()
	wm := message.NewMessage(h.Get("ce-id"), m.Data())
	for k, v := range h {
		if len(v) > 0 {
			wm.Metadata.Set(k, v[0])
		}
	}
	wm.Metadata.Set(metaSubject, m.Subject())
	if md, err := m.Metadata(); err == nil {
		wm.Metadata.Set(metaSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	}
	middleware.SetCorrelationID(h.Get("ce-correlationid"), wm)
	return wm, nil
}

// Envelope decodes the event a reaction's message carries.
func Envelope(m *message.Message) (events.Envelope, error) {
	h := nats.Header{}
	for k, v := range m.Metadata {
		if k != metaSubject && k != metaSeq {
			h.Set(k, v)
		}
	}
	seq, _ := strconv.ParseUint(m.Metadata.Get(metaSeq), 10, 64)
	e, err := events.FromHeaders(m.Metadata.Get(metaSubject), h, m.Payload, seq)
	if err != nil {
		return e, fmt.Errorf("reaction: undecodable event at %d: %w", seq, err)
	}
	return e, nil
}

// Meta is the who-and-why of a command a reaction named name takes
// because of event e: the system acts, correlated with e and caused by it,
// with an idempotency key derived from both, so a redelivered event's
// command is dropped as a duplicate (rule 3).
func Meta(name string, e events.Envelope) events.Meta {
	return events.Meta{Actor: events.Actor{Kind: events.ActorSystem, ID: "maestro/" + name}, CorrelationID: e.CorrelationID,
		CausationID: e.ID, IdempotencyKey: "reaction/" + name + "/" + e.ID}
}
