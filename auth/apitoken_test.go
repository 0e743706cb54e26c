package auth

import (
	"strings"
	"testing"
)

func TestNewAPIToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok := NewAPIToken()
		if !LooksLikeAPIToken(tok.Secret) {
			t.Fatalf("generated secret %q does not look like a token", tok.Secret)
		}
		if !strings.HasPrefix(tok.Secret, tok.Prefix) || len(tok.Prefix) != len(APITokenPrefix)+8 {
			t.Fatalf("prefix %q is not the secret's start", tok.Prefix)
		}
		if !SameHash(tok.Hash, HashAPIToken(tok.Secret)) || strings.Contains(tok.Hash, tok.Secret[len(APITokenPrefix):]) {
			t.Fatalf("hash %q is not the secret's digest", tok.Hash)
		}
		if seen[tok.Secret] {
			t.Fatal("two equal secrets")
		}
		seen[tok.Secret] = true
	}
}

func TestLooksLikeAPIToken(t *testing.T) {
	good := NewAPIToken().Secret
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{good, true},
		{"", false},
		{"mae_", false},
		{good[:len(good)-1], false},
		{good + "A", false},
		{"mab_" + good[4:], false},
		{good[:10] + "a" + good[11:], false}, // lower case is not base32 here
		{good[:10] + "1" + good[11:], false},
		{"eyJhbGciOiJFZERTQSJ9.e30.sig", false},
	} {
		if got := LooksLikeAPIToken(tc.in); got != tc.want {
			t.Errorf("LooksLikeAPIToken(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
