package events

import "strings"

// The redacted copy of the event stream for outside subscribers (the
// published contract's public channels; see PublicCopy and the
// republisher in events/republish.go).
const (
	// PublicStreamName is the stream outside subscribers read.
	PublicStreamName = "MAESTRO_PUBLIC"
	// PublicSubjectPrefix starts every subject of PublicStreamName: the
	// event's own subject with maestro.events. replaced.
	PublicSubjectPrefix = "maestro.public."
	// PublicAllSubjects matches every subject of PublicStreamName.
	PublicAllSubjects = PublicSubjectPrefix + ">"
)

// PublicSubject is the subject of the redacted copy of an event appended on
// subject (an event subject, maestro.events.<aggregate>.<id>).
func PublicSubject(subject string) string {
	return PublicSubjectPrefix + strings.TrimPrefix(subject, SubjectPrefix)
}
