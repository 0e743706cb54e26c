package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/platform"
)

// `maestro audit verify` and `maestro audit export` against a running
// `maestro serve`: an intact trail exits 0; a row updated, deleted,
// inserted or two rows swapped in PostgreSQL exit 1 naming the sequence;
// an export verifies from the file alone (with the published key too),
// and a tampered export file is refused.
func TestAuditVerifyAndExport(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts maestro serve")
	}
	bin, dataDir, _, p, c, tok := startCrashServe(t)
	crashSeed(t, c, p.url, tok.AccessToken, []seedReq{
		{"POST", "/api/v1/projects", map[string]any{"name": "audited"}},
		{"POST", "/api/v1/projects/audited/models", map[string]any{"name": "m", "description": "before"}},
		{"POST", "/api/v1/projects/audited/models/m/versions", map[string]any{}},
	})
	run := func(args ...string) (string, int) { return runCLI(t, bin, append([]string{"audit"}, args...)...) }
	out, code := run("verify", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("verify of an intact trail: exit %d\n%s", code, out)
	}

	// The export, verified from the file alone, then with the key the
	// platform publishes.
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	if out, code := run("export", "--data-dir", dataDir, "--output", file); code != 0 {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v %v, want mode 0600", st, err)
	}
	if out, code := run("verify", "--file", file); code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("verify --file: exit %d\n%s", code, out)
	}
	resp, err := c.Get(p.url + "/api/v1/audit/keys") // public: no token
	if err != nil {
		t.Fatal(err)
	}
	var keys struct {
		Keys []struct{ Kid, X string }
	}
	err = json.NewDecoder(resp.Body).Decode(&keys)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(keys.Keys) != 1 {
		t.Fatalf("GET /api/v1/audit/keys: %d %+v %v", resp.StatusCode, keys, err)
	}
	if out, code := run("verify", "--file", file, "--public-key", keys.Keys[0].X); code != 0 || !strings.Contains(out, keys.Keys[0].Kid) {
		t.Fatalf("verify --file --public-key: exit %d\n%s", code, out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	lines[2] = strings.Replace(lines[2], `"summary":"`, `"summary":"(edited) `, 1)
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	if err := os.WriteFile(tampered, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run("verify", "--file", tampered); code != 1 || !strings.Contains(out, "TAMPERED") || !regexp.MustCompile(`(?m)^2\s+chain`).MatchString(out) {
		t.Fatalf("verify --file of a tampered export: exit %d, want 1 naming seq 2\n%s", code, out)
	}

	// Tampering with the stored trail.
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
	var last int64
	if err := db.QueryRow(ctx, "SELECT max(seq) FROM audit_entries").Scan(&last); err != nil {
		t.Fatal(err)
	}
	exec1 := func(sql string) {
		t.Helper()
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec1("CREATE TABLE audit_backup AS SELECT * FROM audit_entries")
	for _, c := range []struct {
		name string
		sql  []string
		want []string // "<seq> <kind>" of the report's lines
	}{
		{"update", []string{"UPDATE audit_entries SET summary = 'nothing to see' WHERE seq = 3"}, []string{"3 changed"}},
		{"delete", []string{"DELETE FROM audit_entries WHERE seq = 4"}, []string{"4 missing"}},
		{"insert", []string{fmt.Sprintf("INSERT INTO audit_entries SELECT %d, event_id, time, type, actor, subject, correlation_id, causation_id, summary, data, project_id, hash FROM audit_entries WHERE seq = 2", last+1000)},
			[]string{fmt.Sprintf("%d inserted", last+1000)}},
		{"reorder", []string{"UPDATE audit_entries SET seq = -seq WHERE seq IN (5, 6)", "UPDATE audit_entries SET seq = CASE seq WHEN -5 THEN 6 ELSE 5 END WHERE seq IN (-5, -6)"},
			[]string{"5 changed", "6 changed"}},
	} {
		for _, s := range c.sql {
			exec1(s)
		}
		out, code := run("verify", "--data-dir", dataDir)
		if code != 1 || !strings.Contains(out, "TAMPERED") {
			t.Fatalf("%s: exit %d, want 1\n%s", c.name, code, out)
		}
		for _, w := range c.want {
			if !regexp.MustCompile(`(?m)^` + strings.ReplaceAll(w, " ", `\s+`)).MatchString(out) {
				t.Fatalf("%s: the report does not name %q\n%s", c.name, w, out)
			}
		}
		exec1("DELETE FROM audit_entries WHERE seq <= " + fmt.Sprint(last+1000))
		exec1("INSERT INTO audit_entries SELECT * FROM audit_backup")
	}
	if out, code := run("verify", "--data-dir", dataDir); code != 0 {
		t.Fatalf("verify after restoring: exit %d\n%s", code, out)
	}
	// An export through the API verifies as well.
	req, _ := http.NewRequest("GET", p.url+"/api/v1/audit/export", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond) // Retry-After: the next seal
			continue
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("GET /api/v1/audit/export: %d %s", resp.StatusCode, body)
		}
		api := filepath.Join(t.TempDir(), "api.jsonl")
		if err := os.WriteFile(api, body, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, code := run("verify", "--file", api); code != 0 || !bytes.Contains([]byte(out), []byte("intact")) {
			t.Fatalf("verify --file of the API's export: exit %d\n%s", code, out)
		}
		break
	}
}
