package chaos

// The load: one project with a hot model, and a mix of keyed commands that
// touches every write path a user has (registrations, projects, models,
// versions of one hot model, artifact uploads, runs, metric batches, jobs).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
)

const (
	adminEmail    = "root@chaos.test"
	adminPassword = "chaos bootstrap password"
	project       = "chaos" // the slug of the project the load works in
)

// bootstrapAdmin is the env that makes the first start create the admin.
var bootstrapAdmin = []string{"MAESTRO_BOOTSTRAP_ADMIN_EMAIL=" + adminEmail, "MAESTRO_BOOTSTRAP_ADMIN_PASSWORD=" + adminPassword}

// login starts a session of the admin: a client's token for one repetition
// (its retries after a crash reuse it: idempotency keys are per session).
func login(t *testing.T, base string) string {
	t.Helper()
	a := send(base, command{Method: "POST", Path: "/api/v1/auth/login", Key: fmt.Sprint("login-", time.Now().UnixNano()),
		Body: jsonBody(map[string]string{"email": adminEmail, "password": adminPassword})})
	if a.Status != http.StatusOK {
		t.Fatalf("login: %s", a)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(a.Body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("login answer: %v %s", err, a)
	}
	return tok.AccessToken
}

// workspace is what the load needs to exist: the project, its hot model
// (with version 1, which artifacts are uploaded to), an experiment and the
// run metric batches go to.
type workspace struct {
	hotModel, experiment, run string
}

// setupWorkspace creates the workspace through the API (keyed like every
// command, recorded in l so the invariant covers it too).
func setupWorkspace(t *testing.T, base, token string, l *ledger) workspace {
	t.Helper()
	must := func(cmd command, idField string) string {
		t.Helper()
		a := send(base, cmd)
		l.record(base, cmd, a)
		if !a.ok() {
			t.Fatalf("setup %s %s: %s", cmd.Method, cmd.Path, a)
		}
		var body any
		_ = json.Unmarshal(a.Body, &body)
		return fmt.Sprint(lookup(body, idField))
	}
	must(projectCmd(token, "setup", project), "id")
	var w workspace
	w.hotModel = must(modelCmd(token, "setup-hot", "hot"), "id")
	must(versionCmd(token, "setup-v1"), "version")
	w.experiment = must(command{Method: "POST", Path: "/api/v1/projects/" + project + "/experiments", Key: "setup-exp", Token: token,
		Body: jsonBody(map[string]string{"name": "load"}), Effect: effect{Type: "maestro.experiment.created.v1", Field: "name", Value: "load"}}, "id")
	w.run = must(runCmd(token, "setup-run", w.experiment), "id")
	return w
}

// kinds is the command mix, in the order each client cycles through it
// (starting at its own offset): versions of the hot model are the most
// frequent, registrations (argon2id, deliberately slow) the rarest.
var kinds = []string{"version", "metrics", "artifact", "version", "run", "metrics", "project", "version", "model", "job", "register"}

// nextCommand is client i's n-th command of repetition rep in scenario s.
func (w workspace) nextCommand(s string, rep int, token string, jobs bool) func(i, n int) command {
	return func(i, n int) command {
		key := fmt.Sprintf("%s-r%d-c%d-n%d", s, rep, i, n)
		kind := kinds[(i+n)%len(kinds)]
		if kind == "job" && !jobs {
			kind = "version"
		}
		switch kind {
		case "metrics":
			return metricsCmd(token, key, w.run)
		case "artifact":
			return artifactCmd(token, key)
		case "run":
			return runCmd(token, key, w.experiment)
		case "project":
			return projectCmd(token, key, key)
		case "model":
			return modelCmd(token, key, key)
		case "job":
			return jobCmd(token, key)
		case "register":
			return registerCmd(key)
		}
		return versionCmd(token, key)
	}
}

func projectCmd(token, key, name string) command {
	return command{Method: "POST", Path: "/api/v1/projects", Key: key, Token: token, Body: jsonBody(map[string]string{"name": name}),
		Effect: effect{Type: events.ProjectCreated, Field: "name", Value: name, Same: map[string]string{"id": "project_id"}}}
}

func modelCmd(token, key, name string) command {
	return command{Method: "POST", Path: "/api/v1/projects/" + project + "/models", Key: key, Token: token,
		Body:   jsonBody(map[string]string{"name": name}),
		Effect: effect{Type: events.ModelCreated, Field: "name", Value: name, Same: map[string]string{"id": "model_id"}}}
}

// versionCmd registers a version of the hot model; its description is the
// key, so the stream shows which request each version came from.
func versionCmd(token, key string) command {
	return command{Method: "POST", Path: "/api/v1/projects/" + project + "/models/hot/versions", Key: key, Token: token,
		Body:   jsonBody(map[string]string{"description": key}),
		Effect: effect{Type: events.ModelVersionRegistered, Field: "description", Value: key, Same: map[string]string{"version": "version"}}}
}

// artifactCmd uploads a small artifact to the hot model's version 1 at a
// path of its own (an upload is a PUT of content: resending the same bytes
// is a no-op by itself).
func artifactCmd(token, key string) command {
	path := "load/" + key + ".bin"
	return command{Method: "PUT", Path: "/api/v1/projects/" + project + "/models/hot/versions/1/artifacts/" + path, Key: key, Token: token,
		Body: []byte("artifact " + key), ContentType: "application/octet-stream",
		Effect: effect{Type: events.ModelArtifactRecorded, Field: "path", Value: path, Same: map[string]string{"digest": "digest"}}}
}

func runCmd(token, key, experiment string) command {
	return command{Method: "POST", Path: "/api/v1/projects/" + project + "/experiments/" + experiment + "/runs", Key: key, Token: token,
		Body:   jsonBody(map[string]string{"name": key}),
		Effect: effect{Type: events.RunCreated, Field: "name", Value: key, Same: map[string]string{"id": "run_id"}}}
}

// metricsCmd logs ten points of a metric named after the key, so each
// batch is one message of MAESTRO_METRICS that names it.
func metricsCmd(token, key, run string) command {
	metric := "m-" + key
	points := make([]map[string]any, 10)
	for j := range points {
		points[j] = map[string]any{"key": metric, "value": float64(j) / 4, "step": j, "timestamp": 1_700_000_000_000 + j}
	}
	return command{Method: "POST", Path: "/api/v1/projects/" + project + "/runs/" + run + "/metrics", Key: key, Token: token,
		Body:   jsonBody(map[string]any{"metrics": points}),
		Effect: effect{Stream: events.MetricsStreamName, Type: events.MetricsLogged, Field: "metrics", Value: metric}}
}

// jobCmd submits a one-second job with retries left for attempts lost to
// a killed runner.
func jobCmd(token, key string) command {
	return command{Method: "POST", Path: "/api/v1/projects/" + project + "/jobs", Key: key, Token: token,
		Body:   jsonBody(map[string]any{"experiment": "jobs", "name": key, "command": []string{"sleep", "1"}, "max_retries": jobRetries}),
		Effect: effect{Type: events.JobSubmitted, Field: "name", Value: key, Same: map[string]string{"job.id": "job_id"}}}
}

// jobRetries is each load job's max_retries: more than the kills one job
// can live through in a short run.
const jobRetries = 3

// registerCmd is an anonymous self-registration.
func registerCmd(key string) command {
	email := key + "@chaos.test"
	return command{Method: "POST", Path: "/api/v1/auth/register", Key: key,
		Body:   jsonBody(map[string]string{"email": email, "password": "chaos password " + key, "name": key}),
		Effect: effect{Type: events.UserRegistered, Field: "email", Value: email, Same: map[string]string{"id": "user_id"}}}
}
