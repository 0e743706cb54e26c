//go:build linux

package jobshim

import (
	"slices"
	"strings"
	"testing"
)

func TestShimEnvPayload(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{{}, {"A=1"}, {"A=", "B=two words", "C=x=y\nz"}} {
		got, err := readShimEnv(strings.NewReader(string(EnvPayload(env))))
		if err != nil || !slices.Equal(got, env) {
			t.Errorf("round trip of %q: %q, %v", env, got, err)
		}
	}
	// A runner that died while sending left no end mark.
	full := string(EnvPayload([]string{"A=1", "B=2"}))
	for i := range len(full) {
		if env, err := readShimEnv(strings.NewReader(full[:i])); err == nil {
			t.Errorf("truncated to %q: read %q", full[:i], env)
		}
	}
}
