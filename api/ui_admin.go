package api

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/projections"
	"github.com/maestro-ml/maestro/runner"
)

// The admin dashboard (issue 12): users, API tokens and service accounts,
// the audit viewer and the system status, for global admins. Every page
// and form first asks the API's own policy check (requireAdmin with the
// action of the API route it mirrors) and then calls that route's
// function, which checks again: a member gets the API's 403 on every
// admin page and form.

func init() {
	maps.Copy(uiNotices, map[string]string{
		"user-updated":            "User saved.",
		"token-revoked":           "Token revoked.",
		"service-account-created": "Service account created.",
		"verify-started":          "Audit verification started: reload this page to see its result.",
		"verify-running":          "An audit verification is already running: reload this page to see its result.",
	})
}

func (s *Server) uiAdminRoutes() []UIRoute {
	return []UIRoute{
		{Method: "GET", Pattern: "/admin", handle: s.uiAdmin},
		{Method: "GET", Pattern: "/admin/users", handle: shown(s.adminUsersPage)},
		{Method: "POST", Pattern: "/admin/users/{id}", handle: s.uiAdminUpdateUser},
		{Method: "GET", Pattern: "/admin/tokens", handle: s.uiAdminTokens},
		{Method: "POST", Pattern: "/admin/tokens", handle: s.uiAdminCreateToken},
		{Method: "POST", Pattern: "/admin/tokens/{id}/revoke", handle: s.uiAdminRevokeToken},
		{Method: "POST", Pattern: "/admin/service-accounts", handle: s.uiAdminCreateServiceAccount},
		{Method: "GET", Pattern: "/admin/service-accounts/{id}", handle: s.uiAdminServiceAccount},
		{Method: "POST", Pattern: "/admin/service-accounts/{id}/tokens", handle: s.uiAdminCreateToken},
		{Method: "GET", Pattern: "/admin/audit", handle: s.uiAdminAudit},
		{Method: "GET", Pattern: "/admin/audit/export", Timeout: auditExportTimeout, handle: s.uiAdminExportAudit},
		{Method: "POST", Pattern: "/admin/audit/verify", handle: s.uiAdminVerifyAudit},
	}
}

// uiAdminState is what the admin dashboard remembers in this process:
// request counter samples (for rates) and the last audit verification.
type uiAdminState struct {
	mu      sync.Mutex
	samples []requestSample // oldest first
	// verifying is set while a verification runs (one at a time).
	verifying bool
	verified  *auditVerifyOutcome
}

// requestSample is maestro_http_requests_total of this process at a time,
// summed over status codes, by "METHOD route" and for 5xx answers.
type requestSample struct {
	at            time.Time
	counts, fails map[string]float64
}

const (
	// requestSampleKeep bounds the samples kept (one per dashboard view,
	// at most one per requestSampleEvery).
	requestSampleKeep  = 64
	requestSampleEvery = 5 * time.Second
	requestSampleAge   = 15 * time.Minute
)

// ---- overview and system status ----

// adminData is the overview's data.
type adminData struct {
	Status      ProjectionStatus
	Quarantined int64
	Jobs        []stateCount
	Webhooks    []projections.WebhookHealth
	// WebhooksMore says there are more subscriptions than shown.
	WebhooksMore bool
	Rates        requestRates
	// Runners are the runners announced in the runner registry.
	Runners []runner.Announcement
}

type stateCount struct {
	State string
	Count int64
}

// requestRates is this process's request counts by route between two
// samples of its Prometheus counter.
type requestRates struct {
	// Available is false when the API's registry cannot be read.
	Available bool
	// Window is the time between the samples compared; Since says there
	// was an earlier sample (without one, Rows count since the process
	// started).
	Window time.Duration
	Since  bool
	// Span is Window as the page states it.
	Span string
	Rows []rateRow
}

type rateRow struct {
	Route    string
	Requests int64
	PerMin   string
	Errors   int64
}

const adminWebhooksShown = 50

func (s *Server) uiAdmin(w http.ResponseWriter, r *http.Request) error {
	st, err := s.projectionStatusOf(r) // GET /api/v1/projections: requires admin
	if err != nil {
		return err
	}
	d := adminData{Status: st}
	for _, p := range st.Projections {
		d.Quarantined += p.Quarantined
	}
	counts, err := s.deps.Queries.JobCounts(r.Context())
	if err != nil {
		return err
	}
	for _, state := range projections.JobStates {
		d.Jobs = append(d.Jobs, stateCount{state, counts[state]})
	}
	if d.Webhooks, err = s.deps.Queries.WebhookHealth(r.Context(), adminWebhooksShown+1); err != nil {
		return err
	}
	if len(d.Webhooks) > adminWebhooksShown {
		d.Webhooks, d.WebhooksMore = d.Webhooks[:adminWebhooksShown], true
	}
	var families []*dtoFamily
	if g, ok := s.deps.Registerer.(prometheus.Gatherer); ok {
		if mfs, err := g.Gather(); err == nil {
			families = mfs
		}
	}
	d.Rates = s.requestRates(families, s.deps.Now())
	// Deps.JobLogs is the platform's JetStream, where the registry is.
	if d.Runners, err = runner.Runners(r.Context(), s.deps.JobLogs); err != nil {
		return err
	}
	return s.render(w, http.StatusOK, "admin", s.page(r, "Admin", "Admin", d))
}

// requestRates samples maestro_http_requests_total and compares the sample
// with the newest one at least a minute older (or the oldest there is).
func (s *Server) requestRates(families []*dtoFamily, now time.Time) requestRates {
	var cur *requestSample
	for _, mf := range families {
		if mf.GetName() != "maestro_http_requests_total" {
			continue
		}
		cur = &requestSample{at: now, counts: map[string]float64{}, fails: map[string]float64{}}
		for _, m := range mf.GetMetric() {
			var route, method, code string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					route = l.GetValue()
				case "method":
					method = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			key := method + " " + route
			v := m.GetCounter().GetValue()
			cur.counts[key] += v
			if strings.HasPrefix(code, "5") {
				cur.fails[key] += v
			}
		}
	}
	if cur == nil {
		return requestRates{}
	}
	a := &s.admin
	a.mu.Lock()
	a.samples = slices.DeleteFunc(a.samples, func(p requestSample) bool { return now.Sub(p.at) > requestSampleAge })
	var base *requestSample
	for i := len(a.samples) - 1; i >= 0; i-- {
		if now.Sub(a.samples[i].at) >= time.Minute {
			base = &a.samples[i]
			break
		}
	}
	if base == nil && len(a.samples) > 0 {
		base = &a.samples[0]
	}
	if len(a.samples) == 0 || now.Sub(a.samples[len(a.samples)-1].at) >= requestSampleEvery {
		a.samples = append(a.samples, *cur)
		if len(a.samples) > requestSampleKeep {
			a.samples = a.samples[1:]
		}
	}
	var prev requestSample
	if base != nil {
		prev = *base
	}
	a.mu.Unlock()

	out := requestRates{Available: true}
	if base != nil {
		out.Window, out.Since = now.Sub(prev.at), true
		out.Span = out.Window.Round(100 * time.Millisecond).String()
	}
	for key, v := range cur.counts {
		n := int64(v - prev.counts[key])
		if n <= 0 {
			continue
		}
		row := rateRow{Route: key, Requests: n, Errors: int64(cur.fails[key] - prev.fails[key])}
		// A rate over a few seconds says little: per minute from 10 s up.
		if out.Window >= 10*time.Second {
			row.PerMin = formatRate(float64(n) / out.Window.Minutes())
		}
		out.Rows = append(out.Rows, row)
	}
	slices.SortFunc(out.Rows, func(x, y rateRow) int {
		return cmp.Or(cmp.Compare(y.Requests, x.Requests), strings.Compare(x.Route, y.Route))
	})
	if len(out.Rows) > 25 {
		out.Rows = out.Rows[:25]
	}
	return out
}

// dtoFamily is a gathered metric family.
type dtoFamily = dto.MetricFamily

// formatRate is a per-minute rate with one decimal.
func formatRate(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// queryParam is a hidden field of a next-page form.
type queryParam struct{ Name, Value string }

// nextPage is the query of a list's next page: the named parameters of q
// that are set, and the page token (nil when there is no next page). A
// GET form of hidden fields carries it, so no query string is assembled
// inside a template's URL.
func nextPage(q url.Values, token string, keep ...string) []queryParam {
	if token == "" {
		return nil
	}
	var out []queryParam
	for _, name := range keep {
		if v := q.Get(name); v != "" {
			out = append(out, queryParam{name, v})
		}
	}
	return append(out, queryParam{"page_token", token})
}

// ---- users ----

// adminUsersData is the users page's data.
type adminUsersData struct {
	Items []UserResponse
	Next  []queryParam
	Roles []string
	Self  string
}

// adminUsersPage is every user (listUsers, a page at a time) with the
// forms to change their role and activation.
func (s *Server) adminUsersPage(w http.ResponseWriter, r *http.Request, status int, errText string) error {
	page, err := s.usersPage(r)
	if err != nil {
		return err
	}
	p, _ := principal(r.Context())
	d := adminUsersData{Items: page.Items, Self: p.UserID,
		Roles: []string{string(authz.RoleViewer), string(authz.RoleMember), string(authz.RoleAdmin)}}
	d.Next = nextPage(r.URL.Query(), page.NextPageToken, "max_results")
	pg := s.page(r, "Users", "Admin", d)
	pg.Notice, pg.Error = notice(r), errText
	return s.render(w, status, "admin_users", pg)
}

// uiAdminUpdateUser is a user's role or activation form: updateUser, as
// PATCH /api/v1/users/{id}.
func (s *Server) uiAdminUpdateUser(w http.ResponseWriter, r *http.Request) error {
	again := func(status int, detail string) error {
		// The page again, without the form's page token (a GET's).
		r.URL.RawQuery = ""
		return s.adminUsersPage(w, r, status, detail)
	}
	if _, err := s.requireAdmin(r, authz.UpdateUser); err != nil {
		return err
	}
	id, err := userIDParam(r)
	if err != nil {
		return err
	}
	var req patchUserRequest
	if v := formValue(r, "role"); v != "" {
		req.Role = &v
	}
	switch formValue(r, "active") {
	case "true":
		t := true
		req.Active = &t
	case "false":
		f := false
		req.Active = &f
	}
	if _, err := s.updateUser(w, r, id, req); err != nil {
		return s.formFailed(w, r, err, again)
	}
	seeOther(w, r, "/admin/users", "user-updated")
	return nil
}

// ---- API tokens and service accounts ----

// adminTokensData is a token page's data: the admin's own tokens, or a
// service account's; Created is the token just created, whose secret this
// one answer shows.
type adminTokensData struct {
	Account *UserResponse
	Items   []projections.APIToken
	Next    []queryParam
	Created *APITokenResponse
	Roles   []string
	Action  string
	// Path is the page's own path (its next-page form's target).
	Path string
}

func (s *Server) uiAdminTokens(w http.ResponseWriter, r *http.Request) error {
	return s.adminTokensPage(w, r, http.StatusOK, "", nil)
}

func (s *Server) uiAdminServiceAccount(w http.ResponseWriter, r *http.Request) error {
	return s.adminTokensPage(w, r, http.StatusOK, "", nil)
}

// adminTokensPage is the caller's tokens (/admin/tokens) or a service
// account's (/admin/service-accounts/{id}): listTokens, with the forms to
// create and revoke them (and, on the first, to create a service account).
func (s *Server) adminTokensPage(w http.ResponseWriter, r *http.Request, status int, errText string, created *APITokenResponse) error {
	if _, err := s.requireAdmin(r, authz.ManageServiceAccounts); err != nil {
		return err
	}
	page, err := s.tokensPage(r)
	if err != nil {
		return err
	}
	d := adminTokensData{Items: page.Items, Created: created, Action: "/admin/tokens", Path: "/admin/tokens",
		Roles: []string{string(authz.ProjectViewer), string(authz.ProjectEditor), string(authz.ProjectApprover), string(authz.ProjectOwner)}}
	title := "API tokens"
	if account, _ := serviceAccountParam(r); account != "" {
		u, err := s.deps.Queries.User(r.Context(), account)
		if err != nil {
			return err
		}
		acc := userFromProjection(u)
		d.Path = "/admin/service-accounts/" + url.PathEscape(account)
		d.Account, d.Action = &acc, d.Path+"/tokens"
		title = "Service account " + u.Name
	}
	if created == nil && r.Method == http.MethodGet {
		d.Next = nextPage(r.URL.Query(), page.NextPageToken, "max_results", "live")
	}
	pg := s.page(r, title, "Admin", d)
	pg.Notice, pg.Error = notice(r), errText
	return s.render(w, status, "admin_tokens", pg)
}

// uiAdminCreateToken creates a token (createToken, as POST /api/v1/tokens
// or .../service-accounts/{id}/tokens) and answers the list with the
// secret, this once: no redirect, so it is in no URL or history entry,
// and the page is no-store like every UI answer.
func (s *Server) uiAdminCreateToken(w http.ResponseWriter, r *http.Request) error {
	back := func(status int, detail string) error { return s.adminTokensPage(w, r, status, detail, nil) }
	if _, err := s.requireAdmin(r, authz.ManageServiceAccounts); err != nil {
		return err
	}
	req := createTokenRequest{Name: formValue(r, "name"), Project: strings.TrimSpace(formValue(r, "project")), Role: formValue(r, "role")}
	if err := fillParams(r, &req); err != nil {
		return err
	}
	if v := formValue(r, "expires_at"); v != "" {
		t, err := uiTime(v)
		if err != nil {
			return back(http.StatusBadRequest, "expires_at must be a date and time (YYYY-MM-DDTHH:MM, UTC)")
		}
		req.ExpiresAt = &t
	}
	if err := req.validate(); err != nil {
		return s.formFailed(w, r, err, back)
	}
	t, seq, err := s.createToken(newCall(w, r), req)
	if err != nil {
		return s.formFailed(w, r, err, back)
	}
	// As the API's answer: once the token works (a timeout still shows
	// the secret, which exists only here).
	s.waitApplied(r.Context(), seq, tokenViews...)
	return s.adminTokensPage(w, r, http.StatusCreated, "", &t)
}

// uiAdminRevokeToken revokes a token: revokeTokenOf, as DELETE
// /api/v1/tokens/{id}. The form's account field brings the browser back
// to the service account's page.
func (s *Server) uiAdminRevokeToken(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.requireAdmin(r, authz.ManageServiceAccounts); err != nil {
		return err
	}
	back := "/admin/tokens"
	if account := formValue(r, "account"); account != "" && isUUIDText(account) {
		back = "/admin/service-accounts/" + account
	}
	if err := s.revokeTokenOf(w, r); err != nil {
		return err
	}
	seeOther(w, r, back, "token-revoked")
	return nil
}

// uiAdminCreateServiceAccount creates a service account
// (createServiceAccount, as POST /api/v1/service-accounts) and shows its
// page, where its tokens are made.
func (s *Server) uiAdminCreateServiceAccount(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.requireAdmin(r, authz.ManageServiceAccounts); err != nil {
		return err
	}
	u, seq, err := s.createServiceAccount(newCall(w, r), createServiceAccountRequest{Name: formValue(r, "name"), Role: formValue(r, "role")})
	if err != nil {
		return s.formFailed(w, r, err, func(status int, detail string) error { return s.adminTokensPage(w, r, status, detail, nil) })
	}
	w.Header().Del("Location")
	s.waitApplied(r.Context(), seq, tokenViews...)
	seeOther(w, r, "/admin/service-accounts/"+u.ID, "service-account-created")
	return nil
}

// isUUIDText reports whether v is a UUID's text (the form's account id,
// put into a path).
func isUUIDText(v string) bool {
	if len(v) != 36 {
		return false
	}
	for i, c := range v {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'):
			return false
		}
	}
	return true
}

// ---- audit ----

// adminAuditData is the audit viewer's data.
type adminAuditData struct {
	Items      []projections.AuditEntry
	Filter     url.Values
	Next       []queryParam
	ExportLink string
	Checkpoint *projections.AuditCheckpoint
	Verify     *auditVerifyOutcome
	Verifying  bool
	CanVerify  bool
}

// auditVerifyOutcome is the last "Verify now".
type auditVerifyOutcome struct {
	By                 string
	Started, Finished  time.Time
	Took               time.Duration
	OK                 bool
	Err                string
	Through            uint64
	Entries, Events    int64
	Checkpoints, Count int
	Problems           []projections.AuditProblem
}

// auditFilters are the audit viewer's query parameters, as GET
// /api/v1/audit takes them.
var auditFilters = []string{"actor", "type", "subject", "correlation_id", "project", "since", "until"}

func (s *Server) uiAdminAudit(w http.ResponseWriter, r *http.Request) error {
	in := r.URL.Query()
	q := url.Values{}
	for _, name := range append(auditFilters, "page_token", "max_results") {
		if v := strings.TrimSpace(in.Get(name)); v != "" {
			q.Set(name, v)
		}
	}
	// <input type="datetime-local"> sends no zone: UTC, in the API's
	// RFC 3339.
	for _, name := range []string{"since", "until"} {
		if v := q.Get(name); v != "" {
			if t, err := uiTime(v); err == nil {
				q.Set(name, t.UTC().Format(time.RFC3339Nano))
			}
		}
	}
	api := r.Clone(r.Context())
	api.URL.RawQuery = q.Encode()
	page, err := s.auditPage(api) // GET /api/v1/audit: requires admin
	if err != nil {
		var pe *problemError
		if errors.As(err, &pe) && pe.code == "validation-failed" {
			return s.renderAudit(w, r, http.StatusBadRequest, pe.detail, nil, q)
		}
		return err
	}
	return s.renderAudit(w, r, http.StatusOK, "", &page, q)
}

func (s *Server) renderAudit(w http.ResponseWriter, r *http.Request, status int, errText string, page *AuditPage, q url.Values) error {
	d := adminAuditData{Filter: url.Values{}, CanVerify: s.deps.VerifyAudit != nil}
	for _, name := range auditFilters {
		d.Filter.Set(name, r.URL.Query().Get(name))
	}
	if page != nil {
		d.Items = page.Items
		d.Next = nextPage(q, page.NextPageToken, append(auditFilters, "max_results")...)
	}
	export := url.Values{}
	if p := q.Get("project"); p != "" {
		export.Set("project", p)
	}
	d.ExportLink = "/admin/audit/export"
	if len(export) > 0 {
		d.ExportLink += "?" + export.Encode()
	}
	c, err := s.deps.Queries.LatestAuditCheckpoint(r.Context())
	switch {
	case err == nil:
		d.Checkpoint = &c
	case !errors.Is(err, projections.ErrNotFound):
		return err
	}
	a := &s.admin
	a.mu.Lock()
	d.Verify, d.Verifying = a.verified, a.verifying
	a.mu.Unlock()
	pg := s.page(r, "Audit trail", "Audit", d)
	pg.Notice, pg.Error = notice(r), errText
	return s.render(w, status, "admin_audit", pg)
}

// uiAdminExportAudit is exportAudit, the same JSON Lines attachment as GET
// /api/v1/audit/export (the whole trail for admins, a project's for its
// owners; the UI offers it to admins).
func (s *Server) uiAdminExportAudit(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.requireAdmin(r, authz.ReadAudit); err != nil {
		return err
	}
	return s.exportAudit(w, r)
}

// auditVerifyTimeout bounds one in-process verification (it reads the
// whole stream and trail, about as long as the CLI's).
const auditVerifyTimeout = 30 * time.Minute

// uiAdminVerifyAudit starts projections.VerifyAudit (what `maestro audit
// verify` runs) in the background, one at a time per process; the audit
// page shows the last outcome.
func (s *Server) uiAdminVerifyAudit(w http.ResponseWriter, r *http.Request) error {
	p, err := s.requireAdmin(r, authz.ReadAudit)
	if err != nil {
		return err
	}
	if s.deps.VerifyAudit == nil {
		return problem("not-found", "audit verification is not available in this process: run `maestro audit verify`")
	}
	a := &s.admin
	a.mu.Lock()
	running := a.verifying
	a.verifying = true
	a.mu.Unlock()
	if running {
		seeOther(w, r, "/admin/audit", "verify-running")
		return nil
	}
	by := p.Email
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditVerifyTimeout)
		defer cancel()
		out := &auditVerifyOutcome{By: by, Started: time.Now()}
		res, err := s.deps.VerifyAudit(ctx)
		out.Finished = time.Now()
		out.Took = out.Finished.Sub(out.Started).Round(time.Millisecond)
		if err != nil {
			out.Err = err.Error()
		} else {
			out.OK, out.Through, out.Entries, out.Events = res.OK(), res.Through, res.Entries, res.Events
			out.Checkpoints, out.Count, out.Problems = res.Checkpoints, res.Count, res.Problems
		}
		a.mu.Lock()
		a.verified, a.verifying = out, false
		a.mu.Unlock()
	}()
	seeOther(w, r, "/admin/audit", "verify-started")
	return nil
}
