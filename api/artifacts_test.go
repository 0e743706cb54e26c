package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// Artifacts through HTTP: upload (streamed, hashed, content-addressed, then
// an event), download (Content-Length, ETag, ranges, revalidation), list;
// on the filesystem store and on S3 (gofakes3 over loopback, spoken to by
// minio-go). Whatever fails — a bad path, a digest mismatch, the size limit,
// a client that disappears mid-body, a caller without the right — leaves no
// artifact, no event, no blob and no temporary file or object behind.

var largeMiB = flag.Int64("artifacts.large-mib", 256, "size in MiB of the large artifact streamed through HTTP")

// artifactMax is the size limit of the round-trip environments: above the
// S3 store's 5 MiB read-ahead, so interrupted uploads there reach the
// multipart path, yet cheap to exceed.
const artifactMax = 8 << 20

// ---- request log: knowing when the server is done with a request ----

// requestLog counts the API's request log lines per method and route, so a
// test can wait until the server has finished a request whose client gave
// up (the server logs after the handler returned).
type requestLog struct {
	mu     sync.Mutex
	n      map[string]int
	faults []string // "request failed" lines: errors the server blames on itself
}

func (l *requestLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *requestLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *requestLog) WithGroup(string) slog.Handler            { return l }
func (l *requestLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "request failed" {
		l.mu.Lock()
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				l.faults = append(l.faults, a.Value.String())
			}
			return true
		})
		l.mu.Unlock()
	}
	if r.Message != "request" {
		return nil
	}
	var method, route string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "method":
			method = a.Value.String()
		case "route":
			route = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	l.n[method+" "+route]++
	l.mu.Unlock()
	return nil
}

const artifactRoute = "/api/v1/projects/{project}/models/{name}/versions/{version}/artifacts/*"

func (l *requestLog) count(method string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[method+" "+artifactRoute]
}

// ---- S3 on loopback ----

type fakeS3 struct {
	cfg    artifacts.S3Config
	client *minio.Client
}

// startFakeS3 serves gofakes3's in-memory backend over HTTP on loopback:
// the platform's store talks the real S3 protocol through minio-go.
func startFakeS3(t *testing.T) fakeS3 {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	cfg := artifacts.S3Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: "maestro-artifacts",
		Region: "us-east-1", AccessKey: "test-access", SecretKey: "test-secret", UseTLS: false}
	client, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""), Region: cfg.Region})
	if err != nil {
		t.Fatal(err)
	}
	return fakeS3{cfg: cfg, client: client}
}

// ---- fixture ----

type artEnv struct {
	e    *testenv.Env
	log  *requestLog
	s3   *fakeS3 // nil: filesystem store
	base string  // .../versions/1/artifacts

	owner, editor, viewer, outsider regClient
}

func startArtifacts(t *testing.T, s3 *fakeS3, max int64) *artEnv {
	t.Helper()
	cfg := testenv.Config(t)
	log := &requestLog{n: map[string]int{}}
	cfg.Logger = slog.New(log)
	cfg.ArtifactMaxBytes = max
	if s3 != nil {
		cfg.S3 = s3.cfg
	}
	a := &artEnv{e: testenv.Start(t, cfg), log: log, s3: s3}
	a.setup(t, "art")
	return a
}

// setup creates users, a project with them as members, a model and its
// first version, through the registry routes.
func (a *artEnv) setup(t *testing.T, prefix string) {
	t.Helper()
	e := a.e
	admin := e.Admin("root@" + prefix + ".test").AccessToken
	a.owner = regUser(e, admin, "owner@"+prefix+".test", "member")
	a.editor = regUser(e, admin, "editor@"+prefix+".test", "viewer")
	a.viewer = regUser(e, admin, "viewer@"+prefix+".test", "viewer")
	a.outsider = regUser(e, admin, "outsider@"+prefix+".test", "member")
	pp := projectsPath + "/" + prefix
	call(t, e, 201, "POST", projectsPath, a.owner.Token, map[string]any{"name": prefix})
	call(t, e, 200, "PUT", pp+"/members/"+a.editor.ID, a.owner.Token, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", pp+"/members/"+a.viewer.ID, a.owner.Token, map[string]any{"role": "viewer"})
	call(t, e, 201, "POST", pp+"/models", a.editor.Token, map[string]any{"name": "weights"})
	call(t, e, 201, "POST", pp+"/models/weights/versions", a.editor.Token, map[string]any{})
	a.base = pp + "/models/weights/versions/1/artifacts"
}

func (a *artEnv) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := a.e.P.Store.LastSequence(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// blobs is what the store holds: digest → size.
func (a *artEnv) blobs(t *testing.T) map[artifacts.Digest]int64 {
	t.Helper()
	out := map[artifacts.Digest]int64{}
	err := a.e.P.Blobs.Walk(context.Background(), func(d artifacts.Digest, size int64, _ time.Time) error {
		out[d] = size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// leftovers lists what failed uploads could leave besides blobs: temp
// files (filesystem), or objects outside blobs/ and open multipart uploads
// (S3).
func (a *artEnv) leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	if a.s3 == nil {
		entries, err := os.ReadDir(filepath.Join(a.e.Config.DataDir, "artifacts", "tmp"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, "temp file "+e.Name())
		}
		return out
	}
	ctx := context.Background()
	for obj := range a.s3.client.ListObjects(ctx, a.s3.cfg.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		if !strings.HasPrefix(obj.Key, "blobs/sha256/") {
			out = append(out, "object "+obj.Key)
		}
	}
	for up := range a.s3.client.ListIncompleteUploads(ctx, a.s3.cfg.Bucket, "", true) {
		if up.Err != nil {
			if minio.ToErrorResponse(up.Err).Code == minio.NoSuchUpload {
				continue
			}
			t.Fatal(up.Err)
		}
		out = append(out, "multipart upload "+up.Key)
	}
	return out
}

func (a *artEnv) list(t *testing.T, token string) []api.ArtifactResponse {
	t.Helper()
	return asJSON[api.ArtifactList](t, call(t, a.e, 200, "GET", a.base, token, nil)).Items
}

// nothingLeft checks the aftermath of a failed upload of data (nil: content
// unknown): the blobs and the stream are as before, nothing is listed
// besides listed, and no temporary file or object is left.
func (a *artEnv) nothingLeft(t *testing.T, what string, blobsBefore map[artifacts.Digest]int64, seqBefore uint64, listed []string) {
	t.Helper()
	if got := a.blobs(t); len(got) != len(blobsBefore) {
		t.Errorf("%s: the store holds %d blobs, before %d: %v", what, len(got), len(blobsBefore), got)
	}
	if seq := a.lastSeq(t); seq != seqBefore {
		t.Errorf("%s: the stream moved from %d to %d", what, seqBefore, seq)
	}
	var paths []string
	for _, it := range a.list(t, a.editor.Token) {
		paths = append(paths, it.Path)
	}
	if !slices.Equal(paths, listed) {
		t.Errorf("%s: listed %q, want %q", what, paths, listed)
	}
	if l := a.leftovers(t); len(l) > 0 {
		t.Errorf("%s: left behind %v", what, l)
	}
}

// ---- raw requests (streamed bodies, Expect: 100-continue) ----

// countingReader counts what the transport took from the body and can fail
// after failAt bytes (failAt < 0: never).
type countingReader struct {
	r      io.Reader
	n      atomic.Int64
	failAt int64
}

var errClientGaveUp = errors.New("the client gave up")

func (c *countingReader) Read(p []byte) (int, error) {
	if c.failAt >= 0 {
		left := c.failAt - c.n.Load()
		if left <= 0 {
			return 0, errClientGaveUp
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// rawClient waits as long as it takes for 100 Continue, so a refusal
// before the body is read is seen as such however slow the machine is.
var rawClient = &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute, DisableKeepAlives: true}}

type rawResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// rawPut sends body (length < 0: chunked) with the given headers and
// returns the answer, or the transport's error.
func (a *artEnv) rawPut(apath, token string, body io.Reader, length int64, headers ...string) (rawResponse, error) {
	req, err := http.NewRequest("PUT", a.e.URL+a.base+"/"+apath, body)
	if err != nil {
		return rawResponse{}, err
	}
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		return rawResponse{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return rawResponse{}, err
	}
	return rawResponse{resp.StatusCode, resp.Header, out}, nil
}

func (r rawResponse) problem(t *testing.T, status int, code string) {
	t.Helper()
	if _, err := checkProblem(testenv.Response{Status: r.Status, Header: r.Header, Body: r.Body}, status, code); err != nil {
		t.Fatal(err)
	}
}

// ---- helpers ----

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	rand.NewChaCha8(s).Read(b)
	return b
}

func digestOf(b []byte) artifacts.Digest {
	sum := sha256.Sum256(b)
	return artifacts.Digest("sha256:" + hex.EncodeToString(sum[:]))
}

func contentDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
}

func octets(extra ...string) []string {
	return append([]string{"Content-Type", "application/octet-stream"}, extra...)
}

// ---- the tests ----

func TestArtifactsFilesystem(t *testing.T) {
	t.Parallel()
	testArtifacts(t, startArtifacts(t, nil, artifactMax))
}

func TestArtifactsS3(t *testing.T) {
	t.Parallel()
	s3 := startFakeS3(t)
	testArtifacts(t, startArtifacts(t, &s3, artifactMax))
}

func testArtifacts(t *testing.T, a *artEnv) {
	e := a.e
	if a.s3 != nil {
		if _, ok := e.P.Blobs.(*artifacts.S3); !ok {
			t.Fatalf("the platform's store is %T, want *artifacts.S3", e.P.Blobs)
		}
	} else if _, ok := e.P.Blobs.(*artifacts.FS); !ok {
		t.Fatalf("the platform's store is %T, want *artifacts.FS", e.P.Blobs)
	}
	data := randomBytes(1, 300<<10)
	d := digestOf(data)
	path := a.base + "/model.onnx"

	// Upload: 201 with digest and size, one event.
	seq := a.lastSeq(t)
	r := call(t, e, 201, "PUT", path, a.editor.Token, data, "Content-Type", "application/x-onnx")
	got := asJSON[api.ArtifactResponse](t, r)
	if got.Path != "model.onnx" || got.Digest != string(d) || got.Size != int64(len(data)) || got.ContentType != "application/x-onnx" || got.RecordedAt.IsZero() {
		t.Fatalf("upload answered %s", r.Body)
	}
	if s, _ := strconv.ParseUint(r.Header.Get("Maestro-Sequence"), 10, 64); s != seq+1 || a.lastSeq(t) != seq+1 {
		t.Fatalf("upload: Maestro-Sequence %q, stream %d → %d; want one event", r.Header.Get("Maestro-Sequence"), seq, a.lastSeq(t))
	}
	if b := a.blobs(t); b[d] != int64(len(data)) || len(b) != 1 {
		t.Fatalf("store after upload: %v", b)
	}

	// The same bytes again: 200, nothing recorded.
	seq = a.lastSeq(t)
	r = call(t, e, 200, "PUT", path, a.editor.Token, data, "Content-Type", "application/x-onnx")
	if r.Header.Get("Maestro-Sequence") != "" || a.lastSeq(t) != seq {
		t.Fatalf("repeated upload: Maestro-Sequence %q, stream %d → %d", r.Header.Get("Maestro-Sequence"), seq, a.lastSeq(t))
	}
	if again := asJSON[api.ArtifactResponse](t, r); again != got {
		t.Fatalf("repeated upload answered %+v, first %+v", again, got)
	}

	// Download: bytes, Content-Length, ETag, the recorded type.
	etag := `"` + string(d) + `"`
	r = call(t, e, 200, "GET", path, a.viewer.Token, nil)
	if !bytes.Equal(r.Body, data) || r.Header.Get("Content-Length") != strconv.Itoa(len(data)) || r.Header.Get("ETag") != etag ||
		r.Header.Get("Content-Type") != "application/x-onnx" || r.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("download: %d bytes, headers %v", len(r.Body), r.Header)
	}
	if cd := r.Header.Get("Content-Disposition"); cd != `attachment; filename=model.onnx` {
		t.Errorf("Content-Disposition %q", cd)
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	// HEAD: size and digest without the bytes.
	if r = call(t, e, 200, "HEAD", path, a.viewer.Token, nil); len(r.Body) != 0 || r.Header.Get("ETag") != etag ||
		r.Header.Get("Content-Length") != fmt.Sprint(len(data)) {
		t.Fatalf("HEAD: %d bytes, headers %v", len(r.Body), r.Header)
	}
	// Ranges, revalidation, preconditions.
	r = call(t, e, 206, "GET", path, a.viewer.Token, nil, "Range", "bytes=1000-1999")
	if !bytes.Equal(r.Body, data[1000:2000]) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(data)) || r.Header.Get("Content-Length") != "1000" {
		t.Fatalf("range: %d bytes, headers %v", len(r.Body), r.Header)
	}
	r = call(t, e, 206, "GET", path, a.viewer.Token, nil, "Range", "bytes=-10")
	if !bytes.Equal(r.Body, data[len(data)-10:]) {
		t.Fatalf("suffix range: %x", r.Body)
	}
	r = call(t, e, 206, "GET", path, a.viewer.Token, nil, "Range", "bytes=0-0", "If-Range", etag)
	if !bytes.Equal(r.Body, data[:1]) {
		t.Fatalf("If-Range with the current ETag: %x", r.Body)
	}
	if r = call(t, e, 200, "GET", path, a.viewer.Token, nil, "Range", "bytes=0-0", "If-Range", `"sha256:old"`); len(r.Body) != len(data) {
		t.Fatalf("If-Range with another ETag sent %d bytes, want all", len(r.Body))
	}
	if r = call(t, e, 304, "GET", path, a.viewer.Token, nil, "If-None-Match", etag); len(r.Body) != 0 || r.Header.Get("ETag") != etag {
		t.Fatalf("If-None-Match: %d bytes, headers %v", len(r.Body), r.Header)
	}
	call(t, e, 200, "GET", path, a.viewer.Token, nil, "If-Match", etag)
	callProblem(t, e, 412, "precondition-failed", "GET", path, a.viewer.Token, nil, "If-Match", `"sha256:other"`)
	callProblem(t, e, 416, "range-not-satisfiable", "GET", path, a.viewer.Token, nil, "Range", fmt.Sprintf("bytes=%d-", len(data)+5))
	if r = e.Do("GET", path, a.viewer.Token, nil, "Range", "bytes=1-0"); r.Status != 416 || r.Header.Get("Content-Disposition") != "" {
		t.Fatalf("an inverted range: %d %v", r.Status, r.Header)
	}

	// Nested paths; the list is in path order.
	nested := randomBytes(2, 1000)
	call(t, e, 201, "PUT", a.base+"/a/b/c.bin", a.editor.Token, nested, octets()...)
	if r = call(t, e, 200, "GET", a.base+"/a/b/c.bin", a.viewer.Token, nil); !bytes.Equal(r.Body, nested) {
		t.Fatal("nested artifact came back different")
	}
	// An escaped "/" names the same nested path.
	if r = call(t, e, 200, "GET", a.base+"/a%2Fb%2Fc.bin", a.viewer.Token, nil); !bytes.Equal(r.Body, nested) {
		t.Fatal("a%2Fb%2Fc.bin is not a/b/c.bin")
	}
	empty := call(t, e, 201, "PUT", a.base+"/empty", a.editor.Token, []byte{}, octets()...)
	if got := asJSON[api.ArtifactResponse](t, empty); got.Size != 0 || got.Digest != string(digestOf(nil)) {
		t.Fatalf("empty artifact: %s", empty.Body)
	}
	list := a.list(t, a.viewer.Token)
	if len(list) != 3 || list[0].Path != "a/b/c.bin" || list[1].Path != "empty" || list[2] != got {
		t.Fatalf("list: %+v", list)
	}
	call(t, e, 200, "GET", a.base+"/empty", a.viewer.Token, nil)

	// Different bytes under an existing path replace the artifact: 200, an event.
	seq = a.lastSeq(t)
	r = call(t, e, 200, "PUT", a.base+"/empty", a.editor.Token, []byte("now something"), octets()...)
	if r.Header.Get("Maestro-Sequence") == "" || a.lastSeq(t) != seq+1 {
		t.Fatalf("replacing upload: Maestro-Sequence %q, stream %d → %d", r.Header.Get("Maestro-Sequence"), seq, a.lastSeq(t))
	}
	if r = call(t, e, 200, "GET", a.base+"/empty", a.viewer.Token, nil); string(r.Body) != "now something" {
		t.Fatalf("replaced artifact reads %q", r.Body)
	}
	listed := []string{"a/b/c.bin", "empty", "model.onnx"}

	// From here on every upload fails; each leaves nothing behind.
	blobs, seq := a.blobs(t), a.lastSeq(t)
	bad := randomBytes(3, 2000)

	// Invalid paths: 400 before anything is read or stored.
	for _, p := range []string{"../x", "a/../../x", "%2E%2E/x", "a//b", "a/./b", "./a", "a/", "a%2F", "%2Fa", "a%00b", `a\b`, strings.Repeat("x", 1025)} {
		callProblem(t, e, 400, "validation-failed", "PUT", a.base+"/"+p, a.editor.Token, bad, octets()...)
		callProblem(t, e, 400, "validation-failed", "GET", a.base+"/"+p, a.viewer.Token, nil)
	}
	// No path at all is no artifact route (the list route takes no PUT).
	if r = e.Do("PUT", a.base+"/", a.editor.Token, bad, octets()...); r.Status != 400 && r.Status != 404 && r.Status != 405 {
		t.Fatalf("PUT %s/: %d %s", a.base, r.Status, r.Body)
	}
	callProblem(t, e, 404, "not-found", "GET", a.base+"/missing.bin", a.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "PUT", projectsPath+"/art/models/weights/versions/9/artifacts/x", a.editor.Token, bad, octets()...)
	callProblem(t, e, 404, "not-found", "PUT", projectsPath+"/art/models/nope/versions/1/artifacts/x", a.editor.Token, bad, octets()...)
	callProblem(t, e, 400, "validation-failed", "PUT", a.base+"/x", a.editor.Token, bad, "Content-Type", "not a type")
	a.nothingLeft(t, "invalid requests", blobs, seq, listed)

	// Content-Digest: a mismatch is 422 and stores nothing; a bad header 400.
	callProblem(t, e, 422, "digest-mismatch", "PUT", a.base+"/bad.bin", a.editor.Token, bad, octets("Content-Digest", contentDigest(data))...)
	for _, h := range []string{"sha-256=abc", "sha-256=:" + base64.StdEncoding.EncodeToString([]byte("short")) + ":", "sha-512=:AAAA:", "sha-256=" + base64.StdEncoding.EncodeToString(make([]byte, 32))} {
		callProblem(t, e, 400, "validation-failed", "PUT", a.base+"/bad.bin", a.editor.Token, bad, octets("Content-Digest", h)...)
	}
	a.nothingLeft(t, "digest mismatch", blobs, seq, listed)

	// Authorization comes before a byte is read: a viewer's upload is
	// refused while its client still waits for 100 Continue.
	body := &countingReader{r: bytes.NewReader(bad), failAt: -1}
	rr, err := a.rawPut("viewer.bin", a.viewer.Token, body, int64(len(bad)), "Expect", "100-continue")
	if err != nil {
		t.Fatal(err)
	}
	rr.problem(t, 403, "forbidden")
	if n := body.n.Load(); n != 0 {
		t.Errorf("the server read %d bytes of a forbidden upload", n)
	}
	callProblem(t, e, 403, "forbidden", "PUT", a.base+"/viewer.bin", a.viewer.Token, bad, octets()...)
	// Non-members learn nothing: 404 everywhere, as for a missing project.
	callProblem(t, e, 404, "not-found", "PUT", a.base+"/x.bin", a.outsider.Token, bad, octets()...)
	callProblem(t, e, 404, "not-found", "GET", path, a.outsider.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", a.base, a.outsider.Token, nil)
	call(t, e, 401, "PUT", a.base+"/x.bin", "", bad, octets()...)
	call(t, e, 401, "GET", path, "", nil)
	a.nothingLeft(t, "refused callers", blobs, seq, listed)

	// The size limit: 413 for a declared length (before reading: the body
	// is never sent) and for a streamed body that runs past it.
	body = &countingReader{r: io.LimitReader(zeros{}, artifactMax+1), failAt: -1}
	if rr, err = a.rawPut("huge.bin", a.editor.Token, body, artifactMax+1, "Expect", "100-continue"); err != nil {
		t.Fatal(err)
	}
	rr.problem(t, 413, "payload-too-large")
	if n := body.n.Load(); n != 0 {
		t.Errorf("the server read %d bytes of an upload declared too large", n)
	}
	before := a.log.count("PUT")
	rr, err = a.rawPut("huge.bin", a.editor.Token, io.LimitReader(zeros{}, artifactMax+(1<<20)), -1)
	if err == nil {
		rr.problem(t, 413, "payload-too-large")
	}
	// (A transport error is allowed too: the server stops reading at the
	// limit and closes the connection while the client may still write.)
	a.waitRequests(t, before+1)
	if rr, err = a.rawPut("limit.bin", a.editor.Token, io.LimitReader(zeros{}, artifactMax), -1); err != nil || rr.Status != 201 {
		t.Fatalf("an upload of exactly the limit: %v %d %s", err, rr.Status, rr.Body)
	}
	blobs = a.blobs(t)
	listed = []string{"a/b/c.bin", "empty", "limit.bin", "model.onnx"}
	seq = a.lastSeq(t)
	a.nothingLeft(t, "size limit", blobs, seq, listed)

	// Interrupted uploads leave nothing: a client whose body fails midway
	// (past the S3 store's read-ahead, so a multipart upload is under way)…
	before = a.log.count("PUT")
	body = &countingReader{r: zeros{}, failAt: 6 << 20}
	if _, err := a.rawPut("cut.bin", a.editor.Token, body, 7<<20); err == nil {
		t.Fatal("an upload whose body failed succeeded")
	}
	a.waitRequests(t, before+1)
	a.nothingLeft(t, "a body that failed midway", blobs, seq, listed)
	// …and a connection closed in the middle of the body.
	before = a.log.count("PUT")
	a.cutConnection(t, "cut.bin", 7<<20, 6<<20)
	a.waitRequests(t, before+1)
	a.nothingLeft(t, "a connection closed mid-body", blobs, seq, listed)
	// The same for a small, chunked body (the single-PUT path on S3).
	before = a.log.count("PUT")
	body = &countingReader{r: zeros{}, failAt: 100 << 10}
	if _, err := a.rawPut("cut.bin", a.editor.Token, body, -1); err == nil {
		t.Fatal("an upload whose body failed succeeded")
	}
	a.waitRequests(t, before+1)
	a.nothingLeft(t, "a chunked body that failed", blobs, seq, listed)

	// Clients that went away are not server faults (no error logged).
	a.log.mu.Lock()
	if len(a.log.faults) > 0 {
		t.Errorf("server errors logged: %q", a.log.faults)
	}
	a.log.mu.Unlock()

	// A good upload after all that still works, with a Content-Digest.
	r = call(t, e, 201, "PUT", a.base+"/checked.bin", a.editor.Token, bad, octets("Content-Digest", "sha-512=:AAAA:, "+contentDigest(bad))...)
	if asJSON[api.ArtifactResponse](t, r).Digest != string(digestOf(bad)) {
		t.Fatalf("checked upload: %s", r.Body)
	}
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// waitRequests waits until the server has logged n artifact uploads.
func (a *artEnv) waitRequests(t *testing.T, n int) {
	t.Helper()
	eventually(t, 30*time.Second, "the server finished the upload", func() error {
		if got := a.log.count("PUT"); got < n {
			return fmt.Errorf("%d uploads logged, want %d", got, n)
		}
		return nil
	})
}

// cutConnection sends an upload of declared bytes over a raw TCP
// connection, writes sent of them and closes the connection.
func (a *artEnv) cutConnection(t *testing.T, apath string, declared, sent int) {
	t.Helper()
	u, err := url.Parse(a.e.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "PUT %s/%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n",
		a.base, apath, u.Host, a.editor.Token, declared)
	if _, err := io.CopyN(w, zeros{}, int64(sent)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// ---- large file, bounded memory ----

// A large artifact (256 MiB by default) streams through HTTP PUT and GET
// on the filesystem store while the heap (server and client both: the
// server runs in this process) stays far below its size. Not parallel, so
// no other test's allocations blur the figure.
//
// Filesystem only: gofakes3 keeps every object in this process's heap, so
// on S3 the figure would measure the fake server (the S3 store itself holds
// one 16 MiB part at a time, see artifacts.TestLargeFileBoundedMemory).
func TestArtifactLargeFileBoundedMemory(t *testing.T) {
	const limit = 64 << 20
	size := *largeMiB << 20
	a := startArtifacts(t, nil, 5<<30)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()

	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	baseline := m.HeapInuse
	peak := memstat.StartHeapPeak()

	sent := sha256.New()
	req, err := http.NewRequest("PUT", a.e.URL+a.base+"/large.bin", io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), size), sent))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+a.editor.Token)
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	up := time.Since(start)
	want := "sha256:" + hex.EncodeToString(sent.Sum(nil))
	if resp.StatusCode != 201 {
		t.Fatalf("upload: %d %s", resp.StatusCode, out)
	}
	var rec api.ArtifactResponse
	testenv.Response{Body: out}.JSON(t, &rec)
	if rec.Digest != want || rec.Size != size {
		t.Fatalf("upload recorded %s, %d bytes; sent %s, %d", rec.Digest, rec.Size, want, size)
	}

	req, _ = http.NewRequest("GET", a.e.URL+a.base+"/large.bin", nil)
	req.Header.Set("Authorization", "Bearer "+a.editor.Token)
	start = time.Now()
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	down := time.Since(start)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("download: %d, Content-Length %d, %v", resp.StatusCode, resp.ContentLength, err)
	}
	high := peak.Stop()
	if n != size || "sha256:"+hex.EncodeToString(got.Sum(nil)) != want || resp.Header.Get("ETag") != `"`+want+`"` {
		t.Fatalf("downloaded %d bytes with digest %x (ETag %s), want %d with %s", n, got.Sum(nil), resp.Header.Get("ETag"), size, want)
	}
	growth := int64(high) - int64(baseline)
	mib := float64(size) / (1 << 20)
	t.Logf("%d MiB through HTTP on the filesystem store: upload %.0f MiB/s (client generates and hashes; server hashes and fsyncs), download %.0f MiB/s (client hashes); heap peak +%.1f MiB",
		*largeMiB, mib/up.Seconds(), mib/down.Seconds(), float64(growth)/(1<<20))
	if growth > limit {
		t.Errorf("heap grew by %d MiB while streaming %d MiB, want under %d MiB", growth>>20, size>>20, limit>>20)
	}
}

// ---- the OpenAPI walk ----

// walkArtifacts exercises every artifact route's success and main errors
// for TestOpenAPIConformance (whose Observe validates each exchange and
// records what was provoked) and returns, per operation, those statuses.
func walkArtifacts(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	a := &artEnv{e: e}
	a.setup(t, "walk")
	pp := projectsPath + "/walk"
	w := artifactWalk{t: t, e: e, base: a.base, editor: a.editor.Token, viewer: a.viewer.Token, outsider: a.outsider.Token}

	add("putModelArtifact", w.puts()...)
	call(t, e, 200, "DELETE", pp, a.owner.Token, nil)
	callProblem(t, e, 409, "project-archived", "PUT", w.path(), a.editor.Token, []byte("late"), octets()...)
	call(t, e, 200, "POST", pp+":restore", a.owner.Token, nil)
	add("putModelArtifact", 409)

	r := call(t, e, 200, "GET", a.base, a.viewer.Token, nil)
	if l := asJSON[api.ArtifactList](t, r); len(l.Items) != 3 || l.Items[0].Path != "async.bin" || l.Items[1].Path != "nested/dir/file.txt" {
		t.Fatalf("artifacts: %s", r.Body)
	}
	call(t, e, 400, "GET", a.base+"?min_sequence=x", a.viewer.Token, nil)
	call(t, e, 401, "GET", a.base, "", nil)
	call(t, e, 404, "GET", a.base, a.outsider.Token, nil)
	call(t, e, 404, "GET", pp+"/models/weights/versions/7/artifacts", a.viewer.Token, nil)
	add("listModelArtifacts", 200, 400, 401, 404)

	add("getModelArtifact", w.gets()...)
	add("headModelArtifact", w.heads()...)
	return want
}

// artifactWalk is what the walks of a version's and a run's artifact
// routes share (TestOpenAPIConformance): uploads to base/* and their
// refusals, leaving weights.bin, async.bin and nested/dir/file.txt, then
// downloads of them; each step returns the statuses it provoked.
type artifactWalk struct {
	t                        *testing.T
	e                        *testenv.Env
	base                     string
	editor, viewer, outsider string // tokens
}

func (w artifactWalk) path() string { return w.base + "/weights.bin" }

func (w artifactWalk) data() []byte { return randomBytes(9, 4096) }

func (w artifactWalk) puts() []int {
	t, e, path, data := w.t, w.e, w.path(), w.data()
	call(t, e, 201, "PUT", path, w.editor, data, octets()...)
	call(t, e, 200, "PUT", path, w.editor, data, octets()...)
	call(t, e, 202, "PUT", w.base+"/async.bin", w.editor, data[:10], octets("Prefer", "respond-async")...)
	call(t, e, 201, "PUT", w.base+"/nested/dir/file.txt", w.editor, []byte("hello"), "Content-Type", "text/plain; charset=utf-8")
	callProblem(t, e, 400, "validation-failed", "PUT", w.base+"/..", w.editor, data, octets()...)
	call(t, e, 401, "PUT", path, "", data, octets()...)
	callProblem(t, e, 403, "forbidden", "PUT", path, w.viewer, data, octets()...)
	callProblem(t, e, 404, "not-found", "PUT", path, w.outsider, data, octets()...)
	callProblem(t, e, 422, "digest-mismatch", "PUT", path, w.editor, data, octets("Content-Digest", contentDigest(data[1:]))...)
	putDeclaredTooLarge(t, e, path, w.editor)
	return []int{200, 201, 202, 400, 401, 403, 404, 413, 422}
}

func (w artifactWalk) gets() []int {
	t, e, path := w.t, w.e, w.path()
	etag := `"` + string(digestOf(w.data())) + `"`
	call(t, e, 200, "GET", path, w.viewer, nil)
	call(t, e, 200, "GET", w.base+"/nested/dir/file.txt", w.viewer, nil)
	call(t, e, 206, "GET", path, w.viewer, nil, "Range", "bytes=0-99")
	call(t, e, 206, "GET", path, w.viewer, nil, "Range", "bytes=0-9,20-29") // multipart/byteranges
	call(t, e, 304, "GET", path, w.viewer, nil, "If-None-Match", etag)
	callProblem(t, e, 400, "validation-failed", "GET", w.base+"/a//b", w.viewer, nil)
	call(t, e, 401, "GET", path, "", nil)
	callProblem(t, e, 404, "not-found", "GET", w.base+"/nope.bin", w.viewer, nil)
	callProblem(t, e, 412, "precondition-failed", "GET", path, w.viewer, nil, "If-Match", `"sha256:x"`)
	callProblem(t, e, 416, "range-not-satisfiable", "GET", path, w.viewer, nil, "Range", "bytes=99999-")
	return []int{200, 206, 304, 400, 401, 404, 412, 416}
}

func (w artifactWalk) heads() []int {
	t, e, path := w.t, w.e, w.path()
	call(t, e, 200, "HEAD", path, w.viewer, nil)
	call(t, e, 401, "HEAD", path, "", nil)
	call(t, e, 404, "HEAD", w.base+"/nope.bin", w.viewer, nil)
	return []int{200, 401, 404}
}

// putDeclaredTooLarge PUTs an artifact declaring a length over the limit
// (5 GiB here) and expects 413 before a byte is sent (Expect: 100-continue).
func putDeclaredTooLarge(t *testing.T, e *testenv.Env, path, token string) {
	t.Helper()
	req, _ := http.NewRequest("PUT", e.URL+path, io.LimitReader(zeros{}, 6<<30))
	req.ContentLength = 6 << 30
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Expect", "100-continue")
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	req.Body = http.NoBody
	e.Observe(req, nil, resp, out)
	if _, err := checkProblem(testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: out}, 413, "payload-too-large"); err != nil {
		t.Fatal(err)
	}
}

// The document names chi's wildcard {path}, one segment for an OpenAPI
// router; testenv folds nested artifact paths into it, so their exchanges
// are validated too rather than skipped as undocumented.
func TestOpenAPIValidatesNestedArtifactPaths(t *testing.T) {
	t.Parallel()
	const base = "http://127.0.0.1:1/api/v1/projects/p/models/m/versions/1/artifacts"
	for _, p := range []string{"x.bin", "a/b/c.bin", "a%2Fb/c.bin"} {
		req, err := http.NewRequest("GET", base+"/"+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer t")
		route, _, err := testenv.FindRoute(req)
		if err != nil || route.Operation.OperationID != "getModelArtifact" {
			t.Errorf("%s: route %v, %v", p, route, err)
			continue
		}
		// A download without its ETag is not what the document promises.
		h := http.Header{"X-Request-Id": {"0123456789abcdef01234567"}, "Content-Type": {"application/octet-stream"}}
		if err := testenv.ValidateExchange(req, nil, 200, h, []byte("bytes")); err == nil {
			t.Errorf("%s: a 200 without ETag passed validation", p)
		}
		h.Set("ETag", `"`+string(digestOf([]byte("bytes")))+`"`)
		if err := testenv.ValidateExchange(req, nil, 200, h, []byte("bytes")); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	req, _ := http.NewRequest("DELETE", base+"/a/b", nil)
	if _, _, err := testenv.FindRoute(req); err == nil {
		t.Error("DELETE of an artifact found an operation")
	}
}
