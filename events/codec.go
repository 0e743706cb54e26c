package events

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// CloudEvents binary-mode attributes carried as NATS headers (rule 7), so a
// subscriber in any language reads the envelope without a Maestro library.
const (
	hdrSpecVersion   = "ce-specversion"
	hdrID            = "ce-id"
	hdrSource        = "ce-source"
	hdrType          = "ce-type"
	hdrSubject       = "ce-subject"
	hdrTime          = "ce-time"
	hdrActorKind     = "ce-actorkind"
	hdrActorID       = "ce-actorid"
	hdrCorrelationID = "ce-correlationid"
	hdrCausationID   = "ce-causationid"
	hdrContentType   = "content-type"
	// Source is the CloudEvents source of every Maestro event.
	Source = "maestro"
)

// ToMsg encodes an envelope as a NATS message in CloudEvents binary mode.
func ToMsg(e Envelope) *nats.Msg {
	m := nats.NewMsg(e.Subject)
	h := m.Header
	h.Set(hdrSpecVersion, "1.0")
	h.Set(hdrID, e.ID)
	h.Set(hdrSource, Source)
	h.Set(hdrType, e.Type)
	h.Set(hdrSubject, e.Subject)
	h.Set(hdrTime, e.Time.UTC().Format(time.RFC3339Nano))
	h.Set(hdrActorKind, string(e.Actor.Kind))
	if e.Actor.ID != "" {
		h.Set(hdrActorID, e.Actor.ID)
	}
	h.Set(hdrCorrelationID, e.CorrelationID)
	if e.CausationID != "" {
		h.Set(hdrCausationID, e.CausationID)
	}
	h.Set(hdrContentType, "application/json")
	h.Set(nats.MsgIdHdr, e.ID)
	m.Data = e.Data
	return m
}

// FromHeaders decodes an envelope from CloudEvents headers and JSON data.
func FromHeaders(subject string, h nats.Header, data []byte, seq uint64) (Envelope, error) {
	if h.Get(hdrSpecVersion) != "1.0" || h.Get(hdrSource) != Source {
		return Envelope{}, fmt.Errorf("message %d on %s is not a Maestro CloudEvent", seq, subject)
	}
	t, err := time.Parse(time.RFC3339Nano, h.Get(hdrTime))
	if err != nil {
		return Envelope{}, fmt.Errorf("message %d: bad ce-time: %w", seq, err)
	}
	typ := h.Get(hdrType)
	if !strings.HasPrefix(typ, "maestro.") {
		return Envelope{}, fmt.Errorf("message %d: unknown event type %q", seq, typ)
	}
	return Envelope{
		ID:            h.Get(hdrID),
		Type:          typ,
		Subject:       subject,
		Time:          t,
		Actor:         Actor{Kind: ActorKind(h.Get(hdrActorKind)), ID: h.Get(hdrActorID)},
		CorrelationID: h.Get(hdrCorrelationID),
		CausationID:   h.Get(hdrCausationID),
		Data:          data,
		Sequence:      seq,
	}, nil
}
