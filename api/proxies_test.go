package api_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/api"
	"github.com/maestro-ml/maestro/internal/testenv"
)

// The client address an API token's use is recorded with: behind a trusted
// proxy (the test's loopback peer), the rightmost untrusted X-Forwarded-For
// hop; from a peer that is not trusted, the peer, whatever the header says.
func TestTrustedProxiesOverHTTP(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		trusted string
		want    string
	}{
		{"peer trusted", "127.0.0.0/8, 10.0.0.0/8", "198.51.100.7"},
		{"peer not trusted", "10.0.0.0/8", "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := testenv.Config(t)
			cfg.Runner = false
			var err error
			if cfg.TrustedProxies, err = api.ParseTrustedProxies(c.trusted); err != nil {
				t.Fatal(err)
			}
			e := testenv.Start(t, cfg)
			admin := e.Admin("root@proxy.test").AccessToken
			tok := asJSON[api.APITokenResponse](t, call(t, e, 201, "POST", "/api/v1/tokens", admin, map[string]any{"name": "ci"}))
			// The client claims 203.0.113.9; a (trusted) proxy at 10.0.0.8
			// saw the connection come from 198.51.100.7.
			call(t, e, 200, "GET", "/api/v1/auth/me", tok.Token, nil, "X-Forwarded-For", "203.0.113.9, 198.51.100.7, 10.0.0.8")
			deadline := time.Now().Add(5 * time.Second)
			for {
				page := asJSON[api.APITokenPage](t, call(t, e, 200, "GET", "/api/v1/tokens", admin, nil))
				if len(page.Items) == 1 && page.Items[0].LastUsedIP != "" {
					if got := page.Items[0].LastUsedIP; netip.MustParseAddr(got).String() != c.want {
						t.Fatalf("token use recorded from %s, want %s", got, c.want)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("the token's use was never recorded: %+v", page.Items)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}
