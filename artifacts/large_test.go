package artifacts

import (
	"bufio"
	"context"
	"crypto/sha256"
	"flag"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var largeMiB = flag.Int64("artifacts.large-mib", 256, "size in MiB of the large-file test's artifact (1024 for the issue's 1 GiB figures)")

// heapPeak samples HeapInuse until stopped, because an upload that buffered
// the whole body would show up between two readings of the end state.
type heapPeak struct {
	peak atomic.Uint64
	stop chan struct{}
	done sync.WaitGroup
}

func startHeapPeak() *heapPeak {
	h := &heapPeak{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > h.peak.Load() {
				h.peak.Store(m.HeapInuse)
			}
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) Stop() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak.Load()
}

// resetHWM sets the process's peak resident set back to its current one
// (Linux clear_refs 5), so the figure logged is this test's, not the suite's.
func resetHWM() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// vmHWM is the process's peak resident set in KiB (Linux), 0 if unknown.
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib
		}
	}
	return 0
}

// hashingReader hashes what the generator hands to Put: the expected digest,
// computed on the producer's side of the stream.
type hashingReader struct {
	r io.Reader
	h io.Writer
}

func (r hashingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	return n, err
}

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
	resetHWM()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	baseline := m.HeapInuse
	peak := startHeapPeak()

	want := sha256.New()
	start := time.Now()
	d, n, err := s.Put(ctx, hashingReader{newPseudoRandom([32]byte{42}, size), want}, -1, "")
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
		*largeMiB, mib/up.Seconds(), mib/down.Seconds(), float64(growth)/(1<<20), float64(vmHWM())/1024)
	if growth > limit {
		t.Errorf("heap grew by %d MiB while streaming %d MiB, want under %d MiB", growth>>20, size>>20, limit>>20)
	}
}
