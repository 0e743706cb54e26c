package registry_test

import (
	"sync"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Copies of a model state share their versions array (a clone costs
// nothing per version); folding into one copy never changes another, even
// when copies of the same state fold concurrently (as the repository's
// cached state is forked by Load and Update at once).
func TestModelCopiesShareVersionsWithoutSeeingEachOther(t *testing.T) {
	const model = "11111111-1111-1111-1111-111111111111"
	subj := events.Subject(events.AggModel, model)
	registered := func(v int, desc string) events.Envelope {
		return ev(t, subj, events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: model, Version: v, Description: desc})
	}
	base := fold(t, registry.EvolveModel, []events.Envelope{
		ev(t, subj, events.ModelCreated, events.ModelCreatedData{ModelID: model, ProjectID: "p", Name: "m"}),
		registered(1, "base"), registered(2, "base"), registered(3, "base"),
	})
	snapshot := func(s registry.ModelState) []string {
		var out []string
		for _, v := range s.Versions {
			out = append(out, v.Description)
		}
		return out
	}
	want := snapshot(base)

	// Many forks of base, each appending its own versions and changing an
	// old one, at the same time.
	const forks = 16
	results := make([]registry.ModelState, forks)
	var wg sync.WaitGroup
	for i := range forks {
		wg.Go(func() {
			s := registry.CloneModel(base)
			for v := 4; v <= 8; v++ {
				var err error
				if s, err = registry.EvolveModel(s, registered(v, string(rune('a'+i)))); err != nil {
					t.Error(err)
					return
				}
			}
			results[i] = s
		})
	}
	wg.Wait()
	// Every fork sees its own new versions only (checked before any of
	// them copies its array for the change below).
	for i, s := range results {
		mine := string(rune('a' + i))
		if got := snapshot(s); len(got) != 8 || got[3] != mine || got[7] != mine {
			t.Fatalf("fork %d sees another fork's versions: %v", i, got)
		}
	}
	for i := range results {
		s, err := registry.EvolveModel(results[i], ev(t, subj, events.ModelVersionUpdated, events.ModelVersionUpdatedData{ModelID: model, Version: 2, Description: ptr(string(rune('a' + i)))}))
		if err != nil {
			t.Fatal(err)
		}
		results[i] = s
	}
	if got := snapshot(base); len(got) != len(want) || got[0] != "base" || got[1] != "base" || got[2] != "base" {
		t.Fatalf("the shared state changed: %v", got)
	}
	for i, s := range results {
		mine := string(rune('a' + i))
		got := snapshot(s)
		exp := []string{"base", mine, "base", mine, mine, mine, mine, mine}
		if len(got) != len(exp) {
			t.Fatalf("fork %d: %v", i, got)
		}
		for k := range exp {
			if got[k] != exp[k] {
				t.Fatalf("fork %d sees another fork's versions: %v, want %v", i, got, exp)
			}
		}
		// A copy of a fork goes on from it without disturbing it.
		next, err := registry.EvolveModel(registry.CloneModel(s), registered(9, "next"))
		if err != nil {
			t.Fatal(err)
		}
		if len(snapshot(s)) != 8 || len(snapshot(next)) != 9 || snapshot(next)[7] != mine {
			t.Fatalf("fork %d and its copy: %v / %v", i, snapshot(s), snapshot(next))
		}
	}
}

func ptr[T any](v T) *T { return &v }
