package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/fsm"
)

// Write coalescing: API requests queue their encoded commands; one loop
// drains the queue into a Batch, one log entry for many requests. While a
// batch is in Raft the queue fills, and the next batch takes all of it:
// under load many requests share one fsync; alone, a request waits for
// nothing. One batch in flight measured best, on one node and on three
// (BENCHMARKS.md): Raft's leader loop writes one batch at a time anyway,
// and requests arriving meanwhile are better off in the next batch than
// in batches of their own, which would be smaller.
const (
	maxInflight   = 1
	maxBatch      = 512
	maxBatchBytes = 1 << 20
	enqueueWait   = 5 * time.Second
)

type pending struct {
	req   string // request id: the command applies at most once
	entry []byte
	done  chan applied // buffered: the loop never blocks on a gone caller
}

type applied struct {
	res   fsm.Result
	index uint64
	err   error
}

// Apply proposes one command on whichever node leads and waits for its
// result and log index. On the leader the command rides in a Batch with
// others, which carries the leader's clock; a follower forwards it. A
// business failure is in Result.Err; the error is for what the cluster
// could not do within ctx (ErrNoLeader, ErrOutcomeUnknown, ErrShutdown).
//
// The command carries a request id, so an attempt whose outcome is
// unknown (leadership lost mid-apply, the leader unreachable) is retried
// safely: it applies at most once, and the retry answers its result.
func (n *Node) Apply(ctx context.Context, c fsm.Command) (fsm.Result, uint64, error) {
	if err := admit(n.cfg.Check, c, false); err != nil {
		return fsm.Result{}, 0, err
	}
	leaderOnly := leaderTypes[c.Type()]
	entry, err := fsm.Encode(c)
	if err != nil {
		return fsm.Result{}, 0, err
	}
	req := n.newRequestID()
	unknown := false // some attempt may have applied
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, maxRetryWait) {
		res, index, err := n.applyOnce(ctx, req, entry, leaderOnly)
		switch {
		case err == nil:
			return res, index, nil
		case errors.Is(err, ErrOutcomeUnknown):
			unknown = true
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader), errors.Is(err, ErrBusy):
		default:
			if unknown {
				return fsm.Result{}, 0, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
			}
			return fsm.Result{}, 0, err
		}
		// A node cut off from every leader answers at once, not at the
		// caller's deadline; it answers normally once a leader is known.
		if n.noLeader() {
			if unknown {
				return fsm.Result{}, 0, fmt.Errorf("%w: %v; %v", ErrOutcomeUnknown, ErrNoLeader, err)
			}
			return fsm.Result{}, 0, fmt.Errorf("%w for over %s: %v", ErrNoLeader, noLeaderBound, err)
		}
		n.log.Debug("retrying write", "req", req, "err", err)
		select {
		case <-ctx.Done():
			if unknown {
				return fsm.Result{}, 0, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
			}
			return fsm.Result{}, 0, err
		case <-n.closing:
			if unknown {
				return fsm.Result{}, 0, fmt.Errorf("%w: %v", ErrOutcomeUnknown, ErrShutdown)
			}
			return fsm.Result{}, 0, ErrShutdown
		case <-time.After(wait/2 + rand.N(wait/2+1)): // jittered: writers that failed together do not retry together
		}
	}
}

// maxRetryWait bounds the wait between two attempts of a write. A new
// leader is ready about a second after the old one died (BENCHMARKS.md,
// failover); waits doubling up to 500 ms held a write up to half a second
// past that. An attempt while no leader is known costs a look at Raft's
// state.
const maxRetryWait = 100 * time.Millisecond

// applyOnce makes one attempt: locally on the leader, else forwarded,
// unless only the leader may propose it.
func (n *Node) applyOnce(ctx context.Context, req string, entry []byte, leaderOnly bool) (fsm.Result, uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.applyLocal(ctx, req, entry)
	}
	if leaderOnly {
		return fsm.Result{}, 0, fmt.Errorf("%w: only the leader proposes this command", ErrRefused)
	}
	// A write the log's version does not allow yet is not forwarded: a
	// leader of an earlier release would refuse it as malformed, where
	// the answer is that the cluster is being upgraded (enqueue's gate).
	if _, err := n.versionGate(entry); errors.Is(err, ErrUnsupported) {
		return fsm.Result{}, 0, err
	}
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		return fsm.Result{}, 0, ErrNoLeader
	}
	return n.forwardQueued(ctx, addr, req, entry)
}

// versionGate returns entry as the log's version lets it be written:
// fields that a replica of an older version would ignore are cleared
// until the log's fence of this version (maybeFence); a batch op it would
// refuse cannot be, and fails with ErrUnsupported.
func (n *Node) versionGate(entry []byte) ([]byte, error) {
	v := n.fsm.LogVersion()
	if v >= fsm.Version {
		return entry, nil
	}
	down, err := fsm.Downgrade(entry, v)
	if errors.Is(err, fsm.ErrNeedsVersion) {
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return down, nil
}

// newRequestID returns an id unique in the cluster: a random prefix drawn
// when the node opened, and a counter (no system call per write).
func (n *Node) newRequestID() string {
	return n.reqPrefix + strconv.FormatUint(n.reqSeq.Add(1), 36)
}

// applyLocal queues one command for the coalescer and waits for it.
func (n *Node) applyLocal(ctx context.Context, req string, entry []byte) (fsm.Result, uint64, error) {
	p, err := n.enqueue(ctx, req, entry)
	if err != nil {
		return fsm.Result{}, 0, err
	}
	return n.await(ctx, p)
}

// enqueue queues one command for the coalescer, unless it may not be
// proposed now; await waits for its answer.
func (n *Node) enqueue(ctx context.Context, req string, entry []byte) (*pending, error) {
	// A halted state machine would commit the write and not answer it.
	if err := n.halted(); err != nil {
		return nil, err
	}
	// The version gate: a replica that does not know a command would halt
	// at it, so it is proposed only once every voter knows it.
	if t := fsm.Type(entry[0]); !n.votersKnow(t) {
		return nil, fmt.Errorf("%w: command type %d is not known to every voter yet", ErrUnsupported, t)
	}
	// Likewise, fields that a replica of an older version would ignore,
	// and batch ops it would refuse, are written only after the log's
	// fence of this version.
	entry, err := n.versionGate(entry)
	if err != nil {
		return nil, err
	}
	p := &pending{req: req, entry: entry, done: make(chan applied, 1)}
	select {
	case n.queue <- p:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.closing:
		return nil, ErrShutdown
	}
}

// await waits for the answer to a queued command.
func (n *Node) await(ctx context.Context, p *pending) (fsm.Result, uint64, error) {
	select {
	case a := <-p.done:
		return a.res, a.index, a.err
	case <-ctx.Done():
		// Queued: it may still be applied.
		return fsm.Result{}, 0, fmt.Errorf("%w: %v", ErrOutcomeUnknown, ctx.Err())
	}
}

func (n *Node) coalesce() {
	defer n.wg.Done()
	batch := make([]*pending, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-n.queue:
			batch = append(batch, p)
		case <-n.closing:
			n.drainQueue()
			return
		}
		select {
		case n.inflight <- struct{}{}:
		case <-n.closing:
			fail(batch, ErrShutdown)
			n.drainQueue()
			return
		}
		size := len(batch[0].entry)
	fill:
		for len(batch) < maxBatch && size < maxBatchBytes {
			select {
			case p := <-n.queue:
				batch = append(batch, p)
				size += len(p.entry)
			default:
				break fill
			}
		}
		n.propose(append([]*pending(nil), batch...))
	}
}

// propose hands one batch to Raft and answers its requests when it applies.
func (n *Node) propose(batch []*pending) {
	entries := make([][]byte, len(batch))
	reqs := make([]string, len(batch))
	for i, p := range batch {
		entries[i], reqs[i] = p.entry, p.req
	}
	now, err := n.logNow()
	if err != nil {
		<-n.inflight
		fail(batch, err)
		return
	}
	data, err := fsm.Encode(&fsm.Batch{Now: now, Entries: entries, Reqs: reqs})
	if err != nil {
		<-n.inflight
		fail(batch, err)
		return
	}
	start := time.Now()
	f := n.raft.Apply(data, enqueueWait)
	n.metrics.batchSize.Observe(float64(len(batch)))
	go func() {
		defer func() { <-n.inflight }()
		err := f.Error()
		n.metrics.applyLatency.Observe(time.Since(start).Seconds())
		if err != nil {
			fail(batch, n.raftErr(err))
			return
		}
		res, ok := fsm.TakeResult(f.Response())
		if ok && res.Err != nil && res.Batch == nil {
			// Committed, but this node's state machine halted before it:
			// other replicas may apply it.
			fail(batch, fmt.Errorf("%w: committed at index %d, not applied here: %v", ErrOutcomeUnknown, f.Index(), res.Err))
			return
		}
		if !ok || len(res.Batch) != len(batch) {
			fail(batch, fmt.Errorf("apply: unexpected response %T", f.Response()))
			return
		}
		for i, p := range batch {
			p.done <- applied{res: res.Batch[i], index: f.Index()}
		}
	}()
}

func (n *Node) raftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", ErrBusy, err)
	}
	return err
}

func fail(batch []*pending, err error) {
	for _, p := range batch {
		p.done <- applied{err: err}
	}
}

func (n *Node) drainQueue() {
	for {
		select {
		case p := <-n.queue:
			p.done <- applied{err: ErrShutdown}
		default:
			return
		}
	}
}

// commitEmpty writes an empty batch outside the coalescer and waits until
// it is applied: a new leader's proof that all earlier entries are applied.
// It carries no time (Now 0: the state keeps its own), since the leader
// has not yet heard its voters' clocks.
func (n *Node) commitEmpty() error {
	data, err := fsm.Encode(&fsm.Batch{})
	if err != nil {
		return err
	}
	if err := n.raft.Apply(data, enqueueWait).Error(); err != nil {
		return n.raftErr(err)
	}
	return nil
}
