package api

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/internal/testnats"
)

// idempotencyBucketForTest opens the real bucket on an embedded JetStream.
func idempotencyBucketForTest(t *testing.T) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := OpenIdempotency(ctx, testnats.Store(t).JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// A retry that takes over a dead attempt's key and then dies (or fails
// with a 5xx) itself must hand the next retry the FIRST attempt's start:
// only events stored since prior (minus a skew) are looked for, so with the
// second attempt's start the first attempt's events are missed, the command
// is decided again, and once JetStream's 2-minute duplicate window has
// passed it is stored a second time (a crash loop registering a version
// twice). On 38df241+6f70fe2 the prior was the latest attempt's start.
func TestPriorAttemptSurvivesRepeatedTakeovers(t *testing.T) {
	t.Parallel()
	kv := idempotencyBucketForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const key, fp = "k", "fingerprint"
	// Each server is one boot of a sole instance: a pending record of
	// another boot was left by a crash and is taken over at once.
	boot := func() *Server { return New(Deps{Idempotency: kv, SoleInstance: true}) }

	first := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	if _, prior, claimed, err := boot().claimKey(ctx, key, fp, first); err != nil || !claimed || !prior.IsZero() {
		t.Fatalf("first claim: prior %v claimed %v err %v", prior, claimed, err)
	}
	// The first boot dies; the second takes over and dies too.
	second := first.Add(5 * time.Minute)
	if _, prior, claimed, err := boot().claimKey(ctx, key, fp, second); err != nil || !claimed || !prior.Equal(first) {
		t.Fatalf("second claim: prior %v claimed %v err %v, want prior %v", prior, claimed, err, first)
	}
	// The third must still look from the first attempt on.
	third := second.Add(5 * time.Minute)
	s3 := boot()
	_, prior, claimed, err := s3.claimKey(ctx, key, fp, third)
	if err != nil || !claimed {
		t.Fatalf("third claim: claimed %v err %v", claimed, err)
	}
	if !prior.Equal(first) {
		t.Fatalf("third attempt looks for stored events since %v, want the first attempt's start %v", prior, first)
	}

	// The third fails with a 5xx: the failed record keeps the first start.
	s3.storeOutcome(key, fp, third, prior, false, false, &bufferedResponse{header: http.Header{}, status: http.StatusServiceUnavailable})
	if _, prior, claimed, err := s3.claimKey(ctx, key, fp, third.Add(time.Minute)); err != nil || !claimed || !prior.Equal(first) {
		t.Fatalf("claim after a 5xx: prior %v claimed %v err %v, want prior %v", prior, claimed, err, first)
	}
}
