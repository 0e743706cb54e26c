package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Security signals that belong to no aggregate (failed logins for e-mails
// that have no account) live in their own stream, MAESTRO_SECURITY, with
// limits: anonymous clients produce them, so unlike MAESTRO_EVENTS (history,
// kept for ever, DiscardNew) this stream must not grow without bound, and it
// may forget: its oldest signals are dropped to make room.
const (
	// SecurityStreamName is the bounded stream of security signals.
	SecurityStreamName = "MAESTRO_SECURITY"
	// SecuritySubjectPrefix starts every security-signal subject. It is
	// outside maestro.events.>, so the projections (and the audit trail)
	// do not follow it.
	SecuritySubjectPrefix = "maestro.security."
)

// SecurityConfig bounds the security stream.
type SecurityConfig struct {
	// Replicas as for the event stream (MAESTRO_NATS_REPLICAS; 0 means 1,
	// never lowered on an existing stream).
	Replicas int
	// MaxAge drops signals older than this (default 30 days).
	MaxAge time.Duration
	// MaxMsgsPerSubject keeps the newest signals of one e-mail (default 64,
	// more than the 15 failures after which the login back-off stops
	// growing, so the lock state folded from them is exact).
	MaxMsgsPerSubject int64
	// MaxBytes bounds the whole stream (default 256 MiB); the oldest
	// signals go first.
	MaxBytes int64
}

// DefaultSecurityConfig is what the platform opens the stream with.
func DefaultSecurityConfig() SecurityConfig {
	return SecurityConfig{MaxAge: 30 * 24 * time.Hour, MaxMsgsPerSubject: 64, MaxBytes: 256 << 20}
}

// LoginRejectionsSubject holds the rejected logins of one e-mail that has no
// account (its normalised form, or the trimmed lower-cased input when it is
// not an address). Hashed: a valid token, and no PII in subject names.
func LoginRejectionsSubject(email string) string {
	sum := sha256.Sum256([]byte(email))
	return SecuritySubjectPrefix + "logins." + hex.EncodeToString(sum[:])
}

// OpenSecurityStore creates or updates MAESTRO_SECURITY and returns a store
// on it: the same append (with expected last subject sequence) and load as
// the event store, over a stream with limits.
func OpenSecurityStore(ctx context.Context, nc *nats.Conn, cfg SecurityConfig) (*Store, error) {
	def := DefaultSecurityConfig()
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = def.MaxAge
	}
	if cfg.MaxMsgsPerSubject <= 0 {
		cfg.MaxMsgsPerSubject = def.MaxMsgsPerSubject
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = def.MaxBytes
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	return openStream(ctx, nc, jetstream.StreamConfig{
		Name:              SecurityStreamName,
		Description:       "Maestro security signals with no aggregate (rejected logins for unknown e-mails); bounded",
		Subjects:          []string{SecuritySubjectPrefix + ">"},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld, // forget the oldest signals, never refuse a new one
		MaxAge:            cfg.MaxAge,
		MaxMsgsPerSubject: cfg.MaxMsgsPerSubject,
		MaxBytes:          cfg.MaxBytes,
		MaxMsgSize:        4 << 10,
		Duplicates:        2 * time.Minute,
		AllowDirect:       true,
	}, cfg.Replicas, nil)
}
