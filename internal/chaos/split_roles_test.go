package chaos

// Scenario 2: split roles — `maestro api` ×2 and `maestro worker` ×2 on one
// NATS and one PostgreSQL (S3 for artifacts, as `maestro api` requires).
// Under load: kill -9 a worker mid-batch, kill -9 an API instance
// mid-request, and kill -9 the other worker between a commit and the next
// batch; the surviving instances keep serving and a supervisor's restart
// is the only action taken.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/nats-io/nats.go"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testpg"
)

// sharedServices starts what split roles share: a NATS server with
// JetStream listening on loopback (in this test process: nats-server is a
// library), a database on the test process's PostgreSQL cluster, and an
// S3 endpoint (gofakes3). It returns the roles' environment and a client
// connection to the NATS server.
func sharedServices(t *testing.T) ([]string, *nats.Conn) {
	t.Helper()
	const natsUser, natsPass = "maestro", "chaos-nats-password"
	emb, err := events.StartEmbedded(events.EmbeddedConfig{StoreDir: t.TempDir(), SyncAlways: true,
		Listen: "127.0.0.1:0", User: natsUser, Password: natsPass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := nats.Connect(emb.ClientURL(), nats.UserInfo(natsUser, natsPass))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s3 := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(s3.Close)
	return baseEnv(
		"MAESTRO_NATS_URL="+emb.ClientURL(), "MAESTRO_NATS_USER="+natsUser, "MAESTRO_NATS_PASSWORD="+natsPass,
		"MAESTRO_NATS_REPLICAS=1", // one NATS node here; deploy/ runs three
		"MAESTRO_DATABASE_URL="+testpg.Database(t),
		"MAESTRO_S3_ENDPOINT="+strings.TrimPrefix(s3.URL, "http://"), "MAESTRO_S3_BUCKET=chaos", "MAESTRO_S3_REGION=us-east-1",
		"MAESTRO_S3_ACCESS_KEY=chaos", "MAESTRO_S3_SECRET_KEY=chaos-secret", "MAESTRO_S3_TLS=false",
		"MAESTRO_SIGNING_KEY_FILE="+filepath.Join(t.TempDir(), "signing-key.pem"), // shared by both API instances
		"MAESTRO_REGISTRATIONS_PER_HOUR=100000",
	), nc
}

func TestSplitRolesKilled(t *testing.T) {
	env, nc := sharedServices(t)
	role := func(name string, env []string, args ...string) *proc {
		return startProc(t, name, env, append(args, "--data-dir", dataDir(t))...)
	}
	workers := []*proc{role("worker-1", env, "worker"), role("worker-2", env, "worker")}
	// The first API instance creates the admin (and the shared signing key).
	apis := []*proc{role("api-1", append(env[:len(env):len(env)], bootstrapAdmin...), "api", "--http-addr", "127.0.0.1:0")}
	apis = append(apis, role("api-2", env, "api", "--http-addr", "127.0.0.1:0"))

	l := &ledger{}
	ws := setupWorkspace(t, apis[1].url, login(t, apis[1].url), l)
	w := world{nc: nc, hotModel: ws.hotModel, verifyCmd: func() *exec.Cmd {
		cmd := exec.Command(maestroBin(t), "projections", "verify", "--data-dir", t.TempDir())
		cmd.Env = env
		return cmd
	}}

	for rep := range *reps {
		token := login(t, apis[1].url)
		start := len(l.entries)
		// Clients are spread over both instances; each sends to its own.
		bases := []string{apis[0].url, apis[1].url}
		ld := startLoad(func(ctx context.Context, acked chan<- struct{}) {
			burst(ctx, l, serveClients, func(i int) string { return bases[i%2] }, ws.nextCommand("s2", rep, token, false), acked)
		})

		// A worker dies mid-batch (under this load a projection batch is
		// almost always open) and is restarted; the other one takes over
		// the projections it held.
		waitAcks(t, ld.acked, 25)
		workers[0].kill(t)
		workers[0].restart(t)
		// An API instance dies mid-request; its clients' requests are
		// unanswered, the other instance's clients carry on.
		waitAcks(t, ld.acked, 25)
		apis[0].kill(t)
		killed := time.Now()
		waitAcks(t, ld.acked, 25)
		ld.stop()
		apis[0].restart(t)
		recovery := waitReady(t, apis[0].url).Sub(killed)

		for _, e := range l.entries[start:] {
			if e.first.Err != nil && e.sentTo != bases[0] {
				t.Errorf("a client of the surviving instance got no answer: %s %s: %v", e.cmd.Method, e.cmd.Path, e.first.Err)
			}
		}

		// The other worker dies idle, between its last commit and the next
		// batch (the projections have caught up with every answer), and is
		// restarted; the retries below are the next batches.
		waitCaughtUp(t, apis[1].url, token, l)
		workers[1].kill(t)
		workers[1].restart(t)

		// Clients of the dead instance resend to the survivor. With several
		// API instances a dead one's pending keys are freed by age (30 s,
		// docs/ARCHITECTURE.md "Idempotency"), so a 409 request-in-progress
		// with Retry-After is expected until then.
		unanswered := len(l.unanswered())
		resend(apis[1].url, l, 45*time.Second)
		after := versionCmd(token, fmt.Sprintf("s2-r%d-after", rep))
		l.record(apis[0].url, after, send(apis[0].url, after))

		var waited time.Duration
		for _, e := range l.entries[start:] {
			waited = max(waited, e.inFlight)
		}
		v := checkInvariant(t, w, l, start)
		report(t, result{Scenario: "2 split roles kill -9", Rep: rep + 1, verdict: v, Recovery: recovery,
			Note: fmt.Sprintf("(%d unanswered at the API kill; their retries waited up to %s on 409 request-in-progress)", unanswered, waited.Round(time.Second))})
	}
	for _, p := range append(apis, workers...) {
		p.stop(t)
	}
}

// waitCaughtUp waits until every projection has applied every answered
// command: a read with the highest sequence answered as its minimum.
func waitCaughtUp(t *testing.T, base, token string, l *ledger) {
	t.Helper()
	var seq uint64
	l.mu.Lock()
	for _, e := range l.entries {
		seq = max(seq, e.final.Seq)
	}
	l.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		a := send(base, command{Method: "GET", Token: token,
			Path: fmt.Sprintf("/api/v1/projects/%s/models/hot/versions?max_results=1&min_sequence=%d", project, seq)})
		if a.Status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the projections did not reach sequence %d within 60s: %s", seq, a)
		}
	}
}
