package approvals

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// RunMetrics is the latest value of each metric of a run, for gates over
// a version's source run. Metrics are not kept in the run's aggregate
// (they stream into their own store), so the platform wires in
// tracking.Service.LatestMetrics, which folds the run's metric events; the
// values the gate saw are recorded in the request's event, so the
// decision stays auditable and replayable.
type RunMetrics func(ctx context.Context, runID string) (map[string]float64, error)

// Explanations loads a model version's explanation: its own
// explanation.json, else its source run's (a version carries its run's),
// read from the event-sourced state and the content-addressed blob store
// (the platform wires it in: platform/explanations.go). nil, nil: none.
type Explanations func(ctx context.Context, projectID string, ver registry.VersionState) (*VersionExplanation, error)

// Service handles promotion requests.
type Service struct {
	now          func() time.Time
	registry     *registry.Service
	promotions   *handlers.Repository[PromotionState]
	runMetrics   RunMetrics
	explanations Explanations
}

// WithExplanations sets how the service loads a version's explanation for
// gates over feature importances and a required explanation.json; without
// it a version's own explanation.json file satisfies required_artifacts
// and an importance gate refuses every version.
func (s *Service) WithExplanations(f Explanations) *Service {
	s.explanations = f
	return s
}

// NewService builds the approvals service; runMetrics may be nil (no
// tracking: gates see the version's own metrics only).
func NewService(store *events.Store, reg *registry.Service, runMetrics RunMetrics, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{now: now, registry: reg, promotions: handlers.NewRepository(store, Evolve, 10000), runMetrics: runMetrics}
}

func invalid(format string, args ...any) error {
	return handlers.Errorf(handlers.Invalid, "validation-failed", format, args...)
}

// checkComment bounds a comment: plain text, at most registry.MaxReasonLen
// characters.
func checkComment(c string) error {
	if !handlers.PlainText(c) || len([]rune(c)) > registry.MaxReasonLen {
		return invalid("comment must be plain text of at most %d characters", registry.MaxReasonLen)
	}
	return nil
}

// Request opens a promotion request (editors and above: authz.ModelWrite).
// The gate and required artifacts are evaluated at once; a failure records
// the request as rejected with the reason, and the answer is that request.
func (s *Service) Request(ctx context.Context, meta events.Meta, p authz.Principal, ref string, req Request) (PromotionState, uint64, error) {
	if !registry.ValidTarget(req.Target) {
		return PromotionState{}, 0, invalid("target must be staging, production, or an alias written @name")
	}
	if req.Version < 1 {
		return PromotionState{}, 0, invalid("version must be a version number (1 or more)")
	}
	if strings.TrimSpace(req.Model) == "" {
		return PromotionState{}, 0, invalid("model is required")
	}
	if err := checkComment(req.Comment); err != nil {
		return PromotionState{}, 0, err
	}
	p, ps, err := s.registry.AuthorizeProject(ctx, p, ref, authz.ModelWrite)
	if err != nil {
		return PromotionState{}, 0, err
	}
	if err := registry.NotArchived(ps); err != nil {
		return PromotionState{}, 0, err
	}
	m, err := s.registry.ModelOf(ctx, ps, req.Model)
	if err != nil {
		return PromotionState{}, 0, err
	}
	in, err := s.gateInputs(ctx, m, req.Version)
	if err != nil {
		return PromotionState{}, 0, err
	}
	explained := false // in.Explanation loaded (once, whatever retries)
	id := handlers.IDFor(meta, "promotion")
	meta.Now = s.now
	st, seq, err := s.promotions.Update(ctx, subject(id), meta,
		func(cur PromotionState, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if cur.Created || replay {
				// This very command already ran (same idempotency key): the
				// answer is what it stored (its expiry was computed then).
				return nil, nil, nil
			}
			fresh, err := s.registry.CurrentProject(ctx, p, ps.ID, authz.ModelWrite)
			if err != nil {
				return nil, nil, err
			}
			if pol, ok := fresh.Policies[req.Target]; ok && needsExplanation(pol) && !explained {
				if in.Explanation, err = s.explanation(ctx, ps.ID, m, req.Version); err != nil {
					return nil, nil, err
				}
				explained = true
			}
			changes, err := DecideRequest(id, fresh, m, req, p.UserID, in, s.now())
			return changes, nil, err
		})
	if err != nil {
		return st, seq, err
	}
	if st.ModelID != m.ID || st.Version != req.Version || st.Target != req.Target {
		return PromotionState{}, 0, handlers.Errorf(handlers.Invalid, "idempotency-key-reused",
			"this Idempotency-Key already requested a different promotion")
	}
	return st, seq, nil
}

// gateInputs are the metrics a gate sees for version v of m: its source
// run's latest metrics overlaid with the version's own.
func (s *Service) gateInputs(ctx context.Context, m registry.ModelState, v int) (GateInputs, error) {
	ver, ok := m.Version(v)
	if !ok {
		return GateInputs{}, nil // DecideRequest answers not-found
	}
	metrics := map[string]float64{}
	if ver.RunID != "" && s.runMetrics != nil {
		run, err := s.runMetrics(ctx, ver.RunID)
		if err != nil {
			return GateInputs{}, err
		}
		maps.Copy(metrics, run)
	}
	maps.Copy(metrics, ver.Metrics)
	return GateInputs{Metrics: metrics}, nil
}

// explanation loads version v's explanation (nil: none, or no loader).
func (s *Service) explanation(ctx context.Context, projectID string, m registry.ModelState, v int) (*VersionExplanation, error) {
	ver, ok := m.Version(v)
	if !ok || s.explanations == nil {
		return nil, nil
	}
	x, err := s.explanations(ctx, projectID, ver)
	if err != nil {
		return nil, fmt.Errorf("explanation of version %d: %w", v, err)
	}
	return x, nil
}

// Approve records the caller's approval (an eligible approver under the
// request's policy, signed in: authz.DecidePromotion).
func (s *Service) Approve(ctx context.Context, meta events.Meta, p authz.Principal, ref, id, comment string) (PromotionState, uint64, error) {
	return s.decide(ctx, meta, p, ref, id, comment, true, func(st PromotionState, a Approver, now time.Time) ([]handlers.Change, error) {
		return DecideApprove(st, a, comment, now)
	})
}

// Reject ends the request with the caller's no (an eligible approver,
// signed in).
func (s *Service) Reject(ctx context.Context, meta events.Meta, p authz.Principal, ref, id, comment string) (PromotionState, uint64, error) {
	return s.decide(ctx, meta, p, ref, id, comment, true, func(st PromotionState, a Approver, now time.Time) ([]handlers.Change, error) {
		return DecideReject(st, a, comment, now)
	})
}

// tokenRefused answers an approval or rejection sent with an API token: a
// person decides, through a login session, so a leaked token (or one capped
// at viewer) cannot approve for its owner.
func tokenRefused() error {
	return handlers.Errorf(handlers.Forbidden, "forbidden", "approving and rejecting promotions needs a login session, not an API token")
}

// Cancel withdraws a pending request (its requester, or a project owner).
func (s *Service) Cancel(ctx context.Context, meta events.Meta, p authz.Principal, ref, id, comment string) (PromotionState, uint64, error) {
	return s.decide(ctx, meta, p, ref, id, comment, false, func(st PromotionState, a Approver, now time.Time) ([]handlers.Change, error) {
		return DecideCancel(st, a, comment, now)
	})
}

// decide runs an approver's or requester's decision on request id of the
// project ref (any member may try; the decision checks the policy; with
// session, only through a login session: authz.DecidePromotion). On a
// replay the decision is made again as stored: its checks held then.
func (s *Service) decide(ctx context.Context, meta events.Meta, p authz.Principal, ref, id, comment string, session bool,
	decide func(PromotionState, Approver, time.Time) ([]handlers.Change, error)) (PromotionState, uint64, error) {
	if err := checkComment(comment); err != nil {
		return PromotionState{}, 0, err
	}
	p, ps, err := s.registry.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return PromotionState{}, 0, err
	}
	if session && !authz.Can(p, authz.DecidePromotion, authz.Resource{}) {
		return PromotionState{}, 0, tokenRefused()
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return PromotionState{}, 0, missing()
	}
	meta.Now = s.now
	return s.promotions.Update(ctx, subject(id), meta,
		func(st PromotionState, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if !st.Created || st.ProjectID != ps.ID {
				return nil, nil, missing()
			}
			if replay {
				changes, err := decide(st, Approver{UserID: p.UserID, checked: true}, time.Time{})
				return changes, nil, err
			}
			cur, err := s.registry.CurrentProject(ctx, p, ps.ID, authz.ProjectRead)
			if err != nil {
				return nil, nil, err
			}
			if err := registry.NotArchived(cur); err != nil {
				return nil, nil, err
			}
			a := Approver{UserID: p.UserID, Role: authz.Effective(p, cur.ID, cur.RoleOf(p.UserID))}
			changes, err := decide(st, a, s.now())
			return changes, nil, err
		})
}

// Get is a promotion request of the project ref, for a member.
func (s *Service) Get(ctx context.Context, p authz.Principal, ref, id string) (PromotionState, error) {
	_, ps, err := s.registry.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return PromotionState{}, err
	}
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return PromotionState{}, missing()
	}
	st, _, err := s.promotions.Load(ctx, subject(id))
	if err != nil {
		return st, err
	}
	if !st.Created || st.ProjectID != ps.ID {
		return PromotionState{}, missing()
	}
	return st, nil
}

// CarryOut performs approved request id: the model's move and the
// request's completion in one atomic batch (or its failure, when the move
// cannot be made any more). It is what the promotion flow calls for every
// approval; a request that is not (or no longer) approved is left alone,
// so redelivery and concurrent flows carry a request out exactly once.
func (s *Service) CarryOut(ctx context.Context, meta events.Meta, id string) error {
	st, _, err := s.promotions.Load(ctx, subject(id))
	if err != nil || st.State != events.PromotionStateApproved {
		return err
	}
	_, _, err = s.registry.CarryOut(ctx, meta, st.ModelID,
		func(ps registry.ProjectState, m registry.ModelState) ([]handlers.Change, map[string]uint64, error) {
			cur, v, err := s.promotions.Load(ctx, subject(id))
			if err != nil {
				return nil, nil, err
			}
			digest := ""
			if cur.Gate.Explanation != nil && cur.State == events.PromotionStateApproved {
				x, err := s.explanation(ctx, ps.ID, m, cur.Version)
				if err != nil {
					return nil, nil, err
				}
				if x != nil {
					digest = x.Digest
				}
			}
			changes, err := DecideComplete(cur, ps, m, digest)
			return changes, map[string]uint64{subject(id): v}, err
		})
	return err
}

// Now is the service's clock (the API computes expiry with it).
func (s *Service) Now() time.Time { return s.now() }
