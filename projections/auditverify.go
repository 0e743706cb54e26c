package projections

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/events"
)

// AuditProblem is one thing `maestro audit verify` found wrong, at the
// sequence number of the entry (or checkpoint) concerned.
type AuditProblem struct {
	Seq uint64 `json:"seq"`
	// Kind is "changed" (a stored entry differs from the one its event
	// makes), "missing" (an event has no entry), "inserted" (an entry has
	// no event), "checkpoint" (a signed checkpoint does not verify or does
	// not match the chain), or "chain" (an export's hash does not follow).
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// AuditVerifyConfig configures VerifyAudit.
type AuditVerifyConfig struct {
	// Events is the stream the audit projection follows.
	Events *events.Store
	// Keys, when set, are the keys checkpoints must be signed with (by key
	// id); otherwise the keys the platform published (audit_keys).
	Keys map[string]ed25519.PublicKey
	// MaxShown bounds the problems listed (default 50); all are counted.
	MaxShown int
	// Progress, when set, is called with the stream messages read so far
	// and how many there are to read.
	Progress func(done, total uint64)
}

// AuditVerifyResult is what VerifyAudit compared and found.
type AuditVerifyResult struct {
	// Through is the audit projection's checkpoint: the events up to it
	// were compared with the stored entries.
	Through uint64
	// Events is the stream messages read; Entries the stored entries
	// compared.
	Events, Entries int64
	// Checkpoints is the signed checkpoints verified; Pending those beyond
	// Through (a rebuild in progress), whose entries are not stored yet.
	Checkpoints, Pending int
	// Quarantined is the events the audit projection quarantined (no
	// entry: see projection_quarantine).
	Quarantined int
	// Problems lists the first MaxShown problems; Count counts them all.
	Problems []AuditProblem
	Count    int
}

// OK reports whether nothing was found wrong.
func (r *AuditVerifyResult) OK() bool { return r.Count == 0 }

func (r *AuditVerifyResult) report(max int, seq uint64, kind, format string, args ...any) {
	r.Count++
	if len(r.Problems) < max {
		r.Problems = append(r.Problems, AuditProblem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
}

type storedCheckpoint struct {
	seq       uint64
	hash, sig []byte
	keyID     string
}

// VerifyAudit recomputes every audit entry and the hash chain from the
// event stream with the projection's own code (auditEntry), and compares
// them with the stored entries and signed checkpoints, in one snapshot of
// the database (so the projection may go on meanwhile). A stored entry
// whose columns or hash differ, an event without an entry (a deleted row),
// an entry without an event (an inserted row; a row moved to another
// sequence is both changed there and missing or changed here), and a
// checkpoint whose signature or hash does not verify are reported with
// their sequence. Events the projection quarantined have no entry and are
// only counted.
func VerifyAudit(ctx context.Context, pool *pgxpool.Pool, cfg AuditVerifyConfig) (*AuditVerifyResult, error) {
	if cfg.MaxShown <= 0 {
		cfg.MaxShown = 50
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("audit verify: begin snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	res := &AuditVerifyResult{}
	var through int64
	if err := tx.QueryRow(ctx, "SELECT COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = 'audit'), 0)").Scan(&through); err != nil {
		return nil, fmt.Errorf("audit verify: checkpoint: %w", err)
	}
	res.Through = uint64(through)
	// The reader below waits for every message up to Through: make sure
	// the stream has them (a database restored next to a younger stream
	// would otherwise hang it).
	head, err := cfg.Events.LastSequence(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit verify: stream head: %w", err)
	}
	if res.Through > head {
		return nil, fmt.Errorf("audit verify: the audit projection is at sequence %d, beyond the stream's head %d: is this the platform's stream?", res.Through, head)
	}
	quarantined := map[uint64]bool{}
	if err := collect(ctx, tx, "SELECT seq FROM projection_quarantine WHERE projection = 'audit' AND seq <= $1", []any{through},
		func(r pgx.Rows) error {
			var s int64
			err := r.Scan(&s)
			quarantined[uint64(s)] = true
			return err
		}); err != nil {
		return nil, fmt.Errorf("audit verify: quarantine: %w", err)
	}
	keys := cfg.Keys
	if keys == nil {
		if keys, err = auditKeys(ctx, tx); err != nil {
			return nil, fmt.Errorf("audit verify: %w", err)
		}
	}
	cps := map[uint64]storedCheckpoint{}
	if err := collect(ctx, tx, "SELECT seq, hash, key_id, signature FROM audit_checkpoints ORDER BY seq", nil, func(r pgx.Rows) error {
		var c storedCheckpoint
		var s int64
		if err := r.Scan(&s, &c.hash, &c.keyID, &c.sig); err != nil {
			return err
		}
		c.seq = uint64(s)
		// Every signature is checked, a pending checkpoint's too (beyond
		// Through, during a rebuild): only its hash must wait.
		if msg := checkSignature(keys, c.keyID, c.seq, c.hash, c.sig); msg != "" {
			res.report(cfg.MaxShown, c.seq, "checkpoint", "%s", msg)
		}
		if c.seq > res.Through {
			res.Pending++
			return nil
		}
		cps[c.seq] = c
		return nil
	}); err != nil {
		return nil, fmt.Errorf("audit verify: checkpoints: %w", err)
	}
	// No event has a sequence below 1, so a row there is inserted; the
	// merge below reads from sequence 1 on (sequences are unsigned there).
	if err := collect(ctx, tx, "SELECT seq, event_id, type FROM audit_entries WHERE seq <= 0 ORDER BY seq", nil, func(r pgx.Rows) error {
		var s int64
		var id, typ string
		if err := r.Scan(&s, &id, &typ); err != nil {
			return err
		}
		res.Entries++
		res.report(cfg.MaxShown, 0, "inserted", "entry %s (%s) at sequence %d, where no event can be", id, typ, s)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("audit verify: entries below sequence 1: %w", err)
	}
	stored := &storedEntries{tx: tx}
	if err := stored.next(ctx); err != nil {
		return nil, err
	}
	expected := make(chan expectedEntry, 256)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() { readErr <- readExpected(rctx, cfg.Events, 0, res.Through, quarantined, expected, cfg.Progress) }()
	prev := GenesisHash
	var probe []events.Envelope
	for x := range expected {
		res.Events = x.read
		if x.skip {
			if quarantined[x.seq] {
				res.Quarantined++
			}
			if x.env != nil {
				probe = append(probe, *x.env)
			}
			continue
		}
		if x.err != nil {
			res.report(cfg.MaxShown, x.seq, "missing", "the event's entry cannot be made: %v", x.err)
			continue
		}
		hash := ChainNext(prev, x.digest)
		prev = hash
		for stored.cur != nil && stored.cur.Seq < x.seq {
			res.report(cfg.MaxShown, stored.cur.Seq, "inserted", "entry %s (%s) has no event at this sequence", stored.cur.EventID, stored.cur.Type)
			res.Entries++
			if err := stored.next(ctx); err != nil {
				return nil, err
			}
		}
		if stored.cur != nil && stored.cur.Seq == x.seq {
			res.Entries++
			if err := compareEntry(res, cfg.MaxShown, x, hash, stored); err != nil {
				return nil, err
			}
			if err := stored.next(ctx); err != nil {
				return nil, err
			}
		} else {
			res.report(cfg.MaxShown, x.seq, "missing", "no entry for event %s (%s)", x.entry.EventID, x.entry.Type)
		}
		if c, ok := cps[x.seq]; ok {
			res.Checkpoints++
			if !bytes.Equal(c.hash, hash) {
				res.report(cfg.MaxShown, x.seq, "checkpoint", "signed hash %x is not the chain's %x", c.hash, hash)
			}
			delete(cps, x.seq)
		}
	}
	if err := <-readErr; err != nil {
		return nil, err
	}
	for stored.cur != nil {
		res.report(cfg.MaxShown, stored.cur.Seq, "inserted", "entry %s (%s) has no event at this sequence", stored.cur.EventID, stored.cur.Type)
		res.Entries++
		if err := stored.next(ctx); err != nil {
			return nil, err
		}
	}
	for _, c := range cps {
		res.report(cfg.MaxShown, c.seq, "checkpoint", "signed checkpoint at a sequence with no entry")
	}
	storable, err := probeQuarantined(ctx, pool, probe)
	if err != nil {
		return nil, err
	}
	for _, e := range storable {
		res.report(cfg.MaxShown, e.Sequence, "missing",
			"event %s (%s) is recorded as quarantined, but the audit projection stores its entry: a deleted row behind a forged quarantine record?", e.ID, e.Type)
	}
	return res, nil
}

// probeQuarantined returns the events among evs (recorded as quarantined by
// the audit projection) whose entry the projection would store after all.
// projection_quarantine is a table like any other, so a deleted row with a
// quarantine record written beside it (and the hashes after it re-chained,
// the checkpoints after it dropped) would otherwise pass as a quarantined
// event. The audit projection quarantines an event only for the event's
// own sake (data it cannot build an entry of, text or jsonb PostgreSQL
// refuses, an index row too large; a sequence already taken means a row
// that verify reports anyway), so each event is applied again with the
// projection's own statements (Audit.Queue) to an empty temporary copy of
// audit_entries (same columns, constraints and indexes, shadowing the real
// table for this transaction), each under its own savepoint, and the whole
// transaction is rolled back: nothing is written.
func probeQuarantined(ctx context.Context, pool *pgxpool.Pool, evs []events.Envelope) ([]events.Envelope, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit verify: probe quarantined events: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // always rolled back: a probe writes nothing
	if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE audit_entries (LIKE audit_entries INCLUDING ALL) ON COMMIT DROP"); err != nil {
		return nil, fmt.Errorf("audit verify: probe quarantined events: temporary table: %w", err)
	}
	var storable []events.Envelope
	for _, e := range evs {
		b := &Batch{}
		if err := (Audit{}).Queue(b, []events.Envelope{e}); err != nil {
			continue // no entry can be made of it: rightly quarantined
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("audit verify: probe quarantined event %d: %w", e.Sequence, err)
		}
		var applyErr error
		for _, q := range b.QueuedQueries {
			// Parsed afresh (an unnamed statement), never from the
			// connection's statement cache: a statement prepared before
			// the temporary table existed in this session would still
			// name the real audit_entries.
			args := append([]any{pgx.QueryExecModeDescribeExec}, q.Arguments...)
			if _, applyErr = sp.Exec(ctx, q.SQL, args...); applyErr != nil {
				break
			}
		}
		if err := sp.Rollback(ctx); err != nil {
			return nil, fmt.Errorf("audit verify: probe quarantined event %d: %w", e.Sequence, err)
		}
		switch {
		case applyErr == nil:
			storable = append(storable, e)
		case !Undeliverable(applyErr):
			return nil, fmt.Errorf("audit verify: probe quarantined event %d: %w", e.Sequence, applyErr)
		}
	}
	return storable, nil
}

// compareEntry reports how the stored entry differs from the expected one.
func compareEntry(res *AuditVerifyResult, maxShown int, x expectedEntry, hash []byte, stored *storedEntries) error {
	s := stored.cur
	digest, err := s.ChainEntry.Digest()
	if err == nil && bytes.Equal(digest, x.digest) && bytes.Equal(s.hash, hash) {
		return nil
	}
	var cols []string
	e := x.entry
	for _, f := range []struct {
		name      string
		got, want string
	}{
		{"event_id", s.EventID, e.EventID}, {"time", s.Time, e.Time}, {"type", s.Type, e.Type}, {"actor", s.Actor, e.Actor},
		{"subject", s.Subject, e.Subject}, {"project_id", s.ProjectID, e.ProjectID}, {"correlation_id", s.CorrelationID, e.CorrelationID},
		{"causation_id", s.CausationID, e.CausationID}, {"summary", s.Summary, e.Summary},
	} {
		if f.got != f.want {
			cols = append(cols, fmt.Sprintf("%s %q (want %q)", f.name, f.got, f.want))
		}
	}
	a, _ := (ChainEntry{Data: s.Data}).Canonical()
	b, _ := (ChainEntry{Data: e.Data}).Canonical()
	if !bytes.Equal(a, b) {
		cols = append(cols, "data")
	}
	if !bytes.Equal(s.hash, hash) {
		cols = append(cols, fmt.Sprintf("hash %x (want %x)", s.hash, hash))
	}
	res.report(maxShown, s.Seq, "changed", "%s", strings.Join(cols, ", "))
	return nil
}

// checkSignature is "" when sig is key id's valid signature of the
// checkpoint, else what is wrong.
func checkSignature(keys map[string]ed25519.PublicKey, keyID string, seq uint64, hash, sig []byte) string {
	pub, ok := keys[keyID]
	switch {
	case !ok:
		return fmt.Sprintf("signed by unknown key %q", keyID)
	case len(pub) != ed25519.PublicKeySize || auth.KeyID(pub) != keyID:
		return fmt.Sprintf("key %q is not a valid Ed25519 key with that id", keyID)
	case !ed25519.Verify(pub, CheckpointMessage(seq, hash), sig):
		return fmt.Sprintf("signature by key %q does not verify", keyID)
	}
	return ""
}

// auditKeys reads the published keys.
func auditKeys(ctx context.Context, q pgx.Tx) (map[string]ed25519.PublicKey, error) {
	keys := map[string]ed25519.PublicKey{}
	err := collect(ctx, q, "SELECT key_id, public_key FROM audit_keys", nil, func(r pgx.Rows) error {
		var id string
		var pub []byte
		err := r.Scan(&id, &pub)
		keys[id] = pub
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit keys: %w", err)
	}
	return keys, nil
}

// queryer is what collect reads through: a transaction or the pool.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func collect(ctx context.Context, tx queryer, sql string, args []any, f func(pgx.Rows) error) error {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// storedEntry is a row of audit_entries.
type storedEntry struct {
	ChainEntry
	hash []byte
}

// storedEntries reads audit_entries in sequence order, a chunk at a time.
type storedEntries struct {
	tx    pgx.Tx
	chunk []storedEntry
	after int64
	done  bool
	cur   *storedEntry
}

const storedChunk = 5000

// auditCols reads a row as a storedEntry (data as jsonb writes it).
const auditCols = "seq, event_id, time, type, actor, subject, project_id, correlation_id, causation_id, summary, data::text, hash"

func scanStored(r pgx.Rows) (storedEntry, error) {
	var s storedEntry
	var seq int64
	var t time.Time
	var data string
	err := r.Scan(&seq, &s.EventID, &t, &s.Type, &s.Actor, &s.Subject, &s.ProjectID, &s.CorrelationID, &s.CausationID, &s.Summary, &data, &s.hash)
	s.Seq, s.Time, s.Data = uint64(seq), ChainTime(t), []byte(data)
	return s, err
}

func (s *storedEntries) next(ctx context.Context) error {
	if len(s.chunk) == 0 && !s.done {
		err := collect(ctx, s.tx, "SELECT "+auditCols+" FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2",
			[]any{s.after, storedChunk}, func(r pgx.Rows) error {
				e, err := scanStored(r)
				s.chunk = append(s.chunk, e)
				return err
			})
		if err != nil {
			return fmt.Errorf("audit verify: read entries after %d: %w", s.after, err)
		}
		s.done = len(s.chunk) < storedChunk
		if n := len(s.chunk); n > 0 {
			s.after = int64(s.chunk[n-1].Seq)
		}
	}
	if len(s.chunk) == 0 {
		s.cur = nil
		return nil
	}
	s.cur = &s.chunk[0]
	s.chunk = s.chunk[1:]
	return nil
}

// expectedEntry is the entry the projection makes of one stream message.
type expectedEntry struct {
	seq  uint64
	read int64 // messages read so far
	skip bool  // quarantined or undecodable: no entry
	// env is a quarantined event that decodes, to be probed
	// (probeQuarantined).
	env    *events.Envelope
	entry  ChainEntry
	digest []byte
	err    error
}

// readExpected reads the stream after after up to through and sends the
// entry of each message, in order, then closes out.
func readExpected(ctx context.Context, store *events.Store, after, through uint64, quarantined map[uint64]bool,
	out chan<- expectedEntry, progress func(done, total uint64)) error {
	defer close(out)
	if through <= after {
		return nil
	}
	cons, err := store.Follow(ctx, after, nil)
	if err != nil {
		return fmt.Errorf("audit verify: read the stream: %w", err)
	}
	msgs := make(chan jetstream.Msg, 256)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	}, jetstream.PullMaxBytes(8<<20))
	if err != nil {
		return fmt.Errorf("audit verify: read the stream: %w", err)
	}
	defer cc.Stop()
	var read int64
	for {
		var m jetstream.Msg
		select {
		case m = <-msgs:
		case <-ctx.Done():
			return ctx.Err()
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("audit verify: message metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		if seq > through {
			return nil
		}
		read++
		x := expectedEntry{seq: seq, read: read}
		env, derr := events.FromHeaders(m.Subject(), m.Headers(), m.Data(), seq)
		switch {
		case derr != nil:
			// The runner quarantines an undecodable message (appendMsg).
			x.skip = true
		case quarantined[seq]:
			x.skip, x.env = true, &env
		default:
			x.entry, x.err = auditEntry(env)
			if x.err == nil {
				x.digest, x.err = x.entry.Digest()
			}
		}
		select {
		case out <- x:
		case <-ctx.Done():
			return ctx.Err()
		}
		if progress != nil && read%1000 == 0 {
			progress(seq, through)
		}
		if seq == through {
			return nil
		}
	}
}

// hexHash decodes a hex hash of HashSize bytes.
func hexHash(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != HashSize {
		return nil, errors.New("not a hex SHA-256 hash")
	}
	return b, nil
}
