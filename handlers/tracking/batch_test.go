package tracking_test

import (
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// A batch's params and tags are one decision: both are applied or neither,
// and the run's bounds are checked on the params and tags together.
func TestDecideLogBatch(t *testing.T) {
	t.Parallel()
	p := func(k, v string) events.Param { return events.Param{Key: k, Value: v} }
	logged := func(params ...events.Param) handlers.Change {
		return handlers.Change{Subject: rSubj, Type: events.RunParamsLogged, Data: events.RunParamsLoggedData{RunID: rid, Params: params}}
	}
	fresh := []events.Envelope{runCreated(t, "train", nil)}
	withLR := cat(fresh, []events.Envelope{runParams(t, p("lr", "0.1")), runTagsSet(t, map[string]string{"team": "ml"})})
	cases := []struct {
		name   string
		given  []events.Envelope
		params []events.Param
		tags   map[string]string
		want   []handlers.Change
		err    wantErr
	}{
		{name: "params and tags", given: fresh, params: []events.Param{p("lr", "0.1")}, tags: map[string]string{"team": "ml"},
			want: []handlers.Change{logged(p("lr", "0.1")), runTagsChange(map[string]string{"team": "ml"})}},
		{name: "params only", given: fresh, params: []events.Param{p("lr", "0.1")}, want: []handlers.Change{logged(p("lr", "0.1"))}},
		{name: "tags only", given: fresh, tags: map[string]string{"team": "ml"}, want: []handlers.Change{runTagsChange(map[string]string{"team": "ml"})}},
		{name: "nothing", given: fresh, want: noChanges},
		{name: "a retry changes nothing", given: withLR, params: []events.Param{p("lr", "0.1")}, tags: map[string]string{"team": "ml"}, want: noChanges},
		{name: "the run name tag renames", given: fresh, tags: map[string]string{rn: "eval"},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Name: strp("eval")}), runTagsChange(map[string]string{rn: "eval"})}},
		{name: "a param overwrite refuses the tags too", given: withLR, params: []events.Param{p("lr", "0.2")}, tags: map[string]string{"x": "1"}, err: paramOverwrite},
		{name: "a bad tag refuses the params too", given: fresh, params: []events.Param{p("lr", "0.1")}, tags: map[string]string{"../x": "1"}, err: invalid},
		{name: "deleted run", given: cat(fresh, []events.Envelope{runDeleted(t)}), err: runDeletedErr},
		{name: "no run", err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideLogBatch(fold(t, tracking.EvolveRun, tc.given), tc.params, tc.tags)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

// The run's byte bound holds for a batch's params and tags together, not
// for each half alone.
func TestDecideLogBatchBoundsTogether(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil)})
	// 8,000 bytes of room: the name tag (mlflow.runName=train) and one big
	// param take the rest.
	r.Params = map[string]string{"big": strings.Repeat("v", tracking.MaxRunBytes-8000-len(rn+"train")-len("big"))}
	params := []events.Param{{Key: "p", Value: strings.Repeat("v", 5000)}}
	tags := map[string]string{"t": strings.Repeat("v", 5000)}
	if _, err := tracking.DecideLogParams(r, params); err != nil {
		t.Fatalf("params alone: %v", err)
	}
	if _, err := tracking.DecideSetRunTags(r, tags); err != nil {
		t.Fatalf("tags alone: %v", err)
	}
	_, err := tracking.DecideLogBatch(r, params, tags)
	checkErr(t, err, invalid)
}
