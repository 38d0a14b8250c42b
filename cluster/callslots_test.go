package cluster

import (
	"testing"
	"time"
)

// callSlots holds a take back while limit calls are in flight, lets it
// through once one ends or the limit grows, and gives up on closing.
func TestCallSlots(t *testing.T) {
	var s callSlots
	limit := 1
	lim := func() int { return limit }
	closing := make(chan struct{})
	if !s.take(lim, closing) {
		t.Fatal("the first take failed")
	}
	took := make(chan bool)
	go func() { took <- s.take(lim, closing) }()
	select {
	case <-took:
		t.Fatal("a second call went out past a limit of one")
	case <-time.After(20 * time.Millisecond):
	}
	s.put()
	if ok := <-took; !ok {
		t.Fatal("the waiting take failed after a call ended")
	}

	// A limit of two lets a second call go out beside the first.
	s.mu.Lock()
	limit = 2
	s.mu.Unlock()
	if !s.take(lim, closing) {
		t.Fatal("a take under a limit of two failed")
	}
	go func() { took <- s.take(lim, closing) }()
	close(closing)
	if ok := <-took; ok {
		t.Fatal("a take past the limit succeeded after closing")
	}
	s.put()
	s.put()
	if s.inflight != 0 {
		t.Fatalf("%d calls in flight after every one ended", s.inflight)
	}
}
