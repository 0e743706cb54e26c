package main

import (
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

// MAESTRO_WEBHOOK_* reach the platform's configuration; private targets
// are refused unless the variable says otherwise.
func TestWebhookSettings(t *testing.T) {
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
	c, err := parse(t, "serve")
	if err != nil {
		t.Fatal(err)
	}
	if w := c.config().Webhooks; w.AllowPrivateTargets || w.Timeout != 10*time.Second || w.BackoffBase != 5*time.Second || w.RetryFor != 25*time.Hour {
		t.Fatalf("defaults: %+v", w)
	}
	t.Setenv("MAESTRO_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
	t.Setenv("MAESTRO_WEBHOOK_BACKOFF_BASE", "250ms")
	if c, err = parse(t, "serve"); err != nil || !c.config().Webhooks.AllowPrivateTargets || c.config().Webhooks.BackoffBase != 250*time.Millisecond {
		t.Fatalf("from the environment: %+v, %v", c.config().Webhooks, err)
	}
	if _, err := parse(t, "--webhook-timeout=10m", "serve"); err == nil || !strings.Contains(err.Error(), "MAESTRO_WEBHOOK_TIMEOUT") {
		t.Fatalf("a 10m timeout: %v", err)
	}
}
