package systemtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// consumeLoad issues oauth2_code tokens and has two consumers race for
// each one on two different nodes, round-robin over its targets. It records
// every acknowledged issue and every consume's answer.
type consumeLoad struct {
	stop     chan struct{}
	haltOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	targets  []*node
	issued   map[string]string // acknowledged issues: token -> id
	wins     map[string]int    // token -> consumes answered 200
	answered map[string]int    // token -> consumes answered 200 or 410 token_reused
	consumed int               // tokens with a successful consume
	nFailed  int               // failed requests to nodes still targeted
	failed   []string          // the first few of them
	dropped  int               // failed requests to a node taken out of the load
}

func startConsumeLoad(t *testing.T, targets []*node, workers int) *consumeLoad {
	l := &consumeLoad{stop: make(chan struct{}), targets: targets,
		issued: map[string]string{}, wins: map[string]int{}, answered: map[string]int{}}
	for w := range workers {
		l.wg.Add(1)
		go l.work(w)
	}
	t.Cleanup(l.halt)
	return l
}

// halt stops the load and waits for the requests in flight.
func (l *consumeLoad) halt() {
	l.haltOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// route sends the load only to targets from now on; failures of requests
// to nodes left out count as dropped, not failed.
func (l *consumeLoad) route(targets []*node) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.targets = targets
}

func (l *consumeLoad) consumedTokens() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.consumed
}

func (l *consumeLoad) failure(n *node, what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.targets, n) {
		l.dropped++
		return
	}
	l.nFailed++
	if len(l.failed) < 5 {
		l.failed = append(l.failed, fmt.Sprintf("%s on %s: %v", what, n.ID, err))
	}
}

func (l *consumeLoad) work(w int) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		l.mu.Lock()
		ns := l.targets
		l.mu.Unlock()
		a := ns[(w+i)%len(ns)]
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		iss, err := a.c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: fmt.Sprintf("load:%d", w), ClientID: "app1"})
		cancel()
		if err != nil {
			l.failure(a, "issue", err)
			select { // no hot loop against a node that fails at once
			case <-l.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		l.mu.Lock()
		l.issued[iss.Token] = iss.ID
		l.mu.Unlock()
		var race sync.WaitGroup
		for k := 1; k <= 2; k++ {
			b := ns[(w+i+k)%len(ns)] // two different nodes, as len(ns) >= 2
			race.Add(1)
			go func() {
				defer race.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := b.c.Consume(ctx, wire.ConsumeRequest{Token: iss.Token, Kind: "oauth2_code", ClientID: "app1"})
				cancel()
				switch {
				case err == nil:
					l.mu.Lock()
					l.wins[iss.Token]++
					l.answered[iss.Token]++
					if l.wins[iss.Token] == 1 {
						l.consumed++
					}
					l.mu.Unlock()
				case errors.Is(err, client.ErrTokenReused): // a code presented twice
					l.mu.Lock()
					l.answered[iss.Token]++
					l.mu.Unlock()
				default:
					l.failure(b, "consume", err)
				}
			}()
		}
		race.Wait()
	}
}

func (l *consumeLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d issues acknowledged, %d tokens consumed, %d failed requests %q, %d dropped with a node taken out",
		len(l.issued), l.consumed, l.nFailed, l.failed, l.dropped)
}

// check reads every acknowledged token by id on n (a ready leader): it is
// there, a consume answered 200 stuck, no token was consumed twice, and
// when both consumers got an answer exactly one of them got 200. Call it
// after halt.
func (l *consumeLoad) check(t *testing.T, n *node) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	l.mu.Lock()
	defer l.mu.Unlock()
	bad := 0
	report := func(format string, args ...any) {
		t.Helper()
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for tok, id := range l.issued {
		rec, err := n.c.Get(ctx, id)
		if err != nil {
			report("acknowledged issue of %s: want it on %s, got %v", id, n.ID, err)
			continue
		}
		wins, answered := l.wins[tok], l.answered[tok]
		switch {
		case wins > 1:
			report("token %s: want at most one successful consume, got %d", id, wins)
		case wins == 1 && rec.Status != "consumed":
			report("token %s: consume was acknowledged, want status consumed on %s, got %q", id, n.ID, rec.Status)
		case answered == 2 && wins == 0:
			report("token %s: both consumes were answered token_reused, want exactly one 200 (status %q)", id, rec.Status)
		case rec.Status != "active" && rec.Status != "consumed":
			report("token %s: want status active or consumed, got %q", id, rec.Status)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d acknowledged tokens are wrong on %s; load: %s", bad, len(l.issued), n.ID, l.summary())
	}
}
