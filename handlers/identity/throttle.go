package identity

import (
	"container/heap"
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
//
// The table holds at most max addresses. A new address over that evicts the
// one that will be full again soonest (an address already full again first,
// which loses nothing), never the whole table: a flood of fresh addresses
// evicts its own entries, which have spent little, before an address that
// has spent its budget, so nobody's budget can be reset on demand.
type addressThrottle struct {
	mu      sync.Mutex
	perSec  float64 // refill rate
	burst   float64
	max     int
	buckets map[string]*bucket
	byFull  fullHeap // the same buckets, soonest full first
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
	full   time.Time // when tokens reach burst again without further use
	index  int       // position in byFull
}

func newAddressThrottle(failuresPerHour, maxAddresses int) *addressThrottle {
	return &addressThrottle{perSec: float64(failuresPerHour) / 3600, burst: float64(failuresPerHour),
		max: maxAddresses, buckets: map[string]*bucket{}}
}

// refilled returns ip's bucket brought up to now.
func (a *addressThrottle) refilled(ip string, now time.Time) *bucket {
	b, ok := a.buckets[ip]
	if !ok {
		for len(a.buckets) >= max(a.max, 1) {
			old := heap.Pop(&a.byFull).(*bucket)
			delete(a.buckets, old.key)
		}
		b = &bucket{key: ip, tokens: a.burst, last: now, full: now}
		a.buckets[ip] = b
		heap.Push(&a.byFull, b)
	}
	if now.After(b.last) {
		b.tokens = min(a.burst, b.tokens+now.Sub(b.last).Seconds()*a.perSec)
		b.last = now
	}
	return b
}

// changed re-files b after its tokens changed.
func (a *addressThrottle) changed(b *bucket) {
	b.full = b.last.Add(time.Duration((a.burst - b.tokens) / a.perSec * float64(time.Second)))
	heap.Fix(&a.byFull, b.index)
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
	a.changed(b)
	return 0
}

// refund gives back an attempt that did not fail.
func (a *addressThrottle) refund(ip string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.refilled(ip, now)
	b.tokens = min(a.burst, b.tokens+1)
	a.changed(b)
}

// fullHeap orders buckets by when they are full again (container/heap).
type fullHeap []*bucket

func (h fullHeap) Len() int           { return len(h) }
func (h fullHeap) Less(i, j int) bool { return h[i].full.Before(h[j].full) }
func (h fullHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

// Push implements heap.Interface.
func (h *fullHeap) Push(x any) {
	b := x.(*bucket)
	b.index = len(*h)
	*h = append(*h, b)
}

// Pop implements heap.Interface.
func (h *fullHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return b
}
