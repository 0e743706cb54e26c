package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/maestro-ml/maestro/handlers"
)

// Resolver looks host names up (net.DefaultResolver; tests replace it to
// play a DNS rebinding).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// TargetPolicy keeps webhook requests away from addresses inside the
// platform's network (SSRF): loopback, private, link-local (the cloud
// metadata address 169.254.169.254 among them), unique-local (fd00::/8),
// carrier-grade NAT, multicast and reserved ranges, unless AllowPrivate
// (MAESTRO_WEBHOOK_ALLOW_PRIVATE_TARGETS). It checks a URL's host when a
// subscription is created or changed, and every address a delivery dials
// (Dialer's Control), so a name that resolves elsewhere later (DNS
// rebinding) is caught when it matters.
type TargetPolicy struct {
	AllowPrivate bool
	// Resolver defaults to net.DefaultResolver.
	Resolver Resolver
}

// forbiddenPrefixes are the ranges no webhook may reach (besides what
// netip's predicates cover below).
var forbiddenPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",          // "this network"
		"100.64.0.0/10",      // carrier-grade NAT (RFC 6598)
		"192.0.0.0/24",       // IETF protocol assignments
		"192.0.2.0/24",       // documentation
		"198.18.0.0/15",      // benchmarking
		"198.51.100.0/24",    // documentation
		"203.0.113.0/24",     // documentation
		"240.0.0.0/4",        // reserved, and the broadcast address
		"64:ff9b::/96",       // NAT64: reaches IPv4 addresses inside
		"64:ff9b:1::/48",     // local-use NAT64
		"2001:db8::/32",      // documentation
		"fec0::/10",          // deprecated site-local
		"100::/64",           // discard
		"2002::/16",          // 6to4: embeds an IPv4 address
		"::/96",              // IPv4-compatible (deprecated): ::7f00:1 is 127.0.0.1 to some stacks and tunnels
		"::ffff:0:0:0/96",    // IPv4-translated (SIIT, RFC 2765): embeds an IPv4 address
		"fd00:ec2::254/128",  // AWS metadata over IPv6 (inside fd00::/8 already; named for the record)
		"169.254.169.254/32", // cloud metadata (inside link-local already; named for the record)
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// Forbidden reports whether a is an address webhooks may not reach.
func Forbidden(a netip.Addr) bool {
	a = a.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// errForbiddenTarget is what a refused address answers.
var errForbiddenTarget = errors.New("forbidden target address")

func (t TargetPolicy) resolver() Resolver {
	if t.Resolver != nil {
		return t.Resolver
	}
	return net.DefaultResolver
}

// CheckTarget resolves u's host and refuses it (a 422 problem) when any
// of its addresses is forbidden, or when it does not resolve.
func (t TargetPolicy) CheckTarget(ctx context.Context, u *url.URL) error {
	if t.AllowPrivate {
		return nil
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if Forbidden(a) {
			return targetForbidden(host, a)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := t.resolver().LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return handlers.Errorf(handlers.Invalid, "webhook-host-unresolved", "the url's host %q does not resolve", host)
	}
	for _, a := range addrs {
		if Forbidden(a) {
			return targetForbidden(host, a)
		}
	}
	return nil
}

func targetForbidden(host string, a netip.Addr) error {
	return handlers.Errorf(handlers.Invalid, "webhook-target-forbidden",
		"the url's host %s resolves to %s, a loopback, private, link-local or otherwise internal address webhooks may not reach", host, a)
}

// control is the net.Dialer Control that refuses forbidden addresses: it
// sees the very address being connected to, after every resolution.
func (t TargetPolicy) control(_, address string, _ syscall.RawConn) error {
	if t.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", errForbiddenTarget, address)
	}
	if Forbidden(ap.Addr()) {
		return fmt.Errorf("%w: %s", errForbiddenTarget, ap.Addr())
	}
	return nil
}

// DialContext resolves with the policy's Resolver and connects to the
// first address that answers, each connection checked by control.
func (t TargetPolicy) DialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, Control: t.control}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = []netip.Addr{a}
		} else if addrs, err = t.resolver().LookupNetIP(ctx, "ip", host); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		var last error = fmt.Errorf("no address for %s", host)
		for _, a := range addrs {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
}
