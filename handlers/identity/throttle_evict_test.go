package identity

import (
	"fmt"
	"testing"
	"time"
)

// Review finding 9: the per-address table used to clear() itself when full,
// so a flood of fresh addresses reset every budget, the flooder's own
// included. Now it evicts the entry that is full again soonest, and an
// address that has spent its budget stays refused.
func TestAddressThrottleFloodKeepsExhaustedAddressThrottled(t *testing.T) {
	t.Parallel()
	const perHour, table = 100, 1000
	a := newAddressThrottle(perHour, table)
	now := time.Unix(1_700_000_000, 0)
	for i := range perHour {
		if d := a.take("203.0.113.7", now); d != 0 {
			t.Fatalf("attempt %d refused after %v", i+1, d)
		}
	}
	if a.take("203.0.113.7", now) == 0 {
		t.Fatal("the budget was not spent")
	}
	// Five times the table's size in fresh addresses (IPv6 /64s), each
	// spending one attempt, over five seconds: far less than the 36 s the
	// exhausted address needs to earn its next attempt.
	for i := range 5 * table {
		now = now.Add(time.Millisecond)
		if d := a.take(fmt.Sprintf("2001:db8:%x::/64", i), now); d != 0 {
			t.Fatalf("fresh address %d refused", i)
		}
		if len(a.buckets) > table || a.byFull.Len() != len(a.buckets) {
			t.Fatalf("table holds %d buckets (heap %d), max %d", len(a.buckets), a.byFull.Len(), table)
		}
	}
	if d := a.take("203.0.113.7", now); d == 0 {
		t.Fatal("the flood of fresh addresses reset the exhausted address's budget")
	}
	// A refund re-files the bucket: an address made whole again is the
	// first to go.
	a.refund("2001:db8:1387::/64", now)
	if d := a.take("198.51.100.1", now); d != 0 {
		t.Fatalf("a new address was refused: %v", d)
	}
	if _, ok := a.buckets["2001:db8:1387::/64"]; ok {
		t.Fatal("the address that was full again was kept over spent ones")
	}
	if _, ok := a.buckets["203.0.113.7"]; !ok {
		t.Fatal("the exhausted address was evicted")
	}
}

// Addresses that have fully recovered are forgotten first and cost nothing:
// once the hour has passed, the exhausted address is whole again anyway.
func TestAddressThrottleRecoversAfterTheWindow(t *testing.T) {
	t.Parallel()
	a := newAddressThrottle(10, 3)
	now := time.Unix(1_700_000_000, 0)
	for range 10 {
		a.take("a", now)
	}
	if a.take("a", now) == 0 {
		t.Fatal("budget not spent")
	}
	now = now.Add(time.Hour)
	for _, ip := range []string{"b", "c", "d", "e"} {
		if d := a.take(ip, now); d != 0 {
			t.Fatalf("%s refused: %v", ip, d)
		}
	}
	if len(a.buckets) != 3 {
		t.Fatalf("table holds %d, want 3", len(a.buckets))
	}
	if d := a.take("a", now); d != 0 {
		t.Fatalf("a full hour later the address is still refused for %v", d)
	}
}
