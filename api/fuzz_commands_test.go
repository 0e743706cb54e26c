package api_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// textCommands are the commands that carry free-form text into events, each
// with one place where the fuzzed JSON value goes (FuzzCommandText). %V is the
// raw JSON value, %N a fresh number (so names do not collide), %P the value
// used as an artifact path.
var textCommands = []struct{ method, path, body string }{
	{"POST", "/api/v1/projects", `{"name":%V,"description":"d"}`},
	{"POST", "/api/v1/projects", `{"name":"p%N","description":%V}`},
	{"PATCH", "/api/v1/projects/fuzz", `{"description":%V}`},
	{"POST", "/api/v1/projects/fuzz/models", `{"name":%V}`},
	{"POST", "/api/v1/projects/fuzz/models", `{"name":"m%N","description":%V,"tags":{"k":%V}}`},
	{"PATCH", "/api/v1/projects/fuzz/models/m", `{"tags":{%V:"v"}}`},
	{"PATCH", "/api/v1/projects/fuzz/models/m/versions/1", `{"description":%V,"tags":{"t":%V}}`},
	{"POST", "/api/v1/projects/fuzz/models/m/versions", `{"source":%V,"run_id":%V}`},
	{"POST", "/api/v1/auth/register", `{"email":%V,"password":"a long fuzz password","name":"n"}`},
	{"POST", "/api/v1/auth/register", `{"email":"u%N@fuzz.test","password":"a long fuzz password","name":%V}`},
	{"PUT", "/api/v1/projects/fuzz/models/m/versions/1/artifacts/%P", `x`},
}

// FuzzCommandText drives the path request → event → projection row for every
// command that carries free-form text (names, descriptions, tags, sources,
// e-mails, artifact paths; FuzzVersionBody covers the version body as a
// whole): whatever the value, the API refuses it (4xx) or stores an event
// every projection can store too — nothing is quarantined, so no request
// can make a read model skip history.
func FuzzCommandText(f *testing.F) {
	for i := range textCommands {
		for _, v := range []string{`"\ud800"`, `"\udfff x"`, `1e200000`, `"\u0000"`, `"a\u200bb"`, `"ａｄｍｉｎ@x.io"`,
			`"x\ny"`, `"` + strings.Repeat("é", 300) + `"`, `"ok"`, `"a/../b"`, `"\ud83d\ude00"`, `null`, `{}`} {
			f.Add(uint8(i), []byte(v))
		}
	}
	e := testenv.Start(f, testenv.Config(f))
	e.Observe = nil // the OpenAPI check reports through f, which the fuzz function must not use
	admin := e.Admin("root@fuzz.test").AccessToken
	for _, setup := range []struct{ path, body string }{
		{projectsPath, `{"name":"Fuzz"}`},
		{projectsPath + "/fuzz/models", `{"name":"m"}`},
		{projectsPath + "/fuzz/models/m/versions", `{}`},
	} {
		if r := e.Do("POST", setup.path, admin, []byte(setup.body)); r.Status != http.StatusCreated {
			f.Fatalf("setup %s: %d %s", setup.path, r.Status, r.Body)
		}
	}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, which uint8, value []byte) {
		c := textCommands[int(which)%len(textCommands)]
		num := strconv.FormatInt(n.Add(1), 10)
		path := strings.ReplaceAll(c.path, "%P", escapePath(string(value)))
		body := strings.NewReplacer("%V", string(value), "%N", num).Replace(c.body)
		r, err := e.Send(c.method, path, admin, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if r.Status >= 500 {
			t.Fatalf("%s %s %q: %d %s", c.method, path, body, r.Status, r.Body)
		}
		seq, err := strconv.ParseUint(r.Header.Get("Maestro-Sequence"), 10, 64)
		if err != nil {
			return // refused, or nothing recorded
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var names []string
		for _, p := range projections.All() {
			names = append(names, p.Name())
		}
		// WaitRead: projections that read none of the command's subjects
		// only learn of its sequence by reading through (or when asked).
		if !e.P.Waiter.WaitRead(ctx, seq, names...) {
			t.Fatalf("%q: projections did not reach %d", body, seq)
		}
		var quarantined int
		if err := e.P.Pool.QueryRow(ctx, "SELECT count(*) FROM projection_quarantine").Scan(&quarantined); err != nil {
			t.Fatal(err)
		}
		if quarantined != 0 {
			t.Fatalf("%s %s %q (%d): an event was quarantined; the door let through what Postgres cannot store", c.method, path, body, r.Status)
		}
	})
}

// escapePath percent-encodes each segment of p, so the fuzzed bytes reach
// the artifact route as its decoded path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
