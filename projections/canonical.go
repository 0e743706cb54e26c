package projections

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// appendCanonical appends the RFC 8785 form of v, a value decoded by
// encoding/json with UseNumber, to buf. It is the projection's fast path
// (gowebpki/jcs's Transform, which the offline verifier uses, costs about
// ten times as much per entry, and refuses duplicate keys, which the trail
// keeps as jsonb does: the last wins, as in the Go map). Numbers are
// written by jcs.NumberToJSON, the ECMAScript formatting the RFC requires;
// TestCanonicalMatchesJCS and FuzzCanonical pin the rest to Transform.
func appendCanonical(buf []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(buf, "null"...), nil
	case bool:
		return strconv.AppendBool(buf, x), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return nil, fmt.Errorf("canonical form: number %s: %w", x, err)
		}
		s, err := jcs.NumberToJSON(f)
		if err != nil {
			return nil, fmt.Errorf("canonical form: %w", err)
		}
		return append(buf, s...), nil
	case string:
		return appendCanonicalString(buf, x), nil
	case []any:
		buf = append(buf, '[')
		for i, e := range x {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = appendCanonical(buf, e); err != nil {
				return nil, err
			}
		}
		return append(buf, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		buf = append(buf, '{')
		for i, k := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendCanonicalString(buf, k)
			buf = append(buf, ':')
			var err error
			if buf, err = appendCanonical(buf, x[k]); err != nil {
				return nil, err
			}
		}
		return append(buf, '}'), nil
	}
	return nil, fmt.Errorf("canonical form: unexpected %T", v)
}

// appendCanonicalString writes s as RFC 8785 (ECMAScript JSON.stringify)
// does: only '"', '\\' and control characters escaped, the usual five by
// their short forms, the others as \u00xx in lowercase hex.
func appendCanonicalString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c == '\b':
			buf = append(buf, '\\', 'b')
		case c == '\t':
			buf = append(buf, '\\', 't')
		case c == '\n':
			buf = append(buf, '\\', 'n')
		case c == '\f':
			buf = append(buf, '\\', 'f')
		case c == '\r':
			buf = append(buf, '\\', 'r')
		case c < 0x20:
			buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			buf = append(buf, c)
		}
	}
	return append(buf, '"')
}

// compareUTF16 orders strings by their UTF-16 code units (RFC 8785
// 3.2.3). It equals byte order unless a character beyond U+FFFF meets one
// in U+E000..U+FFFF.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return slices.Compare(utf16.AppendRune(nil, ra), utf16.AppendRune(nil, rb))
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// canonicalData decodes JSON data (last duplicate key wins, invalid UTF-8
// as U+FFFD, as the trail stores it) and appends its canonical form.
func canonicalData(buf, data []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("canonical form: %w", err)
	}
	if d.More() {
		return nil, errors.New("canonical form: data after the JSON value")
	}
	return appendCanonical(buf, v)
}
