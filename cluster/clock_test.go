package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/testcluster"
)

// skewedClock is a node's wall clock: the machine's, moved by an offset
// the test sets, as a host's clock set wrong or stepped by NTP would be.
type skewedClock struct{ offset atomic.Int64 }

func (c *skewedClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *skewedClock) set(d time.Duration) { c.offset.Store(int64(d)) }

// clockCluster starts three voters, each with a clock of its own, and
// returns them with the index of the node that leads.
func clockCluster(t *testing.T, o testcluster.Options) (*testcluster.Cluster, []*skewedClock) {
	t.Helper()
	clocks := make([]*skewedClock, 3)
	opts := make([]testcluster.Options, 3)
	for i := range clocks {
		clocks[i] = &skewedClock{}
		opts[i] = o
		opts[i].Clock = clocks[i].Now
	}
	return testcluster.StartCluster(t, opts...), clocks
}

func leaderIndex(t *testing.T, ctx context.Context, c *testcluster.Cluster) int {
	t.Helper()
	l, err := c.WaitForLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range c.Nodes() {
		if n == l {
			return i
		}
	}
	t.Fatal("the leader is not among the nodes")
	return -1
}

// metric sums the samples of the named counter or gauge with the given
// node label ("" for any) in n's registry.
func metric(t *testing.T, n *testcluster.Node, name, node string) float64 {
	t.Helper()
	return labeledMetric(t, n, name, "node", node)
}

// labeledMetric sums the samples of the named counter or gauge whose
// label is value ("" for any) in n's registry.
func labeledMetric(t *testing.T, n *testcluster.Node, name, label, value string) float64 {
	t.Helper()
	mfs, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if value != "" {
				match := false
				for _, l := range m.GetLabel() {
					match = match || (l.GetName() == label && l.GetValue() == value)
				}
				if !match {
					continue
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// waitOffset polls until the leader's estimate of n's clock is off its
// own by about want.
func waitOffset(t *testing.T, leader, n *testcluster.Node, want time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the leader sampled %s's clock %s off", n.ID(), want), 30*time.Second, func() error {
		off := time.Duration(metric(t, leader, "tokenstore_voter_clock_offset_seconds", n.ID()) * float64(time.Second))
		if off < want-time.Minute || off > want+time.Minute {
			return fmt.Errorf("offset %s", off)
		}
		return nil
	})
}

// issueBetween issues a token on n with ttl and returns its creation and
// expiry (log time, as the leader's replica stores them) and the true
// clock read just before and just after the call.
func issueBetween(t *testing.T, ctx context.Context, n, leader *testcluster.Node, clock func() time.Time, ttl time.Duration) (created, expires, before, after time.Time) {
	t.Helper()
	before = clock()
	iss, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access", TTL: ttl.String()})
	after = clock()
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	waitFor(t, "the leader applied the issue", 10*time.Second, func() error {
		if leader.AppliedIndex() < iss.Index {
			return fmt.Errorf("applied %d, want %d", leader.AppliedIndex(), iss.Index)
		}
		return nil
	})
	r, err := leader.ByID(iss.ID)
	if err != nil {
		t.Fatalf("read issued token %s on the leader: %v", iss.ID, err)
	}
	if r == nil {
		t.Fatalf("issued token %s missing on the leader", iss.ID)
	}
	return time.Unix(0, r.CreatedAt), time.Unix(0, r.ExpiresAt), before, after
}

// margin bounds how far log time may be from the true clock read around
// an issue: the slack, a sample's age error, and a slow machine. The
// wrong clocks below are an hour off.
const margin = 5 * time.Second

func checkCreated(t *testing.T, what string, created, expires, before, after time.Time, ttl time.Duration) {
	t.Helper()
	if created.Before(before.Add(-margin)) || created.After(after.Add(margin)) {
		t.Errorf("%s: created_at %s, want between %s and %s (true clock ± %s)", what,
			created.UTC(), before.Add(-margin).UTC(), after.Add(margin).UTC(), margin)
	}
	if got := expires.Sub(created); got != ttl {
		t.Errorf("%s: expires_at - created_at = %s, want the ttl %s", what, got, ttl)
	}
}

func TestWrongClockCannotExpireTheStore(t *testing.T) {
	c, clocks := clockCluster(t, testcluster.Options{GCTick: 50 * time.Millisecond})
	ctx := ctxFor(t, 2*time.Minute)
	li := leaderIndex(t, ctx, c)
	leader := c.Node(li)
	fi, oi := (li+1)%3, (li+2)%3
	follower, trueClock := c.Node(fi), clocks[oi].Now

	// A token issued while every clock agrees.
	old, err := follower.Client.Issue(ctx, wire.IssueRequest{Kind: "access", TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}

	// One follower's clock 1h ahead changes nothing.
	clocks[fi].set(time.Hour)
	waitOffset(t, leader, follower, time.Hour)
	created, expires, before, after := issueBetween(t, ctx, c.Node(oi), leader, trueClock, 10*time.Minute)
	checkCreated(t, "a follower's clock 1h ahead", created, expires, before, after, 10*time.Minute)
	if k := metric(t, leader, "tokenstore_clock_clamped_total", ""); k != 0 {
		t.Errorf("a follower's clock 1h ahead: the leader clamped %v batches, want none", k)
	}
	clocks[fi].set(0)
	waitOffset(t, leader, follower, 0) // else two clocks would be 1h ahead below

	// The leader's clock 1h ahead: log time stays with the voters.
	clocks[li].set(time.Hour)
	created, expires, before, after = issueBetween(t, ctx, follower, leader, trueClock, 10*time.Minute)
	checkCreated(t, "the leader's clock 1h ahead", created, expires, before, after, 10*time.Minute)
	if k := metric(t, leader, "tokenstore_clock_clamped_total", ""); k == 0 {
		t.Error("the leader's clock 1h ahead: tokenstore_clock_clamped_total is 0 on the leader, want > 0")
	}
	if !strings.Contains(leader.Logs.String(), "log time clamped") {
		t.Error("the leader's clock 1h ahead: no clamp logged")
	}

	// GC runs by log time: a token due by the true time goes, the token
	// issued before the jump (due in 10m) stays and is served as valid.
	due, err := follower.Client.Issue(ctx, wire.IssueRequest{Kind: "access", TTL: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "GC collected the token due by the true time", 30*time.Second, func() error {
		r, err := leader.ByID(due.ID)
		if err != nil {
			return err
		}
		if r != nil {
			return fmt.Errorf("token %s still there", due.ID)
		}
		return nil
	})
	if r, err := leader.ByID(old.ID); err != nil {
		t.Fatalf("read token %s on the leader: %v", old.ID, err)
	} else if r == nil {
		t.Fatalf("GC collected token %s, due only in 10 minutes by the true time", old.ID)
	}
	rec, _, err := follower.Client.Lookup(ctx, old.Token, client.LookupOptions{Consistency: wire.ConsistencyLeader})
	if err != nil || rec.Status != "active" {
		t.Fatalf("token issued before the leader's clock jumped: want active, got %+v, %v", rec, err)
	}
	if !leader.IsLeader() {
		t.Log("leadership moved during the test; the clamp count above may be of an earlier term")
	}
}

// After an outage of the whole cluster, log time catches up at once: the
// clocks agree, nothing is clamped, and a 1h token lives 1h.
func TestRestartAfterALongOutage(t *testing.T) {
	c, clocks := clockCluster(t, testcluster.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	leaderIndex(t, ctx, c)
	if _, err := c.Node(0).Client.Issue(ctx, wire.IssueRequest{Kind: "access", TTL: "1h"}); err != nil {
		t.Fatal(err)
	}

	c.KillAll()
	for _, cl := range clocks {
		cl.set(2 * time.Hour)
	}
	c.RestartAll()
	leader := c.Node(leaderIndex(t, ctx, c))
	created, expires, before, after := issueBetween(t, ctx, c.Node(0), leader, clocks[0].Now, time.Hour)
	checkCreated(t, "after a 2h outage", created, expires, before, after, time.Hour)
	for _, n := range c.Nodes() {
		if k := metric(t, n, "tokenstore_clock_clamped_total", ""); k != 0 {
			t.Errorf("after a 2h outage with agreeing clocks: node %s clamped %v batches, want none", n.ID(), k)
		}
	}
}
