package tracking

import (
	"context"
	"errors"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Batch is one logging request of params, tags and metric points on a run
// (MLflow's log-batch).
type Batch struct {
	Params  []events.Param
	Tags    map[string]string
	Metrics []Metric
}

// DecideLogBatch decides a batch's params and tags on an active run, as
// one decision: the params (DecideLogParams), then the tags on the run as
// the params leave it (DecideSetRunTags), so the run's bounds hold for
// both together. Nothing of a refused batch is applied.
func DecideLogBatch(r RunState, params []events.Param, tags map[string]string) ([]handlers.Change, error) {
	if err := activeRun(r); err != nil {
		return nil, err
	}
	var out []handlers.Change
	if len(params) > 0 {
		ch, err := DecideLogParams(r, params)
		if err != nil {
			return nil, err
		}
		for _, c := range ch {
			if d, ok := c.Data.(events.RunParamsLoggedData); ok {
				r = CloneRun(r)
				for _, p := range d.Params {
					r.Params[p.Key] = p.Value
				}
			}
		}
		out = append(out, ch...)
	}
	if len(tags) > 0 {
		ch, err := DecideSetRunTags(r, tags)
		if err != nil {
			return nil, err
		}
		out = append(out, ch...)
	}
	return out, nil
}

// LogBatch logs a batch on a run. The whole request is checked before
// anything is stored: in the run's turn, its points are checked
// (DecideLogMetrics) and its params and tags decided (DecideLogBatch) on
// the run's current state; then the run's events are appended (one
// append), and after them the points, on the run's subject of the metrics
// stream. The order makes a retry converge: if the second append fails, the
// params and tags are stored and the points not, and the same request
// again decides its params and tags as no-ops (a param logged again with
// its value, tags set to the values they hold) and appends the points. A
// retry after both appends logs the points a second time unless it carries
// the first attempt's Idempotency-Key (then JetStream's duplicate window,
// or FindStored after it, drops them). seq is the event stream's sequence
// (0 when params and tags changed nothing), mseq the metrics stream's (0
// without points).
func (s *Service) LogBatch(ctx context.Context, meta events.Meta, p authz.Principal, ref, runID string, b Batch) (r RunState, seq, mseq uint64, err error) {
	if len(b.Metrics) > 0 && s.metrics == nil {
		return RunState{}, 0, 0, errors.New("tracking: no metrics store")
	}
	var points []handlers.Change
	r, seq, err = s.UpdateRunFunc(ctx, meta, p, ref, runID, func(r RunState) ([]handlers.Change, error) {
		points = nil
		if len(b.Metrics) > 0 {
			var err error
			if points, err = DecideLogMetrics(r, b.Metrics); err != nil {
				return nil, err
			}
		}
		return DecideLogBatch(r, b.Params, b.Tags)
	})
	if err != nil || len(points) == 0 {
		return r, seq, 0, err
	}
	mseq, err = s.appendMetrics(ctx, meta, runID, points)
	return r, seq, mseq, err
}
