package api_test

import (
	"bytes"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// Run artifacts through HTTP: the model versions' upload, download, Range,
// HEAD and digest check on a run, the flat list and MLflow's one-directory
// listing, a deleted run refusing uploads; and lineage between runs and the
// model versions registered from them.

// runEnv is a project with an editor, a viewer and an outsider, an
// experiment and a run in it.
type runEnv struct {
	e                        *testenv.Env
	admin                    string
	pp                       string // the project's path
	editor, viewer, outsider regClient
	experiment               string
	run                      projections.Run
	base                     string // the run's artifacts
}

func startRunEnv(t *testing.T, e *testenv.Env, admin, prefix string) *runEnv {
	t.Helper()
	r := &runEnv{e: e, admin: admin}
	r.editor = regUser(e, admin, prefix+"-editor@example.com", "viewer")
	r.viewer = regUser(e, admin, prefix+"-viewer@example.com", "viewer")
	r.outsider = regUser(e, admin, prefix+"-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": prefix}))
	r.pp = projectsPath + "/" + proj.Slug
	call(t, e, 200, "PUT", r.pp+"/members/"+r.editor.ID, admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", r.pp+"/members/"+r.viewer.ID, admin, map[string]any{"role": "viewer"})
	r.experiment = asJSON[projections.Experiment](t, call(t, e, 201, "POST", r.pp+"/experiments", r.editor.Token, map[string]any{"name": "x"})).ID
	r.run = r.newRun(t)
	r.base = r.pp + "/runs/" + r.run.ID + "/artifacts"
	return r
}

func (r *runEnv) newRun(t *testing.T) projections.Run {
	t.Helper()
	return asJSON[projections.Run](t, call(t, r.e, 201, "POST", r.pp+"/experiments/"+r.experiment+"/runs", r.editor.Token, map[string]any{}))
}

func (r *runEnv) files(t *testing.T, query string) []string {
	t.Helper()
	l := asJSON[api.ArtifactList](t, call(t, r.e, 200, "GET", r.base+query, r.viewer.Token, nil))
	var out []string
	for _, a := range l.Items {
		out = append(out, a.Path)
	}
	return out
}

func (r *runEnv) dir(t *testing.T, dir string) []string {
	t.Helper()
	d := asJSON[api.ArtifactDirectory](t, call(t, r.e, 200, "GET", r.base+"?path="+url.QueryEscape(dir), r.viewer.Token, nil))
	var out []string
	for _, f := range d.Files {
		switch {
		case f.IsDir && f.FileSize == nil:
			out = append(out, f.Path+"/")
		case !f.IsDir && f.FileSize != nil:
			out = append(out, fmt.Sprintf("%s (%d)", f.Path, *f.FileSize))
		default:
			t.Fatalf("entry %+v: a directory has no size, a file has one", f)
		}
	}
	return out
}

func TestRunArtifacts(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	r := startRunEnv(t, e, e.Admin("root@run-artifacts.test").AccessToken, "run-artifacts")
	data := randomBytes(7, 200<<10)
	d := digestOf(data)
	etag := `"` + string(d) + `"`
	path := r.base + "/model/weights.bin"
	lastSeq := func() uint64 {
		seq, err := e.P.Store.LastSequence(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}

	// The run names where its artifacts are, in commands' answers and reads.
	if r.run.ArtifactURI != "/api/v1/projects/"+r.run.ProjectID+"/runs/"+r.run.ID+"/artifacts" {
		t.Fatalf("artifact_uri of a new run = %q", r.run.ArtifactURI)
	}

	// Upload: one event on the run, then readable at once.
	seq := lastSeq()
	res := call(t, e, 201, "PUT", path, r.editor.Token, data, octets("Content-Digest", contentDigest(data))...)
	got := asJSON[api.ArtifactResponse](t, res)
	if got.Path != "model/weights.bin" || got.Digest != string(d) || got.Size != int64(len(data)) || got.ContentType != "application/octet-stream" {
		t.Fatalf("upload answered %s", res.Body)
	}
	if s, _ := strconv.ParseUint(res.Header.Get("Maestro-Sequence"), 10, 64); s != seq+1 || lastSeq() != seq+1 {
		t.Fatalf("upload: Maestro-Sequence %q, stream %d → %d; want one event", res.Header.Get("Maestro-Sequence"), seq, lastSeq())
	}
	evs, _, err := e.P.Store.Load(t.Context(), "maestro.events.run."+r.run.ID, 0)
	if err != nil || evs[len(evs)-1].Type != "maestro.run.artifact_recorded.v1" {
		t.Fatalf("the run's last event: %+v, %v", evs[len(evs)-1], err)
	}
	// The same bytes again record nothing; new bytes replace them.
	seq = lastSeq()
	if res = call(t, e, 200, "PUT", path, r.editor.Token, data, octets()...); res.Header.Get("Maestro-Sequence") != "" || lastSeq() != seq {
		t.Fatalf("repeated upload: Maestro-Sequence %q", res.Header.Get("Maestro-Sequence"))
	}

	// Download, HEAD, Range, revalidation: the model versions' behaviour.
	res = call(t, e, 200, "GET", path, r.viewer.Token, nil)
	if !bytes.Equal(res.Body, data) || res.Header.Get("ETag") != etag || res.Header.Get("Content-Length") != strconv.Itoa(len(data)) ||
		res.Header.Get("Content-Disposition") != "attachment; filename=weights.bin" || !strings.Contains(res.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Fatalf("download: %d bytes, headers %v", len(res.Body), res.Header)
	}
	if res = call(t, e, 200, "HEAD", path, r.viewer.Token, nil); len(res.Body) != 0 || res.Header.Get("ETag") != etag ||
		res.Header.Get("Content-Length") != strconv.Itoa(len(data)) {
		t.Fatalf("HEAD: %d bytes, headers %v", len(res.Body), res.Header)
	}
	res = call(t, e, 206, "GET", path, r.viewer.Token, nil, "Range", "bytes=100-199")
	if !bytes.Equal(res.Body, data[100:200]) || res.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(data)) {
		t.Fatalf("range: %d bytes, headers %v", len(res.Body), res.Header)
	}
	call(t, e, 304, "GET", path, r.viewer.Token, nil, "If-None-Match", etag)
	callProblem(t, e, 416, "range-not-satisfiable", "GET", path, r.viewer.Token, nil, "Range", fmt.Sprintf("bytes=%d-", len(data)+1))
	// An escaped "/" names the same path.
	if res = call(t, e, 200, "GET", r.base+"/model%2Fweights.bin", r.viewer.Token, nil); !bytes.Equal(res.Body, data) {
		t.Fatal("model%2Fweights.bin is not model/weights.bin")
	}

	// Refusals record nothing and store nothing.
	blobs := func() int {
		n := 0
		if err := e.P.Blobs.Walk(t.Context(), func(artifacts.Digest, int64, time.Time) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	seq, stored := lastSeq(), blobs()
	other := randomBytes(8, 1000)
	callProblem(t, e, 422, "digest-mismatch", "PUT", r.base+"/x.bin", r.editor.Token, other, octets("Content-Digest", contentDigest(data))...)
	for _, bad := range []string{"/..", "/a/../b", "/%2E%2E/x", "/a//b", "/%2Fetc%2Fpasswd", "/a%5Cb"} {
		callProblem(t, e, 400, "validation-failed", "PUT", r.base+bad, r.editor.Token, other, octets()...)
	}
	callProblem(t, e, 403, "forbidden", "PUT", r.base+"/x.bin", r.viewer.Token, other, octets()...)
	callProblem(t, e, 404, "not-found", "PUT", r.base+"/x.bin", r.outsider.Token, other, octets()...)
	callProblem(t, e, 404, "not-found", "PUT", r.pp+"/runs/00000000-0000-4000-8000-000000000000/artifacts/x.bin", r.editor.Token, other, octets()...)
	call(t, e, 401, "PUT", r.base+"/x.bin", "", other, octets()...)
	if lastSeq() != seq || blobs() != stored {
		t.Fatalf("refused uploads left events (%d → %d) or blobs (%d → %d)", seq, lastSeq(), stored, blobs())
	}
	callProblem(t, e, 404, "not-found", "GET", r.base+"/x.bin", r.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", path, r.outsider.Token, nil)
	call(t, e, 404, "HEAD", r.pp+"/runs/not-a-run/artifacts/model/weights.bin", r.viewer.Token, nil)

	// Lists: every file, paged; one directory, MLflow's way.
	for _, p := range []string{"model/MLmodel", "model/data/a.npy", "eval.json", "model.txt"} {
		call(t, e, 201, "PUT", r.base+"/"+p, r.editor.Token, []byte(p), octets()...)
	}
	wantFiles := []string{"eval.json", "model.txt", "model/MLmodel", "model/data/a.npy", "model/weights.bin"}
	if got := r.files(t, ""); !slices.Equal(got, wantFiles) {
		t.Fatalf("files = %v, want %v", got, wantFiles)
	}
	page := asJSON[api.ArtifactList](t, call(t, e, 200, "GET", r.base+"?max_results=2", r.viewer.Token, nil))
	if len(page.Items) != 2 || page.NextPageToken == "" {
		t.Fatalf("first page: %+v", page)
	}
	if got := r.files(t, "?max_results=200&page_token="+url.QueryEscape(page.NextPageToken)); !slices.Equal(got, wantFiles[2:]) {
		t.Fatalf("second page = %v", got)
	}
	for dir, want := range map[string][]string{
		"":       {"eval.json (9)", "model.txt (9)", "model/"},
		"/":      {"eval.json (9)", "model.txt (9)", "model/"},
		"model":  {"model/MLmodel (13)", "model/data/", fmt.Sprintf("model/weights.bin (%d)", len(data))},
		"model/": {"model/MLmodel (13)", "model/data/", fmt.Sprintf("model/weights.bin (%d)", len(data))},
		"nope":   nil,
	} {
		if got := r.dir(t, dir); !slices.Equal(got, want) {
			t.Errorf("directory %q = %v, want %v", dir, got, want)
		}
	}
	dp := asJSON[api.ArtifactDirectory](t, call(t, e, 200, "GET", r.base+"?path=model&max_results=1", r.viewer.Token, nil))
	if len(dp.Files) != 1 || dp.NextPageToken == "" {
		t.Fatalf("a directory's first page: %+v", dp)
	}
	for _, bad := range []string{"..", "a/../b", "/etc", "a//b"} {
		callProblem(t, e, 400, "validation-failed", "GET", r.base+"?path="+url.QueryEscape(bad), r.viewer.Token, nil)
	}
	callProblem(t, e, 400, "invalid-page-token", "GET", r.base+"?page_token=nope", r.viewer.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", r.base, r.outsider.Token, nil)

	// A deleted run refuses uploads, and its artifacts stay readable.
	call(t, e, 204, "DELETE", r.pp+"/runs/"+r.run.ID, r.editor.Token, nil)
	seq, stored = lastSeq(), blobs()
	callProblem(t, e, 409, "run-deleted", "PUT", r.base+"/late.bin", r.editor.Token, randomBytes(9, 100), octets()...)
	if lastSeq() != seq || blobs() != stored {
		t.Fatal("an upload to a deleted run left an event or a blob")
	}
	call(t, e, 200, "GET", path, r.viewer.Token, nil)
	if got := r.files(t, ""); !slices.Equal(got, wantFiles) {
		t.Fatalf("files of the deleted run = %v", got)
	}
	call(t, e, 200, "POST", r.pp+"/runs/"+r.run.ID+":restore", r.editor.Token, nil)
	call(t, e, 201, "PUT", r.base+"/late.bin", r.editor.Token, randomBytes(9, 100), octets()...)

	// An archived project takes none either.
	call(t, e, 200, "DELETE", r.pp, r.admin, nil)
	callProblem(t, e, 409, "project-archived", "PUT", r.base+"/archived.bin", r.editor.Token, other, octets()...)
	call(t, e, 200, "POST", r.pp+":restore", r.admin, nil)

	// The run's read names its artifacts' place.
	if run := asJSON[projections.Run](t, call(t, e, 200, "GET", r.pp+"/runs/"+r.run.ID, r.viewer.Token, nil)); run.ArtifactURI != r.run.ArtifactURI {
		t.Fatalf("read artifact_uri = %q, created %q", run.ArtifactURI, r.run.ArtifactURI)
	}
}

func TestModelVersionLineage(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@lineage.test").AccessToken
	r := startRunEnv(t, e, admin, "lineage")
	theirs := startRunEnv(t, e, admin, "lineage-other")
	call(t, e, 201, "POST", r.pp+"/models", r.editor.Token, map[string]any{"name": "clf"})
	call(t, e, 201, "POST", r.pp+"/models", r.editor.Token, map[string]any{"name": "Alpha"})
	versions := r.pp + "/models/clf/versions"
	register := func(status int, path string, body map[string]any) api.VersionResponse {
		t.Helper()
		res := call(t, e, status, "POST", path, r.editor.Token, body)
		if status != 201 {
			return api.VersionResponse{}
		}
		return asJSON[api.VersionResponse](t, res)
	}
	lineageIn := func(env *runEnv, run string) []projections.RunModelVersion {
		t.Helper()
		return asJSON[projections.Run](t, call(t, e, 200, "GET", env.pp+"/runs/"+run, env.viewer.Token, nil)).ModelVersions
	}
	lineage := func(run string) []projections.RunModelVersion { return lineageIn(r, run) }
	id := r.run.ID

	// From the project's own run, by run_id: both directions.
	if v := register(201, versions, map[string]any{"source": "s3://bucket/model", "run_id": id}); v.RunID != id || v.Version != 1 {
		t.Fatalf("version 1 names run %q", v.RunID)
	}
	if got := lineage(id); !slices.Equal(got, []projections.RunModelVersion{{Model: "clf", Version: 1}}) {
		t.Fatalf("run's model_versions = %+v", got)
	}
	// From a runs:/ source (MLflow's), without and with run_id; MLflow's
	// 32-hex-digit id names the same run, stored hyphenated.
	if v := register(201, versions, map[string]any{"source": "runs:/" + id + "/model"}); v.RunID != id || v.Source != "runs:/"+id+"/model" {
		t.Fatalf("version from runs:/: %+v", v)
	}
	hex := strings.ReplaceAll(id, "-", "")
	if v := register(201, r.pp+"/models/Alpha/versions", map[string]any{"source": "runs:/" + hex + "/m", "run_id": strings.ToUpper(id)}); v.RunID != id {
		t.Fatalf("version from runs:/<hex>: %+v", v)
	}
	want := []projections.RunModelVersion{{Model: "Alpha", Version: 1}, {Model: "clf", Version: 1}, {Model: "clf", Version: 2}}
	if got := lineage(id); !slices.Equal(got, want) {
		t.Fatalf("run's model_versions = %+v, want %+v", got, want)
	}
	// A run in another project, a missing run and an id that is no uuid
	// get the same answer.
	for _, body := range []map[string]any{
		{"run_id": theirs.run.ID},
		{"source": "runs:/" + theirs.run.ID + "/model"},
		{"run_id": "00000000-0000-4000-8000-000000000000"},
		{"run_id": "run-1"},
		{"source": "runs:/not-a-run/model"},
	} {
		p := callProblemBody(t, e, 400, "validation-failed", "POST", versions, r.editor.Token, body)
		if p.Detail != "run_id: no such run in this project" {
			t.Errorf("%v: detail %q", body, p.Detail)
		}
	}
	callProblem(t, e, 400, "validation-failed", "POST", versions, r.editor.Token, map[string]any{"source": "runs:/" + id + "/m", "run_id": r.newRun(t).ID})
	callProblem(t, e, 400, "validation-failed", "POST", versions, r.editor.Token, map[string]any{"source": "runs:/" + id + "/../x"})
	callProblem(t, e, 400, "validation-failed", "POST", versions, r.editor.Token, map[string]any{"source": "runs://x"})
	if got := lineageIn(theirs, theirs.run.ID); len(got) != 0 {
		t.Fatalf("the foreign run lists %+v", got)
	}
	// A deleted run may still be named (as in MLflow: it is readable and
	// restorable, and lineage says what made the model).
	gone := r.newRun(t)
	call(t, e, 204, "DELETE", r.pp+"/runs/"+gone.ID, r.editor.Token, nil)
	if v := register(201, versions, map[string]any{"run_id": gone.ID}); v.RunID != gone.ID {
		t.Fatalf("version from a deleted run: %+v", v)
	}
	// A deleted version leaves the run's list; the version still names it.
	call(t, e, 200, "DELETE", versions+"/2", r.editor.Token, nil)
	want = []projections.RunModelVersion{{Model: "Alpha", Version: 1}, {Model: "clf", Version: 1}}
	if got := lineage(id); !slices.Equal(got, want) {
		t.Fatalf("after deleting clf v2: %+v, want %+v", got, want)
	}
	// Lists of runs carry it too.
	runs := asJSON[api.RunPage](t, call(t, e, 200, "GET", r.pp+"/experiments/"+r.experiment+"/runs?view=all", r.viewer.Token, nil))
	found := false
	for _, run := range runs.Items {
		if run.ID == id {
			found = slices.Equal(run.ModelVersions, want)
		}
	}
	if !found {
		t.Fatalf("the run list does not carry the lineage: %+v", runs.Items)
	}
}

// walkRunArtifacts exercises the run artifact routes' success and main
// errors for TestOpenAPIConformance (the Observe of e validates each
// exchange against the document).
func walkRunArtifacts(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	r := startRunEnv(t, e, admin, "run-artifacts-walk")
	w := artifactWalk{t: t, e: e, base: r.base, editor: r.editor.Token, viewer: r.viewer.Token, outsider: r.outsider.Token}

	add("putRunArtifact", w.puts()...)
	doomed := r.newRun(t)
	call(t, e, 204, "DELETE", r.pp+"/runs/"+doomed.ID, r.editor.Token, nil)
	callProblem(t, e, 409, "run-deleted", "PUT", r.pp+"/runs/"+doomed.ID+"/artifacts/x", r.editor.Token, []byte("late"), octets()...)
	add("putRunArtifact", 409)

	if l := asJSON[api.ArtifactList](t, call(t, e, 200, "GET", r.base, r.viewer.Token, nil)); len(l.Items) != 3 {
		t.Fatalf("run artifacts: %+v", l)
	}
	if d := asJSON[api.ArtifactDirectory](t, call(t, e, 200, "GET", r.base+"?path=nested", r.viewer.Token, nil)); len(d.Files) != 1 || !d.Files[0].IsDir {
		t.Fatalf("nested: %+v", d)
	}
	callProblem(t, e, 400, "validation-failed", "GET", r.base+"?path=..", r.viewer.Token, nil)
	call(t, e, 401, "GET", r.base, "", nil)
	callProblem(t, e, 404, "not-found", "GET", r.base, r.outsider.Token, nil)
	add("listRunArtifacts", 200, 400, 401, 404)

	add("getRunArtifact", w.gets()...)
	add("headRunArtifact", w.heads()...)
	return want
}
