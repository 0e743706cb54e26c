package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrConflict means the aggregate changed since it was read: the append's
// expected last subject sequence did not hold (JetStream 10071, or 10164 on
// replicated streams). Callers reload and decide again.
var ErrConflict = errors.New("events: aggregate changed concurrently")

// ErrDuplicate means JetStream dropped the append as a copy of an earlier
// message with the same Nats-Msg-Id.
var ErrDuplicate = errors.New("events: duplicate message id")

// Any disables the optimistic concurrency check of one append.
const Any = ^uint64(0)

// Append is one event to store plus the version its aggregate must have.
type Append struct {
	Event Envelope
	// Expect is the last sequence of Event.Subject the decision was based on
	// (0 = the subject must be empty), or Any.
	Expect uint64
	// ExpectSubject, when set, makes Expect apply to this subject instead of
	// Event.Subject (Nats-Expected-Last-Subject-Sequence-Subject): an event
	// decided on another aggregate's version, such as a login's session
	// start on the user's, fails if that aggregate changed.
	ExpectSubject string
}

// StoreConfig tunes the stream.
type StoreConfig struct {
	// Replicas is MAESTRO_NATS_REPLICAS: 1 for the embedded node, 3 on a
	// cluster (0 means 1). An existing stream keeps more replicas than this
	// and refuses to open with fewer (see decideReplicas).
	Replicas int
	// Logger notes a stream kept at more replicas than configured; may be nil.
	Logger *slog.Logger
}

// Store appends and loads events on one stream: MAESTRO_EVENTS (OpenStore)
// or the bounded MAESTRO_SECURITY (OpenSecurityStore).
type Store struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	// observe, when set (ObserveAppends), sees every append.
	observe func(took time.Duration, err error)
}

// ObserveAppends has f called after every append with its duration and
// outcome (ErrConflict for a refused expected version). The platform sets
// it to feed Prometheus, which keeps this package free of it. Call it
// before the store is used: it is not synchronised with appends.
func (s *Store) ObserveAppends(f func(took time.Duration, err error)) { s.observe = f }

// OpenStore creates or updates the events stream and returns a store on it.
func OpenStore(ctx context.Context, nc *nats.Conn, cfg StoreConfig) (*Store, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	return openStream(ctx, nc, jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Maestro event store: every change, immutable, in order",
		Subjects:    []string{AllSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew, // never drop history to make room
		MaxAge:      0,
		MaxMsgSize:  1 << 20,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
		DenyDelete:  true,
		DenyPurge:   true,
		// Atomic batches let one command append to several aggregates at
		// once (e.g. an e-mail reservation and the user it belongs to).
		AllowAtomicPublish: true,
	}, cfg.Replicas, cfg.Logger)
}

// openStream creates or updates the stream scfg describes, with the replicas
// StreamReplicas gives it for configured, and returns a store on it: every
// stream a Store works on is opened this one way.
func openStream(ctx context.Context, nc *nats.Conn, scfg jetstream.StreamConfig, configured int, logger *slog.Logger) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	replicas, err := StreamReplicas(ctx, js, scfg.Name, configured)
	if err != nil {
		return nil, err
	}
	if replicas != configured && logger != nil {
		logger.Info("keeping the stream's replicas above MAESTRO_NATS_REPLICAS (never lowered)",
			"stream", scfg.Name, "replicas", replicas, "configured", configured)
	}
	scfg.Replicas = replicas
	if replicas > 1 {
		// A direct get may be answered by any replica, including a
		// follower that has not applied the latest append yet: a command
		// that appends and reads back (a login reading its new session)
		// would then see nothing. Gets through the leader are consistent.
		scfg.AllowDirect = false
	}
	stream, err := js.CreateOrUpdateStream(ctx, scfg)
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", scfg.Name, ExplainReplicasError(scfg.Name, replicas, err))
	}
	return &Store{nc: nc, js: js, stream: stream}, nil
}

// streamName is the name of the stream this store works on.
func (s *Store) streamName() string { return s.stream.CachedInfo().Config.Name }

// JetStream exposes the JetStream context for consumers and KV buckets.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Conn is the NATS connection the store uses.
func (s *Store) Conn() *nats.Conn { return s.nc }

// LastSequence is the stream's last sequence (0 when empty).
func (s *Store) LastSequence(ctx context.Context) (uint64, error) {
	info, err := Attempts(ctx, func(ctx context.Context) (*jetstream.StreamInfo, error) { return s.stream.Info(ctx) })
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// NextOn is the sequence of the first event at or after seq whose subject
// matches filter (wildcards allowed), or 0 when there is none (yet). It asks
// the stream's leader ($JS.API.STREAM.MSG.GET), never a direct get: on a
// replicated stream any replica may answer those, one that lags included,
// and a caller that took LastSequence (the leader's) first must not be told
// that an event up to it does not exist.
func (s *Store) NextOn(ctx context.Context, seq uint64, filter string) (uint64, error) {
	req, err := json.Marshal(struct {
		Seq  uint64 `json:"seq"`
		Next string `json:"next_by_subj"`
	}{seq, filter})
	if err != nil {
		return 0, err
	}
	type answer struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	resp, err := Attempts(ctx, func(ctx context.Context) (answer, error) {
		var resp answer
		m, err := s.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.streamName(), req)
		if err != nil {
			return resp, err
		}
		if err := json.Unmarshal(m.Data, &resp); err != nil {
			return resp, err
		}
		if resp.Error != nil && Transient(resp.Error) { // (a leader being elected answers in the body)
			return resp, resp.Error
		}
		return resp, nil
	})
	if err != nil {
		return 0, fmt.Errorf("next event on %s from %d: %w", filter, seq, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return 0, nil
	case resp.Error != nil:
		return 0, fmt.Errorf("next event on %s from %d: %w", filter, seq, resp.Error)
	case resp.Message == nil:
		return 0, fmt.Errorf("next event on %s from %d: empty answer", filter, seq)
	}
	return resp.Message.Seq, nil
}

// Append stores events atomically: one event is a plain publish, several are
// one JetStream atomic batch, so either every event is stored or none is.
// It returns the stream sequence of the last event.
//
// When JetStream drops the append as a duplicate (a retried command whose
// derived ids are stored already), the error is a *DuplicateError holding
// the events actually stored under those ids, and the sequence is the last
// of them: the caller must answer from them, since what it appended now was
// decided again and may differ.
func (s *Store) Append(ctx context.Context, batch ...Append) (uint64, error) {
	start := time.Now()
	seq, err := s.appendBatch(ctx, batch)
	if s.observe != nil {
		s.observe(time.Since(start), err)
	}
	// What the command stored: the batch, or for a duplicate the earlier
	// attempt's events (what was decided again may differ).
	switch stored := StoredDuplicate(err); {
	case stored != nil:
		for _, e := range stored {
			note(ctx, e.Type)
		}
	case err == nil:
		for _, a := range batch {
			note(ctx, a.Event.Type)
		}
	}
	return seq, err
}

// attemptTimeout bounds one request to the stream. A stream leader that
// dies with a request in flight never answers it: unbounded, the request
// waits out its caller's whole deadline (a command's 30 s). While the new
// leader is elected (a Raft election timeout of 4–9 s in nats-server) the
// followers hold the request subject's interest but do not answer, so
// attempts time out until there is a leader; the attempt after the
// election gets the answer. A shorter bound finds the new leader sooner
// (5 s attempts: recovery 5–12 s in chaos scenario 4), at the price of
// repeats under a load so heavy an answer takes longer, which the stream
// deduplicates.
const attemptTimeout = 2 * time.Second

// Attempts runs op, each call bounded by attemptTimeout, again while ctx
// lasts and the failure is one a new stream leader will answer (see
// Transient), waiting longer between attempts each time (250 ms doubling to
// 2 s: a leader that is slow, not gone, is not flooded with repeats). A ctx
// without a deadline gets one of noDeadlineBound, as the jetstream package
// bounds such calls. Run out of time after a transient failure, it returns
// ctx's error (wrapping the last attempt's): the caller answers "try again",
// never the last attempt's own refusal. The caller makes op safe to repeat:
// reads are; an append is only on a replicated stream (Store.replicated).
func Attempts[T any](ctx context.Context, op func(context.Context) (T, error)) (T, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, noDeadlineBound)
		defer cancel()
	}
	wait := 250 * time.Millisecond // JetStream's own wait between publish attempts
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := op(actx)
		cancel()
		if err == nil || !Transient(err) {
			return v, err
		}
		if ctx.Err() != nil {
			return v, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// noDeadlineBound is how long Attempts keeps trying for a caller whose
// context has no deadline.
const noDeadlineBound = 10 * time.Second

// Transient reports whether err is a stream that did not answer (yet): an
// attempt's own deadline, no responders while a leader is elected, or
// JetStream saying so — 10008 "temporarily unavailable", 10163 "expected
// last sequence per subject temporarily unavailable" (a new leader), 10158
// "duplicate message id is in process" (the earlier attempt's append is in
// flight; the next attempt learns its sequence). Not every 503: 10077 is a
// store that refused the write (a full bucket), which a repeat would not
// change.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10008, 10163, 10158:
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

func (s *Store) appendBatch(ctx context.Context, batch []Append) (uint64, error) {
	switch len(batch) {
	case 0:
		return 0, errors.New("events: empty append")
	case 1:
		seq, err := s.publishOne(ctx, batch[0])
		if errors.Is(err, ErrDuplicate) {
			dup, lerr := s.storedOne(ctx, batch[0], seq)
			if lerr != nil {
				return 0, lerr
			}
			return seq, dup
		}
		return seq, err
	default:
		seq, err := s.publishBatch(ctx, batch)
		if errors.Is(err, ErrDuplicate) {
			// An atomic batch's refusal names no sequence: find the stored
			// events by the batch's ids, not by "the subject's last event",
			// which may be a later command's.
			dup, lerr := s.locateDuplicate(ctx, batch)
			if lerr != nil {
				return 0, lerr
			}
			return dup.Stored[len(dup.Stored)-1].Sequence, dup
		}
		return seq, err
	}
}

func message(a Append) *nats.Msg {
	m := ToMsg(a.Event)
	if a.Expect != Any {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(a.Expect, 10))
		if a.ExpectSubject != "" {
			m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, a.ExpectSubject)
		}
	}
	return m
}

func (s *Store) publishOne(ctx context.Context, a Append) (uint64, error) {
	m := message(a)
	publish := func(ctx context.Context) (*jetstream.PubAck, error) { return s.js.PublishMsg(ctx, m) }
	var ack *jetstream.PubAck
	var err error
	if s.replicated() {
		ack, err = Attempts(ctx, publish)
	} else {
		ack, err = publish(ctx)
	}
	if err != nil {
		return 0, classify(a.Event, err)
	}
	if ack.Duplicate {
		return ack.Sequence, ErrDuplicate
	}
	return ack.Sequence, nil
}

type batchAck struct {
	Seq   uint64 `json:"seq"`
	Count int    `json:"count"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     uint16 `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// publishBatch implements the atomic batch protocol of nats-server 2.12+
// (ADR-50) with request/reply per message, since nats.go has no API for it.
// A repeated attempt is a new batch of the same messages (Nats-Msg-Id): one
// whose first attempt was stored is refused as a duplicate (10201).
func (s *Store) publishBatch(ctx context.Context, batch []Append) (uint64, error) {
	if !s.replicated() {
		return s.publishBatchOnce(ctx, batch)
	}
	return Attempts(ctx, func(ctx context.Context) (uint64, error) { return s.publishBatchOnce(ctx, batch) })
}

// replicated reports whether the stream has several replicas, where an
// append may be repeated (Attempts). A replicated stream checks a
// message's Nats-Msg-Id before its expected sequence, so the repeat of an
// append that was stored is answered as a duplicate; a single-replica one
// checks the expected sequence first and would answer a conflict — and a
// command without derived ids would decide again and append twice. A
// single node's leader never changes either: its appends wait for their
// answer (the caller's deadline) as they always did.
func (s *Store) replicated() bool { return s.stream.CachedInfo().Config.Replicas > 1 }

func (s *Store) publishBatchOnce(ctx context.Context, batch []Append) (uint64, error) {
	id := uuid.NewString()
	for i, a := range batch {
		m := message(a)
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		last := i == len(batch)-1
		if last {
			m.Header.Set("Nats-Batch-Commit", "1")
		}
		if !last && i > 0 {
			if err := s.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("publish batch message %d: %w", i+1, err)
			}
			continue
		}
		reply, err := s.nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return 0, fmt.Errorf("publish batch message %d: %w", i+1, err)
		}
		if !last && len(reply.Data) == 0 {
			continue
		}
		var ack batchAck
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return 0, fmt.Errorf("batch ack: %w", err)
		}
		if ack.Error != nil {
			apiErr := &jetstream.APIError{Code: ack.Error.Code, ErrorCode: jetstream.ErrorCode(ack.Error.ErrCode), Description: ack.Error.Description}
			return 0, classify(a.Event, apiErr)
		}
		if last {
			return ack.Seq, nil
		}
	}
	return 0, errors.New("events: batch ended without commit ack")
}

func classify(e Envelope, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return fmt.Errorf("append %s to %s: %w", e.Type, e.Subject, ErrConflict)
		case 10201: // atomic batch contains a duplicate message id
			return fmt.Errorf("append %s to %s: %w", e.Type, e.Subject, ErrDuplicate)
		}
	}
	return fmt.Errorf("append %s to %s: %w", e.Type, e.Subject, err)
}

// Load returns the events of one subject stored after sequence after, and
// the subject's last sequence (its version; 0 when it has no events).
func (s *Store) Load(ctx context.Context, subject string, after uint64) ([]Envelope, uint64, error) {
	last, err := Attempts(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return s.stream.GetLastMsgForSubject(ctx, subject)
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load %s: %w", subject, err)
	}
	if last.Sequence <= after {
		return nil, last.Sequence, nil
	}
	var out []Envelope
	for seq := after + 1; ; {
		raw, err := Attempts(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
			return s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		})
		if err != nil {
			return nil, 0, fmt.Errorf("load %s from %d: %w", subject, seq, err)
		}
		env, err := FromHeaders(raw.Subject, raw.Header, raw.Data, raw.Sequence)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, env)
		if raw.Sequence >= last.Sequence {
			return out, raw.Sequence, nil
		}
		seq = raw.Sequence + 1
	}
}

// Get returns the event at one stream sequence.
func (s *Store) Get(ctx context.Context, seq uint64) (Envelope, error) {
	raw, err := Attempts(ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) { return s.stream.GetMsg(ctx, seq) })
	if err != nil {
		return Envelope{}, fmt.Errorf("get %d: %w", seq, err)
	}
	return FromHeaders(raw.Subject, raw.Header, raw.Data, raw.Sequence)
}

// Follow delivers every event with sequence > after whose subject matches
// one of filter (every event when filter is empty), in stream order, to the
// returned ordered consumer. Ordered consumers are ephemeral and recreate
// themselves on gaps; the checkpoint the caller keeps is the durable part.
func (s *Store) Follow(ctx context.Context, after uint64, filter []string) (jetstream.Consumer, error) {
	// No filter: every subject of this store's stream (MAESTRO_EVENTS, or
	// MAESTRO_METRICS for the metrics projection).
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filter}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	c, err := s.js.OrderedConsumer(ctx, s.streamName(), cfg)
	if err != nil {
		return nil, fmt.Errorf("follow from %d: %w", after, err)
	}
	return c, nil
}
