package tracking_test

import (
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

func TestDecideLogInputs(t *testing.T) {
	t.Parallel()
	ds := func(name, digest string, tags ...events.Param) events.DatasetInput {
		return events.DatasetInput{Name: name, Digest: digest, SourceType: "local", Source: `{"uri": "/data"}`, Tags: tags}
	}
	logged := func(in ...events.DatasetInput) []handlers.Change {
		return []handlers.Change{{Subject: rSubj, Type: events.RunInputsLogged, Data: events.RunInputsLoggedData{RunID: rid, Inputs: in}}}
	}
	training := events.Param{Key: "mlflow.data.context", Value: "training"}
	fresh := []events.Envelope{runCreated(t, "train", nil)}
	withTrain := cat(fresh, []events.Envelope{ev(t, t0, rSubj, events.RunInputsLogged,
		events.RunInputsLoggedData{RunID: rid, Inputs: []events.DatasetInput{ds("train", "d1", training)}})})
	many := make([]events.DatasetInput, tracking.MaxInputsPerCall+1)
	for i := range many {
		many[i] = ds("d", strings.Repeat("x", i%30)+"y")
	}
	cases := []struct {
		name   string
		given  []events.Envelope
		inputs []events.DatasetInput
		want   []handlers.Change
		err    wantErr
		prefix string
	}{
		{name: "fresh, in order", given: fresh, inputs: []events.DatasetInput{ds("train", "d1", training), ds("eval", "d2")},
			want: logged(ds("train", "d1", training), ds("eval", "d2"))},
		{name: "a dataset once per run", given: withTrain, inputs: []events.DatasetInput{ds("train", "d1"), ds("eval", "d2")}, want: logged(ds("eval", "d2"))},
		{name: "again: nothing", given: withTrain, inputs: []events.DatasetInput{ds("train", "d1", training)}, want: noChanges},
		{name: "twice in one request: once", given: fresh, inputs: []events.DatasetInput{ds("a", "1"), ds("a", "1")}, want: logged(ds("a", "1"))},
		{name: "another digest is another dataset", given: withTrain, inputs: []events.DatasetInput{ds("train", "d9")}, want: logged(ds("train", "d9"))},
		{name: "empty", given: fresh, want: noChanges},
		{name: "missing source", given: fresh, inputs: []events.DatasetInput{ds("a", "1"), {Name: "b", Digest: "2", SourceType: "local"}}, err: invalid, prefix: "datasets[1]"},
		{name: "digest of 37", given: fresh, inputs: []events.DatasetInput{ds("a", strings.Repeat("d", 37))}, err: invalid, prefix: "datasets[0]"},
		{name: "control character in the schema", given: fresh, inputs: []events.DatasetInput{{Name: "a", Digest: "1", SourceType: "s", Source: "x", Schema: "\x00"}}, err: invalid},
		{name: "empty tag key", given: fresh, inputs: []events.DatasetInput{ds("a", "1", events.Param{Value: "v"})}, err: invalid},
		{name: "too many", given: fresh, inputs: many, err: invalid},
		{name: "deleted run", given: cat(fresh, []events.Envelope{runDeleted(t)}), inputs: []events.DatasetInput{ds("a", "1")}, err: runDeletedErr},
		{name: "no run", inputs: []events.DatasetInput{ds("a", "1")}, err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideLogInputs(fold(t, tracking.EvolveRun, tc.given), tc.inputs)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.prefix != "" {
				if d := detail(t, err); !strings.HasPrefix(d, tc.prefix) {
					t.Fatalf("detail %q does not start with %q", d, tc.prefix)
				}
			}
		})
	}
}
