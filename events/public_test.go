package events_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// publicNode is an embedded server with the public account, the event
// store and a running republisher.
type publicNode struct {
	emb   *events.Embedded
	store *events.Store
	stop  func()
}

const (
	internalPass = "internal-secret-0123456789"
	outsideUser  = "outside"
	outsidePass  = "outside-secret-0123456789"
)

func startNode(t *testing.T, dir string, public bool) *publicNode {
	t.Helper()
	return startNodeN(t, dir, public, 1)
}

// startNodeN is startNode with republishers republishers (several workers).
func startNodeN(t *testing.T, dir string, public bool, republishers int) *publicNode {
	t.Helper()
	cfg := events.EmbeddedConfig{StoreDir: dir, Listen: "127.0.0.1:0", User: "maestro", Password: internalPass}
	if public {
		cfg.PublicUser, cfg.PublicPassword = outsideUser, outsidePass
	}
	emb, err := events.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	store, err := events.OpenStore(ctx, nc, events.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	n := &publicNode{emb: emb, store: store}
	var wg sync.WaitGroup
	cancel := func() {}
	var pc *nats.Conn
	if public {
		if pc, err = emb.ConnectPublic("republisher"); err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(pc)
		if err != nil {
			t.Fatal(err)
		}
		s, err := events.OpenPublicStream(ctx, js, 1)
		if err != nil {
			t.Fatal(err)
		}
		var rctx context.Context
		rctx, cancel = context.WithCancel(context.Background())
		for range republishers {
			wg.Go(func() { events.NewRepublisher(store, js, s, nil).Run(rctx) })
		}
	}
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			if pc != nil {
				pc.Close()
			}
			nc.Close()
			emb.Shutdown()
		})
	}
	t.Cleanup(n.stop)
	return n
}

// appendAll appends one event of each kind the test looks at: with and
// without secret fields, and one outside the catalogue.
func appendAll(t *testing.T, s *events.Store, n int) {
	t.Helper()
	for range n {
		uid := uuid.NewString()
		user := events.Subject(events.AggUser, uid)
		for _, e := range []events.Envelope{
			event(t, user, events.UserRegistered, events.UserRegisteredData{UserID: uid, Email: uid + "@example.com", Name: "N", Role: "member", PasswordHash: "$argon2id$secret", Source: "self-registration"}),
			event(t, events.Subject(events.AggToken, uid), events.TokenCreated, events.TokenCreatedData{TokenID: uid, UserID: uid, Name: "ci", Prefix: "mae_x", Hash: "deadbeef"}),
			event(t, events.Subject(events.AggProject, uid), events.ProjectCreated, events.ProjectCreatedData{ProjectID: uid, Slug: "p" + uid[:8], Name: "P", OwnerID: uid}),
			// A legacy security signal in MAESTRO_EVENTS: not catalogued, never copied.
			event(t, events.SubjectPrefix+"security.logins", events.LoginRejected, events.LoginRejectedData{Email: "nobody@example.com", Reason: "unknown"}),
		} {
			if _, err := s.Append(testCtx(t), events.Append{Event: e, Expect: events.Any}); err != nil {
				t.Fatal(err)
			}
		}
		// An atomic batch (what most commands append): its copies are
		// plain messages.
		model := events.Subject(events.AggModel, uid)
		if _, err := s.Append(testCtx(t),
			events.Append{Event: event(t, model, events.ModelCreated, events.ModelCreatedData{ModelID: uid, ProjectID: uid, Name: "m"}), Expect: events.Any},
			events.Append{Event: event(t, model, events.ModelAliasSet, events.ModelAliasSetData{ModelID: uid, Alias: "champion", Version: 1}), Expect: events.Any},
		); err != nil {
			t.Fatal(err)
		}
	}
}

// outside is a plain nats.go client of the outside user over TCP.
type outside struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connectOutside(t *testing.T, n *publicNode, user, pass string) *outside {
	t.Helper()
	o := &outside{errs: make(chan error, 64)}
	var err error
	o.nc, err = nats.Connect(n.emb.ClientURL(), nats.UserInfo(user, pass),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case o.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(o.nc.Close)
	if o.js, err = jetstream.New(o.nc); err != nil {
		t.Fatal(err)
	}
	return o
}

// readPublic reads MAESTRO_PUBLIC through a consumer of the outside user's
// own until it has want copies (polling with a deadline), and returns them.
func (o *outside) readPublic(t *testing.T, want int) []jetstream.Msg {
	t.Helper()
	ctx := testCtx(t)
	cons, err := o.js.CreateConsumer(ctx, events.PublicStreamName, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatalf("the outside user creates a consumer on %s: %v", events.PublicStreamName, err)
	}
	var got []jetstream.Msg
	for len(got) < want {
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d copies before the deadline", len(got), want)
		}
		batch, err := cons.Fetch(want-len(got), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
	}
	// Nothing beyond: no copy twice, nothing uncatalogued.
	if extra, err := cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond)); err == nil {
		for m := range extra.Messages() {
			t.Errorf("an extra copy: %s %s", m.Subject(), m.Headers().Get("ce-type"))
		}
	}
	return got
}

// expectViolation waits (with a deadline) for the server's permissions
// violation about what.
func (o *outside) expectViolation(t *testing.T, what string) {
	t.Helper()
	if err := o.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-o.errs:
			if strings.Contains(err.Error(), "Permissions Violation") && strings.Contains(err.Error(), what) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %s", what)
		}
	}
}

// The outside user reads redacted copies of every catalogued event, in
// order, through consumers of its own, and can do nothing else: publish
// anywhere, read MAESTRO_EVENTS or subscribe to it, change or delete
// streams. The copy survives restarts without gaps or doubles, also when
// the public account is added to an existing data dir.
func TestPublicUserReadsRedactedEventsOnly(t *testing.T) {
	dir := t.TempDir()
	// An existing installation without the public account.
	n := startNode(t, dir, false)
	appendAll(t, n.store, 2)
	before, err := n.store.LastSequence(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	n.stop()

	n = startNode(t, dir, true)
	if last, err := n.store.LastSequence(testCtx(t)); err != nil || last != before {
		t.Fatalf("MAESTRO_EVENTS after enabling the public account: last %d, %v; want %d (the history must stay)", last, err, before)
	}
	appendAll(t, n.store, 1)
	o := connectOutside(t, n, outsideUser, outsidePass)
	copies := o.readPublic(t, 3*5)
	checkCopies(t, copies)

	// A restart resumes after the last copy.
	n.stop()
	n = startNode(t, dir, true)
	appendAll(t, n.store, 1)
	o = connectOutside(t, n, outsideUser, outsidePass)
	checkCopies(t, o.readPublic(t, 4*5))

	// A refused JetStream request is never answered (the server drops it
	// with a permissions violation): those calls get a short deadline.
	denied := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	ctx := testCtx(t)
	// No publishing: not the copies, not the events, not anything.
	for _, subj := range []string{events.PublicSubjectPrefix + "user.x", events.SubjectPrefix + "user.x", "anything"} {
		if err := o.nc.Publish(subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		o.expectViolation(t, `Publish to "`+subj+`"`)
	}
	// No reading or subscribing MAESTRO_EVENTS.
	if _, err := o.nc.SubscribeSync(events.AllSubjects); err != nil {
		t.Fatal(err)
	}
	o.expectViolation(t, `Subscription to "`+events.AllSubjects+`"`)
	if _, err := o.js.Stream(denied(), events.StreamName); err == nil {
		t.Error("the outside user reads MAESTRO_EVENTS' info")
	}
	o.expectViolation(t, `Publish to "$JS.API.STREAM.INFO.MAESTRO_EVENTS`)
	if _, err := o.js.CreateConsumer(denied(), events.StreamName, jetstream.ConsumerConfig{}); err == nil {
		t.Error("the outside user created a consumer on MAESTRO_EVENTS")
	}
	o.expectViolation(t, `Publish to "$JS.API.CONSUMER.CREATE.MAESTRO_EVENTS`)
	// No changing or deleting streams or their messages.
	pub, err := o.js.Stream(ctx, events.PublicStreamName)
	if err != nil {
		t.Fatalf("the outside user reads %s's info: %v", events.PublicStreamName, err)
	}
	if err := o.js.DeleteStream(denied(), events.PublicStreamName); err == nil {
		t.Error("the outside user deleted MAESTRO_PUBLIC")
	}
	o.expectViolation(t, `Publish to "$JS.API.STREAM.DELETE.MAESTRO_PUBLIC`)
	if err := pub.Purge(denied()); err == nil {
		t.Error("the outside user purged MAESTRO_PUBLIC")
	}
	o.expectViolation(t, `Publish to "$JS.API.STREAM.PURGE.MAESTRO_PUBLIC`)
	if err := pub.DeleteMsg(denied(), 1); err == nil {
		t.Error("the outside user deleted a copy")
	}
	o.expectViolation(t, `Publish to "$JS.API.STREAM.MSG.DELETE.MAESTRO_PUBLIC`)
	if _, err := o.js.UpdateStream(denied(), jetstream.StreamConfig{Name: events.PublicStreamName, Subjects: []string{">"}}); err == nil {
		t.Error("the outside user changed MAESTRO_PUBLIC")
	}
	o.expectViolation(t, `Publish to "$JS.API.STREAM.UPDATE.MAESTRO_PUBLIC`)
	if _, err := o.js.CreateStream(denied(), jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine.>"}}); err == nil {
		t.Error("the outside user created a stream")
	}
	o.expectViolation(t, `Publish to "$JS.API.STREAM.CREATE.MINE`)
	// Still every copy, after all that.
	checkCopies(t, o.readPublic(t, 4*5))

	// Its own durable consumer, and an ordered one (what most clients use).
	dur, err := o.js.CreateOrUpdateConsumer(ctx, events.PublicStreamName, jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("the outside user creates a durable consumer: %v", err)
	}
	if _, err := dur.Info(ctx); err != nil {
		t.Fatalf("durable consumer info: %v", err)
	}
	ord, err := o.js.OrderedConsumer(ctx, events.PublicStreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("the outside user creates an ordered consumer: %v", err)
	}
	if m, err := ord.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || m.Headers().Get("ce-type") == "" {
		t.Fatalf("ordered consumer: %v", err)
	}
	if err := o.js.DeleteConsumer(ctx, events.PublicStreamName, "billing"); err != nil {
		t.Fatalf("the outside user deletes its consumer: %v", err)
	}

	// A wrong password is refused.
	if nc, err := nats.Connect(n.emb.ClientURL(), nats.UserInfo(outsideUser, "wrong")); err == nil {
		nc.Close()
		t.Error("the outside user connected with a wrong password")
	}
}

// Several workers each run a republisher: they race on every copy, and
// the copy stream still has each event once, in order.
func TestRacingRepublishersCopyOnce(t *testing.T) {
	n := startNodeN(t, t.TempDir(), true, 3)
	appendAll(t, n.store, 4)
	o := connectOutside(t, n, outsideUser, outsidePass)
	checkCopies(t, o.readPublic(t, 4*5))
	appendAll(t, n.store, 2)
	checkCopies(t, o.readPublic(t, 6*5))
}

// A push consumer the outside user aims at an event subject (allowed: a
// deliver subject is not checked against the user's permissions) delivers
// within the public account only, and the history is untouched.
func TestPushConsumerCannotReachTheHistory(t *testing.T) {
	n := startNode(t, t.TempDir(), true)
	appendAll(t, n.store, 1)
	o := connectOutside(t, n, outsideUser, outsidePass)
	o.readPublic(t, 5)
	before, err := n.store.LastSequence(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// A witness in the public account sees the deliveries.
	pc, err := n.emb.ConnectPublic("witness")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	target := events.Subject(events.AggUser, uuid.NewString())
	witness, err := pc.SubscribeSync(target)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.Flush(); err != nil {
		t.Fatal(err)
	}
	legacy, err := o.nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := legacy.AddConsumer(events.PublicStreamName, &nats.ConsumerConfig{
		DeliverSubject: target, AckPolicy: nats.AckNonePolicy, DeliverPolicy: nats.DeliverAllPolicy}); err != nil {
		t.Fatalf("the outside user creates a push consumer: %v", err)
	}
	for range 5 {
		if _, err := witness.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("the push consumer delivered nothing to %s: %v", target, err)
		}
	}
	// Each delivery reached every subscriber of the subject in its account
	// when the witness got it: had it reached MAESTRO_EVENTS, it would be
	// stored by now.
	after, err := n.store.LastSequence(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("MAESTRO_EVENTS went from %d to %d after the outside user's push consumer delivered to %s", before, after, target)
	}
}

// checkCopies: in source order, on maestro.public.<aggregate>.<id>, with
// the CloudEvents headers, and without secret fields.
func checkCopies(t *testing.T, copies []jetstream.Msg) {
	t.Helper()
	var prev uint64
	for _, m := range copies {
		h := m.Headers()
		typ := h.Get("ce-type")
		if typ == events.LoginRejected {
			t.Errorf("an uncatalogued event was copied: %s", typ)
		}
		if !strings.HasPrefix(m.Subject(), events.PublicSubjectPrefix) || h.Get("ce-subject") == "" ||
			m.Subject() != events.PublicSubjectPrefix+strings.TrimPrefix(h.Get("ce-subject"), events.SubjectPrefix) {
			t.Errorf("copy on %s of an event on %s", m.Subject(), h.Get("ce-subject"))
		}
		for _, name := range []string{"ce-id", "ce-type", "ce-time", "ce-specversion", "ce-source", "ce-actorkind", "ce-correlationid", events.HdrSourceSequence} {
			if h.Get(name) == "" {
				t.Errorf("copy of %s without %s", typ, name)
			}
		}
		// Source order, each event once: the source sequences rise.
		src, err := strconv.ParseUint(h.Get(events.HdrSourceSequence), 10, 64)
		if err != nil || src <= prev {
			t.Errorf("copy of source %q after source %d: out of order or doubled", h.Get(events.HdrSourceSequence), prev)
		}
		prev = src
		var data map[string]any
		if err := json.Unmarshal(m.Data(), &data); err != nil {
			t.Fatalf("copy of %s: %v", typ, err)
		}
		for _, f := range events.SecretFields(typ) {
			if _, ok := data[f]; ok {
				t.Errorf("copy of %s carries the secret field %s", typ, f)
			}
		}
		if strings.Contains(string(m.Data()), "$argon2id$") || strings.Contains(string(m.Data()), "deadbeef") {
			t.Errorf("copy of %s carries a secret: %s", typ, m.Data())
		}
		if typ == events.UserRegistered && data["email"] == nil {
			t.Errorf("copy of %s lost a documented field: %s", typ, m.Data())
		}
	}
}

// BenchmarkRepublish measures how fast the republisher copies a backlog
// of events (one in four with a secret field to redact) into MAESTRO_PUBLIC.
func BenchmarkRepublish(b *testing.B) {
	emb, err := events.StartEmbedded(events.EmbeddedConfig{StoreDir: b.TempDir(), User: "maestro", Password: internalPass,
		PublicUser: outsideUser, PublicPassword: outsidePass})
	if err != nil {
		b.Fatal(err)
	}
	defer emb.Shutdown()
	nc, err := emb.Connect("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	store, err := events.OpenStore(ctx, nc, events.StoreConfig{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		uid := uuid.NewString()
		var e events.Envelope
		if i%4 == 0 {
			e, err = events.New(events.Meta{Actor: testActor}, events.Subject(events.AggUser, uid), events.UserRegistered, 0,
				events.UserRegisteredData{UserID: uid, Email: uid + "@example.com", Name: "N", Role: "member", PasswordHash: "$argon2id$x", Source: "admin-cli"})
		} else {
			e, err = events.New(events.Meta{Actor: testActor}, events.Subject(events.AggModel, uid), events.ModelAliasSet, 0,
				events.ModelAliasSetData{ModelID: uid, Alias: "champion", Version: 3})
		}
		if err != nil {
			b.Fatal(err)
		}
		if _, err := store.Append(ctx, events.Append{Event: e, Expect: events.Any}); err != nil {
			b.Fatal(err)
		}
	}
	pc, err := emb.ConnectPublic("bench-republisher")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	js, err := jetstream.New(pc)
	if err != nil {
		b.Fatal(err)
	}
	s, err := events.OpenPublicStream(ctx, js, 1)
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	b.ResetTimer()
	wg.Go(func() { events.NewRepublisher(store, js, s, nil).Run(rctx) })
	for {
		info, err := s.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs >= uint64(b.N) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the copy's progress
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	cancel()
	wg.Wait()
}
