package identity

import (
	"strings"
	"testing"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// FuzzNormalizeEmail: e-mail addresses are untrusted input and the key of
// uniqueness; normalising must never panic, be idempotent, bound length,
// and leave no invisible character, non-ASCII domain or script mix.
func FuzzNormalizeEmail(f *testing.F) {
	for _, seed := range []string{"Ada@Example.com", " a@b.io ", "a@b", "not an email", "\"q\"@x.io", "A <a@b.io>", strings.Repeat("a", 300) + "@x.io", "ü@ü.de",
		"jose\u0301@x.io", "\uff41\uff44\uff4d\uff49\uff4e@x.io", "ad\u200bmin@x.io", "admin@x.io\u200b", "\u0430dmin@x.io",
		"\u0430\u0434\u043c\u0438\u043d@x.io", "taro\u5c71\u7530@B\u00fccher.de", "\ufb01le@x.io", "ADMIN\uff20X.IO", "a@xn--bcher-kva.de",
		"\u0627\u0644\u0639\u0631\u0628\u064a\u0629@x.io", "\u00df@x.io", "\u0130@x.io", "a@\u0080.io"} {
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
		if strings.IndexFunc(e, func(r rune) bool { return unicode.Is(defaultIgnorable, r) }) >= 0 {
			t.Fatalf("NormalizeEmail(%q) = %q keeps an invisible character", raw, e)
		}
		if _, domain, _ := strings.Cut(e[strings.LastIndexByte(e, '@'):], "@"); !isASCII(domain) {
			t.Fatalf("NormalizeEmail(%q) = %q: the domain is not ASCII", raw, e)
		}
		if mixesScripts(e[:strings.LastIndexByte(e, '@')]) {
			t.Fatalf("NormalizeEmail(%q) = %q mixes scripts", raw, e)
		}
		if !norm.NFKC.IsNormalString(e) {
			t.Fatalf("NormalizeEmail(%q) = %q is not NFKC", raw, e)
		}
		again, err := NormalizeEmail(e)
		if err != nil || again != e {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", raw, e, again, err)
		}
	})
}
