package approvals

import (
	"context"
	"fmt"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/flows"
)

// flowName names the promotion flow's durable consumer and its actor
// (maestro/promotions).
const flowName = "promotions"

// Register adds the promotion flow to r: the approval that completes a
// request has it carried out (CarryOut), exactly once under redelivery,
// concurrent flows and restarts — the move and the request's completion
// are one atomic append that expects the request's last version, and a
// request no longer approved is left alone. A restart between the approval
// and the move leaves the approval unacknowledged, so it is delivered again.
func (s *Service) Register(r *flows.Router) error {
	return r.Handle(flows.Consumer{Name: flowName, Subjects: []string{events.Subject(events.AggPromotion, ">")}},
		func(ctx context.Context, e events.Envelope) error {
			if e.Type != events.PromotionApproved {
				return nil
			}
			var d events.PromotionApprovedData
			if err := e.Decode(&d); err != nil {
				return flows.Permanent(fmt.Errorf("promotion flow: %w", err))
			}
			if d.Approvals < d.Required {
				return nil
			}
			return s.CarryOut(ctx, flows.Meta(flowName, e), d.PromotionID)
		})
}
