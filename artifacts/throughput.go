package artifacts

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// Throughput stores size bytes of generated pseudo-random data in s, reads
// them back, and deletes the blob, returning MiB/s each way. The data is made
// on the fly, so the caller's memory measures the store, not the input. The
// upload figure includes generating the data; the download one reads into
// io.Discard. For internal/bench.
func Throughput(ctx context.Context, s Store, size int64) (upMiBs, downMiBs float64, err error) {
	// A fresh seed makes the content unique, so the run can neither dedupe
	// against nor delete a real artifact.
	var seed [32]byte
	crand.Read(seed[:])

	start := time.Now()
	d, n, err := s.Put(ctx, pseudoRandom(seed, size), -1, "")
	if err != nil {
		return 0, 0, fmt.Errorf("artifacts: throughput upload: %w", err)
	}
	up := time.Since(start)
	defer func() {
		if derr := s.Delete(context.WithoutCancel(ctx), d); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if n != size {
		return 0, 0, fmt.Errorf("artifacts: throughput: stored %d bytes of %d", n, size)
	}

	start = time.Now()
	b, err := s.Open(ctx, d)
	if err != nil {
		return 0, 0, fmt.Errorf("artifacts: throughput download: %w", err)
	}
	got, err := io.CopyBuffer(writerOnly{io.Discard}, struct{ io.Reader }{b}, make([]byte, copyBufSize))
	b.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("artifacts: throughput download: %w", err)
	}
	down := time.Since(start)
	if got != size {
		return 0, 0, fmt.Errorf("artifacts: throughput: read %d bytes of %d", got, size)
	}
	mib := float64(size) / (1 << 20)
	return mib / up.Seconds(), mib / down.Seconds(), nil
}

// pseudoRandom yields n bytes of a seeded ChaCha8 stream: incompressible,
// reproducible from the seed, and never held in memory.
func pseudoRandom(seed [32]byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(seed), n)
}
