package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/testpg"
)

// buildBinary compiles maestro once for the CLI tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "maestro")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type serveProc struct {
	cmd *exec.Cmd
	url string
}

// startServe runs `maestro serve` as a new user would (managed PostgreSQL,
// embedded NATS, everything in the data dir) and reads the API URL from its
// banner.
func startServe(t *testing.T, bin, dataDir string, env ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "API:" {
				urls <- strings.TrimSuffix(f[1], "/api/v1")
			}
		}
		close(urls)
	}()
	select {
	case u, ok := <-urls:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("serve exited before printing its address:\n%s", stderr.String())
		}
		p := &serveProc{cmd: cmd, url: u}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return p
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("serve did not start in 90s:\n%s", stderr.String())
	}
	return nil
}

// stop sends SIGTERM and requires a clean exit.
func (p *serveProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v after SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not stop within 60s of SIGTERM")
	}
}

func post(t *testing.T, url string, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// serveDataDir is a data dir for `maestro serve` under t.TempDir. Under root
// the managed PostgreSQL runs as the postgres user, which must traverse to
// the data dir; t.TempDir is 0700.
func serveDataDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(testpg.TraversableDir(t), "data")
}

// The new-user path: serve with no configuration but a bootstrap admin,
// log in, create a second admin with the CLI while serve runs, stop with
// SIGTERM, start again: everything is still there.
func TestServeStopStartKeepsState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binary and a managed PostgreSQL twice")
	}
	bin := buildBinary(t)
	dataDir := serveDataDir(t)
	env := []string{"MAESTRO_BOOTSTRAP_ADMIN_EMAIL=root@example.com", "MAESTRO_BOOTSTRAP_ADMIN_PASSWORD=bootstrap password 1"}
	p := startServe(t, bin, dataDir, env...)
	if st, body := post(t, p.url+"/api/v1/auth/login", map[string]string{"email": "root@example.com", "password": "bootstrap password 1"}); st != 200 {
		t.Fatalf("bootstrap admin login: %d %s", st, body)
	}
	// admin create attaches to the running serve through its NATS listener.
	cmd := exec.Command(bin, "admin", "create", "--data-dir", dataDir, "--email", "second@example.com", "--password-stdin")
	cmd.Stdin = strings.NewReader("second admin password\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "created") {
		t.Fatalf("admin create while serving: %v\n%s", err, out)
	}
	st, body := post(t, p.url+"/api/v1/auth/login", map[string]string{"email": "second@example.com", "password": "second admin password"})
	if st != 200 {
		t.Fatalf("second admin login: %d %s", st, body)
	}
	var tok struct {
		RefreshToken string `json:"refresh_token"`
	}
	_ = json.Unmarshal(body, &tok)
	p.stop(t)

	p = startServe(t, bin, dataDir, env...)
	for _, c := range []struct{ email, pw string }{{"root@example.com", "bootstrap password 1"}, {"second@example.com", "second admin password"}} {
		if st, body := post(t, p.url+"/api/v1/auth/login", map[string]string{"email": c.email, "password": c.pw}); st != 200 {
			t.Fatalf("login %s after restart: %d %s", c.email, st, body)
		}
	}
	if st, body := post(t, p.url+"/api/v1/auth/refresh", map[string]string{"refresh_token": tok.RefreshToken}); st != 200 {
		t.Fatalf("session did not survive the restart: %d %s", st, body)
	}
	p.stop(t)

	// With serve stopped, the CLI starts what it needs itself.
	out, err := exec.Command(bin, "projections", "status", "--data-dir", dataDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "audit") {
		t.Fatalf("projections status: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 4 && (f[0] == "users" || f[0] == "sessions" || f[0] == "audit") && f[2] != "0" {
			t.Fatalf("projection %s lags after a clean stop: %s", f[0], line)
		}
	}
}

// Invalid configuration fails fast with a message naming the variable.
func TestInvalidConfigNamesVariable(t *testing.T) {
	bin := buildBinary(t)
	cases := map[string]string{
		"MAESTRO_ACCESS_TOKEN_TTL=20m":     "MAESTRO_ACCESS_TOKEN_TTL",
		"MAESTRO_ACCESS_TOKEN_TTL=soon":    "MAESTRO_ACCESS_TOKEN_TTL",
		"MAESTRO_HTTP_ADDR=nonsense":       "MAESTRO_HTTP_ADDR",
		"MAESTRO_NATS_SYNC=sometimes":      "MAESTRO_NATS_SYNC",
		"MAESTRO_NATS_LISTEN=0.0.0.0:4222": "MAESTRO_NATS_LISTEN",
		"MAESTRO_REGISTRATION=perhaps":     "MAESTRO_REGISTRATION",
		"MAESTRO_NATS_PUBLIC_USER=maestro": "MAESTRO_NATS_PUBLIC_USER",
		// The embedded server has its own republisher; this user is an external NATS's.
		"MAESTRO_NATS_REPUBLISHER_USER=maestro-republisher": "MAESTRO_NATS_REPUBLISHER_USER",
	}
	for env, want := range cases {
		cmd := exec.Command(bin, "serve", "--data-dir", filepath.Join(t.TempDir(), "d"))
		cmd.Env = append(os.Environ(), env, "MAESTRO_UNKNOWN_SETTING=ignored")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: serve started", env)
			continue
		}
		if !strings.Contains(string(out), want) || strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
			t.Errorf("%s: want one line naming %s, got:\n%s", env, want, out)
		}
	}
}
