// Package artifacts stores the model registry's artifact bytes as
// content-addressed blobs. It knows nothing about events: the caller stores the
// blob first and records an event naming its digest afterwards, so a blob no
// event references is garbage that GC collects once its grace period is over.
package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"
)

// Digest is "sha256:<64 lowercase hex>", the content address of a blob.
type Digest string

const digestPrefix = "sha256:"

// ParseDigest accepts only the canonical form, so that one content has exactly
// one name and a digest can safely become a file name or object key.
func ParseDigest(s string) (Digest, error) {
	h, ok := strings.CutPrefix(s, digestPrefix)
	if !ok || len(h) != sha256.Size*2 {
		return "", fmt.Errorf("artifacts: digest %q: want %s followed by 64 lowercase hex digits", s, digestPrefix)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("artifacts: digest %q: want %s followed by 64 lowercase hex digits", s, digestPrefix)
		}
	}
	return Digest(s), nil
}

// Hex is the digest without its algorithm prefix, the form used in paths and keys.
func (d Digest) Hex() string { return string(d[len(digestPrefix):]) }

// String returns the digest as it is written in events and ETags.
func (d Digest) String() string { return string(d) }

// digestOf names the content whose hash h has absorbed.
func digestOf(h hash.Hash) Digest { return Digest(digestPrefix + hex.EncodeToString(h.Sum(nil))) }

// valid re-checks a digest that may have been built by conversion rather than
// ParseDigest: every backend turns it into a path or key, so this is what keeps
// "sha256:../../x" out of the file system.
func (d Digest) valid() error {
	_, err := ParseDigest(string(d))
	return err
}

// ErrNotFound means no blob is stored under the digest.
var ErrNotFound = errors.New("blob not found")

// ErrTooLarge means the content exceeded the size limit given to Put.
var ErrTooLarge = errors.New("content exceeds the size limit")

// ErrDigestMismatch means the content's digest differs from the one the
// uploader declared, so the bytes were corrupted or the declaration was wrong.
var ErrDigestMismatch = errors.New("content does not match the expected digest")

// Blob is an open stored blob. It is an io.ReadSeeker so that
// http.ServeContent can answer Range requests from it without buffering.
type Blob interface {
	io.ReadSeekCloser
	// Size is the blob's length in bytes, known before the first read so a
	// response can carry Content-Length.
	Size() int64
}

// Store keeps blobs under their SHA-256 digest.
type Store interface {
	// Put streams r into the store, hashing as it goes, and stores it under its
	// digest. It fails with ErrTooLarge past maxBytes (reading at most
	// maxBytes+1 bytes of r; a negative maxBytes means no limit), and with
	// ErrDigestMismatch if want != "" and differs. In every failure nothing is
	// left behind (no blob, no temporary file or object). Idempotent for
	// identical content; storing content that already exists refreshes its
	// modification time so GC's grace period covers the event about to
	// reference it.
	Put(ctx context.Context, r io.Reader, maxBytes int64, want Digest) (Digest, int64, error)
	// Open returns the blob stored under d, or ErrNotFound. On remote backends
	// ctx also governs the blob's later reads.
	Open(ctx context.Context, d Digest) (Blob, error)
	// Delete removes the blob stored under d. Deleting a missing blob is not an
	// error, so concurrent collectors cannot fail each other.
	Delete(ctx context.Context, d Digest) error
	// Walk calls fn for every stored blob with its size and modification time
	// (GC uses the time for a grace period so in-flight uploads are never
	// collected). An error from fn stops the walk and is returned.
	Walk(ctx context.Context, fn func(d Digest, size int64, modified time.Time) error) error
}

// meter is the one reader every backend puts between the caller's body and
// storage: it hashes and counts in the same pass as the copy (no second read,
// no buffering), enforces the size limit without reading more than one byte
// past it, and notices cancellation between reads.
type meter struct {
	ctx context.Context
	r   io.Reader
	h   hash.Hash
	n   int64
	max int64 // < 0: unlimited
	err error // first failure; sticky so a backend can tell our cause from its own
}

func newMeter(ctx context.Context, r io.Reader, maxBytes int64) *meter {
	return &meter{ctx: ctx, r: r, h: sha256.New(), max: maxBytes}
}

func (m *meter) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if err := m.ctx.Err(); err != nil {
		m.err = err
		return 0, err
	}
	if m.max >= 0 {
		// Ask for at most one byte past the limit: enough to know it was
		// exceeded, without draining an arbitrarily large body.
		if rest := m.max + 1 - m.n; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	n, err := m.r.Read(p)
	m.h.Write(p[:n])
	m.n += int64(n)
	if m.max >= 0 && m.n > m.max {
		m.err = ErrTooLarge
		return n, ErrTooLarge
	}
	if err != nil && err != io.EOF {
		m.err = err
	}
	return n, err
}

// cause prefers the meter's own failure (size limit, cancellation, the body's
// read error) over however a backend chose to wrap or replace it.
func (m *meter) cause(err error) error {
	if m.err != nil {
		return m.err
	}
	return err
}

func (m *meter) digest() Digest { return digestOf(m.h) }

// check compares the finished content with the declared digest.
func (m *meter) check(want Digest) (Digest, error) {
	got := m.digest()
	if want != "" && want != got {
		return "", fmt.Errorf("artifacts: %w: declared %s, received %s", ErrDigestMismatch, want, got)
	}
	return got, nil
}

// cleanupTimeout bounds the removal of a failed upload's leftovers, which must
// run even when the caller's context is what ended the upload.
const cleanupTimeout = time.Minute

// tempMaxAge is how long a temporary file or object may go untouched before a
// new store assumes its writer died: an upload still in progress keeps
// touching it, so one an hour idle is abandoned.
const tempMaxAge = time.Hour
