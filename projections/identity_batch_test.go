package projections

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/maestro-ml/maestro/events"
)

// Users and Sessions gather runs of events into statements from arrays
// (registrations; logins and refreshes, reordered where that commutes).
// Applied as one batch, a random history — several refreshes of a session,
// a refresh that names a session before its login, revocations and
// deactivations in between — must leave exactly the tables that applying
// it event by event leaves (the isolate path, and smaller batches).
func TestIdentityBatchesEqualEventByEvent(t *testing.T) {
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(7, 11))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []events.Envelope
	add := func(typ string, data any) {
		raw, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(len(evs) + 1)
		evs = append(evs, events.Envelope{ID: uuid.NewString(), Type: typ, Time: base.Add(time.Duration(seq) * time.Second), Data: raw, Sequence: seq})
	}
	var users []string
	var sessions []events.SessionStartedData
	for range 400 {
		switch k := rng.IntN(10); {
		case k < 2 || len(users) == 0:
			id := uuid.NewString()
			users = append(users, id)
			add(events.UserRegistered, events.UserRegisteredData{UserID: id, Email: id + "@example.com", Name: "U", Role: "member"})
		case k < 4:
			u := users[rng.IntN(len(users))]
			s := events.SessionStartedData{SessionID: uuid.NewString(), UserID: u, ClientIP: "10.0.0.1"}
			if rng.IntN(4) == 0 {
				// A refresh that names the session before its login.
				add(events.SessionRefreshed, events.SessionRefreshedData{SessionID: s.SessionID, UserID: u, Generation: 9})
			}
			sessions = append(sessions, s)
			add(events.SessionStarted, s)
		case k < 8 && len(sessions) > 0:
			s := sessions[rng.IntN(len(sessions))]
			add(events.SessionRefreshed, events.SessionRefreshedData{SessionID: s.SessionID, UserID: s.UserID, Generation: rng.IntN(50) + 2})
		case k == 8 && len(sessions) > 0:
			s := sessions[rng.IntN(len(sessions))]
			add(events.SessionRevoked, events.SessionRevokedData{SessionID: s.SessionID, UserID: s.UserID, Reason: "logout"})
		default:
			u := users[rng.IntN(len(users))]
			typ := events.UserDeactivated
			if rng.IntN(2) == 0 {
				typ = events.UserReactivated
			}
			add(typ, events.UserActivationData{UserID: u})
		}
	}
	apply := func(pool *pgxpool.Pool, p Projection, size int) {
		for lo := 0; lo < len(evs); lo += size {
			b := &Batch{}
			if err := p.Queue(b, evs[lo:min(len(evs), lo+size)]); err != nil {
				t.Fatal(err)
			}
			if err := pool.SendBatch(ctx, &b.Batch).Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	whole, single := newDB(t), newDB(t)
	for _, p := range []Projection{Users{}, Sessions{}} {
		apply(whole, p, len(evs))
		apply(single, p, 1)
	}
	for _, table := range []string{"users", "sessions"} {
		got, want := dumpOrdered(t, whole, table, "id"), dumpOrdered(t, single, table, "id")
		if len(want) < 50 {
			t.Fatalf("%s: only %d rows: the history is too thin to compare", table, len(want))
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d rows in one batch, %d event by event", table, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s row %d:\n one batch      %s\n event by event %s", table, i, got[i], want[i])
			}
		}
	}
}

// Only the last refresh of a session in a batch reaches the database, so
// a refresh the column cannot hold must fail the batch wherever it sits
// (and be quarantined alone on the isolate path): otherwise a rebuild,
// batched differently, would quarantine what the live runner stored.
func TestSessionsRefusesAnOutOfRangeGenerationInAnyPosition(t *testing.T) {
	sid, uid := uuid.NewString(), uuid.NewString()
	mk := func(typ string, data any) events.Envelope {
		raw, err := json.Marshal(data)
		if err != nil {
			t.Fatal(err)
		}
		return events.Envelope{ID: uuid.NewString(), Type: typ, Time: time.Now(), Data: raw}
	}
	started := mk(events.SessionStarted, events.SessionStartedData{SessionID: sid, UserID: uid})
	bad := mk(events.SessionRefreshed, events.SessionRefreshedData{SessionID: sid, Generation: 1 << 40})
	good := mk(events.SessionRefreshed, events.SessionRefreshedData{SessionID: sid, Generation: 3})
	for name, evs := range map[string][]events.Envelope{
		"followed by a good refresh": {started, bad, good},
		"last":                       {started, good, bad},
		"alone":                      {bad},
	} {
		err := Sessions{}.Queue(&Batch{}, evs)
		if !Undeliverable(err) {
			t.Errorf("%s: Queue = %v, want an undeliverable error", name, err)
		}
	}
	if err := (Sessions{}).Queue(&Batch{}, []events.Envelope{started, good}); err != nil {
		t.Fatalf("a valid history: %v", err)
	}
}
