package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
)

// cnode is one process of a multi-process cluster.
type cnode struct {
	*daemon
	id, dc            string
	voter             bool
	gossip, gossipLAN string   // WAN and LAN gossip addresses
	flags             []string // everything but --join
	c                 *client.Client
}

type nodeSpec struct {
	id, dc   string // dc defaults to dc1
	nonvoter bool
	flags    []string
}

// planNodes prepares one process per spec, not started, with its own data
// directory and four reserved addresses (API, Raft, WAN and LAN gossip).
// When the test fails, the end of every node's log is printed.
func planNodes(t *testing.T, specs ...nodeSpec) []*cnode {
	t.Helper()
	addrs := freeAddrs(t, 4*len(specs))
	nodes := make([]*cnode, len(specs))
	for i, s := range specs {
		a := addrs[4*i : 4*i+4]
		dc := s.dc
		if dc == "" {
			dc = "dc1"
		}
		d := &daemon{t: t, dataDir: t.TempDir(), apiAddr: a[0], raftAddr: a[1],
			logPath: filepath.Join(t.TempDir(), s.id+".log")}
		n := &cnode{daemon: d, id: s.id, dc: dc, voter: !s.nonvoter, gossip: a[2], gossipLAN: a[3],
			c: client.New("http://" + a[0])}
		n.flags = append([]string{"--node-id", s.id, "--dc", dc, "--gossip-addr", a[2], "--gossip-lan-addr", a[3]}, s.flags...)
		if s.nonvoter {
			n.flags = append(n.flags, "--nonvoter")
		}
		nodes[i] = n
	}
	// Registered before any process starts, so it runs after they are
	// killed and their logs are complete.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range nodes {
			if n.cmd != nil {
				t.Logf("--- end of %s's log (%s) ---\n%s", n.id, n.apiAddr, tail(n.logs(), 150))
			}
		}
	})
	return nodes
}

func voters(ids ...string) []nodeSpec {
	var out []nodeSpec
	for _, id := range ids {
		out = append(out, nodeSpec{id: id, flags: []string{"--bootstrap-expect", fmt.Sprint(len(ids))}})
	}
	return out
}

// run starts the process, joining through the given gossip addresses,
// without waiting for it to be ready.
func (n *cnode) run(join ...string) {
	n.t.Helper()
	n.args = n.argsJoining(join)
	n.daemon.launch()
}

// restart starts the process again on its data directory and addresses,
// joining through join, and waits until it is ready.
func (n *cnode) restart(join ...string) {
	n.t.Helper()
	n.args = n.argsJoining(join)
	n.daemon.start()
}

func (n *cnode) argsJoining(join []string) []string {
	args := slices.Clone(n.flags)
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	return args
}

// formCluster starts every node, the first joining through the second's
// gossip address and every other one through the first's, then waits
// until all of them are ready.
func formCluster(t *testing.T, nodes []*cnode) {
	t.Helper()
	for i, n := range nodes {
		if i == 0 {
			n.run(nodes[1].gossip)
		} else {
			n.run(nodes[0].gossip)
		}
	}
	for _, n := range nodes {
		n.waitReady()
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
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
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still not after %s: %v", what, d, err)
		}
		<-time.After(25 * time.Millisecond)
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

// readyz returns the status code of the node's /readyz.
func (d *daemon) readyz() (int, error) {
	resp, err := probe.Get("http://" + d.apiAddr + "/readyz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (n *cnode) cluster() (*wire.ClusterResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.c.Cluster(ctx)
}

func byID(nodes []*cnode, id string) *cnode {
	for _, n := range nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

func others(nodes []*cnode, not *cnode) []*cnode {
	var out []*cnode
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
func checkView(st *wire.ClusterResponse, nodes []*cnode) error {
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.id)
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
		if !n.voter {
			role = "nonvoter"
		}
		if s.ID == st.Leader {
			if !n.voter {
				return fmt.Errorf("non-voter %s is named leader: %+v", s.ID, st.Nodes)
			}
			role = "leader"
		}
		if s.Role == "leader" {
			leaders++
		}
		if s.Role != role || s.DC != n.dc || !s.Healthy || s.APIAddr != n.apiAddr || s.RaftAddr != n.raftAddr {
			return fmt.Errorf("node %s: want role %s, dc %s, healthy, api %s, raft %s; got %+v (leader %s)",
				s.ID, role, n.dc, n.apiAddr, n.raftAddr, s, st.Leader)
		}
	}
	if leaders != 1 {
		return fmt.Errorf("want exactly one node in role leader, got %d: %+v", leaders, st.Nodes)
	}
	return nil
}

// waitView waits until every one of askers answers /v1/cluster with
// exactly nodes, and all of them name the same leader.
func waitView(t *testing.T, askers, nodes []*cnode) {
	t.Helper()
	waitFor(t, fmt.Sprintf("every node to list %d healthy nodes and one leader", len(nodes)), 30*time.Second, func() error {
		leader := ""
		for _, a := range askers {
			st, err := a.cluster()
			if err != nil {
				return fmt.Errorf("GET /v1/cluster on %s: %v", a.id, err)
			}
			if err := checkView(st, nodes); err != nil {
				return fmt.Errorf("/v1/cluster on %s: %v", a.id, err)
			}
			if leader != "" && st.Leader != leader {
				return fmt.Errorf("%s names leader %s, another node %s", a.id, st.Leader, leader)
			}
			leader = st.Leader
		}
		return nil
	})
}

// waitLeader returns the node that the first answering node of nodes
// names as leader, once that node is among nodes and ready.
func waitLeader(t *testing.T, nodes []*cnode) *cnode {
	t.Helper()
	var l *cnode
	waitFor(t, "a ready leader", 30*time.Second, func() error {
		var errs []error
		for _, n := range nodes {
			st, err := n.cluster()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %v", n.id, err))
				continue
			}
			if l = byID(nodes, st.Leader); l == nil {
				return fmt.Errorf("%s names leader %q, want one of the running nodes", n.id, st.Leader)
			}
			if code, err := l.readyz(); code != 200 {
				return fmt.Errorf("leader %s: /readyz %d, %v", l.id, code, err)
			}
			return nil
		}
		return errors.Join(errs...)
	})
	return l
}

type consumeLoad struct {
	stop     chan struct{}
	haltOnce sync.Once
	wg       sync.WaitGroup

	mu       sync.Mutex
	targets  []*cnode
	issued   map[string]string // acknowledged issues: token -> id
	wins     map[string]int    // token -> consumes answered 200
	answered map[string]int    // token -> consumes answered 200 or 410 token_reused
	consumed int               // tokens with a successful consume
	nFailed  int               // failed requests to nodes still targeted
	failed   []string          // the first few of them
	dropped  int               // failed requests to a node taken out of the load
}

func startConsumeLoad(t *testing.T, targets []*cnode, workers int) *consumeLoad {
	l := &consumeLoad{stop: make(chan struct{}), targets: targets,
		issued: map[string]string{}, wins: map[string]int{}, answered: map[string]int{}}
	for w := range workers {
		l.wg.Add(1)
		go l.work(w)
	}
	t.Cleanup(l.halt)
	return l
}

// halt stops the load and waits for the requests in flight.
func (l *consumeLoad) halt() {
	l.haltOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// route sends the load only to targets from now on; failures of requests
// to nodes left out count as dropped, not failed.
func (l *consumeLoad) route(targets []*cnode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.targets = targets
}

func (l *consumeLoad) consumedTokens() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.consumed
}

func (l *consumeLoad) failure(n *cnode, what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.targets, n) {
		l.dropped++
		return
	}
	l.nFailed++
	if len(l.failed) < 5 {
		l.failed = append(l.failed, fmt.Sprintf("%s on %s: %v", what, n.id, err))
	}
}

func (l *consumeLoad) work(w int) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		l.mu.Lock()
		ns := l.targets
		l.mu.Unlock()
		a := ns[(w+i)%len(ns)]
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		iss, err := a.c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: fmt.Sprintf("load:%d", w), ClientID: "app1"})
		cancel()
		if err != nil {
			l.failure(a, "issue", err)
			select { // no hot loop against a node that fails at once
			case <-l.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		l.mu.Lock()
		l.issued[iss.Token] = iss.ID
		l.mu.Unlock()
		var race sync.WaitGroup
		for k := 1; k <= 2; k++ {
			b := ns[(w+i+k)%len(ns)] // two different nodes, as len(ns) >= 2
			race.Add(1)
			go func() {
				defer race.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := b.c.Consume(ctx, wire.ConsumeRequest{Token: iss.Token, Kind: "oauth2_code", ClientID: "app1"})
				cancel()
				switch {
				case err == nil:
					l.mu.Lock()
					l.wins[iss.Token]++
					l.answered[iss.Token]++
					if l.wins[iss.Token] == 1 {
						l.consumed++
					}
					l.mu.Unlock()
				case errors.Is(err, client.ErrTokenReused): // a code presented twice
					l.mu.Lock()
					l.answered[iss.Token]++
					l.mu.Unlock()
				default:
					l.failure(b, "consume", err)
				}
			}()
		}
		race.Wait()
	}
}

func (l *consumeLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d issues acknowledged, %d tokens consumed, %d failed requests %q, %d dropped with a node taken out",
		len(l.issued), l.consumed, l.nFailed, l.failed, l.dropped)
}

// check reads every acknowledged token by id on n (a ready leader): it is
// there, a consume answered 200 stuck, no token was consumed twice, and
// when both consumers got an answer exactly one of them got 200. Call it
// after halt.
func (l *consumeLoad) check(t *testing.T, n *cnode) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	l.mu.Lock()
	defer l.mu.Unlock()
	bad := 0
	report := func(format string, args ...any) {
		t.Helper()
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for tok, id := range l.issued {
		rec, err := n.c.Get(ctx, id)
		if err != nil {
			report("acknowledged issue of %s: want it on %s, got %v", id, n.id, err)
			continue
		}
		wins, answered := l.wins[tok], l.answered[tok]
		switch {
		case wins > 1:
			report("token %s: want at most one successful consume, got %d", id, wins)
		case wins == 1 && rec.Status != "consumed":
			report("token %s: consume was acknowledged, want status consumed on %s, got %q", id, n.id, rec.Status)
		case answered == 2 && wins == 0:
			report("token %s: both consumes were answered token_reused, want exactly one 200 (status %q)", id, rec.Status)
		case rec.Status != "active" && rec.Status != "consumed":
			report("token %s: want status active or consumed, got %q", id, rec.Status)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d acknowledged tokens are wrong on %s; load: %s", bad, len(l.issued), n.id, l.summary())
	}
}
