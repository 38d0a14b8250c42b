package nonce

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// A pipeline sends the adds for one memcached server over a few
// connections, pipelined. Whoever finds a connection's writer idle writes
// every add waiting for that connection in one write. Memcached answers in
// order, so the caller of the oldest add in flight reads the next answer,
// its own, and then passes the turn to the caller of the next one. One
// write and about one read carry a whole batch, where a connection per
// add in flight pays both for each add; an add alone costs what it did.
type pipeline struct {
	addr    net.Addr
	timeout time.Duration // dial, write, and an add's wait for its answer
	slots   []*pipeSlot
	next    atomic.Uint32
	dials   atomic.Uint64 // numbers the connections in the order dialled
}

func newPipeline(addr net.Addr, conns int, timeout time.Duration) *pipeline {
	p := &pipeline{addr: addr, timeout: timeout, slots: make([]*pipeSlot, conns)}
	for i := range p.slots {
		p.slots[i] = &pipeSlot{p: p}
	}
	return p
}

// addOp is one add, from its caller to memcached's answer.
type addOp struct {
	key  string
	exp  int32
	sent time.Time // when it was written
	next *addOp    // behind it in its slot's queue
	conn *pipeConn // where it was written
	// done carries errWriteTurn when the add heads the queue and the
	// writer leaves, errYourTurn once it is the oldest in flight, and its
	// answer when another learnt it: at most one of each.
	done chan error
}

// Turns passed between the callers of a slot's adds.
var (
	errWriteTurn = errors.New("write the queue")
	errYourTurn  = errors.New("read your answer")
)

var addOps = sync.Pool{New: func() any { return &addOp{done: make(chan error, 3)} }}

// add stores key for exp seconds unless memcached holds it: nil when
// stored, memcache.ErrNotStored when present, else why it could not ask.
// On a connection error it closes the connections that error condemns
// (closeAfter), and says so.
func (p *pipeline) add(key string, exp int32) (dropped bool, err error) {
	if !legalKey(key) {
		return false, memcache.ErrMalformedKey
	}
	op := addOps.Get().(*addOp)
	op.key, op.exp = key, exp
	slot := p.slots[p.next.Add(1)%uint32(len(p.slots))]
	slot.submit(op)
	err = <-op.done
	for err == errWriteTurn {
		slot.writeQueue()
		err = <-op.done
	}
	if err == errYourTurn {
		err = op.conn.readAnswer(op)
	}
	if connError(err) {
		p.closeAfter(op.conn, err)
		dropped = true
	}
	*op = addOp{done: op.done}
	addOps.Put(op)
	return dropped, err
}

// closeAfter ends, with why, every connection dialled no later than the
// one an add failed on (all of them when it failed to dial, at is nil):
// a connection error says the server went away, and took those with it.
// Their adds in flight fail; the next ones dial afresh. A connection
// dialled since is left alone.
func (p *pipeline) closeAfter(at *pipeConn, why error) {
	last := p.dials.Load()
	if at != nil {
		last = at.seq
	}
	for _, s := range p.slots {
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		if c != nil && c.seq <= last {
			c.fail(why)
		}
	}
}

// pipeSlot is one connection of a pipeline: the adds queued for it, and
// the live connection, dialled when an add finds none.
type pipeSlot struct {
	p *pipeline

	mu      sync.Mutex
	queue   *addOp // waiting to be written, oldest first
	last    *addOp // the newest in queue
	writing bool   // a caller is writing the queue out
	conn    *pipeConn
	buf     []byte // the writer's
}

// submit queues op and, unless another caller is writing, writes the
// queue out.
func (s *pipeSlot) submit(op *addOp) {
	s.mu.Lock()
	if s.last == nil {
		s.queue = op
	} else {
		s.last.next = op
	}
	s.last = op
	if s.writing {
		s.mu.Unlock()
		return
	}
	s.writing = true
	s.mu.Unlock()
	s.writeQueue()
}

// writeQueue writes what is queued in one write, then passes the writing
// to the caller of the oldest add queued meanwhile, if any: a writer goes
// back to its own add's answer after one write.
func (s *pipeSlot) writeQueue() {
	s.mu.Lock()
	batch := s.queue
	s.queue, s.last = nil, nil
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		var err error
		if c, err = s.dial(); err != nil {
			failAll(batch, err)
		}
	}
	if c != nil {
		s.buf = c.write(s.buf[:0], batch)
	}
	s.mu.Lock()
	if s.queue != nil {
		s.queue.done <- errWriteTurn
	} else {
		s.writing = false
	}
	s.mu.Unlock()
}

func (s *pipeSlot) dial() (*pipeConn, error) {
	nc, err := net.DialTimeout(s.p.addr.Network(), s.p.addr.String(), s.p.timeout)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, &memcache.ConnectTimeoutError{Addr: s.p.addr}
		}
		return nil, err
	}
	c := &pipeConn{slot: s, nc: nc, br: bufio.NewReader(nc), seq: s.p.dials.Add(1)}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	return c, nil
}

// failAll answers every op of a queue with err.
func failAll(op *addOp, err error) {
	for op != nil {
		next := op.next // op is its caller's again once answered
		op.done <- err
		op = next
	}
}

// pipeConn is one live connection, and the adds written on it that wait
// for their answers, in order.
type pipeConn struct {
	slot *pipeSlot
	nc   net.Conn
	br   *bufio.Reader
	seq  uint64 // its number among the pipeline's connections

	mu       sync.Mutex
	inflight []*addOp // written, oldest first; the first one's caller reads
	err      error    // why the connection failed; nothing is written after
}

// write sends a batch in one write, using buf. Only its slot's writer
// calls it: adds are written, and wait for answers, in one order.
func (c *pipeConn) write(buf []byte, batch *addOp) []byte {
	now := time.Now()
	for op := batch; op != nil; op = op.next {
		buf = append(buf, "add "...)
		buf = append(buf, op.key...)
		buf = append(buf, " 0 "...)
		buf = strconv.AppendInt(buf, int64(op.exp), 10)
		buf = append(buf, " 1\r\n1\r\n"...) // flags 0, one byte of value: "1"
		op.sent, op.conn = now, c
	}
	c.mu.Lock()
	if err := c.err; err != nil {
		c.mu.Unlock()
		failAll(batch, err)
		return buf
	}
	if len(c.inflight) == 0 {
		batch.done <- errYourTurn
	}
	for op := batch; op != nil; op = op.next {
		c.inflight = append(c.inflight, op)
	}
	c.mu.Unlock()
	// From here the batch's callers read their answers, or fail answers them.
	if err := c.nc.SetWriteDeadline(now.Add(c.slot.p.timeout)); err != nil {
		c.fail(err)
		return buf
	}
	if _, err := c.nc.Write(buf); err != nil {
		c.fail(err)
	}
	if cap(buf) > maxBatchBuffer {
		return nil
	}
	return buf
}

// maxBatchBuffer is the largest write buffer a slot keeps.
const maxBatchBuffer = 64 << 10

// readAnswer reads the answer to op, the oldest add in flight, and passes
// the turn to the next. The add's deadline bounds the read.
func (c *pipeConn) readAnswer(op *addOp) error {
	c.mu.Lock()
	failed := c.err != nil
	c.mu.Unlock()
	if failed { // op was answered when the connection failed
		return <-op.done
	}
	if err := c.nc.SetReadDeadline(op.sent.Add(c.slot.p.timeout)); err != nil {
		c.fail(err)
		return <-op.done
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		c.fail(err)
		return <-op.done
	}
	answer, broken := addAnswer(line)
	if broken {
		c.fail(answer)
		return <-op.done
	}
	c.mu.Lock()
	if c.err != nil { // failed meanwhile, answering op
		c.mu.Unlock()
		return <-op.done
	}
	c.inflight[0] = nil
	c.inflight = c.inflight[1:]
	if len(c.inflight) > 0 {
		c.inflight[0].done <- errYourTurn
	}
	c.mu.Unlock()
	return answer
}

// fail closes the connection and answers every add in flight on it with
// err; its slot dials a new one for the next add.
func (c *pipeConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	ops := c.inflight
	c.inflight = nil
	c.mu.Unlock()
	c.nc.Close()
	for _, op := range ops {
		op.done <- err
	}
	s := c.slot
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
	}
	s.mu.Unlock()
}

var (
	answerStored    = []byte("STORED\r\n")
	answerNotStored = []byte("NOT_STORED\r\n")
	answerServerErr = []byte("SERVER_ERROR ")
)

// addAnswer reads memcached's answer line to an add. broken is true for
// a line that is no answer to an add: the stream is out of step.
func addAnswer(line []byte) (err error, broken bool) {
	switch {
	case bytes.Equal(line, answerStored):
		return nil, false
	case bytes.Equal(line, answerNotStored):
		return memcache.ErrNotStored, false
	case bytes.HasPrefix(line, answerServerErr):
		return fmt.Errorf("memcache: unexpected response line from %q: %q", "add", line), false
	}
	return fmt.Errorf("memcache: unexpected response line from %q: %q", "add", line), true
}

// legalKey is memcached's rule for a key: 1 to 250 bytes, no white space
// or control character.
func legalKey(key string) bool {
	if len(key) == 0 || len(key) > 250 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] == 0x7f {
			return false
		}
	}
	return true
}
