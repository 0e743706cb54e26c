package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// The vendored libraries are the published files, byte for byte
// (static/vendor/README.md says where each comes from).
func TestVendoredFiles(t *testing.T) {
	want := map[string]string{
		"static/vendor/htmx-2.0.11/htmx.min.js":        "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
		"static/vendor/htmx-2.0.11/LICENSE":            "d3d2456f76414f2456104660ebd65aff1c04cd7966b942bdabd63f3cdb316a38",
		"static/vendor/uplot-1.6.32/uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
		"static/vendor/uplot-1.6.32/uPlot.min.css":     "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
		"static/vendor/uplot-1.6.32/LICENSE":           "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
	}
	got := map[string]string{}
	err := fs.WalkDir(files, "static/vendor", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "README.md") {
			return err
		}
		b, err := files.ReadFile(p)
		sum := sha256.Sum256(b)
		got[p] = hex.EncodeToString(sum[:])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, h := range want {
		if got[p] != h {
			t.Errorf("%s: sha256 %s, want %s", p, got[p], h)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s is vendored but not pinned here", p)
		}
	}
}

// The templates keep the Content-Security-Policy's promise: no inline
// script, no inline event handler, no inline style, no javascript: URL.
func TestTemplatesHaveNothingInline(t *testing.T) {
	bad := map[string]*regexp.Regexp{
		"inline script":        regexp.MustCompile(`(?i)<script[^>]*>\s*[^<\s]`),
		"inline event handler": regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
		"inline style":         regexp.MustCompile(`(?i)\sstyle\s*=|<style`),
		"javascript: URL":      regexp.MustCompile(`(?i)javascript:`),
	}
	pages, err := fs.Glob(files, "templates/*.html")
	if err != nil || len(pages) < 3 {
		t.Fatalf("templates: %v %v", pages, err)
	}
	for _, p := range pages {
		b, _ := files.ReadFile(p)
		for _, tag := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAll(b, -1) {
			if !strings.Contains(string(tag), " src=") {
				t.Errorf("%s: a script without src: %s", p, tag)
			}
		}
		for what, re := range bad {
			if loc := re.FindIndex(b); loc != nil {
				t.Errorf("%s: %s at %q", p, what, b[loc[0]:min(loc[1]+20, len(b))])
			}
		}
	}
}

// Every page renders with the layout; a static file is served under its
// content hash only, cached for ever.
func TestRenderAndServeStatic(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	page, err := r.Render("error", Page{Title: "Oops", User: &User{Email: "<a@b.c>", Admin: true}, CSRF: "tok",
		Data: struct{ Detail, Back, BackText string }{"d", "/", "Back"}})
	if err != nil {
		t.Fatal(err)
	}
	out := string(page)
	// A page that cannot render is an error, not half a page.
	if b, err := r.Render("projects", Page{Title: "P", User: &User{Email: "a@b.c"}, Data: 42}); err == nil || b != nil {
		t.Errorf("a failing template rendered %d bytes, err %v", len(b), err)
	}
	if _, err := r.Render("no-such-page", Page{}); err == nil {
		t.Error("an unknown page rendered")
	}
	for _, want := range []string{"<title>Oops · Maestro</title>", `<meta name="csrf-token" content="tok">`, ">Sign out<", "&lt;a@b.c&gt;", `lang="en"`} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered page lacks %s", want)
		}
	}
	css := r.Asset("app.css")
	srv := httptest.NewServer(http.HandlerFunc(r.ServeStatic))
	defer srv.Close()
	resp, err := http.Get(srv.URL + css)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/css; charset=utf-8" || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Errorf("GET %s: %d %v", css, resp.StatusCode, resp.Header)
	}
	// Scripts and styles go gzipped to clients that take it, whole to others.
	js := r.Asset("vendor/htmx-2.0.11/htmx.min.js")
	for _, c := range []struct {
		accept string
		gzip   bool
	}{{"gzip, deflate, br", true}, {"br;q=1.0, gzip;q=0.5", true}, {"gzip;q=0", false}, {"", false}} {
		req, _ := http.NewRequest("GET", srv.URL+js, nil)
		req.Header.Set("Accept-Encoding", c.accept)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("Content-Encoding") == "gzip"; got != c.gzip || resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("Accept-Encoding %q: gzip %v, headers %v", c.accept, got, resp.Header)
		}
		if c.gzip {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(zr)
		}
		if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717" {
			t.Errorf("Accept-Encoding %q: the script's bytes differ", c.accept)
		}
	}
	stale := strings.Replace(css, "/static/", "/static/0000", 1)
	if resp, err := http.Get(srv.URL + stale); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET %s (another hash): %v %v", stale, resp.StatusCode, err)
	}
}
