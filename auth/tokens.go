package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// TokenKind distinguishes access from refresh tokens. It is carried both in
// the signed "typ" claim and in the JOSE header so that one kind can never be
// replayed as the other.
type TokenKind string

const (
	// TokenAccess authorises API calls and is short-lived.
	TokenAccess TokenKind = "access"
	// TokenRefresh is exchanged for new access tokens and is only ever
	// accepted by the refresh endpoint.
	TokenRefresh TokenKind = "refresh"
	// TokenWeb is the web UI's session cookie: accepted only by the UI's
	// pages and forms (which check CSRF), never by the JSON API, so the API
	// stays free of ambient credentials.
	TokenWeb TokenKind = "web"
)

// headerType maps a kind to its JOSE "typ" (RFC 9068 style) so generic JWT
// consumers can also tell the kinds apart.
func (k TokenKind) headerType() (string, bool) {
	switch k {
	case TokenAccess:
		return "at+jwt", true
	case TokenRefresh:
		return "rt+jwt", true
	case TokenWeb:
		return "ws+jwt", true
	}
	return "", false
}

const (
	// MaxAccessTTL caps access-token lifetime. The API's authenticator checks
	// every access token's session and user against the read model, so a
	// revocation applies at once; the cap bounds what a token is worth to
	// anyone who can use it without that check (another service verifying
	// it against the JWKS alone) and how long a leaked one lives.
	MaxAccessTTL = 15 * time.Minute
	// MaxTokenLength bounds what Verify will parse, so oversized headers
	// cannot make base64 and JSON decoding do unbounded work.
	MaxTokenLength = 4 << 10

	clockLeeway = 5 * time.Second
	signingAlg  = "EdDSA"
)

// ErrInvalidToken wraps every Verify failure. Callers should map it to 401
// and may log the wrapped detail, but must not echo that detail to clients,
// since it tells an attacker which check their forgery tripped.
var ErrInvalidToken = errors.New("auth: invalid token")

// Claims are the signed contents of a Maestro token.
type Claims struct {
	jwt.RegisteredClaims
	// Kind is the token kind, checked by Verify against what the caller
	// expects.
	Kind TokenKind `json:"typ"`
	// SessionID ties the token to a server-side session so it can be
	// revoked as a unit.
	SessionID string `json:"sid"`
	// Generation counts refresh rotations within a session; presenting an
	// old generation signals a stolen refresh token.
	Generation int `json:"gen,omitempty"`
}

// TokenConfig configures Tokens.
type TokenConfig struct {
	// Issuer and Audience are required on every token and checked exactly,
	// so tokens from another deployment or meant for another service are
	// refused.
	Issuer, Audience string
	// AccessTTL is the access-token lifetime; NewTokens rejects values
	// above MaxAccessTTL.
	AccessTTL time.Duration
	// Now is the clock, injectable for tests; nil means time.Now.
	Now func() time.Time
}

// Tokens issues and verifies signed tokens. It is safe for concurrent use.
type Tokens struct {
	keys   *KeySet
	cfg    TokenConfig
	parser *jwt.Parser

	// verified remembers access tokens that passed Verify, by the SHA-256
	// of the token: an Ed25519 check is most of an authenticated request's
	// CPU, and a client sends the same token for up to AccessTTL. A hit is
	// only taken before the token's expiry by the same clock; revocation is
	// the session check's job, not the signature's.
	mu       sync.Mutex
	verified map[[sha256.Size]byte]Claims
}

// verifiedMax bounds the verified-token cache (cleared when full).
const verifiedMax = 10_000

// NewTokens validates cfg up front so a misconfiguration fails at start-up
// instead of producing tokens that are too long-lived or unverifiable.
func NewTokens(keys *KeySet, cfg TokenConfig) (*Tokens, error) {
	if keys == nil || keys.Active() == nil {
		return nil, errors.New("auth: NewTokens needs a key set with an active key")
	}
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("auth: token issuer and audience are required")
	}
	if cfg.AccessTTL <= 0 || cfg.AccessTTL > MaxAccessTTL {
		return nil, fmt.Errorf("auth: access TTL %v must be in (0, %v]", cfg.AccessTTL, MaxAccessTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Tokens{keys: keys, cfg: cfg}
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{signingAlg}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithLeeway(clockLeeway),
		jwt.WithStrictDecoding(),
	)
	return t, nil
}

// Issue signs a token of kind for subject (the user id) within sessionID.
// exp is required for refresh and web tokens, whose lifetime is session
// policy the caller owns; for access tokens a zero exp means now+AccessTTL and a later
// exp is refused, so AccessTTL is a hard ceiling. The returned claims are
// exactly what was signed (times truncated to seconds), for recording the
// jti alongside the session.
func (t *Tokens) Issue(kind TokenKind, subject, sessionID string, generation int, exp time.Time) (token string, claims Claims, err error) {
	typ, ok := kind.headerType()
	if !ok {
		return "", Claims{}, fmt.Errorf("auth: unknown token kind %q", kind)
	}
	if subject == "" || sessionID == "" {
		return "", Claims{}, errors.New("auth: token subject and session id are required")
	}
	if generation < 0 {
		return "", Claims{}, errors.New("auth: token generation must not be negative")
	}
	now := t.cfg.Now()
	switch {
	case exp.IsZero() && kind == TokenAccess:
		exp = now.Add(t.cfg.AccessTTL)
	case exp.IsZero():
		return "", Claims{}, fmt.Errorf("auth: %s tokens need an explicit expiry", kind)
	case kind == TokenAccess && exp.After(now.Add(t.cfg.AccessTTL)):
		return "", Claims{}, fmt.Errorf("auth: access token expiry exceeds AccessTTL %v", t.cfg.AccessTTL)
	}
	if !exp.After(now) {
		return "", Claims{}, errors.New("auth: token expiry is not in the future")
	}

	key := t.keys.Active()
	claims = Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.cfg.Issuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{t.cfg.Audience},
			ExpiresAt: jwt.NewNumericDate(exp),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        uuid.NewString(),
		},
		Kind:       kind,
		SessionID:  sessionID,
		Generation: generation,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = key.KID
	tok.Header["typ"] = typ
	token, err = tok.SignedString(key.Key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("auth: signing token: %w", err)
	}
	return token, claims, nil
}

// Verify checks token's signature, algorithm, key id, issuer, audience,
// times and kind, and returns its claims. Every failure wraps
// ErrInvalidToken (and, where one applies, the jwt package's sentinel such
// as jwt.ErrTokenExpired); the message is for logs only.
func (t *Tokens) Verify(token string, want TokenKind) (Claims, error) {
	if want != TokenAccess || len(token) > MaxTokenLength {
		return t.verify(token, want)
	}
	key := sha256.Sum256([]byte(token))
	now := t.cfg.Now()
	t.mu.Lock()
	c, ok := t.verified[key]
	t.mu.Unlock()
	if ok && c.ExpiresAt != nil && now.Before(c.ExpiresAt.Time) && (c.NotBefore == nil || !now.Before(c.NotBefore.Time)) {
		return c, nil
	}
	c, err := t.verify(token, want)
	if err != nil || c.ExpiresAt == nil {
		return c, err
	}
	t.mu.Lock()
	if t.verified == nil || len(t.verified) >= verifiedMax {
		t.verified = map[[sha256.Size]byte]Claims{}
	}
	t.verified[key] = c
	t.mu.Unlock()
	return c, nil
}

// verify is Verify without the cache.
func (t *Tokens) verify(token string, want TokenKind) (Claims, error) {
	wantTyp, ok := want.headerType()
	if !ok {
		return Claims{}, fmt.Errorf("%w: caller asked for unknown kind %q", ErrInvalidToken, want)
	}
	if len(token) > MaxTokenLength {
		return Claims{}, fmt.Errorf("%w: token longer than %d bytes", ErrInvalidToken, MaxTokenLength)
	}
	var claims Claims
	parsed, err := t.parser.ParseWithClaims(token, &claims, t.keyFor)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if !parsed.Valid {
		return Claims{}, fmt.Errorf("%w: token not valid", ErrInvalidToken)
	}
	if typ, _ := parsed.Header["typ"].(string); typ != wantTyp {
		return Claims{}, fmt.Errorf("%w: header typ %q, want %q", ErrInvalidToken, typ, wantTyp)
	}
	switch {
	case claims.Kind != want:
		return Claims{}, fmt.Errorf("%w: token kind %q, want %q", ErrInvalidToken, claims.Kind, want)
	case claims.Subject == "":
		return Claims{}, fmt.Errorf("%w: missing sub", ErrInvalidToken)
	case claims.SessionID == "":
		return Claims{}, fmt.Errorf("%w: missing sid", ErrInvalidToken)
	case claims.ID == "":
		// Refresh rotation and revocation are keyed on jti.
		return Claims{}, fmt.Errorf("%w: missing jti", ErrInvalidToken)
	case claims.Generation < 0:
		return Claims{}, fmt.Errorf("%w: negative gen", ErrInvalidToken)
	}
	return claims, nil
}

// keyFor picks the verification key by kid alone, so an unknown or retired
// kid is an explicit, loggable failure and verification costs one signature
// check however many keys are kept for rotation.
func (t *Tokens) keyFor(tok *jwt.Token) (any, error) {
	if _, ok := tok.Method.(*jwt.SigningMethodEd25519); !ok {
		return nil, fmt.Errorf("unexpected signing method %v", tok.Header["alg"])
	}
	kid, ok := tok.Header["kid"].(string)
	if !ok || kid == "" {
		return nil, errors.New("missing kid")
	}
	pub, ok := t.keys.PublicKey(kid)
	if !ok {
		return nil, fmt.Errorf("unknown kid %q", kid)
	}
	return ed25519.PublicKey(pub), nil
}
