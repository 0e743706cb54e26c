package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeJSON feeds arbitrary bodies to the request decoder: it must
// never panic, and it accepts only a single JSON object with known fields.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"email":"a@b.io","password":"correct horse battery","name":"A"}`,
		`{"email":"a@b.io"} {"x":1}`, `{"unknown":1}`, `[]`, `null`, ``, `{"email":`, `{"email":"\u0000"}`,
		strings.Repeat(`{"a":`, 1000), `{"email":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/x", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		var req registerRequest
		err := decodeJSON(r, &req)
		if err == nil {
			return
		}
		var pe *problemError
		var mbe *http.MaxBytesError
		if !errors.As(err, &pe) && !errors.As(err, &mbe) {
			t.Fatalf("decode error is neither a problem nor a size error: %v", err)
		}
	})
}

// FuzzIdempotencyKey: only 1..255 visible ASCII characters are keys.
func FuzzIdempotencyKey(f *testing.F) {
	for _, seed := range []string{"abc", "", " ", "ключ", strings.Repeat("k", 256), "a\tb", "req-2026-11-27/1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, k string) {
		ok := validIdempotencyKey(k)
		want := len(k) >= 1 && len(k) <= 255
		for i := 0; i < len(k) && want; i++ {
			want = k[i] > 0x20 && k[i] < 0x7f
		}
		if ok != want {
			t.Fatalf("validIdempotencyKey(%q) = %v, want %v", k, ok, want)
		}
	})
}
