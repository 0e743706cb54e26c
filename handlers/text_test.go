package handlers

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// CanonicalJSON: what it keeps, how it prints it, what it refuses.
func TestCanonicalJSON(t *testing.T) {
	for _, c := range []struct {
		in, want string // want "" with err: refused
		err      string
	}{
		{in: ``, want: ``},
		{in: ` null `, want: ``},
		{in: `{"b":1,"a":{"d":[true,null],"c":"x"}}`, want: `{"a":{"c":"x","d":[true,null]},"b":1}`},
		{in: `{"a":1,"a":2}`, want: `{"a":2}`},
		{in: `{"n":[1e2,1.50,-0,0.1,1e21,1e-7,-2.5E+3]}`, want: `{"n":[100,1.5,0,0.1,1e+21,1e-7,-2500]}`},
		{in: `{"max":9007199254740992,"min":-9007199254740992}`, want: `{"max":9007199254740992,"min":-9007199254740992}`},
		{in: `{"tiny":1e-400}`, want: `{"tiny":0}`},
		{in: `{"html":"<a&b>"}`, want: `{"html":"<a&b>"}`},
		{in: `{"a":"\ud800"}`, want: "{\"a\":\"\uFFFD\"}"},
		{in: `{"a":"\udc00\ud800x"}`, want: "{\"a\":\"\uFFFD\uFFFDx\"}"},
		{in: `{"pair":"\ud83d\ude00"}`, want: `{"pair":"😀"}`},
		{in: "{\"raw\":\"\xff\"}", want: "{\"raw\":\"\uFFFD\"}"},
		{in: `{"ctl":"a\u0001b\n"}`, want: `{"ctl":"a\u0001b\n"}`},
		{in: `{"a":1e200000}`, err: "beyond the range of a double"},
		{in: `{"a":-1e309}`, err: "beyond the range of a double"},
		{in: `{"big":123456789012345678901,"e":1e20}`, want: `{"big":123456789012345680000,"e":100000000000000000000}`},
		{in: `{"a":"x\u0000"}`, err: "NUL"},
		{in: `{"x\u0000":1}`, err: "NUL"},
		{in: `{"a":1} {"b":2}`, err: "data after the value"},
		{in: `{"a":`, err: "not valid JSON"},
		{in: strings.Repeat(`[`, MaxJSONDepth+2) + strings.Repeat(`]`, MaxJSONDepth+2), err: "nested deeper"},
	} {
		got, err := CanonicalJSON([]byte(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("CanonicalJSON(%q) = %q, %v; want an error about %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || string(got) != c.want {
			t.Errorf("CanonicalJSON(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	ok := strings.Repeat(`[`, MaxJSONDepth) + strings.Repeat(`]`, MaxJSONDepth)
	if _, err := CanonicalJSON([]byte(ok)); err != nil {
		t.Errorf("%d levels refused: %v", MaxJSONDepth, err)
	}
}

// FuzzCanonicalJSON: whatever the input, an accepted document is valid
// UTF-8 JSON without NUL, canonical already (a second pass changes
// nothing), and at most a few times the input: a byte becomes at most one
// U+FFFD (three bytes), a number at most 21 characters (1e20 is printed
// 100000000000000000000). The decider bounds the result again.
func FuzzCanonicalJSON(f *testing.F) {
	for _, seed := range []string{`{"a":"\ud800"}`, `{"a":1e200000}`, `{"b":[1e2,-0,{"c":"<>"}],"a":null}`,
		`{"a":"\u0000"}`, `"\udfff"`, `[1.7976931348623157e308]`, `{"k":9007199254740993}`, "{\"\xff\":1}", `1e20`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := CanonicalJSON(in)
		if err != nil || out == nil {
			return
		}
		if !json.Valid(out) || !utf8.Valid(out) || bytes.Contains(bytes.ToLower(out), []byte(`\u0000`)) {
			t.Fatalf("CanonicalJSON(%q) = %q: not valid UTF-8 JSON without NUL", in, out)
		}
		again, err := CanonicalJSON(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", in, out, again, err)
		}
		if len(out) > 6*len(in)+32 {
			t.Fatalf("%d bytes grew to %d", len(in), len(out))
		}
	})
}
