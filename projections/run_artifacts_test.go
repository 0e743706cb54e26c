package projections

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
)

// A run's artifacts (the runs projection) listed whole, one directory at a
// time, one by one, within the run's project only; the model versions made
// from a run (the models projection) on the run's read; both as a rebuild
// gives them again.
func TestRunArtifactsAndLineage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testCtx(t)
	q := NewQueries(f.pool)
	pid, other, xid, rid, foreign := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	rSubj := events.Subject(events.AggRun, rid)
	digest := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	art := func(path, d string, size int64) [3]any {
		return [3]any{rSubj, events.RunArtifactRecorded, events.RunArtifactRecordedData{RunID: rid, Path: path, Digest: digest(d), Size: size,
			ContentType: "application/octet-stream"}}
	}
	f.append(t, base, [3]any{rSubj, events.RunCreated, events.RunCreatedData{RunID: rid, ExperimentID: xid, ProjectID: pid, Name: "r",
		UserID: uuid.NewString(), StartTime: 1}})
	f.append(t, base, [3]any{events.Subject(events.AggRun, foreign), events.RunCreated, events.RunCreatedData{RunID: foreign,
		ExperimentID: uuid.NewString(), ProjectID: other, Name: "f", UserID: uuid.NewString(), StartTime: 1}})
	f.append(t, base, art("model/MLmodel", "a", 10), art("model/data/weights.bin", "b", 20), art("model.txt", "c", 30),
		art("model", "d", 40), art("eval.json", "e", 50), art("ümlaut/x", "f", 60))
	replaced := base.Add(time.Minute)
	f.append(t, replaced, art("model/data/weights.bin", "9", 21)) // new bytes replace the path

	// Versions made from the run, one deleted, one of a deleted model, one
	// of another project's model naming it (the write side refuses that;
	// an old event might) and one naming no run.
	version := func(model, project, name string, v int, run string) {
		mSubj := events.Subject(events.AggModel, model)
		if v == 1 {
			f.append(t, base, [3]any{mSubj, events.ModelCreated, events.ModelCreatedData{ModelID: model, ProjectID: project, Name: name}})
		}
		f.append(t, base, [3]any{mSubj, events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: model, Version: v, RunID: run}})
	}
	beta, alpha, gone, theirs := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	version(beta, pid, "beta", 1, rid)
	version(alpha, pid, "Alpha", 1, "")
	version(alpha, pid, "Alpha", 2, rid)
	version(alpha, pid, "Alpha", 3, rid)
	version(alpha, pid, "Alpha", 4, rid)
	f.append(t, base, [3]any{events.Subject(events.AggModel, alpha), events.ModelVersionDeleted, events.ModelVersionDeletedData{ModelID: alpha, Version: 3}})
	version(gone, pid, "gone", 1, rid)
	f.append(t, base, [3]any{events.Subject(events.AggModel, gone), events.ModelDeleted, events.ModelLifecycleData{ModelID: gone, ProjectID: pid}})
	version(theirs, other, "theirs", 1, rid)
	lastSeq := f.lastSeq(t)
	names := []string{Runs{}.Name(), Models{}.Name()}
	for _, p := range []Projection{Runs{}, Models{}} {
		start(t, NewRunner(f.pool, f.store, p, testRunnerConfig()))
	}
	waitCaughtUp(t, f.pool, lastSeq, names...)

	paths := func(items []ArtifactEntry) []string {
		var out []string
		for _, a := range items {
			p := a.Path
			if a.IsDir {
				p += "/"
			}
			out = append(out, p)
		}
		return out
	}
	// onePerPage walks a list page by page (pages of one) to its end.
	onePerPage := func(list func(token string) (Page[ArtifactEntry], error)) []string {
		t.Helper()
		var out []string
		for token := ""; ; {
			page, err := list(token)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, paths(page.Items)...)
			if token = page.NextPageToken; token == "" {
				return out
			}
		}
	}
	check := func() {
		t.Helper()
		// Every file, in bytewise path order, one page or one by one.
		all, err := q.ListRunArtifacts(ctx, pid, rid, "", 50)
		want := []string{"eval.json", "model", "model.txt", "model/MLmodel", "model/data/weights.bin", "ümlaut/x"}
		if err != nil || !slices.Equal(paths(all.Items), want) || all.NextPageToken != "" {
			t.Fatalf("ListRunArtifacts = %v (%v), want %v", paths(all.Items), err, want)
		}
		walked := onePerPage(func(token string) (Page[ArtifactEntry], error) { return q.ListRunArtifacts(ctx, pid, rid, token, 1) })
		if !slices.Equal(walked, want) {
			t.Fatalf("ListRunArtifacts one by one = %v, want %v", walked, want)
		}
		if w := all.Items[4]; w.Digest != digest("9") || w.Size != 21 || !w.RecordedAt.Equal(replaced) || w.IsDir {
			t.Fatalf("replaced artifact = %+v", w)
		}
		if pg, err := q.ListRunArtifacts(ctx, other, rid, "", 50); err != nil || len(pg.Items) != 0 {
			t.Fatalf("the run's artifacts under another project: %+v, %v", pg, err)
		}

		// Directories, MLflow's way: one level, directories made up.
		for dir, want := range map[string][]string{
			"":           {"eval.json", "model", "model.txt", "model/", "ümlaut/"},
			"model":      {"model/MLmodel", "model/data/"},
			"model/data": {"model/data/weights.bin"},
			"ümlaut":     {"ümlaut/x"},
			"eval.json":  nil, // a file lists nothing
			"nope":       nil,
			"mod":        nil, // a prefix of names is no directory
		} {
			got, err := q.RunArtifactDir(ctx, pid, rid, dir)
			if err != nil || !slices.Equal(paths(got), want) {
				t.Fatalf("RunArtifactDir(%q) = %v (%v), want %v", dir, paths(got), err, want)
			}
			walked := onePerPage(func(token string) (Page[ArtifactEntry], error) {
				return q.RunArtifactDirPage(ctx, pid, rid, dir, token, 1)
			})
			if !slices.Equal(walked, want) {
				t.Fatalf("RunArtifactDirPage(%q) one by one = %v, want %v", dir, walked, want)
			}
		}
		root, _ := q.RunArtifactDir(ctx, pid, rid, "")
		if f := root[0]; f.Digest != digest("e") || f.Size != 50 || f.ContentType != "application/octet-stream" {
			t.Fatalf("file entry = %+v", f)
		}
		if d := root[3]; d.Digest != "" || d.Size != 0 || !d.RecordedAt.Equal(replaced) {
			t.Fatalf("directory entry = %+v (want its latest record's time)", d)
		}
		if got, err := q.RunArtifactDir(ctx, other, rid, ""); err != nil || len(got) != 0 {
			t.Fatalf("a directory of the run under another project: %v, %v", got, err)
		}

		if a, err := q.RunArtifact(ctx, pid, rid, "model/data/weights.bin"); err != nil || a.Digest != digest("9") || a.Size != 21 {
			t.Fatalf("RunArtifact = %+v, %v", a, err)
		}
		for _, c := range []struct{ project, run, path string }{{pid, rid, "model/data"}, {other, rid, "model.txt"}, {pid, foreign, "model.txt"}, {pid, "x", "model.txt"}} {
			if _, err := q.RunArtifact(ctx, c.project, c.run, c.path); !errors.Is(err, ErrNotFound) {
				t.Fatalf("RunArtifact(%v): %v, want ErrNotFound", c, err)
			}
		}

		// The run's read: where its artifacts are, and the live versions of
		// its project's live models made from it, by name.
		run, err := q.Run(ctx, pid, rid)
		if err != nil {
			t.Fatal(err)
		}
		if run.ArtifactURI != "/api/v1/projects/"+pid+"/runs/"+rid+"/artifacts" {
			t.Fatalf("artifact_uri = %q", run.ArtifactURI)
		}
		wantMV := []RunModelVersion{{"Alpha", 2}, {"Alpha", 4}, {"beta", 1}}
		if !slices.Equal(run.ModelVersions, wantMV) {
			t.Fatalf("model_versions = %+v, want %+v", run.ModelVersions, wantMV)
		}
		if f, err := q.Run(ctx, other, foreign); err != nil || f.ModelVersions != nil {
			t.Fatalf("a run no version names: %+v, %v", f, err)
		}
		refs, err := q.ReferencedDigests(ctx, lastSeq)
		if err != nil {
			t.Fatal(err)
		}
		for d, w := range map[string]bool{digest("a"): true, digest("9"): true, digest("b"): false} {
			if refs[d] != w {
				t.Fatalf("ReferencedDigests[%s] = %v, want %v", d, refs[d], w)
			}
		}
	}
	check()

	// Rebuild: the same rows, the same answers.
	before := dumpOrdered(t, f.pool, "run_artifacts", "run_id, path")
	if err := Reset(ctx, f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, f.pool, lastSeq, names...)
	sameDump(t, map[string][]string{"run_artifacts": dumpOrdered(t, f.pool, "run_artifacts", "run_id, path")},
		map[string][]string{"run_artifacts": before})
	check()
	if len(before) != 6 {
		t.Fatalf("run_artifacts has %d rows: %s", len(before), fmt.Sprint(before))
	}
}

// A run read's lineage reaches model_versions and runs through their
// indexes in every plan, generic ones too (pgx prepares statements, and
// PostgreSQL switches a prepared statement to a generic plan): before, each
// run read scanned the whole runs table (r.id::text = v.run_id cannot use
// its primary key), and a generic plan could not use the partial index
// model_versions_run. With sequential scans disabled the planner still
// takes one where it has no index to use, so the plan shows it.
func TestRunLineageUsesIndexes(t *testing.T) {
	t.Parallel()
	pool := newDB(t)
	ctx := testCtx(t)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET enable_seqscan = off"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "PREPARE lineage(text[]) AS "+runModelVersionsSQL); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "EXPLAIN EXECUTE lineage('{"+uuid.NewString()+","+uuid.NewString()+"}')")
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	for _, index := range []string{"runs_pkey", "model_versions_run"} {
		if !strings.Contains(text, index) {
			t.Errorf("the lineage query does not use %s:\n%s", index, text)
		}
	}
}
