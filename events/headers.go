package events

import "github.com/nats-io/nats.go"

// Header is one NATS header of an event message, as the published contract
// (events/contract) documents it. The list is next to the codec so the
// document cannot drift from what ToMsg sends (TestHeadersAreWhatToMsgSends).
type Header struct {
	Name string
	// Required headers are on every event; the others only when the
	// envelope has the value (an actor id, a causation id).
	Required bool
	// Const is the one value the header ever has ("" = varies).
	Const string
	// Enum lists the values it may have (nil = any).
	Enum []string
	// Format is a JSON Schema format ("date-time"), "" for none.
	Format      string
	Description string
}

// Headers is every header ToMsg sets, in CloudEvents binary mode.
func Headers() []Header {
	return []Header{
		{Name: hdrSpecVersion, Required: true, Const: "1.0", Description: "CloudEvents specification version."},
		{Name: hdrID, Required: true, Description: "Event id (a UUID), unique per event: de-duplicate on it."},
		{Name: hdrSource, Required: true, Const: Source, Description: "CloudEvents source: always maestro."},
		{Name: hdrType, Required: true, Description: "Event type, e.g. maestro.model.created.v1; it selects the payload schema."},
		{Name: hdrSubject, Required: true, Description: "The aggregate's subject in MAESTRO_EVENTS (maestro.events.<aggregate>.<id>), also on the redacted copies in maestro.public.>."},
		{Name: hdrTime, Required: true, Format: "date-time", Description: "When the event happened (RFC 3339, UTC, nanoseconds)."},
		{Name: hdrActorKind, Required: true, Enum: []string{string(ActorUser), string(ActorService), string(ActorSystem), string(ActorAnonymous)},
			Description: "Maestro extension: what kind of principal caused the event."},
		{Name: hdrActorID, Description: "Maestro extension: the id of the principal (a user id, or maestro for the system); absent for anonymous actors."},
		{Name: hdrCorrelationID, Required: true, Description: "Maestro extension: the request (or first event) every event of one command and its consequences share."},
		{Name: hdrCausationID, Description: "Maestro extension: the id of the event that caused this one, when a reaction did."},
		{Name: hdrContentType, Required: true, Const: "application/json", Description: "The payload (the event data) is JSON."},
		{Name: nats.MsgIdHdr, Required: true, Description: "JetStream de-duplication id: the event id again."},
	}
}
