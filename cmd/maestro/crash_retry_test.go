package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type crashReq struct {
	key, desc string
}

type crashAnswer struct {
	status  int
	version int
	seq     uint64
	body    string
}

// crashDo sends one JSON request and decodes a version answer.
func crashDo(c *http.Client, method, u, token, key string, body any) (crashAnswer, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return crashAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return crashAnswer{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return crashAnswer{}, err
	}
	a := crashAnswer{status: resp.StatusCode, body: string(out)}
	a.seq, _ = strconv.ParseUint(resp.Header.Get("Maestro-Sequence"), 10, 64)
	var v struct {
		Version int `json:"version"`
	}
	if json.Unmarshal(out, &v) == nil {
		a.version = v.Version
	}
	return a, nil
}

// The issue-6 crash: twelve clients register versions of one model, each
// request with its own Idempotency-Key; `maestro serve` is killed with
// SIGKILL mid-traffic and started again on the same data dir; every
// unanswered request is resent with the same key, body and token. Each retry
// must answer 201 with the version that is in fact stored for it (exactly
// once), whether its first attempt stored it or not, and the versions stay
// gapless. Before the fix, retries whose version was stored answered 409 for
// 30 s, then a stored 404 "model version not found".
func TestCrashRetryAnswersStoredVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binary and a managed PostgreSQL twice")
	}
	bin, dataDir, env, p, c, tok := startCrashServe(t)
	a, err := crashDo(c, "POST", p.url+"/api/v1/projects", tok.AccessToken, "", map[string]string{"name": "crash"})
	if err != nil || a.status != http.StatusCreated {
		t.Fatalf("create project: %v %+v", err, a)
	}
	a, err = crashDo(c, "POST", p.url+"/api/v1/projects/crash/models", tok.AccessToken, "", map[string]string{"name": "m"})
	if err != nil || a.status != http.StatusCreated {
		t.Fatalf("create model: %v %+v", err, a)
	}

	answered := map[string]int{} // description → version answered
	var maxSeq uint64
	// A crash only tests the fix if some unanswered registration was in
	// fact stored (killed between its append and its answer); that happens
	// in most kills, so crash again (at most three times) until it did.
	storedUnanswered := 0
	for cycle := 0; cycle < 3 && storedUnanswered == 0; cycle++ {
		var n int
		p, n, maxSeq = crashCycle(t, bin, dataDir, env, p, c, tok.AccessToken, cycle, answered, maxSeq)
		storedUnanswered += n
		if t.Failed() {
			return
		}
	}
	if storedUnanswered == 0 {
		t.Log("no crash hit a registration between its append and its answer: only the unstored retries were exercised")
	}

	versions := p.url + "/api/v1/projects/crash/models/m/versions"
	// The stored versions: gapless, each request exactly once, and every
	// answer names the version stored for its request.
	stored := listDescriptions(t, c, versions, tok.AccessToken, maxSeq)
	var numbers []int
	for _, vs := range stored {
		numbers = append(numbers, vs...)
	}
	slices.Sort(numbers)
	for i, v := range numbers {
		if v != i+1 {
			t.Fatalf("stored version numbers are not 1..%d without gaps: %v", len(numbers), numbers)
		}
	}
	for desc, vs := range stored {
		if len(vs) != 1 {
			t.Errorf("%q is stored as versions %v, want exactly one", desc, vs)
		}
	}
	for desc, v := range answered {
		if vs := stored[desc]; len(vs) != 1 || vs[0] != v {
			t.Errorf("%q was answered as version %d, but is stored as %v", desc, v, vs)
		}
	}
	if len(stored) != len(answered) {
		t.Errorf("%d requests stored, %d answered", len(stored), len(answered))
	}
	p.stop(t)
}

// crashToken is the bootstrap admin's login answer.
type crashToken struct {
	AccessToken string `json:"access_token"`
}

// startCrashServe builds the binary and starts `maestro serve` on a fresh
// data dir with a bootstrap admin, logged in: what every crash test starts
// from (the binary, data dir and env serve again after each kill).
func startCrashServe(t *testing.T) (bin, dataDir string, env []string, p *serveProc, c *http.Client, tok crashToken) {
	t.Helper()
	bin = buildBinary(t)
	dataDir = serveDataDir(t)
	env = []string{"MAESTRO_BOOTSTRAP_ADMIN_EMAIL=root@crash.test", "MAESTRO_BOOTSTRAP_ADMIN_PASSWORD=bootstrap password 1"}
	p = startServe(t, bin, dataDir, env...)
	c = &http.Client{Timeout: 30 * time.Second}
	st, body := post(t, p.url+"/api/v1/auth/login", map[string]string{"email": "root@crash.test", "password": "bootstrap password 1"})
	if st != http.StatusOK {
		t.Fatalf("login: %d %s", st, body)
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	return bin, dataDir, env, p, c, tok
}

// registered reports whether a registration answer says the version is
// stored: 201, or 202 when the bounded read-your-writes wait ran out on a
// loaded machine (the body names the version all the same).
func registered(a crashAnswer) bool {
	return (a.status == http.StatusCreated || a.status == http.StatusAccepted) && a.version > 0
}

// crashCycle runs twelve keyed registration clients against p until it
// dies by SIGKILL, starts serve again on the same data dir, and resends
// every unanswered request (same key, body and token), checking each retry.
// It records every answer in answered and returns the new process, how many
// unanswered registrations had been stored, and the highest sequence seen.
func crashCycle(t *testing.T, bin, dataDir string, env []string, p *serveProc, c *http.Client, token string,
	cycle int, answered map[string]int, maxSeq uint64) (*serveProc, int, uint64) {
	t.Helper()
	versions := p.url + "/api/v1/projects/crash/models/m/versions"
	const clients = 12
	var mu sync.Mutex
	var unanswered []crashReq
	progress := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for n := 0; ; n++ {
				r := crashReq{key: fmt.Sprintf("crash-%d-%d-%d", cycle, i, n), desc: fmt.Sprintf("cycle %d client %d request %d", cycle, i, n)}
				a, err := crashDo(c, "POST", versions, token, r.key, map[string]string{"description": r.desc})
				mu.Lock()
				if err != nil { // the server died: this one has no answer
					unanswered = append(unanswered, r)
					mu.Unlock()
					return
				}
				if !registered(a) {
					mu.Unlock()
					t.Errorf("register %s before the crash: %d %s", r.key, a.status, a.body)
					return
				}
				answered[r.desc] = a.version
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
	// Kill once traffic runs at full speed (a few dozen answers in).
	deadline := time.After(60 * time.Second)
	for n := 0; n < 48; n++ {
		select {
		case <-progress:
		case <-deadline:
			t.Fatal("registrations did not get going within 60s")
		}
	}
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	wg.Wait()
	if t.Failed() {
		return p, 0, maxSeq
	}

	p = startServe(t, bin, dataDir, env...)
	versions = p.url + "/api/v1/projects/crash/models/m/versions"
	// What the stream holds before any retry: a command after the restart
	// gives a sequence past every stored registration to read at.
	a, err := crashDo(c, "PATCH", p.url+"/api/v1/projects/crash/models/m", token, "", map[string]string{"description": fmt.Sprint("after crash ", cycle)})
	if err != nil || (a.status != http.StatusOK && a.status != http.StatusAccepted) {
		t.Fatalf("command after restart (same token): %v %+v", err, a)
	}
	maxSeq = max(maxSeq, a.seq)
	before := listDescriptions(t, c, versions, token, a.seq)
	storedUnanswered := 0
	for _, r := range unanswered {
		if _, ok := before[r.desc]; ok {
			storedUnanswered++
		}
	}
	t.Logf("crash %d: %d answered so far; %d unanswered, of which %d were stored", cycle, len(answered), len(unanswered), storedUnanswered)

	// Resend every unanswered request as a client would: same key, body and
	// token.
	retried := resendAll(t, len(unanswered), func(i int) (crashAnswer, int, error) {
		r := unanswered[i]
		a, err := crashDo(c, "POST", versions, token, r.key, map[string]string{"description": r.desc})
		return a, a.status, err
	})
	for i, r := range unanswered {
		a := retried[i]
		if !registered(a) {
			t.Errorf("retry %s (%q): %d %s, want 201", r.key, r.desc, a.status, a.body)
			continue
		}
		answered[r.desc] = a.version
		maxSeq = max(maxSeq, a.seq)
		// A second retry replays the same answer.
		again, err := crashDo(c, "POST", versions, token, r.key, map[string]string{"description": r.desc})
		if err != nil || !registered(again) || again.version != a.version {
			t.Errorf("second retry %s: %v %+v, want 201 version %d", r.key, err, again, a.version)
		}
	}
	return p, storedUnanswered, maxSeq
}

// resendAll resends n requests at once as clients would after a crash,
// again after a 409 request-in-progress (honouring its Retry-After of 1 s,
// for up to 45 s), and returns the last answers. The restarted sole
// instance must take over its dead predecessor's pending keys at once, so
// any 409 is an error.
func resendAll[A any](t *testing.T, n int, send func(i int) (answer A, status int, err error)) []A {
	t.Helper()
	out := make([]A, n)
	var inProgress atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			stop := time.Now().Add(45 * time.Second)
			for {
				a, status, err := send(i)
				if err != nil {
					t.Errorf("retry %d: %v", i, err)
					return
				}
				if status == http.StatusConflict && time.Now().Before(stop) {
					inProgress.Add(1)
					time.Sleep(time.Second) // the Retry-After the 409 names
					continue
				}
				out[i] = a
				return
			}
		})
	}
	wg.Wait()
	if k := inProgress.Load(); k > 0 {
		t.Errorf("%d retries answered 409 request-in-progress: the restarted sole instance must take over its dead predecessor's pending keys at once", k)
	}
	return out
}

// listDescriptions reads every version of the model once the read side has
// reached seq: description → version numbers.
func listDescriptions(t *testing.T, c *http.Client, versionsURL, token string, seq uint64) map[string][]int {
	t.Helper()
	out := map[string][]int{}
	q := url.Values{"max_results": {"200"}, "min_sequence": {strconv.FormatUint(seq, 10)}}
	catchUp := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", versionsURL+"?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(catchUp) {
			continue // the read side is still catching up after the restart; the server waited ~2 s
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list versions: %d %s", resp.StatusCode, body)
		}
		var page struct {
			Items []struct {
				Version     int    `json:"version"`
				Description string `json:"description"`
			} `json:"items"`
			NextPageToken string `json:"next_page_token"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			out[it.Description] = append(out[it.Description], it.Version)
		}
		if page.NextPageToken == "" {
			return out
		}
		q.Set("page_token", page.NextPageToken)
	}
}
