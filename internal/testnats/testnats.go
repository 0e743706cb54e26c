// Package testnats gives tests an event store on an embedded nats-server
// whose file store lives in the test's temp dir, stopped when the test ends.
package testnats

import (
	"context"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
)

// Store starts an embedded nats-server (JetStream, file store in
// t.TempDir()) and opens the event store on it.
func Store(t testing.TB) *events.Store {
	t.Helper()
	emb, err := events.StartEmbedded(events.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := events.OpenStore(ctx, nc, events.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
