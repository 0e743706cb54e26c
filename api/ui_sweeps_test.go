package api_test

import (
	"context"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/projections"
)

// The sweeps area of the web UI through plain HTTP: the list (the
// navigation's Sweeps leads into it), the "New sweep" form (the API reads
// back what it made; a bad space shows the API's detail naming the field,
// with the form kept), a sweep's page (trials, best trial, the progress
// table the chart draws) and its stop form, and what a viewer sees and may
// do. No runner runs here: trials' jobs stay queued.

var sweepLink = regexp.MustCompile(`^/projects/train/sweeps/([0-9a-f-]{36})\?done=sweep-created$`)

func sweepForm(name string) url.Values {
	return url.Values{"name": {name}, "experiment": {"tuning"}, "metric": {"val_loss"}, "direction": {"minimize"},
		"algorithm": {"random"}, "max_trials": {"4"}, "parallelism": {"2"}, "seed": {"7"}, "early_stopping": {"median"},
		"command": {"python\ntrain.py"}, "timeout": {"10m"},
		"space": {`{"lr": {"type": "log_uniform", "low": 0.0001, "high": 0.1}, "opt": {"type": "categorical", "values": ["adam", "sgd"]}}`}}
}

func TestUISweeps(t *testing.T) {
	t.Parallel()
	j := startUIJobs(t, "uisweeps.test", false)
	e, ed, vi := j.e, j.editor, j.viewer
	const ss = "/projects/train/sweeps"
	ctx := context.Background()

	// The navigation's Sweeps leads into the project's sweeps.
	if b := ed.get("/sweeps").want(t, 200).Body; !strings.Contains(b, `href="/projects/train/sweeps"`) {
		t.Fatalf("the sweeps project picker: %.1500s", b)
	}
	if b := ed.get(ss).want(t, 200).Body; !strings.Contains(b, "No sweeps yet") || !strings.Contains(b, ">New sweep<") ||
		!strings.Contains(b, `aria-current="page">Sweeps<`) || !strings.Contains(b, "log_uniform") {
		t.Fatalf("the empty sweeps page: %.3000s", b)
	}

	// A bad space: the API's detail naming the field, the form kept,
	// nothing appended; the same for JSON that is no space.
	before, _ := e.P.Store.LastSequence(ctx)
	for _, c := range []struct{ space, want string }{
		{`{"lr": {"type": "log_uniform", "low": 0, "high": 0.1}}`, "space.lr.low: must be greater than 0"},
		{`{"lr": {"type": "uniform", "low": 1, "high": 1}}`, "space.lr.high: must be greater than low"},
		{`{"lr": {"type": "uniform", "low": 0, "hi": 1}}`, "space: not a JSON object of params"},
		{`[1, 2]`, "space: not a JSON object of params"},
		{``, "space: write the params"},
	} {
		f := sweepForm("bad")
		f.Set("space", c.space)
		r := ed.post(ss, f).want(t, 400)
		if !strings.Contains(html.UnescapeString(r.Body), c.want) || !strings.Contains(r.Body, `role="alert"`) {
			t.Errorf("space %s: the page does not say %q: %.3000s", c.space, c.want, r.Body)
		}
		if !strings.Contains(r.Body, `value="val_loss"`) || !strings.Contains(r.Body, ">python\ntrain.py</textarea>") ||
			(c.space != "" && !strings.Contains(html.UnescapeString(r.Body), c.space+"</textarea>")) {
			t.Errorf("space %s: the refused form lost its fields: %.3000s", c.space, r.Body)
		}
	}
	f := sweepForm("bad")
	f.Set("algorithm", "grid")
	if r := ed.post(ss, f).want(t, 400); !strings.Contains(html.UnescapeString(r.Body), "space.lr.type: a continuous range has no grid") {
		t.Errorf("a grid over a continuous range: %.3000s", r.Body)
	}
	f.Set("max_trials", "many")
	if r := ed.post(ss, f).want(t, 400); !strings.Contains(r.Body, "max_trials: must be a whole number") {
		t.Errorf("max_trials: %.3000s", r.Body)
	}
	if after, _ := e.P.Store.LastSequence(ctx); after != before {
		t.Errorf("refused forms appended events: %d -> %d", before, after)
	}

	// The form creates a sweep, read back through the API.
	r := ed.post(ss, sweepForm("lr search")).want(t, 303)
	m := sweepLink.FindStringSubmatch(r.Header.Get("Location"))
	if m == nil {
		t.Fatalf("Location %q", r.Header.Get("Location"))
	}
	id := m[1]
	sw := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", "/api/v1"+ss+"/"+id, j.viewAPI, nil))
	if sw.Name != "lr search" || sw.Seed != 7 || sw.MaxTrials != 4 || sw.Parallelism != 2 || sw.Objective.Metric != "val_loss" ||
		sw.EarlyStopping == nil || sw.EarlyStopping.Rule != "median" || sw.Trial.TimeoutSeconds != 600 || len(sw.Trial.Command) != 2 ||
		sw.Space["opt"].Values[1] != "sgd" || sw.CreatedBy != j.editorID {
		t.Fatalf("the form's sweep: %+v", sw.Sweep)
	}
	page := ed.get(ss+"/"+id+"?done=sweep-created").want(t, 200).Body
	for _, want := range []string{"Sweep started", ">Sweep lr search<", ">running<", ">Stop sweep<", "<code>lr</code>", "log_uniform from 0.0001 to 0.1",
		"categorical: adam, sgd", "python train.py", "seed 7", "ed@uisweeps.test", `class="chart sweep-chart"`, "sweeps.js", "uPlot.iife.min.js"} {
		if !strings.Contains(page, want) {
			t.Errorf("the sweep page lacks %s", want)
		}
	}
	// The scheduler starts two trials (their jobs stay queued): the page
	// links each trial's job and run.
	eventually(t, 30*time.Second, "the page shows the first trials", func() error {
		b := ed.get(ss+"/"+id).want(t, 200).Body
		if strings.Count(b, `href="/projects/train/jobs/`) < 2 || strings.Count(b, `href="/projects/train/runs/`) < 2 {
			return fmt.Errorf("no trial links yet")
		}
		return nil
	})
	if b := ed.get(ss).want(t, 200).Body; !strings.Contains(b, `href="/projects/train/sweeps/`+id+`"`) || !strings.Contains(b, "lr search") {
		t.Errorf("the sweeps list: %.3000s", b)
	}

	// A viewer reads the list and the sweep with no create or stop control;
	// forged forms with the viewer's own CSRF token are refused and change
	// nothing.
	vp := vi.get(ss).want(t, 200).Body
	if !strings.Contains(vp, "lr search") || strings.Contains(vp, ">New sweep<") || strings.Contains(vp, `method="post" action="/projects/train/sweeps"`) {
		t.Errorf("the viewer's sweeps page: %.3000s", vp)
	}
	if b := vi.get(ss+"/"+id).want(t, 200).Body; strings.Contains(b, ">Stop sweep<") || strings.Contains(b, "/stop") {
		t.Errorf("the viewer sees the stop form")
	}
	vi.post(ss, sweepForm("forged")).want(t, 403)
	vi.post(ss+"/"+id+"/stop", nil).want(t, 403)
	if pg := asJSON[api.SweepPage](t, call(t, e, 200, "GET", "/api/v1"+ss, j.admin, nil)); len(pg.Items) != 1 {
		t.Errorf("the viewer's forged create made a sweep: %d sweeps", len(pg.Items))
	}
	if got := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", "/api/v1"+ss+"/"+id, j.admin, nil)); got.StopRequested {
		t.Errorf("the viewer's forged stop was recorded")
	}

	// Stop through the form: the API sees it, the page no longer offers it.
	ed.get(ss + "/" + id)
	ed.post(ss+"/"+id+"/stop", nil).want(t, 303, ss+"/"+id+"?done=sweep-stop-requested")
	if got := asJSON[projections.SweepDetail](t, call(t, e, 200, "GET", "/api/v1"+ss+"/"+id, j.admin, nil)); !got.StopRequested {
		t.Errorf("the stop form did not stop the sweep: %+v", got.Sweep)
	}
	if b := ed.get(ss+"/"+id+"?done=sweep-stop-requested").want(t, 200).Body; strings.Contains(b, ">Stop sweep<") || !strings.Contains(b, "Stop requested") {
		t.Errorf("the stopping sweep's page: %.3000s", b)
	}

	// Not found: an unknown or malformed id is a 404 page.
	ed.get(ss+"/00000000-0000-4000-8000-000000000000").want(t, 404)
	ed.get(ss+"/not-an-id").want(t, 404)
}

// A sweep whose trials ended (appended as the scheduler would, in one
// batch, the sweep ended): the best trial is marked, and the progress
// table the chart draws holds each ended trial's objective and the best so
// far (NaN left out: sweeps.js plots finite values only).
func TestUISweepBestAndProgress(t *testing.T) {
	t.Parallel()
	j := startUIJobs(t, "uisweepbest.test", false)
	ed := j.editor
	id := appendEndedSweep(t, j)

	b := ed.get("/projects/train/sweeps/"+id).want(t, 200).Body
	for _, want := range []string{">completed<", "trial 2: 0.91", `<tr class="best">`, `<td>2 <span class="tag">best</span></td>`,
		`data-trial="1" data-objective="0.7" data-best="0.7"`, `data-trial="2" data-objective="0.91" data-best="0.91"`,
		`data-trial="3" data-objective="0.8" data-best="0.91"`, "<code>lr=0.02</code>", "uniform from 0.001 to 0.1"} {
		if !strings.Contains(b, want) {
			t.Errorf("the ended sweep's page lacks %s", want)
		}
	}
	if strings.Contains(b, ">Stop sweep<") || strings.Count(b, `class="best"`) != 1 {
		t.Errorf("the ended sweep's page: %.4000s", b)
	}
	if l := ed.get("/projects/train/sweeps?state=completed").want(t, 200).Body; !strings.Contains(l, "made by hand") || !strings.Contains(l, "trial 2: 0.91") {
		t.Errorf("the completed sweeps: %.3000s", l)
	}
}

// The sweep pages in headless Chromium (every page's checks: no script
// error or CSP violation, axe, keyboard): the picker, the list with its
// form, a sweep started through the form, and an ended sweep whose chart
// sweeps.js draws.
func TestUIBrowserSweeps(t *testing.T) {
	t.Parallel()
	j := startUIJobs(t, "uibrowsersweeps.test", false)
	ended := appendEndedSweep(t, j)
	b := newBrowserPage(t, j.e)
	b.signIn("ed@uibrowsersweeps.test")
	b.open("/sweeps", "sweeps-pick")
	b.open("/projects/train/sweeps", "sweeps")
	b.tab.Fill("#sweep-name", "browser sweep")
	b.tab.Fill("#sweep-experiment", "tuning")
	b.tab.Fill("#sweep-metric", "val_loss")
	b.tab.Fill("#sweep-space", `{"lr": {"type": "log_uniform", "low": 0, "high": 0.1}}`)
	b.tab.Fill("#sweep-command", "true")
	b.submit("#sweep-new", 400)
	// The browser reports the 400 itself; nothing else may be wrong.
	if ps := b.tab.Problems(); len(ps) != 1 || !strings.Contains(fmt.Sprint(ps[0]), "status of 400") {
		t.Fatalf("problems of the refused form: %v", ps)
	}
	b.tab.ClearProblems()
	b.check("sweeps-refused")
	if !strings.Contains(b.tab.Text("main"), "space.lr.low") {
		t.Fatalf("the refusal does not name the field: %.800s", b.tab.Text("main"))
	}
	b.tab.Fill("#sweep-space", `{"lr": {"type": "log_uniform", "low": 0.0001, "high": 0.1}}`)
	b.submit("#sweep-new", 200)
	b.check("sweep-started")
	if !strings.Contains(b.tab.CurrentURL(), "/projects/train/sweeps/") || !b.tab.Exists("#sweep-stop") {
		t.Fatalf("after the form: %s", b.tab.CurrentURL())
	}
	b.open("/projects/train/sweeps/"+ended, "sweep-ended")
	b.tab.WaitVisible("figure.sweep-chart canvas")
	b.check("sweep-chart")
}

// appendEndedSweep appends, as the scheduler would and in one batch, a
// maximizing sweep in project train whose three trials completed with
// 0.7, 0.91 and 0.8 (the best: trial 2), ended completed; it returns its
// id once the read model has it.
func appendEndedSweep(t *testing.T, j *uiJobsEnv) string {
	t.Helper()
	e := j.e
	ctx := context.Background()
	proj := asJSON[api.ProjectResponse](t, call(t, e, 200, "GET", "/api/v1/projects/train", j.admin, nil))
	x := asJSON[projections.Experiment](t, call(t, e, 201, "POST", "/api/v1/projects/train/experiments", j.editorAPI, map[string]any{"name": "made"}))
	id := uuid.NewString()
	low, high := 0.001, 0.1
	mv := func(f float64) *events.MetricValue { v := events.MetricValue(f); return &v }
	var batch []events.Append
	add := func(typ string, data any) {
		ev, err := events.New(events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: j.editorID}, Time: time.Now()},
			events.Subject(events.AggSweep, id), typ, len(batch), data)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, events.Append{Event: ev, Expect: events.Any})
	}
	add(events.SweepCreated, events.SweepCreatedData{SweepID: id, ProjectID: proj.ID, ExperimentID: x.ID, Name: "made by hand",
		Objective: events.SweepObjective{Metric: "acc", Direction: "maximize"},
		Space:     map[string]events.SweepParam{"lr": {Type: "uniform", Low: &low, High: &high}}, Algorithm: "random",
		MaxTrials: 3, Parallelism: 1, Seed: 1, Trial: events.SweepTrialSpec{Command: []string{"true"}, TimeoutMS: 60000}, CreatedBy: j.editorID})
	for n, obj := range []*events.MetricValue{mv(0.7), mv(0.91), mv(0.8)} {
		job := uuid.NewString()
		add(events.SweepTrialSuggested, events.SweepTrialSuggestedData{SweepID: id, Trial: n + 1, Params: map[string]string{"lr": fmt.Sprint(0.01 * float64(n+1))}})
		add(events.SweepTrialDispatched, events.SweepTrialDispatchedData{SweepID: id, Trial: n + 1, JobID: job, RunID: uuid.NewString()})
		add(events.SweepTrialEnded, events.SweepTrialEndedData{SweepID: id, Trial: n + 1, JobID: job, JobState: events.JobSucceeded,
			State: events.TrialCompleted, Objective: obj})
	}
	add(events.SweepEnded, events.SweepEndedData{SweepID: id, State: events.SweepCompleted, Trials: 3, BestTrial: 2, BestValue: mv(0.91)})
	seq, err := e.P.Store.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	call(t, e, 200, "GET", fmt.Sprintf("/api/v1/projects/train/sweeps/%s?min_sequence=%d", id, seq), j.viewAPI, nil)
	return id

}
