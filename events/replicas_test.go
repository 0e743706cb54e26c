package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestDecideReplicas(t *testing.T) {
	tests := []struct {
		name                 string
		existing, configured int
		want                 int
		err                  bool
	}{
		{"new stream, embedded", 0, 1, 1, false},
		{"new stream, cluster", 0, 3, 3, false},
		{"same", 1, 1, 1, false},
		{"same R3", 3, 3, 3, false},
		{"operator raised it: never lowered", 3, 1, 3, false},
		{"R5 kept against R3", 5, 3, 5, false},
		{"existing R1 with R3 configured: refused", 1, 3, 0, true},
		{"existing R3 with R5 configured: refused", 3, 5, 0, true},
		{"nonsense configuration", 0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decideReplicas(StreamName, tt.existing, tt.configured)
			if tt.err {
				if !errors.Is(err, ErrReplicas) {
					t.Fatalf("err = %v, want ErrReplicas", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("decideReplicas(%d, %d) = %d, %v; want %d", tt.existing, tt.configured, got, err, tt.want)
			}
		})
	}
}

func embeddedConn(t *testing.T, dir string) *nats.Conn {
	t.Helper()
	emb, err := StartEmbedded(EmbeddedConfig{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("replicas-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// On one embedded node: R1 opens (again and again); R3 is refused with a
// clear error, whether the stream exists (R1, fewer than configured) or not
// (the server cannot place three copies); and a refused start leaves the
// existing stream as it was.
func TestOpenStoreReplicasOnOneNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	fresh := embeddedConn(t, t.TempDir())
	_, err := OpenStore(ctx, fresh, StoreConfig{Replicas: 3})
	if !errors.Is(err, ErrReplicas) || !strings.Contains(err.Error(), "cannot place 3 replica(s)") {
		t.Fatalf("R3 on a single server: %v, want a clear ErrReplicas", err)
	}

	nc := embeddedConn(t, t.TempDir())
	for range 2 {
		if _, err := OpenStore(ctx, nc, StoreConfig{Replicas: 1}); err != nil {
			t.Fatalf("R1 on the embedded node: %v", err)
		}
	}
	_, err = OpenStore(ctx, nc, StoreConfig{Replicas: 3})
	if !errors.Is(err, ErrReplicas) || !strings.Contains(err.Error(), "has 1 replica(s) but MAESTRO_NATS_REPLICAS is 3") {
		t.Fatalf("existing R1 stream opened with R3: %v, want ErrReplicas", err)
	}
	r, err := StreamReplicas(ctx, mustJS(t, nc), StreamName, 1)
	if err != nil || r != 1 {
		t.Fatalf("stream after the refused start: %d replicas, %v", r, err)
	}
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
