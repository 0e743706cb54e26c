package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Finding 1: JSON that Go accepts and jsonb refuses (a lone surrogate, a
// number beyond numeric's range) in a version signature stalled the models
// projection for ever, and every later command answered 202 after 2 s. At
// the door it is now canonicalised (the surrogate becomes U+FFFD) or refused
// (the number), and the next commands answer 201 at once.
func TestPoisonSignatureAtTheDoor(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@poison.test").AccessToken
	model, _ := raceModel(t, e, admin, "Poison", "m")
	vs := model + "/versions"

	r := call(t, e, 201, "POST", vs, admin, []byte(`{"signature":{"a":"\ud800"}}`))
	if v := asJSON[api.VersionResponse](t, r); string(v.Signature) != "{\"a\":\"\uFFFD\"}" {
		t.Fatalf("lone surrogate kept as %s, want U+FFFD", v.Signature)
	}
	if r.Header.Get("Maestro-Consistency") != "" {
		t.Fatalf("version with a lone surrogate answered pending: %v", r.Header)
	}
	callProblem(t, e, 400, "validation-failed", "POST", vs, admin, []byte(`{"signature":{"a":1e200000}}`))
	callProblem(t, e, 400, "validation-failed", "POST", vs, admin, []byte(`{"signature":{"a":[-1e309]}}`))

	// Finding 21: the command's answer and a later read print the same,
	// numbers included (jsonb prints 1e21 as 1000000000000000000000).
	cv := call(t, e, 201, "POST", vs, admin, []byte(`{"signature":{"b":1e2,"a":[1.50,-0,1e21,0.1]}}`))
	if v := asJSON[api.VersionResponse](t, cv); string(v.Signature) != `{"a":[1.5,0,1e+21,0.1],"b":100}` {
		t.Fatalf("signature %s", v.Signature)
	}
	if read := call(t, e, 200, "GET", vs+"/2", admin, nil); !bytes.Equal(read.Body, cv.Body) {
		t.Fatalf("command answered\n%s\nread answers\n%s", cv.Body, read.Body)
	}

	// Everything keeps up: the next commands are visible when they answer.
	for _, c := range []struct {
		path string
		body any
	}{
		{projectsPath, map[string]any{"name": "After"}},
		{vs, map[string]any{"description": "after"}},
	} {
		start := time.Now()
		r := e.Do("POST", c.path, admin, c.body)
		if r.Status != http.StatusCreated || r.Header.Get("Maestro-Consistency") != "" {
			t.Fatalf("POST %s after the hostile signatures: %d %v in %s (a projection is stuck?)", c.path, r.Status, r.Header, time.Since(start))
		}
	}
	if r := call(t, e, 200, "GET", "/readyz", "", nil); !bytes.Contains(r.Body, []byte(`"status":"ready"`)) {
		t.Fatalf("readyz %s", r.Body)
	}
}

// Defence in depth: an event the models projection cannot store, written
// to the stream behind the API's back, is quarantined; commands still
// answer 201 at once, /readyz stays 200 but says degraded, and the admin
// status names the event.
func TestQuarantineReported(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@quarantine.test").AccessToken
	model, modelID := raceModel(t, e, admin, "Q", "m")

	poison, err := events.New(events.Meta{Actor: events.Actor{Kind: events.ActorSystem, ID: "test"}}, events.Subject(events.AggModel, uuid.NewString()),
		events.ModelVersionRegistered, 0, json.RawMessage(fmt.Sprintf(`{"model_id":%q,"version":1,"tags":{},"signature":{"a":1e200000}}`, modelID)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seq, err := e.P.Store.Append(ctx, events.Append{Event: poison, Expect: events.Any})
	if err != nil {
		t.Fatal(err)
	}
	if !e.P.Waiter.Wait(ctx, seq, projections.Models{}.Name()) {
		t.Fatalf("models never passed the poison event %d", seq)
	}

	r := e.Do("POST", model+"/versions", admin, map[string]any{"description": "after"})
	if r.Status != http.StatusCreated || r.Header.Get("Maestro-Consistency") != "" {
		t.Fatalf("command after the poison event: %d %v", r.Status, r.Header)
	}
	var ready api.ReadyStatus
	call(t, e, 200, "GET", "/readyz", "", nil).JSON(t, &ready)
	if ready.Status != "degraded" || ready.Quarantined["models"] != 1 || len(ready.Quarantined) != 1 {
		t.Fatalf("readyz %+v, want degraded with models: 1", ready)
	}
	var st api.ProjectionStatus
	call(t, e, 200, "GET", "/api/v1/projections", admin, nil).JSON(t, &st)
	for _, p := range st.Projections {
		q := p.LastQuarantined
		if p.Name == "models" && (p.Quarantined != 1 || q == nil || q.Seq != seq || q.EventID != poison.ID ||
			q.Type != events.ModelVersionRegistered || q.SQLState != "22003") {
			t.Fatalf("models status %+v (latest %+v), want the poison event %d quarantined with 22003", p, q, seq)
		}
		if p.Name != "models" && p.Quarantined != 0 {
			t.Fatalf("%s quarantined %d events", p.Name, p.Quarantined)
		}
	}
}

// FuzzVersionBody drives the path request body → event → projection row for
// the command with the most free-form input (description, tags, source,
// run id, metrics, signature): whatever the body, the API either refuses it
// (4xx) or stores an event the models projection stores too (nothing
// quarantined), and the command's answer equals a later read.
func FuzzVersionBody(f *testing.F) {
	for _, seed := range []string{
		`{"signature":{"a":"\ud800"}}`, `{"signature":{"a":1e200000}}`, `{"signature":{"a":"\u0000"}}`,
		`{"description":"d","tags":{"k":"v"},"source":"s3://b/k","run_id":"r","metrics":{"auc":0.9},"signature":{"inputs":[{"name":"x","type":"double"}]}}`,
		`{"signature":{"n":[1e308,-0,5e-324,123456789012345678901]}}`, `{"description":"\ud83d"}`, `{"tags":{"\udfff":"x"}}`,
		`{"metrics":{"m":1e308}}`, `{"metrics":{"m":-0}}`, `{"signature":[1]}`, `{"signature":"x"}`, `{}`, `{"description":` + strconv.Quote("\u2028<&>") + `}`,
	} {
		f.Add([]byte(seed))
	}
	e := testenv.Start(f, testenv.Config(f))
	e.Observe = nil // the OpenAPI check reports through f, which the fuzz function must not use
	admin := e.Admin("root@fuzz.test").AccessToken
	if r := e.Do("POST", projectsPath, admin, map[string]any{"name": "Fuzz"}); r.Status != http.StatusCreated {
		f.Fatalf("create project: %d %s", r.Status, r.Body)
	}
	vs := projectsPath + "/fuzz/models/m/versions"
	if r := e.Do("POST", projectsPath+"/fuzz/models", admin, map[string]any{"name": "m"}); r.Status != http.StatusCreated {
		f.Fatalf("create model: %d %s", r.Status, r.Body)
	}
	pool := e.P.Pool
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := e.Send("POST", vs, admin, body)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status >= 500 {
			t.Fatalf("%q: %d %s", body, r.Status, r.Body)
		}
		if r.Status >= 400 {
			return
		}
		seq, err := strconv.ParseUint(r.Header.Get("Maestro-Sequence"), 10, 64)
		if err != nil {
			t.Fatalf("%q: %d without a sequence", body, r.Status)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if !e.P.Waiter.Wait(ctx, seq, projections.Models{}.Name()) {
			t.Fatalf("%q: models did not reach %d", body, seq)
		}
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM projection_quarantine").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%q: the event was quarantined; the door let through what Postgres cannot store", body)
		}
		read, err := e.Send("GET", r.Header.Get("Location"), admin, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == http.StatusCreated && !bytes.Equal(read.Body, r.Body) {
			t.Fatalf("%q: command answered\n%s\nread answers\n%s", body, r.Body, read.Body)
		}
	})
}
