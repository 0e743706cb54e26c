package platform_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/handlers/webhooks"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/platform"
)

// receiver is a webhook receiver on loopback that verifies every delivery
// as a receiver following the Standard Webhooks specification would.
type receiver struct {
	t       *testing.T
	mu      sync.Mutex
	secrets []string // a delivery must verify with each of these
	got     []delivery
	// answer decides the status of the n-th request (1-based); nil: 200.
	answer func(n int, ce cloudEvent) int
	delay  func(n int) time.Duration
	n      atomic.Int64
	srv    *httptest.Server
}

type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	Source      string          `json:"source"`
	Subject     string          `json:"subject"`
	Time        time.Time       `json:"time"`
	Data        json.RawMessage `json:"data"`
}

type delivery struct {
	ce         cloudEvent
	signatures string
	verified   map[string]bool // secret → verified
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{t: t}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	n := int(rc.n.Add(1))
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		w.WriteHeader(400)
		return
	}
	if rc.delay != nil {
		time.Sleep(rc.delay(n))
	}
	var ce cloudEvent
	if r.Header.Get("Content-Type") != "application/cloudevents+json" || json.Unmarshal(body, &ce) != nil || ce.SpecVersion != "1.0" {
		rc.t.Errorf("delivery %d: not a structured CloudEvent: %s %s", n, r.Header.Get("Content-Type"), body)
	}
	if id := r.Header.Get("webhook-id"); id != ce.ID {
		rc.t.Errorf("delivery %d: webhook-id %q, event id %q", n, id, ce.ID)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	d := delivery{ce: ce, signatures: r.Header.Get("webhook-signature"), verified: map[string]bool{}}
	for _, s := range rc.secrets {
		d.verified[s] = webhooks.Verify(s, r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), d.signatures, body, time.Now(), 5*time.Minute) == nil
	}
	status := 200
	if rc.answer != nil {
		status = rc.answer(n, ce)
	}
	if status/100 == 2 {
		rc.got = append(rc.got, d)
	}
	w.WriteHeader(status)
}

func (rc *receiver) setSecrets(s ...string) {
	rc.mu.Lock()
	rc.secrets = s
	rc.mu.Unlock()
}

// accepted are the deliveries answered 2xx so far.
func (rc *receiver) accepted() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// webhookConfig is a test platform whose webhooks may reach the loopback
// receiver, retrying fast.
func webhookConfig(t *testing.T) platform.Config {
	cfg := testenv.Config(t)
	cfg.Webhooks = platform.WebhooksConfig{AllowPrivateTargets: true, BackoffBase: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond,
		Timeout: time.Second}
	return cfg
}

type whEnv struct {
	*testenv.Env
	owner   string // project owner's token (the admin who created it)
	project string
}

func startWebhookEnv(t *testing.T, cfg platform.Config) *whEnv {
	e := testenv.Start(t, cfg)
	admin := e.Admin("admin@example.com")
	r := e.Do("POST", "/api/v1/projects", admin.AccessToken, map[string]any{"name": "Hooks"})
	if r.Status != http.StatusCreated {
		t.Fatalf("create project: %d %s", r.Status, r.Body)
	}
	var proj struct{ ID string }
	r.JSON(t, &proj)
	return &whEnv{Env: e, owner: admin.AccessToken, project: proj.ID}
}

type webhookView struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	Events         []string `json:"events"`
	Enabled        bool     `json:"enabled"`
	DisabledReason string   `json:"disabled_reason"`
	Secret         string   `json:"secret"`
}

func (e *whEnv) base() string { return "/api/v1/projects/" + e.project + "/webhooks" }

func (e *whEnv) createWebhook(t *testing.T, url string, patterns ...string) webhookView {
	t.Helper()
	r := e.Do("POST", e.base(), e.owner, map[string]any{"url": url, "events": patterns, "description": "test"})
	if r.Status != http.StatusCreated {
		t.Fatalf("create webhook: %d %s", r.Status, r.Body)
	}
	var w webhookView
	r.JSON(t, &w)
	if !strings.HasPrefix(w.Secret, "whsec_") {
		t.Fatalf("secret %q is not whsec_…", w.Secret)
	}
	return w
}

func (e *whEnv) createModel(t *testing.T, name string) {
	t.Helper()
	if r := e.Do("POST", "/api/v1/projects/"+e.project+"/models", e.owner, map[string]any{"name": name}); r.Status != http.StatusCreated {
		t.Fatalf("create model: %d %s", r.Status, r.Body)
	}
}

type deliveryView struct {
	EventID      string `json:"event_id"`
	EventType    string `json:"event_type"`
	Status       string `json:"status"`
	Attempts     int    `json:"attempts"`
	ResponseCode *int   `json:"response_code"`
	LastError    string `json:"last_error"`
}

func (e *whEnv) deliveries(t *testing.T, id string) []deliveryView {
	t.Helper()
	r := e.Do("GET", e.base()+"/"+id+"/deliveries", e.owner, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("deliveries: %d %s", r.Status, r.Body)
	}
	var page struct{ Items []deliveryView }
	r.JSON(t, &page)
	return page.Items
}

// A delivery is a structured CloudEvent signed per Standard Webhooks; a
// rotation signs with both secrets during the overlap; the test action
// delivers; the log records status, attempts and response code.
func TestWebhookSignedDeliveryRotationAndTest(t *testing.T) {
	t.Parallel()
	e := startWebhookEnv(t, webhookConfig(t))
	rc := newReceiver(t)
	w := e.createWebhook(t, rc.srv.URL+"/hook", "maestro.model.*")
	rc.setSecrets(w.Secret, webhooks.NewSecret())
	e.createModel(t, "m1")
	waitFor(t, 15*time.Second, "the model's delivery", func() bool { return len(rc.accepted()) >= 1 })
	d := rc.accepted()[0]
	if d.ce.Type != "maestro.model.created.v1" || d.ce.Source != "maestro" || !strings.Contains(string(d.ce.Data), `"m1"`) {
		t.Fatalf("delivered %+v", d.ce)
	}
	if !d.verified[w.Secret] {
		t.Fatalf("signature %q does not verify with the webhook's secret", d.signatures)
	}
	for s, ok := range d.verified {
		if s != w.Secret && ok {
			t.Fatal("signature verifies with a secret that is not the webhook's")
		}
	}
	var log []deliveryView
	waitFor(t, 10*time.Second, "the delivery log", func() bool {
		log = e.deliveries(t, w.ID)
		return len(log) == 1 && log[0].Status == "succeeded"
	})
	if log[0].EventID != d.ce.ID || log[0].Attempts != 1 || log[0].ResponseCode == nil || *log[0].ResponseCode != 200 {
		t.Fatalf("delivery log %+v", log[0])
	}

	// Rotation: both the new and the old secret verify during the overlap.
	r := e.Do("POST", e.base()+"/"+w.ID+":rotate-secret", e.owner, map[string]any{"overlap_seconds": 3600})
	if r.Status != http.StatusOK {
		t.Fatalf("rotate: %d %s", r.Status, r.Body)
	}
	var rot struct {
		Secret              string    `json:"secret"`
		PreviousSecretUntil time.Time `json:"previous_secret_until"`
	}
	r.JSON(t, &rot)
	if rot.Secret == w.Secret || !strings.HasPrefix(rot.Secret, "whsec_") || time.Until(rot.PreviousSecretUntil) < 59*time.Minute {
		t.Fatalf("rotation answered %+v", rot)
	}
	rc.setSecrets(w.Secret, rot.Secret)
	e.createModel(t, "m2")
	waitFor(t, 15*time.Second, "the second delivery", func() bool { return len(rc.accepted()) >= 2 })
	d = rc.accepted()[1]
	if !d.verified[w.Secret] || !d.verified[rot.Secret] || len(strings.Fields(d.signatures)) != 2 {
		t.Fatalf("during the overlap both secrets must verify: %q → %v", d.signatures, d.verified)
	}

	// The test action.
	r = e.Do("POST", e.base()+"/"+w.ID+":test", e.owner, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("test: %d %s", r.Status, r.Body)
	}
	var test struct {
		EventID string `json:"event_id"`
	}
	r.JSON(t, &test)
	waitFor(t, 15*time.Second, "the test delivery", func() bool { return len(rc.accepted()) >= 3 })
	d = rc.accepted()[2]
	if d.ce.ID != test.EventID || d.ce.Type != "maestro.webhook.test_requested.v1" || !d.verified[rot.Secret] {
		t.Fatalf("test delivery %+v (want event %s), verified %v", d.ce, test.EventID, d.verified)
	}
}

// Retries: a receiver answering 500, then timing out, then 200 gets the
// event; the log counts the attempts.
func TestWebhookRetriesAfter500AndTimeout(t *testing.T) {
	t.Parallel()
	e := startWebhookEnv(t, webhookConfig(t))
	rc := newReceiver(t)
	rc.answer = func(n int, _ cloudEvent) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	// The third request outlasts the 1 s timeout; the fourth succeeds.
	rc.delay = func(n int) time.Duration {
		if n == 3 {
			return 1500 * time.Millisecond
		}
		return 0
	}
	w := e.createWebhook(t, rc.srv.URL, "maestro.model.created.v1")
	rc.setSecrets(w.Secret)
	e.createModel(t, "retried")
	var log []deliveryView
	waitFor(t, 30*time.Second, "a delivery after 500s and a timeout", func() bool {
		log = e.deliveries(t, w.ID)
		return len(log) == 1 && log[0].Status == "succeeded"
	})
	if log[0].Attempts < 4 || *log[0].ResponseCode != 200 {
		t.Fatalf("delivery log %+v: want ≥4 attempts (500, 500, timeout, 200)", log[0])
	}
	got := rc.accepted()
	if len(got) < 1 || !got[0].verified[w.Secret] {
		t.Fatalf("accepted deliveries %+v", got)
	}
}

// At-least-once across a restart: the receiver is down while events are
// appended and Maestro restarts; once it is back, it gets every event.
func TestWebhookAtLeastOnceAcrossRestart(t *testing.T) {
	cfg := webhookConfig(t)
	e := startWebhookEnv(t, cfg)
	// A receiver address with nothing listening: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w := e.createWebhook(t, "http://"+addr+"/hook", "maestro.model.created.v1")
	const n = 5
	for i := range n {
		e.createModel(t, "down-"+string(rune('a'+i)))
	}
	waitFor(t, 15*time.Second, "failed attempts of every event", func() bool {
		log := e.deliveries(t, w.ID)
		if len(log) != n {
			return false
		}
		for _, d := range log {
			if d.Attempts < 1 || d.Status != "pending" {
				return false
			}
		}
		return true
	})
	want := map[string]bool{}
	for _, d := range e.deliveries(t, w.ID) {
		want[d.EventID] = true
	}
	owner, project := e.owner, e.project
	e.Stop()

	// Restart on the same data dir and database; then the receiver comes up.
	e2 := &whEnv{Env: testenv.Start(t, cfg), owner: owner, project: project}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("receiver cannot listen on %s again: %v", addr, err)
	}
	rc := &receiver{t: t}
	rc.setSecrets(w.Secret)
	srv := &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	waitFor(t, 30*time.Second, "every event at the receiver", func() bool {
		got := map[string]bool{}
		for _, d := range rc.accepted() {
			got[d.ce.ID] = true
		}
		for id := range want {
			if !got[id] {
				return false
			}
		}
		return true
	})
	// Owner tokens survive the restart (same signing key).
	for _, d := range e2.deliveries(t, w.ID) {
		if d.Status != "succeeded" && want[d.EventID] {
			waitFor(t, 10*time.Second, "the log to say succeeded", func() bool {
				for _, d2 := range e2.deliveries(t, w.ID) {
					if d2.EventID == d.EventID {
						return d2.Status == "succeeded"
					}
				}
				return false
			})
		}
	}
	for _, d := range rc.accepted() {
		if !d.verified[w.Secret] {
			t.Fatalf("delivery %s does not verify after the restart", d.ce.ID)
		}
	}
}

// Auto-disable: deliveries that fail for the whole retry window disable
// the subscription, recorded as an event in the audit trail.
func TestWebhookAutoDisable(t *testing.T) {
	t.Parallel()
	cfg := webhookConfig(t)
	cfg.Webhooks.RetryFor = time.Second
	e := startWebhookEnv(t, cfg)
	rc := newReceiver(t)
	rc.answer = func(int, cloudEvent) int { return http.StatusServiceUnavailable }
	w := e.createWebhook(t, rc.srv.URL, "maestro.model.*")
	e.createModel(t, "doomed")
	var got webhookView
	waitFor(t, 30*time.Second, "the webhook to be disabled", func() bool {
		r := e.Do("GET", e.base()+"/"+w.ID, e.owner, nil)
		r.JSON(t, &got)
		return !got.Enabled
	})
	if !strings.Contains(got.DisabledReason, "HTTP 503") {
		t.Fatalf("disabled reason %q", got.DisabledReason)
	}
	log := e.deliveries(t, w.ID)
	if len(log) != 1 || log[0].Status != "failed" || log[0].Attempts < 2 || *log[0].ResponseCode != 503 {
		t.Fatalf("delivery log %+v", log)
	}
	// The audit trail lingers behind commands (projections.Lingering): wait for it.
	var r testenv.Response
	waitFor(t, 30*time.Second, "the disable in the audit trail", func() bool {
		r = e.Do("GET", "/api/v1/audit?type=maestro.webhook.disabled.v1", e.owner, nil)
		return r.Status == http.StatusOK && strings.Contains(string(r.Body), w.ID)
	})
	// A disabled webhook takes no test event until enabled again.
	if r := e.Do("POST", e.base()+"/"+w.ID+":test", e.owner, nil); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "webhook-disabled") {
		t.Fatalf("test on a disabled webhook: %d %s", r.Status, r.Body)
	}
	if r := e.Do("PATCH", e.base()+"/"+w.ID, e.owner, map[string]any{"enabled": true}); r.Status != http.StatusOK {
		t.Fatalf("enable: %d %s", r.Status, r.Body)
	}
}

// rebinding resolves a name to a public address at first (the check at
// creation) and to loopback afterwards (the delivery): DNS rebinding.
type rebinding struct{ calls atomic.Int64 }

func (r *rebinding) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if host != "hooks.rebind.test" {
		return net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	}
	if r.calls.Add(1) == 1 {
		return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

// SSRF: without MAESTRO_WEBHOOK_ALLOW_PRIVATE_TARGETS, internal targets
// are refused at creation (422), and a name that rebinds to loopback
// after the check is refused when the delivery dials it.
func TestWebhookSSRFRefusals(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	res := &rebinding{}
	cfg.Webhooks = platform.WebhooksConfig{BackoffBase: 100 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Timeout: time.Second,
		Resolver: res}
	e := startWebhookEnv(t, cfg)
	rc := newReceiver(t)
	_, port, _ := net.SplitHostPort(rc.srv.Listener.Addr().String())
	for _, u := range []string{rc.srv.URL, "http://localhost:" + port + "/", "http://169.254.169.254/latest/meta-data/",
		"http://[fd00::1]/", "http://[::1]:" + port + "/", "http://10.1.2.3/", "http://[::ffff:127.0.0.1]/", "https://192.168.1.1/"} {
		r := e.Do("POST", e.base(), e.owner, map[string]any{"url": u, "events": []string{"*"}})
		if r.Status != http.StatusUnprocessableEntity || !strings.Contains(string(r.Body), "webhook-target-forbidden") {
			t.Errorf("create %s: %d %s, want 422 webhook-target-forbidden", u, r.Status, r.Body)
		}
	}
	for _, u := range []string{"ftp://example.com/", "http://user:pw@example.com/", "/relative"} {
		if r := e.Do("POST", e.base(), e.owner, map[string]any{"url": u, "events": []string{"*"}}); r.Status != http.StatusBadRequest {
			t.Errorf("create %s: %d %s, want 400", u, r.Status, r.Body)
		}
	}
	// DNS rebinding: accepted at creation, refused at the dial.
	w := e.createWebhook(t, "http://hooks.rebind.test:"+port+"/", "maestro.model.*")
	e.createModel(t, "rebound")
	waitFor(t, 15*time.Second, "a refused delivery attempt", func() bool {
		log := e.deliveries(t, w.ID)
		return len(log) == 1 && log[0].Attempts >= 2 && strings.Contains(log[0].LastError, "forbidden target address")
	})
	if n := rc.n.Load(); n != 0 {
		t.Fatalf("the loopback receiver got %d requests through a rebinding name", n)
	}
}

// Authorization: a project's webhooks are its owners'; editors are
// refused, strangers do not see the project; global webhooks are admins'.
func TestWebhookAuthorization(t *testing.T) {
	t.Parallel()
	e := startWebhookEnv(t, webhookConfig(t))
	rc := newReceiver(t)
	ed, edTok := e.UserWithRole(e.owner, "editor@example.com", "member")
	if r := e.Do("PUT", "/api/v1/projects/"+e.project+"/members/"+ed.ID, e.owner, map[string]any{"role": "editor"}); r.Status/100 != 2 {
		t.Fatalf("add editor: %d %s", r.Status, r.Body)
	}
	_, strangerTok := e.UserWithRole(e.owner, "stranger@example.com", "member")
	own, ownTok := e.UserWithRole(e.owner, "owner@example.com", "member")
	if r := e.Do("PUT", "/api/v1/projects/"+e.project+"/members/"+own.ID, e.owner, map[string]any{"role": "owner"}); r.Status/100 != 2 {
		t.Fatalf("add owner: %d %s", r.Status, r.Body)
	}
	body := map[string]any{"url": rc.srv.URL, "events": []string{"maestro.model.*"}}
	r := e.Do("POST", e.base(), ownTok.AccessToken, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("owner create: %d %s", r.Status, r.Body)
	}
	var w webhookView
	r.JSON(t, &w)
	for _, c := range []struct {
		who, token string
		want       int
	}{{"editor", edTok.AccessToken, http.StatusForbidden}, {"stranger", strangerTok.AccessToken, http.StatusNotFound}} {
		for _, req := range []struct{ method, path string }{{"POST", e.base()}, {"GET", e.base()}, {"GET", e.base() + "/" + w.ID},
			{"PATCH", e.base() + "/" + w.ID}, {"DELETE", e.base() + "/" + w.ID}, {"POST", e.base() + "/" + w.ID + ":test"},
			{"GET", e.base() + "/" + w.ID + "/deliveries"}} {
			var b any
			if req.method == "POST" || req.method == "PATCH" {
				b = body
			}
			if req.path != e.base() && req.method == "POST" && strings.HasSuffix(req.path, ":test") {
				b = nil
			}
			if r := e.Do(req.method, req.path, c.token, b); r.Status != c.want {
				t.Errorf("%s %s as %s: %d %s, want %d", req.method, req.path, c.who, r.Status, r.Body, c.want)
			}
		}
	}
	// Global webhooks: admins only; a project's webhook is not in the
	// global tree.
	for _, tok := range []string{ownTok.AccessToken, edTok.AccessToken} {
		if r := e.Do("POST", "/api/v1/webhooks", tok, body); r.Status != http.StatusForbidden {
			t.Errorf("non-admin global create: %d %s", r.Status, r.Body)
		}
		if r := e.Do("GET", "/api/v1/webhooks", tok, nil); r.Status != http.StatusForbidden {
			t.Errorf("non-admin global list: %d %s", r.Status, r.Body)
		}
	}
	if r := e.Do("GET", "/api/v1/webhooks/"+w.ID, e.owner, nil); r.Status != http.StatusNotFound {
		t.Errorf("project webhook through the global tree: %d %s", r.Status, r.Body)
	}
	r = e.Do("POST", "/api/v1/webhooks", e.owner, map[string]any{"url": rc.srv.URL, "events": []string{"*"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("admin global create: %d %s", r.Status, r.Body)
	}
	var g webhookView
	r.JSON(t, &g)
	r = e.Do("GET", "/api/v1/webhooks", e.owner, nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), g.ID) || strings.Contains(string(r.Body), w.ID) {
		t.Fatalf("global list: %d %s", r.Status, r.Body)
	}
	// Invalid patterns are refused.
	for _, p := range []string{"maestro.nothing.*", "maestro.*.created", "", strings.Repeat("x", 300)} {
		if r := e.Do("POST", e.base(), e.owner, map[string]any{"url": rc.srv.URL, "events": []string{p}}); r.Status != http.StatusBadRequest {
			t.Errorf("pattern %q: %d %s", p, r.Status, r.Body)
		}
	}
	// The owner deletes; the webhook is gone.
	if r := e.Do("DELETE", e.base()+"/"+w.ID, ownTok.AccessToken, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	if r := e.Do("GET", e.base()+"/"+w.ID, ownTok.AccessToken, nil); r.Status != http.StatusNotFound {
		t.Fatalf("get deleted: %d %s", r.Status, r.Body)
	}
}

// A project's webhook gets its project's events only; a global one gets
// every project's. Redirects are not followed.
func TestWebhookProjectScopeAndNoRedirects(t *testing.T) {
	t.Parallel()
	e := startWebhookEnv(t, webhookConfig(t))
	r := e.Do("POST", "/api/v1/projects", e.owner, map[string]any{"name": "Other"})
	if r.Status != http.StatusCreated {
		t.Fatalf("create project: %d %s", r.Status, r.Body)
	}
	var other struct{ ID string }
	r.JSON(t, &other)
	mine, global := newReceiver(t), newReceiver(t)
	mw := e.createWebhook(t, mine.srv.URL, "maestro.model.created.v1")
	if r := e.Do("POST", "/api/v1/webhooks", e.owner, map[string]any{"url": global.srv.URL, "events": []string{"maestro.model.created.v1"}}); r.Status != http.StatusCreated {
		t.Fatalf("global webhook: %d %s", r.Status, r.Body)
	}
	// A receiver that redirects to another one.
	target := newReceiver(t)
	redirect := httptest.NewServer(http.RedirectHandler(target.srv.URL, http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	rw := e.createWebhook(t, redirect.URL, "maestro.model.created.v1")

	if r := e.Do("POST", "/api/v1/projects/"+other.ID+"/models", e.owner, map[string]any{"name": "theirs"}); r.Status != http.StatusCreated {
		t.Fatalf("model in the other project: %d %s", r.Status, r.Body)
	}
	e.createModel(t, "ours")
	waitFor(t, 15*time.Second, "the global webhook's two events", func() bool { return len(global.accepted()) >= 2 })
	waitFor(t, 15*time.Second, "the project webhook's event", func() bool { return len(mine.accepted()) >= 1 })
	waitFor(t, 15*time.Second, "a redirected attempt in the log", func() bool {
		log := e.deliveries(t, rw.ID)
		return len(log) == 1 && log[0].ResponseCode != nil && *log[0].ResponseCode == http.StatusTemporaryRedirect && log[0].Status == "pending"
	})
	// The global webhook got both events, so both were matched; each
	// event's outbox rows are written by one statement, so the project
	// webhook's log is final: the other project's event is not in it.
	got := mine.accepted()
	if log := e.deliveries(t, mw.ID); len(log) != 1 || len(got) != 1 || log[0].EventID != got[0].ce.ID || !strings.Contains(string(got[0].ce.Data), `"ours"`) {
		t.Fatalf("the project's webhook: log %+v, received %+v", log, got)
	}
	if n := target.n.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}

// Managing a subscription re-checks the caller's role at decision time,
// on the event-sourced state (the project's membership, the user's role
// and activity), never on what the caller could do when the webhook was
// made: an owner demoted to editor, asynchronously (the read models may
// not show it yet), is refused every webhook action at once; the
// subscription itself, the project's, keeps delivering. An admin demoted
// to member loses the global webhooks; a deactivated owner's token ends.
func TestWebhookManagementRechecksTheCurrentRole(t *testing.T) {
	t.Parallel()
	e := startWebhookEnv(t, webhookConfig(t))
	rc := newReceiver(t)
	own, ownTok := e.UserWithRole(e.owner, "former-owner@example.com", "admin")
	if r := e.Do("PUT", "/api/v1/projects/"+e.project+"/members/"+own.ID, e.owner, map[string]any{"role": "owner"}); r.Status/100 != 2 {
		t.Fatalf("add owner: %d %s", r.Status, r.Body)
	}
	body := map[string]any{"url": rc.srv.URL, "events": []string{"maestro.model.*"}}
	r := e.Do("POST", e.base(), ownTok.AccessToken, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("owner create: %d %s", r.Status, r.Body)
	}
	var w webhookView
	r.JSON(t, &w)
	rc.setSecrets(w.Secret)
	// The global webhook has a receiver of its own (it gets the model
	// events too).
	r = e.Do("POST", "/api/v1/webhooks", ownTok.AccessToken, map[string]any{"url": newReceiver(t).srv.URL, "events": []string{"maestro.model.*"}})
	if r.Status != http.StatusCreated {
		t.Fatalf("admin global create: %d %s", r.Status, r.Body)
	}
	var g webhookView
	r.JSON(t, &g)

	// Demoted in the project and globally, answered before the read
	// models need to have applied it.
	async := []string{"Prefer", "respond-async"}
	if r := e.Do("PUT", "/api/v1/projects/"+e.project+"/members/"+own.ID, e.owner, map[string]any{"role": "editor"}, async...); r.Status/100 != 2 {
		t.Fatalf("demote in the project: %d %s", r.Status, r.Body)
	}
	if r := e.Do("PATCH", "/api/v1/users/"+own.ID, e.owner, map[string]any{"role": "member"}, async...); r.Status/100 != 2 {
		t.Fatalf("demote globally: %d %s", r.Status, r.Body)
	}
	for _, tree := range []string{e.base(), "/api/v1/webhooks"} {
		id := w.ID
		if tree == "/api/v1/webhooks" {
			id = g.ID
		}
		for _, req := range []struct {
			method, path string
			body         any
		}{
			{"PATCH", tree + "/" + id, map[string]any{"enabled": false}},
			{"POST", tree + "/" + id + ":rotate-secret", map[string]any{}},
			{"POST", tree + "/" + id + ":test", nil},
			{"DELETE", tree + "/" + id, nil},
			{"GET", tree + "/" + id, nil},
			{"POST", tree, body},
		} {
			if r := e.Do(req.method, req.path, ownTok.AccessToken, req.body); r.Status != http.StatusForbidden {
				t.Errorf("%s %s by the demoted owner: %d %s, want 403", req.method, req.path, r.Status, r.Body)
			}
		}
	}
	// The subscription is the project's: it still delivers, signed with
	// its unchanged secret.
	e.createModel(t, "after-demotion")
	waitFor(t, 15*time.Second, "a delivery after the creator's demotion", func() bool { return len(rc.accepted()) >= 1 })
	if d := rc.accepted()[0]; d.ce.Type != "maestro.model.created.v1" || !d.verified[w.Secret] {
		t.Fatalf("delivery %+v verified %v", d.ce, d.verified)
	}

	// Owner again, then deactivated: the token is refused.
	if r := e.Do("PUT", "/api/v1/projects/"+e.project+"/members/"+own.ID, e.owner, map[string]any{"role": "owner"}); r.Status/100 != 2 {
		t.Fatalf("owner again: %d %s", r.Status, r.Body)
	}
	if r := e.Do("PATCH", e.base()+"/"+w.ID, ownTok.AccessToken, map[string]any{"description": "still mine"}); r.Status != http.StatusOK {
		t.Fatalf("owner again may update: %d %s", r.Status, r.Body)
	}
	if r := e.Do("PATCH", "/api/v1/users/"+own.ID, e.owner, map[string]any{"active": false}); r.Status/100 != 2 {
		t.Fatalf("deactivate: %d %s", r.Status, r.Body)
	}
	if r := e.Do("PATCH", e.base()+"/"+w.ID, ownTok.AccessToken, map[string]any{"enabled": false}); r.Status != http.StatusUnauthorized {
		t.Fatalf("update by a deactivated owner: %d %s, want 401", r.Status, r.Body)
	}
}

// An archived project's subscriptions are kept and keep delivering (the
// archive event itself, and the restore, are worth telling a receiver);
// while archived, they cannot be created, changed or rotated (409
// project-archived, like every change to the project), but may be listed,
// tested and deleted.
func TestWebhookArchivedProject(t *testing.T) {
	t.Parallel()
	e := startWebhookEnv(t, webhookConfig(t))
	rc := newReceiver(t)
	w := e.createWebhook(t, rc.srv.URL, "maestro.project.*")
	rc.setSecrets(w.Secret)
	if r := e.Do("DELETE", "/api/v1/projects/"+e.project, e.owner, nil); r.Status != http.StatusOK {
		t.Fatalf("archive: %d %s", r.Status, r.Body)
	}
	waitFor(t, 15*time.Second, "the archive event at the receiver", func() bool {
		for _, d := range rc.accepted() {
			if d.ce.Type == "maestro.project.archived.v1" && d.verified[w.Secret] {
				return true
			}
		}
		return false
	})
	for _, req := range []struct {
		method, path string
		body         any
	}{
		{"POST", e.base(), map[string]any{"url": rc.srv.URL, "events": []string{"*"}}},
		{"PATCH", e.base() + "/" + w.ID, map[string]any{"description": "x"}},
		{"POST", e.base() + "/" + w.ID + ":rotate-secret", map[string]any{}},
	} {
		if r := e.Do(req.method, req.path, e.owner, req.body); r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "project-archived") {
			t.Errorf("%s %s on an archived project: %d %s, want 409 project-archived", req.method, req.path, r.Status, r.Body)
		}
	}
	if r := e.Do("GET", e.base(), e.owner, nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), w.ID) {
		t.Fatalf("list on an archived project: %d %s", r.Status, r.Body)
	}
	r := e.Do("POST", e.base()+"/"+w.ID+":test", e.owner, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("test on an archived project: %d %s", r.Status, r.Body)
	}
	var test struct {
		EventID string `json:"event_id"`
	}
	r.JSON(t, &test)
	waitFor(t, 15*time.Second, "the test delivery", func() bool {
		for _, d := range rc.accepted() {
			if d.ce.ID == test.EventID {
				return true
			}
		}
		return false
	})
	if r := e.Do("DELETE", e.base()+"/"+w.ID, e.owner, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete on an archived project: %d %s", r.Status, r.Body)
	}
}

// A project holds at most webhooks.MaxProjectWebhooks subscriptions: the
// next creation answers 409 webhook-limit naming the limit; another
// project is not affected, and a deletion frees a place.
func TestWebhookCapPerProject(t *testing.T) {
	t.Parallel()
	e := startWebhookEnv(t, webhookConfig(t))
	rc := newReceiver(t)
	var first webhookView
	for i := range webhooks.MaxProjectWebhooks {
		w := e.createWebhook(t, rc.srv.URL, "maestro.model.created.v1")
		if i == 0 {
			first = w
		}
	}
	body := map[string]any{"url": rc.srv.URL, "events": []string{"maestro.model.created.v1"}}
	r := e.Do("POST", e.base(), e.owner, body)
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "webhook-limit") || !strings.Contains(string(r.Body), "at most 50 webhooks") {
		t.Fatalf("creation past the cap: %d %s, want 409 webhook-limit naming the limit", r.Status, r.Body)
	}
	r = e.Do("POST", "/api/v1/projects", e.owner, map[string]any{"name": "Other"})
	if r.Status != http.StatusCreated {
		t.Fatalf("create project: %d %s", r.Status, r.Body)
	}
	var other struct{ ID string }
	r.JSON(t, &other)
	if r := e.Do("POST", "/api/v1/projects/"+other.ID+"/webhooks", e.owner, body); r.Status != http.StatusCreated {
		t.Fatalf("creation in another project: %d %s", r.Status, r.Body)
	}
	if r := e.Do("DELETE", e.base()+"/"+first.ID, e.owner, nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	e.createWebhook(t, rc.srv.URL, "maestro.model.created.v1")
}
