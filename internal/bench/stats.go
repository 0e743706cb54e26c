package bench

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Samples collects latencies of one measurement.
type Samples struct {
	d []time.Duration
}

// Add records one latency.
func (s *Samples) Add(d time.Duration) { s.d = append(s.d, d) }

// Len is the number of samples.
func (s *Samples) Len() int { return len(s.d) }

// Merge appends another set of samples.
func (s *Samples) Merge(o *Samples) { s.d = append(s.d, o.d...) }

// Quantile returns the nearest-rank quantile q in [0,1].
func (s *Samples) Quantile(q float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	c := slices.Clone(s.d)
	slices.Sort(c)
	i := int(math.Ceil(q*float64(len(c)))) - 1
	return c[max(0, min(i, len(c)-1))]
}

// Sum is the total of all samples.
func (s *Samples) Sum() time.Duration {
	var t time.Duration
	for _, d := range s.d {
		t += d
	}
	return t
}

// allocMeter measures process-wide allocations between start and stop;
// blocks of ops are metered so interleaved settings get separate counts.
type allocMeter struct {
	mallocs, bytes uint64
	ops            int
	m0             runtime.MemStats
}

func (a *allocMeter) start() { runtime.ReadMemStats(&a.m0) }

func (a *allocMeter) stop(ops int) {
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	a.mallocs += m1.Mallocs - a.m0.Mallocs
	a.bytes += m1.TotalAlloc - a.m0.TotalAlloc
	a.ops += ops
}

func (a *allocMeter) perOp() (allocs, bytes float64) {
	if a.ops == 0 {
		return -1, -1
	}
	return float64(a.mallocs) / float64(a.ops), float64(a.bytes) / float64(a.ops)
}

// Row is one line of the result table.
type Row struct {
	Name    string
	Fsync   string // "on", "off" or ""
	N       int
	Total   time.Duration // wall time of the measurement
	Lat     *Samples      // nil: no latency distribution
	Rate    float64       // ops (or events) per second
	Unit    string        // of Rate
	Allocs  float64       // per op, -1 = not measured
	Bytes   float64       // per op, -1 = not measured
	PeakRSS int64         // KiB, VmHWM during the scenario; 0 = unknown
	Note    string
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func fmtNum(f float64) string {
	switch {
	case f < 0:
		return "—"
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.2f", f)
	}
}

func fmtBytes(b float64) string {
	switch {
	case b < 0:
		return "—"
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}

// WriteTable renders rows as a markdown table.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| measurement | fsync | n | wall | p50 | p95 | p99 | throughput | allocs/op | bytes/op | peak RSS | note |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range rows {
		p50, p95, p99 := "—", "—", "—"
		if r.Lat != nil && r.Lat.Len() > 0 {
			p50, p95, p99 = fmtDur(r.Lat.Quantile(.50)), fmtDur(r.Lat.Quantile(.95)), fmtDur(r.Lat.Quantile(.99))
		}
		rate := "—"
		if r.Rate > 0 {
			rate = fmtNum(r.Rate) + " " + r.Unit
		}
		rss := "—"
		if r.PeakRSS > 0 {
			rss = fmt.Sprintf("%d MiB", r.PeakRSS/1024)
		}
		fsync := r.Fsync
		if fsync == "" {
			fsync = "—"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Name, fsync, r.N, fmtDur(r.Total), p50, p95, p99, rate, fmtNum(r.Allocs), fmtBytes(r.Bytes), rss,
			strings.ReplaceAll(r.Note, "|", "/"))
	}
}

func syncName(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
