package projections

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Handles must say exactly which event types change a read model: the
// runner advances the checkpoint over the others without applying them,
// and commands wait only for projections that handle their events.
func TestHandlesMatchesWhatQueueWrites(t *testing.T) {
	for _, p := range All() {
		for _, ty := range events.Types() {
			e := events.Envelope{Sequence: 1, ID: "e1", Type: ty, Subject: "maestro.events.x.y", Time: time.Now(),
				Data: []byte(`{"model_id":"m","project_id":"p","user_id":"u","session_id":"s"}`)}
			b := &Batch{}
			if err := p.Queue(b, []events.Envelope{e}); err != nil {
				t.Fatalf("%s.Queue(%s): %v", p.Name(), ty, err)
			}
			if wrote := b.Len() > 0; wrote != p.Handles(ty) {
				t.Errorf("%s: Handles(%s) = %v, but Queue wrote %d statements", p.Name(), ty, p.Handles(ty), b.Len())
			}
		}
	}
}

// A runner reads only its projection's aggregates: every aggregate that
// carries a type the projection handles must be among them, or the
// projection would never see those events.
func TestAggregatesCoverHandledTypes(t *testing.T) {
	for _, p := range All() {
		read := p.Aggregates()
		if len(read) == 0 {
			continue // every subject
		}
		for _, ty := range events.Types() {
			if !p.Handles(ty) {
				continue
			}
			for _, agg := range events.AggregatesOf(ty) {
				if !slices.Contains(read, agg) {
					t.Errorf("%s handles %s, appended on %s subjects, but reads only %v", p.Name(), ty, agg, read)
				}
			}
		}
	}
}

// A batch's checkpoint notification carries the cache tags of its rows, as
// many as PostgreSQL's payload limit allows; the rest go on
// InvalidateChannel before it (one statement, a notification each), so
// none is lost and none arrives late. Sent to a real PostgreSQL and
// received by a listener, as the Waiter receives them.
func TestAnnounceCarriesTheTags(t *testing.T) {
	ctx := testCtx(t)
	pool := newDB(t)
	listen, err := pgx.Connect(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(context.WithoutCancel(ctx))
	if _, err := listen.Exec(ctx, "LISTEN "+NotifyChannel+"; LISTEN "+InvalidateChannel); err != nil {
		t.Fatal(err)
	}
	r := &Runner{p: Models{}}
	var tags []string
	for i := range 300 {
		tags = append(tags, fmt.Sprintf("model:%036d", i))
	}
	b := &pgx.Batch{}
	r.queueAnnounce(b, 42, tags)
	if len(b.QueuedQueries) != 2 {
		t.Fatalf("%d statements, want the overflow's and the checkpoint's", len(b.QueuedQueries))
	}
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		n, err := listen.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("after %d tags: %v", len(got), err)
		}
		if n.Channel == InvalidateChannel {
			got = append(got, n.Payload)
			continue
		}
		if len(n.Payload) > maxNotify || !strings.HasPrefix(n.Payload, "models:42 model:") {
			t.Fatalf("checkpoint payload of %d bytes: %.40s…", len(n.Payload), n.Payload)
		}
		if len(got) == 0 {
			t.Fatal("300 tags fit in one notification: the test no longer overflows")
		}
		got = append(got, strings.Fields(n.Payload)[1:]...)
		break
	}
	slices.Sort(got)
	if !slices.Equal(got, tags) {
		t.Fatalf("announced %d tags, want the %d of the batch", len(got), len(tags))
	}
}
