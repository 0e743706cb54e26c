package auth

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestCheckPolicy(t *testing.T) {
	tests := []struct {
		name     string
		password string
		email    string
		ok       bool
	}{
		{"11 chars", "abcdefghjk1", "", false},
		{"12 chars", "abcdefghjk12", "", true},
		{"128 chars", strings.Repeat("ab", 64), "", true},
		{"1024 bytes", strings.Repeat("xy", 512), "", true},
		{"1025 bytes", strings.Repeat("xy", 512) + "z", "", false},
		{"128 four-byte runes", strings.Repeat("😀🙂", 64), "", true},
		{"12 multibyte runes", "ñöçåßéüøæłžš", "", true},
		{"11 multibyte runes (>12 bytes)", "ñöçåßéüøæłž", "", false},
		{"common", "1qaz2wsx3edc", "", false},
		{"common upper case", "1QAZ2WSX3EDC", "", false},
		{"common mixed case", "LeaveMeAlone", "", false},
		{"common 16 chars", "1qaz2wsx3edc4rfv", "", false},
		{"single repeated char", strings.Repeat("a", 20), "", false},
		{"single repeated rune", strings.Repeat("é", 20), "", false},
		{"two chars repeated ok", strings.Repeat("ab", 10), "", true},
		{"equals email", "someone.long@example.com", "Someone.Long@example.com", false},
		{"equals local part", "someone.longname", "someone.longname@example.com", false},
		{"unrelated to email", "correct horse battery", "someone.longname@example.com", true},
		{"invalid utf8", "abcdefghijk\xff", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPolicy(tc.password, tc.email)
			if tc.ok && err != nil {
				t.Fatalf("want ok, got %v", err)
			}
			if !tc.ok {
				var pe *PolicyError
				if !errors.As(err, &pe) || pe.Reason == "" {
					t.Fatalf("want *PolicyError, got %v", err)
				}
			}
		})
	}
}

func TestCommonPasswordListLoaded(t *testing.T) {
	set := commonPasswords()
	if len(set) < 10000 {
		t.Fatalf("common list has %d entries, want >= 10000", len(set))
	}
	for w := range set {
		if w != strings.ToLower(w) {
			t.Fatalf("entry %q not lower-case", w)
		}
	}
}

// fastHasher keeps unit tests quick; the parameters are still read back from
// the encoding, so the code paths are the production ones.
func fastHasher() *Hasher {
	return NewHasher(Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, Concurrency: 2})
}

func TestHashVerifyRoundTrip(t *testing.T) {
	ctx := context.Background()
	for name, h := range map[string]*Hasher{"default": NewHasher(DefaultArgon2Params()), "fast": fastHasher()} {
		t.Run(name, func(t *testing.T) {
			enc, err := h.Hash(ctx, "correct horse battery staple")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(enc, "$argon2id$v=19$m=") {
				t.Fatalf("unexpected encoding %q", enc)
			}
			ok, err := h.Verify(ctx, enc, "correct horse battery staple")
			if err != nil || !ok {
				t.Fatalf("verify correct: ok=%v err=%v", ok, err)
			}
			ok, err = h.Verify(ctx, enc, "correct horse battery stapler")
			if err != nil || ok {
				t.Fatalf("verify wrong: ok=%v err=%v", ok, err)
			}
		})
	}
	enc, _ := NewHasher(DefaultArgon2Params()).Hash(ctx, "x")
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("default params not encoded: %q", enc)
	}
}

func TestHashSaltsDiffer(t *testing.T) {
	h := fastHasher()
	a, _ := h.Hash(context.Background(), "same password here")
	b, _ := h.Hash(context.Background(), "same password here")
	if a == b {
		t.Fatal("two hashes of the same password are identical")
	}
}

func TestVerifyNoTruncation(t *testing.T) {
	ctx := context.Background()
	h := fastHasher()
	base := strings.Repeat("p", 199)
	a, b := base+"a", base+"b"
	enc, err := h.Hash(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.Verify(ctx, enc, b); ok {
		t.Fatal("200-char passwords differing in last char verified against each other")
	}
	if ok, _ := h.Verify(ctx, enc, a); !ok {
		t.Fatal("200-char password failed to verify")
	}
}

func TestVerifyMalformed(t *testing.T) {
	ctx := context.Background()
	h := fastHasher()
	good, _ := h.Hash(ctx, "correct horse battery staple")
	parts := strings.Split(good, "$")
	salt, key := parts[4], parts[5]
	cases := map[string]string{
		"empty":           "",
		"garbage":         "not a hash",
		"dollars":         "$$$$$",
		"bcrypt":          "$2a$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
		"argon2i":         "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"wrong version":   "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
		"missing field":   "$argon2id$v=19$m=64,t=1,p=1$" + salt,
		"extra field":     good + "$x",
		"param order":     "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key,
		"param missing":   "$argon2id$v=19$m=64,t=1$" + salt + "$" + key,
		"param extra":     "$argon2id$v=19$m=64,t=1,p=1,keyid=x$" + salt + "$" + key,
		"param negative":  "$argon2id$v=19$m=-64,t=1,p=1$" + salt + "$" + key,
		"param plus":      "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key,
		"param leading 0": "$argon2id$v=19$m=064,t=1,p=1$" + salt + "$" + key,
		"param overflow":  "$argon2id$v=19$m=99999999999999999999,t=1,p=1$" + salt + "$" + key,
		"param empty":     "$argon2id$v=19$m=,t=1,p=1$" + salt + "$" + key,
		"zero t":          "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key,
		"zero p":          "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key,
		"m below 8p":      "$argon2id$v=19$m=7,t=1,p=1$" + salt + "$" + key,
		"bad salt b64":    "$argon2id$v=19$m=64,t=1,p=1$!!!!$" + key,
		"padded salt":     "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key,
		"short salt":      "$argon2id$v=19$m=64,t=1,p=1$YWJj$" + key,
		"empty key":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$",
		"short key":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$YWJjZA",
	}
	for name, enc := range cases {
		t.Run(name, func(t *testing.T) {
			ok, err := h.Verify(ctx, enc, "correct horse battery staple")
			if err == nil || ok {
				t.Fatalf("want error, got ok=%v err=%v", ok, err)
			}
		})
	}
}

func TestVerifyRejectsAbsurdParams(t *testing.T) {
	ctx := context.Background()
	h := fastHasher()
	salt, key := "c2FsdHNhbHRzYWx0c2FsdA", strings.Repeat("A", 43)
	cases := map[string]string{
		"m > 1GiB":   "$argon2id$v=19$m=1048577,t=1,p=1$",
		"m = 4GiB-1": "$argon2id$v=19$m=4294967295,t=1,p=1$",
		"t > 10":     "$argon2id$v=19$m=64,t=11,p=1$",
		"t huge":     "$argon2id$v=19$m=64,t=4294967295,p=1$",
		"p > 16":     "$argon2id$v=19$m=1024,t=1,p=17$",
		"p > 255":    "$argon2id$v=19$m=4096,t=1,p=256$",
	}
	for name, prefix := range cases {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			ok, err := h.Verify(ctx, prefix+salt+"$"+key, "pw")
			if err == nil || ok {
				t.Fatalf("want error, got ok=%v err=%v", ok, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("rejection took %v; parameters were probably used", d)
			}
		})
	}
}

func TestNewHasherPanicsOnUnverifiableParams(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("want panic")
		}
	}()
	NewHasher(Argon2Params{Memory: 64, Iterations: 11, Parallelism: 1})
}

func TestHashTooLong(t *testing.T) {
	h := fastHasher()
	if _, err := h.Hash(context.Background(), strings.Repeat("a", maxHashInput+1)); !errors.Is(err, ErrPasswordTooLong) {
		t.Fatalf("want ErrPasswordTooLong, got %v", err)
	}
}

func TestHasherHonoursContextWhileWaiting(t *testing.T) {
	h := NewHasher(Argon2Params{Memory: 64, Iterations: 1, Parallelism: 1, Concurrency: 1})
	enc, _ := h.Hash(context.Background(), "password for ctx test")
	h.sem <- struct{}{} // occupy the only slot
	defer h.release()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.Hash(ctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Hash: want deadline exceeded, got %v", err)
	}
	if _, err := h.Verify(ctx, enc, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Verify: want deadline exceeded, got %v", err)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	h.DummyVerify(cancelled, "x") // must return, not block
}

func TestDummyVerifyCostsAboutAsMuchAsVerify(t *testing.T) {
	ctx := context.Background()
	h := NewHasher(DefaultArgon2Params())
	enc, _ := h.Hash(ctx, "correct horse battery staple")
	h.DummyVerify(ctx, "warm up lazy hash")
	if !strings.HasPrefix(h.dummyEncoded, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("dummy hash does not use hasher params: %q", h.dummyEncoded)
	}
	if _, err := h.decodeHash(h.dummyEncoded); err != nil {
		t.Fatalf("dummy hash undecodable: %v", err)
	}
	// The work is argon2's memory pass, so compare the bytes each call
	// allocates (m KiB per derivation, deterministic) instead of wall time,
	// which a loaded machine makes flaky.
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	real := allocated(func() { _, _ = h.Verify(ctx, enc, "wrong password value") })
	dummy := allocated(func() { h.DummyVerify(ctx, "wrong password value") })
	if floor := uint64(DefaultArgon2Params().Memory) << 10; real < floor || dummy < floor || dummy < real*9/10 {
		t.Fatalf("DummyVerify allocated %d bytes vs Verify %d (argon2 needs %d): it would not cost the same, and timing would reveal unknown accounts", dummy, real, floor)
	}
}

func FuzzHashVerifyEncoded(f *testing.F) {
	h := fastHasher()
	good, _ := h.Hash(context.Background(), "seed password value")
	f.Add(good, "seed password value")
	f.Add("", "")
	f.Add("$argon2id$v=19$m=64,t=1,p=1$$", "x")
	f.Add("$argon2id$v=19$m=1048577,t=1,p=1$c2FsdHNhbHQ$c2FsdHNhbHRzYWx0c2FsdA", "x")
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$c2FsdHNhbHRzYWx0c2FsdA", "x")
	f.Add("$argon2id$v=19$m=64,t=1,p=255$c2FsdHNhbHQ$c2FsdHNhbHRzYWx0c2FsdA", "x")
	f.Add("$argon2id$v=19$m=64,t=1,p=1$\xff\xfe$c2FsdA", "x")
	f.Add(strings.Repeat("$", 1000), "x")
	// Decoded bounds are lowered so the fuzzer cannot spend each iteration
	// allocating up to 1 GiB; parsing is unaffected.
	h.maxMemory, h.maxTime, h.maxLanes = 1024, 2, 4
	f.Fuzz(func(t *testing.T, encoded, password string) {
		ok, err := h.Verify(context.Background(), encoded, password)
		if err != nil && ok {
			t.Fatal("ok with error")
		}
	})
}
