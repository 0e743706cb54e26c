// Package events is Maestro's event backbone: the envelope every change is
// recorded in, the catalogue of event types, the NATS subjects they live on,
// and the JetStream event store that appends and loads them.
package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// ActorKind says what sort of principal caused an event.
type ActorKind string

// Actor kinds.
const (
	ActorUser      ActorKind = "user"
	ActorService   ActorKind = "service"
	ActorSystem    ActorKind = "system"
	ActorAnonymous ActorKind = "anonymous"
)

// Actor names who caused an event (rule 7: every event names who and why).
type Actor struct {
	Kind ActorKind `json:"kind"`
	ID   string    `json:"id,omitempty"`
}

// String renders the actor as kind:id, the form the audit trail filters on.
func (a Actor) String() string {
	if a.ID == "" {
		return string(a.Kind)
	}
	return string(a.Kind) + ":" + a.ID
}

// SystemActor is the actor for changes Maestro makes on its own behalf.
var SystemActor = Actor{Kind: ActorSystem, ID: "maestro"}

// Envelope is one immutable event as stored on the stream.
type Envelope struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Subject       string          `json:"subject"` // NATS subject of the aggregate
	Time          time.Time       `json:"time"`
	Actor         Actor           `json:"actor"`
	CorrelationID string          `json:"correlation_id"`
	CausationID   string          `json:"causation_id,omitempty"`
	Data          json.RawMessage `json:"data"`
	// Sequence is the stream sequence; zero until the event is stored.
	Sequence uint64 `json:"sequence"`
}

// Decode unmarshals the event's data into v.
func (e Envelope) Decode(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decode %s data (seq %d): %w", e.Type, e.Sequence, err)
	}
	return nil
}

// Meta is what a command carries into every event it produces: who, when,
// and which request or event caused it.
type Meta struct {
	Actor         Actor
	CorrelationID string
	CausationID   string
	Time          time.Time
	// Now, when set, stamps the events when they are built, which handlers
	// do inside the aggregate's lock and the attempt that appends them: so
	// within one process the events of an aggregate are in time order as
	// well as stream order (a Time taken before the lock could be older
	// than an event appended while this command waited). It overrides Time.
	Now func() time.Time
	// IdempotencyKey, when set, makes event ids deterministic so a retried
	// command produces the same Nats-Msg-Id and JetStream drops the copy.
	IdempotencyKey string
	// Fingerprint is the hash of the request (method, path, body) that
	// carried IdempotencyKey. Derived ids include it, so a key reused for a
	// different request (after its record expired) never addresses the
	// first request's events or aggregates.
	Fingerprint string
	// PriorAttempt, when set, is when an earlier attempt of this very
	// command (same key and request) started and died without an answer
	// (a crash). Its events may be stored: handlers look for them (by their
	// derived ids, on events stored since then) before deciding again.
	PriorAttempt time.Time
}

// Derived reports whether event ids of m are derived from an idempotency key.
func (m Meta) Derived() bool { return m.IdempotencyKey != "" }

// DerivedID is the deterministic id of the index-th event, on subject, of
// the command m describes ("" when m has no idempotency key).
func DerivedID(m Meta, subject string, index int) string {
	if m.IdempotencyKey == "" {
		return ""
	}
	return uuid.NewSHA1(idNamespace, fmt.Appendf(nil, "%s|%s|%s|%d", m.IdempotencyKey, m.Fingerprint, subject, index)).String()
}

// idNamespace scopes deterministic event ids derived from idempotency keys.
var idNamespace = uuid.MustParse("6f1d2c4e-3a5b-4c7d-9e8f-0a1b2c3d4e5f")

// jsonAppender is event data that encodes itself, to exactly the bytes
// json.Marshal would produce, without reflection and without
// encoding/json's pass over a Marshaler's output (metric points: 10,000 a
// request).
type jsonAppender interface {
	AppendJSON(b []byte) []byte
}

// New builds an envelope for an event of type typ with data on subject.
// index distinguishes events of one command when ids are deterministic.
func New(m Meta, subject, typ string, index int, data any) (Envelope, error) {
	var raw []byte
	if a, ok := data.(jsonAppender); ok {
		raw = a.AppendJSON(nil)
	} else {
		var err error
		if raw, err = json.Marshal(data); err != nil {
			return Envelope{}, fmt.Errorf("encode %s: %w", typ, err)
		}
	}
	id := DerivedID(m, subject, index)
	if id == "" {
		id = uuid.NewString()
	}
	t := m.Time
	if m.Now != nil {
		t = m.Now()
	}
	if t.IsZero() {
		t = time.Now()
	}
	corr := m.CorrelationID
	if corr == "" {
		corr = id
	}
	return Envelope{
		ID: id, Type: typ, Subject: subject, Time: t.UTC(), Actor: m.Actor,
		CorrelationID: corr, CausationID: m.CausationID, Data: raw,
	}, nil
}
