package api

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/maestro-ml/maestro/handlers/webhooks"
	"github.com/maestro-ml/maestro/projections"
)

// Webhook subscriptions: a project's (its owners', under the project) and
// global ones (admins', /api/v1/webhooks). Commands go through
// webhooks.Service, which authorizes on event-sourced state; reads
// authorize with the same service (Authorize) and read the webhooks
// projection and the delivery log. The same handlers serve both trees:
// the project tree has {project}, the global one has none.

// webhookViews are the projections a webhook command's answer and the next
// natural read need.
var webhookViews = []string{projections.Webhooks{}.Name()}

// webhookMaxBody bounds a subscription's body: a URL of 2 KiB, 32 patterns
// of 200 bytes and a description of 1,000, with room for escaping.
const webhookMaxBody = 64 << 10

func (s *Server) webhookRoutes() []Route {
	var out []Route
	for _, base := range []string{"/api/v1/projects/{project}/webhooks", "/api/v1/webhooks"} {
		one := base + "/{webhook}"
		out = append(out,
			Route{Method: "POST", Pattern: base, Command: true, MaxBody: webhookMaxBody, handle: command(s, http.StatusCreated, s.createWebhook)},
			Route{Method: "GET", Pattern: base, handle: query(s, s.listWebhooks)},
			Route{Method: "GET", Pattern: one, handle: query(s, s.getWebhook)},
			Route{Method: "PATCH", Pattern: one, Command: true, MaxBody: webhookMaxBody, handle: command(s, http.StatusOK, s.updateWebhook)},
			Route{Method: "DELETE", Pattern: one, Command: true, handle: commandNoBody(s, http.StatusNoContent, s.deleteWebhook)},
			Route{Method: "POST", Pattern: one + ":rotate-secret", Command: true, handle: command(s, http.StatusOK, s.rotateWebhookSecret)},
			Route{Method: "POST", Pattern: one + ":test", Command: true, handle: commandNoBody(s, http.StatusAccepted, s.testWebhook)},
			Route{Method: "GET", Pattern: one + "/deliveries", handle: query(s, s.listWebhookDeliveries)},
		)
	}
	return out
}

// ---- inputs ----

// webhookRef is {webhook}.
type webhookRef struct{ webhook string }

func (x *webhookRef) readParams(r *http.Request) (err error) {
	x.webhook, err = pathID(r, "webhook", "webhook")
	return err
}

// createWebhookRequest is the body of POST …/webhooks.
type createWebhookRequest struct {
	URL         string   `json:"url"`
	Events      []string `json:"events"`
	Description string   `json:"description"`
}

// updateWebhookRequest is the body of PATCH …/webhooks/{webhook}: absent
// fields keep their value.
type updateWebhookRequest struct {
	webhookRef
	URL         *string  `json:"url"`
	Events      []string `json:"events"`
	Description *string  `json:"description"`
	Enabled     *bool    `json:"enabled"`
}

// rotateWebhookSecretRequest is the body of POST …:rotate-secret.
type rotateWebhookSecretRequest struct {
	webhookRef
	// OverlapSeconds is how long the old secret keeps signing (default a
	// day, at most a week; 0 is the default).
	OverlapSeconds *int64 `json:"overlap_seconds"`
}

func (req *rotateWebhookSecretRequest) validate() error {
	if req.OverlapSeconds != nil && (*req.OverlapSeconds < 0 || *req.OverlapSeconds > int64(webhooks.MaxRotationOverlap/time.Second)) {
		return problem("validation-failed", "overlap_seconds must be between 0 and "+webhooks.MaxRotationOverlap.String())
	}
	return nil
}

// ---- answers ----

// WebhookCreated is a new subscription with its signing secret, shown
// this once.
type WebhookCreated struct {
	projections.Webhook
	Secret string `json:"secret"`
}

// WebhookSecret is a rotated secret, shown this once, and until when the
// previous one still signs.
type WebhookSecret struct {
	Secret              string    `json:"secret"`
	PreviousSecretUntil time.Time `json:"previous_secret_until"`
}

// WebhookTest names the test event sent: the delivery's webhook-id.
type WebhookTest struct {
	EventID string `json:"event_id"`
}

// WebhookPage is a page of subscriptions.
type WebhookPage = projections.Page[projections.Webhook]

// WebhookDeliveryPage is a page of a subscription's delivery log.
type WebhookDeliveryPage = projections.Page[projections.WebhookDelivery]

// webhookFromState renders a subscription as the projection does.
func webhookFromState(w webhooks.State) projections.Webhook {
	out := projections.Webhook{ID: w.ID, ProjectID: w.ProjectID, URL: w.URL, Events: slices.Clone(w.Events), Description: w.Description,
		Enabled: w.Enabled, DisabledReason: w.DisabledReason, CreatedBy: w.CreatedBy, CreatedAt: w.CreatedAt.Truncate(time.Microsecond).UTC(),
		UpdatedAt: w.UpdatedAt.Truncate(time.Microsecond).UTC()}
	if out.Events == nil {
		out.Events = []string{}
	}
	if !w.PreviousUntil.IsZero() && w.PreviousUntil.After(time.Now()) {
		t := w.PreviousUntil.Truncate(time.Microsecond).UTC()
		out.PreviousSecretUntil = &t
	}
	return out
}

// webhookBase is where a subscription of the project ref ("" global) lives.
func webhookBase(projectID string) string {
	if projectID == "" {
		return "/api/v1/webhooks"
	}
	return "/api/v1/projects/" + projectID + "/webhooks"
}

// ---- commands ----

func (s *Server) createWebhook(c *call, req createWebhookRequest) (WebhookCreated, uint64, error) {
	w, secret, seq, err := s.deps.Webhooks.Create(c.ctx, c.meta, c.who, c.param("project"),
		webhooks.Settings{URL: strings.TrimSpace(req.URL), Events: req.Events, Description: req.Description})
	if err != nil {
		return WebhookCreated{}, 0, err
	}
	c.locate(webhookBase(w.ProjectID) + "/" + w.ID)
	return WebhookCreated{Webhook: webhookFromState(w), Secret: secret}, seq, nil
}

func (s *Server) updateWebhook(c *call, req updateWebhookRequest) (projections.Webhook, uint64, error) {
	patch := webhooks.Patch{URL: req.URL, Events: req.Events, Description: req.Description, Enabled: req.Enabled}
	w, seq, err := s.deps.Webhooks.Update(c.ctx, c.meta, c.who, c.param("project"), req.webhook, patch)
	if err != nil {
		return projections.Webhook{}, 0, err
	}
	return webhookFromState(w), seq, nil
}

func (s *Server) deleteWebhook(c *call, ref webhookRef) (none, uint64, error) {
	seq, err := s.deps.Webhooks.Delete(c.ctx, c.meta, c.who, c.param("project"), ref.webhook)
	return none{}, seq, err
}

func (s *Server) rotateWebhookSecret(c *call, req rotateWebhookSecretRequest) (WebhookSecret, uint64, error) {
	var overlap time.Duration
	if req.OverlapSeconds != nil {
		overlap = time.Duration(*req.OverlapSeconds) * time.Second
	}
	w, secret, seq, err := s.deps.Webhooks.Rotate(c.ctx, c.meta, c.who, c.param("project"), req.webhook, overlap)
	if err != nil {
		return WebhookSecret{}, 0, err
	}
	return WebhookSecret{Secret: secret, PreviousSecretUntil: w.PreviousUntil.UTC()}, seq, nil
}

func (s *Server) testWebhook(c *call, ref webhookRef) (WebhookTest, uint64, error) {
	id, seq, err := s.deps.Webhooks.Test(c.ctx, c.meta, c.who, c.param("project"), ref.webhook)
	return WebhookTest{EventID: id}, seq, err
}

// ---- queries ----

// readableWebhooks authorizes managing the subscriptions of the request's
// tree and returns its project id ("" for the global tree).
func (s *Server) readableWebhooks(c *call) (string, error) {
	return s.deps.Webhooks.Authorize(c.ctx, c.who, c.param("project"))
}

func (s *Server) readableWebhook(c *call, id string) (projections.Webhook, error) {
	pid, err := s.readableWebhooks(c)
	if err != nil {
		return projections.Webhook{}, err
	}
	w, err := s.deps.Queries.Webhook(c.ctx, pid, id)
	if errors.Is(err, projections.ErrNotFound) {
		return w, problem("not-found", "webhook not found")
	}
	return w, err
}

func (s *Server) listWebhooks(c *call, q pageQuery) (WebhookPage, error) {
	pid, err := s.readableWebhooks(c)
	if err != nil {
		return WebhookPage{}, err
	}
	page, err := s.deps.Queries.ListWebhooks(c.ctx, pid, q.token, q.size)
	return page, pageError(err)
}

func (s *Server) getWebhook(c *call, ref webhookRef) (projections.Webhook, error) {
	return s.readableWebhook(c, ref.webhook)
}

// webhookDeliveriesQuery is {webhook}, paging and ?status=.
type webhookDeliveriesQuery struct {
	webhookRef
	pageQuery
	status string
}

// deliveryStatuses are the statuses of a delivery.
var deliveryStatuses = []string{"pending", "succeeded", "failed", "cancelled"}

func (q *webhookDeliveriesQuery) readParams(r *http.Request) error {
	if err := q.webhookRef.readParams(r); err != nil {
		return err
	}
	q.status = r.URL.Query().Get("status")
	if q.status != "" && !slices.Contains(deliveryStatuses, q.status) {
		return problem("validation-failed", "status must be one of "+strings.Join(deliveryStatuses, ", "))
	}
	return q.pageQuery.readParams(r)
}

func (s *Server) listWebhookDeliveries(c *call, q webhookDeliveriesQuery) (WebhookDeliveryPage, error) {
	w, err := s.readableWebhook(c, q.webhook)
	if err != nil {
		return WebhookDeliveryPage{}, err
	}
	page, err := s.deps.Queries.WebhookDeliveries(c.ctx, w.ID, q.status, q.token, q.size)
	return page, pageError(err)
}
