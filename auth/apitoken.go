package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

// APITokenPrefix starts every API token secret, so secret scanners (and
// people) recognise a leaked one, and the authenticator tells it from a JWT
// without parsing.
const APITokenPrefix = "mae_"

// APITokenLen is the length of an API token secret: the prefix and 32
// random bytes (256 bits) in unpadded base32 (RFC 4648), 52 characters.
const APITokenLen = len(APITokenPrefix) + 52

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// APIToken is a freshly generated API token.
type APIToken struct {
	// Secret is shown to its owner once and stored nowhere.
	Secret string
	// Prefix identifies the token in listings without revealing it: the
	// prefix and the first 8 characters of the random part.
	Prefix string
	// Hash is what is stored: HashAPIToken(Secret).
	Hash string
}

// NewAPIToken generates a token from the system's CSPRNG.
func NewAPIToken() APIToken {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	secret := APITokenPrefix + tokenEncoding.EncodeToString(b[:])
	return APIToken{Secret: secret, Prefix: secret[:len(APITokenPrefix)+8], Hash: HashAPIToken(secret)}
}

// HashAPIToken is the hex SHA-256 of a secret. A fast hash is right here: the
// secret has 256 bits of entropy, so the digest cannot be searched, unlike a
// password's.
func HashAPIToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// LooksLikeAPIToken reports whether s has an API token's shape (prefix,
// length and alphabet), so malformed input is refused before any lookup.
func LooksLikeAPIToken(s string) bool {
	if len(s) != APITokenLen || !strings.HasPrefix(s, APITokenPrefix) {
		return false
	}
	for _, c := range s[len(APITokenPrefix):] {
		if (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// SameHash compares two token hashes in constant time.
func SameHash(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
