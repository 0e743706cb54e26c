package projections

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strconv"
	"testing"
)

// The fast canonical form against RFC 8785's own examples rather than a
// library's output: the number samples of its Appendix B (IEEE 754 bit
// patterns and the text ECMAScript writes for them), the sorting example
// of 3.2.3 (UTF-16 code unit order: U+1F600 before U+FB33) and the
// complete example of 3.2.4 (escapes, numbers, key order).
func TestCanonicalRFC8785Examples(t *testing.T) {
	t.Parallel()
	for bits, want := range map[string]string{
		"0000000000000000": "0", "8000000000000000": "0", "0000000000000001": "5e-324", "8000000000000001": "-5e-324",
		"7fefffffffffffff": "1.7976931348623157e+308", "ffefffffffffffff": "-1.7976931348623157e+308",
		"4340000000000000": "9007199254740992", "c340000000000000": "-9007199254740992", "4430000000000000": "295147905179352830000",
		"44b52d02c7e14af5": "9.999999999999997e+22", "44b52d02c7e14af6": "1e+23", "44b52d02c7e14af7": "1.0000000000000001e+23",
		"444b1ae4d6e2ef4e": "999999999999999700000", "444b1ae4d6e2ef4f": "999999999999999900000", "444b1ae4d6e2ef50": "1e+21",
		"3eb0c6f7a0b5ed8c": "9.999999999999997e-7", "3eb0c6f7a0b5ed8d": "0.000001",
		"41b3de4355555553": "333333333.3333332", "41b3de4355555554": "333333333.33333325", "41b3de4355555555": "333333333.3333333",
		"41b3de4355555556": "333333333.3333334", "41b3de4355555557": "333333333.33333343",
		"becbf647612f3696": "-0.0000033333333333333333", "43143ff3c1cb0959": "1424953923781206.2",
	} {
		b, err := hex.DecodeString(bits)
		if err != nil {
			t.Fatal(err)
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(b))
		// The data as a client sends it: Go's shortest text of the double
		// (the canonical form parses it back to the same double).
		got, err := canonicalData(nil, []byte(`[`+strconv.FormatFloat(f, 'g', -1, 64)+`]`))
		if err != nil {
			t.Fatalf("%s: %v", bits, err)
		}
		if string(got) != "["+want+"]" {
			t.Fatalf("%s: canonical %s, RFC 8785 %s", bits, got, want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{`{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control\u007f","\u00f6":"Latin Small Letter O With Diaeresis"}`,
			"{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\u007f\",\"\u00f6\":\"Latin Small Letter O With Diaeresis\",\"\u20ac\":\"Euro Sign\",\"\U0001F600\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}"},
		{`{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}`,
			"{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u20ac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"},
	} {
		got, err := canonicalData(nil, []byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Fatalf("%s:\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}
