package systemtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// node is one `tokenstore serve` process of a test: the harness's node,
// its API client, and the test it fails.
type node struct {
	*proccluster.Node
	t *testing.T
	c *client.Client
}

// readyTimeout bounds the wait until a process is ready.
const readyTimeout = 30 * time.Second

// probe answers health checks (proccluster.Probe): a node that hangs
// must not stall a poll.
var probe = proccluster.Probe

// tail is the last lines of a log (proccluster.Tail).
var tail = proccluster.Tail

func newNode(t *testing.T, n *proccluster.Node) *node {
	return &node{Node: n, t: t, c: client.New(n.URL())}
}

// startDaemon runs serve on dataDir and waits until /readyz is 200; the
// process is killed when the test ends.
func startDaemon(t *testing.T, dataDir string, args ...string) *node {
	t.Helper()
	pn, err := proccluster.NewNode(proccluster.NodeConfig{Binary: binary, Dir: t.TempDir(), DataDir: dataDir,
		Flags: args, LogLevel: "debug", ReadyTimeout: readyTimeout})
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, pn)
	t.Cleanup(n.Kill)
	n.start()
	return n
}

// start runs the process, again on the same data directory, addresses
// and arguments after a kill or a stop, and waits until it is ready.
func (n *node) start() {
	n.t.Helper()
	if err := n.Start(context.Background()); err != nil {
		n.t.Fatal(err)
	}
}

// run starts the process, joining through the given gossip addresses,
// without waiting for it to be ready.
func (n *node) run(join ...string) {
	n.t.Helper()
	n.Join = join
	if err := n.Launch(); err != nil {
		n.t.Fatal(err)
	}
}

// restart starts the process again on its data directory and addresses,
// joining through join, and waits until it is ready.
func (n *node) restart(join ...string) {
	n.t.Helper()
	n.Join = join
	n.start()
}

func (n *node) waitReady() {
	n.t.Helper()
	if err := n.WaitReady(context.Background()); err != nil {
		n.t.Fatal(err)
	}
}

// stop sends SIGTERM and returns the exit error once the process is gone;
// one that ignores SIGTERM for a minute is killed, and that is an error.
func (n *node) stop() error { return n.Stop(time.Minute) }

func (n *node) logs() string { return n.Log() }

// readyz returns the status code of the node's /readyz.
func (n *node) readyz() (int, error) {
	resp, err := probe.Get(n.URL() + "/readyz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// pause stops the process with SIGSTOP, by its pid, and waits until the
// kernel reports it stopped; it is continued when the test ends.
func (n *node) pause() {
	n.t.Helper()
	if err := n.Pause(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(n.resume)
}

// resume continues a paused process.
func (n *node) resume() { n.Resume() }

// planNodes lays out one process per spec, not started, with its own data
// directory and four reserved addresses (API, Raft, WAN and LAN gossip);
// the first joins through the second's gossip address, every other one
// through the first's. When the test fails, the end of every node's log
// is printed.
func planNodes(t *testing.T, specs ...proccluster.NodeSpec) []*node {
	t.Helper()
	c, err := proccluster.NewCluster(proccluster.ClusterConfig{Binary: binary, Dir: t.TempDir(), Specs: specs,
		LogLevel: "debug", ReadyTimeout: readyTimeout})
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*node, len(c.Nodes))
	for i, n := range c.Nodes {
		nodes[i] = newNode(t, n)
	}
	// Registered before the kill, so it runs after the processes are
	// killed and their logs are complete.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range nodes {
			if n.Proc() != nil {
				t.Logf("--- end of %s's log (%s) ---\n%s", n.ID, n.API, tail(n.logs(), 150))
			}
		}
	})
	t.Cleanup(c.Kill)
	return nodes
}

func voters(ids ...string) []proccluster.NodeSpec {
	var out []proccluster.NodeSpec
	for _, id := range ids {
		out = append(out, proccluster.NodeSpec{ID: id, Flags: []string{"--bootstrap-expect", fmt.Sprint(len(ids))}})
	}
	return out
}

// formCluster starts the nodes in order, each joining through its Join
// addresses (see planNodes), then waits until all of them are ready.
func formCluster(t *testing.T, nodes []*node) {
	t.Helper()
	var pn []*proccluster.Node
	for _, n := range nodes {
		pn = append(pn, n.Node)
	}
	if err := proccluster.StartNodes(context.Background(), pn...); err != nil {
		t.Fatal(err)
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it returns nil; past the deadline the test
// fails with what was awaited and cond's last answer.
func waitFor(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	err := proccluster.Poll(context.Background(), d, 25*time.Millisecond, func(context.Context) error { return cond() })
	if err != nil {
		t.Fatalf("waiting for %s: still not after %s: %v", what, d, err)
	}
}

// holdFor checks cond repeatedly for d; the test fails at the first
// violation.
func holdFor(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for checks := 0; checks == 0 || time.Now().Before(deadline); checks++ {
		if err := cond(); err != nil {
			t.Fatalf("%s: violated after %d checks: %v", what, checks, err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

func (n *node) cluster() (*wire.ClusterResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.c.Cluster(ctx)
}

func byID(nodes []*node, id string) *node {
	for _, n := range nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

func others(nodes []*node, not *node) []*node {
	var out []*node
	for _, n := range nodes {
		if n != not {
			out = append(out, n)
		}
	}
	return out
}

// checkView compares a /v1/cluster answer with the nodes that should make
// up the cluster: each exactly once, in its DC, with its addresses, role
// and health; exactly one leader, a voter, named as the leader.
func checkView(st *wire.ClusterResponse, nodes []*node) error {
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	if len(st.Nodes) != len(nodes) {
		return fmt.Errorf("want %d nodes %v, got %d: %+v", len(nodes), ids, len(st.Nodes), st.Nodes)
	}
	if st.Leader == "" {
		return fmt.Errorf("want a leader, got none: %+v", st.Nodes)
	}
	seen := map[string]bool{}
	leaders := 0
	for _, s := range st.Nodes {
		if seen[s.ID] {
			return fmt.Errorf("node %s listed twice: %+v", s.ID, st.Nodes)
		}
		seen[s.ID] = true
		n := byID(nodes, s.ID)
		if n == nil {
			return fmt.Errorf("unexpected node %s (want only %v): %+v", s.ID, ids, st.Nodes)
		}
		role := "voter"
		if !n.Voter {
			role = "nonvoter"
		}
		if s.ID == st.Leader {
			if !n.Voter {
				return fmt.Errorf("non-voter %s is named leader: %+v", s.ID, st.Nodes)
			}
			role = "leader"
		}
		if s.Role == "leader" {
			leaders++
		}
		if s.Role != role || s.DC != n.DC || !s.Healthy || s.APIAddr != n.API || s.RaftAddr != n.Raft {
			return fmt.Errorf("node %s: want role %s, dc %s, healthy, api %s, raft %s; got %+v (leader %s)",
				s.ID, role, n.DC, n.API, n.Raft, s, st.Leader)
		}
	}
	if leaders != 1 {
		return fmt.Errorf("want exactly one node in role leader, got %d: %+v", leaders, st.Nodes)
	}
	return nil
}

// waitView waits until every one of askers answers /v1/cluster with
// exactly nodes, and all of them name the same leader.
func waitView(t *testing.T, askers, nodes []*node) {
	t.Helper()
	waitFor(t, fmt.Sprintf("every node to list %d healthy nodes and one leader", len(nodes)), 30*time.Second, func() error {
		leader := ""
		for _, a := range askers {
			st, err := a.cluster()
			if err != nil {
				return fmt.Errorf("GET /v1/cluster on %s: %v", a.ID, err)
			}
			if err := checkView(st, nodes); err != nil {
				return fmt.Errorf("/v1/cluster on %s: %v", a.ID, err)
			}
			if leader != "" && st.Leader != leader {
				return fmt.Errorf("%s names leader %s, another node %s", a.ID, st.Leader, leader)
			}
			leader = st.Leader
		}
		return nil
	})
}

// waitLeader returns the node that the first answering node of nodes
// names as leader, once that node is among nodes and ready.
func waitLeader(t *testing.T, nodes []*node) *node {
	t.Helper()
	var l *node
	waitFor(t, "a ready leader", 30*time.Second, func() error {
		var errs []error
		for _, n := range nodes {
			st, err := n.cluster()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", n.ID, err))
				continue
			}
			if l = byID(nodes, st.Leader); l == nil {
				return fmt.Errorf("%s names leader %q, want one of the running nodes", n.ID, st.Leader)
			}
			if code, err := l.readyz(); code != 200 {
				return fmt.Errorf("leader %s: /readyz %d, %v", l.ID, code, err)
			}
			return nil
		}
		return errors.Join(errs...)
	})
	return l
}
