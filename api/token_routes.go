package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/projections"
)

// API tokens and service accounts. Tokens are managed from a signed-in
// session (authz.ManageTokens is session-only), so a stolen token cannot
// mint its own successors; their use is authenticated in authenticate.

var tokenViews = []string{projections.Tokens{}.Name(), projections.Users{}.Name()}

func (s *Server) tokenRoutes() []Route {
	return []Route{
		{Method: "POST", Pattern: "/api/v1/tokens", Command: true, Await: tokenViews, handle: command(s, http.StatusCreated, s.createToken)},
		{Method: "GET", Pattern: "/api/v1/tokens", handle: s.listTokens},
		{Method: "DELETE", Pattern: "/api/v1/tokens/{id}", Command: true, Await: tokenViews, handle: s.revokeToken},
		{Method: "POST", Pattern: "/api/v1/service-accounts", Command: true, Await: tokenViews, handle: command(s, http.StatusCreated, s.createServiceAccount)},
		{Method: "POST", Pattern: "/api/v1/service-accounts/{id}/tokens", Command: true, Await: tokenViews, handle: command(s, http.StatusCreated, s.createToken)},
		{Method: "GET", Pattern: "/api/v1/service-accounts/{id}/tokens", handle: s.listTokens},
	}
}

type createTokenRequest struct {
	account string // {id} of the service-account routes, "" elsewhere
	Name    string `json:"name"`
	// Project is a project slug or id: the token works only there.
	Project string `json:"project"`
	// Role is a project-role ceiling: viewer, editor, approver or owner.
	Role      string     `json:"role"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// APITokenResponse is an API token as the API shows it; Token (the secret)
// only in the answer that created it.
type APITokenResponse struct {
	projections.APIToken
	Token string `json:"token,omitempty"`
}

func tokenFromState(t identity.TokenState) projections.APIToken {
	out := projections.APIToken{ID: t.ID, UserID: t.UserID, Name: t.Name, Prefix: t.Prefix, ProjectID: t.ProjectID,
		Role: string(t.Role), CreatedAt: t.CreatedAt}
	if !t.ExpiresAt.IsZero() {
		out.ExpiresAt = &t.ExpiresAt
	}
	return out
}

// serviceAccountParam is {id} of the service-account routes, "" elsewhere.
func serviceAccountParam(r *http.Request) (string, error) {
	if chi.URLParam(r, "id") == "" {
		return "", nil
	}
	id, err := userIDParam(r)
	if err != nil {
		return "", problem("not-found", "service account not found")
	}
	return id, nil
}

func (req *createTokenRequest) readParams(r *http.Request) (err error) {
	req.account, err = serviceAccountParam(r)
	return err
}

func (req *createTokenRequest) validate() error {
	if req.Project != "" && (len(req.Project) > 200 || !handlers.PlainText(req.Project)) {
		return problem("validation-failed", "project must be a project slug or id")
	}
	return nil
}

func (s *Server) createToken(c *call, req createTokenRequest) (APITokenResponse, uint64, error) {
	in := identity.CreateTokenInput{Name: req.Name, Role: authz.ProjectRole(req.Role), ServiceAccount: req.account}
	if req.ExpiresAt != nil {
		in.ExpiresAt = *req.ExpiresAt
	}
	if req.Project != "" {
		// The project must exist and the token's owner must see it: the
		// caller for an own token; an admin creating a service account's
		// token sees every project, and the account's membership decides
		// what the token may do there.
		ps, err := s.deps.Registry.Project(c.ctx, c.who, req.Project)
		if err != nil {
			return APITokenResponse{}, 0, err
		}
		in.ProjectID = ps.ID
	}
	t, secret, seq, err := s.deps.Identity.CreateToken(c.ctx, c.meta, c.who, in)
	if err != nil {
		return APITokenResponse{}, 0, err
	}
	c.w.Header().Set("Cache-Control", "no-store")
	// Whatever Prefer says, the answer waits until the token works: its
	// secret cannot be looked up in the event store (only its hash is
	// there), so a client using it at once would otherwise get a 401. A wait
	// that times out still answers (202): the secret exists only here.
	c.r.Header.Del("Prefer")
	return APITokenResponse{APIToken: tokenFromState(t), Token: secret}, seq, nil
}

// APITokenPage is a page of API tokens.
type APITokenPage = projections.Page[projections.APIToken]

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	page, err := s.tokensPage(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// tokensPage is GET /api/v1/tokens or /api/v1/service-accounts/{id}/tokens
// (and the admin UI's token pages): a page of the caller's own tokens, or
// of a service account's for an admin; from a session only.
func (s *Server) tokensPage(r *http.Request) (APITokenPage, error) {
	account, err := serviceAccountParam(r)
	if err != nil {
		return APITokenPage{}, err
	}
	p, _ := principal(r.Context())
	owner := p.UserID
	if account != "" {
		if !authz.Can(p, authz.ManageServiceAccounts, authz.Resource{}) {
			return APITokenPage{}, problem("forbidden", "only admins, signed in, manage service accounts")
		}
		u, err := s.deps.Queries.User(r.Context(), account)
		if errors.Is(err, projections.ErrNotFound) || (err == nil && u.Kind != events.KindServiceAccount) {
			return APITokenPage{}, problem("not-found", "service account not found")
		}
		if err != nil {
			return APITokenPage{}, err
		}
		owner = account
	} else if !authz.Can(p, authz.ManageTokens, authz.Resource{}) {
		return APITokenPage{}, problem("forbidden", "API tokens are managed from a signed-in session, not with a token")
	}
	n, err := pageSize(r)
	if err != nil {
		return APITokenPage{}, err
	}
	live, err := boolParam(r, "live")
	if err != nil {
		return APITokenPage{}, err
	}
	if err := s.awaitMinSequence(r); err != nil {
		return APITokenPage{}, err
	}
	page, err := s.deps.Queries.ListTokens(r.Context(), owner, live, s.deps.Now(), pageTokenParam(r), n)
	if err != nil {
		return APITokenPage{}, pageError(err)
	}
	return page, nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	if err := s.revokeTokenOf(w, r); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeTokenOf is DELETE /api/v1/tokens/{id} (and the admin UI's revoke
// form) but its answer: done once every instance refuses the token.
func (s *Server) revokeTokenOf(w http.ResponseWriter, r *http.Request) error {
	id, err := userIDParam(r)
	if err != nil {
		return problem("not-found", "token not found")
	}
	p, _ := principal(r.Context())
	seq, err := s.deps.Identity.RevokeToken(r.Context(), meta(r), p, id)
	if err != nil {
		return err
	}
	// Like logout: the answer waits until every instance refuses the
	// token, whatever Prefer says.
	return s.awaitRevocation(w, r, seq, projections.Tokens{}.Name())
}

type createServiceAccountRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

func (s *Server) createServiceAccount(c *call, req createServiceAccountRequest) (UserResponse, uint64, error) {
	if req.Role == "" {
		req.Role = string(authz.RoleMember)
	}
	u, seq, err := s.deps.Identity.CreateServiceAccount(c.ctx, c.meta, c.who, req.Name, authz.Role(req.Role))
	if err != nil {
		return UserResponse{}, 0, err
	}
	c.locate("/api/v1/users/" + u.ID)
	return userFromState(u), seq, nil
}
