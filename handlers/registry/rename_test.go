package registry_test

import (
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

func TestDecideRenameModel(t *testing.T) {
	t.Parallel()
	live := []events.Envelope{modelCreated(t)} // named "resnet"
	nameSubj := func(name string) string {
		return events.ReservationSubject(events.AggModelName, registry.ModelNameKey(projID, name))
	}
	res := func(name, owner string) []events.Envelope {
		return []events.Envelope{ev(t, nameSubj(name), events.NameReserved, events.NameReservedData{Kind: "model", Name: name, OwnerID: owner, Scope: projID})}
	}
	renamed := func(from, to string) handlers.Change {
		return handlers.Change{Subject: modelSubj, Type: events.ModelRenamed,
			Data: events.ModelRenamedData{ModelID: modelID, ProjectID: projID, Name: to, PreviousName: from}}
	}
	reserve := func(name string) handlers.Change {
		return handlers.Change{Subject: nameSubj(name), Type: events.NameReserved,
			Data: events.NameReservedData{Kind: "model", Name: name, OwnerID: modelID, Scope: projID}}
	}
	renamedBack := cat(live, applied(t, []handlers.Change{renamed("resnet", "vit")})...)
	cases := []struct {
		name  string
		model []events.Envelope
		res   []events.Envelope
		to    string
		want  []handlers.Change
		err   wantErr
	}{
		// The model's event comes last, as in every batch of an aggregate
		// and its reservations (the command answers the batch's sequence).
		{name: "rename", model: live, to: "vit", want: []handlers.Change{reserve("vit"), renamed("resnet", "vit")}},
		{name: "same name", model: live, res: res("resnet", modelID), to: "resnet"},
		{name: "change of case: the reservation is the model's", model: live, res: res("resnet", modelID), to: "ResNet",
			want: []handlers.Change{renamed("resnet", "ResNet")}},
		{name: "back to an old name of its own", model: renamedBack, res: res("resnet", modelID), to: "resnet",
			want: []handlers.Change{renamed("vit", "resnet")}},
		// Whether to reserve is decided on the model's own names, so a
		// replay, which does not look at the reservation, decides the same.
		{name: "back to an old name, the reservation unread", model: renamedBack, to: "RESNET",
			want: []handlers.Change{renamed("vit", "RESNET")}},
		{name: "another model's name", model: live, res: res("vit", "other"), to: "vit", err: modelExists},
		{name: "invalid name", model: live, to: "vit net", err: invalid},
		{name: "empty name", model: live, to: "", err: invalid},
		{name: "deleted model", model: cat(live, modelDeleted(t)), to: "vit", err: notFound},
		{name: "no model", to: "vit", err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.DecideRenameModel(fold(t, registry.EvolveModel, tc.model), fold(t, registry.EvolveReservation, tc.res), tc.to)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
	if m := fold(t, registry.EvolveModel, renamedBack); m.Name != "vit" {
		t.Fatalf("renamed model folds to name %q", m.Name)
	}
}
