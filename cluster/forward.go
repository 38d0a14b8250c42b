package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/fsm"
)

// Forwarding in batches: a follower queues the writes it forwards, and one
// loop drains the queue into one call to the leader (rpcApplyBatch), as
// the leader's coalescer drains its own queue into one log entry. While a
// call is in flight the queue fills and the next call takes all of it;
// alone, a write waits for nothing. The leader admits each write of a
// batch as a single forwarded one and queues them all to its coalescer,
// so they share its log entries, and answers each write on its own.
//
// One call is in flight to a leader near by: writes that arrive meanwhile
// wait less than a call takes and share the next one. To a leader far
// away (its status calls take farLeader or more: another DC) a write
// waiting for the call in flight would pay up to a second round trip, so
// calls overlap, up to maxForwardInflight; under load they still fill
// while those are in flight.
//
// A leader that does not report knowing the call (a node of an earlier
// release, during a rolling upgrade) gets one call per write, as before.
const (
	// maxForwardBatch bounds the writes of one call; the leader refuses a
	// larger batch. It also bounds the answer: a write's answer carries
	// its records (up to tens of KiB with data), and the answer of a
	// whole call must fit in what a node reads of one (maxRPCReply).
	maxForwardBatch = 128
	// maxForwardBytes bounds the entries and request ids of one call,
	// well within what the leader reads of a call (maxRPCBody).
	maxForwardBytes = maxRPCBody / 2
	// maxForwardInflight is how many calls a follower has in flight to a
	// far leader; to a near one it has one.
	maxForwardInflight = 8
	// farLeader is the round trip of a status call from which a leader
	// is far: beyond a datacenter's links, and well above what a call
	// costs on loopback.
	farLeader = 10 * time.Millisecond
	// maxForwardCall bounds one call, so that a leader that heartbeats
	// but does not answer holds the only call in flight this long at most;
	// its writes are then unknown, and Apply retries them.
	maxForwardCall = 30 * time.Second
	// leaderRPCRecheck is how long a follower trusts that a leader does
	// not know the batch call before it asks again (a node upgraded in
	// place keeps its address).
	leaderRPCRecheck = 30 * time.Second
)

// callSlots bounds the calls a follower has in flight to the leader.
type callSlots struct {
	mu       sync.Mutex
	inflight int
	freed    chan struct{} // closed when a call ends; nil while none waits
}

// take waits until fewer than limit() calls are in flight and counts one
// more; false when closing ends first.
func (s *callSlots) take(limit func() int, closing <-chan struct{}) bool {
	for {
		s.mu.Lock()
		if s.inflight < limit() {
			s.inflight++
			s.mu.Unlock()
			return true
		}
		if s.freed == nil {
			s.freed = make(chan struct{})
		}
		freed := s.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-closing:
			return false
		}
	}
}

// put ends one call.
func (s *callSlots) put() {
	s.mu.Lock()
	s.inflight--
	if s.freed != nil {
		close(s.freed)
		s.freed = nil
	}
	s.mu.Unlock()
}

// forwardLimit is how many calls may be in flight to the leader now.
func (n *Node) forwardLimit() int {
	if n.leaderRPC.far() {
		return maxForwardInflight
	}
	return 1
}

// forwarded is one write queued for the leader.
type forwarded struct {
	ctx   context.Context // the caller's: it answers on its own when ctx ends
	req   string
	entry []byte
	done  chan applied // buffered: the loop never blocks on a gone caller
}

// size is what the write adds to a call, about.
func (f *forwarded) size() int { return len(f.entry) + len(f.req) + 16 }

// forwardQueued forwards one write to the leader at addr: in a batch if
// the leader knows the call, else alone.
func (n *Node) forwardQueued(ctx context.Context, addr raft.ServerAddress, req string, entry []byte) (fsm.Result, uint64, error) {
	if !n.leaderBatches(addr) {
		return n.forward(ctx, string(addr), req, entry)
	}
	f := &forwarded{ctx: ctx, req: req, entry: entry, done: make(chan applied, 1)}
	select {
	case n.fwdQueue <- f:
	case <-ctx.Done():
		return fsm.Result{}, 0, ctx.Err()
	case <-n.closing:
		return fsm.Result{}, 0, ErrShutdown
	}
	select {
	case a := <-f.done:
		return a.res, a.index, a.err
	case <-ctx.Done():
		// Queued: it may be in a call the leader applies.
		return fsm.Result{}, 0, fmt.Errorf("%w: forwarding to the leader: %v", ErrOutcomeUnknown, ctx.Err())
	case <-n.closing:
		// Queued after the loop drained the queue, or in a call that
		// closing cuts: it may have applied.
		return fsm.Result{}, 0, fmt.Errorf("%w: forwarding to the leader: %v", ErrOutcomeUnknown, ErrShutdown)
	}
}

// forwardLoop gathers the queued writes into calls to the leader.
func (n *Node) forwardLoop() {
	defer n.wg.Done()
	var held *forwarded // taken from the queue, too large for the last call
	for {
		first := held
		held = nil
		if first == nil {
			select {
			case first = <-n.fwdQueue:
			case <-n.closing:
				n.drainForwards()
				return
			}
		}
		if !n.fwdInflight.take(n.forwardLimit, n.closing) {
			first.done <- applied{err: ErrShutdown}
			n.drainForwards()
			return
		}
		batch := []*forwarded{first}
		size := first.size()
	fill:
		for len(batch) < maxForwardBatch {
			select {
			case f := <-n.fwdQueue:
				if size+f.size() > maxForwardBytes {
					held = f
					break fill
				}
				batch = append(batch, f)
				size += f.size()
			default:
				break fill
			}
		}
		// A caller gone before its write was sent has answered already.
		live := batch[:0]
		for _, f := range batch {
			if err := f.ctx.Err(); err != nil {
				f.done <- applied{err: err}
				continue
			}
			live = append(live, f)
		}
		if len(live) == 0 {
			n.fwdInflight.put()
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer n.fwdInflight.put()
			n.sendForwards(live)
		}()
	}
}

func (n *Node) drainForwards() {
	for {
		select {
		case f := <-n.fwdQueue:
			f.done <- applied{err: ErrShutdown}
		default:
			return
		}
	}
}

// sendForwards makes one call to the leader with the writes of batch and
// answers each. An answer that did not arrive leaves every write of it
// unknown; Apply retries each under its own request id.
func (n *Node) sendForwards(batch []*forwarded) {
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		failForwards(batch, ErrNoLeader)
		return
	}
	args := &applyBatchArgs{Writes: make([]applyArgs, len(batch))}
	for i, f := range batch {
		args.Writes[i] = applyArgs{Req: f.req, Entry: f.entry}
	}
	ctx, cancel := n.batchContext(batch)
	defer cancel()
	var reply applyBatchReply
	err := n.callLeader(ctx, string(addr), rpcApplyBatch, args, &reply)
	switch {
	case errors.Is(err, errNoRoute):
		// Nothing was done: the leader does not know the call.
		n.leaderRPC.set(addr, rpcVersionBase)
		n.log.Info("the leader does not serve batches of forwarded writes; forwarding one write per call", "leader", addr)
		for _, f := range batch {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				// Closing the node must not wait for a caller's deadline.
				ctx, cancel := context.WithCancel(f.ctx)
				defer cancel()
				go func() {
					select {
					case <-n.closing:
						cancel()
					case <-ctx.Done():
					}
				}()
				res, index, err := n.forward(ctx, string(addr), f.req, f.entry)
				f.done <- applied{res: res, index: index, err: err}
			}()
		}
		return
	case errors.Is(err, errUnreachable):
		failForwards(batch, fmt.Errorf("%w: forwarding to the leader: %v", ErrOutcomeUnknown, err))
		return
	case err != nil:
		// The leader may have applied every write of the call and failed
		// only in answering it (an answer too large to read, a failed
		// encoding): each is unknown, and Apply retries it under its
		// request id, which answers what was applied.
		failForwards(batch, fmt.Errorf("%w: forwarding to the leader: %v", ErrOutcomeUnknown, err))
		return
	case len(reply.Replies) != len(batch):
		failForwards(batch, fmt.Errorf("%w: the leader answered %d of %d forwarded writes", ErrOutcomeUnknown, len(reply.Replies), len(batch)))
		return
	}
	n.metrics.forwardBatch.Observe(float64(len(batch)))
	for i, f := range batch {
		f.done <- n.forwardedReply(&reply.Replies[i])
	}
}

// batchContext bounds a call carrying batch: it ends at the latest of the
// callers' deadlines, after maxForwardCall at most, once every caller has
// gone, or when the node closes.
func (n *Node) batchContext(batch []*forwarded) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	var latest time.Time
	for _, f := range batch {
		d, ok := f.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	if limit := time.Now().Add(maxForwardCall); latest.IsZero() || latest.After(limit) {
		latest = limit
	}
	cancelCall := cancel
	if !latest.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, latest)
		cancelCall = func() { cancelDeadline(); cancel() }
	}
	left := atomic.Int32{}
	left.Store(int32(len(batch)))
	stops := make([]func() bool, 0, len(batch))
	for _, f := range batch {
		stops = append(stops, context.AfterFunc(f.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	go func() {
		select {
		case <-n.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancelCall()
	}
}

func failForwards(batch []*forwarded, err error) {
	for _, f := range batch {
		f.done <- applied{err: err}
	}
}

// leaderRPC is what a follower knows of the calls its leader serves.
type leaderRPC struct {
	mu      sync.Mutex
	addr    raft.ServerAddress // the leader it is about
	version int                // 0: not known yet
	checked time.Time          // when version was learned
	asking  bool               // a status call is asked for or under way
	// rtt is the shortest status call of the last round that answered, 0
	// until one did.
	rtt time.Duration
	// wake asks askLeaderLoop to ask the leader (buffered: one pending
	// ask at most, as asking says).
	wake chan struct{}
}

// set records that the leader at addr serves version.
func (l *leaderRPC) set(addr raft.ServerAddress, version int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr == addr {
		l.version, l.checked = version, time.Now()
	}
}

// measured records that the status calls of a round to the leader at
// addr took d at the shortest: it replaces what an earlier round found.
func (l *leaderRPC) measured(addr raft.ServerAddress, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr == addr {
		l.rtt = d
	}
}

// far tells whether the leader's status calls of the last round all took
// farLeader or more.
func (l *leaderRPC) far() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rtt >= farLeader
}

// leaderBatches tells whether the leader at addr is known to serve batches
// of forwarded writes. Until its status has said so it is not: this node
// asks it, in the background, and forwards one write per call meanwhile.
// It asks again every leaderRPCRecheck, which also measures the round
// trip to it anew (the first call may have paid for the connection).
func (n *Node) leaderBatches(addr raft.ServerAddress) bool {
	l := &n.leaderRPC
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr != addr {
		l.addr, l.version, l.checked, l.rtt = addr, 0, time.Time{}, 0
	}
	if !l.asking && (l.version == 0 || time.Since(l.checked) > leaderRPCRecheck) {
		l.asking = true
		select {
		case l.wake <- struct{}{}:
		default: // cannot happen: a wake is only sent with asking set
		}
	}
	return l.version >= rpcVersionBatch
}

// askLeaderLoop asks the leader which calls it serves whenever
// leaderBatches wants to know; its calls end when the node closes. When
// the leader changed while it asked, it asks the new one at once.
func (n *Node) askLeaderLoop() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.closing
		cancel()
	}()
	l := &n.leaderRPC
	for {
		select {
		case <-n.closing:
			return
		case <-l.wake:
		}
		l.mu.Lock()
		addr := l.addr
		l.mu.Unlock()
		for {
			n.askLeaderRPC(ctx, addr)
			l.mu.Lock()
			again := l.addr != addr && ctx.Err() == nil
			if again {
				addr = l.addr
			} else {
				l.asking = false
			}
			l.mu.Unlock()
			if !again {
				break
			}
		}
	}
}

// askLeaderRPC asks the leader at addr which calls it serves, and times
// the call. A call that takes farLeader or more is made again, twice at
// most, and the shortest of the round counts: the first may have paid for
// the connection, or waited for a busy core, on a leader near by.
func (n *Node) askLeaderRPC(ctx context.Context, addr raft.ServerAddress) {
	l := &n.leaderRPC
	timed := func() (*statusReply, time.Duration, error) {
		start := time.Now()
		st, err := n.remoteStatus(ctx, string(addr))
		return st, time.Since(start), err
	}
	st, took, err := timed()
	if err != nil {
		l.mu.Lock()
		if l.addr == addr && l.version != 0 {
			// What it served is still known: ask again after a while.
			l.checked = time.Now()
		}
		l.mu.Unlock()
		n.log.Debug("asking the leader which calls it serves", "leader", addr, "err", err)
		return
	}
	l.set(addr, max(rpcVersionBase, int(st.RPC)))
	for i := 0; took >= farLeader && i < 2; i++ {
		_, d, aerr := timed()
		if aerr != nil {
			break
		}
		took = min(took, d)
	}
	wasFar := l.far()
	l.measured(addr, took)
	switch far := l.far(); {
	case far && !wasFar:
		n.log.Info("the leader is far: forwarded writes go in overlapping calls", "leader", addr, "status_call", took)
	case !far && wasFar:
		n.log.Info("the leader is near: forwarded writes go in one call at a time", "leader", addr, "status_call", took)
	}
}

// servesRPC is the version of the node-to-node calls this node serves.
func (n *Node) servesRPC() int {
	if v := n.rpcServed.Load(); v != 0 {
		return int(v)
	}
	return rpcVersion
}
