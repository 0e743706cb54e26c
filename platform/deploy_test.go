package platform_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/platform"
)

// startPlatform starts cfg and stops it when the test ends.
func startPlatform(t *testing.T, cfg platform.Config) (*platform.Platform, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := platform.Start(ctx, cfg)
	if err == nil {
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p.Shutdown(sctx)
		})
	}
	return p, err
}

// An empty or blank nats.password (what a power loss after creating it
// could leave) must not become the NATS listener's password: nats-server
// accepts an empty password for a user configured with one.
func TestBlankNATSPasswordRegenerated(t *testing.T) {
	t.Parallel()
	for name, content := range map[string]string{"empty": "", "blank": " \n\t\n"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := testenv.Config(t)
			cfg.NATSListen = "127.0.0.1:0"
			pwFile := filepath.Join(cfg.DataDir, "nats.password")
			if err := os.WriteFile(pwFile, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := startPlatform(t, cfg)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(pwFile)
			if err != nil {
				t.Fatal(err)
			}
			secret := strings.TrimSpace(string(b))
			if len(secret) < 32 {
				t.Fatalf("nats.password after start is %q, want a regenerated secret", secret)
			}
			if fi, err := os.Stat(pwFile); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("nats.password mode: %v %v", fi.Mode(), err)
			}
			if nc, err := nats.Connect(p.NATSClientURL(), nats.UserInfo("maestro", "")); err == nil {
				nc.Close()
				t.Fatal("NATS accepted user maestro with an empty password")
			}
			nc, err := nats.Connect(p.NATSClientURL(), nats.UserInfo("maestro", secret))
			if err != nil {
				t.Fatalf("NATS refused the regenerated password: %v", err)
			}
			nc.Close()
			info, err := platform.ReadRunInfo(cfg.DataDir)
			if err != nil || info.NATSPassword != secret {
				t.Fatalf("run.json has password %q (%v), want the regenerated one", info.NATSPassword, err)
			}
		})
	}
}

// MAESTRO_NATS_REPLICAS: 1 on the embedded node for the stream and the
// idempotency bucket; more than the NATS has is a clear refusal, and an
// external NATS defaults to 3 (so a single external server must say 1).
func TestNATSReplicas(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	p, err := startPlatform(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p.EventReplicas() != 1 {
		t.Fatalf("embedded event stream has %d replicas, want 1", p.EventReplicas())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := p.Store.JetStream().Stream(ctx, "KV_"+api.IdempotencyBucket)
	if err != nil || kv.CachedInfo().Config.Replicas != 1 {
		t.Fatalf("idempotency bucket: %v", err)
	}

	three := testenv.Config(t)
	three.NATSReplicas = 3
	if _, err := startPlatform(t, three); !errors.Is(err, events.ErrReplicas) {
		t.Fatalf("R3 on the embedded node: %v, want events.ErrReplicas", err)
	}

	// A lone external server, reached by URL, with the default replicas.
	emb, err := events.StartEmbedded(events.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", User: "u", Password: "a-long-test-password"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	ext := testenv.Config(t)
	ext.NATSURL, ext.NATSUser, ext.NATSPassword = emb.ClientURL(), "u", "a-long-test-password"
	_, err = startPlatform(t, ext)
	if !errors.Is(err, events.ErrReplicas) || !strings.Contains(err.Error(), "MAESTRO_NATS_REPLICAS") {
		t.Fatalf("external single server with default replicas: %v, want a refusal naming MAESTRO_NATS_REPLICAS", err)
	}
	ext.NATSReplicas = 1
	p2, err := startPlatform(t, ext)
	if err != nil {
		t.Fatalf("external single server with MAESTRO_NATS_REPLICAS=1: %v", err)
	}
	if p2.EventReplicas() != 1 {
		t.Fatalf("external stream has %d replicas, want 1", p2.EventReplicas())
	}
}

// A worker serves no artifacts and so opens no artifact store: on a
// read-only root filesystem with no S3 it must still start.
func TestWorkerOpensNoArtifactStore(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.API, cfg.Runner = false, false
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.ArtifactDir = filepath.Join(blocker, "artifacts") // cannot be created
	p, err := startPlatform(t, cfg)
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	if p.Blobs != nil {
		t.Fatal("worker opened an artifact store")
	}
	// artifacts gc asks for the store explicitly, and gets the error.
	gc := cfg
	gc.Blobs = true
	gc.DataDir = t.TempDir() // the worker above holds its data dir
	if _, err := startPlatform(t, gc); err == nil || !strings.Contains(err.Error(), "artifact dir") {
		t.Fatalf("gc with an unusable artifact dir: %v", err)
	}
}

// The scale-out NATS configuration (deploy/nats-cluster.conf, the file
// docker-compose.yml and Kubernetes run) gives outside subscribers what the
// embedded server does: a real nats-server started from that file (as one
// node: no routes), Maestro on it with the republisher's user, and the
// subscriber user reading redacted copies of what Maestro did, and nothing
// of MAESTRO_EVENTS.
func TestOutsideSubscriberOnTheDeployedNATS(t *testing.T) {
	for k, v := range map[string]string{"SERVER_NAME": "nats-test", "MAESTRO_NATS_PASSWORD": "internal-0123456789abcdef",
		"MAESTRO_NATS_REPUBLISHER_PASSWORD": "republisher-0123456789abcdef", "MAESTRO_NATS_SUBSCRIBER_PASSWORD": "subscriber-0123456789abcdef"} {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(filepath.Join("..", "deploy", "nats-cluster.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Cluster, opts.Routes = server.ClusterOpts{}, nil
	opts.StoreDir, opts.Host, opts.Port, opts.HTTPPort = t.TempDir(), "127.0.0.1", server.RANDOM_PORT, 0
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server from deploy/nats-cluster.conf not ready")
	}

	cfg := testenv.Config(t)
	cfg.NATSURL, cfg.NATSUser, cfg.NATSPassword, cfg.NATSReplicas = srv.ClientURL(), "maestro", "internal-0123456789abcdef", 1
	cfg.NATSRepublisherUser, cfg.NATSRepublisherPassword = "maestro-republisher", "republisher-0123456789abcdef"
	e := testenv.Start(t, cfg)
	u := e.Register("outside-reader@deploy.test")

	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("subscriber", "subscriber-0123456789abcdef"))
	if err != nil {
		t.Fatalf("connect as subscriber: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.PublicStreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("the subscriber reads %s: %v", events.PublicStreamName, err)
	}
	var copySubject string
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("no copy of the registration in %s: %v", events.PublicStreamName, err)
		}
		if m.Headers().Get("ce-type") != events.UserRegistered || !strings.Contains(string(m.Data()), u.ID) {
			continue
		}
		if !strings.HasPrefix(m.Subject(), events.PublicSubjectPrefix) || strings.Contains(string(m.Data()), "argon2") ||
			strings.Contains(string(m.Data()), "password_hash") {
			t.Fatalf("copy %s %s: want a redacted copy under %s", m.Subject(), m.Data(), events.PublicSubjectPrefix)
		}
		copySubject = m.Subject()
		break
	}
	// MAESTRO_EVENTS is not in its account, and it may not even ask.
	denied, cancelDenied := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelDenied()
	if _, err := js.Stream(denied, events.StreamName); err == nil {
		t.Fatalf("the subscriber reads %s", events.StreamName)
	}
	if err := nc.Publish(events.PublicSubjectPrefix+"user.forged", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := js.Stream(ctx, events.PublicStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.GetLastMsgForSubject(ctx, copySubject); err != nil {
		t.Fatalf("the subscriber reads a copy by subject: %v", err)
	}
	if _, err := pub.GetLastMsgForSubject(ctx, events.PublicSubjectPrefix+"user.forged"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the subscriber's own publish: %v, want it never stored (message not found)", err)
	}
}
