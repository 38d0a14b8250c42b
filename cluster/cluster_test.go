package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/cluster/transport"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/internal/testpki"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, d, err)
		}
		<-time.After(25 * time.Millisecond)
	}
}

func followers(c *testcluster.Cluster) []*testcluster.Node {
	var out []*testcluster.Node
	for _, n := range c.Nodes() {
		if !n.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

func TestWritesOnAnyNodeAndReadConsistency(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, time.Minute)
	if _, err := c.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	fs := followers(c)
	if len(fs) != 2 {
		t.Fatalf("want 2 followers, got %d", len(fs))
	}
	// Issued on a follower: forwarded to the leader, answered as if local.
	iss, err := fs[0].Client.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: "u1"})
	if err != nil {
		t.Fatalf("issue on a follower: %v", err)
	}
	// At once on the other follower with consistency=leader.
	rec, meta, err := fs[1].Client.Lookup(ctx, iss.Token, client.LookupOptions{Consistency: wire.ConsistencyLeader})
	if err != nil || rec.ID != iss.ID {
		t.Fatalf("leader-consistent lookup on another follower: want %s, got %+v, %v", iss.ID, rec, err)
	}
	if meta.Index < iss.Index {
		t.Errorf("leader-consistent read reflects index %d, before the write's %d", meta.Index, iss.Index)
	}
	// Locally on every node after min_index.
	for _, n := range c.Nodes() {
		rec, meta, err := n.Client.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index})
		if err != nil || rec.ID != iss.ID || meta.Index < iss.Index {
			t.Fatalf("min_index lookup on %s: want %s at index >= %d, got %+v at %d, %v", n.ID(), iss.ID, iss.Index, rec, meta.Index, err)
		}
	}
	// Business errors cross the forwarding unchanged.
	if _, err := fs[1].Client.Consume(ctx, wire.ConsumeRequest{Token: iss.Token, ClientID: "other"}); !errors.Is(err, client.ErrClientMismatch) {
		t.Fatalf("forwarded consume with the wrong client: want client_mismatch, got %v", err)
	}
	if _, err := fs[1].Client.Consume(ctx, wire.ConsumeRequest{Token: iss.Token}); err != nil {
		t.Fatalf("forwarded consume: %v", err)
	}
	if _, err := fs[0].Client.Consume(ctx, wire.ConsumeRequest{Token: iss.Token}); !errors.Is(err, client.ErrTokenReused) {
		t.Fatalf("second consume of a code on another follower: want token_reused, got %v", err)
	}
	// A min_index no replica will reach in time: 503 replica_behind, never 404.
	_, _, err = fs[0].Client.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index + 1_000_000})
	if !errors.Is(err, client.ErrReplicaBehind) {
		t.Fatalf("unreachable min_index: want replica_behind, got %v", err)
	}

	st, err := fs[0].Client.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Leader()
	if st.Leader != l.ID() || st.PrimaryDC != "dc1" || len(st.Nodes) != 3 {
		t.Fatalf("/v1/cluster: want leader %s, primary dc1, 3 nodes, got %+v", l.ID(), st)
	}
	for _, n := range st.Nodes {
		want := "voter"
		if n.ID == l.ID() {
			want = "leader"
		}
		if n.Role != want || !n.Healthy || n.DC != "dc1" || n.APIAddr == "" || n.RaftAddr == "" || n.AppliedIndex == 0 {
			t.Errorf("/v1/cluster node %+v: want role %s, healthy, dc1, addresses and an applied index", n, want)
		}
	}
}

// consumeLoad issues tokens and consumes each from a random node while
// the test does something to the cluster; it records every acknowledged
// issue and every successful consume.
type consumeLoad struct {
	mu        sync.Mutex
	issued    map[string]string // token -> id, acknowledged
	consumed  map[string]int    // token -> successful consumes
	failures  atomic.Int64
	firstFail atomic.Value
}

func runConsumeLoad(ctx context.Context, nodes func() []*testcluster.Node, workers int) *consumeLoad {
	l := &consumeLoad{issued: map[string]string{}, consumed: map[string]int{}}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				ns := nodes()
				n := ns[(w+i)%len(ns)]
				rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				iss, err := n.Client.Issue(rctx, wire.IssueRequest{Kind: "oauth2_code", Subject: fmt.Sprint("w", w)})
				cancel()
				if ctx.Err() != nil {
					return // stopped: what was in flight proves nothing
				}
				if err != nil {
					l.fail(err)
					continue
				}
				l.mu.Lock()
				l.issued[iss.Token] = iss.ID
				l.mu.Unlock()
				n = ns[(w+i+1)%len(ns)]
				rctx, cancel = context.WithTimeout(ctx, 15*time.Second)
				_, err = n.Client.Consume(rctx, wire.ConsumeRequest{Token: iss.Token})
				cancel()
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					l.fail(err)
					continue
				}
				l.mu.Lock()
				l.consumed[iss.Token]++
				l.mu.Unlock()
			}
		}()
	}
	go func() { wg.Wait() }()
	return l
}

func (l *consumeLoad) fail(err error) {
	l.failures.Add(1)
	l.firstFail.CompareAndSwap(nil, err.Error())
}

func (l *consumeLoad) counts() (issued, consumed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.issued), len(l.consumed)
}

// check verifies, through a leader read, that every acknowledged token is
// there and every acknowledged consume stuck, and that no token was
// consumed twice.
func (l *consumeLoad) check(t *testing.T, ctx context.Context, n *testcluster.Node) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for tok, id := range l.issued {
		if k := l.consumed[tok]; k > 1 {
			t.Fatalf("token %s consumed %d times", id, k)
		}
		rec, err := n.Client.Get(ctx, id)
		if err != nil {
			t.Fatalf("acknowledged token %s lost: %v", id, err)
		}
		if l.consumed[tok] == 1 && rec.Status != "consumed" {
			t.Fatalf("acknowledged consume of %s lost: status %s", id, rec.Status)
		}
	}
}

// leaderGoesUnderLoad runs a consume load of so many workers on the
// followers of a three-node cluster, takes the leader away with stop (a
// crash or a shutdown), requires writes to go on, and checks that no
// acknowledged write was lost and no token consumed twice. It returns the
// load and the survivors.
func leaderGoesUnderLoad(t *testing.T, workers int, stop func(leader *testcluster.Node)) (*consumeLoad, []*testcluster.Node) {
	t.Helper()
	c := testcluster.StartCluster(t, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	old, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	survivors := followers(c)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	// The load goes to the survivors, so that no request is lost with the
	// old leader's own HTTP server.
	load := runConsumeLoad(loadCtx, func() []*testcluster.Node { return survivors }, workers)
	consumedAtLeast := func(what string, n int) {
		t.Helper()
		waitFor(t, what, 30*time.Second, func() error {
			if _, k := load.counts(); k < n {
				return fmt.Errorf("%d consumed, want %d", k, n)
			}
			return nil
		})
	}
	consumedAtLeast("consumes before the leader goes", 50)
	stop(old)
	_, before := load.counts()
	consumedAtLeast("consumes after the leader went", before+50)
	stopLoad()
	var leader *testcluster.Node
	for _, n := range survivors {
		if n.IsLeader() {
			leader = n
		}
	}
	if leader == nil {
		t.Fatal("no leader among the survivors")
	}
	load.check(t, ctxFor(t, time.Minute), leader)
	issued, consumed := load.counts()
	t.Logf("issued %d, consumed %d, failed requests %d (first: %v)", issued, consumed, load.failures.Load(), load.firstFail.Load())
	return load, survivors
}

func TestLeaderKilledUnderConsumeLoad(t *testing.T) {
	leaderGoesUnderLoad(t, 8, func(leader *testcluster.Node) { leader.Kill() })
}

func TestGracefulLeaderShutdownLosesNoWrite(t *testing.T) {
	load, _ := leaderGoesUnderLoad(t, 8, func(leader *testcluster.Node) {
		leader.Stop()
		if !strings.Contains(leader.Logs.String(), "handed leadership over before shutdown") {
			t.Errorf("the leader did not hand leadership over:\n%s", leader.Logs.String())
		}
	})
	if f := load.failures.Load(); f != 0 {
		t.Errorf("graceful leader shutdown: %d writes failed (first: %v), want none", f, load.firstFail.Load())
	}
}

// TestTwoDCs: voters in DC a, a non-voter in DC b serving local reads with
// read-your-writes, and leadership returning to the primary DC a after it
// moved to a voter in DC b.
func TestTwoDCs(t *testing.T) {
	a := testcluster.Options{DC: "a", PrimaryDC: "a"}
	bVoter := testcluster.Options{DC: "b", PrimaryDC: "a"}
	bReplica := testcluster.Options{DC: "b", PrimaryDC: "a", NonVoter: true}
	c := testcluster.StartCluster(t, a, a, bVoter, bReplica)
	ctx := ctxFor(t, 2*time.Minute)
	replica := c.Node(3)
	waitFor(t, "the non-voter added", 30*time.Second, func() error {
		st := replica.ClusterStatus(ctx)
		for _, n := range st.Nodes {
			if n.ID == replica.ID() && n.Role == "nonvoter" {
				return nil
			}
		}
		return fmt.Errorf("cluster %+v", st)
	})
	leader, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if leader.Opts.DC != "a" {
		waitFor(t, "leadership in the primary DC", 30*time.Second, func() error {
			if l := c.Leader(); l == nil || l.Opts.DC != "a" {
				return errors.New("not yet")
			}
			return nil
		})
	}

	// Written in DC a, read in DC b: at once with min_index.
	iss, err := c.Node(0).Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "u"})
	if err != nil {
		t.Fatal(err)
	}
	rec, meta, err := replica.Client.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index})
	if err != nil || rec.ID != iss.ID || meta.DC != "b" {
		t.Fatalf("read-your-writes in DC b: want %s answered by DC b, got %+v from %q, %v", iss.ID, rec, meta.DC, err)
	}
	// The non-voter's local reads need no other node.
	waitFor(t, "the replica has the token locally", 10*time.Second, func() error {
		_, _, err := replica.Client.Lookup(ctx, iss.Token, client.LookupOptions{})
		return err
	})
	if replica.IsLeader() {
		t.Fatal("a non-voter leads")
	}

	// Move leadership to DC b's voter; the primary DC takes it back.
	l := c.Leader()
	bv := c.Node(2)
	if err := l.TransferLeadership(bv.ID(), bv.RaftAddr()); err != nil {
		t.Fatalf("transfer to DC b: %v", err)
	}
	waitFor(t, "leadership back in DC a", 45*time.Second, func() error {
		l := c.Leader()
		if l == nil || l.Opts.DC != "a" {
			return fmt.Errorf("leader %v", l)
		}
		return nil
	})
	if !strings.Contains(bv.Logs.String(), "moving leadership to the primary DC") {
		t.Errorf("DC b's leader never moved leadership to DC a:\n%s", bv.Logs.String())
	}
}

func TestRestartedNodeRejoinsAndDeadNodeIsRemoved(t *testing.T) {
	o := testcluster.Options{DeadNodeTimeout: 3 * time.Second}
	c := testcluster.StartCluster(t, o, o, o)
	ctx := ctxFor(t, 2*time.Minute)
	leader, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for c.Node(i) == leader {
		i++
	}
	id := c.Node(i).ID()
	n := c.Restart(i)
	if n.ID() != id {
		t.Fatalf("restarted node has id %s, want %s", n.ID(), id)
	}
	iss, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access"})
	if err != nil {
		t.Fatalf("write through the restarted node: %v", err)
	}
	if st := c.Leader().ClusterStatus(ctx); len(st.Nodes) != 3 {
		t.Fatalf("after a restart: want 3 servers, no duplicate, got %+v", st.Nodes)
	}
	if _, _, err := n.Client.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index}); err != nil {
		t.Fatal(err)
	}

	// Killed for good: removed after DeadNodeTimeout.
	n.Kill()
	waitFor(t, "the dead node removed from raft", 45*time.Second, func() error {
		l := c.Leader()
		if l == nil {
			return errors.New("no leader")
		}
		st := l.ClusterStatus(ctx)
		for _, s := range st.Nodes {
			if s.ID == id {
				return fmt.Errorf("still in the configuration: %+v", s)
			}
		}
		return nil
	})
}

func TestTLSRejectsAStrangerAndWrongGossipKey(t *testing.T) {
	ca := testpki.New(t)
	tlsFor := func(name string, ca *testpki.CA) testcluster.Options {
		f := ca.Issue(t, name)
		conf, err := transport.LoadTLS(transport.TLSFiles{Cert: f.Cert, Key: f.Key, CA: f.CA})
		if err != nil {
			t.Fatal(err)
		}
		return testcluster.Options{TLS: conf, GossipKeys: [][]byte{[]byte("0123456789abcdef")}}
	}
	c := testcluster.StartCluster(t, tlsFor("n1", ca), tlsFor("n2", ca), tlsFor("n3", ca))
	ctx := ctxFor(t, time.Minute)
	if _, err := c.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	iss, err := followers(c)[0].Client.Issue(ctx, wire.IssueRequest{Kind: "access"})
	if err != nil {
		t.Fatalf("forwarded write over mutual TLS: %v", err)
	}

	// Right gossip key, certificate from another CA: gossip sees it, but
	// Raft never accepts it.
	stranger := tlsFor("x", testpki.New(t))
	stranger.Join = []string{c.Node(0).GossipAddr()}
	x := testcluster.Start(t, stranger)
	// Wrong gossip key, good certificate: never seen at all.
	wrongKey := tlsFor("y", ca)
	wrongKey.GossipKeys = [][]byte{[]byte("fedcba9876543210")}
	wrongKey.Join = []string{c.Node(0).GossipAddr()}
	y := testcluster.Start(t, wrongKey)

	leader := c.Leader()
	waitFor(t, "the stranger seen by gossip and refused", 30*time.Second, func() error {
		if !strings.Contains(leader.Logs.String(), "does not answer as itself") || !strings.Contains(leader.Logs.String(), x.ID()) {
			return errors.New("no refused attempt to add it yet")
		}
		return nil
	})
	for _, n := range leader.ClusterStatus(ctx).Nodes {
		if n.ID == x.ID() || n.ID == y.ID() {
			t.Fatalf("a node without a valid certificate or key is in the cluster: %+v", n)
		}
	}
	if x.Ready() == nil || y.Ready() == nil {
		t.Fatal("a rejected node reports ready")
	}
	if _, _, err := x.Client.Lookup(ctx, iss.Token, client.LookupOptions{Consistency: wire.ConsistencyLeader}); err == nil {
		t.Fatal("a node outside the cluster answered a leader read")
	}
}
