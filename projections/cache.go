package projections

import (
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// InvalidateChannel is the Postgres channel on which a batch announces the
// changed rows' tags ("user:<id>", "session:<id>", "project:<id>",
// "model:<id>") that do not fit in its checkpoint's notification, which
// carries the others (see Runner.queueAnnounce). Either way the Waiter drops
// the cached rows before it sees the checkpoint, so read-your-writes holds
// with the caches too.
const InvalidateChannel = "maestro_invalidate"

// Batch is what a projection queues for one transaction: the statements,
// and the cache tags of the rows they change.
type Batch struct {
	pgx.Batch
	tags []string
}

// Invalidate records that the rows tagged kind:id ("user", "session",
// "project", "model") change, for the read caches.
func (b *Batch) Invalidate(kind, id string) { b.tags = append(b.tags, kind+":"+id) }

// The read cache bounds: how many rows, and how long one is trusted while
// notifications flow (a bound on staleness should one ever be missed).
const (
	cacheMax = 10_000
	cacheTTL = 30 * time.Second
)

// readCache holds rows the API reads on nearly every request (a session's
// principal, a user, a project with the caller's role, a model), so such a
// request costs no query. It is only used while its Waiter listens: the
// projections' notifications drop a row as soon as it changes (by the tags
// it was stored with, e.g. "model:<id>"), and losing the listening
// connection empties it. Cached values are shared: callers must not modify
// them (maps included).
type readCache[V any] struct {
	mu      sync.Mutex
	gen     uint64 // bumped by every invalidation, so a racing fill is not kept
	entries map[string]cached[V]
	byTag   map[string]map[string]struct{} // tag → keys
}

type cached[V any] struct {
	v    V
	tags []string
	at   time.Time
}

func newReadCache[V any]() *readCache[V] {
	return &readCache[V]{entries: map[string]cached[V]{}, byTag: map[string]map[string]struct{}{}}
}

// get returns the cached row and the generation a fill must present.
func (c *readCache[V]) get(key string) (V, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok && time.Since(e.at) > cacheTTL {
		c.drop(key)
		ok = false
	}
	return e.v, ok, c.gen
}

// put caches v under key with its tags, unless an invalidation happened
// since gen was read.
func (c *readCache[V]) put(key string, v V, gen uint64, tags ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.entries) >= cacheMax {
		clear(c.entries)
		clear(c.byTag)
	}
	c.drop(key)
	c.entries[key] = cached[V]{v: v, tags: tags, at: time.Now()}
	for _, t := range tags {
		keys := c.byTag[t]
		if keys == nil {
			keys = map[string]struct{}{}
			c.byTag[t] = keys
		}
		keys[key] = struct{}{}
	}
}

// drop removes key and its tag index entries; c.mu is held.
func (c *readCache[V]) drop(key string) {
	e, ok := c.entries[key]
	if !ok {
		return
	}
	delete(c.entries, key)
	for _, t := range e.tags {
		if keys := c.byTag[t]; keys != nil {
			delete(keys, key)
			if len(keys) == 0 {
				delete(c.byTag, t)
			}
		}
	}
}

// invalidate drops every row stored with tag.
func (c *readCache[V]) invalidate(tag string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for key := range c.byTag[tag] {
		c.drop(key)
	}
}

func (c *readCache[V]) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	clear(c.byTag)
}
