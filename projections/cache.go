package projections

import (
	"sync"
	"time"
)

// InvalidateChannel is the Postgres channel on which the users and sessions
// projections announce changed rows ("user:<id>", "session:<id>") in the
// transaction that changes them, before the checkpoint's own notification:
// a Waiter has dropped the cached rows by the time it sees the checkpoint.
const InvalidateChannel = "maestro_invalidate"

// The read cache bounds: how many rows, and how long one is trusted while
// notifications flow (a bound on staleness should one ever be missed).
const (
	cacheMax = 10_000
	cacheTTL = 30 * time.Second
)

// readCache holds rows the authenticator reads on every request (a
// session's principal, a user), so a request costs no query. It is only
// used while its Waiter listens: the projections' notifications drop a row
// as soon as it changes, and losing the listening connection empties it.
type readCache[V any] struct {
	mu      sync.Mutex
	gen     uint64 // bumped by every invalidation, so a racing fill is not kept
	entries map[string]cached[V]
}

type cached[V any] struct {
	v    V
	user string // the user the row belongs to ("user:<id>" drops it)
	at   time.Time
}

func newReadCache[V any]() *readCache[V] { return &readCache[V]{entries: map[string]cached[V]{}} }

// get returns the cached row and the generation a fill must present.
func (c *readCache[V]) get(key string) (V, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok && time.Since(e.at) > cacheTTL {
		delete(c.entries, key)
		ok = false
	}
	return e.v, ok, c.gen
}

// put caches v unless an invalidation happened since gen was read.
func (c *readCache[V]) put(key, user string, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.entries) >= cacheMax {
		clear(c.entries)
	}
	c.entries[key] = cached[V]{v: v, user: user, at: time.Now()}
}

// invalidate drops what a notification names: one session's row, or
// every row of one user.
func (c *readCache[V]) invalidate(kind, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	switch kind {
	case "session":
		delete(c.entries, id)
	case "user":
		for k, e := range c.entries {
			if e.user == id {
				delete(c.entries, k)
			}
		}
	default: // unknown: be safe
		clear(c.entries)
	}
}

func (c *readCache[V]) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}
