package identity

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// addressThrottle limits failed logins per client address. Its limit is well
// above the per-account one, so it stops spraying across many accounts
// without locking out one account's owner. It lives in memory: each API
// instance enforces it for the addresses it sees.
type addressThrottle struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	max     int
	entries map[string]*rate.Limiter
}

func newAddressThrottle(failuresPerHour, maxAddresses int) *addressThrottle {
	return &addressThrottle{
		limit: rate.Limit(float64(failuresPerHour) / 3600), burst: failuresPerHour,
		max: maxAddresses, entries: map[string]*rate.Limiter{},
	}
}

func (a *addressThrottle) limiter(ip string, now time.Time) *rate.Limiter {
	l, ok := a.entries[ip]
	if !ok {
		if len(a.entries) >= a.max {
			for k, v := range a.entries { // drop addresses that have fully recovered
				if v.TokensAt(now) >= float64(a.burst) {
					delete(a.entries, k)
				}
			}
			if len(a.entries) >= a.max {
				clear(a.entries)
			}
		}
		l = rate.NewLimiter(a.limit, a.burst)
		a.entries[ip] = l
	}
	return l
}

// retryAfter is zero when ip may try again now, else how long to wait.
func (a *addressThrottle) retryAfter(ip string, now time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.limiter(ip, now)
	if l.TokensAt(now) >= 1 {
		return 0
	}
	r := l.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return max(d, time.Second)
}

// fail records a failed login from ip.
func (a *addressThrottle) fail(ip string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limiter(ip, now).AllowN(now, 1)
}
