package artifacts

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
)

// fakeClock is the S3 server's clock: real time plus an offset a test can
// move, so objects can be given an age. (gofakes3's FixedTimeSource is not
// safe for concurrent use.)
type fakeClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *fakeClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *fakeClock) set(off time.Duration) {
	c.mu.Lock()
	c.off = off
	c.mu.Unlock()
}

type s3Fixture struct {
	s     *S3
	clock *fakeClock
	cfg   S3Config
}

// fakeS3 serves gofakes3's in-memory backend over HTTP on loopback: the store
// talks the real S3 protocol through minio-go, only the server is fake.
func fakeS3(t *testing.T) (*fakeClock, S3Config) {
	t.Helper()
	clock := &fakeClock{}
	faker := gofakes3.New(s3mem.New(s3mem.WithTimeSource(clock)),
		gofakes3.WithTimeSource(clock),
		gofakes3.WithTimeSkewLimit(0), // the clock is moved on purpose
	)
	srv := httptest.NewServer(faker.Server())
	t.Cleanup(srv.Close)
	return clock, S3Config{
		Endpoint:  strings.TrimPrefix(srv.URL, "http://"),
		Bucket:    "maestro-artifacts",
		Region:    "us-east-1",
		AccessKey: "test-access",
		SecretKey: "test-secret",
		Prefix:    "registry", // NewS3 adds the "/"
	}
}

func openS3(t *testing.T) (Store, fixture) {
	clock, cfg := fakeS3(t)
	s, err := NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return s, s3Fixture{s: s, clock: clock, cfg: cfg}
}

func (f s3Fixture) leftovers(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	var names []string
	for obj := range f.s.client.ListObjectsIter(ctx, f.s.bucket, minio.ListObjectsOptions{Prefix: f.s.tmpPrefix(), Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("list temp objects: %v", obj.Err)
		}
		names = append(names, "object "+obj.Key)
	}
	for up := range f.s.client.ListIncompleteUploads(ctx, f.s.bucket, "", true) {
		if up.Err != nil {
			if isNoSuchUpload(up.Err) {
				continue
			}
			t.Fatalf("list multipart uploads: %v", up.Err)
		}
		names = append(names, "multipart upload "+up.Key)
	}
	return names
}

func (f s3Fixture) putAt(t *testing.T, data []byte, at time.Time) Digest {
	t.Helper()
	f.clock.set(time.Until(at))
	defer f.clock.set(0)
	return mustPut(t, f.s, data)
}

func TestS3Contract(t *testing.T) {
	runContract(t, backend{name: "s3", open: openS3})
}

func TestS3Layout(t *testing.T) {
	s, _ := openS3(t)
	s3 := s.(*S3)
	d := mustPut(t, s, []byte("weights"))
	info, err := s3.client.StatObject(context.Background(), s3.bucket, "registry/blobs/sha256/"+d.Hex(), minio.StatObjectOptions{})
	if err != nil || info.Size != 7 {
		t.Errorf("blob object: size %d, %v", info.Size, err)
	}
}

// Temp objects and multipart uploads of a crashed process go on the next
// start; those of uploads that may still be running stay.
func TestS3CleansAbandonedTemp(t *testing.T) {
	clock, cfg := fakeS3(t)
	s, err := NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	core := minio.Core{Client: s.client}
	put := func(key string) {
		if _, err := s.client.PutObject(ctx, s.bucket, key, bytes.NewReader([]byte("partial")), 7, minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
			t.Fatal(err)
		}
	}
	start := func(key string) {
		if _, err := core.NewMultipartUpload(ctx, s.bucket, key, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	clock.set(-48 * time.Hour)
	put("registry/tmp/abandoned")
	start("registry/tmp/abandoned-upload")
	clock.set(-2 * time.Hour)
	start("registry/tmp/slow-upload") // initiated 2 h ago, parts may still be arriving
	clock.set(0)
	put("registry/tmp/live")

	if _, err := NewS3(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	got := s3Fixture{s: s}.leftovers(t)
	want := []string{"object registry/tmp/live", "multipart upload registry/tmp/slow-upload"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("after NewS3: %v, want %v", got, want)
	}
}

func TestS3ConfigRequired(t *testing.T) {
	_, cfg := fakeS3(t)
	cfg.SecretKey = ""
	if _, err := NewS3(context.Background(), cfg); err == nil {
		t.Error("NewS3 without a secret key succeeded")
	}
}
