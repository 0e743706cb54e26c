package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// The Standard Webhooks specification's test vector (as its reference
// libraries test it): Sign must produce exactly this signature.
func TestSignMatchesTheStandardWebhooksVector(t *testing.T) {
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = int64(1614265330)
		want   = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	body := []byte(`{"test": 2432232314}`)
	got, err := Sign(secret, id, ts, body)
	if err != nil || got != want {
		t.Fatalf("Sign = %q, %v; want %q", got, err, want)
	}
	now := time.Unix(ts, 0).Add(time.Minute)
	if err := Verify(secret, id, "1614265330", "v1,bogus "+want, body, now, 5*time.Minute); err != nil {
		t.Fatalf("Verify with the right signature among others: %v", err)
	}
	for name, c := range map[string]struct {
		id, ts string
		body   []byte
		now    time.Time
	}{
		"tampered body":   {id, "1614265330", []byte(`{"test": 2432232315}`), now},
		"other id":        {"msg_other", "1614265330", body, now},
		"other timestamp": {id, "1614265331", body, now},
		"too old":         {id, "1614265330", body, now.Add(time.Hour)},
		"from the future": {id, "1614265330", body, now.Add(-time.Hour)},
		"bad timestamp":   {id, "soon", body, now},
	} {
		if err := Verify(secret, c.id, c.ts, want, c.body, c.now, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: Verify = %v, want ErrBadSignature", name, err)
		}
	}
	if err := Verify(NewSecret(), id, "1614265330", want, body, now, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another secret verifies: %v", err)
	}
}

func TestNewSecretShape(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	if a == b || !strings.HasPrefix(a, SecretPrefix) {
		t.Fatalf("secrets %q %q", a, b)
	}
	k, err := secretKey(a)
	if err != nil || len(k) != secretBytes {
		t.Fatalf("key of %q: %d bytes, %v", a, len(k), err)
	}
	if _, err := Sign("not-a-secret", "x", 1, nil); err == nil {
		t.Fatal("Sign took a secret without whsec_")
	}
}

func TestSealerOpensOnlyItsOwn(t *testing.T) {
	seed := make([]byte, 32)
	s, err := NewSealer(seed, "kid-1")
	if err != nil {
		t.Fatal(err)
	}
	secret := NewSecret()
	sealed := s.Seal("w1", secret)
	if strings.Contains(sealed, strings.TrimPrefix(secret, SecretPrefix)) {
		t.Fatal("the sealed form contains the secret")
	}
	if got, err := s.Open("w1", sealed); err != nil || got != secret {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if s.Seal("w1", secret) == sealed {
		t.Fatal("sealing twice gave the same ciphertext (nonce reuse)")
	}
	if _, err := s.Open("w2", sealed); err == nil {
		t.Fatal("a secret sealed for w1 opened for w2")
	}
	other, _ := NewSealer(append([]byte{1}, seed[1:]...), "kid-1")
	if _, err := other.Open("w1", sealed); err == nil {
		t.Fatal("another key opened the secret")
	}
	if _, err := s.Open("w1", strings.Replace(sealed, "kid-1", "kid-2", 1)); err == nil {
		t.Fatal("a secret of another key id opened")
	}
	for _, bad := range []string{"", "v1.kid-1", "v2.kid-1.AAAA", "v1.kid-1.!!!", "v1.kid-1.AAAA"} {
		if _, err := s.Open("w1", bad); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
}

func TestForbiddenAddresses(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.5.4", "192.168.0.1", "169.254.169.254",
		"169.254.1.1", "fe80::1", "fd00::1", "fd00:ec2::254", "fc00::1", "0.0.0.0", "::", "100.64.0.1", "224.0.0.1", "ff02::1",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "255.255.255.255", "240.0.0.1", "192.0.2.1", "2002:7f00:1::",
		// IPv4-compatible (deprecated) and IPv4-translated (SIIT) forms of
		// internal addresses: routed to IPv4 by some stacks and tunnels.
		"::7f00:1", "::a00:1", "::ffff:0:7f00:1", "::ffff:0:a9fe:a9fe"} {
		if !Forbidden(netip.MustParseAddr(a)) {
			t.Errorf("%s is not forbidden", a)
		}
	}
	for _, a := range []string{"93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"} {
		if Forbidden(netip.MustParseAddr(a)) {
			t.Errorf("%s is forbidden", a)
		}
	}
}

// staticResolver answers one address for every name.
type staticResolver netip.Addr

func (r staticResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.Addr(r)}, nil
}

func TestCheckTarget(t *testing.T) {
	ctx := context.Background()
	pub := TargetPolicy{Resolver: staticResolver(netip.MustParseAddr("93.184.216.34"))}
	loop := TargetPolicy{Resolver: staticResolver(netip.MustParseAddr("127.0.0.1"))}
	check := func(p TargetPolicy, raw string) error {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return p.CheckTarget(ctx, u)
	}
	if err := check(pub, "https://hooks.example.com/x"); err != nil {
		t.Fatalf("public name: %v", err)
	}
	for _, c := range []struct {
		p   TargetPolicy
		raw string
	}{{loop, "https://hooks.example.com/x"}, {pub, "http://127.0.0.1:8080/"}, {pub, "http://[::1]/"}, {pub, "http://169.254.169.254/"}} {
		err := check(c.p, c.raw)
		if e, ok := handlers.AsError(err); !ok || e.Code != "webhook-target-forbidden" {
			t.Errorf("%s: %v, want webhook-target-forbidden", c.raw, err)
		}
	}
	if err := check(TargetPolicy{AllowPrivate: true, Resolver: loop.Resolver}, "http://localhost/"); err != nil {
		t.Fatalf("allowed private target: %v", err)
	}
}

// The dial itself refuses a forbidden address, whatever resolved to it.
func TestDialRefusesForbiddenAddresses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	rebound := TargetPolicy{Resolver: staticResolver(netip.MustParseAddr("127.0.0.1"))}
	for _, addr := range []string{"hooks.example.com:" + port, "127.0.0.1:" + port} {
		if _, err := rebound.DialContext(time.Second)(context.Background(), "tcp", addr); !errors.Is(err, errForbiddenTarget) {
			t.Errorf("dial %s: %v, want the forbidden-target refusal", addr, err)
		}
	}
	allowed := TargetPolicy{AllowPrivate: true, Resolver: rebound.Resolver}
	c, err := allowed.DialContext(time.Second)(context.Background(), "tcp", "hooks.example.com:"+port)
	if err != nil {
		t.Fatalf("allowed dial: %v", err)
	}
	c.Close()
}

func TestCheckSettings(t *testing.T) {
	good := Settings{URL: "https://hooks.example.com/maestro?x=1", Events: []string{"maestro.model.*", "maestro.job.ended.v1", "maestro.model.*"}}
	if err := CheckSettings(&good); err != nil {
		t.Fatal(err)
	}
	if len(good.Events) != 2 {
		t.Fatalf("patterns not deduplicated: %v", good.Events)
	}
	long := "https://x.example.com/" + strings.Repeat("a", MaxURLLen)
	many := make([]string, MaxPatterns+1)
	for i := range many {
		many[i] = "*"
	}
	for name, s := range map[string]Settings{
		"no url":           {Events: []string{"*"}},
		"ftp":              {URL: "ftp://x.example.com/", Events: []string{"*"}},
		"relative":         {URL: "/hook", Events: []string{"*"}},
		"credentials":      {URL: "https://u:p@x.example.com/", Events: []string{"*"}},
		"fragment":         {URL: "https://x.example.com/#f", Events: []string{"*"}},
		"long url":         {URL: long, Events: []string{"*"}},
		"bad port":         {URL: "https://x.example.com:99999/", Events: []string{"*"}},
		"no events":        {URL: "https://x.example.com/"},
		"too many":         {URL: "https://x.example.com/", Events: many},
		"unknown type":     {URL: "https://x.example.com/", Events: []string{"maestro.model.exploded.v1"}},
		"unknown prefix":   {URL: "https://x.example.com/", Events: []string{"maestro.nothing.*"}},
		"inner wildcard":   {URL: "https://x.example.com/", Events: []string{"maestro.*.created.v1"}},
		"two wildcards":    {URL: "https://x.example.com/", Events: []string{"maestro.*.*"}},
		"long pattern":     {URL: "https://x.example.com/", Events: []string{strings.Repeat("m", MaxPatternLen+1)}},
		"long description": {URL: "https://x.example.com/", Events: []string{"*"}, Description: strings.Repeat("d", MaxDescriptionLen+1)},
		"control chars":    {URL: "https://x.example.com/", Events: []string{"*"}, Description: "a\x00b"},
	} {
		if err := CheckSettings(&s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, typ string
		want   bool
	}{
		{"*", events.ModelCreated, true},
		{"maestro.model.*", events.ModelVersionRegistered, true},
		{"maestro.model.*", events.JobEnded, false},
		{"maestro.model.version.*", events.ModelCreated, false},
		{events.JobEnded, events.JobEnded, true},
		{events.JobEnded, events.JobSubmitted, false},
	} {
		if got := Match(c.p, c.typ); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.p, c.typ, got)
		}
	}
	exact, prefixes := Split([]string{"*", "maestro.model.*", events.JobEnded})
	if len(exact) != 1 || exact[0] != events.JobEnded || len(prefixes) != 2 || prefixes[0] != "" || prefixes[1] != "maestro.model." {
		t.Fatalf("Split = %v %v", exact, prefixes)
	}
}

// fold applies changes as events, as the repository would.
func fold(t *testing.T, s State, changes []handlers.Change) State {
	t.Helper()
	for i, c := range changes {
		e, err := events.New(events.Meta{Actor: events.SystemActor}, c.Subject, c.Type, i, c.Data)
		if err != nil {
			t.Fatal(err)
		}
		if s, err = Evolve(s, e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func types(changes []handlers.Change) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Type)
	}
	return out
}

func TestDeciders(t *testing.T) {
	c := Create{ID: "w1", ProjectID: "p1", CreatedBy: "u1", SecretSealed: "v1.k.sealed",
		Settings: Settings{URL: "https://x.example.com/", Events: []string{"*"}}}
	ch, err := DecideCreate(State{}, c)
	if err != nil || len(ch) != 1 || ch[0].Type != events.WebhookCreated {
		t.Fatalf("create: %v %v", types(ch), err)
	}
	s := fold(t, State{}, ch)
	if !s.Created || !s.Enabled || s.Secret != "v1.k.sealed" || s.ProjectID != "p1" {
		t.Fatalf("state after create: %+v", s)
	}
	if _, err := DecideCreate(s, c); err == nil {
		t.Fatal("created twice")
	}
	// No change, no event.
	if ch, err := DecideUpdate(s, Settings{URL: s.URL, Events: s.Events, Enabled: true}); err != nil || len(ch) != 0 {
		t.Fatalf("no-op update: %v %v", types(ch), err)
	}
	ch, _ = DecideUpdate(s, Settings{URL: "https://y.example.com/", Events: []string{"maestro.model.*"}, Enabled: true})
	s = fold(t, s, ch)
	if s.URL != "https://y.example.com/" || s.Events[0] != "maestro.model.*" {
		t.Fatalf("after update: %+v", s)
	}
	until := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ch, _ = DecideRotate(s, "v1.k.new", until)
	s = fold(t, s, ch)
	if s.Secret != "v1.k.new" || s.PreviousSecret != "v1.k.sealed" || !s.PreviousUntil.Equal(until) {
		t.Fatalf("after rotation: %+v", s)
	}
	ch, _ = DecideDisable(s, "failing", "e1")
	s = fold(t, s, ch)
	if s.Enabled || s.DisabledReason != "failing" {
		t.Fatalf("after disable: %+v", s)
	}
	if ch, _ := DecideDisable(s, "again", "e2"); len(ch) != 0 {
		t.Fatal("a disabled webhook was disabled again (a redelivered reaction must change nothing)")
	}
	if _, err := DecideTest(s); err == nil {
		t.Fatal("a disabled webhook took a test event")
	}
	ch, _ = DecideUpdate(s, Settings{URL: s.URL, Events: s.Events, Enabled: true})
	s = fold(t, s, ch)
	if !s.Enabled || s.DisabledReason != "" {
		t.Fatalf("after enable: %+v", s)
	}
	if ch, err := DecideTest(s); err != nil || types(ch)[0] != events.WebhookTestRequested {
		t.Fatalf("test: %v %v", types(ch), err)
	}
	ch, _ = DecideDelete(s)
	s = fold(t, s, ch)
	for name, d := range map[string]func(State) ([]handlers.Change, error){
		"update": func(s State) ([]handlers.Change, error) { return DecideUpdate(s, Settings{}) },
		"rotate": func(s State) ([]handlers.Change, error) { return DecideRotate(s, "x", until) },
		"delete": DecideDelete,
		"test":   DecideTest,
	} {
		if _, err := d(s); err == nil {
			t.Errorf("%s on a deleted webhook succeeded", name)
		}
	}
}

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	base, max := 5*time.Second, time.Hour
	prev := time.Duration(0)
	for n := 1; n <= 40; n++ {
		w := Backoff(base, max, n)
		nominal := min(base<<min(n-1, 20), max)
		if w < nominal*8/10 || w > nominal*12/10 {
			t.Fatalf("attempt %d: %s, outside ±20%% of %s", n, w, nominal)
		}
		if n > 1 && nominal < max && w < prev/2 {
			t.Fatalf("attempt %d waits %s after %s", n, w, prev)
		}
		prev = w
	}
	// With the defaults, retries span more than a day in about 30 attempts.
	var total time.Duration
	n := 0
	for total < 25*time.Hour {
		n++
		total += min(base<<min(n-1, 20), max)
	}
	if n > 40 {
		t.Fatalf("%d attempts to cover 25h", n)
	}
}

func TestCloudEventRedactsSecrets(t *testing.T) {
	e, err := events.New(events.Meta{Actor: events.SystemActor}, events.Subject(events.AggWebhook, "w1"), events.WebhookCreated, 0,
		events.WebhookCreatedData{WebhookID: "w1", URL: "https://x.example.com/", Events: []string{"*"}, SecretSealed: "v1.k.sealed"})
	if err != nil {
		t.Fatal(err)
	}
	e.Sequence = 7
	b, err := CloudEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	var ce map[string]any
	if err := json.Unmarshal(b, &ce); err != nil {
		t.Fatal(err)
	}
	if ce["specversion"] != "1.0" || ce["id"] != e.ID || ce["type"] != events.WebhookCreated || ce["sequence"] != "7" {
		t.Fatalf("cloud event %s", b)
	}
	if strings.Contains(string(b), "sealed") {
		t.Fatalf("the sealed secret is in the delivered event: %s", b)
	}
}
