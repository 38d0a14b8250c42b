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
	// maxForwardInflight is how many calls a follower has in flight.
	maxForwardInflight = 1
	// maxForwardCall bounds one call, so that a leader that heartbeats
	// but does not answer holds the only call in flight this long at most;
	// its writes are then unknown, and Apply retries them.
	maxForwardCall = 30 * time.Second
	// leaderRPCRecheck is how long a follower trusts that a leader does
	// not know the batch call before it asks again (a node upgraded in
	// place keeps its address).
	leaderRPCRecheck = 30 * time.Second
)

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
		select {
		case n.fwdInflight <- struct{}{}:
		case <-n.closing:
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
			<-n.fwdInflight
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer func() { <-n.fwdInflight }()
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
	asking  bool               // a status call is under way
}

// set records that the leader at addr serves version.
func (l *leaderRPC) set(addr raft.ServerAddress, version int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr == addr {
		l.version, l.checked = version, time.Now()
	}
}

// leaderBatches tells whether the leader at addr is known to serve batches
// of forwarded writes. Until its status has said so it is not: this node
// asks it, in the background, and forwards one write per call meanwhile.
func (n *Node) leaderBatches(addr raft.ServerAddress) bool {
	l := &n.leaderRPC
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addr != addr {
		l.addr, l.version, l.checked = addr, 0, time.Time{}
	}
	if l.version >= rpcVersionBatch {
		return true
	}
	if !l.asking && (l.version == 0 || time.Since(l.checked) > leaderRPCRecheck) {
		l.asking = true
		go n.askLeaderRPC(addr)
	}
	return false
}

// askLeaderRPC asks the leader at addr which calls it serves.
func (n *Node) askLeaderRPC(addr raft.ServerAddress) {
	st, err := n.remoteStatus(context.Background(), string(addr))
	l := &n.leaderRPC
	l.mu.Lock()
	l.asking = false
	l.mu.Unlock()
	if err != nil {
		n.log.Debug("asking the leader which calls it serves", "leader", addr, "err", err)
		return
	}
	l.set(addr, max(rpcVersionBase, int(st.RPC)))
}

// servesRPC is the version of the node-to-node calls this node serves.
func (n *Node) servesRPC() int {
	if v := n.rpcServed.Load(); v != 0 {
		return int(v)
	}
	return rpcVersion
}
