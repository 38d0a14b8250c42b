package nonce

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/memcachedtest"
)

// TestPipelineAnswersReachTheirAdds sends many adds at once, each key from
// two goroutines, through the pipelines to a real memcached: every key is
// fresh exactly once, so no answer reached another key's add.
func TestPipelineAnswersReachTheirAdds(t *testing.T) {
	mc := memcachedtest.Start(t)
	m := newMemcached(t, MemcachedConfig{}, mc)
	defer m.Close()
	const keys, workers = 2000, 32
	var fresh [keys]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Workers w and w+workers/2 cover the same keys, in
			// opposite orders.
			half := w % (workers / 2)
			for j := range keys / (workers / 2) {
				i := half*(keys/(workers/2)) + j
				if w >= workers/2 {
					i = half*(keys/(workers/2)) + keys/(workers/2) - 1 - j
				}
				ok, err := m.Add(fmt.Sprintf("pipe:%d", i), time.Minute)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					fresh[i].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range fresh {
		if n := fresh[i].Load(); n != 1 {
			t.Fatalf("key %d fresh %d times; want exactly once", i, n)
		}
	}
}

// fakeMemcached answers each add, on whichever connection, with the next
// of its lines, and closes the connection once it has none left.
func fakeMemcached(t *testing.T, lines ...string) (addr string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int32)
	var next atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					cmd, err := r.ReadString('\n')
					if err != nil || !strings.HasPrefix(cmd, "add ") {
						return
					}
					if _, err := r.ReadString('\n'); err != nil { // the value
						return
					}
					i := int(next.Add(1)) - 1
					if i >= len(lines) {
						return
					}
					if _, err := c.Write([]byte(lines[i])); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), conns
}

func TestPipelineServerErrorFailsOneAdd(t *testing.T) {
	addr, conns := fakeMemcached(t, "STORED\r\n", "SERVER_ERROR out of memory storing object\r\n", "NOT_STORED\r\n")
	p := newPipeline(addr, 2*time.Second, nil)
	defer p.close()
	for i, want := range []string{"stored", "error", "not stored"} {
		p.next.Store(^uint32(0)) // the add takes slot 0
		stored, err := p.add(fmt.Sprint("k", i), 60)
		got := map[bool]string{true: "stored", false: "not stored"}[stored]
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Fatalf("add %d: got %s (%v), want %s", i, got, err, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections; a SERVER_ERROR must leave the connection in use", n)
	}
}

func TestPipelineOutOfProtocolAnswerReplacesTheConnection(t *testing.T) {
	addr, conns := fakeMemcached(t, "EXISTS?\r\n", "STORED\r\n")
	var broken atomic.Int32
	p := newPipeline(addr, 2*time.Second, func() { broken.Add(1) })
	defer p.close()
	p.next.Store(^uint32(0))
	if _, err := p.add("k1", 60); err == nil {
		t.Fatal("an answer out of protocol: want an error")
	}
	p.next.Store(^uint32(0))
	stored, err := p.add("k2", 60)
	if err != nil || !stored {
		t.Fatalf("the next add: got stored=%v err=%v, want it stored on a new connection", stored, err)
	}
	if conns.Load() != 2 || broken.Load() != 1 {
		t.Fatalf("connections %d, failed %d; want 2 and 1", conns.Load(), broken.Load())
	}
}

func TestPipelineRefusesIllegalKeys(t *testing.T) {
	p := newPipeline("127.0.0.1:1", time.Second, nil)
	defer p.close()
	for _, k := range []string{"", "a b", "a\r\nflush_all", strings.Repeat("k", maxKeyLen+1)} {
		if _, err := p.add(k, 60); err == nil || errors.Is(err, net.ErrClosed) {
			t.Errorf("key %q: want it refused, got %v", k, err)
		}
	}
}

// unansweredAddr is the address of a listener whose queue of connections
// is full, so that a dial to it hangs until its timeout, as to a server
// that drops SYNs.
func unansweredAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue: dials are answered until it is full, then hang.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

// TestPipelineDialsDoNotQueue sends concurrent adds to a server that does
// not answer dials: each add fails within about one timeout, where dials
// made one after the other under one lock took one timeout each.
func TestPipelineDialsDoNotQueue(t *testing.T) {
	addr := unansweredAddr(t)
	const timeout, adds = 300 * time.Millisecond, 20
	p := newPipeline(addr, timeout, nil)
	defer p.close()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range adds {
		wg.Go(func() {
			if _, err := p.add(fmt.Sprint("k", i), 60); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != adds {
		t.Fatalf("%d of %d adds failed; want all, the server answers none", failed.Load(), adds)
	}
	// Bounded, not timed: two slots, one dial each, and the adds waiting
	// for a dial fail with it, in about one timeout; dials one after the
	// other would take adds timeouts (6 s).
	if d := time.Since(start); d > 10*timeout {
		t.Fatalf("%d adds to a server that does not answer took %s; want about one timeout (%s)", adds, d, timeout)
	}
}
