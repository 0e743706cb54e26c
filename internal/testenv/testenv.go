// Package testenv starts a real Maestro for integration tests: embedded
// NATS with JetStream in t.TempDir(), a fresh Postgres database from the
// per-process test cluster, and the HTTP API on a loopback port.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/internal/testpg"
	"github.com/maestro-ml/maestro/platform"
)

// Clock is a settable clock shared by the platform under test.
type Clock struct {
	mu  sync.Mutex
	off time.Duration
}

// Now is the real time plus the accumulated advance.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// Env is a running platform and a client for it.
type Env struct {
	T      testing.TB
	P      *platform.Platform
	Config platform.Config
	Clock  *Clock
	URL    string
	Client *http.Client
	// Observe, when set, sees every request and response the helpers make.
	// Start sets it to CheckOpenAPI, so every exchange is validated against
	// the OpenAPI document; chain CheckOpenAPI if you replace it.
	Observe func(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte)
}

// FastArgon2 keeps argon2id but with small parameters so suites that log in
// hundreds of times stay quick; production uses auth.DefaultArgon2Params.
var FastArgon2 = auth.Argon2Params{Memory: 1024, Iterations: 1, Parallelism: 1}

// Config returns a test configuration on a fresh database and temp dir.
func Config(t testing.TB) platform.Config {
	cfg := platform.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NATSListen = ""
	cfg.DatabaseURL = testpg.Database(t)
	cfg.Argon2 = FastArgon2
	cfg.SyncAlways = false
	// Suites register hundreds of users from 127.0.0.1; the per-address
	// registration budget has its own test with the default.
	cfg.RegistrationsPerHour = 1 << 20
	return cfg
}

// Start starts a platform with cfg (from Config, possibly modified).
func Start(t testing.TB, cfg platform.Config) *Env {
	t.Helper()
	clock := &Clock{}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start platform: %v", err)
	}
	e := &Env{T: t, P: p, Config: cfg, Clock: clock, URL: p.URL(), Client: &http.Client{Timeout: 30 * time.Second}}
	e.Observe = e.CheckOpenAPI
	t.Cleanup(func() { e.Stop() })
	return e
}

// Stop shuts the platform down (idempotent).
func (e *Env) Stop() {
	if e.P == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.P.Shutdown(ctx)
	e.P = nil
}

// Response is a completed HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Do sends a request and fails the test on transport errors; body is
// JSON-encoded unless it is []byte or nil; headers are name/value pairs
// applied last (so they can override Content-Type).
func (e *Env) Do(method, path, token string, body any, headers ...string) Response {
	e.T.Helper()
	r, err := e.Send(method, path, token, body, headers...)
	if err != nil {
		e.T.Fatal(err)
	}
	return r
}

// Send is Do without the test: safe in goroutines, it returns transport
// errors instead of failing. Every exchange is shown to e.Observe.
func (e *Env) Send(method, path, token string, body any, headers ...string) (Response, error) {
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			return Response{}, err
		}
	}
	req, err := http.NewRequest(method, e.URL+path, bytes.NewReader(raw))
	if err != nil {
		return Response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if e.Observe != nil {
		req.Body = io.NopCloser(bytes.NewReader(raw))
		e.Observe(req, raw, resp, out)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: out}, nil
}

// Tokens is a login's result.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
}

// User is a user as the API returns it.
type User struct {
	ID     string `json:"id"`
	Email  string `json:"email"`
	Name   string `json:"name"`
	Role   string `json:"role"`
	Active bool   `json:"active"`
}

// Password is a policy-compliant password for test accounts.
const Password = "correct horse battery staple"

// Register registers an account and fails the test unless it got 201.
func (e *Env) Register(email string) User {
	e.T.Helper()
	r := e.Do("POST", "/api/v1/auth/register", "", map[string]string{"email": email, "password": Password, "name": "Test User"})
	if r.Status != http.StatusCreated {
		e.T.Fatalf("register %s: %d %s", email, r.Status, r.Body)
	}
	var u User
	r.JSON(e.T, &u)
	return u
}

// Login logs in and fails the test unless it got 200.
func (e *Env) Login(email, password string) Tokens {
	e.T.Helper()
	r := e.Do("POST", "/api/v1/auth/login", "", map[string]string{"email": email, "password": password})
	if r.Status != http.StatusOK {
		e.T.Fatalf("login %s: %d %s", email, r.Status, r.Body)
	}
	var tok Tokens
	r.JSON(e.T, &tok)
	return tok
}

// Admin creates (through the identity service, as the CLI does) an admin
// and returns its tokens.
func (e *Env) Admin(email string) Tokens {
	e.T.Helper()
	ctx := context.Background()
	if _, err := e.P.CreateAdmin(ctx, email, Password, "Admin"); err != nil {
		e.T.Fatalf("create admin: %v", err)
	}
	return e.Login(email, Password)
}

// UserWithRole registers a user, has admin set its role, and logs it in.
func (e *Env) UserWithRole(adminToken, email, role string) (User, Tokens) {
	e.T.Helper()
	u := e.Register(email)
	if role != "viewer" {
		r := e.Do("PATCH", "/api/v1/users/"+u.ID, adminToken, map[string]any{"role": role})
		if r.Status != http.StatusOK {
			e.T.Fatalf("set role: %d %s", r.Status, r.Body)
		}
	}
	return u, e.Login(email, Password)
}
