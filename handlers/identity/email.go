package identity

import (
	"net/mail"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/norm"

	"github.com/maestro-ml/maestro/handlers"
)

// NormalizeEmail validates an address and returns its canonical form, which
// is what uniqueness is decided on (the reservation subject is the sha256 of
// it), so two addresses a person cannot tell apart must normalise alike or
// be refused:
//
//   - the whole address is NFKC-normalised (NFD "é" and NFC "é" are one
//     address; full-width "ａｄｍｉｎ" is "admin");
//   - default-ignorable code points (zero-width spaces and joiners, bidi
//     controls, variation selectors, soft hyphen…) are refused, not dropped;
//   - the local part is enforced with the PRECIS UsernameCaseMapped profile
//     (RFC 8265: width-mapped, lower-cased, letters, digits and printable
//     ASCII only) and must not mix scripts (Cyrillic "а" in "аdmin"), except
//     the combinations with Latin that UTS #39 calls highly restrictive
//     (Han with kana, Bopomofo or Hangul);
//   - the domain is lower-cased ASCII, and a non-ASCII domain becomes its
//     IDNA (UTS #46 lookup) A-label form, "bücher.de" → "xn--bcher-kva.de".
//
// An ASCII address that was already normalised is unchanged by all of this,
// so existing accounts keep their reservation.
func NormalizeEmail(raw string) (string, error) {
	lengthErr := handlers.Errorf(handlers.Invalid, "validation-failed", "email must be 1 to %d characters", MaxEmailLen)
	invalid := handlers.Errorf(handlers.Invalid, "validation-failed", "email is not a valid address")
	e := strings.TrimSpace(raw)
	if e == "" || len(e) > MaxEmailLen || !handlers.PlainText(e) {
		return "", lengthErr
	}
	e = norm.NFKC.String(e)
	if strings.IndexFunc(e, func(r rune) bool { return unicode.Is(defaultIgnorable, r) }) >= 0 {
		return "", handlers.Errorf(handlers.Invalid, "validation-failed", "email must not contain invisible characters")
	}
	at := strings.LastIndexByte(e, '@')
	if at <= 0 || at == len(e)-1 {
		return "", invalid
	}
	local, err := precis.UsernameCaseMapped.String(e[:at])
	if err != nil {
		return "", invalid
	}
	if mixesScripts(local) {
		return "", handlers.Errorf(handlers.Invalid, "validation-failed", "the part of the email before @ mixes alphabets")
	}
	domain := strings.ToLower(e[at+1:])
	if !isASCII(domain) {
		if domain, err = idna.Lookup.ToASCII(domain); err != nil {
			return "", invalid
		}
	}
	e = local + "@" + domain
	if len(e) > MaxEmailLen || !handlers.PlainText(e) {
		return "", lengthErr
	}
	addr, err := mail.ParseAddress(e)
	if err != nil || addr.Address != e || addr.Name != "" {
		return "", invalid
	}
	return e, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// highlyRestrictive are the script sets UTS #39 allows to mix (each with
// Latin, Common and Inherited): the way Japanese, Chinese and Korean
// addresses are written.
var highlyRestrictive = [][]string{
	{"Latin", "Han", "Hiragana", "Katakana"},
	{"Latin", "Han", "Bopomofo"},
	{"Latin", "Han", "Hangul"},
}

// mixesScripts reports whether s uses letters of more than one script
// beyond the highly restrictive combinations.
func mixesScripts(s string) bool {
	used := map[string]bool{}
	for _, r := range s {
		if r < utf8.RuneSelf || unicode.In(r, unicode.Common, unicode.Inherited) {
			if r < utf8.RuneSelf && unicode.IsLetter(r) {
				used["Latin"] = true
			}
			continue
		}
		for name, table := range unicode.Scripts {
			if unicode.Is(table, r) {
				used[name] = true
				break
			}
		}
	}
	if len(used) <= 1 {
		return false
	}
next:
	for _, allowed := range highlyRestrictive {
		for name := range used {
			if !slices.Contains(allowed, name) {
				continue next
			}
		}
		return false
	}
	return true
}

// defaultIgnorable is Unicode's Default_Ignorable_Code_Point property
// (DerivedCoreProperties.txt, Unicode 15.1): characters that render as
// nothing, so "ad\u200bmin" would look like "admin". The standard library
// and x/text have no table for it.
var defaultIgnorable = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x00ad, Hi: 0x00ad, Stride: 1},
		{Lo: 0x034f, Hi: 0x034f, Stride: 1},
		{Lo: 0x061c, Hi: 0x061c, Stride: 1},
		{Lo: 0x115f, Hi: 0x1160, Stride: 1},
		{Lo: 0x17b4, Hi: 0x17b5, Stride: 1},
		{Lo: 0x180b, Hi: 0x180f, Stride: 1},
		{Lo: 0x200b, Hi: 0x200f, Stride: 1},
		{Lo: 0x202a, Hi: 0x202e, Stride: 1},
		{Lo: 0x2060, Hi: 0x206f, Stride: 1},
		{Lo: 0x3164, Hi: 0x3164, Stride: 1},
		{Lo: 0xfe00, Hi: 0xfe0f, Stride: 1},
		{Lo: 0xfeff, Hi: 0xfeff, Stride: 1},
		{Lo: 0xffa0, Hi: 0xffa0, Stride: 1},
		{Lo: 0xfff0, Hi: 0xfff8, Stride: 1},
	},
	R32: []unicode.Range32{
		{Lo: 0x1bca0, Hi: 0x1bca3, Stride: 1},
		{Lo: 0x1d173, Hi: 0x1d17a, Stride: 1},
		{Lo: 0xe0000, Hi: 0xe0fff, Stride: 1},
	},
}
