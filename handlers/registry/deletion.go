package registry

import (
	"context"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// DeleteVersion soft-deletes version v (editors). A version in staging or
// production, or one an alias names, also needs VersionPromote: deleting it
// clears a deployment pointer, and one a policy governs is refused
// (approval-required) like a direct move would be. The permission is read from the project's
// event-sourced membership at the moment of the decision (rule 2); a
// retry answering from its stored deletion (a replay) was checked then.
func (s *Service) DeleteVersion(ctx context.Context, meta events.Meta, p authz.Principal, ref, name string, v int) (ModelState, uint64, error) {
	return s.updateModel(ctx, meta, p, ref, name, authz.ModelWrite, func(p authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, error) {
		changes, err := DecideDeleteVersion(m, v, replay || mayPromote(p, ps))
		return guard(ps, m, changes, err, replay)
	})
}

// DeleteModel soft-deletes (del=true) or restores a model (editors).
// Deleting a model with a version in staging or production, or with
// aliases, also needs VersionPromote, as DeleteVersion does.
func (s *Service) DeleteModel(ctx context.Context, meta events.Meta, p authz.Principal, ref, name string, del bool) (ModelState, uint64, error) {
	return s.updateModel(ctx, meta, p, ref, name, authz.ModelWrite, func(p authz.Principal, ps ProjectState, m ModelState, replay bool) ([]handlers.Change, error) {
		changes, err := DecideDeleteModel(m, del, replay || mayPromote(p, ps))
		return guard(ps, m, changes, err, replay)
	})
}

// mayPromote reports whether p may move deployment pointers in the project.
func mayPromote(p authz.Principal, ps ProjectState) bool {
	return authz.CanInProject(p, ps.ID, ps.RoleOf(p.UserID), authz.VersionPromote)
}
