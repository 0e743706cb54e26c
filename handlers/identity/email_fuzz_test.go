package identity

import (
	"strings"
	"testing"
)

// FuzzNormalizeEmail: e-mail addresses are untrusted input and the key of
// uniqueness; normalising must never panic, be idempotent, and bound length.
func FuzzNormalizeEmail(f *testing.F) {
	for _, seed := range []string{"Ada@Example.com", " a@b.io ", "a@b", "not an email", "\"q\"@x.io", "A <a@b.io>", strings.Repeat("a", 300) + "@x.io", "ü@ü.de"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		e, err := NormalizeEmail(raw)
		if err != nil {
			return
		}
		if len(e) > MaxEmailLen || e != strings.ToLower(e) || e != strings.TrimSpace(e) {
			t.Fatalf("NormalizeEmail(%q) = %q: not bounded/lower/trimmed", raw, e)
		}
		again, err := NormalizeEmail(e)
		if err != nil || again != e {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", raw, e, again, err)
		}
	})
}
