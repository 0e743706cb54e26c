package artifacts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"
)

// backend is one Store implementation under the shared contract.
type backend struct {
	name string
	// open returns a fresh, empty store and the means to look behind it.
	open func(t *testing.T) (Store, fixture)
}

// fixture reaches behind the Store interface, where leftovers would hide.
type fixture interface {
	// leftovers names temp files, temp objects and unfinished multipart
	// uploads: anything an upload in progress creates besides the blob.
	leftovers(t *testing.T) []string
	// putAt stores data with its modification time set to at.
	putAt(t *testing.T, data []byte, at time.Time) Digest
}

// streamSize is large enough to take every backend's streaming path: on S3
// it is above the single-PUT read-ahead and spans two 16 MiB parts.
const streamSize = 20<<20 + 7

func sha(data []byte) Digest {
	sum := sha256.Sum256(data)
	return Digest("sha256:" + hex.EncodeToString(sum[:]))
}

func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	pseudoRandom([32]byte{seed}, int64(n)).Read(b)
	return b
}

// blobs lists what Walk reports.
func blobs(t *testing.T, s Store) map[Digest]int64 {
	t.Helper()
	got := map[Digest]int64{}
	err := s.Walk(context.Background(), func(d Digest, size int64, _ time.Time) error {
		got[d] = size
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	return got
}

// assertEmpty checks that a failed upload left nothing anywhere.
func assertEmpty(t *testing.T, s Store, f fixture) {
	t.Helper()
	if got := blobs(t, s); len(got) != 0 {
		t.Errorf("blobs left behind: %v", got)
	}
	if got := f.leftovers(t); len(got) != 0 {
		t.Errorf("temp data left behind: %v", got)
	}
}

func mustPut(t *testing.T, s Store, data []byte) Digest {
	t.Helper()
	d, n, err := s.Put(context.Background(), bytes.NewReader(data), -1, "")
	if err != nil {
		t.Fatalf("Put(%d bytes): %v", len(data), err)
	}
	if n != int64(len(data)) {
		t.Fatalf("Put size = %d, want %d", n, len(data))
	}
	return d
}

func readBlob(t *testing.T, s Store, d Digest) []byte {
	t.Helper()
	b, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	if b.Size() != int64(len(data)) {
		t.Errorf("Size() = %d, read %d bytes", b.Size(), len(data))
	}
	return data
}

// failingReader yields data and then, at byte at, either fails (an upload
// cut off midway) or runs hook (e.g. cancels the upload's context) and goes on.
type failingReader struct {
	data []byte
	off  int
	at   int
	err  error
	hook func()
	read int // bytes handed out, to check how far Put reads
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.off == r.at {
		if r.hook != nil {
			r.hook()
			r.hook = nil
		} else if r.err != nil {
			return 0, r.err
		}
	}
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	end := len(r.data)
	if r.off < r.at {
		end = r.at
	}
	n := copy(p, r.data[r.off:end])
	r.off += n
	r.read += n
	return n, nil
}

var errCutOff = errors.New("connection reset by peer")

func runContract(t *testing.T, b backend) {
	sizes := []int{0, 1, 4<<10 + 3, streamSize}

	t.Run("RoundTrip", func(t *testing.T) {
		t.Parallel()
		s, _ := b.open(t)
		want := map[Digest]int64{}
		for i, n := range sizes {
			data := randomBytes(byte(i), n)
			d := mustPut(t, s, data)
			if d != sha(data) {
				t.Errorf("%d bytes: digest %s, want %s", n, d, sha(data))
			}
			if got := readBlob(t, s, d); !bytes.Equal(got, data) {
				t.Errorf("%d bytes: read back %d different bytes", n, len(got))
			}
			want[d] = int64(n)
		}
		if got := blobs(t, s); !maps.Equal(got, want) {
			t.Errorf("Walk = %v, want %v", got, want)
		}
	})

	t.Run("PutTwiceStoresOnce", func(t *testing.T) {
		t.Parallel()
		s, f := b.open(t)
		for _, n := range []int{10, streamSize} {
			data := randomBytes(7, n)
			// The first copy is old; storing it again must make it young,
			// or GC could collect it before the new reference is recorded.
			d1 := f.putAt(t, data, time.Now().Add(-48*time.Hour))
			before := time.Now().Add(-time.Minute) // S3 times have second precision
			d2 := mustPut(t, s, data)
			if d1 != d2 {
				t.Fatalf("%d bytes: digests %s then %s", n, d1, d2)
			}
			var count int
			var modified time.Time
			s.Walk(context.Background(), func(d Digest, _ int64, m time.Time) error {
				if d == d1 {
					count++
					modified = m
				}
				return nil
			})
			if count != 1 {
				t.Errorf("%d bytes: Walk saw the blob %d times", n, count)
			}
			if modified.Before(before) {
				t.Errorf("%d bytes: second Put left modification time at %v", n, modified)
			}
			if got := f.leftovers(t); len(got) != 0 {
				t.Errorf("temp data left behind: %v", got)
			}
		}
	})

	t.Run("Range", func(t *testing.T) {
		t.Parallel()
		s, _ := b.open(t)
		data := randomBytes(3, 100<<10)
		d := mustPut(t, s, data)
		size := len(data)
		cases := []struct {
			rng        string
			status     int
			start, end int // served bytes data[start:end]
		}{
			{"", http.StatusOK, 0, size},
			{"bytes=1000-1999", http.StatusPartialContent, 1000, 2000},
			{"bytes=-10", http.StatusPartialContent, size - 10, size},
			{"bytes=50000-", http.StatusPartialContent, 50000, size},
		}
		for _, c := range cases {
			blob, err := s.Open(context.Background(), d)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if c.rng != "" {
				req.Header.Set("Range", c.rng)
			}
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Type", "application/octet-stream")
			rec.Header().Set("ETag", strconv.Quote(d.String()))
			http.ServeContent(rec, req, "", time.Time{}, blob)
			blob.Close()
			if rec.Code != c.status {
				t.Errorf("Range %q: status %d, want %d", c.rng, rec.Code, c.status)
				continue
			}
			if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(c.end-c.start) {
				t.Errorf("Range %q: Content-Length %s, want %d", c.rng, cl, c.end-c.start)
			}
			if !bytes.Equal(rec.Body.Bytes(), data[c.start:c.end]) {
				t.Errorf("Range %q: wrong body (%d bytes)", c.rng, rec.Body.Len())
			}
		}

		// An unchanged blob is not sent again (ETag = digest).
		blob, err := s.Open(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("If-None-Match", strconv.Quote(d.String()))
		rec := httptest.NewRecorder()
		rec.Header().Set("ETag", strconv.Quote(d.String()))
		http.ServeContent(rec, req, "", time.Time{}, blob)
		blob.Close()
		if rec.Code != http.StatusNotModified {
			t.Errorf("If-None-Match: status %d, want 304", rec.Code)
		}

		// Seek directly, back and forth.
		blob, err = s.Open(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		defer blob.Close()
		steps := []struct {
			off    int64
			whence int
			pos    int
		}{{-10, io.SeekEnd, size - 10}, {5, io.SeekStart, 5}, {100, io.SeekCurrent, 115}, {0, io.SeekStart, 0}}
		for _, st := range steps {
			pos, err := blob.Seek(st.off, st.whence)
			if err != nil || pos != int64(st.pos) {
				t.Fatalf("Seek(%d, %d) = %d, %v; want %d", st.off, st.whence, pos, err, st.pos)
			}
			buf := make([]byte, 10)
			if _, err := io.ReadFull(blob, buf); err != nil {
				t.Fatalf("read after Seek(%d, %d): %v", st.off, st.whence, err)
			}
			if !bytes.Equal(buf, data[st.pos:st.pos+10]) {
				t.Errorf("read after Seek(%d, %d): wrong bytes", st.off, st.whence)
			}
		}
	})

	t.Run("EmptyBlobServed", func(t *testing.T) {
		t.Parallel()
		s, _ := b.open(t)
		d := mustPut(t, s, nil)
		blob, err := s.Open(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		defer blob.Close()
		rec := httptest.NewRecorder()
		rec.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(rec, httptest.NewRequest(http.MethodGet, "/", nil), "", time.Time{}, blob)
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Length") != "0" || rec.Body.Len() != 0 {
			t.Errorf("empty blob: status %d, Content-Length %q, %d bytes", rec.Code, rec.Header().Get("Content-Length"), rec.Body.Len())
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		t.Parallel()
		s, _ := b.open(t)
		missing := sha([]byte("never stored"))
		if _, err := s.Open(context.Background(), missing); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(missing) = %v, want ErrNotFound", err)
		}
		if err := s.Delete(context.Background(), missing); err != nil {
			t.Errorf("Delete(missing) = %v, want nil", err)
		}
		d := mustPut(t, s, []byte("x"))
		if err := s.Delete(context.Background(), d); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Open(context.Background(), d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(deleted) = %v, want ErrNotFound", err)
		}
		for _, bad := range []Digest{"sha256:../../../etc/passwd", "", "sha256:" + Digest(bytes.Repeat([]byte("A"), 64))} {
			if _, err := s.Open(context.Background(), bad); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Open(%q) = %v, want a malformed-digest error", bad, err)
			}
			if err := s.Delete(context.Background(), bad); err == nil {
				t.Errorf("Delete(%q) succeeded", bad)
			}
		}
	})

	t.Run("TooLarge", func(t *testing.T) {
		t.Parallel()
		for _, max := range []int{100, streamSize - 1<<20} {
			s, f := b.open(t)
			data := randomBytes(1, max+1<<20)
			r := &failingReader{data: data, at: -1}
			_, _, err := s.Put(context.Background(), r, int64(max), "")
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("limit %d: Put = %v, want ErrTooLarge", max, err)
			}
			if r.read > max+1 {
				t.Errorf("limit %d: Put read %d bytes, want at most %d", max, r.read, max+1)
			}
			assertEmpty(t, s, f)
			// Exactly at the limit is fine.
			d, n, err := s.Put(context.Background(), bytes.NewReader(data[:max]), int64(max), "")
			if err != nil || n != int64(max) || d != sha(data[:max]) {
				t.Errorf("limit %d: Put(at limit) = %s, %d, %v", max, d, n, err)
			}
		}
	})

	t.Run("DigestMismatch", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int{10, streamSize} {
			s, f := b.open(t)
			data := randomBytes(2, n)
			_, _, err := s.Put(context.Background(), bytes.NewReader(data), -1, sha([]byte("something else")))
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("%d bytes: Put = %v, want ErrDigestMismatch", n, err)
			}
			assertEmpty(t, s, f)
			if d, _, err := s.Put(context.Background(), bytes.NewReader(data), -1, sha(data)); err != nil || d != sha(data) {
				t.Errorf("%d bytes: Put(correct digest) = %s, %v", n, d, err)
			}
		}
	})

	t.Run("Interrupted", func(t *testing.T) {
		t.Parallel()
		// Cut off within the read-ahead, and after a whole S3 part went up.
		for _, at := range []int{1000, 17 << 20} {
			s, f := b.open(t)
			r := &failingReader{data: randomBytes(4, streamSize), at: at, err: errCutOff}
			_, _, err := s.Put(context.Background(), r, -1, "")
			if !errors.Is(err, errCutOff) {
				t.Fatalf("cut at %d: Put = %v, want the reader's error", at, err)
			}
			assertEmpty(t, s, f)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		t.Parallel()
		for _, at := range []int{1000, 17 << 20} {
			s, f := b.open(t)
			ctx, cancel := context.WithCancel(context.Background())
			r := &failingReader{data: randomBytes(5, streamSize), at: at, hook: cancel}
			_, _, err := s.Put(ctx, r, -1, "")
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancel at %d: Put = %v, want context.Canceled", at, err)
			}
			assertEmpty(t, s, f)
		}
	})

	t.Run("GC", func(t *testing.T) {
		t.Parallel()
		s, f := b.open(t)
		now := time.Now()
		old := now.Add(-3 * time.Hour)
		garbage := randomBytes(10, 1000)
		dGarbage := f.putAt(t, garbage, old)
		dKept := f.putAt(t, randomBytes(11, 2000), old)
		dYoung := mustPut(t, s, randomBytes(12, 3000)) // an upload whose event is not recorded yet
		referenced := func(d Digest) bool { return d == dKept }

		res, err := GC(context.Background(), s, referenced, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		want := GCResult{Scanned: 3, Deleted: 1, BytesFreed: int64(len(garbage)), Kept: 2}
		if res != want {
			t.Errorf("GC = %+v, want %+v", res, want)
		}
		got := slices.Sorted(maps.Keys(blobs(t, s)))
		wantLeft := []Digest{dKept, dYoung}
		slices.Sort(wantLeft)
		if !slices.Equal(got, wantLeft) {
			t.Errorf("after GC: %v, want %v", got, wantLeft)
		}
		if _, err := s.Open(context.Background(), dGarbage); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(collected) = %v, want ErrNotFound", err)
		}

		// Once the grace period is over, the unreferenced upload goes too.
		res, err = GC(context.Background(), s, referenced, time.Hour, now.Add(2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if res.Deleted != 1 || res.Kept != 1 {
			t.Errorf("second GC = %+v, want 1 deleted and 1 kept", res)
		}
		if got := blobs(t, s); len(got) != 1 || got[dKept] != 2000 {
			t.Errorf("after second GC: %v", got)
		}
	})

	t.Run("Throughput", func(t *testing.T) {
		t.Parallel()
		s, f := b.open(t)
		up, down, err := Throughput(context.Background(), s, 8<<20)
		if err != nil {
			t.Fatal(err)
		}
		if up <= 0 || down <= 0 {
			t.Errorf("Throughput = %v, %v MiB/s", up, down)
		}
		assertEmpty(t, s, f)
	})
}

func TestParseDigest(t *testing.T) {
	good := "sha256:" + hex.EncodeToString(make([]byte, 32))
	cases := map[string]bool{
		good:                                  true,
		string(sha([]byte("x"))):              true,
		"":                                    false,
		"sha256:":                             false,
		good[:len(good)-1]:                    false,
		good + "0":                            false,
		"SHA256:" + good[7:]:                  false,
		"sha512:" + good[7:]:                  false,
		"sha256:" + fmt.Sprintf("%064X", 255): false,
		"sha256:" + good[7:70] + "g":          false,
		"sha256:../" + good[10:]:              false,
	}
	for in, ok := range cases {
		d, err := ParseDigest(in)
		if (err == nil) != ok {
			t.Errorf("ParseDigest(%q) error = %v, want ok=%v", in, err, ok)
		}
		if ok && (string(d) != in || d.Hex() != in[7:]) {
			t.Errorf("ParseDigest(%q) = %q, Hex %q", in, d, d.Hex())
		}
	}
}

// FuzzParseDigest: digests arrive in URLs and request bodies, and an accepted
// one becomes a file name.
func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + hex.EncodeToString(make([]byte, 32)))
	f.Add("sha256:../../etc/passwd")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		if string(d) != s || len(d.Hex()) != 64 {
			t.Fatalf("ParseDigest(%q) = %q", s, d)
		}
		if _, err := hex.DecodeString(d.Hex()); err != nil || d.Hex() != fmt.Sprintf("%x", mustDecode(d.Hex())) {
			t.Fatalf("ParseDigest(%q) accepted a non-canonical digest", s)
		}
	})
}

func mustDecode(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}
