package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/maestro-ml/maestro/internal/durable"
)

// maxKeyFileSize guards against reading an arbitrarily large file that was
// put at the key path by mistake; a PEM Ed25519 key is ~120 bytes.
const maxKeyFileSize = 64 << 10

// SigningKey is an Ed25519 private key with its key id. The KID is derived
// from the public key rather than chosen, so every replica that loads the same
// key advertises the same id without coordination.
type SigningKey struct {
	// KID is KeyID(Key.Public()).
	KID string
	// Key signs tokens; it must never leave the process.
	Key ed25519.PrivateKey
}

// KeyID returns the base64url (unpadded) encoding of the first 16 bytes of
// SHA-256(pub): stable, short, and not reversible into anything secret.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// NewSigningKey wraps priv, deriving its KID, so callers never pair a key with
// the wrong id by hand.
func NewSigningKey(priv ed25519.PrivateKey) (*SigningKey, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, errors.New("auth: ed25519 private key has wrong size")
	}
	return &SigningKey{KID: KeyID(priv.Public().(ed25519.PublicKey)), Key: priv}, nil
}

// Public returns the verification half of the key.
func (k *SigningKey) Public() ed25519.PublicKey { return k.Key.Public().(ed25519.PublicKey) }

// LoadOrCreateSigningKey reads a PKCS#8 PEM Ed25519 private key from path, or,
// if none exists, generates one and writes it there with mode 0600 (creating
// the parent directory with mode 0700). The write goes to a temporary file
// that is then linked into place, so a crash never leaves a half-written key
// and two replicas starting together converge on one key. An existing file
// that group or others can access is refused rather than used, because a key
// that has been readable may have been copied.
func LoadOrCreateSigningKey(path string) (*SigningKey, error) {
	k, err := loadSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	return createSigningKey(path)
}

func loadSigningKey(path string) (*SigningKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // keeps fs.ErrNotExist visible to the caller
	}
	defer f.Close()
	// Stat the open file, not the path, so the checked file is the read one.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth: stat signing key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("auth: signing key %s is not a regular file", path)
	}
	owner := -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		owner = int(sys.Uid)
	}
	if perm := st.Mode().Perm(); !keyModeOK(perm, owner, os.Geteuid()) {
		return nil, fmt.Errorf("auth: signing key %s has mode %#o; it must not be accessible by group or others (chmod 600; a root-owned key read through its group may be 0640)", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("auth: reading signing key %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("auth: signing key %s is too large", path)
	}
	return parseSigningKeyPEM(path, data)
}

// keyModeOK is PostgreSQL's rule for its TLS key: a key owned by the reading
// user must be 0600 or stricter; a key owned by root and read through its
// group may also be group-readable (0640). Kubernetes mounts secrets that way:
// root-owned, and group-readable for the pod's fsGroup.
func keyModeOK(perm fs.FileMode, owner, euid int) bool {
	if owner == 0 && euid != 0 {
		return perm&0o037 == 0
	}
	return perm&0o077 == 0
}

func parseSigningKeyPEM(path string, data []byte) (*SigningKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("auth: signing key %s: no PKCS#8 \"PRIVATE KEY\" PEM block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: signing key %s: %w", path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: signing key %s is %T, want Ed25519", path, parsed)
	}
	return NewSigningKey(priv)
}

func createSigningKey(path string) (*SigningKey, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: creating key directory %s: %w", dir, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("auth: generating signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("auth: encoding signing key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	tmp, err := os.CreateTemp(dir, ".signing-key-*.tmp") // created 0600
	if err != nil {
		return nil, fmt.Errorf("auth: writing signing key %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op once linked/renamed away
	if err := writeAndSync(tmp, data); err != nil {
		return nil, fmt.Errorf("auth: writing signing key %s: %w", path, err)
	}

	// Link, unlike rename, fails if path appeared meanwhile; the loser of a
	// start-up race then adopts the winner's key instead of replacing it and
	// invalidating tokens the winner has already issued.
	switch err := os.Link(tmpName, path); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return loadSigningKey(path)
	default:
		// Filesystems without hard links: fall back to an atomic rename.
		if err := os.Rename(tmpName, path); err != nil {
			return nil, fmt.Errorf("auth: installing signing key %s: %w", path, err)
		}
	}
	// Make the new directory entry durable; failure only weakens crash
	// safety, so it is not reported.
	_ = durable.SyncDir(dir)
	return NewSigningKey(priv)
}

func writeAndSync(f *os.File, data []byte) error {
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// KeySet is the active signing key plus public keys that are still accepted
// for verification, so keys can be rotated without logging everyone out:
// a retired key stays verification-only until its longest-lived token has
// expired. A KeySet is immutable and safe for concurrent use; rotate by
// building a new one.
type KeySet struct {
	active *SigningKey
	public map[string]ed25519.PublicKey
	order  []string // active kid first, then verification-only kids sorted
}

// NewKeySet builds a KeySet. verifyOnly may repeat the active public key;
// duplicates are dropped.
func NewKeySet(active *SigningKey, verifyOnly ...ed25519.PublicKey) (*KeySet, error) {
	if active == nil || len(active.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("auth: key set needs an active Ed25519 signing key")
	}
	pub := active.Public()
	if active.KID != KeyID(pub) {
		return nil, errors.New("auth: active signing key KID does not match its public key")
	}
	ks := &KeySet{
		active: active,
		public: map[string]ed25519.PublicKey{active.KID: pub},
		order:  []string{active.KID},
	}
	var rest []string
	for _, p := range verifyOnly {
		if len(p) != ed25519.PublicKeySize {
			return nil, errors.New("auth: verification key has wrong size")
		}
		kid := KeyID(p)
		if _, dup := ks.public[kid]; dup {
			continue
		}
		ks.public[kid] = append(ed25519.PublicKey(nil), p...)
		rest = append(rest, kid)
	}
	sort.Strings(rest)
	ks.order = append(ks.order, rest...)
	return ks, nil
}

// Active returns the key new tokens are signed with.
func (ks *KeySet) Active() *SigningKey { return ks.active }

// PublicKey returns the verification key for kid, if it is in the set.
func (ks *KeySet) PublicKey(kid string) (ed25519.PublicKey, bool) {
	p, ok := ks.public[kid]
	return p, ok
}

type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS renders every public key in ks as an RFC 8037 OKP JSON Web Key Set,
// for services that verify Maestro tokens themselves. Only public halves are
// ever included. A nil ks yields an empty set rather than a panic, so a
// handler wired before keys load serves a valid document.
func JWKS(ks *KeySet) []byte {
	out := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	var order []string
	if ks != nil {
		order = ks.order
	}
	for _, kid := range order {
		out.Keys = append(out.Keys, jwk{
			Kty: "OKP",
			Crv: "Ed25519",
			X:   base64.RawURLEncoding.EncodeToString(ks.public[kid]),
			Kid: kid,
			Alg: "EdDSA",
			Use: "sig",
		})
	}
	b, err := json.Marshal(out)
	if err != nil {
		// Only strings are marshalled; this cannot happen.
		panic("auth: marshalling JWKS: " + err.Error())
	}
	return b
}
