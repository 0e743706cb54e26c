package projections

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/jobs"
)

// jobsFixture appends job events to a real store and runs the jobs
// projection over them.
type jobsFixture struct {
	f *fixture
	q *Queries
}

func newJobsFixture(t *testing.T) *jobsFixture {
	t.Helper()
	f := newFixture(t)
	start(t, NewRunner(f.pool, f.store, Jobs{}, testRunnerConfig()))
	return &jobsFixture{f: f, q: NewQueries(f.pool)}
}

// submit appends a job's submission at time at.
func (jf *jobsFixture) submit(t *testing.T, at time.Time, d events.JobSubmittedData) string {
	t.Helper()
	if d.JobID == "" {
		d.JobID = uuid.NewString()
	}
	if d.RunID == "" {
		d.RunID = uuid.NewString()
	}
	if d.Command == nil {
		d.Command = []string{"python", "train.py"}
	}
	if d.Name == "" {
		d.Name = "train.py"
	}
	if d.TimeoutMS == 0 {
		d.TimeoutMS = jobs.DefaultTimeout.Milliseconds()
	}
	d.SubmittedBy = "00000000-0000-4000-8000-0000000000aa"
	jf.f.append(t, at, [3]any{events.Subject(events.AggJob, d.JobID), events.JobSubmitted, d})
	return d.JobID
}

// event appends one batch of a job's events at time at.
func (jf *jobsFixture) event(t *testing.T, at time.Time, id string, typesAndData ...any) uint64 {
	t.Helper()
	var changes [][3]any
	for i := 0; i < len(typesAndData); i += 2 {
		changes = append(changes, [3]any{events.Subject(events.AggJob, id), typesAndData[i], typesAndData[i+1]})
	}
	return jf.f.append(t, at, changes...)
}

func (jf *jobsFixture) sync(t *testing.T) {
	t.Helper()
	waitCaughtUp(t, jf.f.pool, jf.f.lastSeq(t), Jobs{}.Name())
}

// fold is the write side's picture of a job: its events folded by
// handlers/jobs Evolve.
func (jf *jobsFixture) fold(t *testing.T, id string) jobs.State {
	t.Helper()
	var s jobs.State
	subject := events.Subject(events.AggJob, id)
	for _, e := range jf.f.allEvents(t) {
		if e.Subject != subject {
			continue
		}
		var err error
		if s, err = jobs.Evolve(s, e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.Truncate(time.Microsecond)
	return &t
}

// sameAsFold checks that the read model's job is the write side's picture
// of it (times to the microsecond the table keeps).
func sameAsFold(t *testing.T, got Job, s jobs.State) {
	t.Helper()
	var attempts []JobAttempt
	for _, a := range s.Attempts {
		attempts = append(attempts, JobAttempt{Number: a.Number, RunnerID: a.RunnerID, Executor: a.Executor, StartedAt: *timePtr(a.StartedAt),
			EndedAt: timePtr(a.EndedAt), Outcome: a.Outcome, ExitCode: a.ExitCode, Reason: a.Reason})
	}
	var startedAt *time.Time
	if len(attempts) > 0 {
		startedAt = &attempts[0].StartedAt
	}
	want := Job{ID: s.Spec.JobID, ProjectID: s.Spec.ProjectID, ExperimentID: s.Spec.ExperimentID, RunID: s.Spec.RunID, Name: s.Spec.Name,
		State: s.State, Command: s.Spec.Command, Params: nonNil(s.Spec.Params), Env: nonNil(s.Spec.Env), WorkingDir: s.Spec.WorkingDir,
		Image: s.Spec.Image, Resources: s.Spec.Resources, TimeoutSeconds: s.Timeout().Seconds(), MaxRetries: s.Spec.MaxRetries,
		RetryOnFailure: s.Spec.RetryOnFailure, SubmittedBy: s.Spec.SubmittedBy, SubmittedAt: *timePtr(s.SubmittedAt), StartedAt: startedAt,
		EndedAt: timePtr(s.EndedAt), UpdatedAt: *timePtr(s.UpdatedAt), Reason: s.Reason, ExitCode: s.ExitCode,
		CancelRequested: s.CancelRequested, Attempts: cmpOrEmpty(attempts), Artifact: s.Spec.Artifact}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("job %s differs from the write side's fold:\n got  %s\n want %s", s.ID(), g, w)
	}
}

func cmpOrEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func exit(n int) *int { return &n }

// listIDs pages through ListJobs with pages of size and returns the ids.
func (jf *jobsFixture) listIDs(t *testing.T, project string, f JobFilter, size int) []string {
	t.Helper()
	ids := []string{}
	token := ""
	for range 100 {
		page, err := jf.q.ListJobs(testCtx(t), project, f, token, size)
		if err != nil {
			t.Fatalf("ListJobs(%+v): %v", f, err)
		}
		if len(page.Items) > size || (page.NextPageToken != "" && len(page.Items) != size) {
			t.Fatalf("ListJobs(%+v, %d): %d items, token %q", f, size, len(page.Items), page.NextPageToken)
		}
		for _, j := range page.Items {
			ids = append(ids, j.ID)
		}
		if token = page.NextPageToken; token == "" {
			return ids
		}
	}
	t.Fatal("ListJobs never ends")
	return nil
}

// The life of jobs through the real store and runner: a job whose first
// attempt is lost and whose retry succeeds, one cancelled while queued, a
// running one, queued ones (one of another project). The rows are the write
// side's fold, the lists filter and page newest first, the counts add up,
// and a rebuild (and a build one event per batch) gives the same rows.
func TestJobsProjection(t *testing.T) {
	t.Parallel()
	jf := newJobsFixture(t)
	ctx := testCtx(t)
	project, other := uuid.NewString(), uuid.NewString()
	x1, x2 := uuid.NewString(), uuid.NewString()
	at := base.Add(123456789 * time.Nanosecond) // sub-microsecond: the table keeps microseconds

	// A: lost, requeued, succeeded on the retry.
	a := jf.submit(t, at, events.JobSubmittedData{ProjectID: project, ExperimentID: x1, Name: "train",
		Command: []string{"python", "train.py", "--epochs", "3"}, Params: map[string]string{"lr": "0.1"},
		Env: map[string]string{"MODE": "fast", "HF_TOKEN": "secret://hf"}, WorkingDir: "src", Image: "python:3.12",
		Resources: events.JobResources{CPU: "2", Memory: "4Gi"}, TimeoutMS: 90_500, MaxRetries: 2, RetryOnFailure: true,
		Artifact: &events.JobArtifact{RunID: uuid.NewString(), Path: "code.tar.gz", Digest: "sha256:" + strings.Repeat("a", 64), Size: 42}})
	token1, token2 := uuid.NewString(), uuid.NewString()
	jf.event(t, at.Add(time.Minute), a, events.JobAttemptStarted,
		events.JobAttemptStartedData{JobID: a, Attempt: 1, RunnerID: "runner-1", Executor: "local", TokenID: token1})
	jf.event(t, at.Add(2*time.Minute), a,
		events.JobAttemptEnded, events.JobAttemptEndedData{JobID: a, Attempt: 1, Outcome: events.OutcomeLost, Reason: "lease expired"},
		events.JobRequeued, events.JobRequeuedData{JobID: a, Attempt: 2, Reason: "attempt 1 lease expired"})
	jf.event(t, at.Add(3*time.Minute), a, events.JobAttemptStarted,
		events.JobAttemptStartedData{JobID: a, Attempt: 2, RunnerID: "runner-2", Executor: "kubernetes", TokenID: token2})
	jf.event(t, at.Add(4*time.Minute), a,
		events.JobAttemptEnded, events.JobAttemptEndedData{JobID: a, Attempt: 2, Outcome: events.OutcomeSucceeded, ExitCode: exit(0)},
		events.JobEnded, events.JobEndedData{JobID: a, State: events.JobSucceeded, ExitCode: exit(0)})

	// B: cancelled while queued (DecideCancel's two events).
	b := jf.submit(t, at.Add(10*time.Minute), events.JobSubmittedData{ProjectID: project, ExperimentID: x2})
	jf.event(t, at.Add(11*time.Minute), b, events.JobCancelRequested, events.JobCancelRequestedData{JobID: b},
		events.JobEnded, events.JobEndedData{JobID: b, State: events.JobCancelled, Reason: "cancelled before it started"})

	// C running, D queued, submitted at the same time (the id breaks the
	// tie); E queued in another project.
	c := jf.submit(t, at.Add(20*time.Minute), events.JobSubmittedData{ProjectID: project, ExperimentID: x1})
	d := jf.submit(t, at.Add(20*time.Minute), events.JobSubmittedData{ProjectID: project, ExperimentID: x1})
	jf.event(t, at.Add(21*time.Minute), c, events.JobAttemptStarted,
		events.JobAttemptStartedData{JobID: c, Attempt: 1, RunnerID: "runner-1", Executor: "local", TokenID: uuid.NewString()})
	e := jf.submit(t, at.Add(30*time.Minute), events.JobSubmittedData{ProjectID: other, ExperimentID: uuid.NewString()})
	jf.sync(t)

	// A's row, spelled out.
	got, err := jf.q.Job(ctx, project, a)
	if err != nil {
		t.Fatal(err)
	}
	ms := func(d time.Duration) time.Time { return at.Add(d).Truncate(time.Microsecond) }
	if got.State != events.JobSucceeded || got.ExitCode == nil || *got.ExitCode != 0 || got.Reason != "" || got.CancelRequested ||
		got.StartedAt == nil || !got.StartedAt.Equal(ms(time.Minute)) || got.EndedAt == nil || !got.EndedAt.Equal(ms(4*time.Minute)) ||
		!got.SubmittedAt.Equal(ms(0)) || !got.UpdatedAt.Equal(ms(4*time.Minute)) || got.TimeoutSeconds != 90.5 {
		t.Fatalf("job A: %+v", got)
	}
	if len(got.Attempts) != 2 {
		t.Fatalf("job A attempts: %+v", got.Attempts)
	}
	a1, a2 := got.Attempts[0], got.Attempts[1]
	if a1.Number != 1 || a1.RunnerID != "runner-1" || a1.Executor != "local" || a1.Outcome != events.OutcomeLost || a1.ExitCode != nil ||
		a1.Reason != "lease expired" || !a1.StartedAt.Equal(ms(time.Minute)) || a1.EndedAt == nil || !a1.EndedAt.Equal(ms(2*time.Minute)) {
		t.Fatalf("job A attempt 1: %+v", a1)
	}
	if a2.Number != 2 || a2.RunnerID != "runner-2" || a2.Executor != "kubernetes" || a2.Outcome != events.OutcomeSucceeded ||
		a2.ExitCode == nil || *a2.ExitCode != 0 || a2.EndedAt == nil || !a2.EndedAt.Equal(ms(4*time.Minute)) {
		t.Fatalf("job A attempt 2: %+v", a2)
	}
	if got.Env["HF_TOKEN"] != "secret://hf" || got.Params["lr"] != "0.1" || got.Artifact == nil || got.Artifact.Size != 42 ||
		got.Resources.Memory != "4Gi" || !slices.Equal(got.Command, []string{"python", "train.py", "--epochs", "3"}) {
		t.Fatalf("job A spec: %+v", got)
	}
	// The attempts' tokens are nowhere in the read model.
	raw, _ := json.Marshal(got)
	var leaks int
	if err := jf.f.pool.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE row_to_json(jobs)::text LIKE '%token_id%' OR row_to_json(jobs)::text LIKE $1 OR row_to_json(jobs)::text LIKE $2",
		"%"+token1+"%", "%"+token2+"%").Scan(&leaks); err != nil {
		t.Fatal(err)
	}
	if leaks != 0 || strings.Contains(string(raw), token1) || strings.Contains(string(raw), "token_id") {
		t.Fatalf("an attempt's token id is in the read model: %s", raw)
	}

	// B: cancelled while queued, no attempt, never started.
	gotB, err := jf.q.Job(ctx, project, b)
	if err != nil {
		t.Fatal(err)
	}
	if gotB.State != events.JobCancelled || !gotB.CancelRequested || len(gotB.Attempts) != 0 || gotB.StartedAt != nil ||
		gotB.EndedAt == nil || !gotB.EndedAt.Equal(ms(11*time.Minute)) || gotB.Reason != "cancelled before it started" || gotB.ExitCode != nil {
		t.Fatalf("job B: %+v", gotB)
	}

	// Every job is the write side's picture of it.
	for _, id := range []string{a, b, c, d} {
		j, err := jf.q.Job(ctx, project, id)
		if err != nil {
			t.Fatal(err)
		}
		sameAsFold(t, j, jf.fold(t, id))
	}
	if j, err := jf.q.Job(ctx, other, e); err != nil {
		t.Fatal(err)
	} else {
		sameAsFold(t, j, jf.fold(t, e))
	}

	// Not found: another project's job, an unknown id, a malformed one.
	for _, id := range []string{e, uuid.NewString(), "not-a-uuid", ""} {
		if _, err := jf.q.Job(ctx, project, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Job(%q) = %v, want ErrNotFound", id, err)
		}
	}

	// Lists: newest first, C and D tied on time and ordered by id.
	cd := []string{c, d}
	slices.Sort(cd)
	slices.Reverse(cd)
	all := append(slices.Clone(cd), b, a)
	for _, size := range []int{1, 2, 3, 4, 50} {
		if ids := jf.listIDs(t, project, JobFilter{}, size); !slices.Equal(ids, all) {
			t.Fatalf("pages of %d: %v, want %v", size, ids, all)
		}
	}
	for _, tc := range []struct {
		f    JobFilter
		want []string
	}{
		{JobFilter{State: events.JobQueued}, []string{d}},
		{JobFilter{State: events.JobRunning}, []string{c}},
		{JobFilter{State: events.JobSucceeded}, []string{a}},
		{JobFilter{State: events.JobCancelled}, []string{b}},
		{JobFilter{State: events.JobFailed}, []string{}},
		{JobFilter{ExperimentID: x1}, append(slices.Clone(cd), a)},
		{JobFilter{ExperimentID: x2}, []string{b}},
		{JobFilter{ExperimentID: x1, State: events.JobQueued}, []string{d}},
		{JobFilter{ExperimentID: x2, State: events.JobQueued}, []string{}},
		{JobFilter{ExperimentID: uuid.NewString()}, []string{}},
	} {
		for _, size := range []int{1, 10} {
			if ids := jf.listIDs(t, project, tc.f, size); !slices.Equal(ids, tc.want) {
				t.Fatalf("ListJobs(%+v) pages of %d: %v, want %v", tc.f, size, ids, tc.want)
			}
		}
	}
	if ids := jf.listIDs(t, other, JobFilter{}, 10); !slices.Equal(ids, []string{e}) {
		t.Fatalf("the other project's jobs: %v", ids)
	}

	// Refusals: a state that is none, a malformed experiment id, a page
	// size of 0 (400s), a forged or foreign token.
	for _, f := range []JobFilter{{State: "done"}, {State: "QUEUED"}, {ExperimentID: "x1"}} {
		if _, err := jf.q.ListJobs(ctx, project, f, "", 10); !errors.Is(err, ErrInvalidSearch) {
			t.Fatalf("ListJobs(%+v) = %v, want ErrInvalidSearch", f, err)
		}
	}
	if _, err := jf.q.ListJobs(ctx, project, JobFilter{}, "", 0); !errors.Is(err, ErrInvalidSearch) {
		t.Fatalf("ListJobs with limit 0 = %v, want ErrInvalidSearch", err)
	}
	for _, tok := range []string{"garbage!", rawToken(`{"s":1}`), rawToken(`{"i":"` + a + `"}`), rawToken(`{"k":"x","i":"` + a + `"}`),
		rawToken(`{"s":-5,"i":"` + a + `"}`)} {
		if _, err := jf.q.ListJobs(ctx, project, JobFilter{}, tok, 10); !errors.Is(err, ErrBadPageToken) {
			t.Fatalf("ListJobs with token %q = %v, want ErrBadPageToken", tok, err)
		}
	}

	// Counts across projects.
	counts, err := jf.q.JobCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := map[string]int64{"queued": 2, "running": 1, "succeeded": 1, "failed": 0, "cancelled": 1, "timed_out": 0}
	if !maps.Equal(counts, wantCounts) {
		t.Fatalf("JobCounts = %v, want %v", counts, wantCounts)
	}

	// The same rows after a rebuild, and built one event per batch.
	before := dumpOrdered(t, jf.f.pool, "jobs", "id")
	if len(before) != 5 {
		t.Fatalf("%d job rows, want 5", len(before))
	}
	ref := newDB(t)
	one := testRunnerConfig()
	one.BatchSize = 1
	start(t, NewRunner(ref, jf.f.store, Jobs{}, one))
	last := jf.f.lastSeq(t)
	waitCaughtUp(t, ref, last, Jobs{}.Name())
	sameDump(t, map[string][]string{"jobs": dumpOrdered(t, ref, "jobs", "id")}, map[string][]string{"jobs": before})
	if err := Reset(ctx, jf.f.pool); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, jf.f.pool, last, Jobs{}.Name())
	sameDump(t, map[string][]string{"jobs": dumpOrdered(t, jf.f.pool, "jobs", "id")}, map[string][]string{"jobs": before})
}

// Rule 10: a job event the read model cannot store (a final state that is
// none, a job id that is not a uuid, a second submission) is quarantined
// deterministically and the projection goes on; an attempt end naming an
// attempt that is not the job's last changes no attempt, as in Evolve.
func TestJobsPoisonQuarantined(t *testing.T) {
	t.Parallel()
	jf := newJobsFixture(t)
	ctx := testCtx(t)
	project := uuid.NewString()
	id := jf.submit(t, base, events.JobSubmittedData{ProjectID: project, ExperimentID: uuid.NewString()})
	subj := events.Subject(events.AggJob, id)
	jf.event(t, base.Add(time.Minute), id, events.JobAttemptStarted,
		events.JobAttemptStartedData{JobID: id, Attempt: 1, RunnerID: "r", Executor: "local", TokenID: uuid.NewString()})
	want := map[uint64]string{}
	want[jf.f.appendRaw(t, subj, events.JobEnded, fmt.Sprintf(`{"job_id":%q,"run_id":"x","state":"exploded"}`, id))] = "23514"
	want[jf.f.appendRaw(t, subj, events.JobSubmitted, fmt.Sprintf(`{"job_id":%q,"project_id":%q,"experiment_id":%q,"run_id":%q,"name":"twice","command":["x"],"timeout_ms":1,"max_retries":0,"submitted_by":"u"}`,
		id, project, uuid.NewString(), uuid.NewString()))] = "23505"
	want[jf.f.appendRaw(t, events.Subject(events.AggJob, "not-a-uuid"), events.JobSubmitted,
		fmt.Sprintf(`{"job_id":"not-a-uuid","project_id":%q,"experiment_id":%q,"run_id":%q,"name":"n","command":["x"],"timeout_ms":1,"max_retries":0,"submitted_by":"u"}`,
			project, uuid.NewString(), uuid.NewString()))] = "22P02"
	want[jf.f.appendRaw(t, subj, events.JobRequeued, fmt.Sprintf(`{"job_id":%q,"attempt":"two"}`, id))] = ""
	// Not the current attempt: Evolve changes no attempt, only the time.
	jf.event(t, base.Add(2*time.Minute), id, events.JobAttemptEnded,
		events.JobAttemptEndedData{JobID: id, Attempt: 7, Outcome: events.OutcomeFailed, ExitCode: exit(1)})
	jf.event(t, base.Add(3*time.Minute), id, events.JobAttemptEnded,
		events.JobAttemptEndedData{JobID: id, Attempt: 1, Outcome: events.OutcomeTimedOut, Reason: "timed out after 1s"},
		events.JobEnded, events.JobEndedData{JobID: id, State: events.JobTimedOut, Reason: "timed out after 1s"})
	jf.sync(t)

	got := map[uint64]string{}
	rows, err := jf.f.pool.Query(ctx, "SELECT seq, sqlstate FROM projection_quarantine WHERE projection = 'jobs'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var seq int64
		var code string
		if err := rows.Scan(&seq, &code); err != nil {
			t.Fatal(err)
		}
		got[uint64(seq)] = code
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("quarantined %v, want %v", got, want)
	}
	j, err := jf.q.Job(ctx, project, id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != events.JobTimedOut || j.Name != "train.py" || len(j.Attempts) != 1 || j.Attempts[0].Outcome != events.OutcomeTimedOut ||
		j.Attempts[0].ExitCode != nil {
		t.Fatalf("job after the poison: %+v", j)
	}
	before := dumpOrdered(t, jf.f.pool, "(SELECT projection, seq, event_id, type, subject, sqlstate, error FROM projection_quarantine)", "projection, seq")
	jobsBefore := dumpOrdered(t, jf.f.pool, "jobs", "id")
	ref := newDB(t)
	one := testRunnerConfig()
	one.BatchSize = 1
	start(t, NewRunner(ref, jf.f.store, Jobs{}, one))
	waitCaughtUp(t, ref, jf.f.lastSeq(t), Jobs{}.Name())
	sameDump(t, map[string][]string{
		"quarantine": dumpOrdered(t, ref, "(SELECT projection, seq, event_id, type, subject, sqlstate, error FROM projection_quarantine)", "projection, seq"),
		"jobs":       dumpOrdered(t, ref, "jobs", "id"),
	}, map[string][]string{"quarantine": before, "jobs": jobsBefore})
}
