package api

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/api/web"
	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/projections"
)

// The web UI (docs/ARCHITECTURE.md "Web UI"): server-rendered pages whose
// forms call the same services, with the same principal and so the same
// authorization policy, as the JSON routes. It has a route table of its own
// (UIRoute), which drives the router and the UI's generated security tests
// (api/ui_test.go), as the API's table drives the API's.
//
// Its credential is a cookie holding a web token (auth.TokenWeb) of a
// session started by the same Identity.Login as the API's: logout,
// revocation, deactivation and refresh-token reuse end it on the next
// request, because every request checks the session as an access token's
// is checked (liveSession). The JSON API never accepts the cookie, so it
// stays free of ambient credentials and of CSRF; every state-changing UI
// request carries a per-session CSRF token (checkCSRF), and
// http.CrossOriginProtection refuses cross-origin browser requests besides.

// UIRoute is one page or form of the web UI.
type UIRoute struct {
	Method  string
	Pattern string
	// Public pages need no session: the sign-in page and form, and the
	// static files. Everything else does (deny by default).
	Public bool
	// MaxBody overrides the form body limit (uploads).
	MaxBody int64
	// Timeout overrides Deps.RequestTimeout (artifact transfers).
	Timeout time.Duration
	handle  func(w http.ResponseWriter, r *http.Request) error
}

const (
	// uiCookie holds the web token. __Host-: only ever set by this origin,
	// Secure, for Path=/ and no Domain (browsers accept a Secure cookie
	// over plain http from localhost and 127.0.0.1, so `make run` works).
	uiCookie = "__Host-maestro"
	// uiPreCookie is the signed double-submit of the sign-in form, so a
	// foreign page cannot sign a browser into an account of its choosing.
	uiPreCookie = "__Host-maestro-pre"
	// uiSessionTTL is a web token's lifetime; the session itself may end
	// sooner (logout, revocation), which every request checks.
	uiSessionTTL = 12 * time.Hour
	// uiFormMaxBytes bounds a form's body.
	uiFormMaxBytes = 64 << 10
	// uiParsedMaxBytes bounds a body that is not multipart whatever the
	// route's MaxBody: ParseForm reads it whole into memory (and sets no
	// limit of its own under a MaxBytesReader). A larger MaxBody is for
	// multipart uploads, which are streamed.
	uiParsedMaxBytes = 1 << 20
)

// uiCSP is the Content-Security-Policy of every UI response: scripts and
// styles only from this origin's files (no inline script, no eval), no
// frames, forms only to this origin.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// UIRoutes returns the web UI's route table.
func (s *Server) UIRoutes() []UIRoute { return append([]UIRoute(nil), s.uiRoutes...) }

func (s *Server) uiTable() []UIRoute {
	return append([]UIRoute{
		{Method: "GET", Pattern: web.StaticPrefix + "*", Public: true, handle: s.uiStatic},
		{Method: "GET", Pattern: "/", Public: true, handle: s.uiHome},
		{Method: "POST", Pattern: "/signin", Public: true, handle: s.uiSignIn},
		{Method: "POST", Pattern: "/signout", handle: s.uiSignOut},
	}, slices.Concat(s.uiProjectRoutes(), s.uiModelRoutes(), s.uiApprovalRoutes(), s.uiJobRoutes(), s.uiAdminRoutes(), s.uiRunRoutes(), s.uiSweepRoutes())...)
}

// csrfKeyFrom derives the CSRF key from the platform's signing key, which
// every API instance shares, so a form rendered by one instance is
// accepted by another. A new signing key invalidates open forms (one
// re-submit).
func csrfKeyFrom(keys *auth.KeySet) []byte {
	if keys == nil || keys.Active() == nil {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		return k
	}
	k, err := hkdf.Key(sha256.New, keys.Active().Key.Seed(), []byte("maestro"), "maestro ui csrf v1", 32)
	if err != nil {
		panic("api: derive the CSRF key: " + err.Error())
	}
	return k
}

// csrfToken is the CSRF token of what: a session id ("csrf" purpose) or a
// sign-in form's random value ("pre").
func (s *Server) csrfToken(purpose, what string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(purpose + "\x00" + what))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validCSRF compares a sent token with the expected one in constant time.
func (s *Server) validCSRF(purpose, what, sent string) bool {
	return sent != "" && len(sent) < 128 && hmac.Equal([]byte(sent), []byte(s.csrfToken(purpose, what)))
}

// uiEndpoint wraps a UI route's handler: deadline, body limit, headers,
// session and CSRF checks, and the one place errors become error pages.
func (s *Server) uiEndpoint(rt UIRoute) http.Handler {
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := rt.handle(w, r); err != nil {
			s.uiError(w, r, err)
		}
	})
	write := rt.Method != http.MethodGet && rt.Method != http.MethodHead
	if !rt.Public {
		if write {
			h = s.checkCSRF(h)
		}
		h = s.authenticateUI(h)
	}
	if write {
		h = s.crossOrigin.Handler(h)
	}
	limit, timeout := int64(uiFormMaxBytes), s.deps.RequestTimeout
	if rt.MaxBody > 0 {
		limit = rt.MaxBody
	}
	if rt.Timeout > 0 {
		timeout = rt.Timeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if write {
			ctx, _ = events.WithReceipt(ctx)
		}
		hdr := w.Header()
		hdr.Set("Content-Security-Policy", uiCSP)
		hdr.Set("Cache-Control", "no-store")
		bodyMax := limit
		if bodyMax > uiParsedMaxBytes && !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
			bodyMax = uiParsedMaxBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, bodyMax)
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// uiPrincipal is the caller of a UI request, from its cookie: a live web
// token of a live session of an active user.
func (s *Server) uiPrincipal(r *http.Request) (authz.Principal, error) {
	c, err := r.Cookie(uiCookie)
	if err != nil || c.Value == "" || len(c.Value) > maxTokenLen {
		return authz.Principal{}, unauthenticated("sign in")
	}
	claims, err := s.deps.Tokens.Verify(c.Value, auth.TokenWeb)
	if err != nil {
		return authz.Principal{}, unauthenticated("the session has ended")
	}
	return s.liveSession(r, claims)
}

// authenticateUI requires a session: without one, a page sends the browser
// to the sign-in form (and back here after it), a form is refused.
func (s *Server) authenticateUI(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.uiPrincipal(r)
		if err != nil {
			var pe *problemError
			if !errors.As(err, &pe) || pe.code != "unauthenticated" {
				s.uiError(w, r, err)
				return
			}
			if _, sent := r.Cookie(uiCookie); sent == nil {
				// Only a cookie that was sent is dropped: a navigation
				// from another site sends no SameSite=Strict cookie, yet
				// the browser applies this answer's Set-Cookie.
				clearCookie(w, uiCookie)
			}
			target := "/"
			if r.Method == http.MethodGet {
				target += "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			if r.Header.Get("HX-Request") != "" {
				w.Header().Set("HX-Redirect", target)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		}
		if who, ok := r.Context().Value(ctxLogPrincipal).(*string); ok {
			*who = "user:" + p.UserID
		}
		ctx := context.WithValue(r.Context(), ctxPrincipal, p)
		ctx = context.WithValue(ctx, uiSessionCheck{}, func() error { _, err := s.uiPrincipal(r); return err })
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// uiSessionCheck is the context key of a function that checks the UI
// request's session again: a long answer (a log follow) ends with it.
type uiSessionCheck struct{}

// checkCSRF refuses a state-changing UI request without its session's CSRF
// token (form field csrf, or header X-CSRF-Token for htmx), before anything
// is decided. A multipart form (an upload) must send csrf as its first
// field: the check reads just that part, and the handler streams the rest
// (ctxMultipart) instead of spooling a large file before the check.
func (s *Server) checkCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := principal(r.Context())
		sent := r.Header.Get("X-CSRF-Token")
		if sent == "" && strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
			if mr, err := r.MultipartReader(); err == nil {
				if part, err := mr.NextPart(); err == nil && part.FormName() == "csrf" {
					b, _ := io.ReadAll(io.LimitReader(part, 256))
					sent = string(b)
					r = r.WithContext(context.WithValue(r.Context(), ctxMultipart, multipartRest{mr}))
				}
			}
		} else if sent == "" {
			sent = formValue(r, "csrf")
		}
		if !s.validCSRF("csrf", p.SessionID, sent) {
			s.uiError(w, r, problem("forbidden", "the form has expired or did not come from this site: reload the page and try again"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// multipartRest is a multipart form after its csrf field.
type multipartRest struct{ *multipart.Reader }

// formValue is a field of a urlencoded form ("" when absent or the body
// is malformed; multipart forms are read as streams, multipartRest).
func formValue(r *http.Request, name string) string {
	if err := r.ParseForm(); err != nil {
		return ""
	}
	return r.PostFormValue(name)
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(maxAge / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// shown is the GET route of a page that a refused form shows again (with
// its status and error): the page as it is, 200 and no error.
func shown(page func(w http.ResponseWriter, r *http.Request, status int, errText string) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error { return page(w, r, http.StatusOK, "") }
}

// projectInput is what most project pages start with: the project the
// caller may read (readableProject: a 404 otherwise) and the page's own
// path and query parameters (fillParams), in that order.
func projectInput[In any](s *Server, r *http.Request) (projections.Project, In, error) {
	var in In
	proj, err := s.readableProject(r)
	if err != nil {
		return proj, in, err
	}
	return proj, in, fillParams(r, &in)
}

// page is the layout data of a page for the request's caller.
func (s *Server) page(r *http.Request, title, nav string, data any) web.Page {
	pg := web.Page{Title: title, Nav: nav, Data: data}
	if p, ok := principal(r.Context()); ok && p.UserID != "" {
		pg.User = &web.User{Email: p.Email, Admin: authz.SeesAllProjects(p)}
		pg.CSRF = s.csrfToken("csrf", p.SessionID)
	}
	return pg
}

// render writes a page with status.
func (s *Server) render(w http.ResponseWriter, status int, name string, pg web.Page) error {
	page, err := s.ui.Render(name, pg)
	if err != nil {
		return err // nothing sent yet: the error page answers
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(page)
	return nil
}

// uiErrorData is the error page's own data.
type uiErrorData struct {
	Detail, Back, BackText string
}

// uiError answers a failed UI request with an error page: the problem the
// JSON API would answer, as HTML.
func (s *Server) uiError(w http.ResponseWriter, r *http.Request, err error) {
	pe := s.problemFor(r, err)
	c, ok := problemCatalog[pe.code]
	if !ok {
		c = problemCatalog["internal"]
	}
	setRetryAfter(w, pe, c.Status)
	back, backText := "/projects", "Back to projects"
	if _, signedIn := principal(r.Context()); !signedIn {
		back, backText = "/", "Sign in"
	}
	if err := s.render(w, c.Status, "error", s.page(r, c.Title, "", uiErrorData{Detail: pe.detail, Back: back, BackText: backText})); err != nil {
		s.deps.Logger.ErrorContext(r.Context(), "render error page", "request_id", requestID(r.Context()), "err", err)
	}
}

// uiPageProblem answers a browser's request outside the UI's routes (no
// such page, a form's address visited) with the UI's error page.
func (s *Server) uiPageProblem(w http.ResponseWriter, r *http.Request, pe *problemError) {
	w.Header().Set("Content-Security-Policy", uiCSP)
	w.Header().Set("Cache-Control", "no-store")
	if p, err := s.uiPrincipal(r); err == nil {
		r = r.WithContext(context.WithValue(r.Context(), ctxPrincipal, p))
	}
	s.uiError(w, r, pe)
}

// seeOther ends a form: 303 to the page that shows its outcome (POST,
// redirect, GET), naming one of uiNotices for that page to show.
func seeOther(w http.ResponseWriter, r *http.Request, path, done string) {
	if done != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + "done=" + done
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// uiNotices are the outcomes a form's redirect may name (?done=). A fixed
// list, not free text: a link cannot make a page say what its author likes.
var uiNotices = map[string]string{
	"project-created":    "Project created.",
	"member-set":         "Member saved.",
	"member-removed":     "Member removed.",
	"model-created":      "Model registered.",
	"version-registered": "Version registered.",
	"alias-set":          "Alias set.",
	"alias-removed":      "Alias removed.",
	"stage-changed":      "Stage changed.",
	"artifact-uploaded":  "Artifact uploaded.",
}

// notice is the message of the request's ?done=, if it names one.
func notice(r *http.Request) string { return uiNotices[r.URL.Query().Get("done")] }

// wantsPage reports whether a request is a browser's for a page: not
// under /api/ (nor MLflow's), and accepting HTML.
func wantsPage(r *http.Request) bool {
	return !strings.HasPrefix(r.URL.Path, "/api/") && !mlflowPath.MatchString(r.URL.Path) &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}

// localPath is next if it is a path on this site (no scheme, no host, no
// protocol-relative //), else "/projects": the sign-in form's redirect
// target cannot send anyone elsewhere.
func localPath(next string) string {
	if next == "" || len(next) > 2048 || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/projects"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/projects"
	}
	return next
}

func (s *Server) uiStatic(w http.ResponseWriter, r *http.Request) error {
	s.ui.ServeStatic(w, r)
	return nil
}
