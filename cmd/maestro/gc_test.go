package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/internal/testpg"
)

// The Postgres cluster starts only if a test asks for a database.
func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }

// `maestro artifacts gc` deletes the blobs no recorded artifact references
// once they are older than --grace, keeps referenced ones whatever their
// age, and --dry-run deletes nothing.
func TestArtifactsGC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a platform")
	}
	bin := buildBinary(t)
	cfg := testenv.Config(t)
	e := testenv.Start(t, cfg)
	ctx := context.Background()

	// A referenced blob: uploaded through the API, so an event names it.
	admin := e.Admin("root@gc.test").AccessToken
	do := func(status int, method, path string, body any, headers ...string) {
		t.Helper()
		if r := e.Do(method, path, admin, body, headers...); r.Status != status {
			t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Body, status)
		}
	}
	do(201, "POST", "/api/v1/projects", map[string]any{"name": "gc"})
	do(201, "POST", "/api/v1/projects/gc/models", map[string]any{"name": "m"})
	do(201, "POST", "/api/v1/projects/gc/models/m/versions", map[string]any{})
	kept := []byte("referenced weights")
	do(201, "PUT", "/api/v1/projects/gc/models/m/versions/1/artifacts/w.bin", kept, "Content-Type", "application/octet-stream")
	// A run's artifact is a reference too.
	var x, run struct {
		ID string `json:"id"`
	}
	e.Do("POST", "/api/v1/projects/gc/experiments", admin, map[string]any{"name": "x"}).JSON(t, &x)
	e.Do("POST", "/api/v1/projects/gc/experiments/"+x.ID+"/runs", admin, map[string]any{}).JSON(t, &run)
	runKept := []byte("referenced run output")
	do(201, "PUT", "/api/v1/projects/gc/runs/"+run.ID+"/artifacts/out.bin", runKept, "Content-Type", "application/octet-stream")

	// Unreferenced blobs, as a crashed upload leaves them: stored, no event.
	put := func(b []byte) artifacts.Digest {
		t.Helper()
		d, _, err := e.P.Blobs.Put(ctx, bytes.NewReader(b), -1, "")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	referenced, runReferenced, stale, fresh := put(kept), put(runKept), put([]byte("orphan from yesterday")), put([]byte("orphan being recorded"))
	blobFile := func(d artifacts.Digest) string {
		return filepath.Join(cfg.DataDir, "artifacts", "blobs", "sha256", d.Hex()[:2], d.Hex())
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, d := range []artifacts.Digest{referenced, runReferenced, stale} {
		if err := os.Chtimes(blobFile(d), old, old); err != nil {
			t.Fatal(err)
		}
	}
	e.Stop() // the CLI starts its own platform on the data dir

	gc := func(want string, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"artifacts", "gc", "--data-dir", cfg.DataDir, "--database-url", cfg.DatabaseURL, "--log-level", "warn"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("maestro artifacts gc %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		if got := strings.TrimSpace(stdout.String()); got != want {
			t.Fatalf("maestro artifacts gc %s printed %q, want %q", strings.Join(args, " "), got, want)
		}
	}
	left := func(want ...artifacts.Digest) {
		t.Helper()
		for _, d := range []artifacts.Digest{referenced, runReferenced, stale, fresh} {
			_, err := os.Stat(blobFile(d))
			if exists, wanted := err == nil, slices.Contains(want, d); exists != wanted {
				t.Errorf("blob %s exists = %v, want %v", d, exists, wanted)
			}
		}
	}
	size := func(d artifacts.Digest) int64 {
		info, err := os.Stat(blobFile(d))
		if err != nil {
			t.Fatal(err)
		}
		return info.Size()
	}
	staleSize, freshSize := size(stale), size(fresh)

	gc("scanned 4 blobs: would delete 2 ("+strconv.FormatInt(staleSize+freshSize, 10)+" bytes), kept 2", "--grace", "0s", "--dry-run")
	left(referenced, runReferenced, stale, fresh)
	gc("scanned 4 blobs: deleted 1 ("+strconv.FormatInt(staleSize, 10)+" bytes), kept 3", "--grace", "1h")
	left(referenced, runReferenced, fresh)
	gc("scanned 3 blobs: deleted 1 ("+strconv.FormatInt(freshSize, 10)+" bytes), kept 2", "--grace", "0s")
	left(referenced, runReferenced)
	gc("scanned 2 blobs: deleted 0 (0 bytes), kept 2", "--grace", "0s")
	left(referenced, runReferenced)
}
