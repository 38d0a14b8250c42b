package systemtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// A forwarded write and the leader's answer, as they cross the node port.
type forwardedWrite struct {
	Req   string `codec:"q"`
	Entry []byte `codec:"e"`
}

type forwardReply struct {
	Index uint64 `codec:"i"`
	Err   string `codec:"e,omitempty"`
	Fail  string `codec:"f,omitempty"`
}

// forward posts one write to the node port at raftAddr the way a peer
// forwards one: the RPC protocol byte, then HTTP with a msgpack body. No
// TLS: on loopback the node port trusts local processes.
func forward(t *testing.T, raftAddr string, entry []byte) forwardReply {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil {
				_, err = c.Write([]byte{0x02})
			}
			return c, err
		},
	}}
	var body []byte
	if err := codec.NewEncoderBytes(&body, &codec.MsgpackHandle{}).Encode(&forwardedWrite{Req: "probe-" + t.Name(), Entry: entry}); err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post("http://"+raftAddr+"/rpc/v1/apply", "application/msgpack", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("forward to %s: %v", raftAddr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("forward to %s: %s: %s", raftAddr, resp.Status, b)
	}
	var reply forwardReply
	if err := codec.NewDecoderBytes(b, &codec.MsgpackHandle{}).Decode(&reply); err != nil {
		t.Fatalf("forward reply: %v", err)
	}
	return reply
}

func encodeCmd(t *testing.T, c fsm.Command) []byte {
	t.Helper()
	b, err := fsm.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refusedWrite tells whether the node refused a forwarded write, naming want,
// and proposed nothing.
func refusedWrite(r forwardReply, want string) bool {
	return r.Index == 0 && r.Err == "" && (strings.HasPrefix(r.Fail, "refused") || r.Fail == "unsupported") && strings.Contains(r.Fail, want)
}

// probes are hostile forwarded writes: each must be refused, naming why.
func probes(t *testing.T) []struct {
	name, want string
	entry      []byte
} {
	forged := &fsm.Issue{Record: fsm.Record{ID: "forged0000000000000000", Kind: "developer",
		Hash: token.NewHasher(nil).Sum("forged-secret"), Subject: "user:admin\x00\x1b[31m", Generator: "nobody"}}
	return []struct {
		name, want string
		entry      []byte
	}{
		// An unknown type may be a newer node's command in a rolling
		// upgrade: not refused for good, answered "not yet".
		{"one unknown byte", "unsupported", []byte{0x63}},
		{"a known type with a garbage body", "undecodable", []byte{byte(fsm.TypeIssue), 0xc1}},
		{"a forged developer token", "control characters", encodeCmd(t, forged)},
		{"a batch", "command type 1 cannot be proposed by a peer", encodeCmd(t, &fsm.Batch{Entries: [][]byte{encodeCmd(t, forged)}})},
		{"garbage collection", "command type 7 cannot be proposed by a peer", encodeCmd(t, &fsm.Expire{Before: 1 << 62, IDs: []string{"x"}})},
		{"an issue with a TTL past the policy", "ttl_too_long",
			encodeCmd(t, &fsm.Issue{TTL: int64(48 * time.Hour), Record: fsm.Record{ID: "longlived0000000000000", Kind: "access", Hash: strings.Repeat("h", 32)}})},
	}
}

// The node port of one node with API keys: hostile forwarded writes are
// refused with a clear reason, nothing is written, and the node stays up
// and restarts cleanly with the tokens issued before.
func TestNodePortRefusesHostileWrites(t *testing.T) {
	const key = "app-key-0123456789abcdef"
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("app:"+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, t.TempDir(), "--api-keys", keys)
	c := client.New(d.URL(), client.WithAPIKey(key))
	ctx := ctxFor(t, 2*time.Minute)
	before, err := c.Issue(ctx, wire.IssueRequest{Kind: "access", Subject: "user:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probes(t) {
		if reply := forward(t, d.Raft, p.entry); !refusedWrite(reply, p.want) {
			t.Fatalf("%s: the node answered %+v, want refused naming %q", p.name, reply, p.want)
		}
		if code, err := d.readyz(); code != http.StatusOK {
			t.Fatalf("%s: /readyz answers %d (%v) after the probe\n%s", p.name, code, err, d.logs())
		}
	}
	if rec, err := c.Get(ctx, "forged0000000000000000"); !errors.Is(err, client.ErrTokenNotFound) {
		t.Fatalf("the forged token by id: %+v, %v; want token_not_found", rec, err)
	}
	if _, _, err := c.Lookup(ctx, "forged-secret", client.LookupOptions{}); !errors.Is(err, client.ErrTokenNotFound) {
		t.Fatalf("lookup of the forged secret: %v, want token_not_found", err)
	}
	if !strings.Contains(d.logs(), "refused a forwarded write") {
		t.Fatal("the node did not log the refusals")
	}

	d.Kill()
	d.start()
	if _, _, err := c.Lookup(ctx, before.Token, client.LookupOptions{}); err != nil {
		t.Fatalf("after a restart, the token issued before: %v", err)
	}
}

// The poison write sent to every node of a three-node cluster, leader and
// followers: every node stays up and ready, the cluster restarts cleanly
// on its data, and the token issued before is intact everywhere.
func TestClusterSurvivesPoisonOnTheNodePort(t *testing.T) {
	nodes := planNodes(t, voters("a", "b", "c")...)
	formCluster(t, nodes)
	ctx := ctxFor(t, 3*time.Minute)
	before, err := nodes[0].c.Issue(ctx, wire.IssueRequest{Kind: "oauth2_code", Subject: "user:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		for _, p := range probes(t) {
			if reply := forward(t, n.Raft, p.entry); !refusedWrite(reply, p.want) {
				t.Fatalf("%s on %s: answered %+v, want refused", p.name, n.ID, reply)
			}
		}
	}
	for _, n := range nodes {
		if code, err := n.readyz(); code != http.StatusOK {
			t.Fatalf("%s: /readyz %d (%v) after the probes", n.ID, code, err)
		}
		n.Kill()
	}
	for i, n := range nodes {
		n.run(nodes[(i+1)%len(nodes)].Gossip)
	}
	for _, n := range nodes {
		n.waitReady()
		if _, _, err := n.c.Lookup(ctx, before.Token, client.LookupOptions{MinIndex: before.Index}); err != nil {
			t.Fatalf("%s after the restart: the token issued before: %v", n.ID, err)
		}
	}
}
