package projections

import "testing"

// FuzzDecodeCursor: page tokens come from clients; decoding must never
// panic, and a token that decodes re-encodes to an equivalent cursor.
func FuzzDecodeCursor(f *testing.F) {
	for _, seed := range []string{"", encodeCursor(cursor{Seq: 42}), "eyJzIjotMX0", "!!!", "eyJzIjoiYSJ9", "e30"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := decodeCursor(token)
		if err != nil {
			return
		}
		if c.Seq < 0 {
			t.Fatalf("negative cursor accepted from %q", token)
		}
		back, err := decodeCursor(encodeCursor(c))
		if err != nil || back != c {
			t.Fatalf("round trip of %q: %+v → %+v (%v)", token, c, back, err)
		}
	})
}
