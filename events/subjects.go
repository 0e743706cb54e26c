package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Stream and subject layout. Every aggregate has its own subject so that
// optimistic concurrency (expected last subject sequence) is per aggregate.
const (
	// StreamName is the one stream holding every Maestro event.
	StreamName = "MAESTRO_EVENTS"
	// SubjectPrefix starts every event subject.
	SubjectPrefix = "maestro.events."
	// AllSubjects matches every event subject.
	AllSubjects = SubjectPrefix + ">"
)

// Aggregate types, the second token of a subject.
const (
	AggUser     = "user"
	AggSession  = "session"
	AggEmail    = "email"    // reservation subjects for unique e-mail addresses
	AggSecurity = "security" // security signals with no aggregate of their own
	AggSystem   = "system"   // markers of one-time platform actions (the bootstrap admin)
)

// Subject is the subject of one aggregate instance. id must be a single
// subject token (no dots, wildcards or whitespace); uuids and hex digests are.
func Subject(aggregate, id string) string {
	return SubjectPrefix + aggregate + "." + id
}

// ValidToken reports whether s can be one token of a NATS subject.
func ValidToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	return !strings.ContainsAny(s, ".*> \t\r\n")
}

// ReservationSubject is the subject that reserves a unique value (rule 2:
// cross-aggregate uniqueness is an append with expected sequence 0). The value
// is hashed so it is always a valid token and no PII sits in a subject name.
func ReservationSubject(kind, value string) string {
	sum := sha256.Sum256([]byte(value))
	return Subject(kind, hex.EncodeToString(sum[:]))
}

// AggregateOf splits an event subject into aggregate type and id.
func AggregateOf(subject string) (aggregate, id string) {
	rest := strings.TrimPrefix(subject, SubjectPrefix)
	aggregate, id, _ = strings.Cut(rest, ".")
	return aggregate, id
}
