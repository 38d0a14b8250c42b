package load

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1µs to 10 minutes, with
// three significant digits.
const (
	histLowest  = 1
	histHighest = int64(10 * time.Minute / time.Microsecond)
	histDigits  = 3
)

// hist is an HDR latency histogram safe for concurrent recording.
type hist struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newHist() *hist {
	return &hist{h: hdrhistogram.New(histLowest, histHighest, histDigits)}
}

// record adds one latency; values beyond the range are clamped to it.
func (h *hist) record(d time.Duration) {
	us := max(histLowest, min(int64(d/time.Microsecond), histHighest))
	h.mu.Lock()
	h.h.RecordValue(us)
	h.mu.Unlock()
}

// snapshot returns an independent copy.
func (h *hist) snapshot() *hdrhistogram.Histogram {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h.Clone()
}

// at is the latency at percentile p of h.
func at(h *hdrhistogram.Histogram, p float64) time.Duration {
	return time.Duration(h.ValueAtPercentile(p)) * time.Microsecond
}

// timeline counts completions per second since its start.
type timeline struct {
	mu     sync.Mutex
	start  time.Time
	counts []int64
}

func newTimeline(start time.Time) *timeline { return &timeline{start: start} }

// add counts one completion at t.
func (tl *timeline) add(t time.Time) {
	s := max(0, int(t.Sub(tl.start)/time.Second))
	tl.mu.Lock()
	for len(tl.counts) <= s {
		tl.counts = append(tl.counts, 0)
	}
	tl.counts[s]++
	tl.mu.Unlock()
}

// perSecond returns the counts of the whole seconds up to elapsed.
func (tl *timeline) perSecond(elapsed time.Duration) []int64 {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n := min(len(tl.counts), max(1, int(elapsed/time.Second)))
	return append([]int64(nil), tl.counts[:n]...)
}
