package api

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"sync"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// A metric logging request is up to 10,000 points, and decoding it through
// encoding/json (reflection, and MetricValue.UnmarshalJSON per point) was
// half of the server's CPU under an ingest load. decodeMetricsBody reads
// the common shape in one pass by hand and hands everything else to the
// strict decoder, so what the route accepts, and every error it gives, is
// exactly what decodeJSON over logMetricsRequest gives
// (FuzzMetricsBody checks it point by point).

// metricsBodies recycles request body buffers: a 10,000-point body is
// about 700 KB, read whole before it is parsed, as json.Decoder does.
var metricsBodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// decodeMetricsBody reads a metric logging request's body: its points, and
// the params and tags a batch may carry too (those take the strict path).
func decodeMetricsBody(r *http.Request) (tracking.Batch, error) {
	if err := jsonContent(r); err != nil {
		return tracking.Batch{}, err
	}
	buf := metricsBodies.Get().(*bytes.Buffer)
	buf.Reset()
	defer metricsBodies.Put(buf)
	if _, err := buf.ReadFrom(r.Body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tracking.Batch{}, err
		}
		return tracking.Batch{}, problem("malformed-json", jsonErrorDetail(err))
	}
	if points, ok := parseMetricsBody(buf.Bytes()); ok {
		return tracking.Batch{Metrics: points}, nil
	}
	return decodeMetricsStrict(buf.Bytes())
}

// decodeMetricsStrict is the route's decoding through encoding/json: the
// reference the fast path must agree with, and the one that words errors.
func decodeMetricsStrict(body []byte) (tracking.Batch, error) {
	var req logMetricsRequest
	if err := decodeStrict(bytes.NewReader(body), &req); err != nil {
		return tracking.Batch{}, err
	}
	points := make([]tracking.Metric, len(req.Metrics))
	for i, m := range req.Metrics {
		if m.Value == nil {
			return tracking.Batch{}, problem("validation-failed", "metrics["+strconv.Itoa(i)+"]: value is required")
		}
		points[i] = tracking.Metric{Key: m.Key, Value: *m.Value, Step: m.Step, Timestamp: m.Timestamp}
	}
	return tracking.Batch{Metrics: points, Params: req.Params, Tags: req.Tags}, nil
}

// Fields of a point, as bits of the set parseMetricsBody has seen.
const (
	seenKey = 1 << iota
	seenValue
	seenStep
	seenTimestamp
)

// parseMetricsBody parses {"metrics": [{"key": …, "value": …, "step": …,
// "timestamp": …}, …]} in one pass: fields in any order, JSON whitespace
// anywhere, step and timestamp optional (0), values as numbers or the three
// strings. ok is false for anything else — another field or its case,
// a repeated field, null, an escape or a byte outside printable ASCII in a
// key, a number in a string, a missing value, trailing data — which the
// strict decoder then accepts or refuses as it always did. Equal keys share
// one string.
func parseMetricsBody(b []byte) (points []tracking.Metric, ok bool) {
	s := bodyScan{b: b}
	s.ws()
	if !s.lit("{") || !s.ws() || !s.lit(`"metrics"`) || !s.ws() || !s.lit(":") || !s.ws() || !s.lit("[") {
		return nil, false
	}
	// A point is at least {"value":0} (11 bytes): no reallocation, and a
	// small body does not reserve 10,000 points.
	points = make([]tracking.Metric, 0, min(len(b)/11+1, tracking.MaxMetricsPerCall+1))
	keys := map[string]string{}
	s.ws()
	if !s.lit("]") {
		for {
			var p tracking.Metric
			if !s.lit("{") {
				return nil, false
			}
			seen := 0
			for {
				s.ws()
				field, ok := s.plain()
				if !ok || !s.ws() || !s.lit(":") || !s.ws() {
					return nil, false
				}
				var bit int
				switch string(field) {
				case "key":
					k, ok := s.plain()
					if !ok {
						return nil, false
					}
					if p.Key, ok = keys[string(k)]; !ok {
						p.Key = string(k)
						keys[p.Key] = p.Key
					}
					bit = seenKey
				case "value":
					v, n, ok := events.ScanMetricValue(b[s.i:])
					if !ok {
						return nil, false
					}
					p.Value, s.i, bit = v, s.i+n, seenValue
				case "step", "timestamp":
					v, n, ok := events.ScanInt64(b[s.i:])
					if !ok {
						return nil, false
					}
					s.i += n
					if bit = seenStep; string(field) == "step" {
						p.Step = v
					} else {
						p.Timestamp, bit = v, seenTimestamp
					}
				default:
					return nil, false
				}
				if seen&bit != 0 {
					return nil, false // a repeated field: encoding/json keeps the last
				}
				seen |= bit
				s.ws()
				if s.lit("}") {
					break
				}
				if !s.lit(",") {
					return nil, false
				}
			}
			if seen&seenValue == 0 {
				return nil, false // the strict decoder names the point
			}
			points = append(points, p)
			s.ws()
			if s.lit("]") {
				break
			}
			if !s.lit(",") || !s.ws() {
				return nil, false
			}
		}
	}
	s.ws()
	if !s.lit("}") {
		return nil, false
	}
	s.ws()
	return points, s.i == len(b)
}

// bodyScan reads the tokens of parseMetricsBody.
type bodyScan struct {
	b []byte
	i int
}

// ws skips JSON whitespace; it returns true so it chains in conditions.
func (s *bodyScan) ws() bool {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return true
		}
	}
	return true
}

// lit consumes t if it is next.
func (s *bodyScan) lit(t string) bool {
	if len(s.b)-s.i >= len(t) && string(s.b[s.i:s.i+len(t)]) == t {
		s.i += len(t)
		return true
	}
	return false
}

// plain consumes a string of printable ASCII without escapes (what
// encoding/json reads as exactly those bytes) and returns its contents.
func (s *bodyScan) plain() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[s.i+1 : j]
			s.i = j + 1
			return v, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
	}
	return nil, false
}
