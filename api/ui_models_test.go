package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/testenv"
)

// upload sends the artifact form: csrf first, then path and file.
func (u *uiClient) upload(path, apath, filename string, content []byte) uiResponse {
	u.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("csrf", u.csrf)
	_ = mw.WriteField("path", apath)
	fw, _ := mw.CreateFormFile("file", filename)
	_, _ = fw.Write(content)
	_ = mw.Close()
	req, _ := http.NewRequest("POST", u.e.URL+path, &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	for name, v := range u.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: v})
	}
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return uiResponse{Status: resp.StatusCode, Header: resp.Header, Body: out.String()}
}

// The model registry through the UI: register a model with tags, search,
// register versions (one from a run), upload and download an artifact,
// stages and aliases, compare versions, and a point-in-time view — each
// through the API's own route functions, so the API reads back the same.
func TestUIModelRegistry(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@uimodels.test").AccessToken
	editor := e.Register("ed@uimodels.test")
	viewer := e.Register("vi@uimodels.test")
	call(t, e, 201, "POST", "/api/v1/projects", admin, map[string]any{"name": "Churn"})
	call(t, e, 200, "PUT", "/api/v1/projects/churn/members/"+editor.ID, admin, map[string]any{"role": "approver"})
	call(t, e, 200, "PUT", "/api/v1/projects/churn/members/"+viewer.ID, admin, map[string]any{"role": "viewer"})
	exp := asJSON[struct{ ID string }](t, call(t, e, 201, "POST", "/api/v1/projects/churn/experiments", admin, map[string]any{"name": "baseline"}))
	run := asJSON[struct{ ID string }](t, call(t, e, 201, "POST", "/api/v1/projects/churn/experiments/"+exp.ID+"/runs", admin, map[string]any{"name": "r1"}))
	call(t, e, 200, "POST", "/api/v1/projects/churn/runs/"+run.ID+"/params", admin, map[string]any{"params": []map[string]string{{"key": "lr", "value": "0.01"}}})

	u := newUIClient(t, e)
	u.signIn(editor.Email, testenv.Password)
	u.get("/models").want(t, 200)
	ms := "/projects/churn/models"
	if !strings.Contains(u.get(ms).Body, `action="/projects/churn/models"`) {
		t.Fatal("an approver sees no register-model form")
	}
	u.post(ms, url.Values{"name": {"scorer"}, "description": {"scores churn"}, "tags": {"team=growth\nkind = gbm"}}).want(t, 303, ms+"/scorer?done=model-created")
	u.post(ms, url.Values{"name": {"other"}, "tags": {"team=core"}}).want(t, 303)
	u.post(ms, url.Values{"name": {"bad"}, "tags": {"no equals sign"}}).want(t, 400)

	// Search: by name prefix and by tag, as GET .../models filters.
	if b := u.get(ms + "?name_prefix=sco").Body; !strings.Contains(b, ">scorer<") || strings.Contains(b, ">other<") {
		t.Errorf("name search: %.1500s", b)
	}
	if b := u.get(ms + "?tag_key=team&tag_value=core").Body; strings.Contains(b, ">scorer<") || !strings.Contains(b, ">other<") {
		t.Errorf("tag search: %.1500s", b)
	}
	u.get(ms+"?tag_value=x").want(t, 400)
	// The next page keeps the search: its link is a working query string.
	first := u.get(ms + "?max_results=1&order_by=name").Body
	link := regexp.MustCompile(`href="(\?[^"]*page_token=[^"]*)">Next page`).FindStringSubmatch(first)
	if link == nil || !strings.Contains(link[1], "order_by=name") {
		t.Fatalf("next-page link: %.2000s", first)
	}
	if b := u.get(ms+html.UnescapeString(link[1])).want(t, 200).Body; !strings.Contains(b, ">scorer<") || strings.Contains(b, ">other<") {
		t.Errorf("the second page: %.1500s", b)
	}

	// Versions: one from the run, one without.
	m := ms + "/scorer"
	u.get(m)
	u.post(m+"/versions", url.Values{"run_id": {run.ID}, "tags": {"algo=gbm"}}).want(t, 303, m+"/versions/1?done=version-registered")
	// The as-of form has whole seconds: a second later, the time truncated
	// is still after version 1.
	time.Sleep(1100 * time.Millisecond)
	before := time.Now().UTC()
	u.post(m+"/versions", url.Values{"description": {"second"}, "tags": {"algo=rf"}}).want(t, 303, m+"/versions/2?done=version-registered")
	v1 := u.get(m+"/versions/1").want(t, 200).Body
	for _, want := range []string{"<td>lr</td><td>0.01</td>", run.ID, "<td>algo</td><td>gbm</td>", "Upload an artifact", "Change the stage"} {
		if !strings.Contains(v1, want) {
			t.Errorf("version page lacks %s", want)
		}
	}

	// Upload an artifact through the form; download it from the page's link.
	content := []byte("model weights")
	u.upload(m+"/versions/1/artifacts", "model/weights.bin", "weights.bin", content).want(t, 303, m+"/versions/1?done=artifact-uploaded")
	sum := sha256.Sum256(content)
	if b := u.get(m + "/versions/1").Body; !strings.Contains(b, "model/weights.bin") || !strings.Contains(b, hex.EncodeToString(sum[:])) || !strings.Contains(b, "<td>13</td>") {
		t.Errorf("artifact row (path, digest, size): %.3000s", b)
	}
	dl := u.get(m+"/versions/1/artifacts/model/weights.bin").want(t, 200)
	if dl.Body != string(content) || !strings.HasPrefix(dl.Header.Get("Content-Disposition"), "attachment") {
		t.Errorf("download: %q %v", dl.Body, dl.Header)
	}
	if r := call(t, e, 200, "GET", "/api/v1/projects/churn/models/scorer/versions/1/artifacts", admin, nil); !strings.Contains(string(r.Body), "model/weights.bin") {
		t.Errorf("the API does not see the uploaded artifact: %s", r.Body)
	}
	// An upload whose csrf field is not first is refused before the file is read.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "x.bin")
	_, _ = fw.Write([]byte("x"))
	_ = mw.WriteField("csrf", u.csrf)
	_ = mw.Close()
	req, _ := http.NewRequest("POST", e.URL+m+"/versions/1/artifacts", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.AddCookie(&http.Cookie{Name: "__Host-maestro", Value: u.cookies["__Host-maestro"]})
	if resp, err := u.c.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("upload with csrf last: %v %v", resp.StatusCode, err)
	}

	// Stage and alias, read back through the API.
	u.get(m + "/versions/2")
	u.post(m+"/versions/2/transition", url.Values{"stage": {"production"}}).want(t, 303, m+"/versions/2?done=stage-changed")
	u.get(m)
	u.post(m+"/aliases", url.Values{"alias": {"champion"}, "version": {"2"}}).want(t, 303, m+"?done=alias-set")
	if r := asJSON[VersionBody](t, call(t, e, 200, "GET", "/api/v1/projects/churn/models/scorer/aliases/champion", admin, nil)); r.Version != 2 || r.Stage != "production" {
		t.Errorf("alias/stage through the API: %+v", r)
	}
	u.post(m+"/aliases", url.Values{"alias": {"bad alias!"}, "version": {"2"}}).want(t, 400)

	// Compare: metrics, the run's params and tags side by side.
	cmp := u.get(m+"/compare?v=1&v=2").want(t, 200).Body
	for _, want := range []string{"Version 1", "Version 2", `<tr class="differ"><th scope="row">algo</th><td>gbm</td><td>rf</td></tr>`, `<th scope="row">lr</th><td>0.01</td><td>—</td>`} {
		if !strings.Contains(cmp, want) {
			t.Errorf("comparison lacks %s: %.3000s", want, cmp)
		}
	}
	u.get(m+"/compare?v=1").want(t, 400)

	// As of a moment before version 2: one version, no alias, no forms.
	asOf := u.get(m+"?as_of="+url.QueryEscape(before.Format("2006-01-02T15:04:05"))).want(t, 200).Body
	if !strings.Contains(asOf, "Version 1<") || strings.Contains(asOf, "Version 2<") || strings.Contains(asOf, "@champion") || strings.Contains(asOf, "Register a version") {
		t.Errorf("as-of view: %.3000s", asOf)
	}
	u.get(m+"?as_of=yesterday").want(t, 400)

	// The model's history: who did what, from the audit trail (which
	// batches: poll).
	eventually(t, 30*time.Second, "the model's history", func() error {
		h := u.get(m+"/history").want(t, 200).Body
		for _, want := range []string{"ed@uimodels.test", "maestro.model.created.v1", "maestro.model.version.stage_transitioned.v1", "maestro.model.alias.set.v1", "maestro.model.version.artifact_recorded.v1"} {
			if !strings.Contains(h, want) {
				return fmt.Errorf("the history lacks %s", want)
			}
		}
		return nil
	})

	// The viewer reads it all and sees no write control; forged forms fail.
	v := newUIClient(t, e)
	v.signIn(viewer.Email, testenv.Password)
	for _, page := range []string{ms, m, m + "/versions/1"} {
		b := v.get(page).want(t, 200).Body
		for _, control := range []string{"Register a model", "Register a version", "Upload an artifact", "Change the stage", "Point an alias", "Remove alias"} {
			if strings.Contains(b, control) {
				t.Errorf("the viewer sees %q on %s", control, page)
			}
		}
	}
	ctx := context.Background()
	seq, _ := e.P.Store.LastSequence(ctx)
	v.post(m+"/versions/1/transition", url.Values{"stage": {"production"}}).want(t, 403)
	v.post(m+"/versions", url.Values{}).want(t, 403)
	v.upload(m+"/versions/1/artifacts", "x", "x.bin", []byte("x")).want(t, 403)
	if after, _ := e.P.Store.LastSequence(ctx); after != seq {
		t.Errorf("the viewer's forged forms appended events: %d -> %d", seq, after)
	}
}

// VersionBody is the part of a version answer the UI tests read back.
type VersionBody struct {
	Version int    `json:"version"`
	Stage   string `json:"stage"`
}
