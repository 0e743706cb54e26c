package bench

import (
	"fmt"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/identity"
)

// NormalizeEmail runs on every login, registration and failed login (NFKC,
// PRECIS, IDNA); CanonicalJSON on every version registration's signature.
// Both sit in front of every such command.

func BenchmarkNormalizeEmail(b *testing.B) {
	for _, in := range []string{"Ada.Lovelace@Example.COM", "josé.garcía@bücher.example"} {
		b.Run(in, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := identity.NormalizeEmail(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// signature is an MLflow-style model signature with n input columns
// (about 60 bytes each).
func signature(n int) []byte {
	cols := make([]string, n)
	for i := range cols {
		cols[i] = fmt.Sprintf(`{"name":"feature_%d","type":"double","required":true}`, i)
	}
	return []byte(`{"inputs":[` + strings.Join(cols, ",") + `],"outputs":[{"type":"tensor","shape":[-1,1],"scale":1e-3}]}`)
}

func BenchmarkCanonicalJSON(b *testing.B) {
	for _, n := range []int{10, 1000} {
		raw := signature(n)
		b.Run(fmt.Sprintf("%dB", len(raw)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := handlers.CanonicalJSON(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
