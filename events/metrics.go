package events

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
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
func (v MetricValue) MarshalJSON() ([]byte, error) { return v.AppendJSON(nil), nil }

// AppendJSON appends v as MarshalJSON encodes it.
func (v MetricValue) AppendJSON(b []byte) []byte {
	f := float64(v)
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Infinity"`...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
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

// LaterPoint reports whether a is later than b in a series: by step, then
// timestamp, then value, with NaN above every number (Postgres's float8
// order, which the latest_metrics read model uses): the run's "latest" value
// is the same on the write side and in the read model.
func LaterPoint(a, b MetricPoint) bool {
	if c := cmp.Compare(a.Step, b.Step); c != 0 {
		return c > 0
	}
	if c := cmp.Compare(a.Timestamp, b.Timestamp); c != 0 {
		return c > 0
	}
	return CompareFloat8(float64(a.Value), float64(b.Value)) > 0
}

// CompareFloat8 orders values as Postgres orders float8: NaN equal to NaN
// and above every number, -0 equal to 0.
func CompareFloat8(a, b float64) int {
	switch an, bn := math.IsNaN(a), math.IsNaN(b); {
	case an && bn:
		return 0
	case an:
		return 1
	case bn:
		return -1
	}
	return cmp.Compare(a, b)
}

// MarshalJSON implements json.Marshaler (by hand: the ingest path).
func (p MetricPoint) MarshalJSON() ([]byte, error) { return p.appendJSON(make([]byte, 0, 48)), nil }

func (p MetricPoint) appendJSON(b []byte) []byte {
	b = append(b, '[')
	b = p.Value.AppendJSON(b)
	b = append(b, ',')
	b = strconv.AppendInt(b, p.Step, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, p.Timestamp, 10)
	return append(b, ']')
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

// AppendJSON appends d encoded exactly as json.Marshal encodes it (keys
// sorted, the same escaping), without reflection: events.New calls it for
// every logging request, 10,000 points each.
func (d MetricsLoggedData) AppendJSON(b []byte) []byte {
	if b == nil {
		n := 96 + len(d.RunID) + len(d.ExperimentID) + len(d.ProjectID)
		for k, ps := range d.Metrics {
			n += len(k) + 8 + 44*len(ps)
		}
		b = make([]byte, 0, n)
	}
	b = append(b, `{"run_id":`...)
	b = appendJSONString(b, d.RunID)
	b = append(b, `,"experiment_id":`...)
	b = appendJSONString(b, d.ExperimentID)
	b = append(b, `,"project_id":`...)
	b = appendJSONString(b, d.ProjectID)
	b = append(b, `,"metrics":`...)
	if d.Metrics == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '{')
		for i, k := range slices.Sorted(maps.Keys(d.Metrics)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			ps := d.Metrics[k]
			if ps == nil {
				b = append(b, "null"...)
				continue
			}
			b = append(b, '[')
			for j, p := range ps {
				if j > 0 {
					b = append(b, ',')
				}
				b = p.appendJSON(b)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendJSONString appends s as encoding/json encodes a string: printable
// ASCII that needs no escaping (every valid metric key and id) directly,
// anything else through encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainJSONByte(s[i]) {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainJSONByte is a byte encoding/json writes into a string as it is
// (it escapes <, > and & for HTML).
func plainJSONByte(c byte) bool {
	return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// DecodeMetricsLogged decodes the data of a MetricsLogged message as
// json.Unmarshal does (the same value, the same errors): the shape
// AppendJSON writes is parsed in one pass by hand, anything else (another
// field order, whitespace, escapes, a value as a numeric string) goes
// through json.Unmarshal.
func DecodeMetricsLogged(data []byte) (MetricsLoggedData, error) {
	if d, ok := decodeMetricsLoggedFast(data); ok {
		return d, nil
	}
	var d MetricsLoggedData
	err := json.Unmarshal(data, &d)
	return d, err
}

// decodeMetricsLoggedFast parses exactly what AppendJSON writes for
// plain strings and non-empty series; ok is false for anything else.
func decodeMetricsLoggedFast(b []byte) (d MetricsLoggedData, ok bool) {
	sc := jsonScan{b: b}
	if !sc.lit(`{"run_id":`) {
		return d, false
	}
	if d.RunID, ok = sc.plainString(); !ok || !sc.lit(`,"experiment_id":`) {
		return d, false
	}
	if d.ExperimentID, ok = sc.plainString(); !ok || !sc.lit(`,"project_id":`) {
		return d, false
	}
	if d.ProjectID, ok = sc.plainString(); !ok || !sc.lit(`,"metrics":{`) {
		return d, false
	}
	d.Metrics = map[string][]MetricPoint{}
	if sc.lit("}") {
		return d, sc.lit("}") && sc.i == len(b)
	}
	for {
		key, ok := sc.plainString()
		if !ok || !sc.lit(":[") {
			return d, false
		}
		if _, dup := d.Metrics[key]; dup {
			return d, false // json.Unmarshal keeps the last; rare enough to leave to it
		}
		// Sized up front: the points of the series are the "],[" before
		// its "]]", plus one.
		end := bytes.Index(b[sc.i:], []byte("]]"))
		if end < 0 {
			return d, false
		}
		points := make([]MetricPoint, 0, bytes.Count(b[sc.i:sc.i+end], []byte("],["))+1)
		for {
			var p MetricPoint
			if !sc.lit("[") || !sc.metricValue(&p.Value) || !sc.lit(",") || !sc.int64(&p.Step) || !sc.lit(",") || !sc.int64(&p.Timestamp) || !sc.lit("]") {
				return d, false
			}
			points = append(points, p)
			if sc.lit("]") {
				break
			}
			if !sc.lit(",") {
				return d, false
			}
		}
		d.Metrics[key] = points
		if sc.lit("}") {
			return d, sc.lit("}") && sc.i == len(b)
		}
		if !sc.lit(",") {
			return d, false
		}
	}
}

// jsonScan reads the JSON tokens of the metric fast paths: it accepts a
// token only when encoding/json would read it as the same value, and says
// no (the caller falls back to encoding/json) otherwise.
type jsonScan struct {
	b []byte
	i int
}

// lit consumes s if it is next.
func (s *jsonScan) lit(t string) bool {
	if len(s.b)-s.i >= len(t) && string(s.b[s.i:s.i+len(t)]) == t {
		s.i += len(t)
		return true
	}
	return false
}

// plainBytes consumes a string of plain bytes (plainJSONByte: no escapes,
// nothing encoding/json would change) and returns its contents.
func (s *jsonScan) plainBytes() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	for j := s.i + 1; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			v := s.b[s.i+1 : j]
			s.i = j + 1
			return v, true
		}
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return nil, false
		}
	}
	return nil, false
}

func (s *jsonScan) plainString() (string, bool) {
	v, ok := s.plainBytes()
	return string(v), ok
}

// number consumes a JSON number (RFC 8259 grammar) and returns its text;
// integer says it has neither fraction nor exponent.
func (s *jsonScan) number() (text []byte, integer, ok bool) {
	b, j := s.b, s.i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
	default:
		return nil, false, false
	}
	integer = true
	if j < len(b) && b[j] == '.' {
		integer = false
		if j = digits(b, j+1); j < 0 {
			return nil, false, false
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		integer = false
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j = digits(b, j); j < 0 {
			return nil, false, false
		}
	}
	text, s.i = b[s.i:j], j
	return text, integer, true
}

// digits skips the run of at least one digit at b[j:] and returns where it
// ends, or -1 when there is none (a fraction or exponent without digits).
func digits(b []byte, j int) int {
	k := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	if j == k {
		return -1
	}
	return j
}

// int64 consumes an integer that fits an int64, as encoding/json decodes
// one into an int64 field.
func (s *jsonScan) int64(v *int64) bool {
	// Up to 18 digits (every step and timestamp in practice) by hand: no
	// overflow is possible; longer ones through strconv.
	b, j := s.b, s.i
	if j < len(b) && b[j] == '-' {
		j++
	}
	start := j
	var u uint64
	for j < len(b) && b[j] >= '0' && b[j] <= '9' && j-start < 18 {
		u = u*10 + uint64(b[j]-'0')
		j++
	}
	switch {
	case j == start || (b[start] == '0' && j-start > 1):
		return false // not a JSON number
	case j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == 'e' || b[j] == 'E'):
		text, integer, ok := s.number()
		if !ok || !integer {
			return false
		}
		n, err := strconv.ParseInt(string(text), 10, 64)
		*v = n
		return err == nil
	}
	n := int64(u)
	if start > s.i {
		n = -n
	}
	*v, s.i = n, j
	return true
}

// metricValue consumes a value as MetricValue.UnmarshalJSON reads it: a
// finite number, or "NaN", "Infinity" or "-Infinity". (A number in a
// string, which it also takes, is left to it.)
func (s *jsonScan) metricValue(v *MetricValue) bool {
	if s.i < len(s.b) && s.b[s.i] == '"' {
		text, ok := s.plainBytes()
		switch {
		case !ok:
			return false
		case string(text) == "NaN":
			*v = MetricValue(math.NaN())
		case string(text) == "Infinity":
			*v = MetricValue(math.Inf(1))
		case string(text) == "-Infinity":
			*v = MetricValue(math.Inf(-1))
		default:
			return false
		}
		return true
	}
	text, _, ok := s.number()
	if !ok {
		return false
	}
	f, err := strconv.ParseFloat(string(text), 64)
	*v = MetricValue(f)
	return err == nil && !math.IsInf(f, 0)
}

// ScanMetricValue is the fast path's reading of a metric value at the
// start of b: the value and the bytes it took; ok is false for anything
// MetricValue.UnmarshalJSON would not read as the same value.
func ScanMetricValue(b []byte) (v MetricValue, n int, ok bool) {
	s := jsonScan{b: b}
	ok = s.metricValue(&v)
	return v, s.i, ok
}

// ScanInt64 is ScanMetricValue for an integer (a step or timestamp), as
// encoding/json decodes one into an int64.
func ScanInt64(b []byte) (v int64, n int, ok bool) {
	s := jsonScan{b: b}
	ok = s.int64(&v)
	return v, s.i, ok
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
