package api

import (
	"strings"
	"testing"
	"time"
)

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::ffff:172.16.0.0/108,")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if want := "10.0.0.0/8 192.168.1.7/32 fd00::/8 172.16.0.0/12"; strings.Join(s, " ") != want {
		t.Errorf("parsed %v, want %s", s, want)
	}
	if got, err := ParseTrustedProxies(""); err != nil || len(got) != 0 {
		t.Errorf("empty: %v %v, want none", got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "10.0.0/8", "proxy.internal", "10.0.0.0/8;10.1.0.0/16", "1.2.3.4:80"} {
		if _, err := ParseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), "MAESTRO_TRUSTED_PROXIES") {
			t.Errorf("%q: %v, want an error naming MAESTRO_TRUSTED_PROXIES", bad, err)
		}
	}
}

// The rightmost-untrusted walk of X-Forwarded-For.
func TestResolveClientIP(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8, 2001:db8::/32")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy, no header", "198.51.100.1:5000", nil, "198.51.100.1"},
		{"untrusted peer's header is ignored", "198.51.100.1:5000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"untrusted peer spoofing a trusted hop", "198.51.100.1:5000", []string{"203.0.113.9, 10.0.0.1"}, "198.51.100.1"},
		{"trusted peer, one hop", "10.1.2.3:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"trusted chain", "10.1.2.3:5000", []string{"203.0.113.9, 10.0.0.7, 10.0.0.8"}, "203.0.113.9"},
		{"client-sent entries left of the first untrusted are not believed", "10.1.2.3:5000", []string{"1.1.1.1, 203.0.113.9, 10.0.0.8"}, "203.0.113.9"},
		{"several headers are one list", "10.1.2.3:5000", []string{"1.1.1.1", "203.0.113.9", "10.0.0.8"}, "203.0.113.9"},
		{"trusted peer, no header", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"every hop trusted: the leftmost", "10.1.2.3:5000", []string{"10.0.0.5, 10.0.0.6"}, "10.0.0.5"},
		{"malformed entry: the peer", "10.1.2.3:5000", []string{"203.0.113.9, not-an-ip"}, "10.1.2.3"},
		{"entry with a port is malformed", "10.1.2.3:5000", []string{"203.0.113.9:443"}, "10.1.2.3"},
		{"empty entry is malformed", "10.1.2.3:5000", []string{"203.0.113.9,,"}, "10.1.2.3"},
		{"IPv6 trusted peer", "[2001:db8::1]:5000", []string{"2001:db9::5"}, "2001:db9::5"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"IPv4-mapped client", "10.1.2.3:5000", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"peer without a port", "198.51.100.1", nil, "198.51.100.1"},
	} {
		if got := resolveClientIP(proxies, c.peer, c.xff); got != c.want {
			t.Errorf("%s: peer %s X-Forwarded-For %q → %s, want %s", c.name, c.peer, c.xff, got, c.want)
		}
	}
	if got := resolveClientIP(nil, "10.1.2.3:5000", []string{"203.0.113.9"}); got != "10.1.2.3" {
		t.Errorf("no trusted proxies: %s, want the peer", got)
	}
}

// What requestLog adds per request: the client address and the two HTTP
// series (behind a trusted proxy, the worst case of the address).
func BenchmarkRequestInstrumentation(b *testing.B) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8")
	if err != nil {
		b.Fatal(err)
	}
	m := newAPIMetrics(nil)
	xff := []string{"203.0.113.9, 10.0.0.7"}
	b.ReportAllocs()
	for b.Loop() {
		_ = resolveClientIP(proxies, "10.1.2.3:5000", xff)
		m.observeRequest("/api/v1/projects/{project}", "GET", 200, time.Millisecond, false)
	}
}
