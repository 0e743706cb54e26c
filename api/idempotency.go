package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// IdempotencyBucket is the JetStream KV bucket holding command outcomes by
// Idempotency-Key for 24 hours.
const IdempotencyBucket = "MAESTRO_IDEMPOTENCY"

// OpenIdempotency creates or binds the idempotency bucket.
func OpenIdempotency(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       IdempotencyBucket,
		Description:  "Outcomes of commands sent with an Idempotency-Key",
		TTL:          24 * time.Hour,
		Storage:      jetstream.FileStorage,
		Replicas:     max(replicas, 1),
		MaxValueSize: 256 << 10,
	})
}

// idempotencyRecord is what a key maps to: pending while the first request
// runs, then its response.
type idempotencyRecord struct {
	Pending     bool              `json:"pending"`
	Started     time.Time         `json:"started"`
	Fingerprint string            `json:"fingerprint"`
	Status      int               `json:"status,omitempty"`
	Header      map[string]string `json:"header,omitempty"`
	Body        []byte            `json:"body,omitempty"`
	// Expires, when set, ends replays before the bucket's 24 h: responses
	// carrying fresh tokens are only worth replaying for a moment, and a
	// stolen old refresh token plus its key must not fetch the new pair later.
	Expires time.Time `json:"expires,omitzero"`
}

// credentialRoutes answer with tokens; their outcomes replay for minutes only.
var credentialRoutes = map[string]bool{"/api/v1/auth/login": true, "/api/v1/auth/refresh": true}

const credentialReplayWindow = 2 * time.Minute

// replayedHeaders are the response headers a replay reproduces.
var replayedHeaders = []string{"Content-Type", "Maestro-Sequence", "Preference-Applied", "Maestro-Consistency", "Location", "Retry-After", "WWW-Authenticate"}

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
			pe, _ := toProblem(err)
			writeProblem(w, r, pe)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		bodySum := sha256.Sum256(body)
		scope := "anonymous:" + hex.EncodeToString(bodySum[:])
		if p, ok := principal(r.Context()); ok {
			// Per session, not per user: a logout replayed from another of the
			// user's sessions must not answer 204 while leaving that one alive.
			scope = "user:" + p.UserID + "/session:" + p.SessionID
		}
		route := chi.RouteContext(r.Context()).RoutePattern()
		kvKey := digest(scope, r.Method, route, key)
		fingerprint := digest(r.Method, r.URL.Path, string(body))

		rec, err := s.claimKey(r.Context(), kvKey, fingerprint)
		if err != nil {
			pe, _ := toProblem(err)
			writeProblem(w, r, pe)
			return
		}
		if rec != nil { // a replay
			for k, v := range rec.Header {
				w.Header().Set(k, v)
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(rec.Status)
			_, _ = w.Write(rec.Body)
			return
		}
		buf := &bufferedResponse{header: w.Header()}
		ctx := context.WithValue(r.Context(), ctxIdempotency, kvKey)
		next.ServeHTTP(buf, r.WithContext(ctx))
		if buf.status == 0 {
			buf.status = http.StatusOK
		}
		s.storeOutcome(kvKey, fingerprint, credentialRoutes[route], buf)
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

// claimKey returns the stored outcome for a replay, or nil after marking the
// key pending for this request.
func (s *Server) claimKey(ctx context.Context, kvKey, fingerprint string) (*idempotencyRecord, error) {
	kv := s.deps.Idempotency
	pending, _ := json.Marshal(idempotencyRecord{Pending: true, Started: time.Now(), Fingerprint: fingerprint})
	for range 3 {
		if _, err := kv.Create(ctx, kvKey, pending); err == nil {
			return nil, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, err
		}
		entry, err := kv.Get(ctx, kvKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var rec idempotencyRecord
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			return nil, err
		}
		if rec.Fingerprint != fingerprint {
			return nil, problem("idempotency-key-reused", "this Idempotency-Key was used with a different request")
		}
		if !rec.Pending && (rec.Expires.IsZero() || time.Now().Before(rec.Expires)) {
			return &rec, nil
		}
		if rec.Pending && time.Since(rec.Started) < pendingTakeover {
			return nil, &problemError{code: "request-in-progress", detail: "retry when the first request has finished", retryAfter: time.Second}
		}
		// The first request died without an outcome, or its replay window
		// closed: take the key over.
		if _, err := kv.Update(ctx, kvKey, pending, entry.Revision()); err == nil {
			return nil, nil
		}
	}
	return nil, &problemError{code: "request-in-progress", detail: "retry when the first request has finished", retryAfter: time.Second}
}

// storeOutcome keeps the response for replays. Server errors and throttling
// are transient: the key is released so a retry runs again.
func (s *Server) storeOutcome(kvKey, fingerprint string, credentials bool, b *bufferedResponse) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if b.status >= 500 || b.status == http.StatusTooManyRequests {
		_ = s.deps.Idempotency.Delete(ctx, kvKey)
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
	if err != nil {
		s.deps.Logger.Error("store idempotent outcome", "err", err)
	}
}
