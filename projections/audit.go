package projections

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/events"
)

// Audit records every event as an audit entry, with secrets redacted.
type Audit struct{}

// Name implements Projection.
func (Audit) Name() string { return "audit" }

// Tables implements Projection.
func (Audit) Tables() []string { return []string{"audit_entries"} }

// Aggregates implements Projection: it reads every subject.
func (Audit) Aggregates() []string { return nil }

// Linger implements Lingering: no command waits for the audit trail, so
// its runner gathers up to 10 ms of events per transaction (a reader of the
// trail waits that much longer, at most, for a Maestro-Min-Sequence).
func (Audit) Linger() time.Duration { return 10 * time.Millisecond }

// Handles implements Projection: every event is audited.
func (Audit) Handles(string) bool { return true }

// Queue implements Projection: one INSERT of the whole batch from arrays
// (unnest), so a rebuild writes hundreds of entries per statement.
// Duplicates cannot occur because the runner skips events at or below the
// checkpoint. The entries' hashes are folded by audit_chain (migration
// 00017) from their digests, computed here, and the hash of the entry
// stored before the batch, read by the statement itself in the batch's
// transaction: Queue only queues.
func (Audit) Queue(b *Batch, evs []events.Envelope) error {
	if len(evs) == 0 {
		return nil
	}
	n := len(evs)
	seq := make([]int64, n)
	times := make([]time.Time, n)
	digests := make([][]byte, n)
	cols := make([][]string, 9) // event_id, type, actor, subject, project_id, correlation_id, causation_id, summary, data
	for i := range cols {
		cols[i] = make([]string, n)
	}
	// Building and digesting an entry is the audit runner's CPU on a
	// rebuild's critical path (about 25 µs an event): a large batch is
	// split over the processors. Each index is written by one goroutine.
	errs := make([]error, n)
	build := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			e := evs[i]
			c, err := auditEntry(e)
			if err != nil {
				errs[i] = err
				continue
			}
			if digests[i], err = c.Digest(); err != nil {
				errs[i] = fmt.Errorf("%w: %w", ErrUndecodable, err)
				continue
			}
			// As the canonical form has it (pgx would truncate alike).
			seq[i], times[i] = int64(e.Sequence), e.Time.Truncate(time.Microsecond)
			for j, v := range []string{c.EventID, c.Type, c.Actor, c.Subject, c.ProjectID, c.CorrelationID, c.CausationID, c.Summary, string(c.Data)} {
				cols[j][i] = v
			}
		}
	}
	if workers := min(runtime.GOMAXPROCS(0), n/128); workers > 1 {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() { build(w*n/workers, (w+1)*n/workers) })
		}
		wg.Wait()
	} else {
		build(0, n)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	b.Queue(`INSERT INTO audit_entries (seq, event_id, time, type, actor, subject, project_id, correlation_id, causation_id, summary, data, hash)
		SELECT s, id, t, ty, a, su, p, c, ca, sm, d::jsonb, h
		FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
			audit_chain(($1::bigint[])[1], $12::bytea[]))
			AS x(s, id, t, ty, a, su, p, c, ca, sm, d, h)`,
		seq, cols[0], times, cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8], digests)
	return nil
}

// auditData is the event data the trail keeps: with secret fields removed
// (events.Redacted, re-encoded). Data of a type without secret fields that
// is plain (see plainObject) is kept as it is: jsonb stores it as it would
// the re-encoded map (the last of duplicate keys wins in both), without
// decoding every event into a map and encoding it again, which was a fifth
// of a rebuild's CPU in this process. Anything else takes the redacting
// path, so what it stored before it stores still: null for data that is
// not an object or that Go cannot decode, U+FFFD for a lone surrogate —
// where jsonb would refuse the raw data and the trail would lose the event.
func auditData(e events.Envelope) (string, error) {
	if !events.NeedsRedaction(e.Type) && plainObject(e.Data) {
		return string(e.Data), nil
	}
	data, err := json.Marshal(events.Redacted(e))
	return string(data), err
}

// plainObject reports whether data is a JSON object in valid UTF-8 that
// both decodings read alike: no \u escapes (surrogates, \u0000), no
// exponents, every number written as encoding/json writes the float64 it
// decodes to (so 2.50, -0.0 and 12345678901234567, which the redacting
// path stores as 2.5, 0 and 12345678901234568, take that path, and a
// trail rebuilt by an older or newer build stays equal), nesting at most
// 64 deep.
func plainObject(data []byte) bool {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || !utf8.Valid(data) || !json.Valid(data) {
		return false
	}
	inString, escaped := false, false
	depth, number := 0, 0
	for i, c := range data {
		switch {
		case inString:
			switch {
			case escaped && c == 'u':
				return false
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > 64 {
				return false
			}
		case c == '}' || c == ']':
			depth--
		case c == 'e' || c == 'E':
			if number > 0 {
				return false // an exponent (true and false are not numbers)
			}
		}
		if c == '-' || c == '.' || (c >= '0' && c <= '9') {
			if number++; number > 30 {
				return false
			}
		} else {
			if number > 0 && !reencodes(data[i-number:i]) {
				return false
			}
			number = 0
		}
	}
	return true
}

// reencodes reports whether encoding/json writes the float64 that number
// decodes to as number itself ('f' format, shortest: no exponent is in
// number, and json uses one only below 1e-6 or from 1e21, which then
// differs).
func reencodes(number []byte) bool {
	f, err := strconv.ParseFloat(string(number), 64)
	if a := math.Abs(f); err != nil || (a != 0 && a < 1e-6) || a >= 1e21 {
		return false
	}
	return strconv.FormatFloat(f, 'f', -1, 64) == string(number)
}

// All is the registry of every projection, in the order they are started.
func All() []Projection {
	return []Projection{Users{}, Sessions{}, Tokens{}, Audit{}, Projects{}, Models{}, Experiments{}, Runs{}, Jobs{}, Promotions{}, Webhooks{}, Sweeps{}}
}
