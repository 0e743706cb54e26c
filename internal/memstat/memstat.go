// Package memstat measures memory for tests and benchmarks that must show a
// stream is not buffered: the Go heap's peak while something runs, and the
// process's peak resident set (Linux).
package memstat

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HeapPeak samples HeapInuse every 5 ms until stopped, so a transfer that
// buffered its body shows up even if it freed the buffer before the end.
type HeapPeak struct {
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

// StartHeapPeak starts sampling.
func StartHeapPeak() *HeapPeak {
	h := &HeapPeak{stop: make(chan struct{})}
	h.wg.Go(func() {
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
	})
	return h
}

// Stop ends sampling and returns the highest HeapInuse seen, in bytes.
func (h *HeapPeak) Stop() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak.Load()
}

// ResetPeakRSS sets VmHWM back to the current RSS (Linux: clear_refs 5), so
// the next PeakRSS is the caller's own peak. It reports whether that worked;
// if not, peaks are cumulative since process start.
func ResetPeakRSS() bool { return ResetPeakRSSOf("self") }

// ResetPeakRSSOf is ResetPeakRSS for process pid ("self" or a number).
func ResetPeakRSSOf(pid string) bool {
	return os.WriteFile("/proc/"+pid+"/clear_refs", []byte("5"), 0) == nil
}

// PeakRSS is VmHWM from /proc/self/status in KiB (0 if unavailable).
func PeakRSS() int64 { return Status("self", "VmHWM") }

// Status is one "kB" field of /proc/<pid>/status (VmRSS, VmHWM) in KiB, 0
// if unavailable.
func Status(pid, field string) int64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
