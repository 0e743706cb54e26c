package events

import (
	"context"
	"slices"
	"testing"
	"time"
)

// A replicated stream has no direct gets (OpenStore turns them off): Scan
// reads through the leader there, and must return the same events as with
// direct gets. A retried command's replay (LoadAt) depends on it; with the
// batched direct get alone it answered 503 for ever on a NATS cluster.
func TestScanWithoutDirectGets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := embeddedConn(t, t.TempDir())
	s, err := OpenStore(ctx, nc, StoreConfig{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	a, b := Subject(AggModel, "scan-a"), Subject(AggModel, "scan-b")
	for i := range 12 {
		subj := a
		if i%3 == 2 {
			subj = b
		}
		e, err := New(Meta{Actor: Actor{Kind: ActorSystem, ID: "test"}}, subj, ModelCreated, i, map[string]int{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, Append{Event: e, Expect: Any}); err != nil {
			t.Fatal(err)
		}
	}
	scan := func(after uint64, most int) []uint64 {
		t.Helper()
		var seqs []uint64
		err := s.Scan(ctx, a, after, func(e Envelope) (bool, error) {
			if e.Subject != a {
				t.Errorf("scan of %s returned an event on %s", a, e.Subject)
			}
			seqs = append(seqs, e.Sequence)
			return len(seqs) < most, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	direct := scan(0, 100)
	if len(direct) != 8 {
		t.Fatalf("direct gets found %d events on %s, want 8: %v", len(direct), a, direct)
	}

	cfg := s.stream.CachedInfo().Config
	cfg.AllowDirect = false
	if s.stream, err = s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := scan(0, 100); !slices.Equal(got, direct) {
		t.Fatalf("through the leader: %v, with direct gets: %v", got, direct)
	}
	if got := scan(direct[2], 100); !slices.Equal(got, direct[3:]) {
		t.Fatalf("through the leader after %d: %v, want %v", direct[2], got, direct[3:])
	}
	if got := scan(0, 2); !slices.Equal(got, direct[:2]) {
		t.Fatalf("a scan stopped after two events returned %v", got)
	}
}
