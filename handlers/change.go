package handlers

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// Change is one event a decider wants recorded, before it has an envelope.
// Deciders return Changes so they stay pure: no clock, no ids, no I/O.
type Change struct {
	Subject string
	Type    string
	Data    any
}

// MaxEventData bounds an event's encoded data: the stream takes messages of
// up to 1 MiB (events.OpenStore), headers included.
const MaxEventData = 1<<20 - 16<<10

// Build wraps changes in envelopes carrying meta and the expected version
// of each subject (subjects missing from versions are appended unchecked).
func Build(meta events.Meta, versions map[string]uint64, changes ...Change) ([]events.Append, error) {
	if meta.Now != nil {
		// One time for the whole batch, taken now: inside the attempt.
		meta.Time, meta.Now = meta.Now(), nil
	}
	out := make([]events.Append, 0, len(changes))
	seen := map[string]bool{}
	for i, c := range changes {
		if err := events.CheckSubject(c.Type, c.Subject); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
		env, err := events.New(meta, c.Subject, c.Type, i, c.Data)
		if err != nil {
			return nil, err
		}
		if len(env.Data) > MaxEventData {
			// Within every field's limit, a request can still encode larger
			// than the stream takes one message (JSON escaping): refuse it
			// as the client's, not fail on the append.
			return nil, Errorf(Invalid, "validation-failed", "the change is too large: %d bytes encoded, at most %d", len(env.Data), MaxEventData)
		}
		expect, ok := versions[c.Subject]
		if !ok || seen[c.Subject] {
			// Only the first event of a subject in a batch carries the check;
			// the batch is atomic, so the rest cannot interleave.
			expect = events.Any
		}
		seen[c.Subject] = true
		out = append(out, events.Append{Event: env, Expect: expect})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("build: no changes")
	}
	return out, nil
}

// IDFor derives a new aggregate's id from the command's idempotency key and
// request fingerprint when there is a key, so a retried command addresses
// the same aggregate and JetStream's duplicate window drops the copy;
// otherwise a random id. The fingerprint keeps a key reused for another
// request (after its record expired) from addressing the first request's
// aggregate.
func IDFor(meta events.Meta, purpose string) string {
	if meta.IdempotencyKey == "" {
		return uuid.NewString()
	}
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte(purpose+"|"+meta.IdempotencyKey+"|"+meta.Fingerprint)).String()
}
