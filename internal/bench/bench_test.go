package bench

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// The codec runs on every append (ToMsg) and every event a projection or a
// Load reads (FromHeaders); EvolveUser runs for every event of a user on
// every command that loads one.

func BenchmarkToMsg(b *testing.B) {
	e, _ := registered("bench", 1)
	b.ReportAllocs()
	for b.Loop() {
		_ = events.ToMsg(e)
	}
}

func BenchmarkFromHeaders(b *testing.B) {
	e, _ := registered("bench", 1)
	m := events.ToMsg(e)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.FromHeaders(m.Subject, m.Header, m.Data, 42); err != nil {
			b.Fatal(err)
		}
	}
}

// userHistory is a registration followed by 99 events a long-lived account
// accumulates: failed logins, resets, role changes, (de)activations.
func userHistory(b *testing.B) []events.Envelope {
	reg, _ := registered("bench", 1)
	reg.Sequence = 1
	id := userID(reg)
	out := []events.Envelope{reg}
	roles := []string{"viewer", "member", "admin"}
	for i := 1; len(out) < 100; i++ {
		var typ string
		var data any
		switch i % 5 {
		case 0, 1:
			typ, data = events.UserLoginFailed, events.UserLoginFailedData{UserID: id, ClientIP: "10.1.2.3", Reason: "wrong_password"}
		case 2:
			typ, data = events.UserLoginFailuresReset, events.UserLoginFailuresResetData{UserID: id}
		case 3:
			typ, data = events.UserRoleChanged, events.UserRoleChangedData{UserID: id, From: roles[i%3], To: roles[(i+1)%3]}
		case 4:
			typ, data = events.UserDeactivated, events.UserActivationData{UserID: id}
			if i%2 == 0 {
				typ = events.UserReactivated
			}
		}
		e, err := events.New(meta(), reg.Subject, typ, 0, data)
		if err != nil {
			b.Fatal(err)
		}
		e.Sequence = uint64(len(out) + 1)
		out = append(out, e)
	}
	return out
}

func BenchmarkEvolveUser100(b *testing.B) {
	evs := userHistory(b)
	b.ReportAllocs()
	for b.Loop() {
		var s identity.UserState
		var err error
		for _, e := range evs {
			if s, err = identity.EvolveUser(s, e); err != nil {
				b.Fatal(err)
			}
		}
		if !s.Registered {
			b.Fatal("not registered")
		}
	}
}

func TestQuantile(t *testing.T) {
	var s Samples
	for i := 1; i <= 100; i++ {
		s.Add(timeMs(i))
	}
	if s.Quantile(.5) != timeMs(50) || s.Quantile(.99) != timeMs(99) || s.Quantile(1) != timeMs(100) {
		t.Fatalf("quantiles: %v %v %v", s.Quantile(.5), s.Quantile(.99), s.Quantile(1))
	}
}

func timeMs(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// BenchmarkModelCommand2000 is what every command on a model with 2,000
// versions pays on the write side once the cached state is current: clone
// the state and fold the command's own event into the clone.
func BenchmarkModelCommand2000(b *testing.B) {
	st := registry.ModelState{}
	meta := events.Meta{Actor: events.SystemActor, Time: time.Unix(1_700_000_000, 0)}
	subject := events.Subject(events.AggModel, "m")
	fold := func(typ string, data any) {
		e, err := events.New(meta, subject, typ, 0, data)
		if err != nil {
			b.Fatal(err)
		}
		if st, err = registry.EvolveModel(st, e); err != nil {
			b.Fatal(err)
		}
	}
	fold(events.ModelCreated, events.ModelCreatedData{ModelID: "m", Name: "m", Tags: map[string]string{}})
	for v := 1; v <= 2000; v++ {
		fold(events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: "m", Version: v, Source: "s3://x"})
	}
	transition, err := events.New(meta, subject, events.ModelVersionTransition,
		0, events.ModelVersionTransitionData{ModelID: "m", Version: 1000, From: "none", To: "staging"})
	if err != nil {
		b.Fatal(err)
	}
	register, err := events.New(meta, subject, events.ModelVersionRegistered,
		0, events.ModelVersionRegisteredData{ModelID: "m", Version: 2001, Source: "s3://x"})
	if err != nil {
		b.Fatal(err)
	}
	// A transition changes an old version: the clone copies the versions
	// array. A registration appends, and a model's commands form a chain
	// (each folds into a clone of the previous one's state), which shares
	// the array. (The one register event is folded again and again: evolve
	// does not check version numbers, decide does.)
	b.Run("transition", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := registry.EvolveModel(registry.CloneModel(st), transition); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("register", func(b *testing.B) {
		b.ReportAllocs()
		cur := st
		for b.Loop() {
			if cur, err = registry.EvolveModel(registry.CloneModel(cur), register); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifyAccessToken is the authenticator's signature check: the
// first sight of a token (Ed25519) and a repeat (remembered by its hash).
func BenchmarkVerifyAccessToken(b *testing.B) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	key, err := auth.NewSigningKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := auth.NewKeySet(key)
	if err != nil {
		b.Fatal(err)
	}
	newTokens := func() *auth.Tokens {
		t, err := auth.NewTokens(keys, auth.TokenConfig{Issuer: "maestro", Audience: "maestro-api", AccessTTL: 15 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	issuer := newTokens()
	toks := make([]string, 1024)
	for i := range toks {
		if toks[i], _, err = issuer.Issue(auth.TokenAccess, "u", "s", 0, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, repeat := range []bool{false, true} {
		name := map[bool]string{false: "first", true: "repeat"}[repeat]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			verifier := newTokens()
			i := 0
			for b.Loop() {
				if i%len(toks) == 0 && !repeat {
					verifier = newTokens() // forget what it verified
				}
				if _, err := verifier.Verify(toks[i%len(toks)], auth.TokenAccess); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkAPITokenCheck is the CPU part of authenticating an API token on
// every request: the shape check, the SHA-256 the row is looked up by, and
// the constant-time comparison with the row's hash (the lookup itself is a
// read-cache hit, or one indexed query).
func BenchmarkAPITokenCheck(b *testing.B) {
	tok := auth.NewAPIToken()
	b.ReportAllocs()
	for b.Loop() {
		if !auth.LooksLikeAPIToken(tok.Secret) || !auth.SameHash(auth.HashAPIToken(tok.Secret), tok.Hash) {
			b.Fatal("token refused")
		}
	}
}

// BenchmarkMetricBatch10000 is the CPU of one 10,000-point logging request
// outside HTTP: deciding it (key checks, grouping), encoding the event and
// decoding it again as the metrics projection does.
func BenchmarkMetricBatch10000(b *testing.B) {
	run := tracking.RunState{Created: true, ID: "11111111-1111-4111-8111-111111111111", Params: map[string]string{}, Tags: map[string]string{}}
	points := make([]tracking.Metric, 10_000)
	for i := range points {
		points[i] = tracking.Metric{Key: fmt.Sprint("train/m", i%10), Value: events.MetricValue(float64(i) * 0.001), Step: int64(i), Timestamp: 1_700_000_000_000 + int64(i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		changes, err := tracking.DecideLogMetrics(run, points)
		if err != nil {
			b.Fatal(err)
		}
		batch, err := handlers.Build(events.Meta{Actor: events.SystemActor, Time: time.Unix(0, 0)}, nil, changes...)
		if err != nil {
			b.Fatal(err)
		}
		d, err := events.DecodeMetricsLogged(batch[0].Event.Data)
		if err != nil || len(d.Metrics) != 10 {
			b.Fatalf("decoded %d series, %v", len(d.Metrics), err)
		}
	}
}
