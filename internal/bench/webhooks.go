package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/webhooks"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/projections"
)

// Sizes of the webhooks scenario (issue 11): events appended at a paced
// rate to the stream of a whole platform (API and worker, fsync on), each
// delivered to one loopback receiver by one global subscription.
const (
	webhookRate     = 1000 // events per second offered
	webhookWriters  = 32   // concurrent appenders sharing the pace
	webhookDrain    = 2 * time.Minute
	webhookSubjects = 64 // project subjects the events are spread over
)

// webhookReceiver counts deliveries and the lag of each event's first
// one: its arrival minus the event's time (its append, the server's clock;
// one machine here).
type webhookReceiver struct {
	mu    sync.Mutex
	seen  map[string]bool
	lag   Samples
	dups  int
	last  time.Time
	count atomic.Int64
}

func (rc *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var ce struct {
		ID   string    `json:"id"`
		Time time.Time `json:"time"`
	}
	if err != nil || json.Unmarshal(body, &ce) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	if rc.seen[ce.ID] {
		rc.dups++
	} else {
		rc.seen[ce.ID] = true
		rc.lag.Add(at.Sub(ce.Time))
		rc.last = at
		rc.count.Add(1)
	}
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// benchWebhooks offers webhookRate events/s for the configured number of
// events and measures, at the receiver, the delivery rate and the lag
// from each event's append to its arrival: with fsync on (the default,
// rule 9) and off (the stream's appends then keep up with the pace on
// these machines, so the delivery side is what is measured).
func (r *runner) benchWebhooks(ctx context.Context) error {
	for _, sync := range []bool{true, false} {
		if err := r.benchWebhooksOnce(ctx, sync); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) benchWebhooksOnce(ctx context.Context, syncAlways bool) error {
	memstat.ResetPeakRSS()
	fsync := map[bool]string{true: "on", false: "off"}[syncAlways]
	p, err := r.env.startPlatform(ctx, syncAlways, true, true, func(c *platform.Config) {
		c.Webhooks = platform.WebhooksConfig{AllowPrivateTargets: true}
	})
	if err != nil {
		return err
	}
	defer stopPlatform(p)
	rc := &webhookReceiver{seen: map[string]bool{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	admin, err := p.CreateAdmin(ctx, "bench-webhooks@example.com", "bench-webhooks-password-1", "Bench")
	if err != nil {
		return err
	}
	who := authz.Principal{UserID: admin.ID, Role: authz.RoleAdmin}
	_, _, seq, err := p.Webhooks.Create(ctx, events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: admin.ID}}, who, "",
		webhooks.Settings{URL: srv.URL, Events: []string{events.ProjectUpdated}})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ok := p.Waiter.Wait(wctx, seq, projections.Webhooks{}.Name())
	cancel()
	if !ok {
		return fmt.Errorf("the webhooks projection did not reach %d", seq)
	}

	n := r.cfg.WebhookEvents
	subjects := make([]string, webhookSubjects)
	for i := range subjects {
		subjects[i] = uuid.NewString()
	}
	desc := "bench"
	var next atomic.Int64
	var appendErr atomic.Value
	slots := make(chan struct{}, webhookRate)
	var wg sync.WaitGroup
	began := time.Now()
	var appendLat Samples
	var latMu sync.Mutex
	for range webhookWriters {
		wg.Go(func() {
			for range slots {
				i := int(next.Add(1)) - 1
				pid := subjects[i%len(subjects)]
				e, err := events.New(events.Meta{Actor: events.SystemActor}, events.Subject(events.AggProject, pid), events.ProjectUpdated, 0,
					events.ProjectUpdatedData{ProjectID: pid, Description: &desc})
				if err != nil {
					appendErr.Store(err)
					continue
				}
				t := time.Now()
				if _, err := p.Store.Append(ctx, events.Append{Event: e, Expect: events.Any}); err != nil {
					appendErr.Store(err)
					continue
				}
				latMu.Lock()
				appendLat.Add(time.Since(t))
				latMu.Unlock()
			}
		})
	}
	// The pace is a schedule (event i at began + i/rate), not a ticker,
	// which would drop ticks on a busy machine and offer less.
	behind := 0
	for i := range n {
		if d := time.Until(began.Add(time.Duration(i) * time.Second / webhookRate)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				close(slots)
				return ctx.Err()
			}
		}
		select {
		case slots <- struct{}{}:
		default:
			behind++ // the writers are not keeping up: wait for them
			slots <- struct{}{}
		}
	}
	close(slots)
	wg.Wait()
	offered := time.Since(began)
	if err, _ := appendErr.Load().(error); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	deadline := time.Now().Add(webhookDrain)
	for rc.count.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	rc.mu.Lock()
	got, last, dups := int(rc.count.Load()), rc.last, rc.dups
	lag := rc.lag
	rc.mu.Unlock()
	span := last.Sub(began)
	rss := memstat.PeakRSS()
	r.add(Row{Name: fmt.Sprintf("webhooks: append at %d/s (%d writers)", webhookRate, webhookWriters), Fsync: fsync, N: n, Total: offered,
		Lat: &appendLat, Rate: float64(n) / offered.Seconds(), Unit: "events/s", Allocs: -1, Bytes: -1, PeakRSS: rss,
		Note: fmt.Sprintf("pace slots missed %d", behind)})
	r.add(Row{Name: "webhooks: append → receiver (1 global subscription)", Fsync: fsync, N: got, Total: span, Lat: &lag,
		Rate: float64(got) / span.Seconds(), Unit: "deliveries/s", Allocs: -1, Bytes: -1, PeakRSS: rss,
		Note: fmt.Sprintf("%d of %d delivered, %d duplicates; rate = first append → last arrival", got, n, dups)})
	if got < n {
		return fmt.Errorf("only %d of %d events reached the receiver within %s of the last append", got, n, webhookDrain)
	}
	return nil
}
