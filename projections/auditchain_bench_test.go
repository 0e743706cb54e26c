package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// The per-entry costs of the chain: building an entry from its event (the
// projection's and verify's auditEntry) and its RFC 8785 digest.
func BenchmarkAuditEntryDigest(b *testing.B) {
	id := uuid.NewString()
	e, err := events.New(events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: id}, Time: time.Now()},
		events.Subject(events.AggSession, uuid.NewString()), events.SessionStarted, 0,
		json.RawMessage(`{"session_id":"`+uuid.NewString()+`","user_id":"`+id+`","client_ip":"10.0.0.1","user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}`))
	if err != nil {
		b.Fatal(err)
	}
	e.Sequence = 42
	b.Run("entry", func(b *testing.B) {
		for b.Loop() {
			if _, err := auditEntry(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	c, _ := auditEntry(e)
	b.Run("digest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Digest(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
