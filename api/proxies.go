package api

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies parses MAESTRO_TRUSTED_PROXIES: comma-separated
// CIDRs (a bare address is its own /32 or /128). Empty means none: the
// client address is then always the TCP peer.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("MAESTRO_TRUSTED_PROXIES: %q is not a CIDR or an address", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("MAESTRO_TRUSTED_PROXIES: %q is not a CIDR (like 10.0.0.0/8): %w", f, err)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// trusted reports whether a is one of the trusted proxies.
func trusted(proxies []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// resolveClientIP is the client address of a request: the TCP peer,
// unless the peer is a trusted proxy; then X-Forwarded-For is walked from
// the right (the entry the nearest proxy appended) past trusted proxies,
// and the first address that is not one is the client's. Entries left of
// it are whatever the client sent and are never believed. A malformed
// entry on the way means a proxy chain we cannot read: the peer is used.
// When every entry is a trusted proxy, the leftmost is the client.
func resolveClientIP(proxies []netip.Prefix, remoteAddr string, xff []string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peerIP := peer.Unmap().WithZone("").String()
	if len(proxies) == 0 || !trusted(proxies, peer) {
		return peerIP
	}
	var hops []string
	for _, h := range xff {
		hops = append(hops, strings.Split(h, ",")...)
	}
	client := peerIP
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peerIP
		}
		client = a.Unmap().WithZone("").String()
		if !trusted(proxies, a) {
			return client
		}
	}
	return client
}

// clientIP is the request's client address (resolveClientIP), which
// requestLog works out once per request.
func clientIP(r *http.Request) string {
	if ip, ok := r.Context().Value(ctxClientIP).(string); ok {
		return ip
	}
	return resolveClientIP(nil, r.RemoteAddr, nil)
}
