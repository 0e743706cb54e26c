package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/platform"
)

// `maestro projections verify` against a running `maestro serve`: equal
// read models exit 0 with the summary; a row changed behind the
// projections' back exits 1 and names it.
func TestProjectionsVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts maestro serve")
	}
	bin, dataDir, _, p, c, tok := startCrashServe(t)
	crashSeed(t, c, p.url, tok.AccessToken, []seedReq{
		{"POST", "/api/v1/projects", map[string]any{"name": "verify"}},
		{"POST", "/api/v1/projects/verify/models", map[string]any{"name": "m", "description": "before"}},
		{"POST", "/api/v1/projects/verify/models/m/versions", map[string]any{}},
		{"POST", "/api/v1/projects/verify/models/m/versions", map[string]any{}},
	})
	verify := func() (string, int) { return runCLI(t, bin, "projections", "verify", "--data-dir", dataDir) }
	out, code := verify()
	if code != 0 || !strings.Contains(out, "no differences") {
		t.Fatalf("verify of an intact platform: exit %d\n%s", code, out)
	}

	info, err := platform.ReadRunInfo(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := pgx.Connect(ctx, info.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	var id string
	if err := db.QueryRow(ctx, "UPDATE models SET description = 'tampered' WHERE name = 'm' RETURNING id::text").Scan(&id); err != nil {
		t.Fatal(err)
	}
	out, code = verify()
	want := fmt.Sprintf("id=%s", id)
	if code != 1 || !strings.Contains(out, "DIFFERENT") || !strings.Contains(out, want) || !strings.Contains(out, "tampered") {
		t.Fatalf("verify of a tampered models row: exit %d, want 1 naming %s\n%s", code, want, out)
	}
	var left int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'maestro_verify_%'").Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d scratch schemas left behind (%v)", left, err)
	}
}

// seedReq is one request crashSeed sends.
type seedReq struct {
	method, path string
	body         any
}

// crashSeed sends reqs to the serve at base with token and fails t unless
// each answers 2xx.
func crashSeed(t *testing.T, c *http.Client, base, token string, reqs []seedReq) {
	t.Helper()
	for _, r := range reqs {
		a, err := crashDo(c, r.method, base+r.path, token, "", r.body)
		if err != nil || a.status >= 300 {
			t.Fatalf("%s %s: %v %d %s", r.method, r.path, err, a.status, a.body)
		}
	}
}

// runCLI runs the maestro binary with args and returns its combined output
// and exit code; a binary that does not run at all fails t.
func runCLI(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("maestro %v: %v\n%s", args, err, out)
	return "", 0
}
