package artifacts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config locates an S3-compatible bucket.
type S3Config struct {
	Endpoint  string // host[:port], no scheme
	Bucket    string
	Region    string // empty: ask the server
	AccessKey string
	SecretKey string
	UseTLS    bool
	// Prefix is prepended to every key so several installations can share a
	// bucket; a missing trailing "/" is added.
	Prefix string
}

// S3 stores blobs as objects at <prefix>blobs/sha256/<hex>.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string
}

var _ Store = (*S3)(nil)

const (
	// s3PartSize bounds an upload's memory: minio-go buffers one part of a
	// body of unknown length at a time.
	s3PartSize = 16 << 20
	// s3SinglePutMax is read ahead before deciding how to upload. A body that
	// ends within it is hashed before it is sent, so it goes in one PUT
	// straight to its content address (no temp object, no copy); 5 MiB is S3's
	// minimum part size, below which multipart gains nothing.
	s3SinglePutMax = 5 << 20
	// s3MaxCopySize is the largest object S3's CopyObject accepts; larger
	// ones need a multipart copy.
	s3MaxCopySize = 5 << 30
	// s3UploadMaxAge is when NewS3 aborts an unfinished multipart upload.
	// Unlike a temp file, a multipart upload's initiation time does not move
	// while parts arrive, so this must exceed the longest plausible upload.
	s3UploadMaxAge = 24 * time.Hour
)

// NewS3 connects to the bucket (creating it if missing) and removes temp
// objects and multipart uploads that a crashed process abandoned.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" || cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("artifacts: S3 needs an endpoint, a bucket, an access key and a secret key")
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.UseTLS,
		Region: cfg.Region,
		// Auto: virtual-host style for AWS and Google, path style for
		// everything else (MinIO, Ceph, a loopback test server).
		BucketLookup: minio.BucketLookupAuto,
	})
	if err != nil {
		return nil, fmt.Errorf("artifacts: S3 client for %s: %w", cfg.Endpoint, err)
	}
	prefix := cfg.Prefix
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s := &S3{client: client, bucket: cfg.Bucket, prefix: prefix}
	if err := s.ensureBucket(ctx, cfg.Region); err != nil {
		return nil, err
	}
	if err := s.cleanTemp(ctx, time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *S3) ensureBucket(ctx context.Context, region string) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("artifacts: check bucket %s: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region})
	if err != nil && minio.ToErrorResponse(err).Code != minio.BucketAlreadyOwnedByYou {
		return fmt.Errorf("artifacts: create bucket %s: %w", s.bucket, err)
	}
	return nil
}

func (s *S3) blobKey(d Digest) string { return s.prefix + "blobs/sha256/" + d.Hex() }
func (s *S3) tmpPrefix() string       { return s.prefix + "tmp/" }

// cleanTemp removes what failed uploads of dead processes left: completed temp
// objects idle past tempMaxAge and multipart uploads older than
// s3UploadMaxAge. Live uploads of other processes are younger than both.
func (s *S3) cleanTemp(ctx context.Context, now time.Time) error {
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.tmpPrefix(), Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("artifacts: list temp objects: %w", obj.Err)
		}
		if now.Sub(obj.LastModified) <= tempMaxAge {
			continue
		}
		if err := s.client.RemoveObject(ctx, s.bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			return fmt.Errorf("artifacts: remove abandoned temp object %s: %w", obj.Key, err)
		}
	}
	core := minio.Core{Client: s.client}
	for up := range s.client.ListIncompleteUploads(ctx, s.bucket, s.tmpPrefix(), true) {
		if up.Err != nil {
			if isNoSuchUpload(up.Err) {
				continue
			}
			return fmt.Errorf("artifacts: list multipart uploads: %w", up.Err)
		}
		if now.Sub(up.Initiated) <= s3UploadMaxAge {
			continue
		}
		if err := core.AbortMultipartUpload(ctx, s.bucket, up.Key, up.UploadID); err != nil && !isNoSuchUpload(err) {
			return fmt.Errorf("artifacts: abort abandoned upload of %s: %w", up.Key, err)
		}
	}
	return nil
}

// isNoSuchUpload: listing uploads in a bucket that never had one answers
// NoSuchUpload on some servers (gofakes3) instead of an empty list.
func isNoSuchUpload(err error) bool { return minio.ToErrorResponse(err).Code == minio.NoSuchUpload }

// putOptions: UNSIGNED-PAYLOAD rather than minio-go's default streaming
// signature over plain HTTP, because the signature hashes every byte with
// SHA-256 a second time (we already do once), and because aws-chunked part
// bodies are stored undecoded by some S3-compatible servers (gofakes3). The
// request shape is then the same with and without TLS, so the loopback test
// covers the production path; Put checks the stored size itself.
func putOptions() minio.PutObjectOptions {
	return minio.PutObjectOptions{
		ContentType:          "application/octet-stream",
		PartSize:             s3PartSize,
		DisableContentSha256: true,
	}
}

// Put sends a small body in one PUT to its content address. A larger one is
// uploaded to a temp key by a streaming multipart upload while being hashed
// (the digest is known only at the end), then copied server-side to its
// content address. The copy happens even when the blob exists, because it
// refreshes the blob's modification time for GC's grace period.
func (s *S3) Put(ctx context.Context, r io.Reader, maxBytes int64, want Digest) (_ Digest, _ int64, err error) {
	if want != "" {
		if err := want.valid(); err != nil {
			return "", 0, err
		}
	}
	m := newMeter(ctx, r, maxBytes)
	head := make([]byte, s3SinglePutMax)
	n, err := io.ReadFull(m, head)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return s.putSmall(ctx, m, head[:n], want)
	case err != nil:
		return "", 0, fmt.Errorf("artifacts: store upload: %w", m.cause(err))
	}

	tmp := s.tmpPrefix() + uuid.NewString()
	defer func() {
		// Runs after success too: the temp object must go either way. Only
		// a failed upload can have left a multipart upload open.
		if cerr := s.removeTemp(ctx, tmp, err != nil); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	info, err := s.client.PutObject(ctx, s.bucket, tmp, io.MultiReader(bytes.NewReader(head), m), -1, putOptions())
	if err != nil {
		return "", 0, fmt.Errorf("artifacts: upload to %s: %w", tmp, m.cause(err))
	}
	if info.Size != m.n {
		return "", 0, fmt.Errorf("artifacts: upload to %s: server stored %d bytes of %d", tmp, info.Size, m.n)
	}
	d, err := m.check(want)
	if err != nil {
		return "", 0, err
	}
	if err := ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("artifacts: store upload: %w", err)
	}
	dst := minio.CopyDestOptions{Bucket: s.bucket, Object: s.blobKey(d)}
	src := minio.CopySrcOptions{Bucket: s.bucket, Object: tmp}
	if m.n <= s3MaxCopySize {
		_, err = s.client.CopyObject(ctx, dst, src)
	} else {
		_, err = s.client.ComposeObject(ctx, dst, src)
	}
	if err != nil {
		return "", 0, fmt.Errorf("artifacts: publish %s: %w", d, err)
	}
	return d, m.n, nil
}

func (s *S3) putSmall(ctx context.Context, m *meter, body []byte, want Digest) (Digest, int64, error) {
	d, err := m.check(want)
	if err != nil {
		return "", 0, err
	}
	// A single PUT is atomic on S3: the object appears whole or not at all,
	// and a cancelled request leaves nothing.
	_, err = s.client.PutObject(ctx, s.bucket, s.blobKey(d), bytes.NewReader(body), int64(len(body)), putOptions())
	if err != nil {
		return "", 0, fmt.Errorf("artifacts: upload %s: %w", d, err)
	}
	return d, m.n, nil
}

// removeTemp deletes the temp object and, after a failure, aborts any
// multipart upload still open for it: minio-go aborts a failed upload itself,
// but its abort can fail too. It must run even when ctx is what ended the
// upload.
func (s *S3) removeTemp(ctx context.Context, key string, failed bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var errs []error
	if err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		errs = append(errs, fmt.Errorf("artifacts: remove temp object %s: %w", key, err))
	}
	if !failed {
		return errors.Join(errs...)
	}
	if err := s.client.RemoveIncompleteUpload(ctx, s.bucket, key); err != nil && !isNoSuchUpload(err) {
		errs = append(errs, fmt.Errorf("artifacts: abort upload of %s: %w", key, err))
	}
	return errors.Join(errs...)
}

// s3Blob is a minio.Object, which issues ranged GETs as it is read and
// sought, with the size learned when it was opened.
type s3Blob struct {
	*minio.Object
	size int64
}

func (b *s3Blob) Size() int64 { return b.size }

// Open stats the object through the minio.Object itself: that single HEAD
// answers ErrNotFound and the size, and it primes the object so that
// http.ServeContent's Seek to the end costs no second request. No data is
// fetched until the first Read, from the offset sought to.
func (s *S3) Open(ctx context.Context, d Digest) (Blob, error) {
	if err := d.valid(); err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.blobKey(d), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("artifacts: open %s: %w", d, err)
	}
	info, err := obj.Stat()
	if err != nil {
		obj.Close()
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil, fmt.Errorf("artifacts: open %s: %w", d, ErrNotFound)
		}
		return nil, fmt.Errorf("artifacts: open %s: %w", d, err)
	}
	return &s3Blob{Object: obj, size: info.Size}, nil
}

// Delete removes the object; S3 treats a missing key as success already.
func (s *S3) Delete(ctx context.Context, d Digest) error {
	if err := d.valid(); err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, s.blobKey(d), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("artifacts: delete %s: %w", d, err)
	}
	return nil
}

// Walk lists the blob prefix. Keys that are not digests are not blobs and are
// skipped, so GC never deletes what it did not write.
func (s *S3) Walk(ctx context.Context, fn func(d Digest, size int64, modified time.Time) error) error {
	base := s.prefix + "blobs/sha256/"
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: base, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("artifacts: list blobs: %w", obj.Err)
		}
		d, err := ParseDigest(digestPrefix + strings.TrimPrefix(obj.Key, base))
		if err != nil {
			continue
		}
		if err := fn(d, obj.Size, obj.LastModified); err != nil {
			return err
		}
	}
	return nil
}
