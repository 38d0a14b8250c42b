package cluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster/membership"
	"github.com/tokenstore/tokenstore/cluster/transport"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/internal/testpki"
)

var (
	gossipKey      = []byte("0123456789abcdef")
	otherGossipKey = []byte("fedcba9876543210")
)

// tlsNode is a node with a certificate from ca and the gossip keys given.
func tlsNode(t *testing.T, ca *testpki.CA, name string, keys ...[]byte) testcluster.Options {
	t.Helper()
	f := ca.Issue(t, name)
	conf, err := transport.LoadTLS(transport.TLSFiles(f))
	if err != nil {
		t.Fatal(err)
	}
	return testcluster.Options{TLS: conf, GossipKeys: keys}
}

// announce starts a gossip member that is no node: it only tells the pool
// it is a voter expecting a three-node cluster, with the Raft address
// given. It reports whether its join was answered.
func announce(t *testing.T, id, raftAddr, seed string, keys ...[]byte) bool {
	t.Helper()
	m, err := membership.Start(membership.Config{
		Meta:    membership.Meta{ID: id, DC: "dc1", RaftAddr: raftAddr, APIAddr: "127.0.0.1:1", Voter: true, Expect: 3},
		WANBind: "127.0.0.1:0", LANBind: "127.0.0.1:0",
		Keyring: keys,
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("start gossip for %s: %v", id, err)
	}
	t.Cleanup(func() { m.Shutdown() })
	reached, err := m.Join([]string{seed})
	return err == nil && reached > 0
}

// configuration lists the server ids of n's Raft configuration.
func configuration(ctx context.Context, n *testcluster.Node) []string {
	var ids []string
	for _, s := range n.ClusterStatus(ctx).Nodes {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

func ids(ns ...*testcluster.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.ID())
	}
	slices.Sort(out)
	return out
}

// waitForLeader polls until one of nodes leads and is ready.
func waitForLeader(t *testing.T, nodes ...*testcluster.Node) *testcluster.Node {
	t.Helper()
	var leader *testcluster.Node
	waitFor(t, "a leader", time.Minute, func() error {
		for _, n := range nodes {
			if n.IsLeader() && n.Ready() == nil {
				leader = n
				return nil
			}
		}
		return errors.New("none of the nodes leads")
	})
	return leader
}

// logCount counts the lines of n's log that contain every one of subs.
func logCount(n *testcluster.Node, subs ...string) int {
	k := 0
	for _, line := range strings.Split(n.Logs.String(), "\n") {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(line, s) }) {
			k++
		}
	}
	return k
}

// TestBootstrapCountsOnlyCheckedPeers: two good nodes expecting three see
// a third voter in gossip that cannot prove itself over mutual TLS; they
// leave it out and wait, then bootstrap with the third good node, and the
// leader never adds the stranger later either.
func TestBootstrapCountsOnlyCheckedPeers(t *testing.T) {
	cases := []struct {
		name string
		// stranger starts the stranger, joining through seed; it returns
		// its id and whether the good nodes see it in gossip.
		stranger func(t *testing.T, ca *testpki.CA, seed *testcluster.Node) (id string, seen bool)
	}{
		{"gossip without the key", func(t *testing.T, _ *testpki.CA, seed *testcluster.Node) (string, bool) {
			if announce(t, "no-key", seed.RaftAddr(), seed.GossipAddr()) {
				t.Error("a member without the gossip key was answered")
			}
			return "no-key", false
		}},
		{"gossip with another key", func(t *testing.T, _ *testpki.CA, seed *testcluster.Node) (string, bool) {
			if announce(t, "other-key", seed.RaftAddr(), seed.GossipAddr(), otherGossipKey) {
				t.Error("a member with another gossip key was answered")
			}
			return "other-key", false
		}},
		{"gossip key, a good node's raft address", func(t *testing.T, _ *testpki.CA, seed *testcluster.Node) (string, bool) {
			// The address answers over mutual TLS, but as another node.
			if !announce(t, "impostor", seed.RaftAddr(), seed.GossipAddr(), gossipKey) {
				t.Fatal("a member with the gossip key was not answered")
			}
			return "impostor", true
		}},
		{"gossip key, certificate from another CA", func(t *testing.T, _ *testpki.CA, seed *testcluster.Node) (string, bool) {
			o := tlsNode(t, testpki.New(t), "x", gossipKey)
			o.BootstrapExpect, o.Join = 3, []string{seed.GossipAddr()}
			return testcluster.Start(t, o).ID(), true
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ca := testpki.New(t)
			ctx := ctxFor(t, 2*time.Minute)
			good := func(name string, join ...*testcluster.Node) *testcluster.Node {
				o := tlsNode(t, ca, name, gossipKey)
				o.BootstrapExpect = 3
				for _, j := range join {
					o.Join = append(o.Join, j.GossipAddr())
				}
				return testcluster.Start(t, o)
			}
			n1 := good("n1")
			n2 := good("n2", n1)
			stranger, seen := tc.stranger(t, ca, n1)

			if seen {
				// Each good node counts three voters, checks them and
				// leaves the stranger out; without it there are too few.
				for _, n := range []*testcluster.Node{n1, n2} {
					waitFor(t, n.ID()+" leaves the stranger out", 30*time.Second, func() error {
						if logCount(n, "not bootstrapping with a node gossip announced", stranger) == 0 {
							return errors.New("no failed check logged yet")
						}
						return nil
					})
				}
			}
			for _, n := range []*testcluster.Node{n1, n2} {
				if got := configuration(ctx, n); len(got) != 0 {
					t.Fatalf("%s bootstrapped without a third good node: configuration %v", n.ID(), got)
				}
			}

			n3 := good("n3", n1)
			leader := waitForLeader(t, n1, n2, n3)
			want := ids(n1, n2, n3)
			if got := configuration(ctx, leader); !slices.Equal(got, want) {
				t.Fatalf("bootstrapped configuration: want %v, got %v", want, got)
			}
			if !seen {
				return
			}
			// The leader keeps seeing the stranger in gossip and keeps
			// refusing it.
			before := logCount(leader, "not adding a node gossip announced", stranger)
			waitFor(t, "the leader refuses the stranger on later rounds", 30*time.Second, func() error {
				if k := logCount(leader, "not adding a node gossip announced", stranger); k < before+3 {
					return fmt.Errorf("%d refusals logged, want %d", k, before+3)
				}
				return nil
			})
			if got := configuration(ctx, leader); !slices.Equal(got, want) {
				t.Fatalf("after the leader's rounds: want %v, got %v", want, got)
			}
		})
	}
}

// rpcCaller calls a node's RPC routes as another node would, through a
// mux of its own with the TLS configuration given (nil: plain TCP).
type rpcCaller struct{ http *http.Client }

func newRPCCaller(t *testing.T, conf *tls.Config) *rpcCaller {
	t.Helper()
	m, err := transport.Listen("127.0.0.1:0", nil, conf, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return m.DialRPC(ctx, addr)
	}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		m.Close()
	})
	return &rpcCaller{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// rpcReply is what the read and apply routes answer.
type rpcReply struct {
	Index  uint64      `codec:"i"`
	Record *fsm.Record `codec:"r"`
	Err    string      `codec:"e"`
	Fail   string      `codec:"f"`
}

// call posts args, msgpack-encoded, to path on the node at raftAddr.
func (c *rpcCaller) call(raftAddr, path string, args any) (*rpcReply, error) {
	var r rpcReply
	return &r, c.callInto(raftAddr, path, args, &r)
}

// callInto is call, decoding the answer into reply.
func (c *rpcCaller) callInto(raftAddr, path string, args, reply any) error {
	var body []byte
	if err := codec.NewEncoderBytes(&body, &codec.MsgpackHandle{}).Encode(args); err != nil {
		return err
	}
	resp, err := c.http.Post("http://"+raftAddr+path, "application/msgpack", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return codec.NewDecoderBytes(b, &codec.MsgpackHandle{}).Decode(reply)
}

// TestReadAndApplyRPCsNeedAPeerCertificate: a caller without a certificate
// from the cluster CA reads nothing and writes nothing through the node
// port; a peer with one does both.
func TestReadAndApplyRPCsNeedAPeerCertificate(t *testing.T) {
	ca := testpki.New(t)
	n := testcluster.Start(t, tlsNode(t, ca, "n1"))
	ctx := ctxFor(t, time.Minute)
	iss, err := n.Client.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "u"})
	if err != nil {
		t.Fatal(err)
	}
	read := map[string]any{"h": n.Hasher.Sum(iss.Token)}
	entry, err := fsm.Encode(&fsm.Revoke{ID: iss.ID})
	if err != nil {
		t.Fatal(err)
	}
	revoke := map[string]any{"q": "peers-test.1", "e": entry}

	for _, s := range []struct {
		name string
		conf *tls.Config
	}{
		{"plain TCP", nil},
		{"TLS without a certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}},
		{"certificate from another CA", tlsNode(t, testpki.New(t), "x").TLS},
	} {
		c := newRPCCaller(t, s.conf)
		if r, err := c.call(n.RaftAddr(), "/rpc/v1/read", read); err == nil {
			t.Errorf("%s: read answered: %+v", s.name, r)
		}
		if r, err := c.call(n.RaftAddr(), "/rpc/v1/apply", revoke); err == nil {
			t.Errorf("%s: apply answered: %+v", s.name, r)
		}
	}
	if rec, err := n.Client.Get(ctx, iss.ID); err != nil || rec.Status != "active" {
		t.Fatalf("after refused calls: want the token active, got %+v, %v", rec, err)
	}

	peer := newRPCCaller(t, tlsNode(t, ca, "peer").TLS)
	r, err := peer.call(n.RaftAddr(), "/rpc/v1/read", read)
	if err != nil || r.Fail != "" || r.Record == nil || r.Record.ID != iss.ID {
		t.Fatalf("peer read: want record %s, got %+v, %v", iss.ID, r, err)
	}
	if r, err := peer.call(n.RaftAddr(), "/rpc/v1/apply", revoke); err != nil || r.Fail != "" || r.Err != "" {
		t.Fatalf("peer apply of a revoke: got %+v, %v", r, err)
	}
	if rec, err := n.Client.Get(ctx, iss.ID); err != nil || rec.Status != "revoked" {
		t.Fatalf("after the peer's revoke: want the token revoked, got %+v, %v", rec, err)
	}
}
