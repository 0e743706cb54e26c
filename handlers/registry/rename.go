package registry

import (
	"context"
	"strings"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// named reports whether the model bears name now (names compare without
// case, as their reservations do).
func (s ModelState) named(name string) bool { return strings.EqualFold(s.Name, name) }

// DecideRenameModel renames a live model to name. Names are never
// released: the new name is reserved for the model (in the same append,
// unless the model reserved it before: a rename back, or a change of case)
// and the old one stays reserved by it, so a name that once resolved to a
// model can never resolve to another one (a deployment that pinned
// models:/name/... cannot silently get a different model). Another model's
// name, even one it no longer bears, is taken.
//
// The model's event comes first in the batch, so its derived id does not
// depend on whether the reservation is part of the decision (a replay
// recomputes the decision without looking at the reservation).
func DecideRenameModel(s ModelState, newName ReservationState, name string) ([]handlers.Change, error) {
	if err := liveModel(s); err != nil {
		return nil, err
	}
	if !ValidModelName(name) {
		return nil, invalid("name must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if name == s.Name {
		return nil, nil
	}
	if newName.Taken && newName.OwnerID != s.ID {
		return nil, handlers.Errorf(handlers.Conflict, "model-exists", "a model named %q exists or existed in this project", name)
	}
	out := []handlers.Change{{Subject: modelSubject(s), Type: events.ModelRenamed,
		Data: events.ModelRenamedData{ModelID: s.ID, ProjectID: s.ProjectID, Name: name, PreviousName: s.Name}}}
	if !newName.Taken {
		out = append(out, handlers.Change{Subject: events.ReservationSubject(events.AggModelName, ModelNameKey(s.ProjectID, name)),
			Type: events.NameReserved, Data: events.NameReservedData{Kind: "model", Name: name, OwnerID: s.ID, Scope: s.ProjectID}})
	}
	return out, nil
}

// RenameModel renames a model (editors, like any change of its metadata).
func (s *Service) RenameModel(ctx context.Context, meta events.Meta, p authz.Principal, ref, name, newName string) (ModelState, uint64, error) {
	return s.updateModelWith(ctx, meta, p, ref, name, authz.ModelWrite,
		func(_ authz.Principal, _ ProjectState, m ModelState, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if replay || !ValidModelName(newName) {
				// A replay recomputes the model's stored event only.
				ch, err := DecideRenameModel(m, ReservationState{}, newName)
				return ch, nil, err
			}
			subj := events.ReservationSubject(events.AggModelName, ModelNameKey(m.ProjectID, newName))
			res, rv, err := s.names.Load(ctx, subj)
			if err != nil {
				return nil, nil, err
			}
			ch, err := DecideRenameModel(m, res, newName)
			return ch, map[string]uint64{subj: rv}, err
		})
}
