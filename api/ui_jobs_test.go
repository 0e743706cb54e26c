package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// The jobs area of the web UI through plain HTTP: the queue and history
// with its filters, the submission and cancel forms (the API reads back
// what they did; the service's refusals are shown), what a viewer sees and
// may do, escaping, and the log route the page follows (the API's jobLogs
// behind the cookie, as Server-Sent Events).

// uiJobsEnv is a platform with a project "Train" (slug train), an editor
// and a viewer of it, each with an API token and a signed-in UI client.
type uiJobsEnv struct {
	e                  *testenv.Env
	admin              string
	editorAPI, viewAPI string
	editor, viewer     *uiClient
	editorID           string
}

func startUIJobs(t *testing.T, domain string, runner bool) *uiJobsEnv {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.Runner = runner
	e := testenv.Start(t, cfg)
	j := &uiJobsEnv{e: e, admin: e.Admin("root@" + domain).AccessToken}
	ed, edTok := e.UserWithRole(j.admin, "ed@"+domain, "viewer")
	vi, viTok := e.UserWithRole(j.admin, "vi@"+domain, "viewer")
	j.editorAPI, j.viewAPI, j.editorID = edTok.AccessToken, viTok.AccessToken, ed.ID
	call(t, e, 201, "POST", "/api/v1/projects", j.admin, map[string]any{"name": "Train"})
	call(t, e, 200, "PUT", "/api/v1/projects/train/members/"+ed.ID, j.admin, map[string]any{"role": "editor"})
	call(t, e, 200, "PUT", "/api/v1/projects/train/members/"+vi.ID, j.admin, map[string]any{"role": "viewer"})
	j.editor = newUIClient(t, e)
	j.editor.signIn(ed.Email, testenv.Password)
	j.viewer = newUIClient(t, e)
	j.viewer.signIn(vi.Email, testenv.Password)
	return j
}

// apiJob reads a job through the API.
func (j *uiJobsEnv) apiJob(t *testing.T, id string) projections.Job {
	t.Helper()
	return asJSON[projections.Job](t, call(t, j.e, 200, "GET", "/api/v1/projects/train/jobs/"+id, j.admin, nil))
}

var jobLink = regexp.MustCompile(`href="/projects/train/jobs/([0-9a-f-]{36})"`)

// jobLinks are the ids of the jobs a jobs page lists, in order.
func jobLinks(body string) []string {
	var ids []string
	for _, m := range jobLink.FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func TestUIJobsListSubmitCancel(t *testing.T) {
	t.Parallel()
	j := startUIJobs(t, "uijobs.test", false) // no runner: jobs stay queued
	e, ed, vi := j.e, j.editor, j.viewer
	ctx := context.Background()
	const js = "/projects/train/jobs"
	xss := `<img src=x onerror=alert(1)>`
	alpha := asJSON[api.JobSubmission](t, call(t, e, 201, "POST", "/api/v1/projects/train/jobs", j.editorAPI,
		map[string]any{"experiment": "alpha", "name": "a " + xss, "command": []string{"python", "-c", "print('<script>alert(2)</script>')"}})).Job
	beta := asJSON[api.JobSubmission](t, call(t, e, 201, "POST", "/api/v1/projects/train/jobs", j.editorAPI,
		map[string]any{"experiment": "beta", "name": "b", "command": []string{"true"}})).Job

	// The navigation's Jobs leads into the project's jobs.
	if b := ed.get("/jobs").want(t, 200).Body; !strings.Contains(b, `href="/projects/train/jobs"`) {
		t.Fatalf("the jobs project picker: %.1500s", b)
	}

	// The list: newest first, the experiment's name, the command, the
	// submitter's address, escaped user text.
	page := ed.get(js).want(t, 200).Body
	if got := jobLinks(page); fmt.Sprint(got) != fmt.Sprint([]string{beta.ID, alpha.ID}) {
		t.Fatalf("jobs listed %v, want beta then alpha", got)
	}
	for _, want := range []string{">alpha</a>", ">beta</a>", "ed@uijobs.test", ">queued<", ">Submit job<",
		"a &lt;img src=x onerror=alert(1)&gt;", "&lt;script&gt;alert(2)&lt;/script&gt;"} {
		if !strings.Contains(page, want) {
			t.Errorf("the jobs page lacks %s", want)
		}
	}
	if strings.Contains(page, "<img src=x") || strings.Contains(page, "<script>alert") {
		t.Fatalf("user text is not escaped: %.3000s", page)
	}

	ap := ed.get(js+"/"+alpha.ID).want(t, 200).Body
	if strings.Contains(ap, "<img src=x") || strings.Contains(ap, "<script>alert") || !strings.Contains(ap, "<title>Job a &lt;img src=x onerror=alert(1)&gt; · Maestro</title>") ||
		!strings.Contains(ap, "python -c &#39;print(&#39;\\&#39;&#39;&lt;script&gt;alert(2)&lt;/script&gt;&#39;\\&#39;&#39;)&#39;") {
		t.Fatalf("the job page does not escape user text: %.3000s", ap)
	}

	// Filters: by state, by experiment name or id; a page at a time.
	if got := jobLinks(ed.get(js+"?state=cancelled").want(t, 200).Body); len(got) != 0 {
		t.Errorf("cancelled jobs before any was cancelled: %v", got)
	}
	if got := jobLinks(ed.get(js+"?experiment=alpha").want(t, 200).Body); fmt.Sprint(got) != fmt.Sprint([]string{alpha.ID}) {
		t.Errorf("experiment alpha: %v", got)
	}
	if got := jobLinks(ed.get(js+"?state=queued&experiment="+beta.ExperimentID).want(t, 200).Body); fmt.Sprint(got) != fmt.Sprint([]string{beta.ID}) {
		t.Errorf("experiment beta by id: %v", got)
	}
	if b := ed.get(js+"?experiment=nope").want(t, 200).Body; !strings.Contains(b, "No experiment is named “nope”") || len(jobLinks(b)) != 0 {
		t.Errorf("an unknown experiment: %.1500s", b)
	}
	if b := ed.get(js+"?state=stuck").want(t, 400).Body; !strings.Contains(b, "state must be one of") {
		t.Errorf("a bad state: %.1500s", b)
	}
	p1 := ed.get(js+"?max_results=1").want(t, 200).Body
	next := regexp.MustCompile(`href="\?([^"]*page_token=[^"]+)"`).FindStringSubmatch(p1)
	if got := jobLinks(p1); len(got) != 1 || got[0] != beta.ID || next == nil {
		t.Fatalf("page 1: %v, next %v: %s", got, next, p1)
	}
	if got := jobLinks(ed.get(js+"?"+strings.ReplaceAll(next[1], "&amp;", "&")).want(t, 200).Body); fmt.Sprint(got) != fmt.Sprint([]string{alpha.ID}) {
		t.Errorf("page 2: %v", got)
	}

	// Submit through the form: the API reads back the job it made.
	ed.get(js)
	r := ed.post(js, url.Values{"experiment": {"gamma"}, "name": {"form job"}, "command": {"sh\r\n-c\r\n  echo hi there  \r\n\r\n"},
		"params": {"lr=0.1\n epochs = 3 \n"}, "env": {"WANDB_MODE=offline\nAPI_TOKEN=secret://wandb"}, "timeout": {"90s"},
		"max_retries": {"2"}, "retry_on_failure": {"on"}}).want(t, 303)
	loc := r.Header.Get("Location")
	id, ok := strings.CutSuffix(strings.TrimPrefix(loc, js+"/"), "?done=job-submitted")
	if !ok || len(id) != 36 {
		t.Fatalf("submitted to %q", loc)
	}
	got := j.apiJob(t, id)
	if got.Name != "form job" || fmt.Sprint(got.Command) != "[sh -c echo hi there]" || fmt.Sprint(got.Params) != "map[epochs:3 lr:0.1]" ||
		fmt.Sprint(got.Env) != "map[API_TOKEN:secret://wandb WANDB_MODE:offline]" || got.TimeoutSeconds != 90 || got.MaxRetries != 2 ||
		!got.RetryOnFailure || got.State != "queued" || got.SubmittedBy != j.editorID {
		t.Fatalf("the submitted job: %+v", got)
	}
	jp := ed.get(loc).want(t, 200).Body
	for _, want := range []string{"Job submitted.", ">queued<", ">Cancel job<", `href="/projects/train/runs/` + got.RunID + `"`,
		"sh -c &#39;echo hi there&#39;", "secret://wandb", `data-follow="/projects/train/jobs/` + id + `/log?follow=true"`, `role="log"`, `aria-live="polite"`} {
		if !strings.Contains(jp, want) {
			t.Errorf("the job page lacks %s", want)
		}
	}
	// The timeout in seconds, as the API takes a number.
	ed.get(js)
	r = ed.post(js, url.Values{"experiment": {"gamma"}, "command": {"true"}, "timeout": {"120"}}).want(t, 303)
	second, _ := strings.CutSuffix(strings.TrimPrefix(r.Header.Get("Location"), js+"/"), "?done=job-submitted")
	if got := j.apiJob(t, second); got.TimeoutSeconds != 120 || got.Name != "true" {
		t.Fatalf("a timeout in seconds: %+v", got)
	}

	// Refused submissions: the service's reason on the form, the fields
	// kept, nothing appended.
	before, _ := e.P.Store.LastSequence(ctx)
	for _, c := range []struct {
		form url.Values
		want string
	}{
		{url.Values{"experiment": {"gamma"}, "command": {"\n \n"}}, "command must name the program to run"},
		{url.Values{"experiment": {"gamma"}, "command": {"train.py"}, "timeout": {"soon"}}, "timeout must be a duration"},
		{url.Values{"experiment": {"gamma"}, "command": {"train.py"}, "timeout": {"9000h"}}, "timeout must be between 1s and 168h0m0s"},
		{url.Values{"experiment": {"gamma"}, "command": {"train.py"}, "max_retries": {"11"}}, "max_retries must be between 0 and 10"},
		{url.Values{"experiment": {"gamma"}, "command": {"train.py"}, "max_retries": {"many"}}, "max retries must be a whole number"},
		{url.Values{"experiment": {"gamma"}, "command": {"train.py"}, "env": {"HF_TOKEN=hf_abc"}}, "looks like a secret"},
		{url.Values{"experiment": {"gamma"}, "command": {"train.py"}, "params": {"lr"}}, "params: write one key=value per line"},
		{url.Values{"experiment": {""}, "command": {"train.py"}}, "experiment must name an experiment"},
	} {
		ed.get(js)
		r := ed.post(js, c.form).want(t, 400)
		if !strings.Contains(r.Body, `role="alert"`) || !strings.Contains(r.Body, c.want) {
			t.Errorf("refused %v: want %q shown: %.800s", c.form, c.want, r.Body)
		}
		if cmd := c.form.Get("command"); strings.TrimSpace(cmd) != "" && !strings.Contains(r.Body, ">"+cmd+"</textarea>") {
			t.Errorf("the refused form lost its command: %.3000s", r.Body)
		}
	}
	if after, _ := e.P.Store.LastSequence(ctx); after != before {
		t.Errorf("refused submissions appended events: %d -> %d", before, after)
	}

	// A viewer reads the jobs and a job, with no submit or cancel control;
	// forged forms with the viewer's own CSRF token are refused, nothing
	// appended.
	vp := vi.get(js).want(t, 200).Body
	if len(jobLinks(vp)) != 4 || strings.Contains(vp, ">Submit job<") || strings.Contains(vp, `method="post" action="/projects/train/jobs"`) {
		t.Errorf("the viewer's jobs page: %.2000s", vp)
	}
	if b := vi.get(js+"/"+id).want(t, 200).Body; strings.Contains(b, ">Cancel job<") || strings.Contains(b, "/cancel") {
		t.Errorf("the viewer sees the cancel form")
	}
	before, _ = e.P.Store.LastSequence(ctx)
	vi.post(js, url.Values{"experiment": {"gamma"}, "command": {"true"}}).want(t, 403)
	vi.post(js+"/"+id+"/cancel", nil).want(t, 403)
	if after, _ := e.P.Store.LastSequence(ctx); after != before {
		t.Errorf("forged forms appended events: %d -> %d", before, after)
	}
	if got := j.apiJob(t, id); got.State != "queued" || got.CancelRequested {
		t.Errorf("the viewer's forged cancel: %+v", got)
	}

	// Cancel through the form: the API sees it (a queued job ends at once),
	// the page no longer offers it, and cancelling again shows the refusal.
	ed.get(js + "/" + id)
	ed.post(js+"/"+id+"/cancel", nil).want(t, 303, js+"/"+id+"?done=job-cancel-requested")
	eventually(t, 20*time.Second, "the cancelled job ends", func() error {
		if got := j.apiJob(t, id); got.State != "cancelled" {
			return fmt.Errorf("state %s", got.State)
		}
		return nil
	})
	jp = ed.get(js+"/"+id).want(t, 200).Body
	if strings.Contains(jp, ">Cancel job<") || !strings.Contains(jp, ">cancelled<") || !strings.Contains(jp, `data-follow=""`) {
		t.Errorf("the cancelled job's page: %.3000s", jp)
	}
	r = ed.post(js+"/"+id+"/cancel", nil).want(t, 409)
	if !strings.Contains(r.Body, `role="alert"`) {
		t.Errorf("a second cancel: %.800s", r.Body)
	}
	if got := jobLinks(ed.get(js + "?state=cancelled").Body); fmt.Sprint(got) != fmt.Sprint([]string{id}) {
		t.Errorf("cancelled jobs: %v", got)
	}

	// A job of another project, or none, is a 404 page.
	ed.get(js+"/00000000-0000-4000-8000-000000000000").want(t, 404)
	ed.get(js+"/not-an-id").want(t, 404)
}

// openJobLog opens a UI GET as the signed-in client and returns the response
// with its body open (a follow).
func (u *uiClient) openJobLog(ctx context.Context, path string) *http.Response {
	u.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", u.e.URL+path, nil)
	if err != nil {
		u.t.Fatal(err)
	}
	for name, v := range u.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: v})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	u.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// A job's log in the UI: the page renders what is logged so far (escaped),
// and the log route follows it as the API's does — line events as the job
// prints, then the end — for the cookie's user, and answers an ended job's
// whole log and its end at once.
func TestUIJobLogFollow(t *testing.T) {
	t.Parallel()
	j := startUIJobs(t, "uijoblog.test", true) // the platform's local runner runs the jobs
	e, ed, vi := j.e, j.editor, j.viewer
	const js = "/projects/train/jobs"
	submit := func(body map[string]any) projections.Job {
		t.Helper()
		return asJSON[api.JobSubmission](t, call(t, e, 201, "POST", "/api/v1/projects/train/jobs", j.editorAPI, body)).Job
	}
	awaitState := func(id, state string) {
		t.Helper()
		eventually(t, 60*time.Second, "job "+id+" "+state, func() error {
			if got := j.apiJob(t, id); got.State != state {
				return fmt.Errorf("state %s (%s)", got.State, got.Reason)
			}
			return nil
		})
	}

	// A job that has ended: its lines on the page, no follow; the route
	// answers the lines and the end at once.
	done := submit(map[string]any{"experiment": "logs", "name": "printer",
		"command": []string{"sh", "-c", `echo one; echo '<b>two</b>'; echo three`}})
	awaitState(done.ID, "succeeded")
	page := vi.get(js+"/"+done.ID).want(t, 200).Body
	for _, want := range []string{">one<", "&lt;b&gt;two&lt;/b&gt;", ">three<", `data-follow=""`, `data-count="3"`, "The job has ended (succeeded)",
		`href="/projects/train/jobs/` + done.ID + `/log?format=text"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the ended job's page lacks %s", want)
		}
	}
	if strings.Contains(page, "<b>two") {
		t.Fatal("a log line is not escaped")
	}
	r := vi.get(js+"/"+done.ID+"/log?follow=true").want(t, 200)
	if r.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("the follow's type: %v", r.Header)
	}
	evs := parseSSE([]byte(r.Body))
	var texts []string
	for _, ev := range evs[:len(evs)-1] {
		var l api.JobLogLine
		if ev.name != "line" || json.Unmarshal([]byte(ev.data), &l) != nil {
			t.Fatalf("event %+v", ev)
		}
		texts = append(texts, l.Text)
	}
	if fmt.Sprint(texts) != "[one <b>two</b> three]" || evs[len(evs)-1].name != "end" || !strings.Contains(evs[len(evs)-1].data, `"state":"succeeded"`) {
		t.Fatalf("the ended job's follow: %q", r.Body)
	}
	if r := vi.get(js+"/"+done.ID+"/log?format=text").want(t, 200); !strings.HasSuffix(r.Body, " stdout three\n") ||
		!strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("the text log: %q %v", r.Body, r.Header)
	}

	// A running job: the page has the line so far and follows from it; the
	// route streams the next line when the job prints it, then the end.
	release := filepath.Join(t.TempDir(), "release")
	live := submit(map[string]any{"experiment": "logs", "name": "waiter", "params": map[string]any{"release": release},
		"command": []string{"sh", "-c", `echo first; while [ ! -e "$MAESTRO_PARAM_RELEASE" ]; do sleep 0.05; done; echo second`}})
	eventually(t, 60*time.Second, "the first line", func() error {
		if ls := asJSON[api.JobLogs](t, call(t, e, 200, "GET", "/api/v1/projects/train/jobs/"+live.ID+"/logs", j.admin, nil)); len(ls.Lines) != 1 {
			return fmt.Errorf("%d lines", len(ls.Lines))
		}
		return nil
	})
	page = ed.get(js+"/"+live.ID).want(t, 200).Body
	for _, want := range []string{">first<", `data-follow="/projects/train/jobs/` + live.ID + `/log?follow=true"`, `data-count="1"`, ">Cancel job<"} {
		if !strings.Contains(page, want) {
			t.Errorf("the running job's page lacks %s", want)
		}
	}
	// The page's script, from this origin (the CSP allows nothing inline).
	script := regexp.MustCompile(`<script src="(/static/[0-9a-f]+/joblog\.js)" defer></script>`).FindStringSubmatch(page)
	if script == nil {
		t.Fatal("the job page does not load joblog.js")
	}
	if r := ed.get(script[1]).want(t, 200); !strings.Contains(r.Body, "new EventSource(src)") {
		t.Fatalf("joblog.js: %.300s", r.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp := vi.openJobLog(ctx, js+"/"+live.ID+"/log?follow=true")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("follow: %d %v", resp.StatusCode, resp.Header)
	}
	events := make(chan sseEvent, 64)
	go readSSE(bufio.NewReader(resp.Body), events)
	if ev, ok := nextEvent(t, events); !ok || ev.name != "line" || !strings.Contains(ev.data, `"text":"first"`) {
		t.Fatalf("first event: %+v (ok %v)", ev, ok)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if ev, ok := nextEvent(t, events); !ok || ev.name != "line" || !strings.Contains(ev.data, `"text":"second"`) {
		t.Fatalf("the live line: %+v (ok %v)", ev, ok)
	}
	if ev, ok := nextEvent(t, events); !ok || ev.name != "end" || !strings.Contains(ev.data, `"state":"succeeded"`) {
		t.Fatalf("the end: %+v (ok %v)", ev, ok)
	}
	if ev, ok := nextEvent(t, events); ok {
		t.Fatalf("an event after the end: %+v", ev)
	}

	// The route is the project's like the page: an outsider gets a 404, a
	// signed-out browser the sign-in form.
	outsider, _ := e.UserWithRole(j.admin, "out@uijoblog.test", "member")
	o := newUIClient(t, e)
	o.signIn(outsider.Email, testenv.Password)
	o.get(js+"/"+done.ID+"/log?follow=true").want(t, 404)
	newUIClient(t, e).get(js+"/"+done.ID+"/log?follow=true").want(t, 303)
}
