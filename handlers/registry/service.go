package registry

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// UserLookup tells whether a user exists and is active (from the identity
// write side), so members are only ever real users.
type UserLookup func(ctx context.Context, userID string) (bool, error)

// ActorLookup refreshes a principal's global role from the identity write
// side, so commands decide on event-sourced state (rule 2), not on the
// projection the authenticator read.
type ActorLookup func(ctx context.Context, p authz.Principal) (authz.Principal, error)

// RunLookup tells whether runID is a run of project projectID (deleted or
// not), from the tracking write side: the run's event-sourced aggregate.
// Tracking builds on the registry, so the registry cannot import it; the
// platform wires one in (WithRuns).
type RunLookup func(ctx context.Context, projectID, runID string) (bool, error)

// Service handles project and model commands.
type Service struct {
	now      func() time.Time
	store    *events.Store
	projects *handlers.Repository[ProjectState]
	models   *handlers.Repository[ModelState]
	names    *handlers.Repository[ReservationState]
	userOK   UserLookup
	actor    ActorLookup
	// runs finds the runs registrations name; nil where there is no
	// tracking, so no run exists and a registration naming one is refused.
	runs RunLookup
	asOf asOfCache // point-in-time folds (asof.go); the zero value is ready
}

// WithRuns sets how registrations find the runs they name (lineage).
func (s *Service) WithRuns(runs RunLookup) *Service {
	s.runs = runs
	return s
}

// NewService builds the registry service.
func NewService(store *events.Store, users UserLookup, actors ActorLookup, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	taken := func(r ReservationState) bool { return r.Taken }
	return &Service{
		now:      now,
		store:    store,
		projects: handlers.NewRepository(store, EvolveProject, 10000),
		models:   handlers.NewRepository(store, EvolveModel, 10000).WithClone(CloneModel),
		names:    handlers.NewRepository(store, EvolveReservation, 100000).WithFinal(taken),
		userOK:   users,
		actor:    actors,
	}
}

func notFound(what string) error {
	return handlers.Errorf(handlers.NotFound, "not-found", "%s not found", what)
}

func forbidden(detail string) error {
	return handlers.Errorf(handlers.Forbidden, "forbidden", "%s", detail)
}

// projectID resolves a project reference (slug or id) on the write side:
// slugs through their reservation, which never changes once taken.
func (s *Service) projectID(ctx context.Context, ref string) (string, error) {
	if id, err := uuid.Parse(ref); err == nil && len(ref) == 36 {
		return id.String(), nil // canonical lower case, as in subjects
	}
	if !ValidSlug(ref) {
		return "", notFound("project")
	}
	r, _, err := s.names.Load(ctx, events.ReservationSubject(events.AggProjectSlug, ref))
	if err != nil {
		return "", err
	}
	if !r.Taken {
		return "", notFound("project")
	}
	return r.OwnerID, nil
}

// AuthorizeProject resolves a project reference (slug or id), loads the
// project and checks action against its event-sourced membership.
// Non-members get NotFound: no existence leak. It returns p with its global
// role as the event store has it (refresh), which the decision that follows
// must use. Other command services (tracking) authorize with it too.
func (s *Service) AuthorizeProject(ctx context.Context, p authz.Principal, ref string, action authz.Action) (authz.Principal, ProjectState, error) {
	p, err := s.refresh(ctx, p)
	if err != nil {
		return p, ProjectState{}, err
	}
	id, err := s.projectID(ctx, ref)
	if err != nil {
		return p, ProjectState{}, err
	}
	ps, _, err := s.projects.Load(ctx, events.Subject(events.AggProject, id))
	if err != nil {
		return p, ProjectState{}, err
	}
	role := ps.RoleOf(p.UserID)
	if !ps.Created || !authz.Member(p, id, role) {
		return p, ProjectState{}, notFound("project")
	}
	if !authz.CanInProject(p, id, role, action) {
		return p, ProjectState{}, forbidden("your project role does not allow this")
	}
	return p, ps, nil
}

// Project returns a project for a principal allowed to read it.
func (s *Service) Project(ctx context.Context, p authz.Principal, ref string) (ProjectState, error) {
	_, ps, err := s.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	return ps, err
}

// CreateProject creates a project owned by the caller.
func (s *Service) CreateProject(ctx context.Context, meta events.Meta, p authz.Principal, name, description string) (ProjectState, uint64, error) {
	p, err := s.refresh(ctx, p)
	if err != nil {
		return ProjectState{}, 0, err
	}
	if !authz.Can(p, authz.CreateProject, authz.Resource{}) {
		return ProjectState{}, 0, forbidden("creating projects needs the member or admin role")
	}
	id := handlers.IDFor(meta, "project")
	slugSubj := events.ReservationSubject(events.AggProjectSlug, Slug(name))
	meta.Now = s.now
	var existing uint64
	ps, seq, err := s.projects.Update(ctx, events.Subject(events.AggProject, id), meta,
		func(ps ProjectState, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if ps.Created || replay {
				existing = v
				return nil, nil, nil // this very command already ran (same idempotency key and request)
			}
			res, rv, err := s.names.Load(ctx, slugSubj)
			if err != nil {
				return nil, nil, err
			}
			changes, err := DecideCreateProject(res, CreateProject{ProjectID: id, Name: name, Description: description, OwnerID: p.UserID})
			return changes, map[string]uint64{slugSubj: rv}, err
		})
	if err != nil || seq != 0 {
		return ps, seq, err
	}
	// Create-if-absent found the id taken: answer with it only if it is
	// what this request creates (ids derive from key and request, so this
	// guards against a mistake, not an expected case).
	if ps.Name != name || ps.RoleOf(p.UserID) == "" {
		return ProjectState{}, 0, handlers.Errorf(handlers.Invalid, "idempotency-key-reused",
			"this Idempotency-Key already created a different project")
	}
	return ps, existing, nil
}

// updateProject authorizes with action and runs decide on the project.
func (s *Service) updateProject(ctx context.Context, meta events.Meta, p authz.Principal, ref string, action authz.Action,
	decide func(ProjectState) ([]handlers.Change, error)) (ProjectState, uint64, error) {
	p, ps, err := s.AuthorizeProject(ctx, p, ref, action)
	if err != nil {
		return ps, 0, err
	}
	meta.Now = s.now
	return s.projects.Update(ctx, events.Subject(events.AggProject, ps.ID), meta,
		func(cur ProjectState, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			// Re-check on the state we decide on: a role may have changed.
			// (A replay recomputes a stored decision, checked when it was made.)
			if !replay && !authz.CanInProject(p, cur.ID, cur.RoleOf(p.UserID), action) {
				return nil, nil, forbidden("your project role does not allow this")
			}
			ch, err := decide(cur)
			return ch, nil, err
		})
}

// UpdateProject changes a project's description (owners).
func (s *Service) UpdateProject(ctx context.Context, meta events.Meta, p authz.Principal, ref string, description *string) (ProjectState, uint64, error) {
	return s.updateProject(ctx, meta, p, ref, authz.ProjectManage, func(ps ProjectState) ([]handlers.Change, error) {
		return DecideUpdateProject(ps, description)
	})
}

// ArchiveProject archives (true) or restores (false) a project (owners).
func (s *Service) ArchiveProject(ctx context.Context, meta events.Meta, p authz.Principal, ref string, archive bool) (ProjectState, uint64, error) {
	return s.updateProject(ctx, meta, p, ref, authz.ProjectManage, func(ps ProjectState) ([]handlers.Change, error) {
		return DecideArchive(ps, archive), nil
	})
}

// SetMember gives a user a role in the project (owners).
func (s *Service) SetMember(ctx context.Context, meta events.Meta, p authz.Principal, ref, userID string, role authz.ProjectRole) (ProjectState, uint64, error) {
	if _, err := uuid.Parse(userID); err != nil {
		return ProjectState{}, 0, notFound("user")
	}
	return s.updateProject(ctx, meta, p, ref, authz.ProjectManage, func(ps ProjectState) ([]handlers.Change, error) {
		if _, member := ps.Members[userID]; !member {
			ok, err := s.userOK(ctx, userID)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, notFound("user")
			}
		}
		return DecideSetMember(ps, userID, role)
	})
}

// RemoveMember removes a user from the project (owners).
func (s *Service) RemoveMember(ctx context.Context, meta events.Meta, p authz.Principal, ref, userID string) (ProjectState, uint64, error) {
	return s.updateProject(ctx, meta, p, ref, authz.ProjectManage, func(ps ProjectState) ([]handlers.Change, error) {
		return DecideRemoveMember(ps, userID)
	})
}

// modelID resolves a model name in a project through its reservation. A
// renamed model keeps its old names reserved, so the id found is the one
// model the name ever named; whoever loads it checks that it still bears
// the name (ModelState.named), since a rename may have come since.
func (s *Service) modelID(ctx context.Context, projectID, name string) (string, error) {
	if !ValidModelName(name) {
		return "", modelMissing()
	}
	r, _, err := s.names.Load(ctx, events.ReservationSubject(events.AggModelName, ModelNameKey(projectID, name)))
	if err != nil {
		return "", err
	}
	if !r.Taken {
		return "", modelMissing()
	}
	return r.OwnerID, nil
}

// Model returns a model (deleted ones too) for a principal allowed to read the project.
func (s *Service) Model(ctx context.Context, p authz.Principal, ref, name string) (ProjectState, ModelState, error) {
	_, ps, err := s.AuthorizeProject(ctx, p, ref, authz.ProjectRead)
	if err != nil {
		return ps, ModelState{}, err
	}
	id, err := s.modelID(ctx, ps.ID, name)
	if err != nil {
		return ps, ModelState{}, err
	}
	m, _, err := s.models.Load(ctx, events.Subject(events.AggModel, id))
	if err == nil && !m.named(name) {
		return ps, ModelState{}, modelMissing()
	}
	return ps, m, err
}

// CreateModel registers a new model in a project (editors).
func (s *Service) CreateModel(ctx context.Context, meta events.Meta, p authz.Principal, ref string, c CreateModel) (ModelState, uint64, error) {
	p, ps, err := s.AuthorizeProject(ctx, p, ref, authz.ModelWrite)
	if err != nil {
		return ModelState{}, 0, err
	}
	c.ModelID = handlers.IDFor(meta, "model")
	nameSubj := events.ReservationSubject(events.AggModelName, ModelNameKey(ps.ID, c.Name))
	meta.Now = s.now
	var existing uint64
	m, seq, err := s.models.Update(ctx, events.Subject(events.AggModel, c.ModelID), meta,
		func(m ModelState, v uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if m.Created || replay {
				existing = v
				return nil, nil, nil // this very command already ran (same idempotency key and request)
			}
			cur, err := s.CurrentProject(ctx, p, ps.ID, authz.ModelWrite)
			if err != nil {
				return nil, nil, err
			}
			res, rv, err := s.names.Load(ctx, nameSubj)
			if err != nil {
				return nil, nil, err
			}
			changes, err := DecideCreateModel(cur, res, c)
			return changes, map[string]uint64{nameSubj: rv}, err
		})
	if err != nil || seq != 0 {
		return m, seq, err
	}
	// Create-if-absent found the id taken: answer with it only if it is the
	// model this request creates, in this project.
	if m.ProjectID != ps.ID || m.Name != c.Name {
		return ModelState{}, 0, handlers.Errorf(handlers.Invalid, "idempotency-key-reused",
			"this Idempotency-Key already created a different model")
	}
	return m, existing, nil
}

// UpdateModelFunc runs a model command: authorize action in the project,
// resolve the model, and decide on its current state. Every model command
// goes through it, so none can skip the project check.
func (s *Service) UpdateModelFunc(ctx context.Context, meta events.Meta, p authz.Principal, ref, name string, action authz.Action,
	decide func(ProjectState, ModelState) ([]handlers.Change, error)) (ModelState, uint64, error) {
	return s.updateModel(ctx, meta, p, ref, name, action, func(_ authz.Principal, ps ProjectState, m ModelState, _ bool) ([]handlers.Change, error) {
		return decide(ps, m)
	})
}

// updateModel is UpdateModelFunc with a decide that knows when it is
// replayed (handlers.Decide): a decision that also checks the caller's
// project role (deleting a deployment pointer's target) must not check it
// again on a replay, since the role may have changed after the command was
// stored, and the retry must still answer what was stored. decide gets the
// caller as refreshed for this command (its current roles).
func (s *Service) updateModel(ctx context.Context, meta events.Meta, p authz.Principal, ref, name string, action authz.Action,
	decide func(p authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, error)) (ModelState, uint64, error) {
	return s.updateModelWith(ctx, meta, p, ref, name, action,
		func(p authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, map[string]uint64, error) {
			ch, err := decide(p, ps, m, replay)
			return ch, nil, err
		})
}

// updateModelWith is updateModel for a decision that also appends on other
// subjects (a rename's name reservation): decide returns their expected
// versions too.
func (s *Service) updateModelWith(ctx context.Context, meta events.Meta, p authz.Principal, ref, name string, action authz.Action,
	decide func(p authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, map[string]uint64, error)) (ModelState, uint64, error) {
	p, ps, err := s.AuthorizeProject(ctx, p, ref, action)
	if err != nil {
		return ModelState{}, 0, err
	}
	id, err := s.modelID(ctx, ps.ID, name)
	if err != nil {
		return ModelState{}, 0, err
	}
	meta.Now = s.now
	return s.models.Update(ctx, events.Subject(events.AggModel, id), meta,
		func(m ModelState, _ uint64, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if replay {
				// Recompute a stored decision (e.g. the version number a
				// crashed registration stored): it was authorized then, and
				// the project may since have changed.
				cur, _, err := s.projects.Load(ctx, events.Subject(events.AggProject, ps.ID))
				if err != nil {
					return nil, nil, err
				}
				return decide(p, cur, m, true)
			}
			if !m.named(name) {
				return nil, nil, modelMissing() // renamed since the name was resolved
			}
			cur, err := s.CurrentProject(ctx, p, ps.ID, action)
			if err != nil {
				return nil, nil, err
			}
			if err := NotArchived(cur); err != nil {
				return nil, nil, err
			}
			return decide(p, cur, m, false)
		})
}

// RegisterVersion registers the next version of a model (editors) and
// returns the model, the version's number and the sequence. A version made
// from a run names it (run_id, or a runs:/ source): the run must be one of
// the project's, found on its own events (rule 2), right before deciding.
// A deleted run qualifies, as in MLflow: it is still readable and may be
// restored, and lineage records what produced the model.
func (s *Service) RegisterVersion(ctx context.Context, meta events.Meta, p authz.Principal, ref, name string, c RegisterVersion) (ModelState, int, uint64, error) {
	var registered int
	m, seq, err := s.updateModel(ctx, meta, p, ref, name, authz.ModelWrite,
		func(_ authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, error) {
			// The number is decided on the state the append expects; a retry
			// after a conflict decides again, so the last decision is stored.
			registered = len(m.Versions) + 1
			cmd := c
			run, err := LineageRun(c.Source, c.RunID)
			if err != nil || run == "" {
				return DecideRegisterVersion(m, cmd)
			}
			// A replay recomputes a stored decision: its run was found then.
			cmd.RunFound = replay
			if !replay && s.runs != nil {
				if cmd.RunFound, err = s.runs(ctx, ps.ID, run); err != nil {
					return nil, err
				}
			}
			return DecideRegisterVersion(m, cmd)
		})
	return m, registered, seq, err
}

// CurrentProject re-reads the project right before a model decision: the
// command may have waited its turn on a busy model (or retried) while an
// owner removed the caller or archived the project. The model append cannot
// carry an expectation on the project's subject, so this narrows the window
// to the decision itself.
func (s *Service) CurrentProject(ctx context.Context, p authz.Principal, projectID string, action authz.Action) (ProjectState, error) {
	cur, _, err := s.projects.Load(ctx, events.Subject(events.AggProject, projectID))
	if err != nil {
		return cur, err
	}
	role := cur.RoleOf(p.UserID)
	if !authz.Member(p, projectID, role) {
		return cur, notFound("project")
	}
	if !authz.CanInProject(p, projectID, role, action) {
		return cur, forbidden("your project role does not allow this")
	}
	return cur, nil
}

// AuthorizeModelWrite checks, before an upload is streamed, that p may write
// version v's artifacts; it returns the project and model state.
func (s *Service) AuthorizeModelWrite(ctx context.Context, p authz.Principal, ref, name string, v int) (ProjectState, ModelState, error) {
	_, ps, err := s.AuthorizeProject(ctx, p, ref, authz.ModelWrite)
	if err != nil {
		return ps, ModelState{}, err
	}
	if err := NotArchived(ps); err != nil {
		return ps, ModelState{}, err
	}
	id, err := s.modelID(ctx, ps.ID, name)
	if err != nil {
		return ps, ModelState{}, err
	}
	m, _, err := s.models.Load(ctx, events.Subject(events.AggModel, id))
	if err != nil {
		return ps, m, err
	}
	if !m.named(name) {
		return ps, m, modelMissing()
	}
	if _, err := liveVersion(m, v); err != nil {
		return ps, m, err
	}
	return ps, m, nil
}

// ModelHistory returns a model's events in order (point-in-time reads use
// ModelAsOf, which is bounded; this reads the whole history).
func (s *Service) ModelHistory(ctx context.Context, modelID string) ([]events.Envelope, error) {
	evs, _, err := s.store.Load(ctx, events.Subject(events.AggModel, modelID), 0)
	return evs, err
}

// refresh applies the ActorLookup, if one is configured.
func (s *Service) refresh(ctx context.Context, p authz.Principal) (authz.Principal, error) {
	if s.actor == nil {
		return p, nil
	}
	return s.actor(ctx, p)
}
