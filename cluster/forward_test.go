package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/token"
)

// forwardCalls reads n's histogram of forwarded batch sizes: the calls
// answered, and how many of them carried more than one write.
func forwardCalls(t *testing.T, n *testcluster.Node) (calls, batched uint64) {
	t.Helper()
	mfs, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tokenstore_forwarded_batch_size" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			calls += h.GetSampleCount()
			batched += h.GetSampleCount()
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 1 {
					batched -= b.GetCumulativeCount()
				}
			}
		}
	}
	return calls, batched
}

// issueAtOnce issues one token per kind of kinds through n, all at once,
// and returns the answers and errors by position.
func issueAtOnce(ctx context.Context, n *testcluster.Node, kinds []string) ([]*wire.IssueResponse, []error) {
	out := make([]*wire.IssueResponse, len(kinds))
	errs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, kind := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = n.Client.Issue(ctx, wire.IssueRequest{Kind: kind, Subject: fmt.Sprint("w", i)})
		}()
	}
	wg.Wait()
	return out, errs
}

func repeat(kind string, k int) []string {
	kinds := make([]string, k)
	for i := range kinds {
		kinds[i] = kind
	}
	return kinds
}

func writeRefused(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Code == wire.CodeWriteRefused
}

// A follower's concurrent writes reach the leader in shared calls, and
// each caller gets its own answer: a write the leader refuses (a kind only
// the follower knows) answers write_refused, the others of its call as
// usual.
func TestFollowerForwardsConcurrentWritesInBatches(t *testing.T) {
	extra, err := token.ParsePolicy([]byte("kinds:\n  extra:\n    code: ex\n    default_ttl: 1h\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{Policy: extra})
	ctx := ctxFor(t, 2*time.Minute)
	f := c.Node(2)
	if l, err := c.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	} else if l == f {
		if err := f.TransferLeadership(c.Node(0).ID(), c.Node(0).RaftAddr()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a leader other than the follower", 30*time.Second, func() error {
		if l := c.Leader(); l == nil || l == f || l.Ready() != nil || f.Ready() != nil {
			return errors.New("not yet")
		}
		return nil
	})
	leader := c.Leader()
	refusedBefore := metric(t, leader, "tokenstore_forwarded_writes_refused_total", "")
	var issued []*wire.IssueResponse
	rounds := 0
	kinds := append(repeat("access", 31), "extra")
	waitFor(t, "a call carrying more than one forwarded write", time.Minute, func() error {
		rounds++
		out, errs := issueAtOnce(ctx, f, kinds)
		for i, err := range errs {
			if kinds[i] == "extra" {
				if !writeRefused(err) {
					t.Fatalf("a write of a kind the leader does not know: want write_refused, got %+v, %v", out[i], err)
				}
				continue
			}
			if err != nil || out[i].ID == "" || out[i].Index == 0 {
				t.Fatalf("forwarded issue %d: got %+v, %v", i, out[i], err)
			}
			issued = append(issued, out[i])
		}
		if _, batched := forwardCalls(t, f); batched == 0 {
			return errors.New("every call carried one write")
		}
		return nil
	})
	if got := metric(t, leader, "tokenstore_forwarded_writes_refused_total", "") - refusedBefore; got != float64(rounds) {
		t.Errorf("the leader counted %v refused writes, want %d (one per round)", got, rounds)
	}
	seen := map[string]bool{}
	for _, iss := range issued {
		if seen[iss.ID] {
			t.Fatalf("two writes answered with token %s", iss.ID)
		}
		seen[iss.ID] = true
		if rec, err := leader.Client.Get(ctx, iss.ID); err != nil || rec.ID != iss.ID {
			t.Fatalf("forwarded token %s on the leader: got %+v, %v", iss.ID, rec, err)
		}
	}
	calls, batched := forwardCalls(t, f)
	t.Logf("%d rounds, %d writes, %d calls, %d of them batches", rounds, len(issued)+rounds, calls, batched)
}

// The leader answers each write of a batch on its own: one it refuses
// fails alone and is counted, and a batch larger than a follower sends is
// refused whole.
func TestForwardedBatchAnswersEachWrite(t *testing.T) {
	n := testcluster.Start(t, testcluster.Options{})
	ctx := ctxFor(t, time.Minute)
	issue := func(id string) []byte {
		return mustEncode(t, &fsm.Issue{TTL: int64(time.Hour), Record: fsm.Record{ID: id, Kind: "access",
			Hash: strings.Repeat(id[:1], 32), Subject: "u"}})
	}
	a, b, big := "a0000000000000000000aa", "b0000000000000000000bb", "c0000000000000000000cc"
	write := func(req string, entry []byte) map[string]any { return map[string]any{"q": req, "e": entry} }
	batch := []map[string]any{
		write("fwd-test.1", issue(a)),
		write("fwd-test.2", mustEncode(t, &fsm.Expire{Before: 1, IDs: []string{a}})), // the leader's own: never forwarded
		write("fwd-test.3", issue(b)),
	}
	caller := newRPCCaller(t, nil)
	refused := metric(t, n, "tokenstore_forwarded_writes_refused_total", "")
	var reply struct {
		Replies []rpcReply `codec:"r"`
	}
	if err := caller.callInto(n.RaftAddr(), "/rpc/v1/apply-batch", map[string]any{"w": batch}, &reply); err != nil {
		t.Fatal(err)
	}
	if len(reply.Replies) != 3 {
		t.Fatalf("a batch of 3 writes: %d answers, want 3", len(reply.Replies))
	}
	for i, id := range map[int]string{0: a, 2: b} {
		r := reply.Replies[i]
		if r.Fail != "" || r.Err != "" || r.Index == 0 || r.Record == nil || r.Record.ID != id {
			t.Errorf("write %d, an issue of %s: got %+v", i, id, r)
		}
	}
	if r := reply.Replies[1]; !strings.HasPrefix(r.Fail, "refused: ") || r.Index != 0 {
		t.Errorf("write 1, an expiry from a peer: want refused, got %+v", r)
	}
	if got := metric(t, n, "tokenstore_forwarded_writes_refused_total", "") - refused; got != 1 {
		t.Errorf("refused writes counted: %v, want 1", got)
	}
	for _, id := range []string{a, b} {
		if rec, err := n.Client.Get(ctx, id); err != nil || rec.Status != "active" {
			t.Errorf("token %s after the batch: want active, got %+v, %v", id, rec, err)
		}
	}

	tooMany := make([]map[string]any, cluster.MaxForwardBatch+1)
	for i := range tooMany {
		tooMany[i] = write(fmt.Sprint("fwd-test.big.", i), issue(big))
	}
	refused = metric(t, n, "tokenstore_forwarded_writes_refused_total", "")
	if err := caller.callInto(n.RaftAddr(), "/rpc/v1/apply-batch", map[string]any{"w": tooMany}, &reply); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("a batch of %d writes: want 400, got %v", len(tooMany), err)
	}
	if got := metric(t, n, "tokenstore_forwarded_writes_refused_total", "") - refused; got != float64(len(tooMany)) {
		t.Errorf("writes of a batch too large counted refused: %v, want %d", got, len(tooMany))
	}
	if _, err := n.Client.Get(ctx, big); !errors.Is(err, client.ErrTokenNotFound) {
		t.Errorf("a write of the batch too large: want not found, got %v", err)
	}
}

// Killed while its followers' batches are in flight, the leader loses no
// acknowledged write, and no token is consumed twice: every write of a
// call left unanswered is retried under its own request id.
func TestLeaderKilledMidBatch(t *testing.T) {
	_, survivors := leaderGoesUnderLoad(t, 32, func(leader *testcluster.Node) { leader.Kill() })
	var batched uint64
	for _, n := range survivors {
		_, b := forwardCalls(t, n)
		batched += b
	}
	if batched == 0 {
		t.Fatal("no call carried more than one forwarded write")
	}
}

// A leader that does not report the batch call (a node of an earlier
// release) gets one call per write; one that stops serving it (404) does
// too, from the next call on, and no write is lost on the way.
func TestLeaderWithoutBatchesGetsOneCallPerWrite(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	leader, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := followers(c)
	old, upgraded := fs[0], fs[1]
	writeAll := func(n *testcluster.Node) {
		t.Helper()
		out, errs := issueAtOnce(ctx, n, repeat("access", 32))
		for i, err := range errs {
			if err != nil {
				t.Fatalf("forwarded issue through %s: %v", n.ID(), err)
			}
			if rec, err := leader.Client.Get(ctx, out[i].ID); err != nil || rec.ID != out[i].ID {
				t.Fatalf("forwarded token %s on the leader: %+v, %v", out[i].ID, rec, err)
			}
		}
	}

	// The leader claims the first release's calls before any write.
	leader.ServeRPCVersion(1)
	waitFor(t, "the follower learns the leader's calls", 30*time.Second, func() error {
		writeAll(old)
		if v := old.LeaderRPCVersion(); v != 1 {
			return fmt.Errorf("version %d", v)
		}
		return nil
	})
	writeAll(old)
	if calls, _ := forwardCalls(t, old); calls != 0 {
		t.Fatalf("%d batch calls to a leader that does not serve them", calls)
	}

	// Serving them, it gets batches from the other follower...
	leader.ServeRPCVersion(0)
	waitFor(t, "a batch to the leader", 30*time.Second, func() error {
		writeAll(upgraded)
		if _, batched := forwardCalls(t, upgraded); batched == 0 {
			return errors.New("no batch yet")
		}
		return nil
	})
	// ... until it answers them 404: then one call per write again.
	leader.ServeRPCVersion(1)
	waitFor(t, "the follower notices the 404", 30*time.Second, func() error {
		writeAll(upgraded)
		if v := upgraded.LeaderRPCVersion(); v != 1 {
			return fmt.Errorf("version %d", v)
		}
		return nil
	})
	calls, _ := forwardCalls(t, upgraded)
	writeAll(upgraded)
	if after, _ := forwardCalls(t, upgraded); after != calls {
		t.Fatalf("%d batch calls after the leader answered 404", after-calls)
	}
	if !strings.Contains(upgraded.Logs.String(), "does not serve batches of forwarded writes") {
		t.Error("the follower did not log falling back to one call per write")
	}
}

// A write whose attempt reached a leader that did not answer stays
// unknown when the node closes while it waits to retry: it may have
// applied, so it is never reported as not done (ErrShutdown alone).
func TestWriteUnknownWhenTheNodeClosesBetweenAttempts(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	leader, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var f *testcluster.Node
	for _, n := range c.Nodes() {
		if n != leader {
			if f == nil {
				f = n
			} else {
				n.Kill()
			}
		}
	}
	leader.Kill()
	secret, err := f.Format.Mint("access")
	if err != nil {
		t.Fatal(err)
	}
	issue := &fsm.Issue{TTL: int64(time.Hour), Record: fsm.Record{ID: "unknown-at-close", Hash: f.Hasher.Sum(secret), Kind: "access"}}
	done := make(chan error, 1)
	go func() {
		_, _, err := f.Node.Apply(ctx, issue)
		done <- err
	}()
	waitFor(t, "a retry after an attempt of unknown outcome", 30*time.Second, func() error {
		for _, line := range strings.Split(f.Logs.String(), "\n") {
			if strings.Contains(line, "retrying write") && strings.Contains(line, cluster.ErrOutcomeUnknown.Error()) {
				return nil
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the write ended before it was retried: %v", err)
		default:
		}
		return errors.New("not yet")
	})
	f.Kill()
	select {
	case err := <-done:
		if !errors.Is(err, cluster.ErrOutcomeUnknown) {
			t.Fatalf("closed between attempts, the write answered %v; want %v", err, cluster.ErrOutcomeUnknown)
		}
	case <-ctx.Done():
		t.Fatal("the write did not end when its node closed")
	}
}
