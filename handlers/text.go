package handlers

import (
	"bytes"
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

// PlainJSON reports whether raw JSON is free of escaped NULs (\u0000),
// which jsonb rejects. Raw control bytes cannot appear in valid JSON strings.
func PlainJSON(raw []byte) bool {
	return !bytes.Contains(bytes.ToLower(raw), []byte(`\u0000`))
}
