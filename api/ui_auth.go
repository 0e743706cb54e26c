package api

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/projections"
)

// preCookieTTL is how long a sign-in form stays valid.
const preCookieTTL = 10 * time.Minute

// signInData is the sign-in page's data.
type signInData struct {
	CSRF, Next, Email string
}

// uiHome is "/": the sign-in form, or the projects for whoever is signed in.
func (s *Server) uiHome(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.uiPrincipal(r); err == nil {
		http.Redirect(w, r, "/projects", http.StatusSeeOther)
		return nil
	}
	next := r.URL.Query().Get("next")
	return s.signInForm(w, r, http.StatusOK, signInData{Next: localPath(next)}, "")
}

// signInForm renders the sign-in form with a fresh signed double-submit
// token: a random value in a cookie and its MAC in the form.
func (s *Server) signInForm(w http.ResponseWriter, r *http.Request, status int, d signInData, errText string) error {
	var b [32]byte
	_, _ = rand.Read(b[:])
	pre := base64.RawURLEncoding.EncodeToString(b[:])
	setCookie(w, uiPreCookie, pre, preCookieTTL)
	d.CSRF = s.csrfToken("pre", pre)
	pg := s.page(r, "Sign in", "", d)
	pg.Error = errText
	return s.render(w, status, "signin", pg)
}

// uiSignIn is the sign-in form: the same Identity.Login as POST
// /api/v1/auth/login (throttling, audit, session.started). The session's
// refresh token never leaves the server; the browser gets a web token in
// an HttpOnly cookie.
func (s *Server) uiSignIn(w http.ResponseWriter, r *http.Request) error {
	email, password := formValue(r, "email"), formValue(r, "password")
	d := signInData{Next: localPath(formValue(r, "next")), Email: email}
	if len(email) > identity.MaxEmailLen*4 {
		d.Email = ""
	}
	pre, err := r.Cookie(uiPreCookie)
	if err != nil || !s.validCSRF("pre", pre.Value, formValue(r, "csrf")) {
		return s.signInForm(w, r, http.StatusForbidden, d, "The sign-in form expired; please sign in again.")
	}
	if email == "" || password == "" || len(email) > identity.MaxEmailLen*4 || len(password) > auth.MaxPasswordBytes {
		return s.signInForm(w, r, http.StatusUnauthorized, d, "E-mail or password is incorrect.")
	}
	pair, seq, err := s.deps.Identity.Login(r.Context(), meta(r), identity.LoginInput{
		Email: email, Password: password, ClientIP: clientIP(r), UserAgent: r.UserAgent()})
	if err != nil {
		pe := s.problemFor(r, err)
		switch status := problemCatalog[pe.code].Status; status {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
			setRetryAfter(w, pe, status)
			return s.signInForm(w, r, status, d, pe.detail)
		}
		return err
	}
	// The web token lasts uiSessionTTL, but never beyond the session's
	// refresh token (the session policy's idle and absolute limits): no
	// refresh prolongs a browser's session.
	exp := s.deps.Now().Add(uiSessionTTL)
	if rc, err := s.deps.Tokens.Verify(pair.RefreshToken, auth.TokenRefresh); err == nil && rc.ExpiresAt != nil && rc.ExpiresAt.Before(exp) {
		exp = rc.ExpiresAt.Time
	}
	token, _, err := s.deps.Tokens.Issue(auth.TokenWeb, pair.UserID, pair.SessionID, 0, exp)
	if err != nil {
		return err
	}
	// The next page authenticates against the sessions read model (or, if
	// it lags, the event store): wait for it, so that page is quick.
	s.waitApplied(r.Context(), seq, projections.Sessions{}.Name())
	// A browser signing in again (another tab, another account) replaces
	// its session: the one its old cookie held ends rather than live on
	// unseen.
	if old, err := s.uiPrincipal(r); err == nil && old.SessionID != pair.SessionID {
		if _, err := s.deps.Identity.Logout(r.Context(), meta(r), old); err != nil {
			s.deps.Logger.WarnContext(r.Context(), "sign-in: end the browser's previous session", "request_id", requestID(r.Context()), "err", err)
		}
	}
	clearCookie(w, uiPreCookie)
	setCookie(w, uiCookie, token, exp.Sub(s.deps.Now()))
	http.Redirect(w, r, d.Next, http.StatusSeeOther)
	return nil
}

// uiSignOut ends the session (the same Identity.Logout as the API's), once
// every instance refuses it, and drops the cookie.
func (s *Server) uiSignOut(w http.ResponseWriter, r *http.Request) error {
	p, _ := principal(r.Context())
	seq, err := s.deps.Identity.Logout(r.Context(), meta(r), p)
	if err != nil {
		return err
	}
	if seq > 0 {
		if err := s.awaitRevocation(w, r, seq, projections.Sessions{}.Name()); err != nil {
			return err
		}
	}
	clearCookie(w, uiCookie)
	http.Redirect(w, r, "/", http.StatusSeeOther)
	return nil
}
