package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
)

// Sizes of the registry scenario.
const (
	regWrites        = 2000   // POST .../versions per write row
	regModels        = 10_000 // models in the list project
	regVersions      = 100_000
	regQueryN        = 300 // sequential requests per list query
	regPageSize      = 50
	regDeepPage      = 20
	regTeams         = 10
	regFillWorkerCap = 8
)

// benchRegistry measures the model registry through HTTP: registering
// versions with concurrent clients (all to one model, and one model per
// client), then list and search latency in a project holding regModels
// models and regVersions versions, filled by appending events directly.
func (r *runner) benchRegistry(ctx context.Context) error {
	if err := r.registryWrites(ctx); err != nil {
		return err
	}
	return r.registryLists(ctx)
}

// regClient is an HTTP client logged in as one user.
type regClient struct {
	hc    *http.Client
	base  string
	token string
}

func (c *regClient) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// must is do that fails unless the answer has status want.
func (c *regClient) must(ctx context.Context, want int, method, path string, body any, into any) error {
	code, out, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	// A command answered 202 is stored; only the bounded read-your-writes
	// wait ran out (a loaded machine), which setup steps need not fail on.
	accepted := code == http.StatusAccepted && method != http.MethodGet && (want == http.StatusOK || want == http.StatusCreated)
	if code != want && !accepted {
		return fmt.Errorf("%s %s: %d %s", method, path, code, out)
	}
	if into != nil {
		return json.Unmarshal(out, into)
	}
	return nil
}

// registryUser registers a member through the identity service, waits for
// the projections and logs in through HTTP.
func registryUser(ctx context.Context, p *platform.Platform, clients int, email string) (*regClient, string, error) {
	u, seq, err := p.Identity.Register(ctx, events.Meta{Actor: events.SystemActor, Time: time.Now()},
		identity.RegisterInput{Email: email, Password: benchPassword, Name: "Registry Bench", Role: "member", Source: "admin-cli"})
	if err != nil {
		return nil, "", fmt.Errorf("register %s: %w", email, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ok := p.Waiter.WaitRead(wctx, seq, projectionNames()...)
	cancel()
	if !ok {
		return nil, "", fmt.Errorf("registry: user not projected: %w", errTimeout)
	}
	c := &regClient{base: p.URL(), hc: &http.Client{Timeout: 60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxIdleConns: clients}}}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := c.must(ctx, 200, "POST", "/api/v1/auth/login", map[string]string{"email": email, "password": benchPassword}, &tok); err != nil {
		return nil, "", err
	}
	c.token = tok.AccessToken
	return c, u.ID, nil
}

func (r *runner) registryWrites(ctx context.Context) error {
	p, err := r.env.startPlatform(ctx, true, true, true)
	if err != nil {
		return err
	}
	defer stopPlatform(p)
	clients := r.cfg.HTTPClients
	c, _, err := registryUser(ctx, p, clients, "registry-writer@example.com")
	if err != nil {
		return err
	}
	defer c.hc.CloseIdleConnections()
	var proj struct {
		Slug string `json:"slug"`
	}
	if err := c.must(ctx, 201, "POST", "/api/v1/projects", map[string]any{"name": "Registry Writes"}, &proj); err != nil {
		return err
	}
	models := "/api/v1/projects/" + proj.Slug + "/models"
	for i := range clients {
		if err := c.must(ctx, 201, "POST", models, map[string]any{"name": fmt.Sprintf("m%d", i)}, nil); err != nil {
			return err
		}
	}
	body := map[string]any{"description": "bench", "source": "s3://bench/model", "metrics": map[string]float64{"auc": 0.9}}
	// created counts the 201s per model: load hands out requests to whichever
	// client is free, so no client makes exactly n/clients of them.
	created := make([]atomic.Int64, clients)
	register := func(model func(client int) int) func(int) (int, error) {
		return func(i int) (int, error) {
			m := model(i)
			code, _, err := c.do(ctx, "POST", fmt.Sprintf("%s/m%d/versions", models, m), body)
			switch code {
			case http.StatusCreated:
				created[m].Add(1)
				code = http.StatusOK // load counts anything but 200 as a failure
			case http.StatusAccepted: // stored; the read-your-writes wait timed out
				created[m].Add(1)
			}
			return code, err
		}
	}
	for _, row := range []struct {
		name  string
		model func(client int) int
	}{
		{"one model", func(int) int { return 0 }},
		{fmt.Sprintf("%d models (one per client)", clients), func(i int) int { return i }},
	} {
		memstat.ResetPeakRSS()
		lat, wall, bad, err := load(ctx, clients, regWrites, register(row.model))
		if err != nil {
			return err
		}
		al, by := lat.alloc.perOp()
		note := "201 after projections applied (read-your-writes); allocs = client + server"
		if bad > 0 {
			note += fmt.Sprintf("; %d non-201", bad)
		}
		r.add(Row{Name: fmt.Sprintf("HTTP POST .../versions, %d clients, %s", clients, row.name), Fsync: "on", N: regWrites, Total: wall,
			Lat: &lat.s, Rate: float64(regWrites) / wall.Seconds(), Unit: "req/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(), Note: note})
	}
	// Every registration answered 201 (or 202) is there, numbered without
	// gaps: each model's latest version is the number of them it got. (A
	// 202's version may reach the read model a moment later.)
	deadline := time.Now().Add(10 * time.Second)
	for i := range clients {
		want := created[i].Load()
		for {
			var m struct {
				LatestVersion int `json:"latest_version"`
			}
			if err := c.must(ctx, 200, "GET", fmt.Sprintf("%s/m%d", models, i), nil, &m); err != nil {
				return err
			}
			if int64(m.LatestVersion) == want {
				break
			}
			if int64(m.LatestVersion) > want || time.Now().After(deadline) {
				return fmt.Errorf("registry: m%d has %d versions after %d registrations answered 201 or 202", i, m.LatestVersion, want)
			}
			time.Sleep(50 * time.Millisecond) // polling the read model, bounded by deadline
		}
	}
	return nil
}

func (r *runner) registryLists(ctx context.Context) error {
	memstat.ResetPeakRSS()
	p, err := r.env.startPlatform(ctx, false, true, true)
	if err != nil {
		return err
	}
	defer stopPlatform(p)
	c, userID, err := registryUser(ctx, p, 1, "registry-reader@example.com")
	if err != nil {
		return err
	}
	defer c.hc.CloseIdleConnections()
	var proj struct {
		ID   string `json:"id"`
		Slug string `json:"slug"`
	}
	if err := c.must(ctx, 201, "POST", "/api/v1/projects", map[string]any{"name": "Registry Lists"}, &proj); err != nil {
		return err
	}
	workers := min(r.cfg.FillWorkers, regFillWorkerCap)
	r.logf("registry: filling %d models, %d versions (%d writers)", regModels, regVersions, workers)
	first, err := p.Store.LastSequence(ctx)
	if err != nil {
		return err
	}
	var meter allocMeter
	meter.start()
	start := time.Now()
	if err := fillRegistry(ctx, p, proj.ID, userID, workers); err != nil {
		return err
	}
	fillTime := time.Since(start)
	last, err := p.Store.LastSequence(ctx)
	if err != nil {
		return err
	}
	n := int(last - first)
	meter.stop(n)
	al, by := meter.perOp()
	r.add(Row{Name: fmt.Sprintf("Registry fill: %d models + %d versions, %d writers (single appends)", regModels, regVersions, workers),
		Fsync: "off", N: n, Total: fillTime, Rate: float64(n) / fillTime.Seconds(), Unit: "ev/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(),
		Note: "per event; reservation + created + versions, appended directly (no deciders)"})

	memstat.ResetPeakRSS()
	start = time.Now()
	_, done, err := waitCheckpoints(ctx, p.Pool, last, 0)
	if err != nil {
		return err
	}
	catchUp := time.Since(start)
	r.add(Row{Name: "Registry fill: projections caught up", Fsync: "off", N: n, Total: catchUp, Rate: float64(n) / catchUp.Seconds(),
		Unit: "ev/s", Allocs: -1, Bytes: -1, PeakRSS: memstat.PeakRSS(), Note: "after the last append; done at: " + perProjection(done)})

	models := "/api/v1/projects/" + proj.Slug + "/models"
	type page struct {
		Items []struct {
			Name string            `json:"name"`
			Tags map[string]string `json:"tags"`
		} `json:"items"`
		NextPageToken string `json:"next_page_token"`
	}
	// The token of page regDeepPage by name.
	token := ""
	for i := 1; i < regDeepPage; i++ {
		var pg page
		if err := c.must(ctx, 200, "GET", fmt.Sprintf("%s?order_by=name&max_results=%d&page_token=%s", models, regPageSize, url.QueryEscape(token)), nil, &pg); err != nil {
			return err
		}
		if token = pg.NextPageToken; token == "" {
			return fmt.Errorf("registry: only %d pages of models", i)
		}
	}
	team := "team-3"
	queries := []struct {
		name, path string
		items      int // items expected on the page
		check      func(page) error
	}{
		{"models, first page by name", fmt.Sprintf("%s?order_by=name&max_results=%d", models, regPageSize), regPageSize, func(pg page) error {
			if pg.Items[0].Name != modelName(0) {
				return fmt.Errorf("first model %s", pg.Items[0].Name)
			}
			return nil
		}},
		{"models, first page by updated", fmt.Sprintf("%s?order_by=updated&max_results=%d", models, regPageSize), regPageSize, nil},
		{"models, name_prefix (100 matches)", fmt.Sprintf("%s?name_prefix=%s&max_results=%d", models, "model-001", regPageSize), regPageSize, nil},
		{"models, tag_key+tag_value (1,000 matches)", fmt.Sprintf("%s?tag_key=team&tag_value=%s&max_results=%d", models, team, regPageSize), regPageSize, func(pg page) error {
			for _, it := range pg.Items {
				if it.Tags["team"] != team {
					return fmt.Errorf("model %s has team %q", it.Name, it.Tags["team"])
				}
			}
			return nil
		}},
		{"models, tag_key only (100 matches)", fmt.Sprintf("%s?tag_key=rare&max_results=%d", models, regPageSize), regPageSize, nil},
		{fmt.Sprintf("models, page %d by name", regDeepPage), fmt.Sprintf("%s?order_by=name&max_results=%d&page_token=%s", models, regPageSize, url.QueryEscape(token)), regPageSize, func(pg page) error {
			if want := modelName((regDeepPage - 1) * regPageSize); pg.Items[0].Name != want {
				return fmt.Errorf("page %d starts at %s, want %s", regDeepPage, pg.Items[0].Name, want)
			}
			return nil
		}},
		{"versions of one model (10)", fmt.Sprintf("%s/%s/versions?max_results=%d", models, modelName(4242), regPageSize), regVersions / regModels, nil},
	}
	for _, q := range queries {
		var pg page
		if err := c.must(ctx, 200, "GET", q.path, nil, &pg); err != nil {
			return err
		}
		if len(pg.Items) != q.items {
			return fmt.Errorf("registry: %s: %d items, want %d", q.name, len(pg.Items), q.items)
		}
		if q.check != nil {
			if err := q.check(pg); err != nil {
				return fmt.Errorf("registry: %s: %w", q.name, err)
			}
		}
		memstat.ResetPeakRSS()
		lat, wall, bad, err := load(ctx, 1, regQueryN, func(int) (int, error) {
			code, _, err := c.do(ctx, "GET", q.path, nil)
			return code, err
		})
		if err != nil {
			return err
		}
		al, by := lat.alloc.perOp()
		note := fmt.Sprintf("%d models / %d versions in the project; %d items per page", regModels, regVersions, q.items)
		if bad > 0 {
			note += fmt.Sprintf("; %d non-200", bad)
		}
		r.add(Row{Name: "HTTP GET " + q.name + ", 1 client", N: regQueryN, Total: wall, Lat: &lat.s,
			Rate: float64(regQueryN) / wall.Seconds(), Unit: "req/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(), Note: note})
	}
	return nil
}

func modelName(i int) string { return fmt.Sprintf("model-%05d", i) }

// fillRegistry appends, per model, its name reservation, its creation and
// its versions, as the registry service would (one writer per model at a
// time, so each model's versions are in order).
func fillRegistry(ctx context.Context, p *platform.Platform, projectID, userID string, workers int) error {
	perModel := regVersions / regModels
	actor := events.Actor{Kind: events.ActorUser, ID: userID}
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for k := range workers {
		wg.Go(func() {
			appendOne := func(subject, typ string, expect uint64, data any) bool {
				env, err := events.New(events.Meta{Actor: actor, Time: time.Now(), CorrelationID: uuid.NewString()}, subject, typ, 0, data)
				if err == nil {
					_, err = p.Store.Append(ctx, events.Append{Event: env, Expect: expect})
				}
				errs[k] = err
				return err == nil
			}
			for {
				j := int(next.Add(1)) - 1
				if j >= regModels || ctx.Err() != nil {
					return
				}
				id, name := uuid.NewString(), modelName(j)
				subj := events.Subject(events.AggModel, id)
				tags := map[string]string{"team": fmt.Sprintf("team-%d", j%regTeams)}
				if j%100 == 7 {
					tags["rare"] = "yes"
				}
				if !appendOne(events.ReservationSubject(events.AggModelName, registry.ModelNameKey(projectID, name)), events.NameReserved, 0,
					events.NameReservedData{Kind: "model", Name: name, OwnerID: id, Scope: projectID}) {
					return
				}
				if !appendOne(subj, events.ModelCreated, 0, events.ModelCreatedData{ModelID: id, ProjectID: projectID, Name: name,
					Description: "a benchmark model", Tags: tags}) {
					return
				}
				for v := 1; v <= perModel; v++ {
					if !appendOne(subj, events.ModelVersionRegistered, events.Any, events.ModelVersionRegisteredData{ModelID: id, Version: v,
						Description: "bench", Tags: map[string]string{}, Source: fmt.Sprintf("s3://bench/%s/%d", name, v),
						Metrics: map[string]float64{"auc": 0.5 + float64(v)/100}}) {
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}
