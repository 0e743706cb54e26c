package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// PlainText reports whether s is valid UTF-8 without control characters
// other than tab, newline and carriage return. Everything a user types ends
// up in events that projections write to Postgres, which refuses NUL in text
// and \u0000 in jsonb: one such event would stop a projection for good, since
// events are never changed. So NUL and friends are refused at the door.
func PlainText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f {
			return false
		}
	}
	return true
}

// MaxJSONDepth bounds the nesting of free-form JSON kept in events. Go's
// decoder allows 10 000 levels; Postgres parses jsonb recursively under
// max_stack_depth, which a server may set low enough to refuse far less.
const MaxJSONDepth = 64

// CanonicalJSON turns free-form JSON from a client into the one form Maestro
// keeps in events, so that every value an event can carry is one Postgres
// jsonb stores, and the command response (from the event) and a later read
// (from jsonb) print the same text. Events are immutable: what is not
// canonical at the door stays in the stream for ever.
//
// The result has sorted object keys (duplicates: the last wins, as in
// jsonb), no insignificant whitespace, no HTML escaping, and numbers as
// IEEE-754 doubles in Go's shortest form, as JavaScript reads JSON: 0.1
// stays 0.1, 1e2 becomes 100, integers beyond ±2^53 round to the nearest
// double (send exact big integers as strings), -0 becomes 0 (numeric has
// no negative zero). Invalid UTF-8 and lone UTF-16 surrogates (\ud800),
// which jsonb refuses, become U+FFFD exactly as they do in every other text
// field Go decodes. Refused with an error: invalid JSON or trailing data,
// NUL in any string or key (jsonb refuses \u0000), numbers beyond the
// double range (1e400; beyond 1e131072 jsonb refuses them too), and nesting
// deeper than MaxJSONDepth. Empty input and null give nil. Applied twice it
// changes nothing, which is what lets the read side re-canonicalise jsonb's
// text and print what the command printed.
func CanonicalJSON(raw []byte) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("not valid JSON: data after the value")
	}
	v, err := canonicalValue(v, 0)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode canonical JSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func canonicalValue(v any, depth int) (any, error) {
	if depth > MaxJSONDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", MaxJSONDepth)
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if strings.IndexByte(k, 0) >= 0 {
				return nil, errors.New("NUL (\\u0000) is not allowed in keys")
			}
			c, err := canonicalValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	case []any:
		for i, e := range x {
			c, err := canonicalValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return nil, errors.New("NUL (\\u0000) is not allowed in strings")
		}
		return x, nil
	case json.Number:
		return canonicalNumber(string(x))
	default: // bool, nil
		return x, nil
	}
}

func canonicalNumber(text string) (float64, error) {
	shown := text
	if len(shown) > 24 {
		shown = shown[:24] + "…"
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("number %s is beyond the range of a double", shown)
	}
	if f == 0 {
		f = 0 // -0 → 0
	}
	return f, nil
}
