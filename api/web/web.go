// Package web holds the web UI's templates and static files, embedded in
// the binary, and renders them. It knows nothing of the platform: the api
// package's UI handlers call the same services as the JSON routes and hand
// this package plain view data (so what a page shows and what the server
// allows come from one authorization policy, not from templates).
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed templates/*.html static
var files embed.FS

// StaticPrefix is where the static files are served: /static/<hash>/<name>,
// the hash being the first 16 hex digits of the file's SHA-256, so a URL
// names one content and may be cached for ever.
const StaticPrefix = "/static/"

// User is the signed-in user as the page header shows them.
type User struct {
	Email string
	Admin bool
}

// ProjectRef is the project a page belongs to: the navigation's Models,
// Experiments and Jobs links lead into it.
type ProjectRef struct {
	Slug string
	Name string
}

// Page is what every page's template gets: the layout's data and the
// page's own (Data).
type Page struct {
	// Title is the page's <title> and heading.
	Title string
	// Nav is the navigation item the page belongs to (its visible text).
	Nav string
	// User is nil when nobody is signed in.
	User *User
	// CSRF is the session's form token, rendered into every form that
	// changes state and into the htmx header meta tag.
	CSRF string
	// Project is the current project, if the page is inside one.
	Project *ProjectRef
	// Notice is a one-line message (the outcome of the last form).
	Notice string
	// Error is a one-line error shown above the page's content.
	Error string
	// Data is the page's own view data.
	Data any
}

// Renderer renders the embedded templates and serves the static files.
type Renderer struct {
	pages  map[string]*template.Template
	hashes map[string]string // static name -> content hash
	byHash map[string][]byte // hash + "/" + name -> content
	// gzipped is the gzip of each static file that compresses (scripts,
	// styles), served to clients that accept it.
	gzipped map[string][]byte
}

// New parses the templates and hashes the static files.
func New() (*Renderer, error) {
	r := &Renderer{pages: map[string]*template.Template{}, hashes: map[string]string{}, byHash: map[string][]byte{}, gzipped: map[string][]byte{}}
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		name := strings.TrimPrefix(p, "static/")
		h := hex.EncodeToString(sum[:8])
		r.hashes[name] = h
		r.byHash[h+"/"+name] = b
		if ext := path.Ext(name); ext == ".js" || ext == ".css" {
			var z bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
			_, _ = zw.Write(b)
			if err := zw.Close(); err != nil {
				return err
			}
			r.gzipped[h+"/"+name] = z.Bytes()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: hash static files: %w", err)
	}
	funcs := template.FuncMap{
		"asset": r.Asset,
		"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	}
	// The layout and the partials (templates/_*.html: pieces several pages
	// show) are in every page's template set.
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/_*.html")
	if err != nil {
		return nil, fmt.Errorf("web: parse layout: %w", err)
	}
	pages, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, p := range pages {
		name := strings.TrimSuffix(path.Base(p), ".html")
		if name == "layout" || strings.HasPrefix(name, "_") {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(files, p)
		if err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", p, err)
		}
		r.pages[name] = t
	}
	return r, nil
}

// Asset is the URL of a static file (its name under static/). An unknown
// name is a programming error in a template; it panics so that the
// template tests find it.
func (r *Renderer) Asset(name string) string {
	h, ok := r.hashes[name]
	if !ok {
		panic("web: no static file " + name)
	}
	return StaticPrefix + h + "/" + name
}

// Render renders the page template name with p, whole: a template error
// is an error, never half a page sent under a success status.
func (r *Renderer) Render(name string, p Page) ([]byte, error) {
	t, ok := r.pages[name]
	if !ok {
		return nil, fmt.Errorf("web: no page %q", name)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		return nil, fmt.Errorf("web: render %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// ServeStatic serves GET /static/<hash>/<name>. Only the current content
// of a file is served, under its own hash: an old or made-up hash is a 404,
// never another content under a URL cached for a year.
func (r *Renderer) ServeStatic(w http.ResponseWriter, req *http.Request) {
	key := strings.TrimPrefix(req.URL.Path, StaticPrefix)
	b, ok := r.byHash[key]
	if !ok {
		http.NotFound(w, req)
		return
	}
	ctype := mime.TypeByExtension(path.Ext(key))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	if z, ok := r.gzipped[key]; ok {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(req) {
			h.Set("Content-Encoding", "gzip")
			b = z
		}
	}
	http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(b))
}

// acceptsGzip reports whether the request's Accept-Encoding takes gzip
// (with a non-zero q, if it names one).
func acceptsGzip(req *http.Request) bool {
	for _, v := range req.Header.Values("Accept-Encoding") {
		for _, enc := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(enc), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") {
				q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
				return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
			}
		}
	}
	return false
}
