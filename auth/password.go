// Package auth holds Maestro's credential and token primitives: password
// policy and hashing, signing keys, and access/refresh tokens. It performs no
// HTTP and no storage so that every rule here can be tested in isolation and
// reused by whichever service front-ends it.
package auth

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

const (
	// MinPasswordRunes is counted in runes, not bytes, so that a user typing
	// twelve non-ASCII characters is not told their password is too short.
	MinPasswordRunes = 12
	// MaxPasswordBytes is counted in bytes because that is what the hasher
	// consumes; it is high enough for 128 characters of any script and for
	// passphrases, and low enough to keep hashing input bounded.
	MaxPasswordBytes = 1024
)

// commonPasswordsTxt is the top 10,000 entries of the "passwords" frequency
// list, plus every further entry of 12 or more characters (the only ones that
// could otherwise slip past MinPasswordRunes), lower-cased, in rank order.
//
// Source: Go module github.com/trustelem/zxcvbn v1.0.1, file data/passwords.txt
// (47,023 entries; SHA-256 6313cc5ef683a0461416318ee3b16f3d771a3cd10ea2aae54571d27ff95d951f).
// Licence: MIT, "Copyright (c) 2018 Vincent Vanackere and Trustelem" (the
// module's LICENSE.txt). The list itself is the one shipped by Dropbox's
// zxcvbn 4.4.2 (MIT), which built it from Mark Burnett's (Xato) ten-million
// password corpus.
//
//go:embed commonpasswords.txt
var commonPasswordsTxt string

var (
	commonOnce sync.Once
	commonSet  map[string]struct{}
)

// commonPasswords builds the set on first use so that binaries which never
// check a password do not pay for it at start-up.
func commonPasswords() map[string]struct{} {
	commonOnce.Do(func() {
		commonSet = make(map[string]struct{}, 10500)
		sc := bufio.NewScanner(strings.NewReader(commonPasswordsTxt))
		for sc.Scan() {
			if w := strings.TrimSpace(sc.Text()); w != "" {
				commonSet[w] = struct{}{}
			}
		}
	})
	return commonSet
}

// PolicyError reports why a password was refused. Reason is written for the
// end user and reveals nothing secret, so handlers may show it verbatim.
type PolicyError struct{ Reason string }

// Error returns Reason so a PolicyError can travel as a plain error.
func (e *PolicyError) Error() string { return e.Reason }

// CheckPolicy returns a *PolicyError if password is unacceptable, or nil. The
// rules follow NIST SP 800-63B: length and blocklist checks only, no
// composition rules, and nothing is ever silently truncated. email may be
// empty; when given, the password may not equal it or its local part,
// because those are the first guesses of anyone targeting the account.
func CheckPolicy(password, email string) error {
	if !utf8.ValidString(password) {
		// Rune counting and the user's idea of "characters" diverge on
		// invalid UTF-8, and no legitimate client sends it.
		return &PolicyError{Reason: "password contains invalid characters"}
	}
	if n := utf8.RuneCountInString(password); n < MinPasswordRunes {
		return &PolicyError{Reason: fmt.Sprintf("password must be at least %d characters", MinPasswordRunes)}
	}
	if len(password) > MaxPasswordBytes {
		return &PolicyError{Reason: fmt.Sprintf("password must be at most %d bytes", MaxPasswordBytes)}
	}
	if isSingleRepeatedRune(password) {
		return &PolicyError{Reason: "password must not be a single repeated character"}
	}
	if _, bad := commonPasswords()[strings.ToLower(password)]; bad {
		return &PolicyError{Reason: "password is too common; choose another"}
	}
	if email != "" {
		local := email
		if i := strings.LastIndexByte(email, '@'); i >= 0 {
			local = email[:i]
		}
		if strings.EqualFold(password, email) || (local != "" && strings.EqualFold(password, local)) {
			return &PolicyError{Reason: "password must not be your email address"}
		}
	}
	return nil
}

func isSingleRepeatedRune(s string) bool {
	first, size := utf8.DecodeRuneInString(s)
	for _, r := range s[size:] {
		if r != first {
			return false
		}
	}
	return true
}

// Argon2Params are the argon2id cost parameters. They are stored in every
// encoded hash, so changing them affects new hashes only and old ones keep
// verifying.
type Argon2Params struct {
	// Memory is in KiB.
	Memory uint32
	// Iterations is argon2's "time" parameter.
	Iterations uint32
	// Parallelism is argon2's lane count.
	Parallelism uint8
	// Concurrency caps simultaneous hash computations in one Hasher, because
	// each one holds Memory KiB; zero means runtime.NumCPU().
	Concurrency int
}

// DefaultArgon2Params returns OWASP's recommended argon2id minimum
// (19 MiB, 2 iterations, 1 lane), which keeps a login under ~50 ms on one
// core while making GPU guessing expensive.
func DefaultArgon2Params() Argon2Params {
	return Argon2Params{Memory: 19456, Iterations: 2, Parallelism: 1}
}

const (
	saltLen = 16
	keyLen  = 32

	// Upper bounds on parameters accepted from an encoded hash, so that a
	// tampered database row cannot make one login allocate unbounded memory
	// or spin for minutes.
	maxMemoryKiB  = 1 << 20 // 1 GiB
	maxIterations = 10
	maxLanes      = 16

	minSaltLen, maxSaltLen = 8, 64
	minKeyLen, maxKeyLen   = 16, 64

	// maxHashInput bounds what Hash and Verify will feed to argon2 even
	// when a caller skipped CheckPolicy, so hashing time stays predictable.
	maxHashInput = 4 * MaxPasswordBytes
)

// ErrPasswordTooLong is returned by Hash for inputs no policy-compliant
// password can reach; Verify instead reports such inputs as a mismatch.
var ErrPasswordTooLong = errors.New("auth: password too long to hash")

var b64 = base64.RawStdEncoding.Strict()

// Hasher hashes and verifies passwords with argon2id. It is safe for
// concurrent use; its semaphore is what stops a login flood from allocating
// Memory KiB per request until the process is killed.
type Hasher struct {
	params Argon2Params
	sem    chan struct{}

	// Bounds for decoded parameters; fields rather than constants only so
	// tests and fuzzing can lower them.
	maxMemory, maxTime uint32
	maxLanes           uint8

	dummyOnce    sync.Once
	dummyEncoded string
}

// NewHasher returns a Hasher using p for new hashes. Zero fields take their
// defaults. It panics if p exceeds the bounds Verify enforces, since such a
// Hasher would write hashes it refuses to read back — a configuration bug
// that should fail at start-up rather than at a user's next login.
func NewHasher(p Argon2Params) *Hasher {
	d := DefaultArgon2Params()
	if p.Memory == 0 {
		p.Memory = d.Memory
	}
	if p.Iterations == 0 {
		p.Iterations = d.Iterations
	}
	if p.Parallelism == 0 {
		p.Parallelism = d.Parallelism
	}
	if p.Concurrency <= 0 {
		p.Concurrency = runtime.NumCPU()
	}
	h := &Hasher{
		params:    p,
		sem:       make(chan struct{}, p.Concurrency),
		maxMemory: maxMemoryKiB,
		maxTime:   maxIterations,
		maxLanes:  maxLanes,
	}
	if err := h.checkParams(p.Memory, p.Iterations, p.Parallelism); err != nil {
		panic("auth.NewHasher: " + err.Error())
	}
	return h
}

func (h *Hasher) checkParams(m, t uint32, p uint8) error {
	switch {
	case p == 0 || p > h.maxLanes:
		return fmt.Errorf("parallelism %d out of range 1..%d", p, h.maxLanes)
	case t == 0 || t > h.maxTime:
		return fmt.Errorf("iterations %d out of range 1..%d", t, h.maxTime)
	case m < 8*uint32(p) || m > h.maxMemory:
		// argon2 needs 8 KiB per lane; x/crypto would silently round up,
		// which would make the stored parameters lie.
		return fmt.Errorf("memory %d KiB out of range %d..%d", m, 8*uint32(p), h.maxMemory)
	}
	return nil
}

func (h *Hasher) acquire(ctx context.Context) error {
	// Checked first because select picks randomly among ready cases, and a
	// cancelled request should not burn a hash computation.
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Hasher) release() { <-h.sem }

// Hash returns password's argon2id hash in PHC string format. It blocks while
// the Hasher is at its concurrency limit and gives up when ctx is done.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if len(password) > maxHashInput {
		return "", ErrPasswordTooLong
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: reading salt: %w", err)
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	p := h.params
	key := argon2.IDKey([]byte(password), salt, p.Iterations, p.Memory, p.Parallelism, keyLen)
	argon2Done()
	return encodeHash(p.Memory, p.Iterations, p.Parallelism, salt, key), nil
}

// returnMemory hands the heap's free memory back to the OS a moment after
// the last argon2id computation of a burst. Each computation allocates its
// whole memory parameter (19 MiB by default) and drops it at once; left to
// the collector and the background scavenger, that memory stays resident
// for minutes and raises the next collection's goal, which doubled the idle
// resident set of `maestro serve` after a single login.
// It runs at most every returnMemoryEvery: it costs a full collection, and
// a steady trickle of logins must not pay one each.
var (
	returnMemory = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		lastReturn.Store(time.Now().UnixNano())
		debug.FreeOSMemory()
	})
	lastReturn atomic.Int64
)

const returnMemoryEvery = 5 * time.Second

func argon2Done() {
	since := time.Duration(time.Now().UnixNano() - lastReturn.Load())
	returnMemory.Reset(max(250*time.Millisecond, returnMemoryEvery-since))
}

func encodeHash(m, t uint32, p uint8, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, m, t, p, b64.EncodeToString(salt), b64.EncodeToString(key))
}

type decodedHash struct {
	m, t      uint32
	p         uint8
	salt, key []byte
}

// decodeHash parses strictly — exact field order, no optional PHC fields,
// canonical base64 — so that one stored value has exactly one meaning.
func (h *Hasher) decodeHash(encoded string) (decodedHash, error) {
	var d decodedHash
	fields := strings.Split(encoded, "$")
	if len(fields) != 6 || fields[0] != "" {
		return d, errors.New("auth: malformed password hash")
	}
	if fields[1] != "argon2id" {
		return d, errors.New("auth: unsupported password hash algorithm")
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return d, errors.New("auth: unsupported argon2 version")
	}
	params := strings.Split(fields[3], ",")
	if len(params) != 3 {
		return d, errors.New("auth: malformed argon2 parameters")
	}
	var vals [3]uint64
	for i, name := range [3]string{"m=", "t=", "p="} {
		s, ok := strings.CutPrefix(params[i], name)
		// Reject signs and leading zeros so the encoding stays canonical.
		if !ok || s == "" || (len(s) > 1 && s[0] == '0') || s[0] == '+' || s[0] == '-' {
			return d, errors.New("auth: malformed argon2 parameters")
		}
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return d, errors.New("auth: malformed argon2 parameters")
		}
		vals[i] = v
	}
	if vals[2] > 255 {
		return d, errors.New("auth: argon2 parallelism out of range")
	}
	d.m, d.t, d.p = uint32(vals[0]), uint32(vals[1]), uint8(vals[2])
	if err := h.checkParams(d.m, d.t, d.p); err != nil {
		return d, fmt.Errorf("auth: argon2 parameters rejected: %w", err)
	}
	var err error
	if d.salt, err = b64.DecodeString(fields[4]); err != nil || len(d.salt) < minSaltLen || len(d.salt) > maxSaltLen {
		return d, errors.New("auth: malformed argon2 salt")
	}
	if d.key, err = b64.DecodeString(fields[5]); err != nil || len(d.key) < minKeyLen || len(d.key) > maxKeyLen {
		return d, errors.New("auth: malformed argon2 key")
	}
	return d, nil
}

// Verify reports whether password matches encoded. A mismatch is (false,
// nil); an error means the stored hash is unusable (or ctx ended) and should
// be treated as a server fault, not as a wrong password. Parameters come from
// encoded so hashes made under older settings keep working, within bounds
// that stop a poisoned row from exhausting the host.
func (h *Hasher) Verify(ctx context.Context, encoded, password string) (bool, error) {
	d, err := h.decodeHash(encoded)
	if err != nil {
		return false, err
	}
	if len(password) > maxHashInput {
		// Hash never accepted such input, so it cannot match.
		return false, nil
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	got := argon2.IDKey([]byte(password), d.salt, d.t, d.m, d.p, uint32(len(d.key)))
	argon2Done()
	return subtle.ConstantTimeCompare(got, d.key) == 1, nil
}

// DummyVerify spends the same work as a failed Verify against a hash made
// with this Hasher's parameters, so an attacker cannot enumerate accounts by
// timing logins for names that do not exist. The reference hash is random
// bytes rather than a real hash: it only has to cost the same, not match.
func (h *Hasher) DummyVerify(ctx context.Context, password string) {
	h.dummyOnce.Do(func() {
		buf := make([]byte, saltLen+keyLen)
		_, _ = rand.Read(buf)
		p := h.params
		h.dummyEncoded = encodeHash(p.Memory, p.Iterations, p.Parallelism, buf[:saltLen], buf[saltLen:])
	})
	_, _ = h.Verify(ctx, h.dummyEncoded, password)
}
