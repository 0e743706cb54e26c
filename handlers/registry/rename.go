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
// unless the model bore it before: a rename back, or a change of case) and
// the old one stays reserved by it, so a name that once resolved to a
// model can never resolve to another one (a deployment that pinned
// models:/name/... cannot silently get a different model). Another model's
// name, even one it no longer bears, is taken.
//
// Whether the reservation is part of the batch is decided on the model's
// own events (the names it has held), not on the reservation, so a replay,
// which does not look at the reservation, makes the same batch with the
// same derived ids. The model's event comes last, as in every batch of an
// aggregate and its reservations: the command answers with (and caches)
// the model at its own sequence, which is the batch's last.
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
	var out []handlers.Change
	if !s.held[strings.ToLower(name)] {
		if newName.Taken {
			return nil, handlers.Errorf(handlers.Conflict, "model-exists", "a model named %q exists or existed in this project", name)
		}
		out = append(out, handlers.Change{Subject: events.ReservationSubject(events.AggModelName, ModelNameKey(s.ProjectID, name)),
			Type: events.NameReserved, Data: events.NameReservedData{Kind: "model", Name: name, OwnerID: s.ID, Scope: s.ProjectID}})
	}
	return append(out, handlers.Change{Subject: modelSubject(s), Type: events.ModelRenamed,
		Data: events.ModelRenamedData{ModelID: s.ID, ProjectID: s.ProjectID, Name: name, PreviousName: s.Name}}), nil
}

// RenameModel renames a model (editors, like any change of its metadata).
func (s *Service) RenameModel(ctx context.Context, meta events.Meta, p authz.Principal, ref, name, newName string) (ModelState, uint64, error) {
	return s.updateModelWith(ctx, meta, p, ref, name, authz.ModelWrite,
		func(_ authz.Principal, _ ProjectState, m ModelState, replay bool) ([]handlers.Change, map[string]uint64, error) {
			if replay || !ValidModelName(newName) || m.held[strings.ToLower(newName)] {
				// The decision needs no reservation: a replay recomputes the
				// stored batch (the model's names decide whether it reserved
				// one), and a name the model bore is its own.
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
