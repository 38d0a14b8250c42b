package nonce

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A pipeline carries the adds to one memcached server over a few
// connections, many adds at a time. A caller appends its command to a
// connection's buffer; whoever finds no write under way writes everything
// buffered in one call, and one reader per connection reads the answers,
// which memcached sends in the order of the commands, and hands each to
// its caller. Under load one write and one read carry tens of adds, where
// a connection per add (gomemcache's pool) paid both system calls, a
// deadline and memcached's own wake-up for each.
//
// A connection that fails (refused, reset, closed, no answer within the
// timeout, an answer out of protocol) fails every add it carries and is
// replaced by the next add that picks its slot.
const (
	pipeConns = 2
	// maxPipeWaiting bounds the adds a connection carries: past it an add
	// fails at once rather than queue behind a server that has stopped
	// answering but not yet timed out.
	maxPipeWaiting = 4096
	// maxKeyLen is memcached's limit on a key.
	maxKeyLen = 250
)

// errPipeFull is the answer to an add past maxPipeWaiting.
var errPipeFull = errors.New("memcached: too many adds waiting for answers")

type pipeline struct {
	addr    string
	timeout time.Duration
	next    atomic.Uint32 // round robin over the slots

	mu     sync.Mutex
	slots  [pipeConns]slot
	closed bool
	// broken is called once for each connection that fails.
	broken func()
}

// slot is one connection of a pipeline and its dialing. A dial happens
// outside the pipeline's lock; the adds that want the slot meanwhile wait
// for it and share its outcome: a dial that fails fails them too, rather
// than each dialing again in turn. A server that does not answer costs
// an add two dial timeouts at most, never a queue of dials, and the first
// add after a failed dial dials afresh (a breaker's probe, say).
type slot struct {
	conn    *pipeConn
	dialing *dial // the dial under way; nil if none
}

// dial is one dial of a slot; done is closed when it ends, err its error.
type dial struct {
	done chan struct{}
	err  error
}

func newPipeline(addr string, timeout time.Duration, broken func()) *pipeline {
	return &pipeline{addr: addr, timeout: timeout, broken: broken}
}

// add stores key for exp seconds unless it is present, and reports
// whether it was absent.
func (p *pipeline) add(key string, exp int32) (bool, error) {
	if !legalKey(key) {
		return false, fmt.Errorf("memcached: malformed key %q", key)
	}
	c, err := p.conn(int(p.next.Add(1)) % pipeConns)
	if err != nil {
		return false, err
	}
	call := callPool.Get().(*addCall)
	defer callPool.Put(call)
	if err := c.send(key, exp, call); err != nil {
		return false, err
	}
	<-call.done
	return call.stored, call.err
}

// conn returns the live connection of slot i, dialing one if it has none.
func (p *pipeline) conn(i int) (*pipeConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.slots[i]
	if d := s.dialing; d != nil {
		p.mu.Unlock()
		<-d.done
		p.mu.Lock()
		if d.err != nil {
			return nil, d.err
		}
	}
	switch {
	case p.closed:
		return nil, net.ErrClosed
	case s.conn != nil && s.conn.alive():
		return s.conn, nil
	case s.dialing != nil:
		// Another dial began after the one waited for (its connection
		// already failed): this add does not wait for a second one.
		return nil, errors.New("memcached: connection failed while it was dialed")
	}
	d := &dial{done: make(chan struct{})}
	s.dialing = d
	p.mu.Unlock()
	nc, err := net.DialTimeout("tcp", p.addr, p.timeout)
	p.mu.Lock()
	s.dialing, d.err = nil, err
	close(d.done)
	if err != nil {
		return nil, err
	}
	if p.closed {
		nc.Close()
		return nil, net.ErrClosed
	}
	s.conn = &pipeConn{nc: nc, timeout: p.timeout, broken: p.broken}
	go s.conn.read()
	return s.conn, nil
}

// close closes every connection; adds under way fail.
func (p *pipeline) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, s := range p.slots {
		if s.conn != nil {
			s.conn.fail(net.ErrClosed)
		}
	}
}

// addCall is one add waiting for its answer.
type addCall struct {
	done   chan struct{}
	stored bool
	err    error
}

var callPool = sync.Pool{New: func() any { return &addCall{done: make(chan struct{}, 1)} }}

func (c *addCall) finish(stored bool, err error) {
	c.stored, c.err = stored, err
	c.done <- struct{}{}
}

// pipeConn is one connection of a pipeline.
type pipeConn struct {
	nc      net.Conn
	timeout time.Duration
	broken  func()

	mu      sync.Mutex
	buf     []byte // commands not yet written
	spare   []byte // the buffer of the last write, for reuse
	writing bool
	// waiting are the adds sent or buffered, in the order of their
	// commands: the order of the answers.
	waiting []*addCall
	armed   time.Time // when the read deadline was last pushed; zero when unset
	err     error     // why the connection failed; nil while it works
}

func (c *pipeConn) alive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil
}

// send queues call's command and, unless a write is under way (which
// will take it along), writes what is queued until nothing is.
func (c *pipeConn) send(key string, exp int32, call *addCall) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if len(c.waiting) >= maxPipeWaiting {
		c.mu.Unlock()
		return errPipeFull
	}
	c.buf = append(c.buf, "add "...)
	c.buf = append(c.buf, key...)
	c.buf = append(c.buf, " 0 "...)
	c.buf = strconv.AppendInt(c.buf, int64(exp), 10)
	c.buf = append(c.buf, " 1\r\n1\r\n"...)
	c.waiting = append(c.waiting, call)
	if c.writing {
		c.mu.Unlock()
		return nil
	}
	c.writing = true
	// Let the goroutines that are ready to run first: under load some of
	// them are adds, which join this write; alone, an add loses nothing.
	c.mu.Unlock()
	runtime.Gosched()
	c.mu.Lock()
	for len(c.buf) > 0 && c.err == nil {
		b := c.buf
		c.buf, c.spare = c.spare[:0], nil
		now := time.Now()
		if c.armed.IsZero() {
			// The oldest add in flight is in this write: answers are due
			// within the timeout from now.
			c.nc.SetReadDeadline(now.Add(c.timeout))
			c.armed = now
		}
		c.mu.Unlock()
		c.nc.SetWriteDeadline(now.Add(c.timeout))
		_, err := c.nc.Write(b)
		c.mu.Lock()
		c.spare = b
		if err != nil {
			c.failLocked(err)
		}
	}
	c.writing = false
	c.mu.Unlock()
	return nil // a failed write has failed call too
}

// read hands each answer to its add until the connection fails.
func (c *pipeConn) read() {
	r := bufio.NewReaderSize(c.nc, 4096)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			c.fail(err)
			return
		}
		var stored bool
		var answerErr error
		switch {
		case bytes.Equal(line, []byte("STORED\r\n")):
			stored = true
		case bytes.Equal(line, []byte("NOT_STORED\r\n")):
		case bytes.HasPrefix(line, []byte("SERVER_ERROR ")):
			// The server refused this add (out of memory, say) and
			// goes on answering the others.
			answerErr = fmt.Errorf("memcached: %s", bytes.TrimSpace(line))
		default:
			// ERROR, CLIENT_ERROR or anything else: the two ends no
			// longer agree on where a command starts.
			c.fail(fmt.Errorf("memcached: unexpected answer %q", bytes.TrimSpace(line)))
			return
		}
		c.mu.Lock()
		if len(c.waiting) == 0 {
			c.failLocked(fmt.Errorf("memcached: answer %q to no command", bytes.TrimSpace(line)))
			c.mu.Unlock()
			return
		}
		call := c.waiting[0]
		c.waiting[0] = nil
		c.waiting = c.waiting[1:]
		if len(c.waiting) == 0 {
			c.waiting = nil // let the array go; append makes a new one
			c.nc.SetReadDeadline(time.Time{})
			c.armed = time.Time{}
		} else if now := time.Now(); now.Sub(c.armed) > c.timeout/4 {
			// Answers are coming: the ones still waiting get the
			// timeout from about now. A server that stops answering
			// fails them within 1¼ of it.
			c.nc.SetReadDeadline(now.Add(c.timeout))
			c.armed = now
		}
		c.mu.Unlock()
		call.finish(stored, answerErr)
	}
}

func (c *pipeConn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(err)
}

// failLocked closes the connection and fails every add it carries.
func (c *pipeConn) failLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	c.nc.Close()
	for _, call := range c.waiting {
		call.finish(false, err)
	}
	c.waiting, c.buf = nil, nil
	if c.broken != nil && !errors.Is(err, net.ErrClosed) {
		c.broken()
	}
}

// legalKey reports whether memcached's text protocol can carry key: at
// most 250 bytes, no spaces or control characters.
func legalKey(key string) bool {
	if key == "" || len(key) > maxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] == 0x7f {
			return false
		}
	}
	return true
}
