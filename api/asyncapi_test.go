package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events/contract"
	"github.com/maestro-ml/maestro/internal/contracttest"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// The served AsyncAPI document is the generated one, and valid AsyncAPI 3.0.0.
func TestAsyncAPIServed(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	r := e.Do("GET", "/api/v1/asyncapi.json", "", nil)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/v1/asyncapi.json: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	want, err := contract.Document()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Body, want) {
		t.Fatal("the served AsyncAPI document differs from the generated one")
	}
	if err := contracttest.ValidateDocument(r.Body); err != nil {
		t.Fatalf("the served document is not valid AsyncAPI 3.0.0: %v", err)
	}
}

// contractEnv is a platform whose embedded NATS listens on loopback, and
// the served AsyncAPI document as a validator.
func contractEnv(t *testing.T) (*testenv.Env, *contracttest.Validator) {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.NATSListen = "127.0.0.1:0"
	cfg.NATSPublicUser = "outside" // its password is generated into the data dir
	e := testenv.Start(t, cfg)
	r := e.Do("GET", "/api/v1/asyncapi.json", "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /api/v1/asyncapi.json: %d", r.Status)
	}
	v, err := contracttest.New(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return e, v
}

// exerciseAPI performs real commands through the HTTP API: the registry,
// token and tracking walks of the OpenAPI coverage test (users, projects,
// members, models, versions, stages, aliases, artifacts, API tokens,
// experiments, runs, params, tags, inputs).
func exerciseAPI(t *testing.T, e *testenv.Env) {
	t.Helper()
	admin := e.Admin("contract-admin@example.com")
	walkRegistry(t, e, admin.AccessToken)
	walkTokens(t, e, admin.AccessToken)
	walkTracking(t, e, admin.AccessToken)
}

// readStream reads stream from the start up to its last sequence at call
// time through a consumer of its own, and checks every message against the
// document the way an outside system would: headers and json.Unmarshal,
// nothing of Maestro's. It returns how many messages of each ce-type it saw.
//
// With want > 0 it first waits (polling, with a deadline) until the stream
// holds want messages (a copy stream catching up), and reads those.
func readStream(t *testing.T, js jetstream.JetStream, stream, filter string, want uint64, v *contracttest.Validator, check func(typ string, data map[string]any)) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for info.State.Msgs < want {
		if ctx.Err() != nil {
			t.Fatalf("%s holds %d messages, want %d", stream, info.State.Msgs, want)
		}
		time.Sleep(50 * time.Millisecond) // polling a copy that catches up
		if info, err = s.Info(ctx); err != nil {
			t.Fatal(err)
		}
	}
	last := info.State.LastSeq
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		t.Fatalf("create a consumer on %s: %v", stream, err)
	}
	seen := map[string]int{}
	var seq uint64
	for seq < last {
		if ctx.Err() != nil {
			t.Fatalf("read %s up to %d: stopped at %d: %v", stream, last, seq, ctx.Err())
		}
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			seq = md.Sequence.Stream
			h := map[string]string{}
			for k, vs := range m.Headers() {
				h[k] = vs[0]
			}
			typ := h["ce-type"]
			if err := v.Message(typ, h, m.Data()); err != nil {
				t.Errorf("%s seq %d on %s: %v", stream, seq, m.Subject(), err)
			}
			var data map[string]any
			if err := json.Unmarshal(m.Data(), &data); err != nil {
				t.Errorf("%s seq %d: the data is not a JSON object: %v", stream, seq, err)
			}
			if check != nil {
				check(typ, data)
			}
			seen[typ]++
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if err := batch.Error(); err != nil && !strings.Contains(err.Error(), "timeout") {
			t.Fatal(err)
		}
	}
	return seen
}

// internalPassword is the embedded NATS's full-access password, as
// `maestro serve` keeps it in the data dir.
func internalPassword(t *testing.T, e *testenv.Env) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.Config.DataDir, "nats.password"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A plain NATS client (nats.go, its own consumer, no Maestro code) decodes
// every event real commands produced by the documented contract: the
// headers the document lists are there and the data satisfies the schema
// of its ce-type.
func TestEventsFollowTheAsyncAPIContract(t *testing.T) {
	t.Parallel()
	e, v := contractEnv(t)
	exerciseAPI(t, e)
	nc, err := nats.Connect(e.P.NATSClientURL(), nats.UserInfo("maestro", internalPassword(t, e)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	hashes := 0
	seen := readStream(t, js, "MAESTRO_EVENTS", "maestro.events.>", 0, v, func(typ string, data map[string]any) {
		if _, ok := data["password_hash"]; ok {
			hashes++ // the internal stream is the full record
		}
	})
	assertSeen(t, seen)
	if hashes == 0 {
		t.Error("no password hash in MAESTRO_EVENTS: the internal stream should hold the full data")
	}

	// The outside user, with the password the platform generated for it,
	// reads the same events, redacted, from MAESTRO_PUBLIC.
	pw, err := os.ReadFile(filepath.Join(e.Config.DataDir, "nats-public.password"))
	if err != nil {
		t.Fatal(err)
	}
	violations := make(chan error, 8)
	onc, err := nats.Connect(e.P.NATSClientURL(), nats.UserInfo("outside", strings.TrimSpace(string(pw))),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case violations <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer onc.Close()
	ojs, err := jetstream.New(onc)
	if err != nil {
		t.Fatal(err)
	}
	total := uint64(0)
	for _, n := range seen {
		total += uint64(n)
	}
	public := readStream(t, ojs, "MAESTRO_PUBLIC", "maestro.public.>", total, v, func(typ string, data map[string]any) {
		for _, secret := range []string{"password_hash", "hash"} {
			if _, ok := data[secret]; ok {
				t.Errorf("the outside user read %s's %s", typ, secret)
			}
		}
	})
	if !maps.Equal(public, seen) {
		t.Errorf("MAESTRO_PUBLIC has %v, MAESTRO_EVENTS %v: want a copy of every event", public, seen)
	}
	// Refused: the request is dropped with a permissions violation.
	denied, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := ojs.Stream(denied, "MAESTRO_EVENTS"); err == nil {
		t.Error("the outside user reads MAESTRO_EVENTS")
	}
	select {
	case err := <-violations:
		if !strings.Contains(err.Error(), "MAESTRO_EVENTS") {
			t.Errorf("unexpected error for the outside user: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no permissions violation for reading MAESTRO_EVENTS")
	}
}

// assertSeen fails unless the events of the main aggregates were read.
func assertSeen(t *testing.T, seen map[string]int) {
	t.Helper()
	var types []string
	total := 0
	for typ, n := range seen {
		types = append(types, typ)
		total += n
	}
	slices.Sort(types)
	t.Logf("%d events of %d types: %v", total, len(types), types)
	for _, want := range []string{
		"maestro.user.registered.v1", "maestro.email.reserved.v1", "maestro.session.started.v1",
		"maestro.project.created.v1", "maestro.project.member_set.v1",
		"maestro.model.created.v1", "maestro.model.version.registered.v1", "maestro.model.version.stage_transitioned.v1",
		"maestro.model.alias.set.v1", "maestro.token.created.v1",
		"maestro.experiment.created.v1", "maestro.run.created.v1", "maestro.run.params_logged.v1",
	} {
		if seen[want] == 0 {
			t.Errorf("no %s event was read", want)
		}
	}
}
