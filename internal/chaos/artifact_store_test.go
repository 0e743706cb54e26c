package chaos

// Scenario 5: the artifact store fails under `maestro serve` — the
// filesystem store's directory stops being writable, the S3 endpoint goes
// down. An upload must then be refused with a clear 503 or 507 problem,
// record no event, leave nothing half-written visible, and work again once
// the fault is gone, with no restart.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/maestro-ml/maestro/events"
)

// storeFault breaks the artifact store (break_) and repairs it (repair).
type storeFault struct {
	name           string
	break_, repair func(t *testing.T)
}

func TestArtifactStoreFailures(t *testing.T) {
	t.Run("filesystem", func(t *testing.T) {
		dir := dataDir(t)
		serve := startProc(t, "serve", baseEnv(bootstrapAdmin...), "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
		// As root, chmod does not stop writes (root ignores permission
		// bits), so the fault is one that stops root too: the store's
		// directory is moved away and a plain file takes its place — what
		// an unmounted or vanished volume looks like. Every create below
		// it then fails with ENOTDIR.
		artifacts := filepath.Join(dir, "artifacts")
		fault := storeFault{name: "filesystem directory not writable",
			break_: func(t *testing.T) {
				if err := os.Rename(artifacts, artifacts+".away"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(artifacts, []byte("not a directory\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			repair: func(t *testing.T) {
				if err := os.Remove(artifacts); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(artifacts+".away", artifacts); err != nil {
					t.Fatal(err)
				}
			}}
		storeFailureReps(t, serve, dir, fault)
		// Nothing half-written: no temporary upload is left behind.
		if left, _ := filepath.Glob(filepath.Join(artifacts, "tmp", "*")); len(left) > 0 {
			t.Errorf("temporary uploads left in the store: %v", left)
		}
		serve.stop(t)
	})

	t.Run("s3", func(t *testing.T) {
		s3 := newFlakyS3(t)
		dir := dataDir(t)
		env := baseEnv(append(bootstrapAdmin, "MAESTRO_S3_ENDPOINT="+s3.addr, "MAESTRO_S3_BUCKET=chaos", "MAESTRO_S3_REGION=us-east-1",
			"MAESTRO_S3_ACCESS_KEY=chaos", "MAESTRO_S3_SECRET_KEY=chaos-secret", "MAESTRO_S3_TLS=false")...)
		serve := startProc(t, "serve", env, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
		storeFailureReps(t, serve, dir, storeFault{name: "S3 endpoint down", break_: s3.down, repair: s3.up})
		serve.stop(t)
	})
}

// storeFailureReps breaks the store, uploads, checks the refusal and that
// nothing was recorded or is visible, repairs the store, resends the same
// upload and checks the invariant — reps times on one serve.
func storeFailureReps(t *testing.T, serve *proc, dir string, fault storeFault) {
	t.Helper()
	l := &ledger{}
	ws := setupWorkspace(t, serve.url, login(t, serve.url), l)
	w := world{hotModel: ws.hotModel, verifyCmd: verifyDataDir(t, dir)}.with(t, dir)
	for rep := range *reps {
		token := login(t, serve.url)
		up := artifactCmd(token, fmt.Sprintf("s5-r%d", rep))
		fault.break_(t)
		refused := send(serve.url, up)
		checkStoreRefusal(t, fault.name, refused)
		checkInvisible(t, serve.url, token, w, up)

		fault.repair(t)
		repaired := time.Now()
		// The client retries (same key, same bytes) until the store is back.
		deadline := time.Now().Add(30 * time.Second)
		var a answer
		for a = send(serve.url, up); !a.ok() && time.Now().Before(deadline); a = send(serve.url, up) {
			time.Sleep(100 * time.Millisecond)
		}
		recovery := time.Since(repaired)
		l.record(serve.url, up, a)
		v := checkInvariant(t, w, l, len(l.entries)-1)
		report(t, result{Scenario: "5 " + fault.name, Rep: rep + 1, verdict: v, Recovery: recovery,
			Note: fmt.Sprintf("(while broken: %d %s)", refused.Status, firstLine(refused.Body))})
	}
}

// checkStoreRefusal checks an upload to a broken store was refused as the
// issue asks: 503 (store unreachable) or 507 (store cannot take it), as
// problem+json with a title that says so.
func checkStoreRefusal(t *testing.T, fault string, a answer) {
	t.Helper()
	if a.Err != nil {
		t.Errorf("%s: the upload got no answer: %v", fault, a.Err)
		return
	}
	typ, title, err := errProblem(a)
	if (a.Status != http.StatusServiceUnavailable && a.Status != http.StatusInsufficientStorage) || err != nil || title == "" {
		t.Errorf("%s: upload answered %s (type %q, title %q); want 503 or 507 problem+json with a clear title", fault, a, typ, title)
	}
}

// checkInvisible checks a refused upload left no trace: no event in the
// stream, a GET of the artifact is 404 and the version's list lacks it.
func checkInvisible(t *testing.T, base, token string, w world, up command) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msgs, err := readStream(ctx, w.nc, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if up.Effect.matches(m) {
			t.Errorf("the refused upload %s recorded event %d", up.Effect.Value, m.Seq)
		}
	}
	if a := send(base, command{Method: "GET", Path: up.Path, Token: token}); a.Status != http.StatusNotFound {
		t.Errorf("GET of the refused upload: %s, want 404", a)
	}
	list := send(base, command{Method: "GET", Path: strings.TrimSuffix(up.Path, "/"+up.Effect.Value), Token: token})
	if !list.ok() || bytes.Contains(list.Body, []byte(up.Effect.Value)) {
		t.Errorf("the version's artifact list after the refused upload: %s", list)
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// flakyS3 is an S3 endpoint (gofakes3, objects in memory) that can be
// taken down — its port closed, connections refused — and brought back on
// the same address with its objects.
type flakyS3 struct {
	addr    string
	handler http.Handler
	srv     *http.Server
}

func newFlakyS3(t *testing.T) *flakyS3 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &flakyS3{addr: ln.Addr().String(), handler: gofakes3.New(s3mem.New()).Server()}
	s.serve(ln)
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

func (s *flakyS3) serve(ln net.Listener) {
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
}

func (s *flakyS3) down(t *testing.T) {
	t.Helper()
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
}

func (s *flakyS3) up(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", s.addr)
		if err == nil {
			s.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("S3 back on %s: %v", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
