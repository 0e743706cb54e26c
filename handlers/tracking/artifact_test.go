package tracking_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

func runArtifact(t *testing.T, path, digest string) events.Envelope {
	return ev(t, t0, rSubj, events.RunArtifactRecorded, events.RunArtifactRecordedData{
		RunID: rid, Path: path, Digest: digest, Size: 3, ContentType: "application/octet-stream"})
}

func TestDecideRecordRunArtifact(t *testing.T) {
	t.Parallel()
	art := registry.Artifact{Path: "model/weights.bin", Digest: "sha256:1", Size: 3, ContentType: "application/octet-stream"}
	rec := func(a registry.Artifact) []handlers.Change {
		return []handlers.Change{{Subject: rSubj, Type: events.RunArtifactRecorded, Data: events.RunArtifactRecordedData{
			RunID: rid, Path: a.Path, Digest: a.Digest, Size: a.Size, ContentType: a.ContentType}}}
	}
	with := func(f func(*registry.Artifact)) registry.Artifact {
		a := art
		f(&a)
		return a
	}
	running := []events.Envelope{runCreated(t, "train", nil)}
	recorded := cat(running, []events.Envelope{runArtifact(t, art.Path, art.Digest)})
	deleted := cat(recorded, []events.Envelope{runDeleted(t)})
	artifactLimit := wantErr{handlers.Conflict, "artifact-limit"}
	cases := []struct {
		name  string
		given []events.Envelope
		a     registry.Artifact
		want  []handlers.Change
		err   wantErr
	}{
		{name: "record", given: running, a: art, want: rec(art)},
		{name: "the same bytes again change nothing", given: recorded, a: art, want: noChanges},
		{name: "new bytes replace the path", given: recorded, a: with(func(a *registry.Artifact) { a.Digest = "sha256:2" }),
			want: rec(with(func(a *registry.Artifact) { a.Digest = "sha256:2" }))},
		{name: "another content type replaces the path", given: recorded, a: with(func(a *registry.Artifact) { a.ContentType = "text/plain" }),
			want: rec(with(func(a *registry.Artifact) { a.ContentType = "text/plain" }))},
		{name: "a deleted run takes none", given: deleted, a: art, err: runDeletedErr},
		{name: "restored, it does", given: cat(deleted, []events.Envelope{runRestored(t)}), a: with(func(a *registry.Artifact) { a.Path = "x" }),
			want: rec(with(func(a *registry.Artifact) { a.Path = "x" }))},
		{name: "missing run", a: art, err: notFound},
		{name: "parent segment", given: running, a: with(func(a *registry.Artifact) { a.Path = "a/../../etc/passwd" }), err: invalid},
		{name: "absolute path", given: running, a: with(func(a *registry.Artifact) { a.Path = "/etc/passwd" }), err: invalid},
		{name: "dot segment", given: running, a: with(func(a *registry.Artifact) { a.Path = "./a" }), err: invalid},
		{name: "empty segment", given: running, a: with(func(a *registry.Artifact) { a.Path = "a//b" }), err: invalid},
		{name: "trailing slash", given: running, a: with(func(a *registry.Artifact) { a.Path = "a/" }), err: invalid},
		{name: "backslash", given: running, a: with(func(a *registry.Artifact) { a.Path = `..\x` }), err: invalid},
		{name: "empty path", given: running, a: with(func(a *registry.Artifact) { a.Path = "" }), err: invalid},
		{name: "control character", given: running, a: with(func(a *registry.Artifact) { a.Path = "a\tb" }), err: invalid},
		{name: "invalid UTF-8", given: running, a: with(func(a *registry.Artifact) { a.Path = "a\xffb" }), err: invalid},
		{name: "path too long", given: running, a: with(func(a *registry.Artifact) { a.Path = strings.Repeat("p", registry.MaxPathLen+1) }), err: invalid},
		{name: "content type too long", given: running, a: with(func(a *registry.Artifact) { a.ContentType = "text/" + strings.Repeat("x", 256) }), err: invalid},
		{name: "limit", given: cat(running, manyArtifacts(t, tracking.MaxArtifactsPerRun)), a: art, err: artifactLimit},
		{name: "at the limit a path is still replaced", given: cat(running, manyArtifacts(t, tracking.MaxArtifactsPerRun)),
			a: with(func(a *registry.Artifact) { a.Path = "f/00042" }), want: rec(with(func(a *registry.Artifact) { a.Path = "f/00042" }))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideRecordRunArtifact(fold(t, tracking.EvolveRun, tc.given), tc.a)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

// manyArtifacts records n paths f/00000 … on the run.
func manyArtifacts(t *testing.T, n int) []events.Envelope {
	out := make([]events.Envelope, n)
	for i := range n {
		out[i] = runArtifact(t, fmt.Sprintf("f/%05d", i), "sha256:a")
	}
	return out
}

func TestEvolveRunArtifacts(t *testing.T) {
	t.Parallel()
	s := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil), runArtifact(t, "a", "sha256:1"),
		runArtifact(t, "b/c", "sha256:2"), runArtifact(t, "a", "sha256:3")})
	want := map[string]registry.Artifact{
		"a":   {Path: "a", Digest: "sha256:3", Size: 3, ContentType: "application/octet-stream", RecordedAt: t0},
		"b/c": {Path: "b/c", Digest: "sha256:2", Size: 3, ContentType: "application/octet-stream", RecordedAt: t0},
	}
	if !reflect.DeepEqual(s.Artifacts, want) {
		t.Fatalf("artifacts = %+v, want %+v", s.Artifacts, want)
	}
	// A clone folds its own artifacts.
	c, err := tracking.EvolveRun(tracking.CloneRun(s), runArtifact(t, "d", "sha256:4"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Artifacts) != 2 || len(c.Artifacts) != 3 {
		t.Fatalf("original has %d artifacts, clone %d: the clone shares the map", len(s.Artifacts), len(c.Artifacts))
	}
}
