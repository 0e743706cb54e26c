package projections

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/gowebpki/jcs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/auth"
)

// The audit export (docs/ARCHITECTURE.md, "Audit trail: export and offline
// verification"): JSON Lines, one record per line, each an object whose
// "record" member says what it is:
//
//	{"record":"header","format":"maestro.audit.export/v1","from":F,"to":T,"project":P,"prev_hash":H,"keys":[{"key_id":K,"public_key":B64}]}
//	{"record":"entry","entry":{...ChainEntry...},"hash":H}
//	{"record":"link","seq":N,"digest":D,"hash":H}
//	{"record":"checkpoint","seq":N,"hash":H,"key_id":K,"signature":B64}

// AuditExportFormat names the export format in its header.
const AuditExportFormat = "maestro.audit.export/v1"

// ErrNotSealed means no signed checkpoint covers the requested range yet
// (the sealer signs the newest entry about once a second).
var ErrNotSealed = errors.New("no signed checkpoint covers the requested range yet")

// ErrEmptyExport means the requested range holds no entry.
var ErrEmptyExport = errors.New("the requested range of the audit trail is empty")

// AuditExportOptions selects what ExportAudit writes.
type AuditExportOptions struct {
	// From and To bound the sequences (0: from the first entry; to the
	// newest signed checkpoint). The export runs on to the first signed
	// checkpoint at or after To, so its last record is signed.
	From, To uint64
	// Project, when set, writes only that project's entries in full; every
	// other entry in the range is a link (its sequence, digest and hash),
	// so the chain still verifies and nothing of it is disclosed.
	Project string
}

// ExportHeader is the first record of an export.
type ExportHeader struct {
	Record   string      `json:"record"`
	Format   string      `json:"format"`
	From     uint64      `json:"from"`
	To       uint64      `json:"to"`
	Project  string      `json:"project,omitempty"`
	PrevHash string      `json:"prev_hash"`
	Keys     []ExportKey `json:"keys"`
}

// ExportKey is a public key that signed checkpoints (base64, standard
// encoding, of its 32 bytes).
type ExportKey struct {
	KeyID     string `json:"key_id"`
	PublicKey string `json:"public_key"`
}

// exportRecord is an entry, link or checkpoint line.
type exportRecord struct {
	Record    string          `json:"record"`
	Entry     json.RawMessage `json:"entry,omitempty"`
	Seq       uint64          `json:"seq,omitempty"`
	Digest    string          `json:"digest,omitempty"`
	Hash      string          `json:"hash"`
	KeyID     string          `json:"key_id,omitempty"`
	Signature string          `json:"signature,omitempty"`
}

// ExportAudit writes entries From..To (see AuditExportOptions) with their
// hashes and the signed checkpoints among them to w, from one snapshot.
func ExportAudit(ctx context.Context, pool *pgxpool.Pool, w io.Writer, opt AuditExportOptions) (ExportHeader, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return ExportHeader{}, fmt.Errorf("audit export: begin snapshot: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	from := max(opt.From, 1)
	// The last checkpoint whose entry is stored (during a rebuild older
	// checkpoints are ahead of the table), at or after To.
	var end int64
	q := `SELECT COALESCE(max(seq), 0) FROM audit_checkpoints WHERE seq <= (SELECT COALESCE(max(seq), 0) FROM audit_entries)`
	args := []any{}
	if opt.To > 0 {
		q = `SELECT COALESCE(min(seq), 0) FROM audit_checkpoints WHERE seq >= $1 AND seq <= (SELECT COALESCE(max(seq), 0) FROM audit_entries)`
		args = append(args, int64(opt.To))
	}
	if err := tx.QueryRow(ctx, q, args...).Scan(&end); err != nil {
		return ExportHeader{}, fmt.Errorf("audit export: checkpoint: %w", err)
	}
	if end == 0 {
		return ExportHeader{}, ErrNotSealed
	}
	if uint64(end) < from {
		// Entries from From on that no checkpoint covers yet are a range
		// not sealed yet (the sealer signs within a second), not an
		// empty one.
		var unsealed bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM audit_entries WHERE seq >= $1)", int64(from)).Scan(&unsealed); err != nil {
			return ExportHeader{}, fmt.Errorf("audit export: entries from %d: %w", from, err)
		}
		if unsealed {
			return ExportHeader{}, ErrNotSealed
		}
		return ExportHeader{}, ErrEmptyExport
	}
	prev := GenesisHash
	// From sequence 1 on: a row below it is no event's (verify reports it
	// as inserted) and must not become the export's anchor.
	err = tx.QueryRow(ctx, "SELECT hash FROM audit_entries WHERE seq >= 1 AND seq < $1 ORDER BY seq DESC LIMIT 1", int64(from)).Scan(&prev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return ExportHeader{}, fmt.Errorf("audit export: hash before %d: %w", from, err)
	}
	keys, err := auditKeys(ctx, tx)
	if err != nil {
		return ExportHeader{}, fmt.Errorf("audit export: %w", err)
	}
	h := ExportHeader{Record: "header", Format: AuditExportFormat, From: from, To: uint64(end), Project: opt.Project,
		PrevHash: hex.EncodeToString(prev), Keys: []ExportKey{}}
	for id, pub := range keys {
		h.Keys = append(h.Keys, ExportKey{KeyID: id, PublicKey: base64.StdEncoding.EncodeToString(pub)})
	}
	sort.Slice(h.Keys, func(i, j int) bool { return h.Keys[i].KeyID < h.Keys[j].KeyID })
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(h); err != nil {
		return h, fmt.Errorf("audit export: write: %w", err)
	}
	after := int64(from) - 1
	for after < end {
		var chunk []storedEntry
		err := collect(ctx, tx, "SELECT "+auditCols+" FROM audit_entries WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
			[]any{after, end, storedChunk}, func(r pgx.Rows) error {
				e, err := scanStored(r)
				chunk = append(chunk, e)
				return err
			})
		if err != nil {
			return h, fmt.Errorf("audit export: read entries after %d: %w", after, err)
		}
		if len(chunk) == 0 {
			break
		}
		last := int64(chunk[len(chunk)-1].Seq)
		if len(chunk) < storedChunk {
			last = end
		}
		cps := map[uint64]exportRecord{}
		err = collect(ctx, tx, "SELECT seq, hash, key_id, signature FROM audit_checkpoints WHERE seq > $1 AND seq <= $2",
			[]any{after, last}, func(r pgx.Rows) error {
				var seq int64
				var hash, sig []byte
				var c exportRecord
				err := r.Scan(&seq, &hash, &c.KeyID, &sig)
				c.Record, c.Seq, c.Hash, c.Signature = "checkpoint", uint64(seq), hex.EncodeToString(hash), base64.StdEncoding.EncodeToString(sig)
				cps[c.Seq] = c
				return err
			})
		if err != nil {
			return h, fmt.Errorf("audit export: read checkpoints after %d: %w", after, err)
		}
		for _, e := range chunk {
			rec := exportRecord{Hash: hex.EncodeToString(e.hash)}
			if opt.Project == "" || e.ProjectID == opt.Project {
				rec.Record = "entry"
				if rec.Entry, err = json.Marshal(e.ChainEntry); err != nil {
					return h, fmt.Errorf("audit export: entry %d: %w", e.Seq, err)
				}
			} else {
				d, err := e.ChainEntry.Digest()
				if err != nil {
					return h, fmt.Errorf("audit export: entry %d: %w", e.Seq, err)
				}
				rec.Record, rec.Seq, rec.Digest = "link", e.Seq, hex.EncodeToString(d)
			}
			if err := enc.Encode(rec); err != nil {
				return h, fmt.Errorf("audit export: write: %w", err)
			}
			if c, ok := cps[e.Seq]; ok {
				if err := enc.Encode(c); err != nil {
					return h, fmt.Errorf("audit export: write: %w", err)
				}
			}
		}
		after = last
	}
	if err := bw.Flush(); err != nil {
		return h, fmt.Errorf("audit export: write: %w", err)
	}
	return h, nil
}

// ExportVerifyResult is what VerifyAuditExport checked and found.
type ExportVerifyResult struct {
	Header         ExportHeader
	Entries, Links int
	Checkpoints    int
	// KeysUsed is the key ids of the checkpoints' signatures.
	KeysUsed []string
	// Problems lists the first problems found; Count counts them all.
	Problems []AuditProblem
	Count    int
}

// OK reports whether the export verified: every record chains, every
// checkpoint's signature verifies, and the last record is signed.
func (r *ExportVerifyResult) OK() bool { return r.Count == 0 }

func (r *ExportVerifyResult) report(max int, seq uint64, kind, format string, args ...any) {
	r.Count++
	if len(r.Problems) < max {
		r.Problems = append(r.Problems, AuditProblem{Seq: seq, Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
}

// MaxExportLine bounds one line of an export (an event's data is at most
// 1 MiB; its entry, escaped, a few times that).
const MaxExportLine = 8 << 20

// VerifyAuditExport verifies an export from its content alone, as the
// documented procedure does: the chain from the header's prev_hash through
// every entry (digest of its canonical form) and link, and each checkpoint's
// Ed25519 signature. With trusted set, checkpoints must be signed by one of
// those keys (by key id); otherwise by a key the header lists — which only
// proves the file is intact if that key id is compared with the platform's
// published one (GET /api/v1/audit/keys). An error means the file is not an
// export at all; problems are reported in the result.
func VerifyAuditExport(r io.Reader, trusted map[string]ed25519.PublicKey, maxShown int) (*ExportVerifyResult, error) {
	if maxShown <= 0 {
		maxShown = 50
	}
	res := &ExportVerifyResult{}
	br := bufio.NewReaderSize(r, 64<<10)
	line, err := readLine(br)
	if err != nil {
		return nil, fmt.Errorf("audit export: header: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&res.Header); err != nil || res.Header.Record != "header" || res.Header.Format != AuditExportFormat {
		return nil, fmt.Errorf("audit export: the first line is not a %s header", AuditExportFormat)
	}
	prev, err := hexHash(res.Header.PrevHash)
	if err != nil {
		return nil, fmt.Errorf("audit export: header prev_hash: %w", err)
	}
	keys := trusted
	if keys == nil {
		keys = map[string]ed25519.PublicKey{}
		for _, k := range res.Header.Keys {
			pub, err := base64.StdEncoding.DecodeString(k.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("audit export: header key %q: %w", k.KeyID, err)
			}
			keys[k.KeyID] = pub
		}
	}
	used := map[string]bool{}
	var lastSeq uint64
	var lastHash []byte
	signed := true // nothing unsigned yet
	for n := 2; ; n++ {
		line, err := readLine(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("audit export: line %d: %w", n, err)
		}
		var rec exportRecord
		d := json.NewDecoder(bytes.NewReader(line))
		d.DisallowUnknownFields()
		if err := d.Decode(&rec); err != nil {
			return res, fmt.Errorf("audit export: line %d: %w", n, err)
		}
		hash, err := hexHash(rec.Hash)
		if err != nil {
			return res, fmt.Errorf("audit export: line %d: hash: %w", n, err)
		}
		switch rec.Record {
		case "entry", "link":
			var seq uint64
			var digest []byte
			if rec.Record == "entry" {
				var e ChainEntry
				if err := json.Unmarshal(rec.Entry, &e); err != nil {
					return res, fmt.Errorf("audit export: line %d: entry: %w", n, err)
				}
				seq = e.Seq
				canon, err := jcs.Transform(rec.Entry)
				if err != nil {
					return res, fmt.Errorf("audit export: line %d: entry: %w", n, err)
				}
				sum := sha256.Sum256(canon)
				digest = sum[:]
				res.Entries++
			} else {
				seq = rec.Seq
				if digest, err = hexHash(rec.Digest); err != nil {
					return res, fmt.Errorf("audit export: line %d: digest: %w", n, err)
				}
				res.Links++
			}
			if seq <= lastSeq || seq < res.Header.From || seq > res.Header.To {
				res.report(maxShown, seq, "chain", "line %d: sequence %d out of order or outside %d..%d", n, seq, res.Header.From, res.Header.To)
			}
			want := ChainNext(prev, digest)
			if !bytes.Equal(want, hash) {
				res.report(maxShown, seq, "chain", "line %d: hash %x, but the chain gives %x", n, hash, want)
			}
			// Go on from the stated hash: one changed entry is one problem,
			// not one for every entry after it (the checkpoint still fails
			// if the stated hashes were forged onwards).
			prev, lastSeq, lastHash, signed = hash, seq, hash, false
		case "checkpoint":
			sig, err := base64.StdEncoding.DecodeString(rec.Signature)
			if err != nil {
				return res, fmt.Errorf("audit export: line %d: signature: %w", n, err)
			}
			res.Checkpoints++
			used[rec.KeyID] = true
			switch {
			case rec.Seq != lastSeq || !bytes.Equal(hash, lastHash):
				res.report(maxShown, rec.Seq, "checkpoint", "line %d: the checkpoint does not follow its entry (seq %d, hash %x)", n, lastSeq, lastHash)
			default:
				if msg := checkSignature(keys, rec.KeyID, rec.Seq, hash, sig); msg != "" {
					res.report(maxShown, rec.Seq, "checkpoint", "line %d: %s", n, msg)
				} else {
					signed = true
				}
			}
		default:
			return res, fmt.Errorf("audit export: line %d: unknown record %q", n, rec.Record)
		}
	}
	if lastSeq == 0 {
		res.report(maxShown, 0, "chain", "the export holds no entry")
	} else if !signed || lastSeq != res.Header.To {
		res.report(maxShown, lastSeq, "checkpoint", "the export does not end with a valid signed checkpoint at %d", res.Header.To)
	}
	for k := range used {
		res.KeysUsed = append(res.KeysUsed, k)
	}
	sort.Strings(res.KeysUsed)
	return res, nil
}

// readLine reads one line (without its newline), at most MaxExportLine
// bytes; io.EOF at the end.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		part, isPrefix, err := br.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return line, nil
			}
			return nil, err
		}
		line = append(line, part...)
		if len(line) > MaxExportLine {
			return nil, fmt.Errorf("a line is longer than %d bytes", MaxExportLine)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// ParsePublicKey reads an Ed25519 public key given as base64 (standard or
// URL encoding, padded or not) of its 32 bytes, and returns it with its key
// id.
func ParsePublicKey(s string) (string, ed25519.PublicKey, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
			pub := ed25519.PublicKey(b)
			return auth.KeyID(pub), pub, nil
		}
	}
	return "", nil, errors.New("not the base64 of a 32-byte Ed25519 public key")
}

// ExportAudit is ExportAudit on the queries' pool.
func (q *Queries) ExportAudit(ctx context.Context, w io.Writer, opt AuditExportOptions) (ExportHeader, error) {
	return ExportAudit(ctx, q.pool, w, opt)
}

// AuditKeys lists the public keys that signed audit checkpoints, by key id.
func (q *Queries) AuditKeys(ctx context.Context) ([]ExportKey, error) {
	rows, err := q.pool.Query(ctx, "SELECT key_id, public_key FROM audit_keys ORDER BY created_at, key_id")
	if err != nil {
		return nil, fmt.Errorf("audit keys: %w", err)
	}
	defer rows.Close()
	keys := []ExportKey{}
	for rows.Next() {
		var k ExportKey
		var pub []byte
		if err := rows.Scan(&k.KeyID, &pub); err != nil {
			return nil, fmt.Errorf("audit keys: %w", err)
		}
		k.PublicKey = base64.StdEncoding.EncodeToString(pub)
		keys = append(keys, k)
	}
	return keys, rows.Err()
}
