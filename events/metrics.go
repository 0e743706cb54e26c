package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Metric points are telemetry, not decisions: an MLflow client logs one
// point per request thousands of times a run, and nothing is ever decided
// on them. They live in their own stream, MAESTRO_METRICS, one subject per
// run (maestro.metrics.<run_id>), one message per logging request, so the
// aggregate history (MAESTRO_EVENTS) that decisions fold stays small. Like
// events, they are acknowledged only once durable (the stream is file
// storage on the same fsync setting) and kept for ever.
const (
	// MetricsStreamName is the stream of metric points.
	MetricsStreamName = "MAESTRO_METRICS"
	// MetricsSubjectPrefix starts every metrics subject; it is outside
	// maestro.events.>, so the event projections do not follow it.
	MetricsSubjectPrefix = "maestro.metrics."
	// MetricsLogged is the one type in MAESTRO_METRICS: points of one run.
	MetricsLogged = "maestro.metric.logged.v1"
)

// MetricsSubject is the subject of a run's metric points.
func MetricsSubject(runID string) string { return MetricsSubjectPrefix + runID }

// MetricValue is a metric's value: any float64, NaN and ±Inf included. JSON
// has no NaN or Inf, so they travel as the strings "NaN", "Infinity" and
// "-Infinity", as in MLflow's REST API (protobuf's JSON mapping).
type MetricValue float64

// MarshalJSON implements json.Marshaler.
func (v MetricValue) MarshalJSON() ([]byte, error) {
	f := float64(v)
	switch {
	case math.IsNaN(f):
		return []byte(`"NaN"`), nil
	case math.IsInf(f, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(f, -1):
		return []byte(`"-Infinity"`), nil
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler: a number, or one of the three
// strings (a number in a string too, as protobuf's JSON mapping allows).
// It is on the ingest path (10,000 points a request), so a plain number is
// parsed directly rather than through the reflective decoder.
func (v *MetricValue) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN":
			*v = MetricValue(math.NaN())
		case "Infinity":
			*v = MetricValue(math.Inf(1))
		case "-Infinity":
			*v = MetricValue(math.Inf(-1))
		default:
			f, err := parseJSONNumber(s)
			if err != nil {
				return fmt.Errorf("metric value %q is not a number", s)
			}
			*v = MetricValue(f)
		}
		return nil
	}
	f, err := parseJSONNumber(string(b))
	if err != nil {
		return fmt.Errorf("metric value %s is not a number", b)
	}
	*v = MetricValue(f)
	return nil
}

// parseJSONNumber parses a JSON number (RFC 8259: no hex, no "Inf", no
// underscores, no leading "+"), finite.
func parseJSONNumber(s string) (float64, error) {
	if s == "" || s[0] == '+' {
		return 0, errors.New("not a number")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
		default:
			return 0, errors.New("not a number")
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, errors.New("not a number")
	}
	return f, nil
}

// MetricPoint is one point of a series: value at step and timestamp (ms
// since the epoch). It is encoded as [value, step, timestamp]: a request of
// 10,000 points stays far below the stream's message size.
type MetricPoint struct {
	Value     MetricValue
	Step      int64
	Timestamp int64
}

// MarshalJSON implements json.Marshaler (by hand: the ingest path).
func (p MetricPoint) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 48)
	b = append(b, '[')
	v, _ := p.Value.MarshalJSON()
	b = append(b, v...)
	b = append(b, ',')
	b = strconv.AppendInt(b, p.Step, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, p.Timestamp, 10)
	return append(b, ']'), nil
}

// UnmarshalJSON implements json.Unmarshaler: [value, step, timestamp],
// parsed by hand (the projection decodes every point of every request).
func (p *MetricPoint) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return errors.New("metric point: want [value, step, timestamp]")
	}
	parts := strings.Split(s[1:len(s)-1], ",")
	if len(parts) != 3 {
		return errors.New("metric point: want [value, step, timestamp]")
	}
	if err := p.Value.UnmarshalJSON([]byte(strings.TrimSpace(parts[0]))); err != nil {
		return err
	}
	var err error
	if p.Step, err = strconv.ParseInt(strings.TrimSpace(parts[1]), 10, 64); err != nil {
		return fmt.Errorf("metric step %q is not an integer", parts[1])
	}
	if p.Timestamp, err = strconv.ParseInt(strings.TrimSpace(parts[2]), 10, 64); err != nil {
		return fmt.Errorf("metric timestamp %q is not an integer", parts[2])
	}
	return nil
}

// MetricsLoggedData: points of one run's series, by key, in the order the
// client sent them.
type MetricsLoggedData struct {
	RunID        string                   `json:"run_id"`
	ExperimentID string                   `json:"experiment_id"`
	ProjectID    string                   `json:"project_id"`
	Metrics      map[string][]MetricPoint `json:"metrics"`
}

// MetricsConfig configures MAESTRO_METRICS.
type MetricsConfig struct {
	// Replicas as for the event stream (0 means 1, never lowered).
	Replicas int
}

// OpenMetricsStore creates or updates MAESTRO_METRICS and returns a store
// on it (the event store's append, idempotency and load).
func OpenMetricsStore(ctx context.Context, nc *nats.Conn, cfg MetricsConfig) (*Store, error) {
	return openStream(ctx, nc, jetstream.StreamConfig{
		Name:        MetricsStreamName,
		Description: "Maestro metric points, one message per logging request, one subject per run",
		Subjects:    []string{MetricsSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew, // history: refuse rather than forget
		MaxMsgSize:  1 << 20,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
	}, max(cfg.Replicas, 1), nil)
}
