package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// RunnerBucket is the KV bucket where every runner announces itself: one
// key per runner, rewritten every announceEvery, gone announceTTL after
// the runner was last heard of (a crashed runner too), deleted when it
// stops. The admin dashboard lists runners and their slots from it.
const RunnerBucket = "MAESTRO_RUNNERS"

const (
	announceEvery = 5 * time.Second
	announceTTL   = 30 * time.Second
)

// Announcement is what a runner writes to its key in RunnerBucket.
type Announcement struct {
	ID        string    `json:"id"`
	Executor  string    `json:"executor"`
	Slots     int       `json:"slots"`
	Busy      int       `json:"busy"`
	StartedAt time.Time `json:"started_at"`
	// At is when the runner wrote this announcement.
	At time.Time `json:"at"`
}

// OpenRunners opens (creating it if need be) the bucket runners announce
// themselves in.
func OpenRunners(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: RunnerBucket,
		Description: "Maestro runners, announced every few seconds", History: 1, TTL: announceTTL,
		Storage: jetstream.MemoryStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, events.ExplainReplicasError("KV_"+RunnerBucket, replicas, fmt.Errorf("runner bucket: %w", err))
	}
	return kv, nil
}

// Runners lists the runners announced now, by id. No bucket yet (no runner
// ever started) is no runner.
func Runners(ctx context.Context, js jetstream.JetStream) ([]Announcement, error) {
	kv, err := js.KeyValue(ctx, RunnerBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runner bucket: %w", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	var out []Announcement
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // gone since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read runner %s: %w", key, err)
		}
		var a Announcement
		if json.Unmarshal(e.Value(), &a) == nil {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Announcement) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// announce keeps the runner's key in RunnerBucket until the runner stops,
// then deletes it.
func (r *Runner) announce(kv jetstream.KeyValue) {
	started := r.cfg.Now().UTC()
	put := func() {
		ctx, cancel := context.WithTimeout(r.ctx, announceEvery)
		defer cancel()
		v, _ := json.Marshal(Announcement{ID: r.cfg.ID, Executor: r.cfg.Executor.Name(), Slots: r.cfg.Slots,
			Busy: len(r.slots), StartedAt: started, At: r.cfg.Now().UTC()})
		if _, err := kv.Put(ctx, r.cfg.ID, v); err != nil && r.ctx.Err() == nil {
			r.log.Warn("announce the runner", "err", err)
		}
	}
	put()
	t := time.NewTicker(announceEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			put()
		case <-r.ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = kv.Delete(ctx, r.cfg.ID)
			return
		}
	}
}
