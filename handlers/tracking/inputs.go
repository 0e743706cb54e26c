package tracking

import (
	"context"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Limits of dataset inputs: MLflow's column sizes (mlflow/utils/
// validation.py) where it has them; schema and profile are bounded by the
// event (handlers.MaxEventData) rather than MLflow's 1 MiB and 16 MiB.
const (
	MaxDatasetNameLen      = 500
	MaxDatasetDigestLen    = 36
	MaxDatasetSourceType   = 36
	MaxDatasetSourceLen    = 65535
	MaxInputTagKeyLen      = 255
	MaxInputTagValueLen    = 500
	MaxInputTagsPerDataset = 100
	MaxInputsPerCall       = 100
	// MaxInputsPerRun bounds the datasets a run's state remembers.
	MaxInputsPerRun = 1000
)

// InputKey identifies a dataset among a run's inputs: as in MLflow, a
// dataset (name and digest) is a run's input once; logging it again, with
// other tags too, changes nothing.
func InputKey(in events.DatasetInput) string { return in.Name + "\x00" + in.Digest }

// DecideLogInputs records the datasets an active run used, each new to it
// (InputKey), in the order sent. A refused input is named by its index and
// nothing is recorded.
func DecideLogInputs(r RunState, inputs []events.DatasetInput) ([]handlers.Change, error) {
	if err := activeRun(r); err != nil {
		return nil, err
	}
	if len(inputs) > MaxInputsPerCall {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "at most %d datasets per request", MaxInputsPerCall)
	}
	seen := map[string]bool{}
	var fresh []events.DatasetInput
	for i, in := range inputs {
		if err := checkDatasetInput(in); err != nil {
			return nil, indexedAs("datasets", err, i)
		}
		k := InputKey(in)
		if seen[k] || r.Inputs[k] {
			continue
		}
		seen[k] = true
		fresh = append(fresh, in)
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	if len(r.Inputs)+len(fresh) > MaxInputsPerRun {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "a run holds at most %d dataset inputs", MaxInputsPerRun)
	}
	return []handlers.Change{{Subject: events.Subject(events.AggRun, r.ID), Type: events.RunInputsLogged,
		Data: events.RunInputsLoggedData{RunID: r.ID, Inputs: fresh}}}, nil
}

func checkDatasetInput(in events.DatasetInput) error {
	for _, f := range []struct {
		name, value string
		max         int
	}{{"name", in.Name, MaxDatasetNameLen}, {"digest", in.Digest, MaxDatasetDigestLen},
		{"source_type", in.SourceType, MaxDatasetSourceType}, {"source", in.Source, MaxDatasetSourceLen}} {
		if f.value == "" || utf8.RuneCountInString(f.value) > f.max || !handlers.PlainText(f.value) {
			return handlers.Errorf(handlers.Invalid, "validation-failed", "dataset %s must be 1 to %d characters of text", f.name, f.max)
		}
	}
	if !handlers.PlainText(in.Schema) || !handlers.PlainText(in.Profile) {
		return handlers.Errorf(handlers.Invalid, "validation-failed", "dataset schema and profile must be text")
	}
	if len(in.Tags) > MaxInputTagsPerDataset {
		return handlers.Errorf(handlers.Invalid, "validation-failed", "at most %d tags per dataset input", MaxInputTagsPerDataset)
	}
	for _, t := range in.Tags {
		if t.Key == "" || utf8.RuneCountInString(t.Key) > MaxInputTagKeyLen || utf8.RuneCountInString(t.Value) > MaxInputTagValueLen ||
			!handlers.PlainText(t.Key) || !handlers.PlainText(t.Value) {
			return handlers.Errorf(handlers.Invalid, "validation-failed", "input tag %q: a key of 1 to %d characters and a value of at most %d",
				truncate(t.Key, 40), MaxInputTagKeyLen, MaxInputTagValueLen)
		}
	}
	return nil
}

// LogInputs records datasets a run used.
func (s *Service) LogInputs(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, inputs []events.DatasetInput) (RunState, uint64, error) {
	return s.UpdateRunFunc(ctx, meta, p, ref, runID, func(r RunState) ([]handlers.Change, error) { return DecideLogInputs(r, inputs) })
}
