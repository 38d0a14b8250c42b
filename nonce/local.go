package nonce

import (
	"container/heap"
	"fmt"
	"sync"
	"time"
)

// Local is the in-process backend of the embedded default: the same add()
// and TTL semantics as memcached, for one node. Memory is bounded: expired
// keys are evicted as new ones arrive, and at Max live keys it refuses
// (fail closed) rather than forget a live nonce.
type Local struct {
	mu  sync.Mutex
	max int
	now func() time.Time
	exp map[string]int64 // key -> expiry, Unix ns
	q   expiryHeap       // the same keys, soonest expiry first
}

// NewLocal returns a backend for at most max live keys.
func NewLocal(max int) *Local {
	return &Local{max: max, now: time.Now, exp: map[string]int64{}}
}

// Add implements Backend.
func (l *Local) Add(key string, ttl time.Duration) (bool, error) {
	now := l.now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.q) > 0 && l.q[0].exp <= now {
		e := heap.Pop(&l.q).(entry)
		delete(l.exp, e.key)
	}
	if _, live := l.exp[key]; live {
		return false, nil
	}
	if len(l.exp) >= l.max {
		return false, fmt.Errorf("%w: local nonce store holds %d live nonces", ErrUnavailable, l.max)
	}
	e := entry{key: key, exp: now + int64(ttl)}
	l.exp[key] = e.exp
	heap.Push(&l.q, e)
	return true, nil
}

// Len returns the number of keys held (live, or expired and not yet
// evicted).
func (l *Local) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.exp)
}

type entry struct {
	key string
	exp int64
}

type expiryHeap []entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].exp < h[j].exp }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
