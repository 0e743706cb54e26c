package artifacts

import (
	"context"
	"time"
)

// GCResult counts what one collection saw and did.
type GCResult struct {
	Scanned    int   // blobs walked
	Deleted    int   // blobs removed
	BytesFreed int64 // sum of the removed blobs' sizes
	Kept       int   // referenced, or younger than the grace period
}

// GC deletes blobs not in referenced and older than grace; returns counts and
// bytes freed.
//
// The grace period is what makes collection safe while the platform runs: a
// blob is stored before the event naming it is recorded, so a young
// unreferenced blob is most likely an upload whose event is on its way. Put
// refreshes an existing blob's time for the same reason. Each blob is judged
// and deleted as the walk reaches it, leaving only a tiny window in which a
// concurrent Put of the very same content can refresh a blob GC has already
// judged; referenced should therefore reflect events up to at least the start
// of the walk, and grace should be far longer than any upload-to-event delay.
func GC(ctx context.Context, s Store, referenced func(Digest) bool, grace time.Duration, now time.Time) (GCResult, error) {
	var res GCResult
	err := s.Walk(ctx, func(d Digest, size int64, modified time.Time) error {
		res.Scanned++
		if referenced(d) || now.Sub(modified) <= grace {
			res.Kept++
			return nil
		}
		if err := s.Delete(ctx, d); err != nil {
			return err
		}
		res.Deleted++
		res.BytesFreed += size
		return nil
	})
	// The store's errors already say what failed; res tells how far GC got.
	return res, err
}
