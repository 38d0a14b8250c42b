package gooauth2

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// spentGrace is how long a TokenStore remembers a code or refresh token
// its Create consumed: go-oauth2 calls RemoveByRefresh for a refresh token
// right after Create, in the same request; the exchanges of a code that
// raced the one that consumed it reach their Create within moments.
const spentGrace = time.Minute

// recentTokens is a process-local set of token strings, by their SHA-256
// digest (never the string), each forgotten after a while, the oldest
// first when the set is full.
type recentTokens struct {
	mu    sync.Mutex
	max   int
	keep  time.Duration
	until map[[sha256.Size]byte]*list.Element
	queue *list.List // of recentToken, oldest first
}

type recentToken struct {
	digest [sha256.Size]byte
	until  time.Time
}

func newRecentTokens(max int, keep time.Duration) *recentTokens {
	if max <= 0 {
		max = DefaultPendingCodes
	}
	return &recentTokens{max: max, keep: keep, until: make(map[[sha256.Size]byte]*list.Element), queue: list.New()}
}

// add remembers token from now on.
func (r *recentTokens) add(token string, now time.Time) {
	d := sha256.Sum256([]byte(token))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(now)
	if e := r.until[d]; e != nil {
		r.queue.Remove(e)
	}
	for r.queue.Len() >= r.max {
		r.drop(r.queue.Front())
	}
	r.until[d] = r.queue.PushBack(recentToken{digest: d, until: now.Add(r.keep)})
}

// forget tells whether token was remembered and not yet forgotten, and
// forgets it.
func (r *recentTokens) forget(token string, now time.Time) bool {
	d := sha256.Sum256([]byte(token))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(now)
	e := r.until[d]
	if e == nil {
		return false
	}
	r.drop(e)
	return true
}

// expire forgets the tokens whose time is over: they were added in the
// order they expire.
func (r *recentTokens) expire(now time.Time) {
	for r.queue.Len() > 0 && !now.Before(r.queue.Front().Value.(recentToken).until) {
		r.drop(r.queue.Front())
	}
}

func (r *recentTokens) drop(e *list.Element) {
	delete(r.until, e.Value.(recentToken).digest)
	r.queue.Remove(e)
}

// len returns how many tokens the set holds (-1 if its map and queue
// disagree).
func (r *recentTokens) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.until) != r.queue.Len() {
		return -1
	}
	return len(r.until)
}
