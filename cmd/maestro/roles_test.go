package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// `maestro api` without S3 fails before connecting to anything: a
// filesystem store per API instance serves artifacts inconsistently.
func TestAPIRoleRequiresSharedArtifacts(t *testing.T) {
	c := &Common{NATSURL: "nats://nats.invalid:4222", DatabaseURL: "postgres://db.invalid/maestro"}
	err := (&apiCmd{}).Run(context.Background(), c)
	if !errors.Is(err, ErrNoSharedArtifacts) || !strings.Contains(err.Error(), "MAESTRO_S3_ENDPOINT") {
		t.Fatalf("api without S3: %v", err)
	}
}

func TestNATSReplicasSetting(t *testing.T) {
	parse := func(t *testing.T, args ...string) (*cli, error) {
		t.Helper()
		var c cli
		p, err := kong.New(&c, kong.Name("maestro"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse(args); err != nil {
			return nil, err
		}
		return &c, c.Common.validate()
	}
	t.Setenv("MAESTRO_NATS_REPLICAS", "3")
	t.Setenv("MAESTRO_NATS_URL", "nats://a:4222,nats://b:4222,nats://c:4222")
	c, err := parse(t, "worker")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := c.config(); cfg.NATSReplicas != 3 {
		t.Fatalf("MAESTRO_NATS_REPLICAS=3 gave %d", cfg.NATSReplicas)
	}
	if c, err = parse(t, "--nats-replicas", "5", "worker"); err != nil || c.config().NATSReplicas != 5 {
		t.Fatalf("flag: %v", err)
	}
	for _, bad := range []string{"6", "-1"} {
		if _, err := parse(t, "--nats-replicas="+bad, "worker"); err == nil || !strings.Contains(err.Error(), "MAESTRO_NATS_REPLICAS") {
			t.Errorf("replicas %s: %v, want an error naming MAESTRO_NATS_REPLICAS", bad, err)
		}
	}
	t.Setenv("MAESTRO_NATS_URL", "")
	if _, err := parse(t, "serve"); err == nil || !strings.Contains(err.Error(), "embedded server is one node") {
		t.Fatalf("R3 on the embedded server: %v", err)
	}
}
