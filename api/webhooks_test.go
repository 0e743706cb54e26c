package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/webhooks"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// webhookTarget is a public address (example.com's): the walk's platform
// does not allow private targets, and nothing here waits for a delivery
// (platform/webhooks_test.go delivers to a real receiver).
const webhookTarget = "https://93.184.216.34/hook"

// walkWebhooks exercises every webhook route, in the project tree and the
// global one, and returns the statuses it provoked per operation
// (TestOpenAPIConformance).
func walkWebhooks(t *testing.T, e *testenv.Env, admin string) map[string][]int {
	t.Helper()
	want := map[string][]int{}
	add := func(op string, codes ...int) { want[op] = append(want[op], codes...) }
	async := []string{"Prefer", "respond-async"}
	const missingID = "00000000-0000-4000-8000-000000000000"

	editor := regUser(e, admin, "hook-editor@example.com", "viewer")
	outsider := regUser(e, admin, "hook-outsider@example.com", "member")
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Hooks Walk"}))
	pp := projectsPath + "/" + proj.Slug
	call(t, e, 200, "PUT", pp+"/members/"+editor.ID, admin, map[string]any{"role": "editor"})
	body := map[string]any{"url": webhookTarget, "events": []string{"maestro.model.version.*", "maestro.job.ended.v1"}, "description": "walk"}

	for _, tree := range []struct {
		base, pre string
		refused   regClient // 403 for it
		hidden    *regClient
		missing   string // a tree that does not exist (404), for key reuse
	}{
		{pp + "/webhooks", "", editor, &outsider, projectsPath + "/nope/webhooks"},
		{"/api/v1/webhooks", "Global", editor, nil, ""},
	} {
		op := func(name string) string {
			return strings.Replace(name, "Webhook", tree.pre+"Webhook", 1)
		}
		base := tree.base
		// Create.
		r := call(t, e, 201, "POST", base, admin, body)
		w := asJSON[api.WebhookCreated](t, r)
		if !strings.HasPrefix(w.Secret, "whsec_") || r.Header.Get("Location") == "" {
			t.Fatalf("created webhook: %s (Location %q)", r.Body, r.Header.Get("Location"))
		}
		one := base + "/" + w.ID
		call(t, e, 202, "POST", base, admin, body, async...)
		callProblem(t, e, 400, "validation-failed", "POST", base, admin, map[string]any{"url": webhookTarget, "events": []string{"maestro.nothing.*"}})
		callProblem(t, e, 400, "malformed-json", "POST", base, admin, map[string]any{"url": webhookTarget, "events": []string{"*"}, "secret": "x"})
		callProblem(t, e, 403, "forbidden", "POST", base, tree.refused.Token, body)
		callProblem(t, e, 422, "webhook-target-forbidden", "POST", base, admin, map[string]any{"url": "http://169.254.169.254/", "events": []string{"*"}})
		add(op("createWebhook"), 201, 202, 400, 403, 422)
		if tree.hidden != nil {
			callProblem(t, e, 404, "not-found", "POST", base, tree.hidden.Token, body)
			add(op("createWebhook"), 404)
			add(op("createWebhook"), commandErrors(t, e, admin, "POST", base, tree.missing, body, "hook-create")...)
		}

		// Read.
		pg := asJSON[api.WebhookPage](t, call(t, e, 200, "GET", base+"?max_results=1", admin, nil))
		if len(pg.Items) != 1 || pg.NextPageToken == "" {
			t.Fatalf("webhooks page 1: %+v", pg)
		}
		call(t, e, 200, "GET", base+"?max_results=200&page_token="+url.QueryEscape(pg.NextPageToken), admin, nil)
		callProblem(t, e, 400, "invalid-page-token", "GET", base+"?page_token=nope", admin, nil)
		callProblem(t, e, 401, "unauthenticated", "GET", base, "", nil)
		callProblem(t, e, 403, "forbidden", "GET", base, tree.refused.Token, nil)
		add(op("listWebhooks"), 200, 400, 401, 403)
		call(t, e, 200, "GET", one, admin, nil)
		callProblem(t, e, 400, "validation-failed", "GET", one+"?min_sequence=x", admin, nil)
		callProblem(t, e, 401, "unauthenticated", "GET", one, "", nil)
		callProblem(t, e, 403, "forbidden", "GET", one, tree.refused.Token, nil)
		callProblem(t, e, 404, "not-found", "GET", base+"/"+missingID, admin, nil)
		add(op("getWebhook"), 200, 400, 401, 403, 404)
		call(t, e, 200, "GET", one+"/deliveries?status=pending", admin, nil)
		callProblem(t, e, 400, "validation-failed", "GET", one+"/deliveries?status=lost", admin, nil)
		callProblem(t, e, 401, "unauthenticated", "GET", one+"/deliveries", "", nil)
		callProblem(t, e, 403, "forbidden", "GET", one+"/deliveries", tree.refused.Token, nil)
		callProblem(t, e, 404, "not-found", "GET", base+"/"+missingID+"/deliveries", admin, nil)
		add(op("listWebhookDeliveries"), 200, 400, 401, 403, 404)

		// Change.
		call(t, e, 200, "PATCH", one, admin, map[string]any{"description": "changed", "enabled": false})
		call(t, e, 202, "PATCH", one, admin, map[string]any{"enabled": true}, async...)
		callProblem(t, e, 400, "validation-failed", "PATCH", one, admin, map[string]any{"events": []string{}})
		callProblem(t, e, 403, "forbidden", "PATCH", one, tree.refused.Token, map[string]any{"enabled": false})
		callProblem(t, e, 404, "not-found", "PATCH", base+"/"+missingID, admin, map[string]any{"enabled": false})
		callProblem(t, e, 422, "webhook-target-forbidden", "PATCH", one, admin, map[string]any{"url": "http://127.0.0.1/"})
		add(op("updateWebhook"), 200, 202, 400, 403, 404, 422)
		add(op("updateWebhook"), commandErrors(t, e, admin, "PATCH", one, base+"/"+missingID, map[string]any{"enabled": true}, "hook-patch-"+tree.pre)...)

		// Rotate.
		rot := asJSON[api.WebhookSecret](t, call(t, e, 200, "POST", one+":rotate-secret", admin, map[string]any{}))
		if rot.Secret == w.Secret {
			t.Fatal("rotation kept the secret")
		}
		call(t, e, 202, "POST", one+":rotate-secret", admin, map[string]any{"overlap_seconds": 60}, async...)
		callProblem(t, e, 400, "validation-failed", "POST", one+":rotate-secret", admin, map[string]any{"overlap_seconds": -1})
		callProblem(t, e, 403, "forbidden", "POST", one+":rotate-secret", tree.refused.Token, map[string]any{})
		callProblem(t, e, 404, "not-found", "POST", base+"/"+missingID+":rotate-secret", admin, map[string]any{})
		add(op("rotateWebhookSecret"), 200, 202, 400, 403, 404)

		// Test.
		tst := asJSON[api.WebhookTest](t, call(t, e, 202, "POST", one+":test", admin, nil))
		if tst.EventID == "" {
			t.Fatal("test answered no event id")
		}
		callProblem(t, e, 403, "forbidden", "POST", one+":test", tree.refused.Token, nil)
		callProblem(t, e, 404, "not-found", "POST", base+"/"+missingID+":test", admin, nil)
		call(t, e, 200, "PATCH", one, admin, map[string]any{"enabled": false})
		callProblem(t, e, 409, "webhook-disabled", "POST", one+":test", admin, nil)
		add(op("testWebhook"), 202, 403, 404, 409)

		// Delete.
		callProblem(t, e, 403, "forbidden", "DELETE", one, tree.refused.Token, nil)
		call(t, e, 204, "DELETE", one, admin, nil)
		callProblem(t, e, 404, "not-found", "DELETE", one, admin, nil)
		other := asJSON[api.WebhookCreated](t, call(t, e, 201, "POST", base, admin, body))
		call(t, e, 202, "DELETE", base+"/"+other.ID, admin, nil, async...)
		callProblem(t, e, 401, "unauthenticated", "DELETE", base+"/"+other.ID, "", nil)
		add(op("deleteWebhook"), 204, 202, 401, 403, 404)
	}
	if r := e.Do("GET", "/api/v1/webhooks", outsider.Token, nil); r.Status != http.StatusForbidden {
		t.Fatalf("a member lists global webhooks: %d", r.Status)
	}
	return want
}

// webhookCells are the project webhook routes in the registry's
// authorization matrix (TestRegistryAuthorizationMatrix): every one is the
// owners' (authz.WebhookManage), reads included, since a subscription's
// URL and delivery log are the project's integration secrets.
func webhookCells() map[string]mxCell {
	const hooks = mxProj + "/webhooks"
	body := map[string]any{"url": webhookTarget, "events": []string{"maestro.job.ended.v1"}}
	// makeRoom deletes p's webhooks when it nears the cap
	// (webhooks.MaxProjectWebhooks): the matrix makes far more than that.
	makeRoom := func(m *matrix, p *mxProject) {
		page := asJSON[api.WebhookPage](m.t, m.admin("GET", mxProjects+"/"+p.slug+"/webhooks?max_results=100", nil))
		if len(page.Items) < webhooks.MaxProjectWebhooks-10 {
			return
		}
		for _, w := range page.Items {
			m.admin("DELETE", mxProjects+"/"+p.slug+"/webhooks/"+w.ID, nil)
		}
	}
	// fresh makes a webhook in p as the admin (each cell its own, so a
	// delete or a disable does not reach the next cell).
	fresh := func(m *matrix, p *mxProject) mxReq {
		makeRoom(m, p)
		w := asJSON[api.WebhookCreated](m.t, m.admin("POST", mxProjects+"/"+p.slug+"/webhooks", body))
		return mxReq{params: map[string]string{"webhook": w.ID}}
	}
	with := func(b any) func(m *matrix, p *mxProject) mxReq {
		return func(m *matrix, p *mxProject) mxReq {
			r := fresh(m, p)
			r.body = b
			return r
		}
	}
	return map[string]mxCell{
		"POST " + hooks: {action: mxManage, build: func(m *matrix, p *mxProject) mxReq {
			makeRoom(m, p)
			return mxReq{body: body}
		}},
		"GET " + hooks:                               {action: mxManage, build: func(*matrix, *mxProject) mxReq { return mxReq{} }},
		"GET " + hooks + "/{webhook}":                {action: mxManage, build: fresh},
		"PATCH " + hooks + "/{webhook}":              {action: mxManage, build: with(map[string]any{"description": "changed"})},
		"DELETE " + hooks + "/{webhook}":             {action: mxManage, build: fresh},
		"POST " + hooks + "/{webhook}:rotate-secret": {action: mxManage, build: with(map[string]any{})},
		"POST " + hooks + "/{webhook}:test":          {action: mxManage, build: fresh},
		"GET " + hooks + "/{webhook}/deliveries":     {action: mxManage, build: fresh},
	}
}

// A signing secret is stored nowhere in clear: not in the event stream
// (sealed there), and not in the Idempotency-Key bucket, which keeps
// command answers for replays. A retried creation or rotation (same key)
// is answered by the service from the sealed secret instead, so it still
// shows the same secret.
func TestWebhookSecretsAreNotKeptForReplays(t *testing.T) {
	t.Parallel()
	e := testenv.Start(t, testenv.Config(t))
	admin := e.Admin("root@hook-secrets.test").AccessToken
	proj := asJSON[api.ProjectResponse](t, call(t, e, 201, "POST", projectsPath, admin, map[string]any{"name": "Hook Secrets"}))
	body := map[string]any{"url": webhookTarget, "events": []string{"maestro.model.*"}}
	var secrets []string
	for _, base := range []string{projectsPath + "/" + proj.ID + "/webhooks", "/api/v1/webhooks"} {
		w := asJSON[api.WebhookCreated](t, call(t, e, 201, "POST", base, admin, body, "Idempotency-Key", "hook-create"))
		again := asJSON[api.WebhookCreated](t, call(t, e, 201, "POST", base, admin, body, "Idempotency-Key", "hook-create"))
		if again.ID != w.ID || again.Secret != w.Secret {
			t.Fatalf("retried creation: %s / %s, want the same webhook and secret", again.ID, w.ID)
		}
		rotate := base + "/" + w.ID + ":rotate-secret"
		rot := asJSON[api.WebhookSecret](t, call(t, e, 200, "POST", rotate, admin, map[string]any{}, "Idempotency-Key", "hook-rotate"))
		rot2 := asJSON[api.WebhookSecret](t, call(t, e, 200, "POST", rotate, admin, map[string]any{}, "Idempotency-Key", "hook-rotate"))
		if rot2.Secret != rot.Secret || rot.Secret == w.Secret {
			t.Fatal("a retried rotation answered another secret")
		}
		// The retry took the key over and was answered from the stored
		// events (what keeps a retry after JetStream's 2-minute duplicate
		// window from rotating again): one rotation in the stream.
		evs, _, err := e.P.Store.Load(t.Context(), events.Subject(events.AggWebhook, w.ID), 0)
		if err != nil {
			t.Fatal(err)
		}
		rotations := 0
		for _, ev := range evs {
			if ev.Type == events.WebhookSecretRotated {
				rotations++
			}
		}
		if rotations != 1 {
			t.Fatalf("%d rotations stored for one rotation and its retry", rotations)
		}
		secrets = append(secrets, w.Secret, rot.Secret)
		// Other webhook commands' answers are kept (and replayed) as usual.
		call(t, e, 200, "PATCH", base+"/"+w.ID, admin, map[string]any{"description": "kept"}, "Idempotency-Key", "hook-patch")
		if r := call(t, e, 200, "PATCH", base+"/"+w.ID, admin, map[string]any{"description": "kept"}, "Idempotency-Key", "hook-patch"); r.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatal("a retried webhook change was not replayed from the bucket")
		}
	}
	// Every message the idempotency bucket's stream holds.
	ctx := t.Context()
	st, err := e.P.Store.JetStream().Stream(ctx, "KV_"+api.IdempotencyBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Fatal("the idempotency bucket holds nothing: the check below would prove nothing")
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // purged (a released key)
		}
		// A stored outcome keeps the answer's body as JSON bytes (base64).
		var rec struct {
			Body []byte `json:"body"`
		}
		_ = json.Unmarshal(m.Data, &rec)
		for _, s := range secrets {
			if k := strings.TrimPrefix(s, "whsec_"); strings.Contains(string(m.Data), k) || strings.Contains(string(rec.Body), k) {
				t.Fatalf("the idempotency bucket holds a webhook signing secret in clear (subject %s)", m.Subject)
			}
		}
	}
}
