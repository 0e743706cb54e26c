package explain

import (
	"errors"
	"io"
	"sync"
)

// Cache keeps parsed documents by the digest of their blob: blobs are
// content-addressed, so an entry never goes stale, and the pages and
// routes that show an explanation (and the gates that read one) parse each
// document once, not on every view. It holds documents of at most
// cacheBytes in all (the size of their JSON), dropping everything when a
// new one would not fit.
type Cache struct {
	mu    sync.Mutex
	docs  map[string]cached
	bytes int
}

type cached struct {
	doc  Explanation
	err  *Error
	size int
}

const cacheBytes = 32 << 20

// Read returns the document in the blob digest names, parsing it (from
// open) only when the cache does not hold it. An invalid document's
// *Error is cached too; a failure to read is not.
func (c *Cache) Read(digest string, open func() (io.ReadCloser, error)) (Explanation, error) {
	c.mu.Lock()
	e, ok := c.docs[digest]
	c.mu.Unlock()
	if ok {
		if e.err != nil {
			return Explanation{}, e.err
		}
		return e.doc, nil
	}
	r, err := open()
	if err != nil {
		return Explanation{}, err
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return Explanation{}, err
	}
	doc, err := Parse(data)
	var invalid *Error
	if err != nil && !errors.As(err, &invalid) {
		return doc, err
	}
	c.mu.Lock()
	if c.docs == nil || c.bytes+len(data) > cacheBytes {
		c.docs, c.bytes = map[string]cached{}, 0
	}
	c.docs[digest] = cached{doc: doc, err: invalid, size: len(data)}
	c.bytes += len(data)
	c.mu.Unlock()
	return doc, err
}
