package webhooks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret, as the Standard Webhooks
// specification writes them: "whsec_" and the base64 of the key bytes.
const SecretPrefix = "whsec_"

// secretBytes is the length of a signing key (the specification asks for
// 24 to 64 bytes).
const secretBytes = 32

// NewSecret makes a random signing secret.
func NewSecret() string {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// secretKey is the HMAC key a "whsec_" secret stands for.
func secretKey(secret string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || !strings.HasPrefix(secret, SecretPrefix) || len(k) == 0 {
		return nil, errors.New("webhook secret is not whsec_<base64>")
	}
	return k, nil
}

// Sign is the Standard Webhooks signature of a message: "v1," and the
// base64 of HMAC-SHA256(key, id + "." + timestamp + "." + body).
func Sign(secret, id string, ts int64, body []byte) (string, error) {
	k, err := secretKey(secret)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(id + "." + strconv.FormatInt(ts, 10) + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// ErrBadSignature is Verify's answer to a message none of whose signatures
// the secret made, or whose timestamp is too far from now.
var ErrBadSignature = errors.New("webhook signature does not verify")

// Verify checks a delivery as a receiver does (the Standard Webhooks
// procedure): the webhook-timestamp within tolerance of now, and one of
// the space-separated "v1,<sig>" entries of webhook-signature equal (in
// constant time) to the signature secret makes. Maestro's tests use it as
// their receiver; receivers in Go may too.
func Verify(secret, id, timestamp, signatures string, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad webhook-timestamp", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp outside tolerance", ErrBadSignature)
	}
	want, err := Sign(secret, id, ts, body)
	if err != nil {
		return err
	}
	for _, s := range strings.Fields(signatures) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrBadSignature
}

// Sealer encrypts signing secrets for the event stream and decrypts them
// for delivery: AES-256-GCM under a key derived (HKDF-SHA256) from the
// platform's Ed25519 signing key, the one secret every Maestro process
// already holds (keys/signing-key.pem, 0600). The webhook's id is the
// additional data, so a sealed secret copied onto another webhook does not
// open. Sealed form: "v1." + key id + "." + base64url(nonce || ciphertext).
type Sealer struct {
	kid  string
	aead cipher.AEAD
}

// sealInfo is the HKDF info: the derived key serves this purpose only.
const sealInfo = "maestro webhook secrets v1"

// NewSealer derives the sealing key from seed (the signing key's 32-byte
// Ed25519 seed) and names it kid (the signing key's id, so a secret sealed
// under another key is reported as such).
func NewSealer(seed []byte, kid string) (*Sealer, error) {
	if len(seed) < 32 {
		return nil, errors.New("webhook sealer: seed too short")
	}
	key, err := hkdf.Key(sha256.New, seed, nil, sealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("webhook sealer: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("webhook sealer: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("webhook sealer: %w", err)
	}
	return &Sealer{kid: kid, aead: aead}, nil
}

// Seal encrypts secret for webhook id.
func (s *Sealer) Seal(id, secret string) string {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	ct := s.aead.Seal(nonce, nonce, []byte(secret), []byte(id))
	return "v1." + s.kid + "." + base64.RawURLEncoding.EncodeToString(ct)
}

// Open decrypts a sealed secret of webhook id.
func (s *Sealer) Open(id, sealed string) (string, error) {
	parts := strings.SplitN(sealed, ".", 3)
	if len(parts) != 3 || parts[0] != "v1" {
		return "", errors.New("webhook secret: not a sealed secret")
	}
	if parts[1] != s.kid {
		return "", fmt.Errorf("webhook secret: sealed under key %s, this process holds %s", parts[1], s.kid)
	}
	ct, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(ct) < s.aead.NonceSize() {
		return "", errors.New("webhook secret: malformed")
	}
	pt, err := s.aead.Open(nil, ct[:s.aead.NonceSize()], ct[s.aead.NonceSize():], []byte(id))
	if err != nil {
		return "", errors.New("webhook secret: does not open (another key, or another webhook's secret)")
	}
	return string(pt), nil
}
