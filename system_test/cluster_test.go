package systemtest

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/proccluster"
	"github.com/tokenstore/tokenstore/internal/testpki"
)

// These tests run clusters of separate `tokenstore serve` processes on
// 127.0.0.1: gossip discovery, bootstrap, forwarding, failover after
// SIGKILL, rejoin, mutual TLS, gossip encryption, DCs and graceful
// shutdown, as an operator would run them.

func TestClusterFormsThroughGossip(t *testing.T) {
	nodes := planNodes(t, voters("n1", "n2", "n3")...)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	// Each process is given one --join address. n3 and n2 start before
	// n1, the node they join through; n1 joins through n2.
	n3.run(n1.Gossip)
	n2.run(n1.Gossip)
	n1.run(n2.Gossip)
	for _, n := range nodes {
		n.waitReady()
	}
	waitView(t, nodes, nodes)

	leader := waitLeader(t, nodes)
	fs := others(nodes, leader)
	ctx := ctxFor(t, time.Minute)
	iss, err := fs[0].c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1", ClientID: "app1"})
	if err != nil {
		t.Fatalf("issue on follower %s: want 201, got %v", fs[0].ID, err)
	}
	if iss.Index == 0 {
		t.Fatalf("issue on follower %s: want the write's index, got 0", fs[0].ID)
	}
	for _, n := range nodes {
		rec, meta, err := n.c.Lookup(ctx, iss.Token, client.LookupOptions{Consistency: wire.ConsistencyLeader})
		if err != nil || rec.ID != iss.ID || meta.Index < iss.Index {
			t.Fatalf("consistency=leader lookup on %s right after the issue: want %s at index >= %d, got %q at %d, %v",
				n.ID, iss.ID, iss.Index, rec.ID, meta.Index, err)
		}
	}
	for _, n := range nodes {
		rec, meta, err := n.c.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index})
		if err != nil || rec.ID != iss.ID || meta.Index < iss.Index || meta.DC != "dc1" {
			t.Fatalf("local lookup with min_index %d on %s: want %s at index >= %d from dc1, got %q at %d from %q, %v",
				iss.Index, n.ID, iss.ID, iss.Index, rec.ID, meta.Index, meta.DC, err)
		}
	}
}

func TestClusterSIGKILLLeaderUnderConsumeLoad(t *testing.T) {
	nodes := planNodes(t, voters("n1", "n2", "n3")...)
	formCluster(t, nodes)
	old := waitLeader(t, nodes)
	survivors := others(nodes, old)

	load := startConsumeLoad(t, nodes, 8)
	waitFor(t, "30 consumes before the kill", 30*time.Second, func() error {
		if k := load.consumedTokens(); k < 30 {
			return fmt.Errorf("%d tokens consumed; %s", k, load.summary())
		}
		return nil
	})
	// From here on the load goes to the survivors only; what was in flight
	// to the leader is lost with it and proves nothing.
	load.route(survivors)
	old.Kill()
	before := load.consumedTokens()
	t.Logf("SIGKILLed leader %s after %d consumes", old.ID, before)

	leader := waitLeader(t, survivors)
	waitFor(t, "40 more consumes after the kill", 30*time.Second, func() error {
		if k := load.consumedTokens(); k < before+40 {
			return fmt.Errorf("%d tokens consumed, %d before the kill; %s", k, before, load.summary())
		}
		return nil
	})
	load.halt()
	t.Logf("new leader %s; %s", leader.ID, load.summary())
	leader = waitLeader(t, survivors)
	load.check(t, leader)

	// Back on the same data directory and ports, joining through a
	// survivor: the same node again, not a second one, and caught up.
	old.restart(survivors[0].Gossip)
	waitView(t, nodes, nodes)
	leader = waitLeader(t, nodes)
	ctx := ctxFor(t, time.Minute)
	iss, err := leader.c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "after-restart"})
	if err != nil {
		t.Fatalf("issue on leader %s after the restart: want 201, got %v", leader.ID, err)
	}
	rec, meta, err := old.c.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index})
	if err != nil || rec.ID != iss.ID || meta.Index < iss.Index {
		t.Fatalf("lookup with min_index %d on restarted %s: want %s at index >= %d, got %q at %d, %v",
			iss.Index, old.ID, iss.ID, iss.Index, rec.ID, meta.Index, err)
	}
	waitFor(t, "the restarted node's own replica to hold the later write", 15*time.Second, func() error {
		_, meta, err := old.c.Lookup(ctx, iss.Token, client.LookupOptions{})
		if err != nil {
			return fmt.Errorf("local lookup on %s at index %d: %v", old.ID, meta.Index, err)
		}
		return nil
	})
}

func TestClusterTLSAndGossipKey(t *testing.T) {
	ca, foreign := testpki.New(t), testpki.New(t)
	key := base64.StdEncoding.EncodeToString([]byte("tokenstore gossip key, 32 bytes!"))
	spare := base64.StdEncoding.EncodeToString([]byte("an older key still in the ring.."))
	wrong := base64.StdEncoding.EncodeToString([]byte("not the key the cluster uses!!!!"))
	secured := func(id string, ca *testpki.CA, gossipKey string, extra ...string) proccluster.NodeSpec {
		f := ca.Issue(t, id)
		return proccluster.NodeSpec{ID: id, Flags: append([]string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA,
			"--gossip-key", gossipKey}, extra...)}
	}
	nodes := planNodes(t,
		secured("n1", ca, key, "--bootstrap-expect", "3"),
		secured("n2", ca, key, "--bootstrap-expect", "3"),
		// A keyring: the primary key first, a second one also accepted.
		secured("n3", ca, key+","+spare, "--bootstrap-expect", "3"),
		secured("x-stranger", foreign, key),
		secured("y-wrongkey", ca, wrong),
	)
	members, stranger, wrongKey := nodes[:3], nodes[3], nodes[4]
	formCluster(t, members)
	waitView(t, members, members)
	if !strings.Contains(members[0].logs(), "node_tls=true") {
		t.Errorf("n1 was started with --tls-cert: want node_tls=true in its start line, log:\n%s", tail(members[0].logs(), 40))
	}
	leader := waitLeader(t, members)
	fs := others(members, leader)
	ctx := ctxFor(t, time.Minute)
	iss, err := fs[0].c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", ClientID: "app1"})
	if err != nil {
		t.Fatalf("issue on follower %s, forwarded over mutual TLS: want 201, got %v", fs[0].ID, err)
	}

	// A certificate from another CA with the right gossip key: gossip
	// hears of it, Raft never takes it. The right CA with a wrong gossip
	// key: nobody hears of it at all.
	stranger.run(members[0].Gossip)
	wrongKey.run(members[0].Gossip)
	waitFor(t, "the leader to refuse the node with a foreign certificate", 30*time.Second, func() error {
		for _, line := range strings.Split(leader.logs(), "\n") {
			if strings.Contains(line, "does not answer as itself") && strings.Contains(line, "node="+stranger.ID) {
				return nil
			}
		}
		code, _ := stranger.readyz()
		return fmt.Errorf("leader %s has logged no refusal of %s yet (its /readyz: %d)", leader.ID, stranger.ID, code)
	})
	waitFor(t, "the node with the wrong gossip key to fail joining", 30*time.Second, func() error {
		if !strings.Contains(wrongKey.logs(), "joining the cluster through gossip") {
			return fmt.Errorf("%s has logged no failed join yet", wrongKey.ID)
		}
		return nil
	})
	holdFor(t, "neither rejected node may enter the cluster or become ready", 3*time.Second, func() error {
		for _, n := range members {
			st, err := n.cluster()
			if err != nil {
				return fmt.Errorf("GET /v1/cluster on %s: %v", n.ID, err)
			}
			if err := checkView(st, members); err != nil {
				return fmt.Errorf("/v1/cluster on %s: %v", n.ID, err)
			}
		}
		for _, n := range []*node{stranger, wrongKey} {
			if code, err := n.readyz(); code != 503 {
				return fmt.Errorf("%s /readyz: want 503, got %d (%v)", n.ID, code, err)
			}
		}
		return nil
	})
	for _, n := range members {
		if strings.Contains(n.logs(), wrongKey.ID) {
			t.Errorf("%s logged %s: a node with a wrong gossip key must not be heard of at all", n.ID, wrongKey.ID)
		}
	}
	for _, n := range []*node{stranger, wrongKey} {
		if _, _, err := n.c.Lookup(ctx, iss.Token, client.LookupOptions{Consistency: wire.ConsistencyLeader}); err == nil {
			t.Errorf("%s is outside the cluster: want its leader read to fail, it answered", n.ID)
		}
	}

	// The three keep serving writes.
	leader = waitLeader(t, members)
	fs = others(members, leader)
	if _, err := fs[1].c.Consume(ctx, wire.ConsumeRequest{Token: iss.Token, ClientID: "app1"}); err != nil {
		t.Fatalf("consume on %s after the rejections: want 200, got %v", fs[1].ID, err)
	}
	if _, err := fs[0].c.Consume(ctx, wire.ConsumeRequest{Token: iss.Token}); !errors.Is(err, client.ErrTokenReused) {
		t.Fatalf("second consume of a code on %s: want token_reused, got %v", fs[0].ID, err)
	}
	for _, n := range members {
		if _, err := n.c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "after-" + n.ID}); err != nil {
			t.Fatalf("issue on %s after the rejections: want 201, got %v", n.ID, err)
		}
	}
}

func TestClusterTwoDCsAndGracefulShutdown(t *testing.T) {
	inA := []string{"--primary-dc", "a", "--bootstrap-expect", "3"}
	nodes := planNodes(t,
		proccluster.NodeSpec{ID: "a1", DC: "a", Flags: inA},
		proccluster.NodeSpec{ID: "a2", DC: "a", Flags: inA},
		proccluster.NodeSpec{ID: "a3", DC: "a", Flags: inA},
		proccluster.NodeSpec{ID: "b1", DC: "b", NonVoter: true, Flags: []string{"--primary-dc", "a"}},
	)
	replica := nodes[3]
	formCluster(t, nodes)
	waitView(t, nodes, nodes)
	st, err := replica.cluster()
	if err != nil || st.PrimaryDC != "a" {
		t.Fatalf("/v1/cluster on %s: want primary_dc a, got %+v, %v", replica.ID, st, err)
	}

	leader := waitLeader(t, nodes)
	ctx := ctxFor(t, 2*time.Minute)
	writer := others(nodes[:3], leader)[0]
	iss, err := writer.c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:7"})
	if err != nil {
		t.Fatalf("issue on %s in DC a: want 201, got %v", writer.ID, err)
	}
	rec, meta, err := replica.c.Lookup(ctx, iss.Token, client.LookupOptions{MinIndex: iss.Index})
	if err != nil || rec.ID != iss.ID || meta.DC != "b" || meta.Index < iss.Index {
		t.Fatalf("lookup with min_index %d on %s in DC b: want %s answered by DC b at index >= %d, got %q by %q at %d, %v",
			iss.Index, replica.ID, iss.ID, iss.Index, rec.ID, meta.DC, meta.Index, err)
	}

	// SIGTERM the leader while the other nodes, the replica in DC b
	// included, take a write load: it hands leadership over first, so no
	// write fails.
	rest := others(nodes, leader)
	load := startConsumeLoad(t, rest, 8)
	waitFor(t, "30 consumes before the shutdown", 30*time.Second, func() error {
		if k := load.consumedTokens(); k < 30 {
			return fmt.Errorf("%d tokens consumed; %s", k, load.summary())
		}
		return nil
	})
	if err := leader.stop(); err != nil {
		t.Fatalf("SIGTERM to leader %s: want exit status 0, got %v", leader.ID, err)
	}
	if logs := leader.logs(); !strings.Contains(logs, "handed leadership over before shutdown") {
		t.Errorf("SIGTERM to leader %s: want its log to say it handed leadership over before shutdown, log:\n%s",
			leader.ID, tail(logs, 60))
	}
	before := load.consumedTokens()
	newLeader := waitLeader(t, rest)
	if newLeader.DC != "a" {
		t.Errorf("after the shutdown: want a leader in primary DC a, got %s in %s", newLeader.ID, newLeader.DC)
	}
	waitFor(t, "30 more consumes after the shutdown", 30*time.Second, func() error {
		if k := load.consumedTokens(); k < before+30 {
			return fmt.Errorf("%d tokens consumed, %d at the shutdown; %s", k, before, load.summary())
		}
		return nil
	})
	load.halt()
	t.Logf("leader %s stopped, %s leads; %s", leader.ID, newLeader.ID, load.summary())
	load.mu.Lock()
	failed, first := load.nFailed+load.dropped, load.failed
	load.mu.Unlock()
	if failed != 0 {
		t.Errorf("graceful shutdown of the leader: want no failed write, got %d: %q", failed, first)
	}
	load.check(t, waitLeader(t, rest))
}
