package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// IdempotencyBucket is the JetStream KV bucket holding command outcomes by
// Idempotency-Key for 24 hours.
const IdempotencyBucket = "MAESTRO_IDEMPOTENCY"

// IdempotencyMaxBytes bounds the bucket (it shares JetStream storage with
// the event stream, which must never run out of room because of it). When
// it is full, outcomes are not stored: commands still run and answer, and
// retries still get deterministic event ids (review finding 4).
const IdempotencyMaxBytes = 1 << 30

// OpenIdempotency creates or binds the idempotency bucket.
func OpenIdempotency(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       IdempotencyBucket,
		Description:  "Outcomes of commands sent with an Idempotency-Key",
		TTL:          24 * time.Hour,
		Storage:      jetstream.FileStorage,
		Replicas:     max(replicas, 1),
		MaxValueSize: 256 << 10,
		MaxBytes:     IdempotencyMaxBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency bucket: %w", err)
	}
	st, err := js.Stream(ctx, "KV_"+IdempotencyBucket)
	if err != nil {
		return nil, fmt.Errorf("idempotency bucket stream: %w", err)
	}
	return &idempotencyKV{KeyValue: kv, stream: st}, nil
}

// idempotencyKV is the bucket plus its stream, so a released key can leave
// nothing behind: a KV delete keeps a marker message for the bucket's TTL,
// which anonymous refusals could pile up; purging the key's subject does not.
type idempotencyKV struct {
	jetstream.KeyValue
	stream jetstream.Stream
}

func (k *idempotencyKV) release(ctx context.Context, key string) error {
	_, err := events.Attempts(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, k.stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+IdempotencyBucket+"."+key))
	})
	return err
}

// The bucket's calls are bounded and repeated as events.Store bounds and
// repeats its requests to the event stream (events.Attempts): on a NATS
// cluster, a call in flight to a bucket leader that dies is never answered
// and would hold the request for its whole deadline, while the repeat
// reaches the new leader. A write whose first call was stored is
// recognised by its value (a pending claim names its start to the
// nanosecond and the process's boot): the request goes on, rather than
// failing and leaving a pending record its own retry waits out.

// Get is the bucket's Get, bounded and repeated.
func (k *idempotencyKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return events.Attempts(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return k.KeyValue.Get(ctx, key) })
}

// Put is the bucket's Put, bounded and repeated (the same value again).
func (k *idempotencyKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return events.Attempts(ctx, func(ctx context.Context) (uint64, error) { return k.KeyValue.Put(ctx, key, value) })
}

// Create is the bucket's Create, bounded and repeated.
func (k *idempotencyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	return k.write(ctx, key, value, func(ctx context.Context) (uint64, error) { return k.KeyValue.Create(ctx, key, value, opts...) })
}

// Update is the bucket's Update, bounded and repeated.
func (k *idempotencyKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	return k.write(ctx, key, value, func(ctx context.Context) (uint64, error) { return k.KeyValue.Update(ctx, key, value, revision) })
}

// write repeats a conditional write; refused after an unanswered call, it
// succeeds if the key holds value (that call stored it).
func (k *idempotencyKV) write(ctx context.Context, key string, value []byte, op func(context.Context) (uint64, error)) (uint64, error) {
	repeat := false
	return events.Attempts(ctx, func(ctx context.Context) (uint64, error) {
		rev, err := op(ctx)
		if repeat && errors.Is(err, jetstream.ErrKeyExists) {
			if e, gerr := k.KeyValue.Get(ctx, key); gerr == nil && bytes.Equal(e.Value(), value) {
				return e.Revision(), nil
			}
		}
		repeat = true
		return rev, err
	})
}

// releaseKey forgets a key entirely (see idempotencyKV).
func (s *Server) releaseKey(ctx context.Context, key string) error {
	if k, ok := s.deps.Idempotency.(*idempotencyKV); ok {
		return k.release(ctx, key)
	}
	return s.deps.Idempotency.Delete(ctx, key)
}

// idempotencyState is the API instance's side of the bucket.
type idempotencyState struct {
	// boot identifies this process in pending records, so a restarted
	// sole instance knows its dead predecessor's records at once.
	boot string
	// fullLogged makes "bucket full" a single log line per process.
	fullLogged sync.Once
}

func newIdempotencyState() *idempotencyState {
	return &idempotencyState{boot: uuid.NewString()}
}

// idempotencyScope is what the middleware hands to meta() for the events a
// keyed command produces.
type idempotencyScope struct {
	key, fingerprint string
	prior            time.Time // when a dead attempt of the same request started
}

// withIdempotency fills m's idempotency fields from the request context.
func withIdempotency(ctx context.Context, m *events.Meta) {
	if sc, ok := ctx.Value(ctxIdempotency).(idempotencyScope); ok {
		m.IdempotencyKey, m.Fingerprint, m.PriorAttempt = sc.key, sc.fingerprint, sc.prior
	}
}

// idempotencyRecord is what a key maps to: pending while the first request
// runs, then its response.
type idempotencyRecord struct {
	Pending bool      `json:"pending"`
	Started time.Time `json:"started"`
	// Boot is the process running a pending request (see idempotencyState).
	Boot        string            `json:"boot,omitempty"`
	Fingerprint string            `json:"fingerprint"`
	Status      int               `json:"status,omitempty"`
	Header      map[string]string `json:"header,omitempty"`
	Body        []byte            `json:"body,omitempty"`
	// Expires, when set, ends replays before the bucket's 24 h: responses
	// carrying fresh tokens are only worth replaying for a moment, and a
	// stolen old refresh token plus its key must not fetch the new pair later.
	Expires time.Time `json:"expires,omitzero"`
	// Failed marks an attempt that ended in a server error: not an outcome
	// to replay, but its events may be stored, so the retry takes the key
	// over knowing of it (as of a crashed attempt).
	Failed bool `json:"failed,omitempty"`
	// Prior, on a pending or failed record, is when the earliest earlier
	// attempt that ended without an answer started. A takeover carries it
	// on: if the retry dies too, the next one must still look for the
	// first attempt's events, not only for those since the retry started
	// (after JetStream's 2-minute duplicate window they would be decided
	// and stored a second time).
	Prior time.Time `json:"prior,omitzero"`
}

// earliestAttempt is when the first attempt of a pending or failed record's
// request started.
func (rec idempotencyRecord) earliestAttempt() time.Time {
	if !rec.Prior.IsZero() && rec.Prior.Before(rec.Started) {
		return rec.Prior
	}
	return rec.Started
}

// credentialRoutes answer with tokens; their outcomes replay for minutes only.
var credentialRoutes = map[string]bool{"/api/v1/auth/login": true, "/api/v1/auth/refresh": true}

const credentialReplayWindow = 2 * time.Minute

// secretRoutes answer with an API token's secret, which must be stored
// nowhere: their successes are not kept for replays (the key is released),
// and a retry is refused by the decider, whose token id the key derived.
var secretRoutes = map[string]bool{"/api/v1/tokens": true, "/api/v1/service-accounts/{id}/tokens": true}

// sealedSecretRoutes answer with a webhook's signing secret, kept only
// sealed in its events: their successes leave a record without the
// answer, like a failed attempt's, so a retry (at any time in the key's
// 24 h, not only within JetStream's 2-minute duplicate window) takes the
// key over as after a crash and the webhook service answers it from the
// events the first attempt stored, secret unsealed (handlers/webhooks
// Service.Create and Rotate) — a second rotation never happens.
var sealedSecretRoutes = map[string]bool{"/api/v1/projects/{project}/webhooks": true, "/api/v1/webhooks": true,
	"/api/v1/projects/{project}/webhooks/{webhook}:rotate-secret": true, "/api/v1/webhooks/{webhook}:rotate-secret": true}

// replayedHeaders are the response headers a replay reproduces.
var replayedHeaders = []string{"Content-Type", "Maestro-Sequence", "Maestro-Metrics-Sequence", "Preference-Applied", "Maestro-Consistency", "Location", "Retry-After", "WWW-Authenticate"}

const pendingTakeover = 30 * time.Second

func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// idempotent makes a command route honour Idempotency-Key (rule 3): the
// first request's response is stored in a JetStream KV bucket and a retry
// with the same key gets it back instead of a second effect. Keys are scoped
// per principal; an anonymous caller's scope is the request body itself, so
// nobody can fetch another caller's response (e.g. a login's tokens) by
// guessing a key. The key also seeds deterministic event ids, so even a
// retry racing the first request is dropped by JetStream's duplicate window.
func (s *Server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if !validIdempotencyKey(key) {
			writeProblem(w, r, &problemError{code: "invalid-idempotency-key", detail: "use 1 to 255 visible ASCII characters"})
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeProblem(w, r, s.problemFor(r, err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		bodySum := sha256.Sum256(body)
		scope := "anonymous:" + hex.EncodeToString(bodySum[:])
		p, authenticated := principal(r.Context())
		if authenticated {
			// Per session, not per user: a logout replayed from another of the
			// user's sessions must not answer 204 while leaving that one alive.
			scope = "user:" + p.UserID + "/session:" + p.SessionID
			if p.TokenID != "" {
				scope = "user:" + p.UserID + "/token:" + p.TokenID
			}
		}
		route := chi.RouteContext(r.Context()).RoutePattern()
		kvKey := digest(scope, r.Method, route, key)
		fingerprint := digest(r.Method, r.URL.Path, string(body))
		sc := idempotencyScope{key: kvKey, fingerprint: fingerprint}
		if !authenticated && !json.Valid(body) {
			// An anonymous body that is not even JSON can only be refused
			// (400) and records nothing: it costs no bucket write at all.
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxIdempotency, sc)))
			return
		}

		started := time.Now()
		rec, prior, claimed, err := s.claimKey(r.Context(), kvKey, fingerprint, started)
		if err != nil {
			writeProblem(w, r, s.problemFor(r, err))
			return
		}
		if rec != nil { // a replay
			s.m.replays.Inc()
			for k, v := range rec.Header {
				w.Header().Set(k, v)
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(rec.Status)
			_, _ = w.Write(rec.Body)
			return
		}
		sc.prior = prior
		buf := &bufferedResponse{header: w.Header()}
		next.ServeHTTP(buf, r.WithContext(context.WithValue(r.Context(), ctxIdempotency, sc)))
		if buf.status == 0 {
			buf.status = http.StatusOK
		}
		switch {
		case claimed && secretRoutes[route] && buf.status < 300:
			ctx, cancel := context.WithTimeout(context.Background(), outcomeTimeout)
			if err := s.releaseKey(ctx, kvKey); err != nil {
				s.deps.Logger.Error("release idempotency key", "err", err)
			}
			cancel()
		case claimed && sealedSecretRoutes[route] && buf.status < 300:
			s.storeAnswerless(kvKey, fingerprint, started, prior)
		case claimed:
			s.storeOutcome(kvKey, fingerprint, started, prior, credentialRoutes[route], !authenticated, buf)
		}
		w.WriteHeader(buf.status)
		_, _ = w.Write(buf.body.Bytes())
	})
}

func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// claimKey marks the key pending for this request (claimed). It returns
// the stored outcome for a replay; or, when it took over the key of an
// attempt that died (a stale pending record) or failed (a 5xx), the start
// of the earliest such attempt as prior, so the command looks for what any
// of them stored. With the bucket full it runs the request unclaimed:
// nothing is stored, but the command still answers.
func (s *Server) claimKey(ctx context.Context, kvKey, fingerprint string, started time.Time) (replay *idempotencyRecord, prior time.Time, claimed bool, err error) {
	kv := s.deps.Idempotency
	pending, _ := json.Marshal(idempotencyRecord{Pending: true, Started: started, Boot: s.idem.boot, Fingerprint: fingerprint})
	busy := &problemError{code: "request-in-progress", detail: "retry when the first request has finished", retryAfter: time.Second}
	for range 3 {
		_, err := kv.Create(ctx, kvKey, pending)
		if err == nil {
			return nil, time.Time{}, true, nil
		}
		if bucketFull(err) {
			s.noteBucketFull(err)
			return nil, time.Time{}, false, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, time.Time{}, false, fmt.Errorf("claim idempotency key: %w", err)
		}
		entry, err := kv.Get(ctx, kvKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, time.Time{}, false, fmt.Errorf("read idempotency key: %w", err)
		}
		var rec idempotencyRecord
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			return nil, time.Time{}, false, fmt.Errorf("read idempotency key: %w", err)
		}
		if rec.Fingerprint != fingerprint {
			return nil, time.Time{}, false, problem("idempotency-key-reused", "this Idempotency-Key was used with a different request")
		}
		if !rec.Pending && !rec.Failed && (rec.Expires.IsZero() || time.Now().Before(rec.Expires)) {
			return &rec, time.Time{}, false, nil
		}
		if rec.Pending && time.Since(rec.Started) < pendingTakeover && !s.predecessor(rec) {
			return nil, time.Time{}, false, busy
		}
		// The first request died or failed without an outcome, or its
		// replay window closed: take the key over.
		var earliest time.Time
		claim := pending
		if rec.Pending || rec.Failed {
			earliest = rec.earliestAttempt()
			claim, _ = json.Marshal(idempotencyRecord{Pending: true, Started: started, Boot: s.idem.boot, Fingerprint: fingerprint, Prior: earliest})
		}
		_, err = kv.Update(ctx, kvKey, claim, entry.Revision())
		if err == nil {
			return nil, earliest, true, nil
		}
		if bucketFull(err) {
			s.noteBucketFull(err)
			return nil, time.Time{}, false, nil
		}
	}
	return nil, time.Time{}, false, busy
}

// predecessor reports whether a pending record belongs to a process that is
// certainly dead: on a sole instance (`maestro serve` holds the data dir's
// lock, so it is the only API process), any other boot's pending record was
// left by a crash. With several API instances a record can belong to a live
// peer, so only its age (pendingTakeover) frees it. Taking over wrongly
// would still be safe: the two attempts derive the same event ids, and the
// second answers from what the first stored.
func (s *Server) predecessor(rec idempotencyRecord) bool {
	return s.deps.SoleInstance && rec.Boot != "" && rec.Boot != s.idem.boot
}

// bucketFull reports JetStream refusing a write because the bucket reached
// its MaxBytes.
func bucketFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10077 && strings.Contains(apiErr.Description, "maximum bytes")
}

func (s *Server) noteBucketFull(err error) {
	s.idem.fullLogged.Do(func() {
		s.deps.Logger.Warn("idempotency bucket is full: outcomes are not stored until records expire", "bucket", IdempotencyBucket, "max_bytes", IdempotencyMaxBytes, "err", err)
	})
}

// keepOutcome says whether a response below 500 is worth storing for
// replays (storeOutcome marks server errors failed before asking).
// Throttling never is (transient: a retry runs again). An anonymous
// request's answer is kept only if it is a success (2xx) or recorded an event (it carries Maestro-Sequence, e.g. a refused login
// counted as a failure): refusals that recorded nothing (a malformed body,
// a failed check) would otherwise let anyone fill the bucket for free, and a
// retry runs them again at no risk. An authenticated caller's refusals are
// kept: they are scoped to a session that is accountable for them, the
// bucket is bounded, and a key reused for another request after one of them
// still answers 422 rather than silently running the other request.
func keepOutcome(b *bufferedResponse, anonymous bool) bool {
	if b.status == http.StatusTooManyRequests {
		return false
	}
	if !anonymous {
		return true
	}
	return (b.status >= 200 && b.status < 300) || b.header.Get("Maestro-Sequence") != ""
}

// outcomeTimeout bounds recording a request's outcome (or releasing its
// key) after it ran: long enough to outlast a bucket leader's election (the
// calls are repeated, events.Attempts); it delays the answer only then.
const outcomeTimeout = 15 * time.Second

// storeAnswerless leaves the record of an answered request without its
// answer (sealedSecretRoutes): a retry takes the key over and finds the
// stored events, as after a failed attempt.
func (s *Server) storeAnswerless(kvKey, fingerprint string, started, prior time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), outcomeTimeout)
	defer cancel()
	val, _ := json.Marshal(idempotencyRecord{Failed: true, Started: started, Fingerprint: fingerprint, Prior: prior})
	if _, err := s.deps.Idempotency.Put(ctx, kvKey, val); err != nil {
		s.deps.Logger.Error("record idempotency key", "err", err)
	}
}

// storeOutcome keeps the response for replays, or releases the key (see
// keepOutcome) so a retry runs again. A server error leaves a failed record
// instead, which the retry takes over (see idempotencyRecord.Failed).
func (s *Server) storeOutcome(kvKey, fingerprint string, started, prior time.Time, credentials, anonymous bool, b *bufferedResponse) {
	ctx, cancel := context.WithTimeout(context.Background(), outcomeTimeout)
	defer cancel()
	if b.status >= 500 {
		// Its events may be stored (the failure can come after the
		// append), and so may those of an earlier attempt it took over
		// (prior): the retry must look for them, as after a crash.
		val, _ := json.Marshal(idempotencyRecord{Failed: true, Started: started, Fingerprint: fingerprint, Prior: prior})
		if _, err := s.deps.Idempotency.Put(ctx, kvKey, val); err != nil {
			_ = s.releaseKey(ctx, kvKey)
		}
		return
	}
	if !keepOutcome(b, anonymous) {
		if err := s.releaseKey(ctx, kvKey); err != nil {
			s.deps.Logger.Error("release idempotency key", "err", err)
		}
		return
	}
	rec := idempotencyRecord{Fingerprint: fingerprint, Started: time.Now(), Status: b.status,
		Header: map[string]string{}, Body: b.body.Bytes()}
	if credentials {
		rec.Expires = rec.Started.Add(credentialReplayWindow)
	}
	for _, h := range replayedHeaders {
		if v := b.header.Get(h); v != "" {
			rec.Header[h] = v
		}
	}
	val, err := json.Marshal(rec)
	if err == nil {
		_, err = s.deps.Idempotency.Put(ctx, kvKey, val)
	}
	if bucketFull(err) {
		s.noteBucketFull(err)
		_ = s.releaseKey(ctx, kvKey)
		return
	}
	if err != nil {
		s.deps.Logger.Error("store idempotent outcome", "err", err)
	}
}
