package platform_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/internal/testenv"
	"github.com/maestro-ml/maestro/platform"
)

// The profiles are served on the admin listener only, never on the API.
func TestDebugListenerServesProfilesOnLoopbackOnly(t *testing.T) {
	cfg := testenv.Config(t)
	cfg.DebugAddr = "127.0.0.1:0"
	e := testenv.Start(t, cfg)
	if e.P.DebugURL() == "" {
		t.Fatal("no debug listener although MAESTRO_DEBUG_ADDR is set")
	}
	resp, err := http.Get(e.P.DebugURL() + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("goroutine profile: %d %.200s", resp.StatusCode, body)
	}
	if r := e.Do("GET", "/debug/pprof/", "", nil); r.Status != http.StatusNotFound {
		t.Fatalf("the API serves /debug/pprof/: %d", r.Status)
	}

	off := testenv.Start(t, testenv.Config(t))
	if off.P.DebugURL() != "" {
		t.Fatalf("debug listener %s opened by default", off.P.DebugURL())
	}
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "10.0.0.1:6060", "example.com:6060", "6060"} {
		if err := platform.LoopbackAddr(addr); err == nil {
			t.Errorf("LoopbackAddr(%q) accepted", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:6060", "[::1]:6060", "localhost:6060"} {
		if err := platform.LoopbackAddr(addr); err != nil {
			t.Errorf("LoopbackAddr(%q): %v", addr, err)
		}
	}
}
