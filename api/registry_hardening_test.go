package api_test

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
)

// Regressions of the 2026-11-30 review's registry findings, through HTTP:
// forged page tokens (12), artifact paths that are not plain text (13),
// the content type of uploads without one (issue 6), artifact paging (5).

func forgedToken(json string) string { return base64.RawURLEncoding.EncodeToString([]byte(json)) }

// Finding 12: page tokens the server never issued are 400s, never 500s.
func TestForgedPageTokensAreBadRequests(t *testing.T) {
	t.Parallel()
	a := startArtifacts(t, nil, artifactMax)
	e := a.e
	models := projectsPath + "/art/models"
	const id = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	for _, c := range []struct{ path, token string }{
		{models + "/weights/versions", `{"s":1099511627776}`}, // beyond int4
		{models + "/weights/versions", `{"k":"a"}`},
		{models + "?order_by=updated", `{"s":5}`}, // no tie-breaker id
		{models, `{"k":"a"}`},                     // no tie-breaker id
		{models, `{"i":"` + id + `"}`},
		{models, `{"s":5,"i":"` + id + `"}`}, // a token of the other order
		{projectsPath, `{"s":3}`},
		{a.base, `{"s":3}`},
		{a.base, `{"k":"a\u0000"}`},
	} {
		sep := "?"
		if strings.Contains(c.path, "?") {
			sep = "&"
		}
		callProblem(t, e, 400, "invalid-page-token", "GET", c.path+sep+"page_token="+url.QueryEscape(forgedToken(c.token)), a.viewer.Token, nil)
	}
	// Tokens the server issues still work.
	call(t, e, 201, "POST", models, a.editor.Token, map[string]any{"name": "second"})
	for _, order := range []string{"name", "updated"} {
		first := asJSON[api.ModelPage](t, call(t, e, 200, "GET", models+"?max_results=1&order_by="+order, a.viewer.Token, nil))
		if first.NextPageToken == "" {
			t.Fatalf("order %s: no next page", order)
		}
		next := asJSON[api.ModelPage](t, call(t, e, 200, "GET", models+"?max_results=1&order_by="+order+"&page_token="+url.QueryEscape(first.NextPageToken), a.viewer.Token, nil))
		if len(next.Items) != 1 || next.Items[0].ID == first.Items[0].ID {
			t.Fatalf("order %s: second page %+v after %+v", order, next.Items, first.Items)
		}
	}
}

// Finding 13: an artifact path is plain text, or the request is a 400 that
// records nothing; traversal stays refused.
func TestArtifactPathsArePlainText(t *testing.T) {
	t.Parallel()
	a := startArtifacts(t, nil, artifactMax)
	e := a.e
	seq, blobs := a.lastSeq(t), a.blobs(t)
	for _, p := range []string{"a%ffb", "x%0Ay", "x%09y", "x%0Dy", "x%7Fy", "x%C2%85y", "%C0%AE%C0%AE", "%2e%2e/x", "..%2Fx", "a/%2e/b", "a%5Cb", "a%00"} {
		callProblem(t, e, 400, "validation-failed", "PUT", a.base+"/"+p, a.editor.Token, []byte("bytes"), octets()...)
		callProblem(t, e, 400, "validation-failed", "GET", a.base+"/"+p, a.viewer.Token, nil)
	}
	a.nothingLeft(t, "paths that are not plain text", blobs, seq, nil)
	// Printable Unicode is a path like any other, and PUT of it is idempotent.
	r := call(t, e, 201, "PUT", a.base+"/"+url.PathEscape("modèle ünï.bin"), a.editor.Token, []byte("bytes"), octets()...)
	if got := asJSON[api.ArtifactResponse](t, r); got.Path != "modèle ünï.bin" {
		t.Fatalf("unicode path recorded as %q", got.Path)
	}
	seq = a.lastSeq(t)
	call(t, e, 200, "PUT", a.base+"/"+url.PathEscape("modèle ünï.bin"), a.editor.Token, []byte("bytes"), octets()...)
	if a.lastSeq(t) != seq {
		t.Fatal("the same bytes at the same unicode path were recorded again")
	}
}

// Issue 6: curl --data-binary sends application/x-www-form-urlencoded; that
// (or no type at all) is not what the bytes are. The type then comes from
// the extension or the first bytes; a real type the client names is kept.
func TestArtifactContentType(t *testing.T) {
	t.Parallel()
	a := startArtifacts(t, nil, artifactMax)
	e := a.e
	const form = "application/x-www-form-urlencoded"
	binary := []byte{0x00, 0x01, 0x02, 0xff, 0xfe, 0x10, 0x80}
	for _, c := range []struct {
		path, sent string
		body       []byte
		want       string
	}{
		{"weights", form, binary, "application/octet-stream"},
		{"weights-untyped", "", binary, "application/octet-stream"},
		{"config.json", form, []byte(`{"a":1}`), "application/json"},
		{"notes", form, []byte("plain words\n"), "text/plain; charset=utf-8"},
		{"empty", form, []byte{}, "application/octet-stream"},
		{"model.onnx", "application/x-onnx", binary, "application/x-onnx"},
		{"page.html", form + "; charset=utf-8", []byte("<p>a=b</p>"), "text/html; charset=utf-8"},
	} {
		r := call(t, e, 201, "PUT", a.base+"/"+c.path, a.editor.Token, c.body, "Content-Type", c.sent)
		if got := asJSON[api.ArtifactResponse](t, r); got.ContentType != c.want {
			t.Errorf("%s sent as %q: recorded %q, want %q", c.path, c.sent, got.ContentType, c.want)
		}
		if r = call(t, e, 200, "GET", a.base+"/"+c.path, a.viewer.Token, nil); r.Header.Get("Content-Type") != c.want {
			t.Errorf("%s: served as %q, want %q", c.path, r.Header.Get("Content-Type"), c.want)
		}
		// The same upload again is still a no-op: the type is decided the same way.
		seq := a.lastSeq(t)
		call(t, e, 200, "PUT", a.base+"/"+c.path, a.editor.Token, c.body, "Content-Type", c.sent)
		if a.lastSeq(t) != seq {
			t.Errorf("%s: repeating the upload recorded a new event", c.path)
		}
	}
}

// Finding 5: the artifact list pages (max_results ≤ 200, page_token).
func TestArtifactListPages(t *testing.T) {
	t.Parallel()
	a := startArtifacts(t, nil, artifactMax)
	e := a.e
	var want []string
	for i := range 7 {
		p := fmt.Sprintf("part-%02d.bin", i)
		call(t, e, 201, "PUT", a.base+"/"+p, a.editor.Token, []byte(p), octets()...)
		want = append(want, p)
	}
	var got []string
	token, pages := "", 0
	for {
		q := "?max_results=3"
		if token != "" {
			q += "&page_token=" + url.QueryEscape(token)
		}
		page := asJSON[api.ArtifactList](t, call(t, e, 200, "GET", a.base+q, a.viewer.Token, nil))
		pages++
		for _, it := range page.Items {
			got = append(got, it.Path)
		}
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	if pages != 3 || strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%d pages: %v, want 3 pages of %v", pages, got, want)
	}
	for _, n := range []string{"0", "201", "x"} {
		callProblem(t, e, 400, "validation-failed", "GET", a.base+"?max_results="+n, a.viewer.Token, nil)
	}
	if all := a.list(t, a.viewer.Token); len(all) != 7 {
		t.Fatalf("default page: %d items", len(all))
	}
}
