package projections

import (
	"encoding/base64"
	"errors"
	"testing"
)

// allShapes are the cursor shapes of every list.
var allShapes = map[string]cursorShape{"seq": seqCursor, "version": versionCursor, "key": keyCursor, "key+id": keyIDCursor, "seq+id": seqIDCursor}

func rawToken(json string) string { return base64.RawURLEncoding.EncodeToString([]byte(json)) }

// FuzzDecodeCursor: page tokens come from clients; decoding must never
// panic, a token that decodes has exactly its list's shape (so the query
// cannot fail on it), and it re-encodes to an equivalent cursor.
func FuzzDecodeCursor(f *testing.F) {
	const id = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	for _, seed := range []string{"", encodeCursor(cursor{Seq: 42}), "eyJzIjotMX0", "!!!", "eyJzIjoiYSJ9", "e30",
		// The review's forged tokens (finding 12) and their neighbours.
		rawToken(`{"s":1099511627776}`), rawToken(`{"s":5}`), rawToken(`{"k":"a"}`), rawToken(`{"i":"` + id + `"}`),
		rawToken(`{"s":2147483647}`), rawToken(`{"s":2147483648}`), rawToken(`{"k":"a","i":"` + id + `"}`),
		rawToken(`{"s":5,"i":"` + id + `"}`), rawToken(`{"k":"a\u0000"}`), rawToken(`{"k":"\xff"}`), rawToken(`{"s":1e30}`)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		for name, shape := range allShapes {
			c, err := decodeCursor(token, shape)
			if err != nil {
				if !errors.Is(err, ErrBadPageToken) {
					t.Fatalf("%s: %q: error %v is not ErrBadPageToken", name, token, err)
				}
				continue
			}
			if c.Seq < 0 || (shape.maxSeq > 0 && c.Seq > shape.maxSeq) {
				t.Fatalf("%s: out-of-range sequence accepted from %q: %+v", name, token, c)
			}
			if token != "" && ((c.Seq > 0) != shape.seq || (c.Key != "") != shape.key || (c.ID != "") != shape.id) {
				t.Fatalf("%s: cursor of another shape accepted from %q: %+v", name, token, c)
			}
			back, err := decodeCursor(encodeCursor(c), shape)
			if token != "" && (err != nil || back != c) {
				t.Fatalf("%s: round trip of %q: %+v → %+v (%v)", name, token, c, back, err)
			}
		}
	})
}

// The review's forged tokens (finding 12) are refused by the lists they
// reached, and every list still accepts the tokens it issues.
func TestDecodeCursorShapes(t *testing.T) {
	const id = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	cases := []struct {
		token string
		shape string
		ok    bool
	}{
		{rawToken(`{"s":1099511627776}`), "version", false}, // beyond int4
		{rawToken(`{"s":2147483647}`), "version", true},
		{rawToken(`{"s":5}`), "seq+id", false},   // models by update without the id
		{rawToken(`{"k":"a"}`), "key+id", false}, // models by name without the id
		{rawToken(`{"i":"` + id + `"}`), "key+id", false},
		{encodeCursor(cursor{Key: "a", ID: id}), "key+id", true},
		{encodeCursor(cursor{Seq: 5, ID: id}), "seq+id", true},
		{encodeCursor(cursor{Key: "a", ID: id}), "seq+id", false}, // a token of the other order
		{encodeCursor(cursor{Seq: 1 << 40}), "seq", true},
		{encodeCursor(cursor{Key: "x"}), "seq", false},
		{encodeCursor(cursor{Key: "weights/a.bin"}), "key", true},
		{encodeCursor(cursor{Seq: 3}), "key", false},
		{"e30", "key", false}, // {} is no position
	}
	for _, c := range cases {
		_, err := decodeCursor(c.token, allShapes[c.shape])
		if (err == nil) != c.ok {
			t.Errorf("decodeCursor(%q, %s) = %v, want ok %v", c.token, c.shape, err, c.ok)
		}
	}
}
