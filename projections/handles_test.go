package projections

import (
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
// InvalidateChannel before it, so none is lost and none arrives late.
func TestAnnounceCarriesTheTags(t *testing.T) {
	r := &Runner{p: Models{}}
	var tags []string
	for i := range 300 {
		tags = append(tags, fmt.Sprintf("model:%036d", i))
	}
	b := &pgx.Batch{}
	r.queueAnnounce(b, 42, tags)
	q := b.QueuedQueries
	last := q[len(q)-1]
	if last.Arguments[0] != NotifyChannel {
		t.Fatalf("the last notification is on %v, want the checkpoint's", last.Arguments[0])
	}
	payload := last.Arguments[1].(string)
	if len(payload) > maxNotify || !strings.HasPrefix(payload, "models:42 model:") {
		t.Fatalf("checkpoint payload of %d bytes: %.40s…", len(payload), payload)
	}
	got := strings.Fields(payload)[1:]
	for _, qq := range q[:len(q)-1] {
		if qq.Arguments[0] != InvalidateChannel {
			t.Fatalf("notification on %v before the checkpoint's", qq.Arguments[0])
		}
		got = append(got, qq.Arguments[1].(string))
	}
	slices.Sort(got)
	if !slices.Equal(got, tags) {
		t.Fatalf("announced %d tags, want the %d of the batch", len(got), len(tags))
	}
	if len(q) == 1 {
		t.Fatal("300 tags fit in one notification: the test no longer overflows")
	}
}
