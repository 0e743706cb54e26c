package projections

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/maestro-ml/maestro/events"
)

// The audit trail's hash chain (docs/ARCHITECTURE.md, "Audit trail: hash
// chain"). Entry n of the trail (in stream order) stores
//
//	hash_n = SHA-256(hash_{n-1} || SHA-256(canonical(entry_n)))
//
// with hash_0 the 32 zero bytes and canonical the RFC 8785 (JCS) form of the
// entry's ChainEntry. The inner digest lets an export leave out entries a
// reader may not see (another project's) as their digest alone and still be
// verifiable end to end; it also lets the projection send PostgreSQL 32
// bytes per entry to fold (audit_chain, migration 00017) rather than every
// entry's canonical form again.

// HashSize is the size of an entry's digest and hash (SHA-256).
const HashSize = sha256.Size

// GenesisHash is the chain's hash before its first entry.
var GenesisHash = make([]byte, HashSize)

// chainTime is how an entry's time is written in its canonical form: UTC,
// microseconds, as PostgreSQL stores a timestamptz (pgx sends it truncated
// to the microsecond, and the projection truncates it the same way first).
const chainTime = "2006-01-02T15:04:05.000000Z"

// ChainEntry is an audit entry as its canonical form covers it: every
// column of audit_entries but the hash, the derived ones (summary, project
// id, redacted data) included, so a changed summary breaks the chain too.
type ChainEntry struct {
	Seq           uint64          `json:"seq"`
	EventID       string          `json:"event_id"`
	Time          string          `json:"time"`
	Type          string          `json:"type"`
	Actor         string          `json:"actor"`
	Subject       string          `json:"subject"`
	ProjectID     string          `json:"project_id"`
	CorrelationID string          `json:"correlation_id"`
	CausationID   string          `json:"causation_id"`
	Summary       string          `json:"summary"`
	Data          json.RawMessage `json:"data"`
}

// ChainTime formats t as a ChainEntry's time.
func ChainTime(t time.Time) string { return t.UTC().Truncate(time.Microsecond).Format(chainTime) }

// Canonical is the RFC 8785 (JCS) form of the entry: members sorted, no
// white space, numbers as ECMAScript writes the double they denote, strings
// minimally escaped (appendCanonical; the offline verifier applies
// github.com/gowebpki/jcs to the exported entry and must find the same
// bytes). Data with a duplicate key (the audit projection keeps such data
// as sent, and jsonb keeps the last value) is canonicalised as jsonb stores
// it, so the canonical form of an entry read back from PostgreSQL is the
// same.
func (c ChainEntry) Canonical() ([]byte, error) {
	buf := make([]byte, 0, 256+len(c.Data))
	seq, err := jcs.NumberToJSON(float64(c.Seq))
	if err != nil {
		return nil, fmt.Errorf("audit entry %d: %w", c.Seq, err)
	}
	// The members in UTF-16 order (all ASCII: byte order).
	for _, m := range []struct{ name, value string }{{"actor", c.Actor}, {"causation_id", c.CausationID}, {"correlation_id", c.CorrelationID}} {
		buf = appendMember(buf, m.name, m.value)
	}
	buf = append(buf, `,"data":`...)
	if buf, err = canonicalData(buf, c.Data); err != nil {
		return nil, fmt.Errorf("audit entry %d: %w", c.Seq, err)
	}
	buf = appendMember(buf, "event_id", c.EventID)
	buf = appendMember(buf, "project_id", c.ProjectID)
	buf = append(buf, `,"seq":`...)
	buf = append(buf, seq...)
	for _, m := range []struct{ name, value string }{{"subject", c.Subject}, {"summary", c.Summary}, {"time", c.Time}, {"type", c.Type}} {
		buf = appendMember(buf, m.name, m.value)
	}
	buf[0] = '{'
	return append(buf, '}'), nil
}

// appendMember appends ,"name":"value" (canonical); Canonical turns the
// first comma into the object's opening brace.
func appendMember(buf []byte, name, value string) []byte {
	buf = append(buf, ',')
	buf = appendCanonicalString(buf, name)
	buf = append(buf, ':')
	return appendCanonicalString(buf, strings.ToValidUTF8(value, "\uFFFD"))
}

// Digest is SHA-256 of the entry's canonical form.
func (c ChainEntry) Digest() ([]byte, error) {
	b, err := c.Canonical()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return sum[:], nil
}

// ChainNext is the hash of an entry with digest digest after an entry with
// hash prev: SHA-256(prev || digest).
func ChainNext(prev, digest []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(digest)
	return h.Sum(nil)
}

// CheckpointMessage is what a checkpoint's Ed25519 signature signs: the
// ASCII text "maestro-audit-checkpoint/v1\n<seq>\n<hash>", seq in decimal
// and the hash in lowercase hex.
func CheckpointMessage(seq uint64, hash []byte) []byte {
	return []byte("maestro-audit-checkpoint/v1\n" + strconv.FormatUint(seq, 10) + "\n" + hex.EncodeToString(hash))
}

// auditEntry is the entry the projection stores for e: the same code makes
// the expected entries of `maestro audit verify`.
func auditEntry(e events.Envelope) (ChainEntry, error) {
	data, err := auditData(e)
	if err != nil {
		return ChainEntry{}, err
	}
	return ChainEntry{Seq: e.Sequence, EventID: e.ID, Time: ChainTime(e.Time), Type: e.Type, Actor: e.Actor.String(),
		Subject: e.Subject, ProjectID: projectOf(e), CorrelationID: e.CorrelationID, CausationID: e.CausationID,
		Summary: events.Summary(e), Data: json.RawMessage(data)}, nil
}

// projectOf is the project an event concerns: the aggregate id of a project
// subject, else the data's top-level "project_id" (model, version, tracking
// and job events carry it), else none. Only a plain subject token is taken,
// so the column stays bounded.
func projectOf(e events.Envelope) string {
	if agg, id := events.AggregateOf(e.Subject); agg == events.AggProject {
		return id
	}
	if !bytes.Contains(e.Data, []byte(`"project_id"`)) {
		return "" // most events: no decoding
	}
	var d struct {
		ProjectID string `json:"project_id"`
	}
	if json.Unmarshal(e.Data, &d) != nil || !events.ValidToken(d.ProjectID) {
		return ""
	}
	return d.ProjectID
}
