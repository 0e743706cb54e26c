package api_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/projections"
)

// createToken creates an API token through the API as the session's user
// (or, with path, for a service account) and returns it with its secret.
func createToken(t *testing.T, e *testenv.Env, session string, body map[string]any, path ...string) api.APITokenResponse {
	t.Helper()
	p := "/api/v1/tokens"
	if len(path) > 0 {
		p = path[0]
	}
	r := call(t, e, 201, "POST", p, session, body)
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("token creation answered without Cache-Control: no-store")
	}
	tok := asJSON[api.APITokenResponse](t, r)
	if !strings.HasPrefix(tok.Token, "mae_") || len(tok.Token) != 56 || !strings.HasPrefix(tok.Token, tok.Prefix) {
		t.Fatalf("created token = %+v", tok)
	}
	return tok
}

func basic(secret string) []string {
	return []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("mlflow-user:"+secret))}
}

// auditHas polls the audit trail (as admin) until an entry of typ whose
// summary contains want appears, or fails after a deadline.
func auditHas(t *testing.T, e *testenv.Env, admin, typ, want string) projections.AuditEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		page := asJSON[projections.Page[projections.AuditEntry]](t, call(t, e, 200, "GET", "/api/v1/audit?type="+typ+"&max_results=200", admin, nil))
		for _, a := range page.Items {
			if strings.Contains(a.Summary, want) {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s audit entry mentioning %q in %d entries", typ, want, len(page.Items))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// API tokens end to end: created from a session (secret once, hash only),
// accepted as Bearer and as HTTP Basic's password, listed without secrets,
// audited (creation, first use from an address, revocation), unable to
// manage tokens themselves, and dead on every request once revoked.
func TestAPITokenLifecycle(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@tokens.test").AccessToken
	ada := regUser(e, admin, "ada@tokens.test", "member")

	tok := createToken(t, e, ada.Token, map[string]any{"name": "ci"})
	if tok.UserID != ada.ID || tok.Name != "ci" || tok.ProjectID != "" || tok.Role != "" || tok.ExpiresAt != nil {
		t.Fatalf("token = %+v", tok)
	}
	for _, how := range [][]string{nil, basic(tok.Token)} {
		bearer := tok.Token
		if how != nil {
			bearer = ""
		}
		me := asJSON[api.UserResponse](t, call(t, e, 200, "GET", "/api/v1/auth/me", bearer, nil, how...))
		if me.ID != ada.ID || me.Kind != "user" {
			t.Fatalf("me with the token = %+v", me)
		}
	}
	// A token acts as its owner: a member creates projects with it.
	call(t, e, 201, "POST", "/api/v1/projects", tok.Token, map[string]any{"name": "Token Made"})

	// Tokens are managed from a session only.
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/tokens", tok.Token, map[string]any{"name": "child"})
	callProblem(t, e, 403, "forbidden", "GET", "/api/v1/tokens", tok.Token, nil)
	callProblem(t, e, 403, "forbidden", "DELETE", "/api/v1/tokens/"+tok.ID, tok.Token, nil)
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/auth/logout", tok.Token, nil)

	// Listed without secret or hash; last use recorded.
	list := call(t, e, 200, "GET", "/api/v1/tokens", ada.Token, nil)
	if strings.Contains(string(list.Body), tok.Token) || strings.Contains(string(list.Body), "hash") {
		t.Fatalf("the listing shows the secret: %s", list.Body)
	}
	page := asJSON[api.APITokenPage](t, list)
	if len(page.Items) != 1 || page.Items[0].ID != tok.ID || page.Items[0].LastUsedAt == nil || page.Items[0].LastUsedIP != "127.0.0.1" {
		t.Fatalf("tokens = %+v", page.Items)
	}
	// Another user sees none of them, and cannot revoke them.
	bob := regUser(e, admin, "bob@tokens.test", "member")
	if p := asJSON[api.APITokenPage](t, call(t, e, 200, "GET", "/api/v1/tokens", bob.Token, nil)); len(p.Items) != 0 {
		t.Fatalf("bob lists %+v", p.Items)
	}
	callProblem(t, e, 404, "not-found", "DELETE", "/api/v1/tokens/"+tok.ID, bob.Token, nil)

	// The audit trail shows creation and first use, never the secret or its hash.
	created := auditHas(t, e, admin, "maestro.token.created.v1", tok.ID)
	if strings.Contains(string(created.Data), "hash") {
		t.Fatalf("audit entry shows the hash: %+v", created.Data)
	}
	auditHas(t, e, admin, "maestro.token.used.v1", "new address 127.0.0.1")

	// Revocation is in force when DELETE answers, on Bearer and Basic alike.
	call(t, e, 204, "DELETE", "/api/v1/tokens/"+tok.ID, ada.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/auth/me", tok.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/auth/me", "", nil, basic(tok.Token)...)
	call(t, e, 204, "DELETE", "/api/v1/tokens/"+tok.ID, ada.Token, nil) // twice is fine
	auditHas(t, e, admin, "maestro.token.revoked.v1", tok.ID)
	if p := asJSON[api.APITokenPage](t, call(t, e, 200, "GET", "/api/v1/tokens?live=true", ada.Token, nil)); len(p.Items) != 0 {
		t.Fatalf("live tokens after revocation: %+v", p.Items)
	}

	// Malformed credentials are refused before any lookup.
	for _, h := range [][]string{
		{"Authorization", "Bearer mae_short"},
		{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("ada:"+testenv.Password))},
		{"Authorization", "Basic !!!"},
		{"Authorization", "Token " + tok.Token},
	} {
		callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/auth/me", "", nil, h...)
	}

	// Deactivating the owner kills its tokens at once, and for good: a
	// reactivation does not bring them back (as with sessions).
	tok2 := createToken(t, e, ada.Token, map[string]any{"name": "second"})
	call(t, e, 200, "GET", "/api/v1/auth/me", tok2.Token, nil)
	call(t, e, 200, "PATCH", "/api/v1/users/"+ada.ID, admin, map[string]any{"active": false})
	callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/auth/me", tok2.Token, nil)
	call(t, e, 200, "PATCH", "/api/v1/users/"+ada.ID, admin, map[string]any{"active": true})
	callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/auth/me", tok2.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "POST", "/api/v1/projects", tok2.Token, map[string]any{"name": "Zombie"})
}

// Creation rules: validation, expiry, and an Idempotency-Key never replays
// a secret (the retry is refused; the first answer was the only copy).
func TestAPITokenCreation(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@tokens2.test").AccessToken
	ada := regUser(e, admin, "ada@tokens2.test", "member")
	for _, body := range []map[string]any{
		{},
		{"name": ""},
		{"name": strings.Repeat("n", 101)},
		{"name": "bad\x00name"},
		{"name": "x", "role": "admin"},
		{"name": "x", "expires_at": e.Clock.Now().Add(-time.Minute)},
		{"name": "x", "expires_at": e.Clock.Now().Add(6 * 365 * 24 * time.Hour)},
	} {
		callProblem(t, e, 400, "validation-failed", "POST", "/api/v1/tokens", ada.Token, body)
	}
	callProblem(t, e, 400, "malformed-json", "POST", "/api/v1/tokens", ada.Token, map[string]any{"name": "x", "scopes": []string{"all"}})
	callProblem(t, e, 404, "not-found", "POST", "/api/v1/tokens", ada.Token, map[string]any{"name": "x", "project": "nowhere"})

	// Expiry: the token works until expires_at, then never again.
	tok := createToken(t, e, ada.Token, map[string]any{"name": "short", "expires_at": e.Clock.Now().Add(time.Hour)})
	call(t, e, 200, "GET", "/api/v1/auth/me", tok.Token, nil)
	e.Clock.Advance(time.Hour)
	callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/auth/me", tok.Token, nil)
	ada.Token = e.Login("ada@tokens2.test", testenv.Password).AccessToken // the hour ended the access token too

	body := map[string]any{"name": "retried"}
	createToken(t, e, ada.Token, body) // the same request without a key is another token
	r := e.Do("POST", "/api/v1/tokens", ada.Token, body, "Idempotency-Key", "tok-1")
	if r.Status != 201 {
		t.Fatalf("keyed creation: %d %s", r.Status, r.Body)
	}
	again := e.Do("POST", "/api/v1/tokens", ada.Token, body, "Idempotency-Key", "tok-1")
	if _, err := checkProblem(again, 409, "token-exists"); err != nil {
		t.Fatalf("retried creation: %v", err)
	}
	if strings.Contains(string(again.Body), "mae_") || again.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("a retry replayed the secret: %s", again.Body)
	}
}

// Service accounts: admins create them and their tokens; they cannot log
// in, have no admin role, and act through tokens with their own rights.
func TestServiceAccounts(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@svc.test").AccessToken
	ada := regUser(e, admin, "ada@svc.test", "member")

	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/service-accounts", ada.Token, map[string]any{"name": "deployer"})
	callProblem(t, e, 400, "validation-failed", "POST", "/api/v1/service-accounts", admin, map[string]any{"name": "root", "role": "admin"})
	r := call(t, e, 201, "POST", "/api/v1/service-accounts", admin, map[string]any{"name": "deployer"})
	svc := asJSON[api.UserResponse](t, r)
	if svc.Kind != "service_account" || svc.Email != "" || svc.Role != "member" || !svc.Active {
		t.Fatalf("service account = %+v", svc)
	}
	callProblem(t, e, 400, "validation-failed", "PATCH", "/api/v1/users/"+svc.ID, admin, map[string]any{"role": "admin"})
	// Only for service accounts, only by admins.
	callProblem(t, e, 404, "not-found", "POST", "/api/v1/service-accounts/"+ada.ID+"/tokens", admin, map[string]any{"name": "x"})
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/service-accounts/"+svc.ID+"/tokens", ada.Token, map[string]any{"name": "x"})

	tok := createToken(t, e, admin, map[string]any{"name": "deploy"}, "/api/v1/service-accounts/"+svc.ID+"/tokens")
	// With an Idempotency-Key the secret is not kept for replays either.
	keyed := e.Do("POST", "/api/v1/service-accounts/"+svc.ID+"/tokens", admin, map[string]any{"name": "keyed"}, "Idempotency-Key", "svc-1")
	again := e.Do("POST", "/api/v1/service-accounts/"+svc.ID+"/tokens", admin, map[string]any{"name": "keyed"}, "Idempotency-Key", "svc-1")
	if _, err := checkProblem(again, 409, "token-exists"); keyed.Status != 201 || err != nil || strings.Contains(string(again.Body), "mae_") {
		t.Fatalf("keyed service-account token: %d, then %v %s", keyed.Status, err, again.Body)
	}
	if tok.UserID != svc.ID {
		t.Fatalf("token owner = %s, want the service account %s", tok.UserID, svc.ID)
	}
	me := asJSON[api.UserResponse](t, call(t, e, 200, "GET", "/api/v1/auth/me", tok.Token, nil))
	if me.ID != svc.ID {
		t.Fatalf("me = %+v", me)
	}
	// It sees only projects it is a member of.
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", "/api/v1/projects", ada.Token, map[string]any{"name": "Deployed"}))
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/projects/"+proj.Slug, tok.Token, nil)
	call(t, e, 200, "PUT", "/api/v1/projects/"+proj.Slug+"/members/"+svc.ID, ada.Token, map[string]any{"role": "editor"})
	call(t, e, 201, "POST", "/api/v1/projects/"+proj.Slug+"/models", tok.Token, map[string]any{"name": "m"})
	list := asJSON[api.APITokenPage](t, call(t, e, 200, "GET", "/api/v1/service-accounts/"+svc.ID+"/tokens", admin, nil))
	if len(list.Items) != 2 || list.Items[0].ID != tok.ID {
		t.Fatalf("service account tokens = %+v", list.Items)
	}
	// An admin revokes a service account's token.
	call(t, e, 204, "DELETE", "/api/v1/tokens/"+tok.ID, admin, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/auth/me", tok.Token, nil)
}

// A project-scoped token is a stranger outside its project and has no
// global powers; a role ceiling caps what it may do inside.
func TestAPITokenScopeAndCeiling(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@scope.test").AccessToken
	ada := regUser(e, admin, "ada@scope.test", "member")
	a := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", "/api/v1/projects", ada.Token, map[string]any{"name": "Scope A"}))
	b := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", "/api/v1/projects", ada.Token, map[string]any{"name": "Scope B"}))

	scoped := createToken(t, e, ada.Token, map[string]any{"name": "a only", "project": a.Slug})
	if scoped.ProjectID != a.ID {
		t.Fatalf("scoped token = %+v", scoped)
	}
	call(t, e, 201, "POST", "/api/v1/projects/"+a.Slug+"/models", scoped.Token, map[string]any{"name": "m"})
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/projects/"+b.Slug, scoped.Token, nil)
	callProblem(t, e, 404, "not-found", "POST", "/api/v1/projects/"+b.ID+"/models", scoped.Token, map[string]any{"name": "m"})
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/projects", scoped.Token, map[string]any{"name": "Scope C"})
	projects := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", "/api/v1/projects", scoped.Token, nil))
	if len(projects.Items) != 1 || projects.Items[0].ID != a.ID {
		t.Fatalf("a scoped token lists %+v", projects.Items)
	}

	capped := createToken(t, e, ada.Token, map[string]any{"name": "read only", "role": "viewer"})
	call(t, e, 200, "GET", "/api/v1/projects/"+b.Slug+"/models", capped.Token, nil)
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/projects/"+b.Slug+"/models", capped.Token, map[string]any{"name": "m"})
	callProblem(t, e, 403, "forbidden", "PATCH", "/api/v1/projects/"+a.Slug, capped.Token, map[string]any{"description": "x"})

	// An admin's scoped token is no admin: no users, no audit, no other project.
	adminScoped := createToken(t, e, admin, map[string]any{"name": "admin a", "project": a.ID})
	callProblem(t, e, 403, "forbidden", "GET", "/api/v1/users", adminScoped.Token, nil)
	callProblem(t, e, 403, "forbidden", "GET", "/api/v1/audit", adminScoped.Token, nil)
	call(t, e, 200, "GET", "/api/v1/projects/"+a.Slug, adminScoped.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/projects/"+b.Slug, adminScoped.Token, nil)
	// An unlimited admin token is an admin, but manages no tokens and
	// changes no users (a stolen one must not make new admins).
	adminTok := createToken(t, e, admin, map[string]any{"name": "admin all"})
	call(t, e, 200, "GET", "/api/v1/users", adminTok.Token, nil)
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/service-accounts", adminTok.Token, map[string]any{"name": "x"})
	callProblem(t, e, 403, "forbidden", "PATCH", "/api/v1/users/"+ada.ID, adminTok.Token, map[string]any{"role": "admin"})
	// An admin's token with only a ceiling is no admin either: it acts
	// with the admin's memberships (none here), capped.
	adminCapped := createToken(t, e, admin, map[string]any{"name": "admin capped", "role": "editor"})
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/projects/"+b.Slug, adminCapped.Token, nil)
	if l := asJSON[api.ProjectPage](t, call(t, e, 200, "GET", "/api/v1/projects", adminCapped.Token, nil)); len(l.Items) != 0 {
		t.Fatalf("an admin's capped token lists %+v", l.Items)
	}
	// Losing the membership loses the scoped token's project.
	owner2 := regUser(e, admin, "owner2@scope.test", "member")
	call(t, e, 200, "PUT", "/api/v1/projects/"+a.Slug+"/members/"+owner2.ID, ada.Token, map[string]any{"role": "owner"})
	call(t, e, 204, "DELETE", "/api/v1/projects/"+a.Slug+"/members/"+ada.ID, owner2.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/projects/"+a.Slug, scoped.Token, nil)
}

// The read model keeps as many recent addresses as the write side folds.
func TestTokenAddressesAgree(t *testing.T) {
	if projections.TokenAddresses != identity.TokenAddresses {
		t.Fatalf("projections.TokenAddresses = %d, identity.TokenAddresses = %d", projections.TokenAddresses, identity.TokenAddresses)
	}
}

// walkTokens exercises the token and service-account operations for the
// OpenAPI conformance walk and returns the statuses it provoked.
func walkTokens(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	u := regUser(e, admin, "walk-tokens@example.com", "member")
	tok := createToken(t, e, u.Token, map[string]any{"name": "walk"})
	// Prefer: respond-async is ignored: the token must work when the answer arrives.
	async := asJSON[api.APITokenResponse](t, call(t, e, 201, "POST", "/api/v1/tokens", u.Token, map[string]any{"name": "async"}, "Prefer", "respond-async"))
	call(t, e, 200, "GET", "/api/v1/auth/me", async.Token, nil)
	callProblem(t, e, 400, "validation-failed", "POST", "/api/v1/tokens", u.Token, map[string]any{"name": ""})
	callProblem(t, e, 401, "unauthenticated", "POST", "/api/v1/tokens", "", map[string]any{"name": "x"})
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/tokens", tok.Token, map[string]any{"name": "x"})
	callProblem(t, e, 404, "not-found", "POST", "/api/v1/tokens", u.Token, map[string]any{"name": "x", "project": "no-such-project"})
	call(t, e, 201, "POST", "/api/v1/tokens", u.Token, map[string]any{"name": "keyed"}, "Idempotency-Key", "walk-1")
	callProblem(t, e, 409, "token-exists", "POST", "/api/v1/tokens", u.Token, map[string]any{"name": "keyed"}, "Idempotency-Key", "walk-1")
	callProblem(t, e, 413, "payload-too-large", "POST", "/api/v1/tokens", u.Token, huge)
	callProblem(t, e, 415, "unsupported-media-type", "POST", "/api/v1/tokens", u.Token, []byte(`{}`), "Content-Type", "text/plain")

	call(t, e, 200, "GET", "/api/v1/tokens?live=true&max_results=1", u.Token, nil)
	callProblem(t, e, 400, "validation-failed", "GET", "/api/v1/tokens?max_results=0", u.Token, nil)
	callProblem(t, e, 401, "unauthenticated", "GET", "/api/v1/tokens", "", nil)
	callProblem(t, e, 403, "forbidden", "GET", "/api/v1/tokens", tok.Token, nil)

	callProblem(t, e, 401, "unauthenticated", "DELETE", "/api/v1/tokens/"+tok.ID, "", nil)
	callProblem(t, e, 403, "forbidden", "DELETE", "/api/v1/tokens/"+tok.ID, tok.Token, nil)
	callProblem(t, e, 404, "not-found", "DELETE", "/api/v1/tokens/00000000-0000-4000-8000-000000000000", u.Token, nil)
	call(t, e, 204, "DELETE", "/api/v1/tokens/"+tok.ID, u.Token, nil)

	svc := asJSON[api.UserResponse](t, call(t, e, 201, "POST", "/api/v1/service-accounts", admin, map[string]any{"name": "walker", "role": "viewer"}))
	callProblem(t, e, 400, "validation-failed", "POST", "/api/v1/service-accounts", admin, map[string]any{"name": ""})
	callProblem(t, e, 401, "unauthenticated", "POST", "/api/v1/service-accounts", "", map[string]any{"name": "x"})
	callProblem(t, e, 403, "forbidden", "POST", "/api/v1/service-accounts", u.Token, map[string]any{"name": "x"})

	svcTokens := "/api/v1/service-accounts/" + svc.ID + "/tokens"
	createToken(t, e, admin, map[string]any{"name": "svc"}, svcTokens)
	callProblem(t, e, 400, "validation-failed", "POST", svcTokens, admin, map[string]any{"name": ""})
	callProblem(t, e, 403, "forbidden", "POST", svcTokens, u.Token, map[string]any{"name": "x"})
	callProblem(t, e, 404, "not-found", "POST", "/api/v1/service-accounts/"+u.ID+"/tokens", admin, map[string]any{"name": "x"})

	call(t, e, 200, "GET", svcTokens, admin, nil)
	callProblem(t, e, 403, "forbidden", "GET", svcTokens, u.Token, nil)
	callProblem(t, e, 404, "not-found", "GET", "/api/v1/service-accounts/"+u.ID+"/tokens", admin, nil)
	return map[string][]int{
		"createAPIToken":            {201, 400, 401, 403, 404, 409, 413, 415},
		"listAPITokens":             {200, 400, 401, 403},
		"revokeAPIToken":            {204, 401, 403, 404},
		"createServiceAccount":      {201, 400, 401, 403},
		"createServiceAccountToken": {201, 400, 403, 404},
		"listServiceAccountTokens":  {200, 403, 404},
	}
}
