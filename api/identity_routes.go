package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/projections"
)

// UserResponse is a user as the API returns it.
type UserResponse struct {
	ID     string `json:"id"`
	Email  string `json:"email"`
	Name   string `json:"name"`
	Role   string `json:"role"`
	Active bool   `json:"active"`
	// Kind is "user" (a person) or "service_account".
	Kind      string    `json:"kind"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func userFromState(u identity.UserState) UserResponse {
	kind := "user"
	if u.Kind != "" {
		kind = u.Kind
	}
	return UserResponse{ID: u.ID, Email: u.Email, Name: u.Name, Role: string(u.Role), Active: u.Active, Kind: kind,
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

func userFromProjection(u projections.User) UserResponse {
	return UserResponse(u)
}

// TokenResponse is the body of a login or refresh.
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// ReadyStatus is the body of GET /readyz.
type ReadyStatus struct {
	// Status is "ready", or "degraded" (still 200) when a check is
	// degraded, e.g. a projection has quarantined events it cannot store
	// (one poison event must not take every instance out of the load
	// balancer). When a required dependency is down the answer is 503 with
	// a ReadyProblem instead.
	Status string `json:"status"`
	// Checks is each dependency's state, by name (postgres, nats,
	// artifacts, projections).
	Checks map[string]CheckResult `json:"checks"`
	// Quarantined counts quarantined events by projection, when any (the
	// projections check's, repeated where clients read it before checks).
	Quarantined map[string]int64 `json:"quarantined,omitempty"`
}

// ReadyProblem is the body of a 503 from GET /readyz: the unavailable
// problem, whose detail names the dependencies that are down, with every
// dependency's state as the extension member checks.
type ReadyProblem struct {
	Problem
	Checks map[string]CheckResult `json:"checks"`
}

// CheckResult is one dependency's state in GET /readyz. It says what, never
// why: no error strings, addresses or names of internals (the route is
// public).
type CheckResult struct {
	// Status is "ok", "degraded" or "stuck" (ready: a projection far
	// behind and not moving is for alerts, not for the load balancer), or
	// "unreachable" or "timeout" (not ready).
	Status string `json:"status"`
	// Lag is each projection's events behind its stream's head.
	Lag map[string]uint64 `json:"lag,omitempty"`
	// Quarantined counts quarantined events by projection, when any.
	Quarantined map[string]int64 `json:"quarantined,omitempty"`
}

// ReadyCheck is one dependency GET /readyz probes (Deps.Ready).
type ReadyCheck struct {
	Name string
	// Probe reports the dependency's state; it should honour ctx, and is
	// reported as "timeout" if it does not answer within readyProbeTimeout.
	Probe func(ctx context.Context) CheckResult
}

// readyProbeTimeout bounds each readiness probe: a probe of a dependency
// that hangs (a partitioned NATS, a full Postgres pool) answers "timeout"
// instead of holding the load balancer's request.
const readyProbeTimeout = 2 * time.Second

// readyAge is how long a /readyz result is reused: load balancers (and
// anyone: the route is public) may ask many times a second, and each
// answer costs a few queries and requests.
const readyAge = time.Second

// readiness is what GET /readyz remembers between requests.
type readiness struct {
	mu     sync.Mutex // held while probing: concurrent requests share a result
	at     time.Time
	checks map[string]CheckResult
	// busy names the checks whose probe has not returned yet.
	busy sync.Map
}

// readyz answers 200 with ReadyStatus (ready or degraded), or 503 with
// Retry-After and ReadyProblem (problem+json like every error, naming what
// is down), from probes at most readyAge old (probeReady).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	checks := s.probeReady(r.Context())
	st := ReadyStatus{Status: "ready", Checks: checks}
	var down []string
	for name, res := range checks {
		for p, q := range res.Quarantined {
			if st.Quarantined == nil {
				st.Quarantined = map[string]int64{}
			}
			st.Quarantined[p] = q
		}
		switch res.Status {
		case "ok":
		case "degraded", "stuck":
			// Shared by every instance (a projection behind is behind for
			// all): not ready would take them all out of the load balancer
			// and turn stale reads into an outage of writes too.
			if st.Status == "ready" {
				st.Status = "degraded"
			}
		default:
			down = append(down, name+" "+res.Status)
		}
	}
	if len(down) > 0 {
		st.Status = "unavailable"
	}
	if st.Status == "unavailable" {
		slices.Sort(down)
		pe := &problemError{code: "unavailable", detail: "not ready: " + strings.Join(down, ", "), retryAfter: 5 * time.Second}
		writeProblemWith(w, r, pe, func(p Problem) any { return ReadyProblem{Problem: p, Checks: st.Checks} })
		return nil
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// probeReady runs every check at once, each bounded by readyProbeTimeout,
// unless the last results are younger than readyAge. A check whose
// previous probe has not returned (a hung mount, a stuck socket) is
// "timeout" without a new probe: a hung dependency costs one goroutine,
// not one per request.
func (s *Server) probeReady(ctx context.Context) map[string]CheckResult {
	rd := &s.ready
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.checks != nil && time.Since(rd.at) < readyAge {
		return rd.checks
	}
	type named struct {
		name string
		res  CheckResult
	}
	results := make(chan named, len(s.deps.Ready))
	for _, c := range s.deps.Ready {
		if _, running := rd.busy.LoadOrStore(c.Name, true); running {
			results <- named{c.Name, CheckResult{Status: "timeout"}}
			continue
		}
		go func() {
			// Not the request's context: a probe that outlives it is
			// still the check's one probe in flight.
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyProbeTimeout)
			defer cancel()
			answer := make(chan CheckResult, 1) // buffered: a late probe never blocks
			go func() {
				defer rd.busy.Delete(c.Name)
				answer <- c.Probe(pctx)
			}()
			select {
			case res := <-answer:
				results <- named{c.Name, res}
			case <-pctx.Done():
				results <- named{c.Name, CheckResult{Status: "timeout"}}
			}
		}()
	}
	checks := map[string]CheckResult{}
	for range s.deps.Ready {
		n := <-results
		checks[n.name] = n.res
	}
	rd.checks, rd.at = checks, time.Now()
	return checks
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(auth.JWKS(s.deps.Keys))
	return nil
}

type registerRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) error {
	if !s.deps.RegistrationOpen {
		return problem("registration-closed", "ask an administrator for an account")
	}
	var req registerRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u, seq, err := s.deps.Identity.Register(r.Context(), meta(r), identity.RegisterInput{
		Email: req.Email, Password: req.Password, Name: req.Name, Role: authz.RoleViewer, Source: "self-registration",
		ClientIP: clientIP(r)})
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusCreated, seq, userFromState(u))
	return nil
}

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Email) > identity.MaxEmailLen*4 || len(req.Password) > auth.MaxPasswordBytes {
		return problem("invalid-credentials", "email or password is incorrect")
	}
	pair, seq, err := s.deps.Identity.Login(r.Context(), meta(r), identity.LoginInput{
		Email: req.Email, Password: req.Password, ClientIP: clientIP(r), UserAgent: r.UserAgent()})
	if err != nil {
		return err
	}
	s.respondCommand(w, r, http.StatusOK, seq, tokenResponse(pair))
	return nil
}

func tokenResponse(p identity.TokenPair) TokenResponse {
	return TokenResponse{AccessToken: p.AccessToken, RefreshToken: p.RefreshToken, TokenType: "Bearer", ExpiresIn: p.ExpiresIn}
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) error {
	var req refreshRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" || len(req.RefreshToken) > maxTokenLen {
		return problem("invalid-token", "the refresh token is invalid or expired")
	}
	pair, seq, err := s.deps.Identity.Refresh(r.Context(), meta(r), req.RefreshToken)
	if err != nil {
		if seq > 0 {
			// A reused token revoked the session (seq is the revocation, or
			// the session's version when it was revoked already): the 401
			// goes out only once every instance refuses the session's access
			// tokens, or the client would still hold a working one.
			if perr := s.awaitRevocation(w, r, seq, projections.Sessions{}.Name()); perr != nil {
				return perr
			}
		}
		return err
	}
	s.respondCommand(w, r, http.StatusOK, seq, tokenResponse(pair))
	return nil
}

// awaitRevocation waits, bounded by WaitTimeout, until the named projections
// have applied seq. Security-relevant commands (logout, deactivation, role
// changes, refresh-reuse revocation) use it instead of respondCommand: they
// ignore Prefer: respond-async, because the authenticator decides on those
// projections and an answer before them would claim a revocation that is
// not yet in force. A timeout is a 503 revocation-pending, never a success:
// the change is durable and a retry answers once it is visible.
func (s *Server) awaitRevocation(w http.ResponseWriter, r *http.Request, seq uint64, names ...string) error {
	w.Header().Set("Maestro-Sequence", strconv.FormatUint(seq, 10))
	if !s.waitApplied(r.Context(), seq, names...) {
		return &problemError{code: "revocation-pending", retryAfter: time.Second,
			detail: "the change is recorded (sequence " + strconv.FormatUint(seq, 10) + ") but not yet in force everywhere; retry the request"}
	}
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	p, _ := principal(r.Context())
	seq, err := s.deps.Identity.Logout(r.Context(), meta(r), p)
	if err != nil {
		return err
	}
	if seq > 0 {
		// Logout must be visible to every instance before we answer, even
		// if the client asked for async: that is the whole point of it.
		if err := s.awaitRevocation(w, r, seq, projections.Sessions{}.Name()); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) error {
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	p, _ := principal(r.Context())
	if !authz.Can(p, authz.ReadSelf, authz.Resource{}) {
		return problem("forbidden", "not allowed")
	}
	u, err := s.deps.Queries.User(r.Context(), p.UserID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userFromProjection(u))
	return nil
}

// MaxPageSize is the largest max_results any list accepts.
const MaxPageSize = 200

func pageSize(r *http.Request) (int, error) {
	v := r.URL.Query().Get("max_results")
	if v == "" {
		return 50, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxPageSize {
		return 0, problem("validation-failed", "max_results must be between 1 and "+strconv.Itoa(MaxPageSize))
	}
	return n, nil
}

func pageTokenParam(r *http.Request) string { return r.URL.Query().Get("page_token") }

func pageError(err error) error {
	if errors.Is(err, projections.ErrBadPageToken) {
		return problem("invalid-page-token", "use the next_page_token of a previous response")
	}
	return err
}

func (s *Server) requireAdmin(r *http.Request, action authz.Action) (authz.Principal, error) {
	p, _ := principal(r.Context())
	if !authz.Can(p, action, authz.Resource{}) {
		return p, problem("forbidden", "this requires the admin role")
	}
	return p, nil
}

// UserPage is a page of users.
type UserPage struct {
	Items         []UserResponse `json:"items"`
	NextPageToken string         `json:"next_page_token,omitempty"`
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	out, err := s.usersPage(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// usersPage is GET /api/v1/users (and the admin UI's users page): a page
// of every user, for admins.
func (s *Server) usersPage(r *http.Request) (UserPage, error) {
	if _, err := s.requireAdmin(r, authz.ListUsers); err != nil {
		return UserPage{}, err
	}
	n, err := pageSize(r)
	if err != nil {
		return UserPage{}, err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return UserPage{}, err
	}
	page, err := s.deps.Queries.ListUsers(r.Context(), pageTokenParam(r), n)
	if err != nil {
		return UserPage{}, pageError(err)
	}
	out := UserPage{Items: make([]UserResponse, 0, len(page.Items)), NextPageToken: page.NextPageToken}
	for _, u := range page.Items {
		out.Items = append(out.Items, userFromProjection(u))
	}
	return out, nil
}

func userIDParam(r *http.Request) (string, error) { return pathID(r, "id", "user") }

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.requireAdmin(r, authz.ListUsers); err != nil {
		return err
	}
	id, err := userIDParam(r)
	if err != nil {
		return err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	u, err := s.deps.Queries.User(r.Context(), id)
	if errors.Is(err, projections.ErrNotFound) {
		return problem("not-found", "user not found")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userFromProjection(u))
	return nil
}

type patchUserRequest struct {
	Role   *string `json:"role"`
	Active *bool   `json:"active"`
}

func (s *Server) patchUser(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.requireAdmin(r, authz.UpdateUser); err != nil {
		return err
	}
	id, err := userIDParam(r)
	if err != nil {
		return err
	}
	var req patchUserRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u, err := s.updateUser(w, r, id, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

// updateUser is PATCH /api/v1/users/{id} after decoding (and the admin
// UI's role and activation forms): an admin changes a user's global role
// or activation, answered once the authenticator's projections have it.
func (s *Server) updateUser(w http.ResponseWriter, r *http.Request, id string, req patchUserRequest) (UserResponse, error) {
	p, err := s.requireAdmin(r, authz.UpdateUser)
	if err != nil {
		return UserResponse{}, err
	}
	if req.Role == nil && req.Active == nil {
		return UserResponse{}, problem("validation-failed", "send role and/or active")
	}
	var in identity.UpdateUserInput
	if req.Role != nil {
		if !authz.ValidRole(*req.Role) {
			return UserResponse{}, problem("validation-failed", "role must be one of viewer, member, admin")
		}
		role := authz.Role(*req.Role)
		in.Role = &role
	}
	in.Active = req.Active
	u, seq, err := s.deps.Identity.UpdateUser(r.Context(), meta(r), p, id, in)
	if err != nil {
		return UserResponse{}, err
	}
	// Role and activation are what the authenticator reads (users joined
	// with sessions; deactivation revokes sessions), so the answer waits for
	// both whatever Prefer says.
	if seq > 0 {
		if err := s.awaitRevocation(w, r, seq, projections.Users{}.Name(), projections.Sessions{}.Name()); err != nil {
			return UserResponse{}, err
		}
	}
	return userFromState(u), nil
}

// AuditPage is a page of audit entries.
type AuditPage = projections.Page[projections.AuditEntry]

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	page, err := s.auditPage(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// auditPage is GET /api/v1/audit (and the admin UI's audit viewer): a
// page of audit entries matching the query's filters, for admins.
func (s *Server) auditPage(r *http.Request) (AuditPage, error) {
	if _, err := s.requireAdmin(r, authz.ReadAudit); err != nil {
		return AuditPage{}, err
	}
	q := r.URL.Query()
	n, err := pageSize(r)
	if err != nil {
		return AuditPage{}, err
	}
	f := projections.AuditFilter{Actor: q.Get("actor"), Type: q.Get("type"), Subject: q.Get("subject"),
		CorrelationID: q.Get("correlation_id"), PageToken: pageTokenParam(r), Limit: n}
	for _, v := range []string{f.Actor, f.Type, f.Subject, f.CorrelationID, q.Get("project")} {
		if len(v) > 256 || !handlers.PlainText(v) {
			return AuditPage{}, problem("validation-failed", "filters are at most 256 characters of text without control characters")
		}
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return AuditPage{}, problem("validation-failed", name+" must be an RFC 3339 timestamp")
			}
			*dst = t
		}
	}
	if ref := q.Get("project"); ref != "" {
		// A slug or an id, as everywhere; entries name the project's id.
		proj, err := s.readableProjectRef(r, ref)
		if err != nil {
			return AuditPage{}, err
		}
		f.Project = proj.ID
	}
	if err := s.awaitMinSequence(r, projections.Audit{}.Name()); err != nil {
		return AuditPage{}, err
	}
	page, err := s.deps.Queries.ListAudit(r.Context(), f)
	if err != nil {
		return AuditPage{}, pageError(err)
	}
	return page, nil
}

// ProjectionStatus is the body of GET /projections: each stream's last
// sequence and each projection's progress in the stream it follows.
type ProjectionStatus struct {
	StreamLastSeq        uint64               `json:"stream_last_seq"`
	MetricsStreamLastSeq uint64               `json:"metrics_stream_last_seq"`
	Projections          []projections.Status `json:"projections"`
}

func (s *Server) projectionStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := s.projectionStatusOf(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// projectionStatusOf is GET /api/v1/projections (and the admin UI's
// system status), for admins.
func (s *Server) projectionStatusOf(r *http.Request) (ProjectionStatus, error) {
	if _, err := s.requireAdmin(r, authz.ReadProjSys); err != nil {
		return ProjectionStatus{}, err
	}
	heads, err := s.deps.Heads(r.Context())
	if err != nil {
		return ProjectionStatus{}, err
	}
	st, err := s.deps.Queries.Statuses(r.Context(), heads)
	if err != nil {
		return ProjectionStatus{}, err
	}
	return ProjectionStatus{StreamLastSeq: heads.Events, MetricsStreamLastSeq: heads.Metrics, Projections: st}, nil
}
