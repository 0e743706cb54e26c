package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/projections"
)

// `maestro projections status` names quarantined events: per projection the
// count and the latest one's sequence, type, SQLSTATE and error; nothing
// extra when there are none.
func TestStatusPrintsQuarantine(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	st := []projections.Status{
		{Name: "audit", LastSeq: 9, UpdatedAt: at},
		{Name: "models", LastSeq: 9, UpdatedAt: at, Quarantined: 2, LastQuarantined: &projections.QuarantinedEvent{
			Seq: 8, EventID: "e8", Type: "maestro.model.version.registered.v1", SQLState: "22003", Error: "value overflows numeric format"}},
	}
	var out bytes.Buffer
	writeStatuses(&out, projections.Heads{Events: 9}, st)
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "models" && len(f) > 4 {
			line = l
		}
	}
	for _, want := range []string{" 2 ", " 8 ", "maestro.model.version.registered.v1", "22003", "value overflows numeric format"} {
		if !strings.Contains(line, want) {
			t.Fatalf("quarantine line %q lacks %q; output:\n%s", line, want, out.String())
		}
	}

	out.Reset()
	st[1].Quarantined, st[1].LastQuarantined = 0, nil
	writeStatuses(&out, projections.Heads{Events: 9}, st)
	if strings.Contains(out.String(), "QUARANTINED") {
		t.Fatalf("a quarantine section without quarantined events:\n%s", out.String())
	}
}
