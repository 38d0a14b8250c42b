package nonce

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/tokenstore/tokenstore/internal/memcachedtest"
)

// TestPipelineAnswersInOrder: many adds in flight at once on few
// connections, half of them of keys memcached already holds, each get
// their own answer.
func TestPipelineAnswersInOrder(t *testing.T) {
	mc := memcachedtest.Start(t)
	m := newMemcached(t, MemcachedConfig{Conns: 2}, mc)
	for i := range 500 {
		if fresh, err := m.Add(fmt.Sprint("held-", i), time.Minute); err != nil || !fresh {
			t.Fatalf("add held-%d: fresh %v, %v", i, fresh, err)
		}
	}
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < 1000; i += 64 {
				key := fmt.Sprint("new-", i)
				if i%2 == 0 {
					key = fmt.Sprint("held-", i/2)
				}
				fresh, err := m.Add(key, time.Minute)
				if err != nil || fresh != (i%2 == 1) {
					t.Errorf("add %s: fresh %v, %v; want fresh %v", key, fresh, err, i%2 == 1)
				}
			}
		}()
	}
	wg.Wait()
}

// scripted is a fake memcached that reads adds and answers each with the
// next of its lines, and hangs up after the last.
type scripted struct {
	ln    net.Listener
	mu    sync.Mutex
	lines []string
	dials int
}

func startScripted(t *testing.T, lines ...string) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln, lines: lines}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.dials++
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *scripted) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		cmd, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(cmd, "add ") {
			return
		}
		s.mu.Lock()
		if len(s.lines) == 0 {
			s.mu.Unlock()
			return
		}
		line := s.lines[0]
		s.lines = s.lines[1:]
		last := len(s.lines) == 0
		s.mu.Unlock()
		if _, err := c.Write([]byte(line)); err != nil || last {
			return
		}
	}
}

func (s *scripted) dialled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials
}

// TestPipelineOddAnswers: a server's error is that add's failure and the
// connection stays; a line that answers no add closes the connection,
// and the next add dials again. Nothing panics.
func TestPipelineOddAnswers(t *testing.T) {
	s := startScripted(t, "STORED\r\n", "NOT_STORED\r\n", "SERVER_ERROR out of memory\r\n", "STORED\r\n",
		"VALUE x 0 1\r\n", "NOT_STORED\r\n", "STORED")
	p := newPipeline(s.ln.Addr(), 1, 2*time.Second)
	for i, want := range []string{"", memcache.ErrNotStored.Error(), "SERVER_ERROR", "", "VALUE", memcache.ErrNotStored.Error()} {
		_, err := p.add(fmt.Sprint("k", i), 60)
		if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Fatalf("add %d: got %v, want %q", i, err, want)
		}
	}
	if d := s.dialled(); d != 2 {
		t.Errorf("dialled %d times; want 2 (again after the line that answers no add)", d)
	}
	// "STORED" without its line end, then the server hangs up.
	if dropped, err := p.add("cut", 60); err == nil || !connError(err) || !dropped {
		t.Fatalf("answer cut short: want a connection error that closes the connections, got %v (closed: %v)", err, dropped)
	}
	if _, err := p.add("bad key", 60); !errors.Is(err, memcache.ErrMalformedKey) {
		t.Fatalf("a key with a space: want ErrMalformedKey, got %v", err)
	}
}

// TestPipelineSilentServerTimesOut: adds to a server that reads but never
// answers fail with a timeout, which is no connection error.
func TestPipelineSilentServerTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	p := newPipeline(ln.Addr(), 2, 200*time.Millisecond)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.add(fmt.Sprint("k", i), 60)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || connError(err) {
				t.Errorf("add to a silent server: want a timeout, got %v", err)
			}
		}()
	}
	wg.Wait()
}

// TestPipelineConnErrorSparesNewerConns: a connection error closes the
// connections dialled up to the one that failed, not one dialled since,
// whose adds in flight have nothing to do with it.
func TestPipelineConnErrorSparesNewerConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
			go func() {
				br := bufio.NewReader(c)
				for {
					if _, err := br.ReadString('\n'); err != nil {
						return
					}
					if _, err := br.ReadString('\n'); err != nil {
						return
					}
					if _, err := c.Write([]byte("STORED\r\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	p := newPipeline(ln.Addr(), 2, 2*time.Second)
	add := func(key string) (bool, error) { return p.add(key, 60) } // slots in turn: 1, 0, 1, 0, ...
	for _, k := range []string{"a", "b"} {
		if _, err := add(k); err != nil {
			t.Fatalf("add %s: %v", k, err)
		}
	}
	older, newer := <-accepted, <-accepted
	defer newer.Close()
	older.Close() // the server drops the first connection
	if dropped, err := add("c"); err == nil || !dropped {
		t.Fatalf("add on the dropped connection: want a connection error that closes connections, got %v (closed: %v)", err, dropped)
	}
	if _, err := add("d"); err != nil {
		t.Fatalf("add on the newer connection: %v", err)
	}
	s := p.slots[0]
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil || c.seq != 2 {
		t.Fatal("the newer connection was closed with the older one")
	}
	if _, err := add("e"); err != nil {
		t.Fatalf("add after the error: %v", err)
	}
	(<-accepted).Close() // the slot of the dropped connection dialled again
}
