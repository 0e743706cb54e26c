package chaos

// Scenario 1: kill -9 of `maestro serve` during a burst of concurrent
// commands, then a restart on the same data dir and nothing else.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/maestro-ml/maestro/platform"
)

// serveClients is how many clients send commands at once.
const serveClients = 8

// killAfter is how many acknowledged commands a burst runs before the kill.
const killAfter = 40

func TestServeKilledMidBurst(t *testing.T) {
	dir := dataDir(t)
	// A 2 s lease so a job whose runner died with serve is found lost in
	// about 3 s instead of 20.
	env := baseEnv(append(bootstrapAdmin, "MAESTRO_REGISTRATIONS_PER_HOUR=100000", "MAESTRO_JOB_LEASE=2s", "MAESTRO_JOB_GRACE=1s")...)
	serve := startProc(t, "serve", env, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
	l := &ledger{}
	ws := setupWorkspace(t, serve.url, login(t, serve.url), l)
	w := world{nc: nil, hotModel: ws.hotModel, verifyCmd: verifyDataDir(t, dir)}

	for rep := range *reps {
		token := login(t, serve.url)
		before := len(l.entries)

		// The burst, killed once it runs at full speed.
		base := serve.url
		ld := startLoad(func(ctx context.Context, acked chan<- struct{}) {
			burst(ctx, l, serveClients, func(int) string { return base }, ws.nextCommand("s1", rep, token, true), acked)
		})
		waitAcks(t, ld.acked, killAfter)
		serve.kill(t)
		killed := time.Now()
		<-ld.done // every client has met the dead server
		ld.cancel()

		// Restart: the same command line, nothing else.
		serve.restart(t)
		ready := waitReady(t, serve.url)
		recovery := ready.Sub(killed)

		unanswered := len(l.unanswered())
		resend(serve.url, l, 0)
		// A new command after the restart works with the old session.
		after := versionCmd(token, fmt.Sprintf("s1-r%d-after", rep))
		l.record(serve.url, after, send(serve.url, after))

		lost := checkJobs(t, serve.url, token, l.entries[before:])
		v := checkInvariant(t, w.with(t, dir), l, before)
		report(t, result{Scenario: "1 serve kill -9", Rep: rep + 1, verdict: v, Recovery: recovery,
			Note: fmt.Sprintf("(%d unanswered at the kill; %d jobs had an attempt lost)", unanswered, lost)})
	}
	serve.stop(t)
}

// with connects the world to the NATS of the serve running on dir (its
// address changes with every start: it is read from run.json, as the CLI
// does).
func (w world) with(t *testing.T, dir string) world {
	t.Helper()
	info, err := platform.ReadRunInfo(dir)
	if err != nil {
		t.Fatalf("run.json: %v", err)
	}
	nc, err := nats.Connect(info.NATSURL, nats.UserInfo(info.NATSUser, info.NATSPassword))
	if err != nil {
		t.Fatalf("connect to serve's NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	w.nc = nc
	return w
}

// checkJobs waits until every acknowledged job of entries has ended and
// checks it ended as documented: succeeded (after retries of attempts
// lost with the killed runner), or failed because an attempt was lost with
// no retries left. It returns how many jobs had a lost attempt.
func checkJobs(t *testing.T, base, token string, entries []*entry) int {
	t.Helper()
	lostJobs := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.cmd.Path, "/jobs") || !e.final.ok() {
			continue
		}
		var sub struct {
			Job struct {
				ID string `json:"id"`
			} `json:"job"`
		}
		if err := json.Unmarshal(e.final.Body, &sub); err != nil || sub.Job.ID == "" {
			t.Errorf("job submission %s answered without a job id: %s", e.cmd.Key, e.final)
			continue
		}
		var job struct {
			State    string `json:"state"`
			Reason   string `json:"reason"`
			Attempts []struct {
				Outcome string `json:"outcome"`
				Reason  string `json:"reason"`
			} `json:"attempts"`
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			a := send(base, command{Method: "GET", Path: "/api/v1/projects/" + project + "/jobs/" + sub.Job.ID, Token: token})
			if a.Status == http.StatusOK && json.Unmarshal(a.Body, &job) == nil && job.State != "queued" && job.State != "running" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("job %s (%s) has not ended 90s after the restart: %s", sub.Job.ID, e.cmd.Key, a)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		lost := 0
		for _, at := range job.Attempts {
			if at.Outcome == "lost" {
				lost++
			}
		}
		if lost > 0 {
			lostJobs++
		}
		switch {
		case job.State == "succeeded":
		case job.State == "failed" && strings.Contains(job.Reason, "lost") && lost > jobRetries:
		default:
			t.Errorf("job %s (%s) ended %q (%s) after %d lost attempt(s): want succeeded, or failed as lost with no retries left",
				sub.Job.ID, e.cmd.Key, job.State, job.Reason, lost)
		}
	}
	return lostJobs
}
