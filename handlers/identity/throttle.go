package identity

import (
	"net/netip"
	"sync"
	"time"
)

// addressKey groups IPv6 clients by /64 (one subscriber's usual allocation),
// so rotating through a prefix does not multiply the budget.
func addressKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Is4() || a.Is4In6() {
		return ip
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}

// addressThrottle limits failed logins per client address. Its limit is well
// above the per-account one, so it stops spraying across many accounts
// without locking out one account's owner. It lives in memory: each API
// instance enforces it for the addresses it sees.
//
// Every attempt takes a token before the password is checked and gives it
// back if the login succeeds, so parallel attempts cannot all pass the check
// before any failure is counted.
type addressThrottle struct {
	mu      sync.Mutex
	perSec  float64 // refill rate
	burst   float64
	max     int
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newAddressThrottle(failuresPerHour, maxAddresses int) *addressThrottle {
	return &addressThrottle{perSec: float64(failuresPerHour) / 3600, burst: float64(failuresPerHour),
		max: maxAddresses, buckets: map[string]*bucket{}}
}

// refilled returns ip's bucket brought up to now.
func (a *addressThrottle) refilled(ip string, now time.Time) *bucket {
	b, ok := a.buckets[ip]
	if !ok {
		if len(a.buckets) >= a.max {
			for k, v := range a.buckets { // forget addresses that have fully recovered
				if v.tokens+now.Sub(v.last).Seconds()*a.perSec >= a.burst {
					delete(a.buckets, k)
				}
			}
			if len(a.buckets) >= a.max {
				clear(a.buckets)
			}
		}
		b = &bucket{tokens: a.burst, last: now}
		a.buckets[ip] = b
	}
	if now.After(b.last) {
		b.tokens = min(a.burst, b.tokens+now.Sub(b.last).Seconds()*a.perSec)
		b.last = now
	}
	return b
}

// take reserves one attempt for ip; it returns how long to wait instead when
// the budget is spent.
func (a *addressThrottle) take(ip string, now time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.refilled(ip, now)
	if b.tokens < 1 {
		return max(time.Duration((1-b.tokens)/a.perSec*float64(time.Second)), time.Second)
	}
	b.tokens--
	return 0
}

// refund gives back an attempt that did not fail.
func (a *addressThrottle) refund(ip string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.refilled(ip, now)
	b.tokens = min(a.burst, b.tokens+1)
}

// unknownAccounts keeps failure streaks for e-mails that have no account,
// under the same back-off policy as real accounts. Without it, a 429 after a
// few failures would tell an attacker that the account exists. In memory:
// nothing about these addresses is worth a durable record beyond the
// login_rejected events.
type unknownAccounts struct {
	mu      sync.Mutex
	max     int
	streaks map[string]UserState // only Failures and LastFailure are used
}

func newUnknownAccounts(max int) *unknownAccounts {
	return &unknownAccounts{max: max, streaks: map[string]UserState{}}
}

func (u *unknownAccounts) state(email string) UserState {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.streaks[email]
}

func (u *unknownAccounts) fail(email string, now time.Time, p ThrottlePolicy) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.streaks[email]; !ok && len(u.streaks) >= u.max {
		for k, s := range u.streaks { // forget streaks whose lock has passed
			if !now.Before(p.LockedUntil(s)) {
				delete(u.streaks, k)
			}
		}
		if len(u.streaks) >= u.max {
			clear(u.streaks)
		}
	}
	s := u.streaks[email]
	s.Failures++
	s.LastFailure = now
	u.streaks[email] = s
}
