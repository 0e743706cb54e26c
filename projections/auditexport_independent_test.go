package projections

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/gowebpki/jcs"
)

// independentVerify is the offline procedure of docs/ARCHITECTURE.md
// ("Offline verification") written from the text alone, as a third party
// would: crypto/sha256, crypto/ed25519 and an RFC 8785 library, nothing of
// this package (no ChainEntry, ChainNext, CheckpointMessage or
// VerifyAuditExport). It returns the number of entries and links it
// checked, or what is wrong.
func independentVerify(file []byte, trusted map[string]ed25519.PublicKey) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(file))
	sc.Buffer(nil, 64<<20)
	if !sc.Scan() {
		return 0, errors.New("no header")
	}
	var h struct {
		Record   string `json:"record"`
		Format   string `json:"format"`
		From     uint64 `json:"from"`
		To       uint64 `json:"to"`
		PrevHash string `json:"prev_hash"`
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return 0, err
	}
	if h.Record != "header" || h.Format != "maestro.audit.export/v1" {
		return 0, errors.New("not an export header")
	}
	prev, err := hex.DecodeString(h.PrevHash)
	if err != nil || len(prev) != 32 {
		return 0, errors.New("bad prev_hash")
	}
	var lastSeq uint64
	var lastHash []byte
	signedAtEnd := false
	n := 0
	for sc.Scan() {
		var rec struct {
			Record    string          `json:"record"`
			Entry     json.RawMessage `json:"entry"`
			Seq       uint64          `json:"seq"`
			Digest    string          `json:"digest"`
			Hash      string          `json:"hash"`
			KeyID     string          `json:"key_id"`
			Signature string          `json:"signature"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return n, err
		}
		hash, err := hex.DecodeString(rec.Hash)
		if err != nil || len(hash) != 32 {
			return n, errors.New("bad hash")
		}
		switch rec.Record {
		case "entry", "link":
			var digest []byte
			seq := rec.Seq
			if rec.Record == "entry" {
				canon, err := jcs.Transform(rec.Entry)
				if err != nil {
					return n, err
				}
				sum := sha256.Sum256(canon)
				digest = sum[:]
				var e struct {
					Seq uint64 `json:"seq"`
				}
				if err := json.Unmarshal(rec.Entry, &e); err != nil {
					return n, err
				}
				seq = e.Seq
			} else if digest, err = hex.DecodeString(rec.Digest); err != nil || len(digest) != 32 {
				return n, errors.New("bad digest")
			}
			if seq <= lastSeq || seq < h.From || seq > h.To {
				return n, fmt.Errorf("sequence %d out of order or range", seq)
			}
			next := sha256.Sum256(append(append([]byte{}, prev...), digest...))
			if !bytes.Equal(next[:], hash) {
				return n, fmt.Errorf("entry %d: hash does not follow", seq)
			}
			prev, lastSeq, lastHash, signedAtEnd = hash, seq, hash, false
			n++
		case "checkpoint":
			pub, ok := trusted[rec.KeyID]
			if !ok {
				return n, fmt.Errorf("checkpoint %d: untrusted key %q", rec.Seq, rec.KeyID)
			}
			sig, err := base64.StdEncoding.DecodeString(rec.Signature)
			if err != nil {
				return n, err
			}
			msg := "maestro-audit-checkpoint/v1\n" + strconv.FormatUint(rec.Seq, 10) + "\n" + rec.Hash
			if rec.Seq != lastSeq || !bytes.Equal(hash, lastHash) || !ed25519.Verify(pub, []byte(msg), sig) {
				return n, fmt.Errorf("checkpoint %d does not verify", rec.Seq)
			}
			signedAtEnd = true
		default:
			return n, fmt.Errorf("unknown record %q", rec.Record)
		}
	}
	if err := sc.Err(); err != nil {
		return n, err
	}
	if !signedAtEnd || lastSeq != h.To {
		return n, errors.New("the export does not end with a signed checkpoint at its last sequence")
	}
	return n, nil
}

// The documented procedure, implemented independently, verifies the
// platform's exports (whole, a range, a project's) and refuses a changed
// one: docs/ARCHITECTURE.md states the chain exactly.
func TestAuditExportVerifiesIndependently(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	last := af.f.lastSeq(t)
	pub := af.key.Public().(ed25519.PublicKey)
	// The key id as documented: base64url, unpadded, of SHA-256(key)[0:16].
	sum := sha256.Sum256(pub)
	kid := base64.RawURLEncoding.EncodeToString(sum[:16])
	trusted := map[string]ed25519.PublicKey{kid: pub}
	for _, opt := range []AuditExportOptions{{}, {From: 4}, {From: 2, To: last - 1}, {Project: af.pid}} {
		var buf bytes.Buffer
		if _, err := ExportAudit(testCtx(t), af.f.pool, &buf, opt); err != nil {
			t.Fatal(err)
		}
		n, err := independentVerify(buf.Bytes(), trusted)
		if err != nil || n == 0 {
			t.Fatalf("export %+v: %d records, %v", opt, n, err)
		}
		changed := bytes.Replace(buf.Bytes(), []byte(`"summary":"`), []byte(`"summary":"x`), 1)
		if _, err := independentVerify(changed, trusted); err == nil {
			t.Fatalf("export %+v: a changed entry verified", opt)
		}
	}
}
