package projections

import (
	"encoding/json"
	"testing"

	"github.com/maestro-ml/maestro/events"
)

// The audit trail keeps most events' data as it is rather than decoding it
// into a map and encoding it again: what PostgreSQL stores (jsonb) must be
// what the re-encoding stored, secrets must still go, and data that is not
// a JSON object in valid UTF-8 must still take the redacting path.
func TestAuditDataEqualsRedacted(t *testing.T) {
	ctx := testCtx(t)
	pool := newDB(t)
	for _, c := range []struct {
		typ, data string
		raw       bool // kept as it is
	}{
		{events.SessionStarted, `{"session_id":"s","user_id":"u","client_ip":"10.0.0.1"}`, true},
		{events.SessionStarted, " \n{ \"b\" : [1, 2.5, {\"c\": null}], \"a\": \"<&>é \\\" \\n\" }", true},
		// Numbers Go's float64 writes otherwise.
		{events.SessionStarted, `{"b":[1, 2.50]}`, false},
		{events.SessionStarted, `{"a":12345678901234567}`, false},
		{events.SessionStarted, `{"a":-0.0}`, false},
		{events.SessionStarted, `{"a":0.0000001}`, false},
		{events.SessionStarted, `{"a":0.000001,"b":-0,"c":9007199254740993.5}`, false},
		{events.SessionStarted, `{"a":0.000001,"b":123456789012345680000}`, true},
		{events.SessionStarted, `{"a":1,"a":2}`, true},
		{events.UserRegistered, `{"user_id":"u","email":"e@example.com","password_hash":"$argon2id$secret"}`, false},
		{events.SessionStarted, `[1,2]`, false},
		{events.SessionStarted, ` null`, false},
		{events.SessionStarted, "{\"a\":\"\xff\"}", false},
		{events.SessionStarted, `{"a":`, false},
		{events.SessionStarted, `{"a":true,"b":false,"c":-1.25}`, true},
		// What jsonb refuses as sent, or reads otherwise than Go did.
		{events.SessionStarted, `{"a":"\ud800"}`, false},
		{events.SessionStarted, `{"a":1e200000}`, false},
		{events.SessionStarted, `{"a":1E3}`, false},
		{events.SessionStarted, `{"a":12345678901234567890123456789012345}`, false},
		{events.SessionStarted, `{"a":"\u00e9"}`, false},
	} {
		e := events.Envelope{Type: c.typ, Data: json.RawMessage(c.data)}
		got, err := auditData(e)
		if err != nil {
			t.Fatalf("%q: %v", c.data, err)
		}
		want, err := json.Marshal(events.Redacted(e))
		if err != nil {
			t.Fatal(err)
		}
		if raw := got == c.data; raw != c.raw {
			t.Fatalf("%q kept as it is: %v, want %v", c.data, raw, c.raw)
		}
		var same bool
		// The trail must store it, as the redacting path would, to the
		// text jsonb keeps (the redacting path may store null).
		if err := pool.QueryRow(ctx, "SELECT $1::jsonb::text = $2::jsonb::text", got, string(want)).Scan(&same); err != nil {
			t.Fatalf("%q: %v", c.data, err)
		}
		if !same {
			t.Fatalf("%q: stored %s, the redacting path %s", c.data, got, want)
		}
	}
}
