package jobs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/jobs"
)

// The job's deciders, table-tested: given the job's events (folded with
// Evolve), when a command, then events or a typed error.

const jid = "55555555-5555-4555-8555-555555555555"

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// given folds the changes into a job state, as replay does.
func given(t *testing.T, changes ...[]handlers.Change) jobs.State {
	t.Helper()
	var j jobs.State
	n := 0
	for _, cs := range changes {
		for _, c := range cs {
			n++
			e, err := events.New(events.Meta{Actor: events.SystemActor, Time: t0.Add(time.Duration(n) * time.Second)}, c.Subject, c.Type, 0, c.Data)
			if err != nil {
				t.Fatal(err)
			}
			e.Sequence = uint64(n)
			if j, err = jobs.Evolve(j, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	return j
}

// must returns a decision that must succeed (a failure panics, failing
// the test with the error).
func must(ch []handlers.Change, err error) []handlers.Change {
	if err != nil {
		panic(err)
	}
	return ch
}

func submit(t *testing.T, mod func(*jobs.Submit)) []handlers.Change {
	t.Helper()
	c := jobs.Submit{JobSubmittedData: events.JobSubmittedData{JobID: jid, ProjectID: "p", ExperimentID: "x", RunID: "r",
		Command: []string{"python", "train.py"}, SubmittedBy: "u"}}
	if mod != nil {
		mod(&c)
	}
	if err := jobs.CheckSubmit(&c); err != nil {
		t.Fatal(err)
	}
	return must(jobs.DecideSubmit(jobs.State{}, c))
}

func types(ch []handlers.Change) string {
	var out []string
	for _, c := range ch {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(c.Type, "maestro.job."), ".v1"))
	}
	return strings.Join(out, ",")
}

func claim(t *testing.T, j jobs.State, runner string) []handlers.Change {
	t.Helper()
	return must(jobs.DecideClaim(j, runner, "local", jobs.TokenID(jid, len(j.Attempts)+1)))
}

func TestCheckSubmit(t *testing.T) {
	ok := func() jobs.Submit {
		return jobs.Submit{JobSubmittedData: events.JobSubmittedData{Command: []string{"/usr/bin/python3", "train.py"}}}
	}
	c := ok()
	if err := jobs.CheckSubmit(&c); err != nil {
		t.Fatal(err)
	}
	if c.Name != "python3" || c.TimeoutMS != jobs.DefaultTimeout.Milliseconds() {
		t.Fatalf("defaults: name %q timeout %d", c.Name, c.TimeoutMS)
	}
	for _, tc := range []struct {
		name string
		mod  func(*jobs.Submit)
		want string
	}{
		{"no command", func(c *jobs.Submit) { c.Command = nil }, "command must name"},
		{"empty program", func(c *jobs.Submit) { c.Command = []string{""} }, "command[0]"},
		{"control character", func(c *jobs.Submit) { c.Command = []string{"a\x00b"} }, "command[0]"},
		{"too many args", func(c *jobs.Submit) { c.Command = make([]string, jobs.MaxArgs+1); c.Command[0] = "x" }, "arguments"},
		{"short timeout", func(c *jobs.Submit) { c.Timeout = 500 * time.Millisecond }, "timeout"},
		{"long timeout", func(c *jobs.Submit) { c.Timeout = jobs.MaxTimeout + time.Second }, "timeout"},
		{"retries", func(c *jobs.Submit) { c.MaxRetries = jobs.MaxRetries + 1 }, "max_retries"},
		{"negative retries", func(c *jobs.Submit) { c.MaxRetries = -1 }, "max_retries"},
		{"env name", func(c *jobs.Submit) { c.Env = map[string]string{"1BAD": "x"} }, "names are"},
		{"reserved env", func(c *jobs.Submit) { c.Env = map[string]string{"MLFLOW_RUN_ID": "x"} }, "set by Maestro"},
		{"reserved prefix", func(c *jobs.Submit) { c.Env = map[string]string{"maestro_x": "x"} }, "set by Maestro"},
		{"secret in clear", func(c *jobs.Submit) { c.Env = map[string]string{"WANDB_API_KEY": "abc"} }, "looks like a secret"},
		{"bad secret ref", func(c *jobs.Submit) { c.Env = map[string]string{"DB_PASSWORD": "secret://a/b"} }, "secret reference"},
		{"param collision", func(c *jobs.Submit) { c.Params = map[string]string{"learning-rate": "1", "learning_rate": "2"} }, "both become"},
		{"escaping dir", func(c *jobs.Submit) { c.WorkingDir = "../up" }, "leaves"},
		{"bad quantity", func(c *jobs.Submit) { c.Resources.Memory = "lots" }, "quantity"},
		{"image with space", func(c *jobs.Submit) { c.Image = "a b" }, "image"},
	} {
		c := ok()
		tc.mod(&c)
		err := jobs.CheckSubmit(&c)
		e, typed := handlers.AsError(err)
		if !typed || e.Kind != handlers.Invalid || !strings.Contains(e.Detail, tc.want) {
			t.Errorf("%s: got %v, want an invalid-request error naming %q", tc.name, err, tc.want)
		}
	}
	c = ok()
	c.Env = map[string]string{"DB_PASSWORD": "secret://db.password", "EPOCHS": "3", "EMPTY_TOKEN": ""}
	c.WorkingDir = "src/./app"
	if err := jobs.CheckSubmit(&c); err != nil || c.WorkingDir != "src/app" {
		t.Fatalf("references and plain values: %v, working dir %q", err, c.WorkingDir)
	}
	if v := jobs.ParamVar("learning-rate.v2"); v != "MAESTRO_PARAM_LEARNING_RATE_V2" {
		t.Fatalf("ParamVar: %s", v)
	}
}

func TestJobLifecycle(t *testing.T) {
	sub := submit(t, func(c *jobs.Submit) { c.MaxRetries = 1 })
	j := given(t, sub)
	if j.State != events.JobQueued || jobs.RunStatus(j.State) != "SCHEDULED" {
		t.Fatalf("submitted: %+v", j)
	}
	if _, err := jobs.DecideSubmit(j, jobs.Submit{JobSubmittedData: events.JobSubmittedData{JobID: jid}}); err == nil {
		t.Fatal("a second submission of the same job was accepted")
	}
	c1 := claim(t, j, "r1")
	j = given(t, sub, c1)
	if j.State != events.JobRunning || j.Current().Number != 1 || j.Current().RunnerID != "r1" {
		t.Fatalf("claimed: %+v", j)
	}
	// A second runner's claim loses: the job is not queued any more.
	if _, err := jobs.DecideClaim(j, "r2", "local", "t"); !errors.Is(err, jobs.ErrNotQueued) {
		t.Fatalf("second claim: %v", err)
	}
	// Attempt 1 is lost (lease expired): one retry is left, so requeued.
	lost := must(jobs.DecideEndAttempt(j, jobs.EndAttempt{Attempt: 1, Outcome: events.OutcomeLost, Reason: "lost: no heartbeat"}))
	if types(lost) != "attempt_ended,requeued" {
		t.Fatalf("lost with a retry left: %s", types(lost))
	}
	j = given(t, sub, c1, lost)
	// The zombie runner of attempt 1 reports late: refused.
	if _, err := jobs.DecideEndAttempt(j, jobs.EndAttempt{Attempt: 1, Outcome: events.OutcomeSucceeded}); !errors.Is(err, jobs.ErrNotCurrent) {
		t.Fatalf("late report of a lost attempt: %v", err)
	}
	c2 := claim(t, j, "r2")
	j = given(t, sub, c1, lost, c2)
	if j.Current().Number != 2 || j.Current().TokenID != jobs.TokenID(jid, 2) {
		t.Fatalf("attempt 2: %+v", j.Current())
	}
	// Lost again: no retries left, the job fails with the reason.
	lost2 := must(jobs.DecideEndAttempt(j, jobs.EndAttempt{Attempt: 2, Outcome: events.OutcomeLost, Reason: "lost: no heartbeat"}))
	j = given(t, sub, c1, lost, c2, lost2)
	if j.State != events.JobFailed || !strings.Contains(j.Reason, "no retries left") || len(j.Attempts) != 2 {
		t.Fatalf("lost without retries: %+v", j)
	}
	if _, err := jobs.DecideCancel(j, ""); err == nil {
		t.Fatal("an ended job was cancelled")
	}
}

func TestJobEndOutcomes(t *testing.T) {
	code := func(n int) *int { return &n }
	for _, tc := range []struct {
		name      string
		retries   int
		onFailure bool
		cancel    bool
		end       jobs.EndAttempt
		types     string
		state     string
	}{
		{"success", 0, false, false, jobs.EndAttempt{Outcome: events.OutcomeSucceeded, ExitCode: code(0)}, "attempt_ended,ended", events.JobSucceeded},
		{"failure", 2, false, false, jobs.EndAttempt{Outcome: events.OutcomeFailed, ExitCode: code(3), Reason: "exit code 3"}, "attempt_ended,ended", events.JobFailed},
		{"failure retried", 2, true, false, jobs.EndAttempt{Outcome: events.OutcomeFailed, ExitCode: code(3)}, "attempt_ended,requeued", events.JobQueued},
		{"failure, no retries", 0, true, false, jobs.EndAttempt{Outcome: events.OutcomeFailed, ExitCode: code(3)}, "attempt_ended,ended", events.JobFailed},
		{"timeout not retried", 2, true, false, jobs.EndAttempt{Outcome: events.OutcomeTimedOut, Reason: "timeout"}, "attempt_ended,ended", events.JobTimedOut},
		{"cancelled", 2, true, true, jobs.EndAttempt{Outcome: events.OutcomeCancelled}, "attempt_ended,ended", events.JobCancelled},
		{"lost after cancel", 2, true, true, jobs.EndAttempt{Outcome: events.OutcomeLost}, "attempt_ended,ended", events.JobCancelled},
		{"failure after cancel not retried", 2, true, true, jobs.EndAttempt{Outcome: events.OutcomeFailed, ExitCode: code(1)}, "attempt_ended,ended", events.JobFailed},
	} {
		sub := submit(t, func(c *jobs.Submit) { c.MaxRetries, c.RetryOnFailure = tc.retries, tc.onFailure })
		j := given(t, sub)
		c1 := claim(t, j, "r1")
		hist := [][]handlers.Change{sub, c1}
		if tc.cancel {
			hist = append(hist, must(jobs.DecideCancel(given(t, hist...), "")))
		}
		j = given(t, hist...)
		tc.end.Attempt = 1
		ch, err := jobs.DecideEndAttempt(j, tc.end)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := types(ch); got != tc.types {
			t.Errorf("%s: events %s, want %s", tc.name, got, tc.types)
		}
		if got := given(t, append(hist, ch)...).State; got != tc.state {
			t.Errorf("%s: state %s, want %s", tc.name, got, tc.state)
		}
	}
}

func TestCancelQueuedEndsAtOnce(t *testing.T) {
	sub := submit(t, nil)
	ch := must(jobs.DecideCancel(given(t, sub), ""))
	if types(ch) != "cancel_requested,ended" {
		t.Fatalf("cancel queued: %s", types(ch))
	}
	j := given(t, sub, ch)
	if j.State != events.JobCancelled || jobs.RunStatus(j.State) != "KILLED" {
		t.Fatalf("cancelled: %+v", j)
	}
	running := given(t, sub, claim(t, given(t, sub), "r1"))
	ch = must(jobs.DecideCancel(running, ""))
	if types(ch) != "cancel_requested" {
		t.Fatalf("cancel running: %s", types(ch))
	}
	again := given(t, sub, claim(t, given(t, sub), "r1"), ch)
	if ch, err := jobs.DecideCancel(again, ""); err != nil || len(ch) != 0 {
		t.Fatalf("second cancel: %v %v", ch, err)
	}
}

// A cancellation the platform asks for with a reason (a sweep's early
// stopping) ends the job with that reason, whether it was queued or its
// runner stopped the program.
func TestCancelReasonIsTheJobsEnd(t *testing.T) {
	sub := submit(t, nil)
	ch := must(jobs.DecideCancel(given(t, sub), events.ReasonEarlyStopped))
	if j := given(t, sub, ch); j.State != events.JobCancelled || j.Reason != events.ReasonEarlyStopped {
		t.Fatalf("queued: %s %q", j.State, j.Reason)
	}
	started := claim(t, given(t, sub), "r1")
	cancel := must(jobs.DecideCancel(given(t, sub, started), events.ReasonEarlyStopped))
	running := given(t, sub, started, cancel)
	if running.CancelReason != events.ReasonEarlyStopped {
		t.Fatalf("cancel reason not folded: %+v", running)
	}
	end := must(jobs.DecideEndAttempt(running, jobs.EndAttempt{Attempt: 1, Outcome: events.OutcomeCancelled, Reason: "stopped by SIGTERM"}))
	if j := given(t, sub, started, cancel, end); j.State != events.JobCancelled || j.Reason != events.ReasonEarlyStopped {
		t.Fatalf("running: %s %q", j.State, j.Reason)
	}
}
