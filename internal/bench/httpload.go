package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
)

const benchPassword = "correct horse battery staple"

// benchHTTP measures POST /auth/login and GET /auth/me through the real
// HTTP API with concurrent clients, each logged in as its own user.
func (r *runner) benchHTTP(ctx context.Context, p *platform.Platform, syncOn bool) error {
	clients := r.cfg.HTTPClients
	emails := make([]string, clients)
	var last uint64
	for i := range emails {
		emails[i] = fmt.Sprintf("http-%d@example.com", i)
		_, seq, err := p.Identity.Register(ctx, events.Meta{Actor: events.SystemActor, Time: time.Now()},
			identity.RegisterInput{Email: emails[i], Password: benchPassword, Name: "HTTP Bench", Role: "viewer", Source: "admin-cli"})
		if err != nil {
			return fmt.Errorf("register %s: %w", emails[i], err)
		}
		last = max(last, seq)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ok := p.Waiter.WaitRead(wctx, last, projectionNames()...)
	cancel()
	if !ok {
		return fmt.Errorf("http: users not projected: %w", errTimeout)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxIdleConns: clients}}
	defer hc.CloseIdleConnections()
	base := p.URL()
	tokens := make([]string, clients)

	login := func(i int) (int, error) {
		body, _ := json.Marshal(map[string]string{"email": emails[i], "password": benchPassword})
		req, err := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/auth/login", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tok); err == nil && tok.AccessToken != "" {
			tokens[i] = tok.AccessToken
		}
		return resp.StatusCode, nil
	}
	me := func(i int) (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/auth/me", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tokens[i])
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	fsync := syncName(syncOn)
	rows := []struct {
		name string
		n    int
		do   func(int) (int, error)
		note string
	}{
		{"HTTP POST /auth/login", r.cfg.HTTPLogins, login, "argon2id m=1MiB t=1 (test params); waits for projections"},
		{"HTTP GET /auth/me", r.cfg.HTTPMe, me, "JWT + sessions projection + users query"},
	}
	for _, row := range rows {
		memstat.ResetPeakRSS()
		lat, wall, bad, err := load(ctx, clients, row.n, row.do)
		if err != nil {
			return err
		}
		al, by := lat.alloc.perOp()
		note := row.note + "; allocs = client + server"
		if bad > 0 {
			note += fmt.Sprintf("; %d non-200", bad)
		}
		r.add(Row{Name: fmt.Sprintf("%s, %d clients", row.name, clients), Fsync: fsync, N: row.n, Total: wall,
			Lat: &lat.s, Rate: float64(row.n) / wall.Seconds(), Unit: "req/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(), Note: note})
	}
	return nil
}

type loadResult struct {
	s     Samples
	alloc allocMeter
}

// load runs n requests over `clients` goroutines; client i always acts as
// user i. It returns the latencies, wall time and non-200 count.
func load(ctx context.Context, clients, n int, do func(int) (int, error)) (*loadResult, time.Duration, int, error) {
	var next atomic.Int64
	res := &loadResult{}
	res.alloc.start()
	lat, _, wall, bad, err := drive(ctx, clients, func() bool { return int(next.Add(1)) <= n }, do)
	res.alloc.stop(n)
	if err != nil {
		return nil, 0, 0, err
	}
	res.s = *lat
	return res, wall, bad, nil
}

// drive runs do from `clients` goroutines while more says so; client i
// always acts as client i. It returns the latencies, the number of
// requests, the wall time and how many answered something else than 200.
func drive(ctx context.Context, clients int, more func() bool, do func(int) (int, error)) (*Samples, int, time.Duration, int, error) {
	var n, bad atomic.Int64
	lats := make([]Samples, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Go(func() {
			for more() && ctx.Err() == nil {
				t0 := time.Now()
				code, err := do(i)
				if err != nil {
					errs[i] = err
					return
				}
				lats[i].Add(time.Since(t0))
				n.Add(1)
				if code != http.StatusOK {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	var all Samples
	for i := range lats {
		if errs[i] != nil {
			return nil, 0, 0, 0, errs[i]
		}
		all.Merge(&lats[i])
	}
	return &all, int(n.Load()), wall, int(bad.Load()), ctx.Err()
}
