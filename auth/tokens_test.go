package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer   = "https://maestro.test"
	testAudience = "maestro-api"
)

type testClock struct{ now time.Time }

func (c *testClock) Now() time.Time { return c.now }

func newTestKey(t testing.TB) *SigningKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewSigningKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestTokens(t testing.TB) (*Tokens, *SigningKey, *testClock) {
	t.Helper()
	key := newTestKey(t)
	ks, err := NewKeySet(key)
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	tok, err := NewTokens(ks, TokenConfig{Issuer: testIssuer, Audience: testAudience, AccessTTL: 10 * time.Minute, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return tok, key, clock
}

// forge signs arbitrary claims and header fields, for building hostile tokens.
func forge(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validClaims(clock *testClock) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "sub": "user-1", "sid": "sess-1",
		"typ": "access", "jti": "j1",
		"iat": clock.now.Unix(), "exp": clock.now.Add(5 * time.Minute).Unix(),
	}
}

func requireInvalid(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("want ErrInvalidToken, got %v", err)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	tk, key, clock := newTestTokens(t)
	for _, kind := range []TokenKind{TokenAccess, TokenRefresh, TokenWeb} {
		t.Run(string(kind), func(t *testing.T) {
			var exp time.Time
			if kind != TokenAccess {
				exp = clock.now.Add(30 * 24 * time.Hour)
			}
			s, issued, err := tk.Issue(kind, "user-1", "sess-1", 3, exp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tk.Verify(s, kind)
			if err != nil {
				t.Fatal(err)
			}
			if got.Subject != "user-1" || got.SessionID != "sess-1" || got.Generation != 3 || got.Kind != kind || got.ID == "" || got.ID != issued.ID {
				t.Fatalf("claims mismatch: %+v vs issued %+v", got, issued)
			}
			if !got.ExpiresAt.Equal(issued.ExpiresAt.Time) {
				t.Fatalf("exp mismatch: %v vs %v", got.ExpiresAt, issued.ExpiresAt)
			}
			if kind == TokenAccess && !got.ExpiresAt.Equal(clock.now.Add(10*time.Minute)) {
				t.Fatalf("access exp %v, want now+AccessTTL", got.ExpiresAt)
			}
			// Header carries kid and the kind-specific typ.
			hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(s, ".")[0])
			var h map[string]any
			if err := json.Unmarshal(hdr, &h); err != nil {
				t.Fatal(err)
			}
			wantTyp := map[TokenKind]string{TokenAccess: "at+jwt", TokenRefresh: "rt+jwt", TokenWeb: "ws+jwt"}[kind]
			if h["kid"] != key.KID || h["typ"] != wantTyp || h["alg"] != "EdDSA" {
				t.Fatalf("header %v", h)
			}
		})
	}
}

func TestTokenJTIUnique(t *testing.T) {
	tk, _, _ := newTestTokens(t)
	_, a, _ := tk.Issue(TokenAccess, "u", "s", 0, time.Time{})
	_, b, _ := tk.Issue(TokenAccess, "u", "s", 0, time.Time{})
	if a.ID == b.ID {
		t.Fatal("jti reused")
	}
}

func TestTokenExpired(t *testing.T) {
	tk, _, clock := newTestTokens(t)
	s, _, err := tk.Issue(TokenAccess, "u", "s", 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	clock.now = clock.now.Add(10*time.Minute + 3*time.Second) // inside leeway
	if _, err := tk.Verify(s, TokenAccess); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	clock.now = clock.now.Add(10 * time.Second)
	_, err = tk.Verify(s, TokenAccess)
	requireInvalid(t, err)
	if !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("want jwt.ErrTokenExpired wrapped, got %v", err)
	}
}

func TestTokenIssuedInFutureRejected(t *testing.T) {
	tk, key, clock := newTestTokens(t)
	c := validClaims(clock)
	c["iat"] = clock.now.Add(time.Minute).Unix()
	_, err := tk.Verify(forge(t, jwt.SigningMethodEdDSA, key.Key, c, map[string]any{"kid": key.KID, "typ": "at+jwt"}), TokenAccess)
	requireInvalid(t, err)
}

func TestTokenForgedVariants(t *testing.T) {
	tk, key, clock := newTestTokens(t)
	hdr := map[string]any{"kid": key.KID, "typ": "at+jwt"}
	with := func(k string, v any) jwt.MapClaims {
		c := validClaims(clock)
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	// Sanity: the forging helper produces an acceptable token when honest.
	if _, err := tk.Verify(forge(t, jwt.SigningMethodEdDSA, key.Key, validClaims(clock), hdr), TokenAccess); err != nil {
		t.Fatalf("honest forged token rejected: %v", err)
	}
	other := newTestKey(t)
	cases := map[string]string{
		"wrong audience": forge(t, jwt.SigningMethodEdDSA, key.Key, with("aud", "other-api"), hdr),
		"no audience":    forge(t, jwt.SigningMethodEdDSA, key.Key, with("aud", nil), hdr),
		"wrong issuer":   forge(t, jwt.SigningMethodEdDSA, key.Key, with("iss", "https://evil.test"), hdr),
		"no issuer":      forge(t, jwt.SigningMethodEdDSA, key.Key, with("iss", nil), hdr),
		"no exp":         forge(t, jwt.SigningMethodEdDSA, key.Key, with("exp", nil), hdr),
		"no sub":         forge(t, jwt.SigningMethodEdDSA, key.Key, with("sub", nil), hdr),
		"empty sub":      forge(t, jwt.SigningMethodEdDSA, key.Key, with("sub", ""), hdr),
		"no sid":         forge(t, jwt.SigningMethodEdDSA, key.Key, with("sid", nil), hdr),
		"no typ claim":   forge(t, jwt.SigningMethodEdDSA, key.Key, with("typ", nil), hdr),
		"bogus typ":      forge(t, jwt.SigningMethodEdDSA, key.Key, with("typ", "admin"), hdr),
		"not yet valid":  forge(t, jwt.SigningMethodEdDSA, key.Key, with("nbf", clock.now.Add(time.Minute).Unix()), hdr),
		"header typ rt":  forge(t, jwt.SigningMethodEdDSA, key.Key, validClaims(clock), map[string]any{"kid": key.KID, "typ": "rt+jwt"}),
		"no header typ":  forge(t, jwt.SigningMethodEdDSA, key.Key, validClaims(clock), map[string]any{"kid": key.KID}),
		"unknown kid":    forge(t, jwt.SigningMethodEdDSA, other.Key, validClaims(clock), map[string]any{"kid": other.KID, "typ": "at+jwt"}),
		"no kid":         forge(t, jwt.SigningMethodEdDSA, key.Key, validClaims(clock), map[string]any{"typ": "at+jwt"}),
		"kid not string": forge(t, jwt.SigningMethodEdDSA, key.Key, validClaims(clock), map[string]any{"kid": 7, "typ": "at+jwt"}),
		"other key, our kid": forge(t, jwt.SigningMethodEdDSA, other.Key, validClaims(clock),
			hdr),
		"alg none": forge(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, validClaims(clock), hdr),
		// Algorithm confusion: HMAC keyed with the public key, which is public.
		"HS256 with public key bytes": forge(t, jwt.SigningMethodHS256, []byte(key.Public()), validClaims(clock), hdr),
		"HS256 with JWKS x":           forge(t, jwt.SigningMethodHS256, []byte(base64.RawURLEncoding.EncodeToString(key.Public())), validClaims(clock), hdr),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := tk.Verify(s, TokenAccess)
			requireInvalid(t, err)
		})
	}
}

func TestTokenTampered(t *testing.T) {
	tk, _, _ := newTestTokens(t)
	s, _, _ := tk.Issue(TokenAccess, "user-1", "sess-1", 0, time.Time{})
	parts := strings.Split(s, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := strings.Replace(string(payload), `"sub":"user-1"`, `"sub":"admin"`, 1)
	if tampered == string(payload) {
		t.Fatal("test did not change payload")
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(tampered))
	_, err := tk.Verify(strings.Join(parts, "."), TokenAccess)
	requireInvalid(t, err)

	// Flip a signature bit too.
	sig := []byte(strings.Split(s, ".")[2])
	sig[3] ^= 1
	_, err = tk.Verify(strings.Join([]string{strings.Split(s, ".")[0], strings.Split(s, ".")[1], string(sig)}, "."), TokenAccess)
	requireInvalid(t, err)
}

func TestTokenKindConfusion(t *testing.T) {
	tk, _, clock := newTestTokens(t)
	access, _, _ := tk.Issue(TokenAccess, "u", "s", 0, time.Time{})
	refresh, _, _ := tk.Issue(TokenRefresh, "u", "s", 1, clock.now.Add(time.Hour))
	_, err := tk.Verify(refresh, TokenAccess)
	requireInvalid(t, err)
	_, err = tk.Verify(access, TokenRefresh)
	requireInvalid(t, err)
	_, err = tk.Verify(access, TokenKind("bogus"))
	requireInvalid(t, err)
	// The web UI's cookie is no API credential, and no API token is a cookie.
	web, _, err := tk.Issue(TokenWeb, "u", "s", 0, clock.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []TokenKind{TokenAccess, TokenRefresh} {
		_, err = tk.Verify(web, kind)
		requireInvalid(t, err)
	}
	for _, tok := range []string{access, refresh} {
		_, err = tk.Verify(tok, TokenWeb)
		requireInvalid(t, err)
	}
	if _, _, err := tk.Issue(TokenWeb, "u", "s", 0, time.Time{}); err == nil {
		t.Fatal("a web token without an expiry was issued")
	}
}

func TestTokenTooLong(t *testing.T) {
	tk, _, _ := newTestTokens(t)
	_, err := tk.Verify(strings.Repeat("a", MaxTokenLength+1), TokenAccess)
	requireInvalid(t, err)
}

func TestNewTokensConfig(t *testing.T) {
	ks, _ := NewKeySet(newTestKey(t))
	bad := map[string]TokenConfig{
		"ttl > 15m": {Issuer: "i", Audience: "a", AccessTTL: 15*time.Minute + time.Second},
		"ttl zero":  {Issuer: "i", Audience: "a"},
		"no issuer": {Audience: "a", AccessTTL: time.Minute},
		"no aud":    {Issuer: "i", AccessTTL: time.Minute},
	}
	for name, cfg := range bad {
		if _, err := NewTokens(ks, cfg); err == nil {
			t.Errorf("%s: want error", name)
		}
	}
	if _, err := NewTokens(ks, TokenConfig{Issuer: "i", Audience: "a", AccessTTL: 15 * time.Minute}); err != nil {
		t.Fatalf("15m: %v", err)
	}
	if _, err := NewTokens(nil, TokenConfig{Issuer: "i", Audience: "a", AccessTTL: time.Minute}); err == nil {
		t.Fatal("nil keyset accepted")
	}
}

func TestIssueValidation(t *testing.T) {
	tk, _, clock := newTestTokens(t)
	if _, _, err := tk.Issue(TokenRefresh, "u", "s", 0, time.Time{}); err == nil {
		t.Error("refresh without exp accepted")
	}
	if _, _, err := tk.Issue(TokenAccess, "u", "s", 0, clock.now.Add(time.Hour)); err == nil {
		t.Error("access exp beyond AccessTTL accepted")
	}
	if _, _, err := tk.Issue(TokenAccess, "", "s", 0, time.Time{}); err == nil {
		t.Error("empty subject accepted")
	}
	if _, _, err := tk.Issue(TokenAccess, "u", "", 0, time.Time{}); err == nil {
		t.Error("empty session accepted")
	}
	if _, _, err := tk.Issue(TokenRefresh, "u", "s", 0, clock.now.Add(-time.Second)); err == nil {
		t.Error("past exp accepted")
	}
	if _, _, err := tk.Issue("other", "u", "s", 0, clock.now.Add(time.Minute)); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := newTestKey(t), newTestKey(t)
	clock := &testClock{now: time.Now()}
	cfg := TokenConfig{Issuer: testIssuer, Audience: testAudience, AccessTTL: time.Minute, Now: clock.Now}
	oldSet, _ := NewKeySet(oldKey)
	oldTokens, _ := NewTokens(oldSet, cfg)
	s, _, _ := oldTokens.Issue(TokenAccess, "u", "s", 0, time.Time{})

	rotated, err := NewKeySet(newKey, oldKey.Public(), newKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	newTokens, _ := NewTokens(rotated, cfg)
	if _, err := newTokens.Verify(s, TokenAccess); err != nil {
		t.Fatalf("token from retired key rejected during rotation: %v", err)
	}
	s2, _, _ := newTokens.Issue(TokenAccess, "u", "s", 0, time.Time{})
	if _, err := oldTokens.Verify(s2, TokenAccess); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("old set accepted token from key it does not hold: %v", err)
	}

	var jwks struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(JWKS(rotated), &jwks); err != nil {
		t.Fatal(err)
	}
	if len(jwks.Keys) != 2 || jwks.Keys[0]["kid"] != newKey.KID {
		t.Fatalf("jwks: %+v", jwks)
	}
	for _, k := range jwks.Keys {
		if k["kty"] != "OKP" || k["crv"] != "Ed25519" || k["alg"] != "EdDSA" || k["use"] != "sig" || len(k) != 6 {
			t.Fatalf("bad jwk %v", k)
		}
		x, err := base64.RawURLEncoding.DecodeString(k["x"])
		if err != nil || len(x) != ed25519.PublicKeySize || KeyID(x) != k["kid"] {
			t.Fatalf("bad jwk x/kid %v", k)
		}
	}
}

func TestKeyIDFormat(t *testing.T) {
	k := newTestKey(t)
	raw, err := base64.RawURLEncoding.DecodeString(k.KID)
	if err != nil || len(raw) != 16 || strings.ContainsAny(k.KID, "=+/") {
		t.Fatalf("kid %q", k.KID)
	}
}

func TestLoadOrCreateSigningKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nested", "keys", "signing.pem")
	k1, err := LoadOrCreateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	dst, _ := os.Stat(filepath.Dir(path))
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("key dir mode %v, want 0700", dst.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
	k2, err := LoadOrCreateSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.KID != k2.KID || !k1.Key.Equal(k2.Key) {
		t.Fatal("reloaded key differs")
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadOrCreateSigningKey(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("0644 key file: want error naming path, got %v", err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSigningKey(path); err == nil {
		t.Fatal("0640 key file accepted")
	}
}

func TestLoadSigningKeyRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"not pem":   "hello",
		"wrong pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"bad der":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	}
	for name, body := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateSigningKey(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzVerify(f *testing.F) {
	tk, _, clock := newTestTokens(f)
	access, _, _ := tk.Issue(TokenAccess, "u", "s", 0, time.Time{})
	refresh, _, _ := tk.Issue(TokenRefresh, "u", "s", 2, clock.now.Add(time.Hour))
	f.Add(access)
	f.Add(refresh)
	f.Add("")
	f.Add(".")
	f.Add("..")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJFZERTQSIsImtpZCI6e319.e30.AAAA")
	f.Add(access[:len(access)-2])
	f.Add(access + "." + access)
	f.Add(strings.Repeat("A", MaxTokenLength+1))
	f.Add("eyJhbGciOiJFZERTQSIsImtpZCI6IiIsInR5cCI6MX0." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1e999,"aud":[1,{}],"gen":-1}`)) + ".AA")
	f.Fuzz(func(t *testing.T, s string) {
		for _, kind := range []TokenKind{TokenAccess, TokenRefresh, TokenWeb} {
			c, err := tk.Verify(s, kind)
			if err != nil {
				if !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("error not wrapping ErrInvalidToken: %v", err)
				}
				continue
			}
			if c.Kind != kind || c.Subject == "" || c.SessionID == "" {
				t.Fatalf("accepted bad claims %+v", c)
			}
		}
	})
}

func TestJWKSNil(t *testing.T) {
	if got := string(JWKS(nil)); got != `{"keys":[]}` {
		t.Fatalf("JWKS(nil) = %s", got)
	}
}

func TestSigningKeyModeRule(t *testing.T) {
	cases := []struct {
		perm        fs.FileMode
		owner, euid int
		ok          bool
	}{
		{0o600, 1000, 1000, true},
		{0o400, 1000, 1000, true},
		{0o640, 1000, 1000, false}, // own key, group-readable: refused
		{0o604, 1000, 1000, false},
		{0o640, 0, 10001, true}, // Kubernetes secret with fsGroup: root-owned, group-read
		{0o440, 0, 10001, true},
		{0o660, 0, 10001, false}, // group-writable
		{0o644, 0, 10001, false}, // others can read
		{0o640, 0, 0, false},     // root reading its own group-readable key
		{0o640, -1, 10001, false},
	}
	for _, c := range cases {
		if got := keyModeOK(c.perm, c.owner, c.euid); got != c.ok {
			t.Errorf("keyModeOK(%#o, owner %d, euid %d) = %v, want %v", c.perm, c.owner, c.euid, got, c.ok)
		}
	}
}

// Verified access tokens are remembered (a repeat costs no signature
// check), but never past their expiry, never for another kind, and never
// for a token that differs in a single byte.
func TestVerifyRemembersOnlyWhatItVerified(t *testing.T) {
	tk, _, clock := newTestTokens(t)
	s, _, err := tk.Issue(TokenAccess, "user-1", "sess-1", 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if c, err := tk.Verify(s, TokenAccess); err != nil || c.Subject != "user-1" || c.SessionID != "sess-1" {
			t.Fatalf("verify: %+v %v", c, err)
		}
	}
	if len(tk.verified) != 1 {
		t.Fatalf("%d tokens remembered, want 1", len(tk.verified))
	}
	_, err = tk.Verify(s, TokenRefresh)
	requireInvalid(t, err)
	bad := []byte(s)
	bad[len(bad)-2] ^= 1
	_, err = tk.Verify(string(bad), TokenAccess)
	requireInvalid(t, err)
	clock.now = clock.now.Add(10*time.Minute + clockLeeway + time.Second)
	_, err = tk.Verify(s, TokenAccess)
	if !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("a remembered token verified after its expiry: %v", err)
	}
}
