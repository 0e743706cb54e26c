package artifacts

import (
	"context"
	"crypto/sha256"
	"flag"
	"io"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/internal/memstat"
)

var largeMiB = flag.Int64("artifacts.large-mib", 256, "size in MiB of the large-file test's artifact (1024 for the issue's 1 GiB figures)")

// TestLargeFileBoundedMemory streams a large artifact (256 MiB by default,
// generated on the fly and never held in memory) through Put and back through
// Open, and checks that the heap never grew by anything near its size.
//
// FS only: gofakes3's in-memory backend keeps every object (and every
// multipart part) in this process's heap, so on S3 the figure would measure
// the fake server, not the store. The S3 upload path holds one 16 MiB part
// plus the 5 MiB read-ahead by construction (see s3PartSize).
func TestLargeFileBoundedMemory(t *testing.T) {
	const limit = 64 << 20
	size := *largeMiB << 20
	s, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	runtime.GC()
	debug.FreeOSMemory()
	memstat.ResetPeakRSS()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	baseline := m.HeapInuse
	peak := memstat.StartHeapPeak()

	want := sha256.New()
	start := time.Now()
	d, n, err := s.Put(ctx, io.TeeReader(pseudoRandom([32]byte{42}, size), want), -1, "")
	up := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || d != digestOf(want) {
		t.Fatalf("Put = %s, %d bytes; want %s, %d", d, n, digestOf(want), size)
	}

	start = time.Now()
	b, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	read, err := io.CopyBuffer(writerOnly{got}, struct{ io.Reader }{b}, make([]byte, copyBufSize))
	b.Close()
	down := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	high := peak.Stop()
	if read != size || digestOf(got) != d {
		t.Fatalf("read back %d bytes with digest %s, want %d with %s", read, digestOf(got), size, d)
	}

	growth := int64(high) - int64(baseline)
	mib := float64(size) / (1 << 20)
	t.Logf("%d MiB: upload %.0f MiB/s (incl. generating and fsync), download %.0f MiB/s (incl. SHA-256); heap peak +%.1f MiB; process VmHWM %.1f MiB",
		*largeMiB, mib/up.Seconds(), mib/down.Seconds(), float64(growth)/(1<<20), float64(memstat.PeakRSS())/1024)
	if growth > limit {
		t.Errorf("heap grew by %d MiB while streaming %d MiB, want under %d MiB", growth>>20, size>>20, limit>>20)
	}
}
