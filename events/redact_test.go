package events_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/events"
)

// A webhook URL is where deliveries go and often the credential too
// (incoming-webhook URLs of chat tools): readers other than its owners see
// only its origin.
func TestURLOrigin(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.slack.com/services/T000/B000/XXXXSECRET": "https://hooks.slack.com/…",
		"https://user:pass@example.com:8443/":                   "https://example.com:8443",
		"https://example.com":                                   "https://example.com",
		"https://example.com/?token=abc":                        "https://example.com/…",
		"http://10.0.0.1:9000/hook#frag":                        "http://10.0.0.1:9000/…",
		"http://[::1]:8080/x":                                   "http://[::1]:8080/…",
		"not a url":                                             "(redacted)",
		"mailto:someone@example.com":                            "(redacted)",
		"%zz":                                                   "(redacted)",
	} {
		if got := events.URLOrigin(raw); got != want {
			t.Errorf("URLOrigin(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestRedactedWebhookEvents(t *testing.T) {
	const url = "https://hooks.example.com/services/T0/B0/s3cr3t?sig=abc"
	for _, c := range []struct {
		typ  string
		data any
	}{
		{events.WebhookCreated, events.WebhookCreatedData{WebhookID: "w", URL: url, Events: []string{"maestro.model.*"}, SecretSealed: "sealed", CreatedBy: "u"}},
		{events.WebhookUpdated, events.WebhookUpdatedData{WebhookID: "w", URL: url, Events: []string{"maestro.model.*"}, Enabled: true}},
	} {
		data, err := json.Marshal(c.data)
		if err != nil {
			t.Fatal(err)
		}
		if !events.NeedsRedaction(c.typ) {
			t.Fatalf("%s: NeedsRedaction false", c.typ)
		}
		m := events.Redacted(events.Envelope{Type: c.typ, Data: data})
		out, _ := json.Marshal(m)
		if m["url"] != "https://hooks.example.com/…" || strings.Contains(string(out), "s3cr3t") || strings.Contains(string(out), "sealed") {
			t.Errorf("%s redacted = %s", c.typ, out)
		}
		if m["webhook_id"] != "w" {
			t.Errorf("%s redacted lost the other fields: %s", c.typ, out)
		}
	}
	if events.NeedsRedaction(events.ModelCreated) {
		t.Error("a model's creation needs no redaction")
	}
}
