package bench

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// fakeHash has the shape and length of a real argon2id PHC string, so
// envelopes are the size registrations really are.
const fakeHash = "$argon2id$v=19$m=65536,t=3,p=2$c29tZXNhbHRzb21lc2FsdA$" +
	"Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8"

var benchMeta = events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: "0b9f4c1e-6f4b-4e37-9a55-2f7c1f1d2c3b"}}

// registered is a maestro.user.registered.v1 envelope for a new user on a
// fresh subject, with a unique e-mail (about 300 B of JSON data).
func registered(run string, n int) (events.Envelope, string) {
	id := uuid.NewString()
	email := fmt.Sprintf("bench-%s-%d@example.com", run, n)
	env, err := events.New(meta(), events.Subject(events.AggUser, id), events.UserRegistered, 0,
		events.UserRegisteredData{UserID: id, Email: email, Name: fmt.Sprintf("Benchmark User %d", n),
			Role: "viewer", PasswordHash: fakeHash, Source: "self-registration"})
	if err != nil {
		panic(err) // static data always encodes
	}
	return env, email
}

func meta() events.Meta {
	m := benchMeta
	m.Time = time.Now()
	m.CorrelationID = uuid.NewString()
	return m
}

// registerBatch is what Identity.Register appends: the e-mail reservation
// and the user, atomically, each on a subject that must be empty.
func registerBatch(run string, n int) []events.Append {
	user, email := registered(run, n)
	res, err := events.New(meta(), events.ReservationSubject(events.AggEmail, email), events.EmailReserved, 1,
		events.EmailReservedData{Email: email, UserID: userID(user)})
	if err != nil {
		panic(err)
	}
	return []events.Append{{Event: res, Expect: 0}, {Event: user, Expect: 0}}
}

func userID(e events.Envelope) string {
	_, id := events.AggregateOf(e.Subject)
	return id
}

// sessionEvents are a login (session started) and one token refresh.
func sessionEvents(user string) (started, refreshed events.Envelope) {
	sid := uuid.NewString()
	subj := events.Subject(events.AggSession, sid)
	var err error
	started, err = events.New(meta(), subj, events.SessionStarted, 0,
		events.SessionStartedData{SessionID: sid, UserID: user, ClientIP: "10.1.2.3", UserAgent: "maestro-bench/1.0"})
	if err != nil {
		panic(err)
	}
	refreshed, err = events.New(meta(), subj, events.SessionRefreshed, 0,
		events.SessionRefreshedData{SessionID: sid, UserID: user, Generation: 2})
	if err != nil {
		panic(err)
	}
	return started, refreshed
}

// wireSize is the size of the NATS message (headers + data) of an envelope.
func wireSize(e events.Envelope) (data, headers int) {
	m := events.ToMsg(e)
	for k, vs := range m.Header {
		for _, v := range vs {
			headers += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	return len(m.Data), headers
}
